"""Where the entities of a batch sit: one object computed per forward pass, read by every
knowledge layer (the modules never re-derive positions from ``entity_ids``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["EntityLayout"]


@dataclass
class EntityLayout:
    """Where the entities of a batch sit, computed once per forward pass.

    ``flat_index`` holds the aligned positions in the flattened ``[B * L]`` token grid;
    ``slot_index`` is each entity's rank within its sequence, so ``(batch_index,
    slot_index)`` addresses the packed ``[B, heads, num_slots, d]`` tensors used by entity
    self-attention. ``key_bias`` is the additive mask hiding padding slots. ``links``
    ``[N]`` (or None) is each entity's ``entity_links`` value, for the knowledge gate.
    """

    flat_index: torch.Tensor
    batch_index: torch.Tensor
    slot_index: torch.Tensor
    rows: torch.Tensor
    key_bias: torch.Tensor
    batch_size: int
    seq_len: int
    num_slots: int
    links: torch.Tensor | None = None
    _attention_bias: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def from_entity_ids(cls, entity_ids: torch.Tensor, dtype: torch.dtype,
                        entity_links: torch.Tensor | None = None) -> EntityLayout | None:
        """The layout of ``entity_ids`` ``[B, L]`` (0 = no entity; ``entity_links`` the
        same shape, or None); None if nothing is aligned."""
        aligned = entity_ids > 0
        flat_index = aligned.reshape(-1).nonzero().squeeze(1)
        if flat_index.numel() == 0:
            return None
        batch_size, seq_len = entity_ids.shape
        counts = aligned.sum(dim=1)
        num_slots = int(counts.max())
        slot_index = (aligned.cumsum(dim=1) - 1).reshape(-1)[flat_index]
        slots = torch.arange(num_slots, device=entity_ids.device)
        key_bias = torch.zeros(batch_size, num_slots, dtype=dtype, device=entity_ids.device)
        key_bias.masked_fill_(slots[None, :] >= counts[:, None], torch.finfo(dtype).min)
        return cls(
            flat_index=flat_index,
            batch_index=torch.div(flat_index, seq_len, rounding_mode="floor"),
            slot_index=slot_index,
            rows=entity_ids.reshape(-1)[flat_index],
            key_bias=key_bias[:, None, None, :],
            batch_size=batch_size,
            seq_len=seq_len,
            num_slots=num_slots,
            links=None if entity_links is None else entity_links.reshape(-1)[flat_index],
        )

    def pack_heads(self, states: torch.Tensor, parts: int, heads: int) -> torch.Tensor:
        """``[N, parts * heads * d]`` -> ``[parts, B, heads, num_slots, d]``, zero in the
        padding slots. Written through a permuted view, so each part is already the
        contiguous per-head layout attention reads: no further copy per part."""
        head_dim = states.shape[-1] // (parts * heads)
        packed = states.new_zeros(parts, self.batch_size, heads, self.num_slots, head_dim)
        packed.permute(1, 3, 0, 2, 4).index_put_((self.batch_index, self.slot_index),
                                                  states.view(-1, parts, heads, head_dim))
        return packed

    def unpack_heads(self, packed: torch.Tensor) -> torch.Tensor:
        """``[B, heads, num_slots, d]`` -> ``[N, heads * d]`` (the real entities only)."""
        rows = packed[self.batch_index, :, self.slot_index]  # [N, heads, d]
        return rows.reshape(rows.shape[0], -1)

    def attention_bias(self, heads: int, dtype: torch.dtype) -> torch.Tensor:
        """``key_bias`` expanded to ``[B * heads, num_slots, num_slots]`` for batched
        matmuls; built once per forward pass and shared by the layers."""
        key = (heads, dtype)
        if key not in self._attention_bias:
            slots = self.num_slots
            bias = self.key_bias.to(dtype).expand(self.batch_size, heads, slots, slots)
            self._attention_bias[key] = bias.reshape(self.batch_size * heads, slots, slots)
        return self._attention_bias[key]

    def scatter(self, states: torch.Tensor) -> torch.Tensor:
        """``[N, d]`` -> position-aligned ``[B, L, d]``, zero where no entity is aligned."""
        grid = states.new_zeros(self.batch_size * self.seq_len, states.shape[-1])
        grid = grid.index_copy(0, self.flat_index, states)
        return grid.view(self.batch_size, self.seq_len, -1)
