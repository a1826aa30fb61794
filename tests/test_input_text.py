"""The input-text rule (``ernie_kg.io``): UTF-8 with errors naming file, line and
column; an opening byte-order mark dropped; unpaired surrogates replaced (offsets kept);
invisible format characters ignored by alias keys at KG build and at link time alike.
Dataset spans are validated (no negative wrap-around); saved tables are checked."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from ernie_kg.cli import app
from ernie_kg.data.pretraining import read_documents
from ernie_kg.data.readers import read_tacred, read_typing_json
from ernie_kg.errors import DataFormatError, KGFormatError, SavedFileError
from ernie_kg.io import iter_jsonl, read_json
from ernie_kg.kg import Entity, EntityEmbeddings, KnowledgeGraph
from ernie_kg.kg.vocab import MappedEntityVocab
from ernie_kg.linking import EntityLinker
from ernie_kg.linking.normalize import _INVISIBLE, normalize
from ernie_kg.paths import demo_kg_dir

BOM = b"\xef\xbb\xbf"


@pytest.fixture
def kg_copy(tmp_path):
    target = tmp_path / "kg"
    shutil.copytree(demo_kg_dir(), target)
    return target


def test_a_byte_order_mark_opening_kg_files_is_dropped(kg_copy):
    plain = KnowledgeGraph.load(demo_kg_dir())
    for name in ("train.txt", "entities.jsonl"):
        (kg_copy / name).write_bytes(BOM + (kg_copy / name).read_bytes())
    marked = KnowledgeGraph.load(kg_copy)
    assert sorted(marked.entities) == sorted(plain.entities)
    assert not any(entity.startswith("\ufeff") for entity in marked.entities)
    assert marked.entity("a_brief_history_of_time").label == "A Brief History of Time"


def test_a_byte_that_is_not_utf8_names_file_line_and_column(kg_copy, tmp_path):
    path = kg_copy / "entities.jsonl"
    lines = path.read_bytes().split(b"\n")
    lines[2] = lines[2].replace(b'"label": "', b'"label": "\xe9', 1)
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(KGFormatError, match=r"entities\.jsonl:3: not UTF-8 text: byte 0xe9 "
                                            r"at column \d+"):
        KnowledgeGraph.load(kg_copy)
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(b"One sentence.\n\nAnother one, caf\xe9.\n")
    with pytest.raises(DataFormatError, match=r"corpus\.txt:3: not UTF-8 text"):
        list(read_documents(corpus))


def test_unpaired_surrogates_become_replacement_characters_with_one_warning(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(BOM + b'{"text": "a\\ud800b"}\n{"text": "\\ud83d\\ude00 \\udc80"}\n')
    with pytest.warns(UserWarning, match=r"in\.jsonl:1: 1 unpaired surrogate") as caught:
        records = [record["text"] for _, record in iter_jsonl(path)]
    assert records == ["a\ufffdb", "\U0001f600 \ufffd"]  # a real pair stays one emoji
    assert len(caught) == 1
    whole = tmp_path / "in.json"
    whole.write_bytes(BOM + b'["x\\udfff"]')
    with pytest.warns(UserWarning, match="unpaired surrogate"):
        assert read_json(whole) == ["x\ufffd"]


def test_link_cli_writes_valid_utf8_for_surrogates_bom_and_invisible_characters(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_bytes(BOM + b'{"text": "Ber\\u200blin is near \\ud800 Potsdam."}\n')
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["link", "--kg", str(demo_kg_dir()), "--input",
                                      str(source), "--output", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_bytes().decode("utf-8"))  # strict UTF-8
    assert record["text"] == "Ber\u200blin is near \ufffd Potsdam."
    found = {m["entity_id"]: m["text"] for m in record["mentions"]}
    assert found.get("berlin") == "Ber\u200blin"  # the offsets cover the original text


def test_invisible_characters_are_ignored_at_build_and_link_time_alike():
    assert normalize("Par\u200bis") == normalize("Paris\u00ad") == normalize("paris")
    assert _INVISIBLE.match("\ufeff") and not _INVISIBLE.match("a")
    kg = KnowledgeGraph.from_triples(
        [("p", "in", "f")], entities=[Entity("p", "Pa\u00adris"), Entity("f", "France")])
    linker = EntityLinker.from_kg(kg)
    assert [(m.text, m.entity_id) for m in linker("Paris is in Fra\u200bnce.")] == [
        ("Paris", "p"), ("Fra\u200bnce", "f")]


@pytest.mark.parametrize("change", [{"subj_start": -1}, {"obj_end": 9},
                                    {"obj_start": 3, "obj_end": 2}])
def test_tacred_token_indices_are_checked_not_wrapped(tmp_path, change):
    item = {"token": ["Paris", "is", "in", "France"], "subj_start": 0, "subj_end": 0,
            "obj_start": 3, "obj_end": 3, "relation": "located_in"}
    path = tmp_path / "tacred.json"
    path.write_text(json.dumps([item]))
    assert read_tacred(path)[0].tail == (12, 18)
    path.write_text(json.dumps([{**item, **change}]))
    with pytest.raises(DataFormatError, match=r"tacred\.json: item 0: .*(out of range|empty|"
                                              r"reversed)"):
        read_tacred(path)


def test_typing_spans_are_checked(tmp_path):
    path = tmp_path / "typing.json"
    path.write_text(json.dumps([{"sent": "Paris is big.", "start": -5, "end": 5,
                                 "labels": ["city"], "ents": [["x"]]}]))
    with pytest.raises(DataFormatError, match=r"item 0: start\.\.end \(-5, 5\) is out of range"):
        read_typing_json(path)


@pytest.fixture
def saved_table(tmp_path):
    table = EntityEmbeddings.random([f"Q{i}" for i in range(50)], dim=8)
    return table, table.save(tmp_path / "emb")


def test_saved_embeddings_are_checked_on_load(saved_table):
    table, directory = saved_table
    assert EntityEmbeddings.load(directory).content_hash() == table.content_hash()
    ids = list(table.entity_ids)
    ids[0], ids[1] = ids[1], ids[0]
    MappedEntityVocab.write(ids, directory)  # two entities trade vectors
    with pytest.raises(SavedFileError, match=r"entity_vectors\.npy: content does not match "
                                             r"the sha256"):
        EntityEmbeddings.load(directory)
    assert len(EntityEmbeddings.load(directory, verify=False)) == 50  # the escape hatch
    MappedEntityVocab.write(ids[:-1], directory)
    with pytest.raises(SavedFileError, match=r"shape \(50, 8\) does not fit the 49 entity"):
        EntityEmbeddings.load(directory)


def test_tables_saved_with_an_id_list_still_load(saved_table):
    table, directory = saved_table  # earlier releases listed the ids in embeddings.json
    meta = json.loads((directory / "embeddings.json").read_text())
    meta["entity_ids"] = list(table.entity_ids)
    (directory / "embeddings.json").write_text(json.dumps(meta))
    (directory / "entity_ids.marisa").unlink()
    assert EntityEmbeddings.load(directory).content_hash() == table.content_hash()
    meta["entity_ids"][0], meta["entity_ids"][1] = meta["entity_ids"][1], meta["entity_ids"][0]
    (directory / "embeddings.json").write_text(json.dumps(meta))
    with pytest.raises(SavedFileError, match="content does not match the sha256"):
        EntityEmbeddings.load(directory)


@pytest.mark.parametrize("mmap", [True, False])
def test_truncated_or_missing_vectors_name_the_file(saved_table, mmap):
    _, directory = saved_table
    vectors = directory / "entity_vectors.npy"
    vectors.write_bytes(vectors.read_bytes()[:-100])
    with pytest.raises(SavedFileError, match=r"entity_vectors\.npy: the entity vectors: "
                                             r"unreadable \(truncated"):
        EntityEmbeddings.load(directory, mmap=mmap)
    vectors.unlink()
    with pytest.raises(SavedFileError, match=r"entity_vectors\.npy: missing"):
        EntityEmbeddings.load(directory, mmap=mmap)


def test_a_half_precision_table_is_hashed_as_loaded(tmp_path):
    table = EntityEmbeddings.random(["a", "b"], dim=4)
    table.vectors = table.vectors.astype(np.float16)
    directory = table.save(tmp_path / "half")
    assert EntityEmbeddings.load(directory).content_hash() == table.content_hash()
