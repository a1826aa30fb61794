"""The paired bootstrap that decides whether a dev-set win is more than noise."""

from __future__ import annotations

import numpy as np
import pytest
from transformers import EvalPrediction

from ernie_kg.training.dev_confidence import paired_bootstrap_wins
from ernie_kg.training.finetuning import relation_compute_metrics

LABELS = {i: f"P{i}" for i in range(4)}
SCORE = relation_compute_metrics(LABELS)


def _logits(predicted: np.ndarray) -> np.ndarray:
    return np.eye(len(LABELS))[predicted]


def _prediction(predicted, gold) -> EvalPrediction:
    return EvalPrediction(predictions=_logits(np.asarray(predicted)), label_ids=np.asarray(gold))


def test_a_model_right_where_the_other_is_wrong_wins_every_resample():
    gold = np.arange(200) % 4
    wrong = (gold + 1) % 4
    better = np.where(np.arange(200) < 100, gold, wrong)  # right on half, the other never
    share = paired_bootstrap_wins(SCORE, "eval_accuracy", _prediction(better, gold),
                                  _prediction(wrong, gold), samples=200)
    assert share == 1.0


def test_one_prediction_out_of_hundreds_is_not_a_confident_win():
    gold = np.arange(400) % 4
    base = np.where(np.arange(400) % 5 == 0, (gold + 1) % 4, gold)  # 80% right
    one_more = base.copy()
    one_more[0] = gold[0]  # one more right answer
    share = paired_bootstrap_wins(SCORE, "macro_f1", _prediction(one_more, gold),
                                  _prediction(base, gold), samples=500)
    assert 0.3 < share < 0.95  # wins where example 0 is drawn (about 63%), ties elsewhere
    # ties are not wins: the same predictions never beat themselves
    assert paired_bootstrap_wins(SCORE, "macro_f1", _prediction(base, gold),
                                 _prediction(base, gold), samples=50) == 0.0


def test_the_draw_is_paired_and_reproducible():
    rng = np.random.default_rng(1)
    gold = rng.integers(0, 4, 300)
    a, b = rng.integers(0, 4, 300), np.where(rng.random(300) < 0.5, gold, rng.integers(0, 4, 300))
    first = paired_bootstrap_wins(SCORE, "macro_f1", _prediction(b, gold), _prediction(a, gold))
    again = paired_bootstrap_wins(SCORE, "macro_f1", _prediction(b, gold), _prediction(a, gold))
    swapped = paired_bootstrap_wins(SCORE, "macro_f1", _prediction(a, gold),
                                    _prediction(b, gold))
    assert first == again and first + swapped <= 1.0


def test_predictions_of_different_examples_are_refused():
    with pytest.raises(ValueError, match="not of the same dev examples"):
        paired_bootstrap_wins(SCORE, "macro_f1", _prediction([0, 1], [0, 1]),
                              _prediction([0, 1], [1, 0]))
    with pytest.raises(KeyError, match="no 'f2'"):
        paired_bootstrap_wins(SCORE, "eval_f2", _prediction([0, 1], [0, 1]),
                              _prediction([0, 1], [0, 1]), samples=2)
