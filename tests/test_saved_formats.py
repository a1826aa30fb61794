"""A saved classifier holds its entity vocabulary once, and the previous release's layout
(the processor's own copy in ``processor_entity_ids.json``) still loads."""

from __future__ import annotations

import json
import shutil

from ernie_kg.kg import EntityEmbeddings
from ernie_kg.kg.vocab import EntityVocab
from ernie_kg.pipelines import RelationClassifier, build_relation_classifier
from ernie_kg.processing.processor import MODEL_TABLE_ROWS, ErnieKGProcessor

TEXT = "Paris is the capital of France ."


def test_vocabulary_saved_once_and_old_layout_loads(tiny_backbone, demo_knowledge, tmp_path):
    kg, embeddings, aliases = demo_knowledge
    classifier = build_relation_classifier(["capital_of", "located_in"], kg, embeddings,
                                           aliases, backbone=tiny_backbone)
    saved = classifier.save(tmp_path / "new")
    assert not (saved / "processor_entity_ids.json").exists()
    assert not (saved / "entity_ids.json").exists()  # the ids live with the table
    settings = json.loads((saved / "ernie_kg_processor.json").read_text())
    assert settings["entity_rows"] == MODEL_TABLE_ROWS
    assert EntityEmbeddings.load(saved / "entity_table").vocab == embeddings.vocab
    expected = classifier.predict_proba(TEXT, "Paris", "France")
    loaded = RelationClassifier.load(saved)
    assert loaded.processor.vocab == embeddings.vocab
    assert loaded.predict_proba(TEXT, "Paris", "France") == expected
    assert ErnieKGProcessor.from_pretrained(saved).vocab == embeddings.vocab

    # Earlier releases kept the table in the weights, its ids in entity_ids.json, and
    # before that a second copy of the ids for the processor: both still load.
    earlier = build_relation_classifier(["capital_of", "located_in"], kg, embeddings,
                                        aliases, backbone=tiny_backbone,
                                        freeze_entity_table=False)
    earlier.model.base_model._entity_source = None  # as a model of an earlier release
    old = earlier.save(tmp_path / "old")
    assert EntityVocab.load(old / "entity_ids.json") == embeddings.vocab
    expected = earlier.predict_proba(TEXT, "Paris", "France")
    assert RelationClassifier.load(old).predict_proba(TEXT, "Paris", "France") == expected
    older = tmp_path / "older"
    shutil.copytree(old, older)
    shutil.copy(older / "entity_ids.json", older / "processor_entity_ids.json")
    settings = json.loads((older / "ernie_kg_processor.json").read_text())
    settings["entity_rows"] = "processor_entity_ids.json"
    (older / "ernie_kg_processor.json").write_text(json.dumps(settings))
    assert RelationClassifier.load(older).predict_proba(TEXT, "Paris", "France") == expected


def test_classifier_over_a_kg_directory_refers_to_it(tiny_backbone, demo_knowledge, tmp_path):
    import pytest

    from ernie_kg.errors import SavedFileError
    from ernie_kg.kg import KnowledgeGraph
    from ernie_kg.paths import demo_kg_dir

    kg_dir = tmp_path / "kg-dir"
    shutil.copytree(demo_kg_dir(), kg_dir, ignore=shutil.ignore_patterns(".ernie_kg"))
    kg, embeddings = KnowledgeGraph.load(kg_dir), demo_knowledge[1]
    classifier = build_relation_classifier(["capital_of", "located_in"], kg, embeddings,
                                           backbone=tiny_backbone)
    saved = classifier.save(tmp_path / "model")
    settings = json.loads((saved / "ernie_kg_classifier.json").read_text())
    assert settings["kg"]["kg_dir"] == str(kg_dir.resolve())
    assert not (saved / "kg").exists()  # no copy of the KG, nor of its alias table
    assert [p.name for p in saved.rglob("aliases.json")] == []
    assert list(saved.rglob("alias_index.json"))
    expected = classifier.predict_proba(TEXT, "Paris", "France")
    assert RelationClassifier.load(saved).predict_proba(TEXT, "Paris", "France") == expected

    with (kg_dir / "train.txt").open("a") as train:
        train.write("paris\tcapital_of\tgermany\n")
    with pytest.raises(SavedFileError, match=r"ernie_kg_classifier\.json.*changed"):
        RelationClassifier.load(saved)
    shutil.rmtree(kg_dir)
    with pytest.raises(SavedFileError, match=r"ernie_kg_classifier\.json.*is gone"):
        RelationClassifier.load(saved)
