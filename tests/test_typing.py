"""Entity typing: features, training, evaluation, one-call inference and storage.

The tiny random BERT of tests/test_finetune.py (MiniLM's tokenizer, 2 layers) on typed
mentions of the bundled demo corpus, typed by the demo KG's own entity types.
"""

from __future__ import annotations

import numpy as np
import pytest

from ernie_kg.data.features import LabelMap, typing_features
from ernie_kg.data.fewrel import read_fewrel
from ernie_kg.data.readers import typed_mentions
from ernie_kg.errors import SavedFileError
from ernie_kg.paths import kg_data_dir
from ernie_kg.pipelines.entity_typing import EntityTyper, build_entity_typer, train_entity_typer
from ernie_kg.pipelines.relation import RelationClassifier

CORPUS = kg_data_dir() / "demo_corpus"
FAST = {"batch_size": 8, "eval_batch_size": 32, "logging_steps": 1, "progress": False,
        "learning_rate": 1e-3}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def knowledge(demo_knowledge):
    return demo_knowledge


@pytest.fixture(scope="module")
def mentions(knowledge):
    kg = knowledge[0]
    types_of = {e.id: e.types for e in kg.entities.values()}
    return {split: typed_mentions(read_fewrel(CORPUS / f"{split}.json")[:n], types_of)
            for split, n in (("train", 60), ("dev", 20))}


@pytest.fixture(scope="module")
def trained(tiny_backbone, knowledge, mentions, tmp_path_factory):
    from collections import Counter

    counts = Counter(t for m in mentions["train"] for t in m.labels)
    types = sorted(t for t, n in counts.items() if n >= 3)
    typer = build_entity_typer(types, *knowledge, backbone=tiny_backbone)
    out = tmp_path_factory.mktemp("typing")
    metrics = train_entity_typer(typer, mentions["train"], mentions["dev"], out,
                                 log_path=out / "log.jsonl", epochs=3, seed=0, **FAST)
    return typer, metrics, out


def test_typed_mentions_take_head_and_tail_types(knowledge, mentions):
    kg = knowledge[0]
    assert mentions["train"]
    for mention in mentions["train"]:
        assert mention.labels == kg.entities[mention.entity_id].types
        assert mention.mention_text  # a real span of the sentence


def test_features_are_multi_hot_over_the_known_types(tiny_backbone, knowledge, mentions):
    labels = LabelMap(("city", "person"))
    typer = build_entity_typer(labels, *knowledge, backbone=tiny_backbone)
    features = typing_features(mentions["train"][:10], typer.processor, labels, "gold")
    for mention, feature in zip(mentions["train"], features):
        assert feature["labels"] == [float("city" in mention.labels),
                                     float("person" in mention.labels)]
        assert len(feature["marker_positions"]) == 1
        start = feature["marker_positions"][0]
        # the gold entity sits on the first wordpiece after the mention's start marker
        row = list(knowledge[1].entity_ids).index(mention.entity_id) + 1
        assert feature["entity_ids"][start + 1] == row
    baseline = typing_features(mentions["train"][:10], typer.processor, labels, "none")
    assert all(not any(f["entity_ids"]) for f in baseline)


def test_training_learns_and_reports_typing_metrics(trained):
    typer, metrics, out = trained
    losses = [r["loss"] for r in map(__import__("json").loads,
                                     (out / "log.jsonl").read_text().splitlines())
              if "loss" in r]
    assert losses[-1] < losses[0]
    for key in ("strict_accuracy", "loose_macro_f1", "loose_micro_f1"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["loose_micro_f1"] > 0.3  # well above an empty prediction (0)
    assert set(metrics["per_label_f1"]) == set(typer.label_map.labels)


def test_saved_typer_predicts_from_raw_text(trained, mentions):
    typer, _, out = trained
    loaded = EntityTyper.load(out / "model")
    example = mentions["dev"][0]
    np.testing.assert_allclose(loaded.probabilities([example]),
                               typer.probabilities([example]), atol=1e-5)
    probabilities = loaded.predict_proba(example.text, example.mention_text)
    assert list(probabilities) == sorted(probabilities, key=probabilities.get, reverse=True)
    predicted = loaded.predict(example.text, example.mention)
    assert predicted == [(t, p) for t, p in probabilities.items() if p > loaded.threshold]
    with pytest.raises(SavedFileError, match="no RelationClassifier"):
        RelationClassifier.load(out / "model")
