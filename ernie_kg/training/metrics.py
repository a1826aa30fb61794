"""Task metrics: relation classification (incl. TACRED-style) and entity typing.

Classification metrics are scikit-learn's definitions (counted with numpy); the typing
metrics follow the FIGER/OpenEntity definitions (Ling & Weld, 2012) used by ERNIE's
``eval_typing.py``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import f1_score

NEGATIVE_LABELS = ("no_relation", "NA", "na", "Other", "Others")
#: A SemEval-2010 Task 8 directed label: ``Type(e1,e2)`` or ``Type(e2,e1)``.
SEMEVAL_LABEL = re.compile(r"^(?P<type>[A-Za-z-]+)\((?:e1,e2|e2,e1)\)$")


def relation_metrics(
    gold: Sequence[str], predicted: Sequence[str], negative_label: str | None = None
) -> dict[str, float]:
    """Accuracy, macro-F1 and micro-F1; with a negative label also TACRED micro-F1.

    TACRED-style micro-F1 counts only non-negative predictions and gold labels
    (the official scorer's precision/recall), as ERNIE issue #56 asks. The F1s are
    scikit-learn's (``f1_score`` over the labels seen in gold or predictions,
    ``zero_division=0``), counted with numpy: a dev set's paired bootstrap
    (:mod:`.dev_confidence`) scores it thousands of times.
    """
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold labels but {len(predicted)} predictions")
    labels = sorted(set(gold) | set(predicted))
    tp, fp, fn = _label_counts(gold, predicted, labels)
    metrics = {
        "accuracy": float(tp.sum() / len(gold)) if len(gold) else 0.0,
        "macro_f1": float(_f1_from_counts(tp, fp, fn).mean()) if labels else 0.0,
        "micro_f1": float(_f1_from_counts(tp.sum(), fp.sum(), fn.sum())),
    }
    if all(SEMEVAL_LABEL.match(label) or label == "Other" for label in labels):
        metrics["semeval_official_macro_f1"] = semeval_official_macro_f1(gold, predicted)
    negative = negative_label or next((n for n in NEGATIVE_LABELS if n in set(gold)), None)
    if negative is not None:
        positive = np.array([label != negative for label in labels], dtype=bool)
        metrics["micro_f1_no_negative"] = float(_f1_from_counts(
            tp[positive].sum(), fp[positive].sum(), fn[positive].sum()))
    return metrics


def _label_counts(gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str]
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True positives, false positives and false negatives of each of ``labels``."""
    index = {label: i for i, label in enumerate(labels)}
    g = np.fromiter((index[label] for label in gold), dtype=np.int64, count=len(gold))
    p = np.fromiter((index[label] for label in predicted), dtype=np.int64,
                    count=len(predicted))
    size = len(labels)
    tp = np.bincount(g[g == p], minlength=size)
    return tp, np.bincount(p, minlength=size) - tp, np.bincount(g, minlength=size) - tp


def _f1_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """F1 = 2TP / (2TP + FP + FN), 0 where nothing was predicted or gold (scikit-learn's
    ``zero_division=0``)."""
    tp, denominator = np.asarray(tp, dtype=np.float64), np.asarray(2 * tp + fp + fn)
    return np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)


def semeval_official_macro_f1(gold: Sequence[str], predicted: Sequence[str]) -> float:
    """SemEval-2010 Task 8's official score: macro-F1 over the relation *types* (Other
    left out), a prediction correct only with the right direction.

    Why: this is the figure every SemEval-2010 paper reports (the task scorer's "(9+1)-way
    evaluation with directionality taken into account"). Per type T: P = exact matches of
    gold type T / predictions of type T, R = the same / gold of type T, so a wrong
    direction counts against both. Merging the directions also keeps the rare
    ``Member-Collection(e1,e2)`` (about 1% of the data) from weighing as much as a
    frequent label.
    """
    kinds = {label: _semeval_type(label) for label in set(gold) | set(predicted)}
    names = sorted({kinds[label] for label in gold} - {"Other"})
    exact = Counter(kinds[g] for g, p in zip(gold, predicted) if g == p)
    n_pred = Counter(kinds[p] for p in predicted)
    n_gold = Counter(kinds[g] for g in gold)
    scores = [_f1(exact[name] / n_pred[name] if n_pred[name] else 0.0,
                  exact[name] / n_gold[name] if n_gold[name] else 0.0) for name in names]
    return float(np.mean(scores)) if scores else 0.0


def _semeval_type(label: str) -> str:
    match = SEMEVAL_LABEL.match(label)
    return match["type"] if match else label


def per_label_f1(gold: Sequence[str], predicted: Sequence[str]) -> dict[str, float]:
    """F1 of each gold label (for per-relation plots)."""
    labels = sorted(set(gold))
    scores = f1_score(gold, predicted, labels=labels, average=None, zero_division=0)
    return {label: float(score) for label, score in zip(labels, scores)}


def typing_metrics(gold: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Strict accuracy, loose macro-F1 and loose micro-F1 over multi-hot ``[N, C]`` arrays."""
    gold = np.asarray(gold).astype(bool)
    predicted = np.asarray(predicted).astype(bool)
    if gold.shape != predicted.shape:
        raise ValueError(f"gold shape {gold.shape} != predicted shape {predicted.shape}")
    strict = float(np.mean(np.all(gold == predicted, axis=1))) if len(gold) else 0.0
    overlap = (gold & predicted).sum(axis=1)
    n_pred, n_gold = predicted.sum(axis=1), gold.sum(axis=1)
    has_pred, has_gold = n_pred > 0, n_gold > 0
    macro_p = float(np.mean(overlap[has_pred] / n_pred[has_pred])) if has_pred.any() else 0.0
    macro_r = float(np.mean(overlap[has_gold] / n_gold[has_gold])) if has_gold.any() else 0.0
    micro_p = float(overlap.sum() / n_pred.sum()) if n_pred.sum() else 0.0
    micro_r = float(overlap.sum() / n_gold.sum()) if n_gold.sum() else 0.0
    return {
        "strict_accuracy": strict,
        "loose_macro_f1": _f1(macro_p, macro_r),
        "loose_micro_f1": _f1(micro_p, micro_r),
    }


def _f1(precision: float, recall: float) -> float:
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
