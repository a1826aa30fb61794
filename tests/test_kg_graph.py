"""KnowledgeGraph: load/save round trip, validation errors, networkx operations."""

from __future__ import annotations

import json

import pytest

from ernie_kg.errors import EmptyGraphError, KGFormatError, UnknownIdError
from ernie_kg.kg import KnowledgeGraph


def test_round_trip_is_identical(tiny_kg, tmp_path):
    tiny_kg.save(tmp_path / "kg")
    loaded = KnowledgeGraph.load(tmp_path / "kg")
    assert loaded == tiny_kg
    assert loaded.entity("germany").aliases == ("Deutschland", "FRG")
    assert loaded.entity("tokyo").label == "tokyo"  # no metadata: the id is the name
    assert loaded.splits["test"] == [("japan", "continent", "asia")]


def _kg_dir(tmp_path, train="a\tr\tb\n", entities=None, relations=None):
    directory = tmp_path / "kg"
    directory.mkdir()
    (directory / "train.txt").write_text(train)
    if entities is not None:
        (directory / "entities.jsonl").write_text(entities)
    if relations is not None:
        (directory / "relations.jsonl").write_text(relations)
    return directory


def test_malformed_triple_line_names_file_and_line(tmp_path):
    directory = _kg_dir(tmp_path, train="a\tr\tb\nc\td\n")
    with pytest.raises(KGFormatError, match=r"train\.txt:2: expected 3 tab-separated fields"):
        KnowledgeGraph.load(directory)


def test_empty_field_is_reported(tmp_path):
    with pytest.raises(KGFormatError, match=r"train\.txt:1: empty relation field"):
        KnowledgeGraph.load(_kg_dir(tmp_path, train="a\t \tb\n"))


def test_empty_graph(tmp_path):
    with pytest.raises(EmptyGraphError, match="no triples"):
        KnowledgeGraph.load(_kg_dir(tmp_path, train="\n"))


def test_missing_train_file(tmp_path):
    (tmp_path / "kg").mkdir()
    with pytest.raises(KGFormatError, match="needs train.txt"):
        KnowledgeGraph.load(tmp_path / "kg")


def test_duplicate_entity_id(tmp_path):
    lines = json.dumps({"id": "a"}) + "\n" + json.dumps({"id": "a", "label": "A"}) + "\n"
    with pytest.raises(KGFormatError, match=r"entities\.jsonl:2: duplicate entity id 'a'"):
        KnowledgeGraph.load(_kg_dir(tmp_path, entities=lines))


def test_duplicate_relation_id(tmp_path):
    lines = '{"id": "r"}\n{"id": "r"}\n'
    with pytest.raises(KGFormatError, match=r"relations\.jsonl:2: duplicate relation id"):
        KnowledgeGraph.load(_kg_dir(tmp_path, relations=lines))


def test_entity_with_metadata_and_no_fact_is_kept(tmp_path):
    kg = KnowledgeGraph.load(_kg_dir(tmp_path, entities='{"id": "zzz", "label": "Zed"}\n'))
    assert kg.entity("zzz").label == "Zed"
    assert kg.neighbors("zzz") == set() and kg.k_hop_entities(["zzz"], 2) == {"zzz"}
    assert kg.degree_stats()["isolated"] == 1
    from ernie_kg.linking import EntityLinker

    linked = EntityLinker.from_kg_dir(tmp_path / "kg")("We met Zed in town .")
    assert [(m.text, m.entity_id) for m in linked] == [("Zed", "zzz")]


def test_relation_with_metadata_and_no_fact_is_kept(tmp_path):
    kg = KnowledgeGraph.load(_kg_dir(tmp_path, relations='{"id": "q", "label": "Q"}\n'))
    assert kg.relations["q"].label == "Q"


def test_bad_json_and_bad_field_types(tmp_path):
    with pytest.raises(KGFormatError, match=r"entities\.jsonl:1: invalid JSON"):
        KnowledgeGraph.load(_kg_dir(tmp_path, entities="{not json\n"))


def test_bad_aliases_field(tmp_path):
    with pytest.raises(KGFormatError, match=r"entities\.jsonl:1: field 'aliases'"):
        KnowledgeGraph.load(_kg_dir(tmp_path, entities='{"id": "a", "aliases": "x"}\n'))


def test_networkx_view_and_neighbours(tiny_kg):
    graph = tiny_kg.graph
    assert graph.number_of_edges() == len(tiny_kg.triples)
    assert graph["paris"]["france"]["capital_of"]["relation"] == "capital_of"
    assert tiny_kg.neighbors("france") == {"paris", "europe", "germany"}
    assert tiny_kg.neighbors("france", direction="out") == {"europe", "germany"}
    assert tiny_kg.neighbors("france", direction="in") == {"paris", "germany"}
    with pytest.raises(UnknownIdError):
        tiny_kg.neighbors("atlantis")


def test_k_hop_subgraph(tiny_kg):
    assert tiny_kg.k_hop_entities(["paris"], hops=1) == {"paris", "france"}
    two_hops = tiny_kg.subgraph(["paris"], hops=2)
    assert set(two_hops.nodes) == {"paris", "france", "europe", "germany"}
    assert tiny_kg.distance("paris", "berlin") == 3
    assert tiny_kg.distance("paris", "tokyo") is None


def test_degree_stats(tiny_kg):
    stats = tiny_kg.degree_stats()
    assert stats["entities"] == len(tiny_kg.entities) == 8
    assert stats["max"] == 4  # france: from paris, to europe, border both ways
    assert stats["min"] == 1
    assert stats["mean"] == pytest.approx(2 * len(tiny_kg.triples) / 8)


def test_merge_keeps_metadata_and_deduplicates(tiny_kg):
    other = KnowledgeGraph.from_triples(
        [("paris", "capital_of", "france"), ("rome", "capital_of", "italy")]
    )
    merged = tiny_kg.merged_with(other)
    assert merged.train.count(("paris", "capital_of", "france")) == 1
    assert merged.entity("paris").label == "Paris"
    assert "italy" in merged
