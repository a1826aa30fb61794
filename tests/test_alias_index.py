"""The alias index of a KG directory answers exactly as the in-memory alias table built
from the same KG, links the same, and a linker saved over it refers to the KG."""

from __future__ import annotations

import json
import shutil

import pytest

from ernie_kg.errors import SavedFileError
from ernie_kg.kg import KnowledgeGraph
from ernie_kg.kg.store import open_store
from ernie_kg.linking import EntityLinker
from ernie_kg.linking.alias_index import AliasIndex, open_alias_index
from ernie_kg.linking.aliases import AliasTable
from ernie_kg.paths import demo_kg_dir


@pytest.fixture
def kg_dir(tmp_path):
    target = tmp_path / "demo"
    shutil.copytree(demo_kg_dir(), target, ignore=shutil.ignore_patterns(".ernie_kg"))
    return target


def test_index_answers_as_the_table(kg_dir):
    kg = KnowledgeGraph.load(kg_dir)
    table, index = AliasTable.from_kg(kg), open_alias_index(kg.store, kg_dir)
    assert isinstance(index, AliasIndex) and len(index) == len(table)
    assert sorted(index.keys()) == sorted(table.keys())
    for key in table.keys():
        surface = table.surfaces(key)[0]
        assert index.candidates(surface) == table.candidates(surface)
        assert index.counts(key) == table.counts(key)
        for lookup in ("loose_keys", "stem_keys", "acronym_keys"):
            assert getattr(index, lookup)(surface) == getattr(table, lookup)(surface)
    for entity_id in list(kg.entities)[:50]:
        assert index.entity_count(entity_id) == table.entity_count(entity_id)
    assert index.acronym_keys("WTO") == table.acronym_keys("WTO")


def test_store_names_match_the_entities(kg_dir):
    store = open_store(kg_dir)
    assert all(store.names(r) == store.entity(r).names for r in range(store.entity_count))


def test_extra_aliases_merge_and_a_changed_file_rebuilds(kg_dir):
    kg = KnowledgeGraph.load(kg_dir)
    entity = next(iter(kg.entities))
    extra = AliasTable()
    extra.add("Zyxwv Place", entity, 3.0)
    extra.save(kg_dir / "aliases.json")
    linker = EntityLinker.from_kg_dir(kg_dir)
    assert linker("We went to Zyxwv Place.")[0].entity_id == entity
    assert linker.aliases.entity_count(entity) == pytest.approx(
        AliasTable.from_kg(kg).entity_count(entity) + 3.0)
    (kg_dir / "aliases.json").unlink()
    assert EntityLinker.from_kg_dir(kg_dir)("We went to Zyxwv Place.") == []


def test_links_as_the_table_linker(kg_dir):
    kg = KnowledgeGraph.load(kg_dir)
    indexed, tabled = EntityLinker.from_kg_dir(kg_dir), EntityLinker.from_kg(kg)
    texts = ["Paris is the capital of France.", "Berlin and Germany; the WTO met in Geneva."]
    for text in texts:
        assert indexed(text) == tabled(text)


def test_saved_linker_refers_to_the_kg_and_notices_a_change(kg_dir, tmp_path):
    linker = EntityLinker.from_kg_dir(kg_dir)
    saved = linker.save(tmp_path / "linker")
    assert not (saved / "aliases.json").exists()
    reference = json.loads((saved / "alias_index.json").read_text())
    assert reference["kg_dir"] == str(kg_dir.resolve())
    text = "Paris is the capital of France."
    assert EntityLinker.load(saved, KnowledgeGraph.load(kg_dir))(text) == linker(text)
    with open(kg_dir / "train.txt", "a", encoding="utf-8") as triples:
        triples.write("paris\tnew_relation\tfrance\n")
    with pytest.raises(SavedFileError, match=r"alias_index\.json: the KG files in .* changed"):
        EntityLinker.load(saved)
    shutil.rmtree(kg_dir)
    with pytest.raises(SavedFileError, match=r"alias_index\.json: the linker's KG is unreadable"):
        EntityLinker.load(saved)


def test_index_is_the_same_however_the_pass_is_split(kg_dir, tmp_path):
    from ernie_kg.linking.alias_build import build_alias_index

    store = open_store(kg_dir)
    extra = AliasTable().add("Big Apple", store.entity_id(0), 3.0)
    whole, split = tmp_path / "whole", tmp_path / "split"
    build_alias_index(store, whole, extra, workers=1)
    build_alias_index(store, split, extra, workers=2, part_rows=store.entity_count // 3 + 1)
    names = sorted(p.relative_to(whole) for p in whole.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(split) for p in split.rglob("*") if p.is_file())
    assert len(names) > 10
    for name in names:
        assert (whole / name).read_bytes() == (split / name).read_bytes(), name
