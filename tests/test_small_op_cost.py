"""benchmarks/small_op_cost.py on a few repeats: every op is timed hot and after the large
product, and the results say which is which."""

from __future__ import annotations

import json

import pytest

from ernie_kg.modeling.native import entity_kernels


@pytest.mark.usefixtures("one_torch_thread")
def test_each_op_is_timed_hot_and_after_the_large_product(benchmark_script, tmp_path, capsys):
    script = benchmark_script("small_op_cost")
    out = tmp_path / "small"
    summary = script.main(["--threads", "1", "--repeats", "3", "--chains", "1", "3",
                           "--output", str(out)])
    costs = summary["costs"][1]
    assert "3 adds [41, 1536] in a row" in costs and "view (no kernel)" in costs
    steps = [n for n in costs if n.startswith(("residual + LayerNorm", "attention within"))]
    built = entity_kernels() is not None  # both steps as ATen ops, and as kernels if built
    assert sum("ATen" in n for n in steps) == 2 and len(steps) == (4 if built else 2)
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


@pytest.mark.usefixtures("one_torch_thread")
def test_flushes_time_the_ops_and_the_weight_sizes(benchmark_script, tmp_path):
    script = benchmark_script("small_op_cost")
    out = tmp_path / "flush"
    summary = script.main(["--threads", "1", "--repeats", "3", "--chains", "2",
                           "--flush-mb", "1", "2", "--output", str(out)])
    assert list(summary["flush_costs"]) == [1, 2]
    costs = summary["flush_costs"][2]
    assert "2 adds [41, 1536] in a row" in costs and "LayerNorm [41, 100]" in costs
    widths = [name for name in costs if "KB weights" in name]
    assert widths == [f"[41, 100] x [100, {out}] ({4 * 100 * out // 1024} KB weights)"
                      for out in script.WEIGHT_OUTPUTS]
    assert all(cost["hot_us"] > 0 and cost["after_large_us"] > 0 for cost in costs.values())
    text = out.with_suffix(".md").read_text()
    assert "| op | hot us | after 1 MB | after 2 MB |" in text
    assert "(2400 KB weights) |" in text


def test_bad_arguments_are_refused(benchmark_script, tmp_path):
    script = benchmark_script("small_op_cost")
    with pytest.raises(SystemExit):
        script.main(["--repeats", "0", "--output", str(tmp_path / "x")])
    with pytest.raises(SystemExit):
        script.main(["--flush-mb", "0", "--output", str(tmp_path / "x")])
