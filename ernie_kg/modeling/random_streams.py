"""The entity stream's own random numbers, so the token stream draws what its backbone draws.

Why: ERNIE-KG and its text-only twin (same backbone, same seed, no entities) start as the
same function (the knowledge gates are closed) and see the same batches in the same order.
If the entity modules' dropout drew from the global generator, every token dropout mask
after the first aggregator layer would differ from the twin's, and the two runs would
differ by a whole seed's worth of noise before knowledge had any say. Drawing the entity
side from a generator seeded by the global state (read, not advanced) keeps the twins
step-for-step equal while the gates stay shut, so a gap between them measures what the
entities did (ERNIE-KG >= its baseline "on every seed" is then a statement about
knowledge, not about dropout luck). The seed is a function of the global state, which
checkpoints save, so a resumed run draws what an uninterrupted one draws.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def _state(device: torch.device) -> torch.Tensor | None:
    if device.type == "cpu":
        return torch.get_rng_state()
    if device.type == "cuda":
        return torch.cuda.get_rng_state(device)
    return None


@contextmanager
def entity_random_stream(device: torch.device, salt: int) -> Iterator[None]:
    """Run the block on a generator derived from the global one on ``device`` (and
    ``salt``: one per call site), leaving the global generator exactly as it was."""
    state = _state(device)
    if state is None:  # other backends: one shared stream (still correct, not paired)
        yield
        return
    seed = zlib.crc32(state.numpy().tobytes(), salt & 0xFFFFFFFF)
    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type="cuda"):
        if device.type == "cuda":
            torch.cuda.manual_seed(seed)
        else:
            torch.random.default_generator.manual_seed(seed)
        yield


def drop_entities(entity_ids: torch.Tensor, share: float) -> torch.Tensor:
    """``entity_ids`` with each entity replaced by 0 (none) with probability ``share``,
    drawn on the entity stream."""
    with entity_random_stream(entity_ids.device, salt=-1):
        kept = torch.rand(entity_ids.shape, device=entity_ids.device)
    return entity_ids * (kept >= share)
