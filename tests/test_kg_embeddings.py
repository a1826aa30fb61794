"""PyKEEN embeddings on the bundled Nations KG, storage, and the faiss index."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from ernie_kg.cli import app
from ernie_kg.kg import EntityEmbeddings, EntityIndex, KnowledgeGraph, train_entity_embeddings

FAST = {"dim": 32, "learning_rate": 0.01, "batch_size": 128, "num_negs_per_pos": 32,
        "progress": False}


@pytest.fixture(scope="module")
def nations() -> KnowledgeGraph:
    from pykeen.datasets import Nations

    dataset = Nations()

    def rows(factory):
        return [tuple(t) for t in factory.triples]

    return KnowledgeGraph.from_triples(
        rows(dataset.training), rows(dataset.validation), rows(dataset.testing)
    )


@pytest.fixture(scope="module")
def nations_embeddings(nations) -> EntityEmbeddings:
    return train_entity_embeddings(nations, epochs=30, **FAST)


def test_transe_beats_untrained_ranking_by_wide_margin(nations, nations_embeddings):
    untrained = train_entity_embeddings(nations, epochs=0, **FAST)
    trained = nations_embeddings.metrics
    assert trained["mrr"] > untrained.metrics["mrr"] + 0.1
    assert trained["hits_at_10"] > 0.9
    assert set(trained) >= {"mrr", "hits_at_1", "hits_at_3", "hits_at_10", "seconds"}


def test_embeddings_cover_every_entity(nations, nations_embeddings):
    assert set(nations_embeddings.entity_ids) == set(nations.entities)
    assert nations_embeddings.vectors.dtype == np.float32
    assert nations_embeddings.vectors.shape == (len(nations.entities), 32)
    assert nations_embeddings.relation_vectors.shape == (len(nations.relations), 32)
    first = nations_embeddings.entity_ids[0]
    assert nations_embeddings.row(first) == 1  # row 0 is "no entity"
    assert nations_embeddings.entity_of_row(1) == first
    table = nations_embeddings.padded_table()
    assert np.all(table[0] == 0) and np.array_equal(table[1:], nations_embeddings.vectors)


def test_save_load_identical_and_memory_mapped(nations_embeddings, tmp_path):
    nations_embeddings.save(tmp_path / "emb")
    loaded = EntityEmbeddings.load(tmp_path / "emb")
    assert isinstance(loaded.vectors, np.memmap)
    assert loaded.entity_ids == nations_embeddings.entity_ids
    assert np.array_equal(np.asarray(loaded.vectors), nations_embeddings.vectors)
    assert np.array_equal(loaded.relation_vectors, nations_embeddings.relation_vectors)
    assert loaded.config == nations_embeddings.config
    assert loaded.content_hash() == nations_embeddings.content_hash()


def test_flat_index_equals_brute_force(nations_embeddings):
    index = EntityIndex(nations_embeddings)
    vectors = nations_embeddings.vectors
    for entity_id in nations_embeddings.entity_ids:
        own = nations_embeddings.index_of(entity_id)
        distances = np.linalg.norm(vectors - vectors[own], axis=1)
        distances[own] = np.inf
        expected = [nations_embeddings.entity_ids[i] for i in np.argsort(distances)[:5]]
        found = index.nearest(entity_id, k=5)
        assert [e for e, _ in found] == expected
        assert [s for _, s in found] == pytest.approx(-np.sort(distances)[:5], abs=1e-4)


@pytest.mark.parametrize("kind", ["ivf", "hnsw", "ivfpq"])
def test_approximate_indexes_find_the_nearest(kind):
    embeddings = EntityEmbeddings.random([f"e{i}" for i in range(2000)], dim=16, seed=1)
    exact = EntityIndex(embeddings)
    approximate = EntityIndex(embeddings, kind=kind, nprobe=16)
    agree = sum(
        exact.nearest(f"e{i}", 1)[0][0] == approximate.nearest(f"e{i}", 1)[0][0]
        for i in range(0, 2000, 20)
    )
    assert agree >= 80  # of 100 queries


def test_ivfpq_reranks_with_exact_scores_and_saves_and_loads(tmp_path):
    from ernie_kg.errors import SavedFileError

    embeddings = EntityEmbeddings.random([f"e{i}" for i in range(3000)], dim=16, seed=2)
    index = EntityIndex(embeddings, kind="ivfpq", nprobe=16)
    assert index.index.pq.M == 4  # one byte per 4 dims
    found = index.nearest("e7", k=5)
    vectors = embeddings.vectors
    for entity_id, score in found:  # scores are exact distances, best first
        exact = -np.linalg.norm(vectors[embeddings.index_of(entity_id)] - vectors[7])
        assert score == pytest.approx(exact, abs=1e-5)
    assert [s for _, s in found] == sorted((s for _, s in found), reverse=True)
    loaded = EntityIndex.load(index.save(tmp_path / "entities.faiss"), embeddings, "ivfpq")
    assert loaded.nearest("e7", k=5) == found
    with pytest.raises(SavedFileError, match="does not fit the table"):
        EntityIndex.load(tmp_path / "entities.faiss",
                         EntityEmbeddings.random(["a", "b"], dim=16), "ivfpq")
    assert EntityIndex(embeddings, kind="auto").kind == "flat"  # small: exact


def test_cli_embed_writes_metrics(tmp_path, tiny_kg):
    tiny_kg.save(tmp_path / "kg")
    result = CliRunner().invoke(
        app,
        ["kg", "embed", "--triples-dir", str(tmp_path / "kg"), "--out", str(tmp_path / "out"),
         "--dim", "8", "--epochs", "2", "--seed", "3"],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    for key in ("mrr", "hits_at_1", "hits_at_3", "hits_at_10", "seconds"):
        assert isinstance(metrics[key], float)
    assert 0 < metrics["mrr"] <= 1
    assert metrics["config"]["seed"] == 3
    loaded = EntityEmbeddings.load(tmp_path / "out")
    assert loaded.dim == 8 and len(loaded) == len(tiny_kg.entities)


def test_cache_key_ignores_a_later_setting_at_its_default(nations):
    from ernie_kg.kg.cache import kg_content_hash

    settings = {"dim": 16, "epochs": 2}
    assert kg_content_hash(nations, {**settings, "sparse": False}) == kg_content_hash(
        nations, settings)
    assert kg_content_hash(nations, {**settings, "sparse": True}) != kg_content_hash(
        nations, settings)
