"""A saved classifier holds its entity vocabulary once, and the previous release's layout
(the processor's own copy in ``processor_entity_ids.json``) still loads."""

from __future__ import annotations

import json
import shutil

from ernie_kg.kg.vocab import EntityVocab
from ernie_kg.pipelines import RelationClassifier, build_relation_classifier

TEXT = "Paris is the capital of France ."


def test_vocabulary_saved_once_and_old_layout_loads(tiny_backbone, demo_knowledge, tmp_path):
    kg, embeddings, aliases = demo_knowledge
    classifier = build_relation_classifier(["capital_of", "located_in"], kg, embeddings,
                                           aliases, backbone=tiny_backbone)
    saved = classifier.save(tmp_path / "new")
    assert not (saved / "processor_entity_ids.json").exists()
    settings = json.loads((saved / "ernie_kg_processor.json").read_text())
    assert settings["entity_rows"] == "entity_ids.json"
    assert EntityVocab.load(saved / "entity_ids.json") == embeddings.vocab
    expected = classifier.predict_proba(TEXT, "Paris", "France")
    loaded = RelationClassifier.load(saved)
    assert loaded.processor.vocab == embeddings.vocab
    assert loaded.predict_proba(TEXT, "Paris", "France") == expected

    old = tmp_path / "old"  # the previous release wrote the ids twice
    shutil.copytree(saved, old)
    shutil.copy(old / "entity_ids.json", old / "processor_entity_ids.json")
    settings["entity_rows"] = "processor_entity_ids.json"
    (old / "ernie_kg_processor.json").write_text(json.dumps(settings))
    assert RelationClassifier.load(old).predict_proba(TEXT, "Paris", "France") == expected
