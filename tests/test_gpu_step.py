"""benchmarks/gpu_step.py's CPU side: the length-grouped batches it carries to the GPU,
and a clear refusal where there is no GPU."""

from __future__ import annotations

from types import ModuleType

import pytest
import torch


@pytest.fixture
def gpu_step(benchmark_script) -> ModuleType:
    return benchmark_script("gpu_step")


def padded_batch(lengths: list[int], width: int) -> dict:
    mask = torch.tensor([[1] * n + [0] * (width - n) for n in lengths])
    ids = torch.arange(len(lengths) * width).view(len(lengths), width) * mask
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(mask),
            "entity_ids": mask * 3, "labels": torch.arange(len(lengths)),
            "marker_positions": torch.zeros(len(lengths), 2, dtype=torch.long),
            "spans": torch.tensor([[[1, 2], [2, 3]]] * len(lengths))}


def test_batches_are_grouped_by_length_and_trimmed(gpu_step):
    batch = padded_batch([9, 3, 7, 4, 10], width=10)
    groups = gpu_step.length_grouped(batch, batch_size=2)
    assert len(groups) == 2  # the longest sequence is left over: no partial batch
    assert [g["labels"].tolist() for g in groups] == [[1, 3], [2, 0]]
    assert [g["input_ids"].shape[1] for g in groups] == [4, 9]
    for group in groups:
        rows = group["labels"].tolist()
        width = group["input_ids"].shape[1]
        assert torch.equal(group["input_ids"], batch["input_ids"][rows, :width])
        assert group["luke"]["entity_ids"].shape == (2, 2)


def test_run_without_a_gpu_says_so(gpu_step, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    with pytest.raises(SystemExit, match="no CUDA device"):
        gpu_step.main(["run", "--inputs", str(tmp_path / "inputs.pt")])
