"""Importing entity vectors trained elsewhere: small files in each writer's real on-disk
layout land on the right KG entities; missing entities follow the policy; bad files
name the file, the line or the entity."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from ernie_kg.cli import app
from ernie_kg.errors import ErnieKGError, SavedFileError
from ernie_kg.kg import EntityEmbeddings
from ernie_kg.kg.importing import import_embeddings

#: name in the source file -> vector; "Q999" and "the" are not KG entities.
VECTORS = {"paris": [1.0, 0.0, 0.5], "france": [0.0, 2.0, 0.0], "Q999": [9.0, 9.0, 9.0],
           "germany": [0.25, -1.0, 3.0]}


def write_openke(directory, vectors=VECTORS):
    directory.mkdir()
    names = list(vectors)
    order = [2, 0, 3, 1] if len(names) == 4 else list(range(len(names)))[::-1]  # any order
    lines = [f"{len(names)}"] + [f"{names[i]}\t{row}" for row, i in enumerate(order)]
    (directory / "entity2id.txt").write_text("\n".join(lines) + "\n")
    (directory / "entity2vec.vec").write_text("".join(
        "".join(f"{v:.6f}\t" for v in vectors[names[i]]) + "\n" for i in order))
    return directory


def write_pbg(directory):
    h5py = pytest.importorskip("h5py")
    directory.mkdir()
    (directory / "checkpoint_version.txt").write_text("5\n")
    (directory / "config.json").write_text("{}")
    names = list(VECTORS)
    for version, scale in ((3, 0.0), (5, 1.0)):  # the newest version is read
        with h5py.File(directory / f"embeddings_all_0.v{version}.h5", "w") as handle:
            handle["embeddings"] = np.array([VECTORS[n] for n in names], np.float32) * scale
    (directory / "entity_names_all_0.json").write_text(json.dumps(names))
    (directory / "entity_count_all_0.txt").write_text(f"{len(names)}\n")
    return directory


def write_dglke(directory):
    directory.mkdir()
    names = list(VECTORS)
    np.save(directory / "FB15k_TransE_l2_entity.npy",
            np.array([VECTORS[n] for n in names], np.float32))
    np.save(directory / "FB15k_TransE_l2_relation.npy", np.zeros((2, 3), np.float32))
    (directory / "entities.tsv").write_text("".join(f"{i}\t{n}\n" for i, n in enumerate(names)))
    return directory


def write_word2vec(path):
    rows = [("the", [0.5, 0.5, 0.5])] + [(f"ENTITY/{n}", v) for n, v in VECTORS.items()]
    path.write_text(f"{len(rows)} 3\n" + "".join(
        f"{name} {' '.join(str(v) for v in vector)}\n" for name, vector in rows))
    return path


WRITERS = {"openke": write_openke, "pbg": write_pbg, "dglke": write_dglke,
           "word2vec": write_word2vec}


@pytest.mark.parametrize("format", sorted(WRITERS))
def test_vectors_land_on_their_kg_entities(tmp_path, tiny_kg, format):
    source = WRITERS[format](tmp_path / f"source-{format}")
    table, report = import_embeddings(source, tiny_kg, tmp_path / "out", format)
    for name in ("paris", "france", "germany"):
        np.testing.assert_allclose(table.vector(name), VECTORS[name], rtol=1e-6)
    np.testing.assert_array_equal(table.vector("tokyo"), np.zeros(3))  # missing: zero
    assert table.entity_ids == list(tiny_kg.entities)  # the KG's order, every entity
    assert (report.covered, report.not_in_kg, report.kg_entities) == (
        3, 1 + (format == "word2vec"), len(tiny_kg.entities))
    reloaded = EntityEmbeddings.load(tmp_path / "out")  # sha256 checked
    assert reloaded.content_hash() == table.content_hash()
    assert json.loads((tmp_path / "out" / "import_report.json").read_text())["covered"] == 3


@pytest.mark.parametrize("format", sorted(WRITERS))
def test_batches_smaller_than_the_file_read_the_same(tmp_path, tiny_kg, format, monkeypatch):
    from ernie_kg.kg import vector_formats

    source = WRITERS[format](tmp_path / "source")
    whole, _ = import_embeddings(source, tiny_kg, tmp_path / "whole", format)
    monkeypatch.setattr(vector_formats, "BATCH", 3)  # 4 or 5 rows: two batches
    batched, report = import_embeddings(source, tiny_kg, tmp_path / "batched", format)
    assert batched.content_hash() == whole.content_hash() and report.covered == 3


def test_pykeen_pipeline_result(tmp_path, tiny_kg):
    from pykeen.pipeline import pipeline
    from pykeen.triples import TriplesFactory

    factory = TriplesFactory.from_labeled_triples(np.array(tiny_kg.train, dtype=str))
    result = pipeline(training=factory, testing=factory, model="TransE",
                      model_kwargs={"embedding_dim": 4}, training_kwargs={"num_epochs": 1,
                      "use_tqdm": False}, evaluation_kwargs={"use_tqdm": False},
                      random_seed=0)
    result.save_to_directory(tmp_path / "pykeen")
    table, report = import_embeddings(tmp_path / "pykeen", tiny_kg, tmp_path / "out", "pykeen")
    trained = result.model.entity_representations[0](indices=None).detach().numpy()
    for name, row in factory.entity_to_id.items():
        np.testing.assert_allclose(table.vector(name), trained[row], rtol=1e-6)
    assert report.covered == len(factory.entity_to_id)


def test_missing_policies(tmp_path, tiny_kg):
    source = write_openke(tmp_path / "src")
    table, _ = import_embeddings(source, tiny_kg, tmp_path / "mean", "openke", missing="mean")
    expected_mean = np.mean([VECTORS[n] for n in ("paris", "france", "germany")], axis=0)
    np.testing.assert_allclose(table.vector("tokyo"), expected_mean, rtol=1e-6)
    with pytest.raises(ErnieKGError, match=r"KG entities have no vector in the source"):
        import_embeddings(source, tiny_kg, tmp_path / "error", "openke", missing="error")
    assert not (tmp_path / "error").exists()  # nothing half-written is left


def test_an_earlier_output_is_refused_or_moved_aside(tmp_path, tiny_kg):
    source = write_openke(tmp_path / "src")
    import_embeddings(source, tiny_kg, tmp_path / "out", "openke")
    with pytest.raises(ErnieKGError, match="already holds a run"):
        import_embeddings(source, tiny_kg, tmp_path / "out", "openke")
    import_embeddings(source, tiny_kg, tmp_path / "out", "openke", overwrite=True)
    assert (tmp_path / "out.old-1" / "embeddings.json").is_file()


def test_bad_vector_files_name_the_line_or_the_entity(tmp_path, tiny_kg):
    source = write_openke(tmp_path / "src")
    vec = source / "entity2vec.vec"
    lines = vec.read_text().splitlines()
    vec.write_text("\n".join(lines[:2] + ["0.5\t0.5\t"] + lines[3:]) + "\n")
    with pytest.raises(SavedFileError, match=r"entity2vec\.vec:3: 2 values where the file's "
                                             r"rows have 3: the dimension changes"):
        import_embeddings(source, tiny_kg, tmp_path / "out", "openke")
    vec.write_text("\n".join(lines[:1] + ["nan\t0\t0\t"] + lines[2:]) + "\n")  # paris
    with pytest.raises(SavedFileError, match=r"entity2vec\.vec:2: the vector of entity "
                                             r"'paris' holds NaN"):
        import_embeddings(source, tiny_kg, tmp_path / "out", "openke")
    vec.write_text("\n".join(lines[:1] + ["0.1\tabc\t0\t"] + lines[2:]) + "\n")
    with pytest.raises(SavedFileError, match=r"entity2vec\.vec:2: a value is not a number"):
        import_embeddings(source, tiny_kg, tmp_path / "out", "openke")


def test_truncated_binary_files_are_clear_errors(tmp_path, tiny_kg):
    dglke = write_dglke(tmp_path / "dglke")
    npy = dglke / "FB15k_TransE_l2_entity.npy"
    npy.write_bytes(npy.read_bytes()[:-8])
    with pytest.raises(SavedFileError, match=r"_entity\.npy: unreadable \(truncated"):
        import_embeddings(dglke, tiny_kg, tmp_path / "out", "dglke")
    pbg = write_pbg(tmp_path / "pbg")
    h5 = pbg / "embeddings_all_0.v5.h5"
    h5.write_bytes(h5.read_bytes()[:1000])
    with pytest.raises(SavedFileError, match=r"v5\.h5: unreadable HDF5 embeddings"):
        import_embeddings(pbg, tiny_kg, tmp_path / "out", "pbg")


def test_names_that_are_no_kg_ids_are_an_error(tmp_path, tiny_kg):
    source = write_openke(tmp_path / "src", {"Q1": [1.0, 2.0], "Q2": [3.0, 4.0]})
    with pytest.raises(ErnieKGError, match=r"none of the 2 source vectors belongs to a KG"):
        import_embeddings(source, tiny_kg, tmp_path / "out", "openke")


def test_cli_import(tmp_path, tiny_kg):
    tiny_kg.save(tmp_path / "kg")
    source = write_openke(tmp_path / "src")
    result = CliRunner().invoke(app, ["kg", "import-embeddings", "--format", "openke",
                                      "--source", str(source), "--kg", str(tmp_path / "kg"),
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "3 of 8 KG entities (37.5%) got a 3-dim vector; 1 source rows are not in " \
           "the KG" in " ".join(result.output.split())
    bad = CliRunner().invoke(app, ["kg", "import-embeddings", "--format", "glove", "--source",
                                   str(source), "--kg", str(tmp_path / "kg"), "--out",
                                   str(tmp_path / "o2")])
    assert bad.exit_code == 2 and "must be one of" in bad.output
