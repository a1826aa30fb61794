"""The entity stream's own random numbers, so the token stream draws what its backbone draws.

Why: ERNIE-KG and its text-only twin (same backbone, same seed, no entities) start as the
same function (the knowledge gates are closed) and see the same batches in the same order.
If the entity modules' dropout drew from the global generator, every token dropout mask
after the first aggregator layer would differ from the twin's, and the two runs would
differ by a whole seed's worth of noise before knowledge had any say. Drawing the entity
side from generators seeded by the global state (read, not advanced) keeps the twins
step-for-step equal while the gates stay shut, so a gap between them measures what the
entities did (ERNIE-KG >= its baseline "on every seed" is then a statement about
knowledge, not about dropout luck). The seed is a function of the global state, which
checkpoints save, so a resumed run draws what an uninterrupted one draws.
"""

from __future__ import annotations

import zlib

import torch
from torch.nn import functional as F


def _state(device: torch.device) -> torch.Tensor | None:
    if device.type == "cpu":
        return torch.get_rng_state()
    if device.type == "cuda":
        return torch.cuda.get_rng_state(device)
    return None


def entity_generator(device: torch.device, salt: int) -> torch.Generator | None:
    """A generator for one call site of the entity stream (``salt``), seeded by the global
    generator's state on ``device``, which it reads and leaves as it was; None on
    backends without one (their draws then come from the global generator, unpaired).

    Why a generator handed to the draws rather than the global one forked and re-seeded
    around them: one state read instead of two reads, a write and a context manager per
    call site, each paid cold between the token stream's products. On a CPU the masks
    are the ones the re-seeded global generator drew, bit for bit; on a GPU they now come
    from ``bernoulli_`` instead of the fused dropout kernel (other numbers, same law)."""
    state = _state(device)
    if state is None:
        return None
    generator = torch.Generator(device=device)
    generator.manual_seed(zlib.crc32(state.numpy().tobytes(), salt & 0xFFFFFFFF))
    return generator


def entity_dropout(tensor: torch.Tensor, p: float,
                   generator: torch.Generator | None) -> torch.Tensor:
    """``F.dropout(tensor, p)`` in training, its mask drawn from ``generator`` (the
    kernels ``F.dropout`` runs on a CPU: a Bernoulli mask, scaled, multiplied)."""
    if not p:
        return tensor
    if generator is None or p >= 1:
        return F.dropout(tensor, p)
    keep = torch.empty_like(tensor).bernoulli_(1 - p, generator=generator)
    return tensor * keep.div_(1 - p)


def drop_entities(entity_ids: torch.Tensor, share: float) -> torch.Tensor:
    """``entity_ids`` with each entity replaced by 0 (none) with probability ``share``,
    drawn on the entity stream."""
    generator = entity_generator(entity_ids.device, salt=-1)
    kept = torch.rand(entity_ids.shape, device=entity_ids.device, generator=generator)
    return entity_ids * (kept >= share)
