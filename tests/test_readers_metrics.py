"""Dataset readers (FewRel, TACRED, JSONL, typing) and task metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ernie_kg.data.readers import (
    read_fewrel,
    read_relation_jsonl,
    read_semeval,
    read_tacred,
    read_typing_json,
    read_typing_jsonl,
)
from ernie_kg.errors import DataFormatError
from ernie_kg.training.metrics import relation_metrics, typing_metrics

FEWREL = {
    "P36": [
        {
            "tokens": ["Paris", "is", "the", "capital", "of", "the", "French", "Republic", "."],
            "h": ["Paris", "Q90", [[0]]],
            "t": ["French Republic", "Q142", [[6, 7]]],
        }
    ]
}


def test_fewrel_spans_cover_the_mentions():
    (example,) = read_fewrel(FEWREL)
    assert example.head_text == "Paris" and example.tail_text == "French Republic"
    assert (example.label, example.head_id, example.tail_id) == ("P36", "Q90", "Q142")
    (semeval,) = read_semeval(FEWREL)
    assert semeval.head_id is None and semeval.tail_text == "French Republic"


def test_fewrel_bad_instance_names_relation_and_instance(tmp_path):
    bad = {"P36": [{"tokens": ["a"], "h": ["a", "Q1", [[5]]], "t": ["a", "Q1", [[0]]]}]}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(DataFormatError, match=r"bad\.json: relation 'P36', instance 0"):
        read_fewrel(path)


def test_tacred_inclusive_token_ends(tmp_path):
    item = {"token": ["Bill", "Gates", "founded", "Microsoft", "."], "subj_start": 0,
            "subj_end": 1, "obj_start": 3, "obj_end": 3, "relation": "org:founded_by"}
    path = tmp_path / "tacred.json"
    path.write_text(json.dumps([item]))
    (example,) = read_tacred(path)
    assert (example.head_text, example.tail_text) == ("Bill Gates", "Microsoft")


def test_relation_jsonl_checks_spans(tmp_path):
    path = tmp_path / "rel.jsonl"
    good = {"text": "Rome is in Italy.", "h": {"pos": [0, 4], "id": "rome"},
            "t": {"pos": [11, 16]}, "relation": "located_in"}
    bad = {"text": "short", "h": {"pos": [0, 2]}, "t": {"pos": [3, 99]}}
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(DataFormatError,
                       match=r"rel\.jsonl:2: field 't.pos' \(3, 99\) is out of range"):
        read_relation_jsonl(path)
    path.write_text(json.dumps(good) + "\n")
    (example,) = read_relation_jsonl(path)
    assert (example.head_text, example.tail_text, example.head_id) == ("Rome", "Italy", "rome")


def test_typing_readers(tmp_path):
    ernie = [{"sent": "Obama spoke .", "start": 0, "end": 5, "labels": ["person"],
              "ents": [["Q76", 0, 5, 0.9]]}]
    (tmp_path / "oe.json").write_text(json.dumps(ernie))
    (example,) = read_typing_json(tmp_path / "oe.json")
    assert (example.mention_text, example.labels, example.entity_id) == (
        "Obama", ("person",), "Q76")
    line = {"text": "Obama spoke", "pos": [0, 5], "labels": ["person", "politician"]}
    (tmp_path / "t.jsonl").write_text(json.dumps(line) + "\n")
    (jsonl_example,) = read_typing_jsonl(tmp_path / "t.jsonl")
    assert jsonl_example.labels == ("person", "politician")


def test_relation_metrics_by_hand():
    gold = ["a", "a", "b", "no_relation"]
    predicted = ["a", "b", "b", "a"]
    metrics = relation_metrics(gold, predicted)
    assert metrics["accuracy"] == pytest.approx(0.5)
    # F1: a = 2*(1/2*1/2)/(1) = 0.5, b = 2*(1/2*1)/(1.5) = 2/3, no_relation = 0
    assert metrics["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0) / 3)
    assert metrics["micro_f1"] == pytest.approx(0.5)
    # without no_relation: predicted positives 4 (2 right), gold positives 3 (2 right)
    assert metrics["micro_f1_no_negative"] == pytest.approx(2 * (2 / 4) * (2 / 3) / (2 / 4 + 2 / 3))


def test_relation_metrics_are_scikit_learns_on_random_labels():
    from sklearn.metrics import accuracy_score, f1_score

    rng = np.random.default_rng(0)
    names = ["a", "b", "c", "d", "no_relation"]
    for size in (1, 7, 200):
        gold = list(rng.choice(names[:4] + ["no_relation"], size))
        predicted = list(rng.choice(names, size))  # labels missing on either side too
        labels = sorted(set(gold) | set(predicted))
        metrics = relation_metrics(gold, predicted, negative_label="no_relation")
        assert metrics["accuracy"] == pytest.approx(accuracy_score(gold, predicted))
        for average in ("macro", "micro"):
            assert metrics[f"{average}_f1"] == pytest.approx(f1_score(
                gold, predicted, labels=labels, average=average, zero_division=0))
        positive = [label for label in labels if label != "no_relation"]
        assert metrics["micro_f1_no_negative"] == pytest.approx(f1_score(
            gold, predicted, labels=positive, average="micro", zero_division=0))


def test_semeval_official_score_by_hand():
    gold = ["CE(e1,e2)", "CE(e2,e1)", "CE(e1,e2)", "MC(e1,e2)", "Other"]
    predicted = ["CE(e1,e2)", "CE(e1,e2)", "MC(e2,e1)", "MC(e1,e2)", "CE(e2,e1)"]
    metrics = relation_metrics(gold, predicted)
    # CE: exact 1 (row 0; row 1 has the wrong direction), predicted CE 3, gold CE 3:
    #     P = R = 1/3, F1 = 1/3. MC: exact 1, predicted MC 2, gold MC 1: P = 1/2, R = 1,
    #     F1 = 2/3. Other is left out: (1/3 + 2/3) / 2 = 1/2.
    assert metrics["semeval_official_macro_f1"] == pytest.approx(0.5)
    assert "semeval_official_macro_f1" not in relation_metrics(["a", "b"], ["a", "a"])


def test_typing_metrics_by_hand():
    gold = np.array([[1, 0, 1], [0, 1, 0]])
    predicted = np.array([[1, 0, 1], [1, 0, 0]])
    metrics = typing_metrics(gold, predicted)
    assert metrics["strict_accuracy"] == pytest.approx(0.5)
    assert metrics["loose_macro_f1"] == pytest.approx(0.5)  # P = (1 + 0)/2, R = (1 + 0)/2
    assert metrics["loose_micro_f1"] == pytest.approx(2 / 3)  # P = 2/3, R = 2/3
