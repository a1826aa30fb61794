"""experiments/summarize_fewrel16.py: the per-seed disagreement counts (McNemar) on fake runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

LABELS = ["P17", "P17", "P27", "P27", "P131", "P131"]


def _write_runs(runs: Path, predictions: dict[str, list[str]]) -> None:
    """A runs directory as run_fewrel16.sh leaves it: the test split, and per run the
    dev metrics and ``ernie-kg evaluate``'s test metrics with its predictions."""
    (runs / "split").mkdir(parents=True)
    split: dict[str, list] = {}
    for index, label in enumerate(LABELS):
        split.setdefault(label, []).append({
            "tokens": ["Paris", "is", "in", "France", str(index)],
            "h": ["paris", "Q90", [[0]]], "t": ["france", "Q142", [[3]]]})
    (runs / "split" / "test.json").write_text(json.dumps(split), encoding="utf-8")
    for name, predicted in predictions.items():
        run = runs / name
        run.mkdir()
        gold = [label for label, items in split.items() for _ in items]
        accuracy = sum(p == g for p, g in zip(predicted, gold)) / len(gold)
        metrics = {"accuracy": accuracy, "macro_f1": accuracy, "micro_f1": accuracy}
        (run / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
        (run / "test_metrics.json").write_text(json.dumps({**metrics, "predictions": predicted}),
                                               encoding="utf-8")


def test_disagreements_count_who_is_right_and_mcnemar_p(experiment_script):
    disagreements = experiment_script("summarize_fewrel16").disagreements
    gold = ["a", "a", "b", "b", "c", "c", "c", "c"]
    ernie = ["a", "a", "b", "c", "c", "c", "c", "c"]  # right at 2 (vs b's a), wrong at 3
    baseline = ["a", "b", "b", "b", "a", "a", "c", "c"]
    # differ at rows 1, 3, 4, 5: ERNIE-KG right at 1, 4, 5; the baseline at 3
    found = disagreements(gold, ernie, baseline)
    assert found["differ"] == 4
    assert (found["ernie_right"], found["baseline_right"]) == (3, 1)
    # exact two-sided binomial over the 4 decided rows: 2 * (C(4,0) + C(4,1)) / 16
    assert found["mcnemar_p"] == pytest.approx(10 / 16)
    six_to_nil = disagreements(["x"] * 6, ["x"] * 6, ["y"] * 6)
    assert six_to_nil["mcnemar_p"] == pytest.approx(2 / 64)
    same = disagreements(gold, ernie, ernie)
    assert same == {"differ": 0, "ernie_right": 0, "baseline_right": 0, "mcnemar_p": 1.0}
    with pytest.raises(ValueError, match="same test examples"):
        disagreements(gold, ernie, baseline[:-1])


def test_summary_reports_the_disagreements_per_seed(tmp_path, experiment_script):
    runs = tmp_path / "runs"
    _write_runs(runs, {
        "open-baseline-seed0": ["P17", "P27", "P27", "P27", "P131", "P17"],
        "open-ernie-seed0": ["P17", "P17", "P27", "P17", "P131", "P131"],
    })
    output = tmp_path / "results" / "grid"
    summary = experiment_script("summarize_fewrel16").main(
        ["--runs", str(runs), "--output", str(output)])
    # differ at rows 1, 3, 5: ERNIE-KG right at 1 and 5, the baseline at 3
    assert summary["per_seed"][0]["disagreements"] == {
        "differ": 3, "ernie_right": 2, "baseline_right": 1, "mcnemar_p": 1.0}
    assert "| open | 0 | 66.67 | 83.33 | +16.67 | 3 (2 / 1; p = 1.00) |" in \
        output.with_suffix(".md").read_text(encoding="utf-8")
    saved = json.loads((tmp_path / "results" / "grid_summary.json").read_text())
    assert all("predictions" not in run for run in saved["runs"])
