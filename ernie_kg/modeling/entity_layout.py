"""Where the entities of a batch sit: one object computed per forward pass, read by every
knowledge layer (the modules never re-derive positions from ``entity_ids``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from types import ModuleType

import torch

from ernie_kg.modeling.native import use_entity_kernels

__all__ = ["EntityLayout"]


@dataclass
class EntityLayout:
    """Where the entities of a batch sit, computed once per forward pass.

    ``flat_index`` holds the aligned positions in the flattened ``[B * L]`` token grid,
    ``batch_index`` each entity's sequence, ``rows`` its entity-table row. ``links``
    ``[N]`` (or None) is each entity's ``entity_links`` value, for the knowledge gate.
    The packed per-sequence view used by entity self-attention on large batches
    (``slot_index``: each entity's rank within its sequence, so ``(batch_index,
    slot_index)`` addresses ``[B, heads, num_slots, d]`` tensors; ``key_bias``: the
    additive mask hiding padding slots) is built on first use: smaller batches never
    need it, and each op it saves is paid for in every forward pass.
    """

    flat_index: torch.Tensor
    batch_index: torch.Tensor
    rows: torch.Tensor
    aligned: torch.Tensor  # [B, L] bool
    dtype: torch.dtype
    links: torch.Tensor | None = None
    #: The entity stream's native kernels for this pass (:mod:`.native`), or None: ATen ops.
    kernels: ModuleType | None = None
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def from_entity_ids(cls, entity_ids: torch.Tensor, dtype: torch.dtype,
                        entity_links: torch.Tensor | None = None) -> EntityLayout | None:
        """The layout of ``entity_ids`` ``[B, L]`` (0 = no entity; ``entity_links`` the
        same shape, or None); None if nothing is aligned."""
        aligned = entity_ids > 0
        flat_index = aligned.reshape(-1).nonzero().squeeze(1)
        if flat_index.numel() == 0:
            return None
        return cls(
            flat_index=flat_index,
            batch_index=torch.div(flat_index, entity_ids.shape[1], rounding_mode="floor"),
            rows=entity_ids.reshape(-1)[flat_index],
            aligned=aligned,
            dtype=dtype,
            links=None if entity_links is None else entity_links.reshape(-1)[flat_index],
            kernels=use_entity_kernels(entity_ids.device, dtype),
        )

    @property
    def batch_size(self) -> int:
        """B, the batch's sequences."""
        return self.aligned.shape[0]

    @property
    def seq_len(self) -> int:
        """L, the padded sequence length."""
        return self.aligned.shape[1]

    @cached_property
    def num_slots(self) -> int:
        """The most entities in one sequence of the batch."""
        return int(self.aligned.sum(dim=1).max())

    @cached_property
    def slot_index(self) -> torch.Tensor:
        """``[N]``: each entity's rank within its sequence."""
        return (self.aligned.cumsum(dim=1) - 1).reshape(-1)[self.flat_index]

    @cached_property
    def key_bias(self) -> torch.Tensor:
        """``[B, 1, 1, num_slots]``: 0 on a sequence's entity slots, the dtype's minimum
        on its padding slots."""
        counts = self.aligned.sum(dim=1)
        slots = torch.arange(self.num_slots, device=self.aligned.device)
        bias = torch.zeros(self.batch_size, self.num_slots, dtype=self.dtype,
                           device=self.aligned.device)
        bias.masked_fill_(slots[None, :] >= counts[:, None], torch.finfo(self.dtype).min)
        return bias[:, None, None, :]

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
        key = ("attention_bias", heads, dtype)
        if key not in self._cache:
            slots = self.num_slots
            bias = self.key_bias.to(dtype).expand(self.batch_size, heads, slots, slots)
            self._cache[key] = bias.reshape(self.batch_size * heads, slots, slots)
        return self._cache[key]

    def sequence_bias(self, dtype: torch.dtype) -> torch.Tensor:
        """``[1, N, N]`` additive bias: 0 between two entities of the same sequence, the
        dtype's minimum between others (so attention over all N entities of the batch is
        attention within each sequence); built once per forward pass, shared by the layers."""
        key = ("sequence_bias", dtype)
        if key not in self._cache:
            other = self.batch_index[:, None] != self.batch_index[None, :]
            bias = torch.zeros(other.shape, dtype=dtype, device=other.device)
            self._cache[key] = bias.masked_fill_(other, torch.finfo(dtype).min)[None]
        return self._cache[key]

    def link_column(self, dtype: torch.dtype) -> torch.Tensor:
        """``links`` as a ``[N, 1]`` column of ``dtype`` (zeros without links), the
        knowledge gates' extra input; built once per forward pass, shared by the layers."""
        key = ("link_column", dtype)
        if key not in self._cache:
            count = self.flat_index.numel()
            self._cache[key] = (self.flat_index.new_zeros(count, 1, dtype=dtype)
                                if self.links is None else self.links.to(dtype)[:, None])
        return self._cache[key]

    def scatter(self, states: torch.Tensor) -> torch.Tensor:
        """``[N, d]`` -> position-aligned ``[B, L, d]``, zero where no entity is aligned."""
        grid = states.new_zeros(self.batch_size * self.seq_len, states.shape[-1])
        grid = grid.index_copy(0, self.flat_index, states)
        return grid.view(self.batch_size, self.seq_len, -1)
