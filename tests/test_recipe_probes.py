"""experiments/summarize_recipe_probes.py on a fake probe run and a fake ABSA summary."""

from __future__ import annotations

import json
from pathlib import Path

SEMEVAL = ("precision", "recall", "f1", "accuracy_4way", "accuracy_3way", "accuracy_binary")


def _probe(run: Path, epochs: float, dev_scores: list[float], kept: float,
           setting: str = "nli_m") -> None:
    """A finished experiments/absa.py run: metrics.json and the per-epoch dev log (none
    for ``single``, which logs one classifier per aspect in its own directory)."""
    run.mkdir(parents=True)
    metrics = {key: 0.5 for key in SEMEVAL}
    metrics.update(dev={"absa_score": kept}, settings={
        "dataset": "semeval", "setting": setting, "seed": 0, "epochs": epochs,
        "learning_rate": 5e-5})
    (run / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    if setting == "single":
        return
    lines = [{"step": 10, "loss": 1.0}] + [{"epoch": i + 1.0, "eval_absa_score": s}
                                           for i, s in enumerate(dev_scores)]
    (run / "log.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines),
                                   encoding="utf-8")


def test_probe_table_shows_dev_per_epoch_and_the_change_against_the_recorded_run(
        tmp_path, experiment_script):
    _probe(tmp_path / "semeval-nli_m-ep5-seed0", 5, [0.60, 0.75, 0.80, 0.82, 0.81], 0.82)
    summary = tmp_path / "absa.json"
    reference = {"run": "runs/absa/semeval-nli_m-seed0", "dataset": "semeval",
                 "setting": "nli_m", "seed": 0, "mode": "fine-tuned",
                 "dev_absa_score": 79.5, "test": {key: 80.0 for key in SEMEVAL},
                 "recipe": {"epochs": 3.0, "learning_rate": 5e-5}}
    other_seed = {**reference, "seed": 1, "dev_absa_score": 10.0}
    summary.write_text(json.dumps({"runs": [other_seed, reference]}), encoding="utf-8")
    output = tmp_path / "probes"
    result = experiment_script("summarize_recipe_probes").main(
        ["--probe", str(tmp_path / "semeval-nli_m-ep5-seed0"), "--summary", str(summary),
         "--output", str(output)])
    assert result["probes"][0]["dev_by_epoch"] == [60.0, 75.0, 80.0, 82.0, 81.0]
    table = output.with_suffix(".md").read_text(encoding="utf-8")
    assert "| BERT-pair-NLI-M | 0 | recorded: 3 epochs, lr 5e-05 | – | 79.50 |" in table
    assert ("| BERT-pair-NLI-M | 0 | 5 epochs, lr 5e-05 | 60.00 / 75.00 / 80.00 / 82.00 / "
            "81.00 | 82.00 | +2.50 | 50.00 |") in table
    # a second call without --probe keeps the recorded probe
    again = experiment_script("summarize_recipe_probes").main(
        ["--summary", str(summary), "--output", str(output)])
    assert [p["run"] for p in again["probes"]] == [p["run"] for p in result["probes"]]


def test_a_single_probe_has_no_joint_dev_curve_and_says_why(tmp_path, experiment_script):
    _probe(tmp_path / "semeval-single-ep5-seed0", 5, [], 0.76, setting="single")
    summary = tmp_path / "absa.json"
    summary.write_text(json.dumps({"runs": []}), encoding="utf-8")
    output = tmp_path / "probes"
    result = experiment_script("summarize_recipe_probes").main(
        ["--probe", str(tmp_path / "semeval-single-ep5-seed0"), "--summary", str(summary),
         "--output", str(output)])
    assert result["probes"][0]["dev_by_epoch"] == []
    table = output.with_suffix(".md").read_text(encoding="utf-8")
    assert "| BERT-single | 0 | 5 epochs, lr 5e-05 | – (one classifier per aspect) | 76.00 |" \
        in table
