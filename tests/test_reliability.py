"""Knowledge that cannot reach the model is refused or warned about, never silent."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from ernie_kg.errors import ErnieKGError
from ernie_kg.kg import EntityEmbeddings
from ernie_kg.pipelines import build_relation_classifier

LABELS = ["capital_of", "located_in"]


def test_entity_table_covering_none_of_the_kg_is_an_error(tiny_backbone, demo_knowledge):
    kg = demo_knowledge[0]
    elsewhere = EntityEmbeddings.random(["Q1", "Q2", "Q3"], dim=8)
    with pytest.raises(ErnieKGError, match="covers none of the KG's"):
        build_relation_classifier(LABELS, kg, elsewhere, backbone=tiny_backbone)
    baseline = build_relation_classifier(LABELS, kg, elsewhere, knowledge=False,
                                         backbone=tiny_backbone)  # no knowledge: fine
    assert baseline.kg_coverage is None


def test_entity_table_covering_little_of_the_kg_warns(tiny_backbone, demo_knowledge):
    kg = demo_knowledge[0]
    ids = list(kg.entities)
    partial = EntityEmbeddings.random(ids[: len(ids) // 4], dim=8)
    with pytest.warns(UserWarning, match=r"covers 2\d\.\d% of the KG's entities"):
        classifier = build_relation_classifier(LABELS, kg, partial, backbone=tiny_backbone)
    assert classifier.kg_coverage == pytest.approx(len(ids) // 4 / len(ids))
    full = build_relation_classifier(LABELS, kg, demo_knowledge[1], backbone=tiny_backbone)
    assert full.kg_coverage == 1.0


def test_a_run_directory_is_resumed_moved_aside_or_refused(tmp_path):
    from ernie_kg.io import claim_run_dir

    run = tmp_path / "run"
    assert claim_run_dir(run) is None  # absent
    run.mkdir()
    assert claim_run_dir(run) is None  # empty
    (run / "log.jsonl").write_text('{"step": 1}\n')
    with pytest.raises(ErnieKGError, match="already holds a run.*--overwrite"):
        claim_run_dir(run)
    assert claim_run_dir(run, resume=True) is None and (run / "log.jsonl").exists()
    assert claim_run_dir(run, overwrite=True) == tmp_path / "run.old-1"
    assert not run.exists() and (tmp_path / "run.old-1" / "log.jsonl").exists()
    run.mkdir()
    (run / "x").write_text("second")
    assert claim_run_dir(run, overwrite=True) == tmp_path / "run.old-2"


def test_cli_refuses_to_replace_an_earlier_run(tmp_path):
    from typer.testing import CliRunner

    from ernie_kg.cli import app
    from ernie_kg.paths import demo_kg_dir

    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    for command in (["kg", "embed", "--triples-dir", str(demo_kg_dir()), "--out", str(out)],
                    ["finetune", "--train", str(tmp_path / "t.json"), "--output-dir", str(out)],
                    ["pretrain", "run", "--data", str(tmp_path), "--kg", str(demo_kg_dir()),
                     "--output", str(out), "--no-resume"],
                    ["pretrain", "prepare", "--corpus", str(tmp_path / "c.txt"), "--kg",
                     str(demo_kg_dir()), "--out", str(out)],
                    ["kg", "import-embeddings", "--format", "openke", "--source",
                     str(tmp_path), "--kg", str(demo_kg_dir()), "--out", str(out)]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code != 0
        assert "already holds a run" in str(result.exception), command
        assert (out / "metrics.json").read_text() == "{}"  # untouched


def test_a_fresh_finetune_through_the_api_never_mixes_with_an_earlier_run(tmp_path):
    from ernie_kg.training.checkpoints import refuse_earlier_finetune

    refuse_earlier_finetune(tmp_path, tmp_path / "log.jsonl")  # empty: fine
    (tmp_path / "log.jsonl").write_text('{"step": 1}\n')
    with pytest.raises(ErnieKGError, match=r"already holds a fine-tuning run \(log\.jsonl\)"):
        refuse_earlier_finetune(tmp_path, tmp_path / "log.jsonl")
    (tmp_path / "checkpoint-4").mkdir()
    with pytest.raises(ErnieKGError, match="checkpoint-4"):
        refuse_earlier_finetune(tmp_path, None)


def test_cutting_a_log_back_keeps_records_that_are_not_training_steps(tmp_path):
    from ernie_kg.training.checkpoints import truncate_log

    log = tmp_path / "log.jsonl"
    log.write_text('{"event": "start"}\n{"step": 10}\n{"step": 20}\n{"event": "start"}\n'
                   '{"step": 3')  # the last line torn by a kill
    truncate_log(log, 10)
    assert [json.loads(line) for line in log.read_text().splitlines()] == [
        {"event": "start"}, {"step": 10}, {"event": "start"}]


def test_a_hub_name_without_a_hub_fails_fast_and_says_what_to_do(monkeypatch):
    import time

    from ernie_kg.hub import check_backbone
    from ernie_kg.paths import default_backbone

    check_backbone(default_backbone())  # the packaged backbone: local, no socket
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")  # never resolves
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    started = time.perf_counter()
    with pytest.raises(ErnieKGError, match=r"hub \(https://hub.invalid\) (could not be "
                                           r"reached|did not answer).*HF_HUB_OFFLINE=1"):
        check_backbone("no-such-org/no-such-model", timeout=0.5)
    assert time.perf_counter() - started < 5
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ErnieKGError, match="HF_HUB_OFFLINE is set"):
        check_backbone("no-such-org/no-such-model")
    started = time.perf_counter()
    monkeypatch.delenv("HF_HUB_OFFLINE")
    for path in ("./models/my-bert", "/no/such/bert", "a/b/c"):  # paths: no network tried
        with pytest.raises(ErnieKGError, match="no such model directory"):
            check_backbone(path, timeout=30)
    assert time.perf_counter() - started < 5  # far below the 30 s a network wait takes


def test_a_hub_that_accepts_and_never_answers_or_lacks_the_model(monkeypatch):
    import http.server
    import socket
    import threading
    import time

    from ernie_kg.hub import check_backbone

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    stalled = socket.socket()
    stalled.bind(("127.0.0.1", 0))
    stalled.listen()  # connections are accepted by the kernel, never answered
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{stalled.getsockname()[1]}")
    started = time.perf_counter()
    with pytest.raises(ErnieKGError, match="did not answer within 0.5 s"):
        check_backbone("some-org/some-model", timeout=0.5)
    assert time.perf_counter() - started < 5
    stalled.close()
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()  # 501 for HEAD
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    with pytest.raises(ErnieKGError, match=r"has no public model 'some-org/some-model' \(HTTP 501"):
        check_backbone("some-org/some-model", timeout=5)
    server.shutdown()


def test_outputs_that_cannot_be_written_fail_before_the_work(tmp_path):
    from typer.testing import CliRunner

    from ernie_kg.cli import app
    from ernie_kg.paths import demo_kg_dir

    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "Paris is in France."}\n')
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    for output, message in ((tmp_path, "is a directory"),
                            (blocker / "out.jsonl", "cannot create its folder")):
        result = CliRunner().invoke(app, ["link", "--kg", str(demo_kg_dir()), "--input",
                                          str(source), "--output", str(output)])
        assert isinstance(result.exception, ErnieKGError), result.output
        assert message in str(result.exception)
    result = CliRunner().invoke(app, ["data", "fetch", "fewrel", "--dest", str(blocker)])
    assert "cannot make the destination directory" in str(result.exception)
    assert blocker.read_text() == "not a directory"


def test_an_empty_training_file_names_the_file(tmp_path):
    from typer.testing import CliRunner

    from ernie_kg.cli import app

    train = tmp_path / "train.json"
    train.write_text("{}")
    result = CliRunner().invoke(app, ["finetune", "--train", str(train), "--output-dir",
                                      str(tmp_path / "run")])
    assert isinstance(result.exception, ErnieKGError)
    assert str(result.exception) == f"{train}: no examples (read as --format fewrel)"


@pytest.mark.parametrize(("damage", "name", "message"), [
    ("delete", "model.safetensors", "missing: the model's weights"),
    ("truncate", "model.safetensors", "unreadable model weights"),
    ("delete", "config.json", "missing: the model's configuration"),
    ("truncate", "config.json", "invalid JSON"),
    ("delete", "tokenizer.json", "missing: the tokenizer"),
    # a table built in memory is saved beside the model, in entity_table/
    ("delete", "entity_table", "missing: the entity table this model"),
    ("delete", "entity_table/entity_vectors.npy", "missing: the entity vectors"),
    ("truncate", "entity_table/entity_vectors.npy", "unreadable"),
    ("swap", "entity_table/entity_vectors.npy", "does not match the sha256"),
])
def test_a_damaged_saved_model_names_the_file(tiny_backbone, demo_knowledge, tmp_path,
                                              damage, name, message):
    import re

    from ernie_kg.errors import SavedFileError
    from ernie_kg.pipelines import RelationClassifier

    kg, embeddings, aliases = demo_knowledge
    saved = build_relation_classifier(LABELS, kg, embeddings, aliases,
                                      backbone=tiny_backbone).save(tmp_path / "model")
    target = saved / name
    if damage == "delete":
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    elif damage == "swap":  # two entities trade vectors: an altered table
        vectors = np.load(target)
        np.save(target, vectors[[1, 0, *range(2, len(vectors))]])
    else:
        target.write_bytes(target.read_bytes()[:40])
    with pytest.raises(SavedFileError, match=re.escape(str(target)) + ".*" + message):
        RelationClassifier.load(saved)
