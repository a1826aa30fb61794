"""How sure the dev set is that one fine-tuned model beats another: a paired bootstrap.

Why: choosing between two candidates on one dev score keeps whichever the dev set's noise
favoured when they differ by less than the set can resolve. Macro-F1 over many labels,
some with few dev examples (SemEval-2010 Task 8's 883-example dev split: 17 labels, two
with 11 and 12), moves by tenths of a point when one prediction changes. Drawing
the dev examples again with replacement, the same draw for both candidates, and counting
how often the challenger still scores higher measures that resolution (the paired
bootstrap of Koehn 2004 and Berg-Kirkpatrick et al. 2012).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from transformers import EvalPrediction

__all__ = ["paired_bootstrap_wins"]

MetricFunction = Callable[[EvalPrediction], dict[str, float]]


def paired_bootstrap_wins(
    compute_metrics: MetricFunction, metric: str, challenger: EvalPrediction,
    incumbent: EvalPrediction, *, samples: int = 1000, seed: int = 0,
) -> float:
    """The share of ``samples`` resamples of the dev examples on which ``challenger``
    scores strictly higher than ``incumbent`` on ``metric`` (a key of what
    ``compute_metrics`` returns; an ``eval_`` prefix is ignored). Both predictions must
    be of the same examples in the same order. Deterministic for a given ``seed``."""
    key = metric.removeprefix("eval_")
    gold = _as_array(challenger.label_ids)
    if not np.array_equal(gold, _as_array(incumbent.label_ids)):
        raise ValueError("paired bootstrap: the two predictions are not of the same dev "
                         "examples (their labels differ)")
    count = len(gold)
    if count == 0:
        raise ValueError("paired bootstrap: no dev examples")
    draws = np.random.default_rng(seed).integers(0, count, size=(samples, count))
    wins = 0
    for rows in draws:
        wins += _score(compute_metrics, key, challenger, rows) > \
            _score(compute_metrics, key, incumbent, rows)
    return wins / samples


def _score(compute_metrics: MetricFunction, key: str, prediction: EvalPrediction,
           rows: np.ndarray) -> float:
    scores = compute_metrics(EvalPrediction(predictions=_take(prediction.predictions, rows),
                                            label_ids=_take(prediction.label_ids, rows)))
    if key not in scores:
        raise KeyError(f"paired bootstrap: the metric function returns no {key!r} "
                       f"(it returns {', '.join(sorted(scores))})")
    return float(scores[key])


def _take(values: Any, rows: np.ndarray) -> Any:
    """``values`` (an array, or a tuple of arrays as Trainer returns them) at ``rows``."""
    if isinstance(values, (tuple, list)):
        return type(values)(_take(v, rows) for v in values)
    return np.asarray(values)[rows]


def _as_array(values: Any) -> np.ndarray:
    return np.asarray(values[0] if isinstance(values, (tuple, list)) else values)
