"""benchmarks/small_op_cost.py on a few repeats: every op is timed hot and after the large
product, and the results say which is which."""

from __future__ import annotations

import json

import pytest


@pytest.mark.usefixtures("one_torch_thread")
def test_each_op_is_timed_hot_and_after_the_large_product(benchmark_script, tmp_path, capsys):
    script = benchmark_script("small_op_cost")
    out = tmp_path / "small"
    summary = script.main(["--threads", "1", "--repeats", "3", "--chains", "1", "3",
                           "--output", str(out)])
    costs = summary["costs"][1]
    assert "3 adds [41, 1536] in a row" in costs and "view (no kernel)" in costs
    for name, cost in costs.items():
        assert cost["hot_us"] > 0 and cost["after_large_us"] > 0, name
        assert cost["added_us"] == pytest.approx(cost["after_large_us"] - cost["hot_us"],
                                                  abs=0.11), name
    assert summary["large_op_ms"][1] > 0
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["costs"]["1"].keys() == costs.keys()
    assert "| W_e: [41, 100] x [100, 1536] |" in out.with_suffix(".md").read_text()
    last = json.loads(capsys.readouterr().out.rstrip("\n").splitlines()[-1])
    assert last["added_us"]["1"].keys() == costs.keys()


def test_bad_arguments_are_refused(benchmark_script, tmp_path):
    script = benchmark_script("small_op_cost")
    with pytest.raises(SystemExit):
        script.main(["--repeats", "0", "--output", str(tmp_path / "x")])
