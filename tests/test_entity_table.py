"""A saved entity table is referred to by checkpoints (path + hash), not copied into them;
trained rows are saved as a delta; a self-contained copy is asked for explicitly."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from test_modeling import ENTITY_DIM, NUM_ENTITIES, batch
from test_modeling import backbone_dir as tiny_backbone_fixture

from ernie_kg.errors import ErnieKGError, SavedFileError
from ernie_kg.kg.embeddings import EntityEmbeddings
from ernie_kg.kg.vocab import EntityVocab, MappedEntityVocab
from ernie_kg.modeling import ErnieKGForRelationClassification, ErnieKGModel
from ernie_kg.modeling.entity_table import DELTA_FILE, TABLE_DIR, MappedEntityTable
from ernie_kg.modeling.modeling import ENTITY_IDS_FILE

backbone_dir = tiny_backbone_fixture  # the tiny random BERT of test_modeling


@pytest.fixture()
def saved_table(tmp_path) -> EntityEmbeddings:
    table = EntityEmbeddings.random([f"Q{i}" for i in range(NUM_ENTITIES)], dim=ENTITY_DIM)
    table.save(tmp_path / "table")
    return EntityEmbeddings.load(tmp_path / "table")


def build(backbone_dir, table, cls=ErnieKGModel, **overrides):
    torch.manual_seed(1)
    extra = {"num_labels": 5} if cls is not ErnieKGModel else {}
    return cls.from_backbone(backbone_dir, table, num_knowledge_layers=2,
                             entity_attention_heads=2, **extra, **overrides).eval()


def outputs(model, inputs=None):
    with torch.no_grad():
        return model(**(inputs or batch())).last_hidden_state


def test_saved_table_is_mapped_and_referred_to(backbone_dir, saved_table, tmp_path):
    model = build(backbone_dir, saved_table)
    table = model.entity_embeddings
    assert isinstance(table, MappedEntityTable) and isinstance(saved_table.vocab,
                                                               MappedEntityVocab)
    assert table.vectors.data_ptr() == saved_table.vectors.ctypes.data  # no copy
    model.save_pretrained(tmp_path / "model")
    files = {p.name for p in (tmp_path / "model").iterdir()}
    assert {TABLE_DIR, ENTITY_IDS_FILE, DELTA_FILE}.isdisjoint(files)
    reference = model.config.entity_table
    assert reference["path"] == "../table" and reference["entities"] == NUM_ENTITIES
    loaded = ErnieKGModel.from_pretrained(tmp_path / "model").eval()
    assert torch.equal(outputs(model), outputs(loaded))
    assert loaded.entity_row("Q4") == 5
    assert loaded.entity_embeddings.embeddings.directory == tmp_path / "table"


def test_checkpoint_does_not_grow_with_the_table(backbone_dir, tmp_path):
    sizes = {}
    for rows in (10, 5000):
        table = EntityEmbeddings.random([f"Q{i}" for i in range(rows)], dim=ENTITY_DIM)
        table.save(tmp_path / f"table{rows}")
        model = build(backbone_dir, EntityEmbeddings.load(tmp_path / f"table{rows}"))
        model.save_pretrained(tmp_path / f"model{rows}")
        sizes[rows] = {p.name: p.stat().st_size for p in (tmp_path / f"model{rows}").iterdir()}
    assert sizes[5000]["model.safetensors"] == sizes[10]["model.safetensors"]
    assert sizes[5000].keys() == sizes[10].keys()
    assert abs(sum(sizes[5000].values()) - sum(sizes[10].values())) < 64  # config digits


def test_table_is_found_by_absolute_path_argument_and_cache(backbone_dir, saved_table,
                                                            tmp_path, monkeypatch):
    model = build(backbone_dir, saved_table)
    model.save_pretrained(tmp_path / "model")
    moved = tmp_path / "elsewhere" / "model"
    shutil.move(tmp_path / "model", moved)  # the relative path breaks, the absolute holds
    assert torch.equal(outputs(model), outputs(ErnieKGModel.from_pretrained(moved)))
    shutil.move(tmp_path / "table", tmp_path / "cache" / "tables" / "t1")
    with pytest.raises(SavedFileError, match=r"missing: the entity table .* sha256"):
        ErnieKGModel.from_pretrained(moved)
    given = ErnieKGModel.from_pretrained(
        moved, entity_embeddings=tmp_path / "cache" / "tables" / "t1")
    assert torch.equal(outputs(model), outputs(given))
    monkeypatch.setenv("ERNIE_KG_CACHE", str(tmp_path / "cache"))
    assert torch.equal(outputs(model), outputs(ErnieKGModel.from_pretrained(moved)))


def test_an_altered_or_other_table_is_refused(backbone_dir, saved_table, tmp_path):
    build(backbone_dir, saved_table).save_pretrained(tmp_path / "model")
    other = EntityEmbeddings.random([f"Q{i}" for i in range(NUM_ENTITIES)], dim=ENTITY_DIM,
                                    seed=3)
    with pytest.raises(ErnieKGError, match="another table"):
        ErnieKGModel.from_pretrained(tmp_path / "model", entity_embeddings=other)
    vectors = tmp_path / "table" / "entity_vectors.npy"
    np.save(vectors, np.asarray(saved_table.vectors)[::-1])  # edited in place
    with pytest.raises(SavedFileError, match=f"{vectors}.*does not match the sha256"):
        ErnieKGModel.from_pretrained(tmp_path / "model")
    other.save(tmp_path / "table")  # replaced by another table
    with pytest.raises(SavedFileError, match="another entity table"):
        ErnieKGModel.from_pretrained(tmp_path / "model")


def test_self_contained_copy_keeps_only_the_rows_asked_for(backbone_dir, saved_table,
                                                           tmp_path):
    model = build(backbone_dir, saved_table)
    model.save_pretrained(tmp_path / "model", include_entity_table=True,
                          keep_entities=["Q5", "Q1", "Q-unknown"])
    shutil.rmtree(tmp_path / "table")  # the source is not needed any more
    loaded = ErnieKGModel.from_pretrained(tmp_path / "model").eval()
    assert list(loaded.entity_ids) == ["Q1", "Q5"]
    inputs = batch()
    source_rows = torch.tensor([0, model.entity_row("Q1"), model.entity_row("Q5")])
    copied_rows = torch.tensor([0, loaded.entity_row("Q1"), loaded.entity_row("Q5")])
    pattern = torch.arange(inputs["entity_ids"].numel()).reshape(inputs["entity_ids"].shape) % 3
    pattern[inputs["entity_ids"] == 0] = 0
    before = outputs(model, {**inputs, "entity_ids": source_rows[pattern]})
    after = outputs(loaded, {**inputs, "entity_ids": copied_rows[pattern]})
    assert torch.equal(before, after)


def test_trained_table_is_saved_as_the_rows_that_changed(backbone_dir, saved_table, tmp_path):
    model = build(backbone_dir, saved_table, ErnieKGForRelationClassification,
                  freeze_entity_table=False)
    weight = model.ernie.entity_embeddings.weight
    assert weight.requires_grad
    with torch.no_grad():
        weight[[3, 7]] += 0.5  # rows of Q2 and Q6 moved in training
    model.save_pretrained(tmp_path / "model", state_dict=model.state_dict())  # as Trainer
    from safetensors.torch import load_file

    delta = load_file(str(tmp_path / "model" / DELTA_FILE))
    assert delta["rows"].tolist() == [2, 6]
    assert not any("entity_embeddings" in k for k in load_file(
        str(tmp_path / "model" / "model.safetensors")))
    loaded = ErnieKGForRelationClassification.from_pretrained(tmp_path / "model")
    assert torch.equal(loaded.ernie.entity_embeddings.weight, weight)
    assert loaded.ernie.entity_embeddings.weight.requires_grad
    with torch.no_grad():  # a trainer reloading the checkpoint's weights gets the rows back
        loaded.ernie.entity_embeddings.weight.zero_()
    loaded.restore_entity_table(tmp_path / "model")
    assert torch.equal(loaded.ernie.entity_embeddings.weight, weight)


def test_a_model_without_table_ids_keeps_the_table_in_its_weights(backbone_dir, tmp_path):
    model = ErnieKGModel.from_backbone(backbone_dir, num_knowledge_layers=1, num_entities=7,
                                       entity_dim=ENTITY_DIM, entity_attention_heads=2)
    model.save_pretrained(tmp_path / "model")
    loaded = ErnieKGModel.from_pretrained(tmp_path / "model")
    assert loaded.config.entity_table is None
    assert torch.equal(loaded.entity_embeddings.weight, model.entity_embeddings.weight)


def test_a_fresh_model_gets_a_checkpoints_trained_table_back(backbone_dir, saved_table,
                                                             tmp_path):
    """Resuming (or another DDP rank) restores from the checkpoint, not from memory."""
    in_memory = EntityEmbeddings.random([f"Q{i}" for i in range(NUM_ENTITIES)],
                                        dim=ENTITY_DIM, seed=5)
    for name, table in (("referred", saved_table), ("copied", in_memory)):
        model = build(backbone_dir, table, ErnieKGForRelationClassification,
                      freeze_entity_table=False)
        with torch.no_grad():
            model.ernie.entity_embeddings.weight[[2, 5]] -= 0.25
        model.save_pretrained(tmp_path / name)
        assert (tmp_path / name / (DELTA_FILE if name == "referred" else TABLE_DIR)).exists()
        fresh = build(backbone_dir, table, ErnieKGForRelationClassification,
                      freeze_entity_table=False)
        parameter = fresh.ernie.entity_embeddings.weight
        fresh.restore_entity_table(tmp_path / name)
        assert fresh.ernie.entity_embeddings.weight is parameter  # the optimizer's own
        assert torch.equal(parameter, model.ernie.entity_embeddings.weight)
        assert fresh.ernie._entity_source is table  # not the checkpoint's copy


def test_the_mapped_table_is_no_buffer_yet_moves_with_the_model(backbone_dir, saved_table):
    model = build(backbone_dir, saved_table)
    assert not [n for n, _ in model.named_buffers() if "entity_embeddings" in n]  # DDP
    model.to(torch.float64)
    assert model.entity_embeddings.vectors.dtype == torch.float64
    assert model.entity_embeddings(torch.tensor([0, 1])).dtype == torch.float64


def test_mapped_vocab_saves_as_a_list_and_a_wrong_table_does_not_hide_the_right_one(
        backbone_dir, saved_table, tmp_path):
    saved_table.vocab.save(tmp_path / "ids.json")
    assert EntityVocab.load(tmp_path / "ids.json") == saved_table.vocab
    build(backbone_dir, saved_table).save_pretrained(tmp_path / "a" / "model")
    moved = tmp_path / "b" / "model"
    shutil.move(tmp_path / "a" / "model", moved)
    EntityEmbeddings.random(["x"], dim=ENTITY_DIM).save(tmp_path / "b" / "table")  # wrong
    assert ErnieKGModel.from_pretrained(moved).entity_row("Q3") == 4  # the absolute path


def test_a_published_checkpoint_refers_to_the_table_from_where_it_is(backbone_dir,
                                                                      saved_table, tmp_path):
    from ernie_kg.training.checkpoints import publish_staged_checkpoint

    staging = tmp_path / "run" / ".tmp-checkpoint-1"
    build(backbone_dir, saved_table).save_pretrained(staging / "checkpoint-1")
    target = publish_staged_checkpoint(staging, tmp_path / "run" / "checkpoint-1")
    reference = json.loads((target / "config.json").read_text())["entity_table"]
    assert (target / reference["path"]).resolve() == (tmp_path / "table").resolve()
