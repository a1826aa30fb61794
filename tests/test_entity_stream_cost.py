"""benchmarks/entity_stream_cost.py on one tiny batch: every entity module of every
aggregator layer is timed in the model and hot, and the parts add up to the difference
between the two models in the same run."""

from __future__ import annotations

import json

import pytest

from ernie_kg.paths import PROJECT_ROOT

FEWREL16 = PROJECT_ROOT.parent / "shared" / "data" / "fewrel" / "fewrel16.json"


@pytest.mark.skipif(not FEWREL16.is_file(), reason="../shared/data/fewrel/fewrel16.json absent")
@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("engine", ["aten", "native"])
def test_parts_cover_every_entity_module_and_add_up(benchmark_script, tmp_path, capsys, engine):
    script = benchmark_script("entity_stream_cost")
    out = tmp_path / "cost"
    summary = script.main(["--batches", "1", "--batch-size", "2", "--rounds", "1",
                           "--hot-repeats", "2", "--entity-rows", "1000", "--threads", "1",
                           "--engine", engine, "--output", str(out)])
    measured = summary["measured"]
    # the relation model's MiniLM: one "mix" layer (no entity attention) and three "norm"
    # layers, the topmost without an entity output
    layers = {row["part"]: row.get("layers") for row in summary["breakdown"]}
    assert layers["entity_attention"] == 3
    # the native fusion computes W_e, the gate and the entity output in one call (where
    # the kernels are built): their time is in the rest of the layers' row
    modules_run = engine == "aten" or not summary["machine"]["entity_kernels"]
    assert layers.get("entity_intermediate") == (4 if modules_run else None)
    assert layers.get("entity_gate") == (4 if modules_run else None)
    assert layers.get("entity_output") == (3 if modules_run else None)
    for name, calls in measured["calls_per_forward"].items():
        assert calls == 1, name
        if name.count(".") == 2:
            assert measured["hot_ms"][name] > 0, name
            assert measured["again_in_model_ms"][name] > 0, name
    ernie, text = measured["in_model_ms"]["ernie"], measured["in_model_ms"]["text"]
    parts = sum(row["in_model_ms"] for row in summary["breakdown"])
    assert parts == pytest.approx(ernie["forward"] - text["forward"], abs=0.01)
    assert summary["measured"]["whole_ms"]["text"] > 0
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["breakdown"] == summary["breakdown"]
    assert "| entity_attention | 3 |" in out.with_suffix(".md").read_text()
    last = json.loads(capsys.readouterr().out.rstrip("\n").splitlines()[-1])
    assert set(last) == set(layers)


def test_bad_arguments_are_refused(benchmark_script, tmp_path):
    with pytest.raises(SystemExit):
        benchmark_script("entity_stream_cost").main(["--rounds", "0",
                                                     "--output", str(tmp_path / "x")])
