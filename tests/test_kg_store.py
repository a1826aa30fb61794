"""The on-disk KG store: built once, rebuilt when the KG changes, never half-written,
and the stored graph answers exactly as networkx over the same facts."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ernie_kg.errors import KGFormatError, SavedFileError
from ernie_kg.kg import KnowledgeGraph
from ernie_kg.kg.adjacency import Adjacency
from ernie_kg.kg.store import INDEX_DIR, index_location, open_store


def _kg(tmp_path, train="a\tr\tb\nb\tr\tc\n", entities=None, name="kg"):
    directory = tmp_path / name
    directory.mkdir()
    (directory / "train.txt").write_text(train)
    if entities is not None:
        (directory / "entities.jsonl").write_text(entities)
    return directory


def test_index_is_built_once_and_reused(tmp_path):
    directory = _kg(tmp_path)
    first = open_store(directory)
    assert first.directory == directory.resolve() / INDEX_DIR / "index"
    written = (first.directory / "meta.json").stat().st_mtime_ns
    again = open_store(directory)
    assert (again.directory / "meta.json").stat().st_mtime_ns == written
    assert [again.entity_id(r) for r in range(again.entity_count)] == ["a", "b", "c"]


def test_edited_kg_is_reindexed_and_said_so(tmp_path, caplog):
    directory = _kg(tmp_path)
    assert KnowledgeGraph.load(directory).neighbors("b") == {"a", "c"}
    (directory / "train.txt").write_text("a\tr\tb\nb\tr\td\n")
    with caplog.at_level(logging.WARNING):
        kg = KnowledgeGraph.load(directory)
    assert kg.neighbors("b") == {"a", "d"} and "c" not in kg
    assert "changed since they were indexed" in caplog.text


def test_touched_but_unchanged_kg_is_not_rebuilt(tmp_path, caplog):
    directory = _kg(tmp_path)
    written = (open_store(directory).directory / "meta.json").stat().st_mtime_ns
    os.utime(directory / "train.txt", ns=(1, 1))
    with caplog.at_level(logging.WARNING):
        store = open_store(directory)
    assert (store.directory / "meta.json").stat().st_mtime_ns == written
    assert "rebuilding" not in caplog.text


def test_truncated_index_file_is_named_with_how_to_rebuild(tmp_path):
    store = open_store(_kg(tmp_path))
    target = store.directory / "out_pairs.npy"
    target.write_bytes(target.read_bytes()[:-4])
    with pytest.raises(SavedFileError, match=r"out_pairs\.npy: .*truncated.*--rebuild"):
        open_store(tmp_path / "kg")
    assert open_store(tmp_path / "kg", rebuild=True).entity_count == 3


def test_foreign_index_is_refused(tmp_path):
    store = open_store(_kg(tmp_path))
    (store.directory / "meta.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(SavedFileError, match=r"meta\.json: not a KG index"):
        open_store(tmp_path / "kg")


def test_interrupted_build_leaves_no_index(tmp_path, monkeypatch):
    directory = _kg(tmp_path)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Adjacency, "from_triples", interrupted)
    with pytest.raises(KeyboardInterrupt):
        open_store(directory)
    root = directory / INDEX_DIR
    assert not (root / "index").exists() and not list(root.glob("index.*"))
    monkeypatch.undo()
    assert open_store(directory).entity_count == 3


def _open_in_process(directory):
    return open_store(directory).entity_count


def test_two_processes_building_at_once_share_one_index(tmp_path):
    lines = "".join(f"e{i % 5000}\tr{i % 7}\te{(i * 31) % 5000}\n" for i in range(20000))
    directory = _kg(tmp_path, train=lines)
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        counts = pool.map(_open_in_process, [directory, directory])
    assert counts == [5000, 5000]
    assert sorted(p.name for p in (directory / INDEX_DIR).iterdir()) == [
        "build.lock", "index", "source.json"]


def test_unwritable_kg_dir_indexes_into_the_cache(tmp_path, monkeypatch):
    directory = _kg(tmp_path)
    (directory / INDEX_DIR).write_text("not a folder")  # the index cannot go inside
    monkeypatch.setenv("ERNIE_KG_CACHE", str(tmp_path / "cache"))
    assert index_location(directory).parent == tmp_path / "cache" / "kg-index"
    assert KnowledgeGraph.load(directory).neighbors("a") == {"b"}


def test_duplicate_entity_names_both_lines(tmp_path):
    directory = _kg(tmp_path, entities='{"id": "a"}\n{"id": "b"}\n{"id": "a"}\n')
    with pytest.raises(KGFormatError, match=r"entities\.jsonl:3: .*'a' \(first on line 1\)"):
        open_store(directory)
    assert not (directory / INDEX_DIR / "index").exists()


def test_a_fifty_megabyte_line_is_read(tmp_path):
    description = "x" * 50_000_000
    record = json.dumps({"id": "a", "label": "A", "description": description})
    kg = KnowledgeGraph.load(_kg(tmp_path, entities=record + "\n"))
    assert len(kg.entity("a").description) == 50_000_000 and kg.entity("b").label == "b"


@pytest.mark.parametrize("train", [
    "a\tr\tb\r\nb\tr\tc\r\n",                    # Windows line ends
    '"a\tr\t"b"\n"b"\ts\tc\n',                      # quotes are characters
    "a\tr\tb\n\n   \nb\tr\tc\n",                     # blank and whitespace-only lines
    " a\tr \tb\nb\tr\tc",                            # padded fields, no final newline
    "\ufeffa\tr\tb\nb\tr\tc\n",                       # byte-order mark
    "a\x1c\tr\tb\nb\tr\tc\n",                          # a separator str.strip() removes
])
def test_columnar_reader_reads_as_the_line_loop(tmp_path, monkeypatch, train):
    from ernie_kg.kg import reading, store

    expected = [t[1:] for t in reading.iter_triples(_kg(tmp_path, train, name="x") / "train.txt")]
    directory = _kg(tmp_path, train + "c\tr\td\n" if train.endswith("\n") else train)
    fast = open_store(directory)
    monkeypatch.setattr(store, "triple_columns", lambda path: None)
    slow = open_store(directory, rebuild=True)
    assert len(fast.triple_array) == len(slow.triple_array) >= len(expected) > 0
    for built in (fast, slow):
        decoded = [(built.entity_id(h), built.relation_ids[r], built.entity_id(t))
                   for h, r, t in built.triple_array.tolist()]
        assert decoded[:len(expected)] == expected
        assert [built.entity_id(row) for row in range(built.entity_count)] == [
            fast.entity_id(row) for row in range(fast.entity_count)]


# ---------------------------------------------------------------------- same answers
_ids = st.sampled_from([f"e{i}" for i in range(12)])
_facts = st.lists(st.tuples(_ids, st.sampled_from(["r", "s", "t"]), _ids), min_size=1,
                  max_size=40)


@settings(max_examples=40, deadline=None)
@given(facts=_facts, seeds=st.lists(_ids, max_size=3), hops=st.integers(0, 3))
def test_stored_graph_answers_as_networkx(tmp_path_factory, facts, seeds, hops):
    memory = KnowledgeGraph.from_triples(facts)
    stored = KnowledgeGraph.load(memory.save(tmp_path_factory.mktemp("kg")))
    reference = memory.graph
    undirected = nx.Graph(reference)
    assert stored == memory
    assert list(stored.entities) == list(memory.entities)
    for graph in (memory, stored):
        for entity in reference:
            expected = (set(reference.successors(entity)) | set(reference.predecessors(entity)))
            assert graph.neighbors(entity) == expected - {entity}
        known = [s for s in seeds if s in reference]
        expected_hop = set(nx.multi_source_dijkstra_path_length(undirected, known, cutoff=hops)
                           ) if known else set()
        assert graph.k_hop_entities(seeds, hops) == expected_hop
        sub = graph.subgraph(seeds, hops)
        assert sorted(sub.edges(keys=True)) == sorted(
            reference.subgraph(expected_hop).edges(keys=True))
        first, last = facts[0][0], facts[-1][2]
        lengths = nx.single_source_shortest_path_length(undirected, first, cutoff=hops)
        assert graph.distance(first, last, cutoff=hops) == lengths.get(last)
        degrees = [d for _, d in reference.degree()]
        assert graph.degree_stats()["mean"] == pytest.approx(np.mean(degrees))
        assert graph.degree_stats()["max"] == max(degrees)


def test_cli_kg_index_builds_store_and_alias_index(tmp_path):
    from typer.testing import CliRunner

    from ernie_kg.cli import app

    directory = _kg(tmp_path, entities='{"id": "a", "label": "Alpha Centauri"}\n')
    result = CliRunner().invoke(app, ["kg", "index", "--kg", str(directory)])
    assert result.exit_code == 0, result.output
    assert "3 entities, 1 relations, 2 triples" in result.output
    index = directory / INDEX_DIR / "index"
    assert (index / "meta.json").exists() and (index / "aliases" / "meta.json").exists()
    again = CliRunner().invoke(app, ["kg", "index", "--kg", str(directory), "--rebuild"])
    assert again.exit_code == 0, again.output
