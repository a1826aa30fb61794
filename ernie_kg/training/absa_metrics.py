"""The metrics of Sun, Huang and Qiu (NAACL 2019) on SentiHood and SemEval-2014, computed
as the data README's "How the paper computes its metrics" spells them out, so figures
compare with the paper's tables.

Inputs are one row per (sentence, target, aspect) group: the groups
(:class:`ernie_kg.data.absa.AbsaGroup`), the gold labels and the probabilities over the
labels in :func:`ernie_kg.data.absa.labels_for` order (softmax rows for ``single`` and
the M variants, :func:`ernie_kg.data.absa.fold_b_predictions` rows for the B variants).
The predicted label is the most probable one, ties to the first (the paper's ``>=``).
All values are fractions in [0, 1].

Checked against the paper's ``evaluation.py``; it reads rows in fixed blocks of 4
(SentiHood) or 5 (SemEval), where this module groups by the explicit groups, and it
divides by zero or fails where this module says what it does instead:

* an aspect whose gold is all one class has no ROC-AUC (the code's ``roc_auc_score``
  raises): it is left out of the average, and with none left the AUC is ``nan``;
* P + R = 0 (or no predicted category at all) gives F1 (or P) 0, not a ZeroDivisionError;
* a sentiment score with p(Positive) + p(Negative) = 0 is 0.5, which predicts Positive.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import roc_auc_score

from ernie_kg.data.absa import (
    SEMEVAL_LABELS,
    SENTIHOOD_ASPECTS,
    SENTIHOOD_LABELS,
    AbsaGroup,
)
from ernie_kg.errors import SettingError

__all__ = ["absa_metrics", "semeval_metrics", "sentihood_metrics"]

SENTIHOOD_KEYS = ("aspect_strict_accuracy", "aspect_macro_f1", "aspect_auc",
                  "sentiment_accuracy", "sentiment_auc")
SEMEVAL_KEYS = ("precision", "recall", "f1", "accuracy_4way", "accuracy_3way",
                "accuracy_binary")


def _checked(groups: Sequence[AbsaGroup], gold: Sequence[str], probabilities: np.ndarray,
             labels: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(gold label indices, probabilities as a float array), after checking shapes."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape[1] != len(labels):
        raise ValueError(f"probabilities must be [N, {len(labels)}] over {labels}, got "
                         f"shape {probabilities.shape}")
    if not len(groups) == len(gold) == len(probabilities):
        raise ValueError(f"{len(groups)} groups, {len(gold)} gold labels and "
                         f"{len(probabilities)} probability rows: they must match")
    unknown = sorted(set(gold) - set(labels))
    if unknown:
        raise ValueError(f"gold labels {unknown} are not among {labels}")
    if len(set(groups)) != len(groups):
        raise ValueError("a group appears twice: give one row per (sentence, target, aspect)")
    return np.array([labels.index(label) for label in gold], dtype=np.int64), probabilities


def _mean_auc(aspects: Sequence[str], truth: np.ndarray, scores: np.ndarray) -> float:
    """ROC-AUC per aspect, averaged over the aspects whose gold holds both classes."""
    values = []
    for aspect in sorted(set(aspects)):
        mask = np.array([a == aspect for a in aspects], dtype=bool)
        if len(set(truth[mask].tolist())) == 2:
            values.append(float(roc_auc_score(truth[mask], scores[mask])))
    return float(np.mean(values)) if values else float("nan")


def sentihood_metrics(groups: Sequence[AbsaGroup], gold: Sequence[str],
                      probabilities: np.ndarray) -> dict[str, float]:
    """SentiHood: aspect strict accuracy, macro-F1 and AUC; sentiment accuracy and AUC.

    Columns of ``probabilities``: None, Positive, Negative.

    * strict accuracy: share of (sentence, target) whose labels (4 aspects) are all right;
    * macro-F1: over (sentence, target) with a gold aspect, P = |pred & gold| / |pred|
      and R = |pred & gold| / |gold| over the not-None aspects (both 0 when they share
      none); P and R averaged over those cases, F1 = 2PR / (P + R);
    * aspect AUC: ROC-AUC of p(None) for "None or not", per aspect, averaged;
    * sentiment: over gold non-None rows, score = p(Negative) / (p(Positive) +
      p(Negative)), Negative when above 0.5; accuracy, and AUC per aspect averaged.
    """
    truth, probabilities = _checked(groups, gold, probabilities, SENTIHOOD_LABELS)
    unknown = sorted({g.aspect for g in groups} - set(SENTIHOOD_ASPECTS))
    if unknown:
        raise ValueError(f"aspects {unknown} are not SentiHood's {SENTIHOOD_ASPECTS}")
    predicted = probabilities.argmax(axis=1)
    cases: dict[tuple[str, str | None], list[int]] = defaultdict(list)
    for row, group in enumerate(groups):
        cases[group.sentence_id, group.target].append(row)
    strict = [all(truth[r] == predicted[r] for r in rows) for rows in cases.values()]
    precisions, recalls = [], []
    for rows in cases.values():
        gold_set = {groups[r].aspect for r in rows if truth[r] != 0}
        predicted_set = {groups[r].aspect for r in rows if predicted[r] != 0}
        if not gold_set:
            continue
        shared = len(gold_set & predicted_set)
        precisions.append(shared / len(predicted_set) if shared else 0.0)
        recalls.append(shared / len(gold_set) if shared else 0.0)
    p = float(np.mean(precisions)) if precisions else 0.0
    r = float(np.mean(recalls)) if recalls else 0.0
    aspects = [g.aspect for g in groups]
    aspect_auc = _mean_auc(aspects, (truth == 0).astype(int), probabilities[:, 0])
    opinion = truth != 0
    positive, negative = probabilities[opinion, 1], probabilities[opinion, 2]
    total = positive + negative
    score = np.divide(negative, total, out=np.full_like(total, 0.5), where=total > 0)
    is_negative = (truth[opinion] == 2).astype(int)
    sentiment_accuracy = (float(np.mean((score > 0.5).astype(int) == is_negative))
                          if opinion.any() else float("nan"))
    sentiment_auc = _mean_auc([a for a, o in zip(aspects, opinion) if o], is_negative, score)
    return {
        "aspect_strict_accuracy": float(np.mean(strict)) if strict else float("nan"),
        "aspect_macro_f1": 2 * p * r / (p + r) if p + r > 0 else 0.0,
        "aspect_auc": aspect_auc,
        "sentiment_accuracy": sentiment_accuracy,
        "sentiment_auc": sentiment_auc,
    }


def semeval_metrics(groups: Sequence[AbsaGroup], gold: Sequence[str],
                    probabilities: np.ndarray) -> dict[str, float]:
    """SemEval-2014 restaurants: subtask 3 micro P/R/F1, subtask 4 accuracy 4/3/2-way.

    Columns of ``probabilities``: positive, neutral, negative, conflict, none.

    * subtask 3: micro P/R/F1 of the predicted category sets (label not none) against the
      gold sets, over sentences with at least one gold category;
    * subtask 4: accuracy over gold non-none rows, the prediction being the most probable
      of the polarities still in play (so a predicted none falls to the best polarity):
      4-way all four; 3-way drops gold conflict (positive/neutral/negative); binary drops
      gold conflict and neutral (positive vs negative).
    """
    truth, probabilities = _checked(groups, gold, probabilities, SEMEVAL_LABELS)
    none = SEMEVAL_LABELS.index("none")
    predicted = probabilities.argmax(axis=1)
    sentences: dict[str, list[int]] = defaultdict(list)
    for row, group in enumerate(groups):
        sentences[group.sentence_id].append(row)
    n_predicted = n_gold = n_shared = 0
    for rows in sentences.values():
        gold_set = {groups[r].aspect for r in rows if truth[r] != none}
        if not gold_set:
            continue
        predicted_set = {groups[r].aspect for r in rows if predicted[r] != none}
        n_predicted += len(predicted_set)
        n_gold += len(gold_set)
        n_shared += len(gold_set & predicted_set)
    precision = n_shared / n_predicted if n_predicted else 0.0
    recall = n_shared / n_gold if n_gold else 0.0
    metrics = {
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
    }
    for key, polarities in (("accuracy_4way", ("positive", "neutral", "negative", "conflict")),
                            ("accuracy_3way", ("positive", "neutral", "negative")),
                            ("accuracy_binary", ("positive", "negative"))):
        columns = np.array([SEMEVAL_LABELS.index(p) for p in polarities])
        rows = np.isin(truth, columns)
        choice = columns[probabilities[rows][:, columns].argmax(axis=1)]
        metrics[key] = float(np.mean(choice == truth[rows])) if rows.any() else float("nan")
    return metrics


def absa_metrics(dataset: str, groups: Sequence[AbsaGroup], gold: Sequence[str],
                 probabilities: np.ndarray) -> dict[str, float]:
    """:func:`sentihood_metrics` or :func:`semeval_metrics` by ``dataset`` name."""
    if dataset == "sentihood":
        return sentihood_metrics(groups, gold, probabilities)
    if dataset == "semeval":
        return semeval_metrics(groups, gold, probabilities)
    raise SettingError(f"dataset must be 'sentihood' or 'semeval', got {dataset!r}")
