"""Fine-tuning survives ``kill -9``: checkpoints appear only complete, a resume finishes and
logs each step once, and the console shows short lines, never Trainer's raw log dicts.

The CLI runs in real subprocesses on a tiny random BERT (the MiniLM tokenizer) and a few
demo-corpus examples: 12 labels x 8 examples, batch 8, so 12 steps an epoch, a loss line
every 10 steps (the CLI's default) and an evaluation and a checkpoint each epoch.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ernie_kg.cli import app
from ernie_kg.data.features import LabelMap, relation_features
from ernie_kg.data.fewrel import read_fewrel
from ernie_kg.kg import EntityEmbeddings, KnowledgeGraph
from ernie_kg.paths import demo_kg_dir, kg_data_dir
from ernie_kg.pipelines.relation import build_relation_classifier
from ernie_kg.training.checkpoints import resumable_finetune_checkpoint, truncate_finetune_log
from ernie_kg.training.finetuning import finetune

ROOT = Path(__file__).resolve().parent.parent
CORPUS = kg_data_dir() / "demo_corpus"
EPOCHS, STEPS_PER_EPOCH = 3, 12
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
       "HF_HUB_OFFLINE": "1"}
#: Runs the CLI, pausing inside the second checkpoint save (model and optimizer written,
#: trainer_state.json not yet) and saying where in the file named by $PAUSED_AT.
PAUSING_CLI = """
import os, sys, time
from transformers import Trainer
from ernie_kg.cli import app
saves, save_rng_state = [], Trainer._save_rng_state
def pause_in_second_save(self, output_dir):
    save_rng_state(self, output_dir)
    saves.append(output_dir)
    if len(saves) == 2:
        with open(os.environ["PAUSED_AT"] + ".part", "w") as out:
            out.write(output_dir)
        os.replace(os.environ["PAUSED_AT"] + ".part", os.environ["PAUSED_AT"])
        time.sleep(600)
Trainer._save_rng_state = pause_in_second_save
app(sys.argv[1:], prog_name="ernie-kg")
"""
RAW_DICT = re.compile(r"\{'\w+': |\{\"\w+\": ")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_backbone) -> dict[str, Path | str]:
    """Small train/dev files, random entity vectors for the demo KG, the tiny backbone."""
    root = tmp_path_factory.mktemp("finetune-resume")
    for split, per_label in (("train", 8), ("dev", 3)):
        data = json.loads((CORPUS / f"{split}.json").read_text())
        (root / f"{split}.json").write_text(
            json.dumps({label: items[:per_label] for label, items in data.items()}))
    kg = KnowledgeGraph.load(demo_kg_dir())
    EntityEmbeddings.random(sorted(kg.entities), dim=8).save(root / "embeddings")
    return {"root": root, "backbone": tiny_backbone}


def _arguments(files, output: Path, *extra: str) -> list[str]:
    return ["finetune", "--train", str(files["root"] / "train.json"),
            "--dev", str(files["root"] / "dev.json"), "--output-dir", str(output),
            "--embeddings", str(files["root"] / "embeddings"), "--backbone",
            str(files["backbone"]), "--epochs", str(EPOCHS), "--batch-size", "8",
            "--kg-dim", "8", "--gate-lr", "knowledge", *extra]  # one run (test_gate_rate)


def _records(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "log.jsonl").read_text().splitlines()]


def _kinds(records: list[dict]) -> list[tuple[str, int]]:
    """(kind, step) per log record: train loss, eval or the end-of-training summary."""
    return [("summary" if "train_runtime" in r else "eval" if "eval_loss" in r else "loss",
             r["step"]) for r in records]


EXPECTED = [("loss", 10), ("eval", 12), ("loss", 20), ("eval", 24), ("loss", 30),
            ("eval", 36), ("summary", 36)]


@pytest.fixture(scope="module")
def full_run(files) -> tuple[Path, str]:
    """An uninterrupted CLI run in a subprocess: its directory and console output."""
    output = files["root"] / "full"
    finished = subprocess.run([sys.executable, "-m", "ernie_kg", *_arguments(files, output)],
                              capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=300)
    console = finished.stdout + finished.stderr
    assert finished.returncode == 0, console[-3000:]
    return output, console


def test_console_shows_lines_not_raw_dicts(full_run):
    output, console = full_run
    lines = console.replace("\r", "\n").splitlines()
    assert not [line for line in lines if RAW_DICT.search(line)], console[-3000:]
    for epoch in range(1, EPOCHS + 1):
        assert any(re.search(rf"epoch {epoch}: loss [\d.]+ · dev loss [\d.]+ · dev macro_f1",
                             line) for line in lines), console[-3000:]
    assert any(f"trained {EPOCHS * STEPS_PER_EPOCH} steps in" in line for line in lines)
    assert console.count("Writing model shards: 100%") <= 1  # none per checkpoint
    assert _kinds(_records(output)) == EXPECTED  # the JSONL log keeps every record

    # rotation (save_total_limit=1) left the best checkpoint, named by its final path
    checkpoints = sorted(p.name for p in (output / "checkpoints").iterdir())
    best = json.loads((output / "metrics.json").read_text())["best_checkpoint"]
    assert checkpoints == [Path(best).name] and Path(best).parent == output / "checkpoints"
    state = json.loads((Path(best) / "trainer_state.json").read_text())
    assert state["best_model_checkpoint"] == best


def test_kill_during_checkpoint_then_resume_logs_each_step_once(files, full_run):
    output = files["root"] / "killed"
    paused_at, console = files["root"] / "paused-at", files["root"] / "killed.txt"
    with console.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", PAUSING_CLI, *_arguments(files, output)], stdout=out,
            stderr=subprocess.STDOUT, env={**ENV, "PAUSED_AT": str(paused_at)}, cwd=ROOT)
    try:
        deadline = time.monotonic() + 240
        while not paused_at.exists() and process.poll() is None:
            assert time.monotonic() < deadline, "no second checkpoint save within 240 s"
            time.sleep(0.05)
        assert paused_at.exists(), console.read_text()[-3000:]
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL

    # killed mid-save: the half checkpoint lies in its staging directory, not in place
    checkpoints = output / "checkpoints"
    staged = Path(paused_at.read_text())
    assert staged == checkpoints / ".tmp-checkpoint-24" / "checkpoint-24"
    assert (staged / "model.safetensors").is_file()
    assert not (staged / "trainer_state.json").exists()
    assert not (checkpoints / "checkpoint-24").exists()
    assert resumable_finetune_checkpoint(checkpoints) == checkpoints / "checkpoint-12"
    assert not (checkpoints / ".tmp-checkpoint-24").exists()  # removed on the way
    (staged.parent).mkdir()  # put a stale staging directory back for the resume
    with (output / "log.jsonl").open("a") as log:  # and a line torn by the kill
        log.write('{"step": 25, "loss": 2.')
    logged = _kinds([json.loads(line) for line in
                     (output / "log.jsonl").read_text().splitlines()[:-1]])
    assert logged == EXPECTED[:4]  # lines past the checkpoint (step 12): resume drops them

    result = CliRunner().invoke(app, _arguments(files, output, "--resume"))
    assert result.exit_code == 0, result.output + repr(result.exception)
    records = _records(output)
    assert _kinds(records) == EXPECTED
    assert not list(checkpoints.glob(".tmp-*"))
    # the resumed run continues the same run (but Trainer's first loss after a resume,
    # at step 20, averages steps 13-20 where the full run averages steps 11-20)
    for mine, theirs in zip(records, _records(full_run[0])):
        for key in ("loss", "eval_loss", "eval_macro_f1"):
            if key in theirs and (key, mine["step"]) != ("loss", 20):
                assert mine[key] == pytest.approx(theirs[key], rel=1e-4, abs=1e-6), key


@pytest.fixture(scope="module")
def features(files, demo_knowledge):
    """Gold-entity training features and a factory of fresh tiny classifiers."""
    kg, embeddings, aliases = demo_knowledge
    train = read_fewrel(files["root"] / "train.json")
    labels = LabelMap.from_examples(train)

    def classifier():
        return build_relation_classifier(labels, kg, embeddings, aliases,
                                         backbone=files["backbone"])

    data = relation_features(train, classifier().processor, labels, "gold")
    return data, lambda: classifier().model


FAST = {"batch_size": 8, "logging_steps": 5, "progress": False, "seed": 0,
        "save_total_limit": 3}


def test_staging_dir_is_never_a_checkpoint_and_goes_on_resume(features, tmp_path, capsys):
    data, model = features
    first = finetune(model(), data, output_dir=tmp_path, epochs=1, **FAST)
    assert first.trainer.state.global_step == STEPS_PER_EPOCH
    printed = capsys.readouterr().out
    assert f"trained {STEPS_PER_EPOCH} steps in" in printed and not RAW_DICT.search(printed)

    # staging directories a killed run left: one even holds a whole checkpoint
    complete = tmp_path / "checkpoint-12"
    whole = tmp_path / ".tmp-checkpoint-24" / "checkpoint-24"
    shutil.copytree(complete, whole)
    (tmp_path / ".tmp-checkpoint-99").mkdir()
    assert resumable_finetune_checkpoint(tmp_path) == complete
    assert not list(tmp_path.glob(".tmp-*"))

    shutil.copytree(complete, whole)
    (tmp_path / ".tmp-checkpoint-99").mkdir()
    log = tmp_path / "log.jsonl"
    second = finetune(model(), data, output_dir=tmp_path, epochs=2, log_path=log,
                      resume_from_checkpoint=True, **FAST)
    assert second.trainer.state.global_step == 2 * STEPS_PER_EPOCH
    assert not list(tmp_path.glob(".tmp-*"))
    state = json.loads((tmp_path / "checkpoint-24" / "trainer_state.json").read_text())
    assert state["global_step"] == 24

    # an explicit checkpoint path: the save itself clears what a killed run left
    (tmp_path / ".tmp-checkpoint-24").mkdir()
    finetune(model(), data, output_dir=tmp_path, epochs=2, log_path=log,
             resume_from_checkpoint=str(complete), **FAST)
    assert not list(tmp_path.glob(".tmp-*"))
    assert (tmp_path / "checkpoint-24" / "trainer_state.json").is_file()
    steps = [r["step"] for r in _records(tmp_path) if "loss" in r]
    assert steps == [15, 20]  # the second resume dropped the first one's lines


def test_truncate_finetune_log_drops_the_summary_after_the_checkpoint(tmp_path):
    checkpoint = tmp_path / "checkpoint-12"
    checkpoint.mkdir()
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 12}))
    log = tmp_path / "log.jsonl"
    records = [{"step": 10, "loss": 1.0}, {"step": 12, "eval_loss": 1.0},
               {"step": 12, "train_runtime": 3.0}, {"step": 20, "loss": 0.5}]
    log.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"step": 2')
    truncate_finetune_log(log, checkpoint)
    assert [json.loads(line) for line in log.read_text().splitlines()] == records[:2]
