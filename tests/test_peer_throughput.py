"""benchmarks/peer_throughput.py on one tiny batch: the contract line the issue checks as
written (last stdout line, one JSON object) and LUKE's entity inputs."""

from __future__ import annotations

import json
import os
from types import ModuleType

import pytest
import torch

from ernie_kg.paths import PROJECT_ROOT

FEWREL16 = PROJECT_ROOT.parent / "shared" / "data" / "fewrel" / "fewrel16.json"
CONTRACT = ("ernie_vs_text_inference", "ernie_vs_text_train", "ernie_vs_luke_inference",
            "ernie_vs_luke_train", "flop_bound_inference", "flop_bound_train",
            "bf16_inference_speedup")


@pytest.fixture
def peer(benchmark_script) -> ModuleType:
    return benchmark_script("peer_throughput")


@pytest.mark.skipif(not FEWREL16.is_file(), reason="../shared/data/fewrel/fewrel16.json absent")
@pytest.mark.usefixtures("one_torch_thread")
def test_quick_run_ends_with_the_contract_line(peer, tmp_path, capsys):
    out = tmp_path / "peer"
    peer.main(["--quick", "--sizes", "minilm", "--rounds", "1", "--batch-size", "2",
               "--threads", "1", "--output", str(out)])
    last = capsys.readouterr().out.rstrip("\n").splitlines()[-1]
    contract = json.loads(last)
    assert sorted(contract) == sorted(CONTRACT)
    for key in CONTRACT:
        assert isinstance(contract[key], float) and contract[key] > 0, key
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["contract"] == contract
    assert saved["sizes"]["minilm"]["config"]["layers"] == 6
    assert out.with_suffix(".md").is_file() and out.with_suffix(".png").stat().st_size > 0


def test_luke_gets_head_and_tail_spans_with_linked_rows(peer):
    batch = {"spans": torch.tensor([[[1, 3], [5, 6]]]),
             "entity_ids": torch.tensor([[0, 7, 0, 0, 0, 0, 0]])}
    peer.add_luke_inputs(batch)
    luke = batch["luke"]
    assert luke["entity_ids"].tolist() == [[7, 1]]  # the linked row; 1 where none
    positions = luke["entity_position_ids"]
    assert positions.shape == (1, 2, peer.MAX_MENTION)
    assert positions[0, 0, :3].tolist() == [1, 2, -1]
    assert positions[0, 1, :2].tolist() == [5, -1]


@pytest.mark.parametrize(("named", "set_to"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE"),
                                               ("default", None), ("DEFAULT", None)])
def test_the_wait_policy_is_passive_unless_named_and_default_leaves_it_to_openmp(
        benchmark_script, monkeypatch, named, set_to):
    wait_policy = benchmark_script("wait_policy")
    if named is None:
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    else:
        monkeypatch.setenv("OMP_WAIT_POLICY", named)
    chosen = wait_policy.choose_wait_policy()
    assert chosen == (set_to or "default")
    assert os.environ.get("OMP_WAIT_POLICY") == set_to


def test_a_second_wait_policy_choice_keeps_the_first(benchmark_script, monkeypatch):
    """A benchmark importing another (entity_stream_cost imports peer_throughput) chooses
    twice; OpenMP read the first, so the record must say the first."""
    wait_policy = benchmark_script("wait_policy")
    monkeypatch.setenv("OMP_WAIT_POLICY", "default")
    assert wait_policy.choose_wait_policy() == "default"
    assert wait_policy.choose_wait_policy() == "default"
    assert "OMP_WAIT_POLICY" not in os.environ
