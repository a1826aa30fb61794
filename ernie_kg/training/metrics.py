"""Task metrics: relation classification (incl. TACRED-style) and entity typing.

Classification metrics come from scikit-learn; the typing metrics follow the
FIGER/OpenEntity definitions (Ling & Weld, 2012) used by ERNIE's ``eval_typing.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

NEGATIVE_LABELS = ("no_relation", "NA", "na", "Other", "Others")


def relation_metrics(
    gold: Sequence[str], predicted: Sequence[str], negative_label: str | None = None
) -> dict[str, float]:
    """Accuracy, macro-F1 and micro-F1; with a negative label also TACRED micro-F1.

    TACRED-style micro-F1 counts only non-negative predictions and gold labels
    (the official scorer's precision/recall), as ERNIE issue #56 asks.
    """
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold labels but {len(predicted)} predictions")
    labels = sorted(set(gold) | set(predicted))
    metrics = {
        "accuracy": float(accuracy_score(gold, predicted)),
        "macro_f1": float(f1_score(gold, predicted, labels=labels, average="macro",
                                   zero_division=0)),
        "micro_f1": float(f1_score(gold, predicted, labels=labels, average="micro",
                                   zero_division=0)),
    }
    negative = negative_label or next((n for n in NEGATIVE_LABELS if n in set(gold)), None)
    if negative is not None:
        positive = [label for label in labels if label != negative]
        metrics["micro_f1_no_negative"] = float(
            f1_score(gold, predicted, labels=positive, average="micro", zero_division=0)
        )
    return metrics


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
