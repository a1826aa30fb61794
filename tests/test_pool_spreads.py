"""benchmarks/pool_spreads.py: process_spread runs pooled per CPU kind and setting."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from types import ModuleType

import pytest

INTEL = {"cpu_model": "Intel Xeon", "cpu_flags": {"avx512f": True, "amx_tile": True}}
AMD_AVX512 = {"cpu_model": "AMD EPYC", "cpu_flags": {"avx512f": True, "amx_tile": False}}
AMD_AVX2 = {"cpu_model": "AMD EPYC", "cpu_flags": {"avx512f": False, "amx_tile": False}}


@pytest.fixture
def pooling(benchmark_script) -> ModuleType:
    return benchmark_script("pool_spreads")


def spread_result(folder: Path, name: str, machine: dict, batch: int,
                  inference: list[float], train: list[float]) -> Path:
    """A file as process_spread.py writes it, with the fields the pooling reads."""
    summary = {"ernie_vs_text_inference": {"per_process": inference,
                                           "median": statistics.median(inference)},
               "ernie_vs_text_train": {"per_process": train, "median": statistics.median(train)},
               "flop_bound_inference": {"median": 1.005}, "flop_bound_train": {"median": 1.004},
               "ernie_vs_luke_inference": {"per_process": [0.8] * len(train)},
               "ernie_vs_luke_train": {"per_process": [0.9] * len(train)}}
    path = folder / f"{name}.json"
    path.write_text(json.dumps({"benchmark": "process_spread", "machine": machine,
                                "peer_args": ["--batch-size", str(batch)],
                                "summary": summary}))
    return path


def test_runs_pool_per_cpu_kind_and_setting(pooling, tmp_path, capsys):
    runs = [spread_result(tmp_path, "a", INTEL, 16, [1.03, 1.04, 1.02], [1.02, 1.03, 1.01]),
            spread_result(tmp_path, "b", INTEL, 16, [1.05, 1.04, 1.06], [1.04, 1.05, 1.03]),
            spread_result(tmp_path, "c", INTEL, 32, [1.01, 1.00, 1.02], [1.00, 1.01, 1.02]),
            spread_result(tmp_path, "d", AMD_AVX512, 16, [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]),
            spread_result(tmp_path, "e", AMD_AVX2, 16, [1.1, 1.1, 1.1], [1.1, 1.1, 1.1])]
    groups = pooling.main([*map(str, runs), "--output", str(tmp_path / "pooled")])
    assert [(g["cpu"].split(" (")[0], g["peer_args"], g["processes"]) for g in groups] == [
        ("Intel Xeon", "--batch-size 16", 6), ("Intel Xeon", "--batch-size 32", 3),
        ("AMD EPYC", "--batch-size 16", 3), ("AMD EPYC", "--batch-size 16", 3)]
    intel16 = groups[0]["ernie_vs_text_inference"]
    # the six processes' median, not the median of the two runs' medians (1.035)
    assert intel16["pooled_median"] == 1.04
    assert intel16["bar"] == 1.035 and not intel16["pooled_median_within"]
    assert intel16["processes_within"] == 2 and intel16["run_medians_within"] == 1
    assert groups[0]["ernie_vs_text_train"]["pooled_median_within"]
    assert groups[2]["cpu"] != groups[3]["cpu"]  # AVX-512 and AVX2 hosts kept apart
    assert not groups[3]["ernie_vs_text_train"]["at_most_1_05"]
    assert groups[0]["ernie_vs_luke_train"]["pooled_median"] == 0.9
    printed = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert printed[0]["ernie_vs_text_inference"] == 1.04
    table = (tmp_path / "pooled.md").read_text()
    assert "| 1.0400 (1.0350) | 2 of 6, 1 of 2 |" in table
    saved = json.loads((tmp_path / "pooled.json").read_text())
    assert saved["groups"] == groups and saved["command"].endswith("--output pooled")


def test_a_file_that_is_not_a_spread_result_is_named(pooling, tmp_path):
    other = tmp_path / "peer.json"
    other.write_text(json.dumps({"benchmark": "peer_throughput", "summary": {}}))
    with pytest.raises(SystemExit, match="peer.json: not a process_spread result"):
        pooling.main([str(other), "--output", str(tmp_path / "pooled")])
    partial = spread_result(tmp_path, "partial", INTEL, 16, [1.0], [1.0])
    saved = json.loads(partial.read_text())
    del saved["summary"]["flop_bound_train"]
    partial.write_text(json.dumps(saved))
    with pytest.raises(SystemExit, match=r"missing \['summary.flop_bound_train'\]"):
        pooling.main([str(partial), "--output", str(tmp_path / "pooled")])
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(SystemExit, match="broken.json: not a readable"):
        pooling.main([str(broken), "--output", str(tmp_path / "pooled")])
