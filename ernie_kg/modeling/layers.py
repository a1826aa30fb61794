"""The fusion layers: BERT layers whose top layers also carry an entity stream.

Why they are built this way:

* An aggregator layer *is* a :class:`~transformers.models.bert.modeling_bert.BertLayer`
  (subclass) with a few entity modules added. Its token attention, ``W_t`` (the FFN's
  ``intermediate.dense``) and token output projection are the backbone layer's own
  modules, and its parameter names are BERT's, so backbone checkpoints load directly.
  Without entities it runs ``BertLayer.forward`` itself: knowledge off is the backbone,
  bit for bit, whatever the number of aggregator layers.
* Entities are sparse (about a quarter of the tokens), so the entity stream is stored
  only at aligned positions (``[N, entity_dim]``). Entity self-attention runs over the
  batch's N entities with a bias that keeps each within its sequence (up to
  :data:`.entity_modules.DENSE_ATTENTION_MAX_ENTITIES`; beyond, on a per-sequence
  packed tensor ``[B, max_entities, entity_dim]``, whose scores grow with B, not N^2);
  ``W_e e_k + b_e`` is added into the ``[B, L, intermediate]`` pre-activation only at the
  aligned rows; the entity output projection reads only those rows. Masked attention over
  all L positions gives the same result, since non-entity keys get zero weight and
  non-entity queries are discarded by ERNIE's ``ent_mask``.
* For GELU backbones (BERT, MiniLM) the fusion activation is one autograd function
  (:class:`_FusedGelu`) whose backward touches the full ``[B*L, intermediate]`` grid
  only as the backbone's own GELU backward does: autograd's generic index ops would add
  a zero-filled grid, a scatter and a full-size add per layer, a few percent of a step.
  At inference the same values are computed without the autograd function, with the
  knowledge gate's factor folded into the add (``addcmul``).
* The entity stream dispatches as few ops as it can: on an Intel Xeon an op whose code
  and data the token stream's traffic pushed out of the L2 cache costs 20-45 us more
  than hot, whatever its size (a LayerNorm of 41 rows 7 us hot, +26 us after 16 MB of
  other traffic; results/small_op_cost_intel_flush.md), and each knowledge layer runs
  its entity ops (about 28 at inference, 42 before these cuts) between such products.
  Hence attention over all N entities (no packing and unpacking), no ``.to`` when the
  dtype matches, no dropout call in eval, the links column and biases built once.
* On a CPU in float32 / float64 even those ops go: the entity attention and, per layer,
  ``W_t w_j + b_t`` and ``W_e e_k + b_e`` with the gate, the fused rows and the entity
  output are one native call each (:mod:`.native`, forward and backward;
  :meth:`_native_fusion`), what the ATen path below computes. Taking ``W_t`` in lets the
  token gate's few rows add into the tokens' gradient (no zero-filled ``[B*L, H]`` grid
  and full-size add per layer). Elsewhere (a GPU, bfloat16, quantized modules) the ATen
  path runs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F
from transformers.activations import GELUActivation
from transformers.models.bert.modeling_bert import BertLayer

from ernie_kg.modeling.configuration import ErnieKGConfig
from ernie_kg.modeling.entity_layout import EntityLayout
from ernie_kg.modeling.entity_modules import (
    ErnieKGEntityAttention,
    ErnieKGEntityGate,
    ErnieKGEntityOutput,
    as_dtype,
    kernel_ready,
)
from ernie_kg.modeling.random_streams import entity_generator

__all__ = ["ErnieKGAggregatorLayer", "ErnieKGEncoder"]


class ErnieKGAggregatorLayer(BertLayer):
    """A K-Encoder layer ("norm") or ERNIE's "mix" layer (no entity self-attention).

    ``h_j = GELU(W_t w_j + b_t + W_e e_k + b_e)`` for a token aligned to entity k and
    ``GELU(W_t w_j + b_t)`` otherwise; tokens leave through the backbone's FFN output
    (projection, residual, LN), entities through :class:`ErnieKGEntityOutput`, which the
    topmost aggregator does not build since nothing reads its entity output.
    """

    def __init__(
        self,
        config: ErnieKGConfig,
        layer_idx: int | None = None,
        kind: str = "norm",
        entity_output: bool = True,
    ) -> None:
        super().__init__(config, layer_idx=layer_idx)
        self.layer_idx = layer_idx
        self.kind = kind
        self.entity_attention = ErnieKGEntityAttention(config) if kind == "norm" else None
        self.entity_intermediate = nn.Linear(config.entity_dim, config.intermediate_size)
        self.entity_output = ErnieKGEntityOutput(config) if entity_output else None
        self.entity_gate = (ErnieKGEntityGate(config) if config.knowledge_gate != "none"
                            else None)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        entity_states: torch.Tensor | None = None,
        layout: EntityLayout | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Returns (token output, entity output for the next layer, entities fused here)."""
        if entity_states is None or layout is None:  # knowledge off: the backbone layer itself
            return BertLayer.forward(self, hidden_states, attention_mask, **kwargs), None, None
        attention_output, _ = self.attention(hidden_states, attention_mask, **kwargs)
        device = hidden_states.device
        if self.entity_attention is not None:
            entity_states = self.entity_attention(entity_states, layout,
                                                  self._entity_generator(device, 0))
        tokens = attention_output.reshape(-1, attention_output.shape[-1])  # [B*L, H]
        links = (layout.link_column(tokens.dtype)
                 if self.entity_gate is not None and self.entity_gate.reads_links else None)
        native = self._native_fusion(tokens, entity_states, layout, links)
        if native is not None:
            intermediate, fused, next_entity_states = native
        else:
            pre_tokens = self.intermediate.dense(tokens)  # W_t w_j + b_t, every token
            knowledge = as_dtype(self.entity_intermediate(entity_states), pre_tokens.dtype)
            gate = None  # W_e e_k + b_e at full strength
            if self.entity_gate is not None:
                gate = self.entity_gate(tokens.index_select(0, layout.flat_index),
                                        entity_states, links)
            intermediate, fused = _fuse(self.intermediate.intermediate_act_fn, pre_tokens,
                                        knowledge, layout.flat_index, gate)
            next_entity_states = None
            if self.entity_output is not None:
                next_entity_states = self.entity_output(fused, entity_states,
                                                        self._entity_generator(device, 1))
        layer_output = self.output(intermediate.view(*attention_output.shape[:-1], -1),
                                   attention_output)
        return layer_output, next_entity_states, entity_states

    def _native_fusion(self, tokens: torch.Tensor, entities: torch.Tensor,
                       layout: EntityLayout, links: torch.Tensor | None,
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None:
        """(hidden, fused rows, next entity states) in one native call (:mod:`.native`):
        ``W_t w_j + b_t``, ``W_e e_k + b_e``, the gate, :func:`_fuse`'s rows and the entity
        output; None where the kernels do not run (a GPU, bfloat16, a non-GELU activation,
        quantized or adapted modules)."""
        approximate = _gelu_approximation(self.intermediate.intermediate_act_fn)
        token_product = self.intermediate.dense
        if (layout.kernels is None or approximate is None
                or not kernel_ready(self.entity_intermediate, token_product, dtype=tokens.dtype)):
            return None
        gate: tuple | None = (None,) * 4
        if self.entity_gate is not None:
            gate = self.entity_gate.kernel_inputs(tokens, entities, links)
        output: tuple | None = (None,) * 4 + (0.0, 0.0)
        if self.entity_output is not None:
            output = self.entity_output.kernel_arguments(tokens.dtype)
        if gate is None or output is None:
            return None
        generator = (self._entity_generator(tokens.device, 1) if self.entity_output is not None
                     else None)
        hidden, fused, next_states = layout.kernels.entity_fusion(
            tokens, token_product.weight, token_product.bias, entities,
            self.entity_intermediate.weight, self.entity_intermediate.bias, layout.flat_index,
            *gate, approximate, *output, generator)
        return hidden, fused, next_states

    def _entity_generator(self, device: torch.device, site: int) -> torch.Generator | None:
        """The entity modules' random numbers at ``site`` (:mod:`.random_streams`): while
        training, a generator of their own per layer and call site, so the token stream's
        dropout masks are the text-only backbone's; nothing to draw otherwise."""
        if not self.training:
            return None
        return entity_generator(device, salt=2 * (self.layer_idx or 0) + site)


def _records_grad(*tensors: torch.Tensor | None) -> bool:
    """Whether autograd records an op on ``tensors`` (training, or a gradient check)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                           for t in tensors)


def _gelu_approximation(activation: nn.Module) -> str | None:
    """``approximate`` of an activation module that is exactly ``F.gelu``, else None."""
    if type(activation) is GELUActivation and getattr(activation, "act", None) is F.gelu:
        return "none"
    if type(activation) is nn.GELU:
        return activation.approximate
    return None


class _FusedGelu(torch.autograd.Function):
    """``h = GELU(pre)`` with ``knowledge`` added to the ``index`` rows; returns (h, h[index]).

    Forward: GELU over the token grid (the backbone's op on the backbone's input), then the
    aligned rows recomputed from ``pre[index] + knowledge`` and written over. Backward:
    the grid's GELU backward, then the aligned rows (their grid gradient plus that of the
    gathered copy) recomputed and written over. Everything beyond the backbone's own work
    is ``[N, I]``.
    """

    @staticmethod
    def forward(ctx: Any, pre: torch.Tensor, knowledge: torch.Tensor, index: torch.Tensor,
                approximate: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (the GELU grid with the aligned rows fused, those rows)."""
        hidden, fused, pre_aligned = _fused_gelu_values(pre, knowledge, index, None,
                                                        approximate)
        ctx.save_for_backward(pre, pre_aligned, index)
        ctx.approximate = approximate
        return hidden, fused

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_hidden: torch.Tensor, grad_fused: torch.Tensor | None,
                 ) -> tuple[torch.Tensor, torch.Tensor, None, None]:
        pre, pre_aligned, index = ctx.saved_tensors
        gelu_backward = torch.ops.aten.gelu_backward
        grad_aligned = grad_hidden.index_select(0, index)
        if grad_fused is not None:
            grad_aligned = grad_aligned + grad_fused
        grad_knowledge = gelu_backward(grad_aligned, pre_aligned, approximate=ctx.approximate)
        grad_pre = gelu_backward(grad_hidden, pre, approximate=ctx.approximate)
        grad_pre.index_copy_(0, index, grad_knowledge)
        return grad_pre, grad_knowledge, None, None


def _fused_gelu_values(pre: torch.Tensor, knowledge: torch.Tensor, index: torch.Tensor,
                       gate: torch.Tensor | None, approximate: str
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(GELU grid with the aligned rows fused, those rows, their pre-activations
    ``pre[index] + knowledge * gate``), computed without autograd."""
    aligned = pre.index_select(0, index)
    aligned = (aligned.add_(knowledge) if gate is None
               else aligned.addcmul_(knowledge, as_dtype(gate, aligned.dtype)))
    fused = F.gelu(aligned, approximate=approximate)
    hidden = F.gelu(pre, approximate=approximate)
    hidden.index_copy_(0, index, fused)
    return hidden, fused, aligned


def _fuse(activation: nn.Module, pre: torch.Tensor, knowledge: torch.Tensor,
          index: torch.Tensor, gate: torch.Tensor | None = None,
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(act(pre + scatter(knowledge * gate)), its rows at index)`` for ``pre``
    ``[T, I]`` (``gate`` ``[N, 1]``, a scalar, or None for 1)."""
    approximate = _gelu_approximation(activation)
    if approximate is not None and not _records_grad(pre, knowledge, gate):
        return _fused_gelu_values(pre, knowledge, index, gate, approximate)[:2]
    if gate is not None:
        knowledge = knowledge * as_dtype(gate, knowledge.dtype)
    if approximate is not None:
        return _FusedGelu.apply(pre, knowledge, index, approximate)
    # Any other activation: autograd's index ops (correct, a few full-size copies slower).
    pre = pre.index_put((index,), knowledge, accumulate=True)
    hidden = activation(pre)
    return hidden, hidden.index_select(0, index)


class ErnieKGEncoder(nn.Module):
    """The T-Encoder ("sim" BERT layers) and the K-Encoder, in ``config.layer_types`` order."""

    def __init__(self, config: ErnieKGConfig) -> None:
        super().__init__()
        self.config = config
        knowledge = config.knowledge_layer_indices
        last = knowledge[-1] if knowledge else -1
        self.layer = nn.ModuleList(
            BertLayer(config, layer_idx=i)
            if kind == "sim"
            else ErnieKGAggregatorLayer(config, layer_idx=i, kind=kind, entity_output=i != last)
            for i, kind in enumerate(config.layer_types)
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        entity_states: torch.Tensor | None = None,
        layout: EntityLayout | None = None,
        output_hidden_states: bool = False,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None, list[torch.Tensor]]:
        """Returns (last hidden state, all hidden states or None, entities fused per layer)."""
        all_hidden = (hidden_states,) if output_hidden_states else None
        fused_per_layer: list[torch.Tensor] = []
        for layer in self.layer:
            if isinstance(layer, ErnieKGAggregatorLayer):
                hidden_states, next_entities, fused = layer(
                    hidden_states, attention_mask, entity_states, layout
                )
                if fused is not None:
                    fused_per_layer.append(fused)
                    entity_states = next_entities
            else:
                hidden_states = layer(hidden_states, attention_mask)
            if all_hidden is not None:
                all_hidden = all_hidden + (hidden_states,)
        return hidden_states, all_hidden, fused_per_layer
