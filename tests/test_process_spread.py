"""benchmarks/process_spread.py: the peer benchmark in fresh processes, summarized."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import ModuleType

import pytest

from ernie_kg.paths import PROJECT_ROOT

FEWREL16 = PROJECT_ROOT.parent / "shared" / "data" / "fewrel" / "fewrel16.json"


@pytest.fixture
def spread(benchmark_script) -> ModuleType:
    return benchmark_script("process_spread")


@pytest.mark.skipif(not FEWREL16.is_file(), reason="../shared/data/fewrel/fewrel16.json absent")
def test_two_processes_summarized_against_the_bound(spread, tmp_path, capsys):
    out = tmp_path / "spread"
    result = spread.main(["--processes", "2", "--output", str(out), "--", "--quick",
                          "--sizes", "minilm", "--dtypes", "fp32", "--rounds", "1",
                          "--batch-size", "2", "--threads", "1"])
    medians = json.loads(capsys.readouterr().out.rstrip("\n").splitlines()[-1])
    summary = result["summary"]
    assert medians == {key: row["median"] for key, row in summary.items()}
    assert "ernie_vs_text_inference" in medians and "flop_bound_train" in medians
    for key, row in summary.items():
        assert len(row["per_process"]) == 2
        if key == "bf16_inference_speedup":  # fp32 only: not measured, said so
            assert row["per_process"] == [None, None] and row["median"] is None
        else:
            assert row["min"] <= row["median"] <= row["max"]
    inference = summary["ernie_vs_text_inference"]
    bound = summary["flop_bound_inference"]["median"]
    assert inference["within_margin_of_bound"] == [
        v - bound <= spread.MARGIN for v in inference["per_process"]]
    assert len(inference["paired_per_process"]) == 2
    assert "within_margin_of_bound" not in summary["ernie_vs_luke_train"]
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["summary"] == summary and saved["processes"] == 2
    table = out.with_suffix(".md").read_text()
    assert "| ernie_vs_text_train |" in table and "of 2 (median:" in table
    speeds = saved["sequences_per_second"]
    assert set(speeds) == {"inference", "train_step"}
    assert all(speeds[task][f"{model}/fp32"] > 0 for task in speeds
               for model in ("ernie", "text", "luke"))
    assert f"- inference: ernie/fp32 {speeds['inference']['ernie/fp32']}" in table


def test_throughput_is_the_median_over_processes(spread):
    runs = [{"sequences_per_second": {"inference": {"ernie/fp32": v, "text/fp32": 2 * v}}}
            for v in (10.0, 30.0, 20.0)]
    assert spread.throughput(runs) == {"inference": {"ernie/fp32": 20.0, "text/fp32": 40.0}}


def test_arguments_are_checked_before_any_process_starts(spread):
    with pytest.raises(SystemExit):
        spread.parse_args(["--processes", "1", "--", "--quick"])
    with pytest.raises(SystemExit):
        spread.parse_args(["--", "--quick", "--output", "elsewhere"])
    args, peer_args = spread.parse_args(["--processes", "3", "--", "--quick", "--sizes", "minilm"])
    assert args.processes == 3 and peer_args == ["--quick", "--sizes", "minilm"]


def test_a_failing_process_is_reported_with_its_error(spread, tmp_path):
    with pytest.raises(SystemExit, match="peer_throughput.py failed"):
        spread.run_once(["--sizes", "no-such-size"], tmp_path / "run")


def test_the_starter_loads_no_openmp_that_rejects_the_default_policy():
    """It only starts the benchmark's processes: with ``OMP_WAIT_POLICY=default`` (which
    each child clears before torch loads) it must not load OpenMP itself, or libgomp
    warns of an invalid value."""
    env = {**os.environ, "OMP_WAIT_POLICY": "default"}
    done = subprocess.run([sys.executable, str(PROJECT_ROOT / "benchmarks" / "process_spread.py"),
                           "--help"], capture_output=True, text=True, env=env, check=True)
    assert "fresh processes" in done.stdout
    assert "libgomp" not in done.stderr
