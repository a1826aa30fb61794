"""The knowledge gates' rate chosen on dev: each candidate trained from one start, the best
on dev kept, a resume that finishes what a kill left, and the settings' checks."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from transformers import TrainerCallback
from typer.testing import CliRunner

from ernie_kg.cli import app
from ernie_kg.data.examples import RelationExample
from ernie_kg.data.features import LabelMap
from ernie_kg.data.fewrel import read_fewrel
from ernie_kg.errors import ErnieKGError, SettingError
from ernie_kg.paths import kg_data_dir
from ernie_kg.pipelines.relation import build_relation_classifier, train_relation_classifier
from ernie_kg.training.gate_rate import (
    CHOOSE_ON_DEV,
    DEFAULT_GATE_RATES,
    SWITCH_CONFIDENCE,
    finetune_started,
    gate_rate_candidates,
    parse_gate_rate,
    rate_to_keep,
)

CORPUS = kg_data_dir() / "demo_corpus"
FAST = {"batch_size": 8, "eval_batch_size": 32, "logging_steps": 1, "progress": False,
        "learning_rate": 1e-3, "epochs": 1, "seed": 0}
RATES = [5e-4, 5e-2]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def corpus() -> dict[str, list[RelationExample]]:
    """Six training and three dev examples of each demo relation."""
    picked = {}
    for split, per_label in (("train", 6), ("dev", 3)):
        counts: dict[str, int] = {}
        picked[split] = [e for e in read_fewrel(CORPUS / f"{split}.json")
                         if counts.setdefault(e.label, 0) < per_label
                         and not counts.update({e.label: counts[e.label] + 1})]
    return picked


def _classifier(tiny_backbone, corpus, demo_knowledge, knowledge=True):
    kg, embeddings, aliases = demo_knowledge
    return build_relation_classifier(LabelMap.from_examples(corpus["train"]), kg, embeddings,
                                     aliases, knowledge=knowledge, backbone=tiny_backbone,
                                     seed=0)


def _weights(classifier) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in classifier.model.named_parameters()}


def _steps(path) -> list[int]:
    return [r["step"] for r in map(json.loads, path.read_text().splitlines())
            if "loss" in r and "step" in r]


def test_the_rate_kept_is_the_best_on_dev_and_its_run_is_the_single_run(
        tiny_backbone, corpus, demo_knowledge, tmp_path):
    chooser = _classifier(tiny_backbone, corpus, demo_knowledge)
    metrics = train_relation_classifier(chooser, corpus["train"], corpus["dev"],
                                        tmp_path / "chosen", log_path=tmp_path / "log.jsonl",
                                        gate_learning_rate=RATES, **FAST)
    scores = metrics["gate_learning_rate_dev"]
    assert set(scores) == {f"{r:g}" for r in RATES}
    first, second = (f"{r:g}" for r in RATES)
    confidence = metrics["gate_learning_rate_confidence"]  # the second against the first
    assert set(confidence) == {second} and 0.0 <= confidence[second] <= 1.0
    kept = metrics["gate_learning_rate"]
    switched = confidence[second] >= SWITCH_CONFIDENCE and scores[second] > scores[first]
    assert kept == (RATES[1] if switched else RATES[0])  # the first unless dev is sure

    # each candidate started where a single run starts: the kept weights are those of a
    # single run at the kept rate, and so is the other candidate's dev score
    for rate in RATES:
        single = _classifier(tiny_backbone, corpus, demo_knowledge)
        alone = train_relation_classifier(single, corpus["train"], corpus["dev"],
                                          tmp_path / f"single-{rate:g}",
                                          gate_learning_rate=rate, **FAST)
        assert "gate_learning_rate_dev" not in alone
        assert alone["macro_f1"] == pytest.approx(scores[f"{rate:g}"])
        if rate == kept:
            expected = _weights(single)
            for name, value in _weights(chooser).items():
                assert torch.equal(value, expected[name]), name
    # the log holds the kept candidate's records once; each candidate kept its own log
    copied = _steps(tmp_path / "log.jsonl")
    assert copied and copied == _steps(tmp_path / f"log.gate-lr-{kept:g}.jsonl")
    assert all((tmp_path / f"log.gate-lr-{r:g}.jsonl").is_file() for r in RATES)


class _BestAtTheFirstEpoch(TrainerCallback):
    """A dev score that peaks before the last epoch, so the best checkpoint is not the
    newest (Trainer keeps only the best at a limit of 1: a resume would train again)."""

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        metrics["eval_macro_f1"] = 1.0 / state.epoch


def test_a_resume_trains_only_the_candidate_a_kill_left_undone(
        tiny_backbone, corpus, demo_knowledge, tmp_path):
    run = dict(gate_learning_rate=RATES, log_path=tmp_path / "log.jsonl",
               callbacks=[_BestAtTheFirstEpoch()], **{**FAST, "epochs": 2})
    first = train_relation_classifier(_classifier(tiny_backbone, corpus, demo_knowledge),
                                      corpus["train"], corpus["dev"], tmp_path, **run)
    checkpoints = tmp_path / "checkpoints"
    assert finetune_started(checkpoints)
    with pytest.raises(ErnieKGError, match="already holds a fine-tuning run"):  # not resumed
        train_relation_classifier(_classifier(tiny_backbone, corpus, demo_knowledge),
                                  corpus["train"], corpus["dev"], tmp_path, **run)
    done = tmp_path / f"log.gate-lr-{RATES[0]:g}.jsonl"
    done_steps = _steps(done)
    for rate in RATES:  # best (epoch 1) and newest kept: a resume starts at the last step
        kept = {p.name for p in (checkpoints / f"gate-lr-{rate:g}").iterdir()}
        assert kept == {f"checkpoint-{done_steps[-1] // 2}", f"checkpoint-{done_steps[-1]}"}
    # killed before the second candidate's first checkpoint: its files are not there yet
    shutil.rmtree(checkpoints / f"gate-lr-{RATES[1]:g}")
    log = tmp_path / f"log.gate-lr-{RATES[1]:g}.jsonl"
    log.write_text(log.read_text().splitlines()[0] + "\n")
    again = train_relation_classifier(_classifier(tiny_backbone, corpus, demo_knowledge),
                                      corpus["train"], corpus["dev"], tmp_path,
                                      resume_from_checkpoint=True, **run)
    assert again["gate_learning_rate_dev"] == pytest.approx(first["gate_learning_rate_dev"])
    assert again["gate_learning_rate"] == first["gate_learning_rate"]
    steps = _steps(tmp_path / "log.jsonl")
    assert len(steps) == len(set(steps))  # copied once, not appended twice
    assert _steps(log) == sorted(set(_steps(log)))  # the restarted candidate logged afresh
    assert _steps(done) == done_steps  # the finished candidate trained no step again


def test_candidates_only_where_there_is_something_to_choose(tiny_backbone, corpus,
                                                           demo_knowledge, tmp_path):
    model = _classifier(tiny_backbone, corpus, demo_knowledge).model
    assert gate_rate_candidates(CHOOSE_ON_DEV, model) == DEFAULT_GATE_RATES
    assert gate_rate_candidates(CHOOSE_ON_DEV, model, can_choose=False) == (None,)
    assert gate_rate_candidates([1e-2, 1e-2, 1e-3], model) == (1e-2, 1e-3)
    assert gate_rate_candidates(3e-3, model) == (3e-3,)
    # the baseline's gates never see an entity: one run, whatever the setting says
    baseline = _classifier(tiny_backbone, corpus, demo_knowledge, knowledge=False)
    metrics = train_relation_classifier(baseline, corpus["train"], corpus["dev"], tmp_path,
                                        gate_learning_rate=CHOOSE_ON_DEV, **FAST)
    assert "gate_learning_rate_dev" not in metrics
    assert list((tmp_path / "checkpoints").glob("checkpoint-*"))
    assert not list((tmp_path / "checkpoints").glob("gate-lr-*"))
    for bad in ("fast", [0.0], [-1e-3], [], [float("inf")], True):
        with pytest.raises(SettingError, match="gate"):
            gate_rate_candidates(bad, model)


def test_a_later_rate_replaces_the_first_only_when_dev_is_sure():
    scores = {"0.0005": 0.780, "0.01": 0.788, "0.05": 0.800}
    assert rate_to_keep(scores, {"0.01": 0.80, "0.05": 0.90}) == "0.0005"  # noise
    assert rate_to_keep(scores, {"0.01": 0.97, "0.05": 0.90}) == "0.01"
    assert rate_to_keep(scores, {"0.01": 0.97, "0.05": 0.99}) == "0.05"  # best of the sure
    assert rate_to_keep(scores, {"0.01": SWITCH_CONFIDENCE, "0.05": 0.5}) == "0.01"
    assert rate_to_keep({"a": 0.8, "b": 0.8}, {"b": 1.0}) == "a"  # a tie keeps the first


def test_the_command_lines_read_the_gate_rate():
    assert parse_gate_rate("dev") == CHOOSE_ON_DEV
    assert parse_gate_rate("0.01") == 0.01
    assert parse_gate_rate("knowledge, 1e-2") == [None, 0.01]
    for bad in ("often", "0", "-1e-3", "1e-2,x"):
        with pytest.raises(SettingError, match="gate"):
            parse_gate_rate(bad)
    result = CliRunner().invoke(app, ["finetune", "--train", "t.json", "--output-dir", "o",
                                      "--gate-lr", "often"])
    assert result.exit_code == 2 and "often" in result.output
