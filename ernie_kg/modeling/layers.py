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
  :data:`DENSE_ATTENTION_MAX_ENTITIES`; beyond, on a per-sequence packed tensor
  ``[B, max_entities, entity_dim]``, whose scores grow with B, not N squared);
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
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F
from transformers.activations import GELUActivation
from transformers.models.bert.modeling_bert import BertLayer

from ernie_kg.modeling.configuration import ErnieKGConfig
from ernie_kg.modeling.entity_layout import EntityLayout
from ernie_kg.modeling.random_streams import entity_random_stream

#: Entity self-attention runs over all N entities of a batch (scores ``[heads, N, N]``)
#: up to this N; beyond, per sequence on the packed slots, whose scores grow with the
#: batch instead of N squared (1024: 16 MB of scores at 4 heads).
DENSE_ATTENTION_MAX_ENTITIES = 1024

__all__ = [
    "DENSE_ATTENTION_MAX_ENTITIES",
    "ErnieKGAggregatorLayer",
    "ErnieKGEncoder",
    "ErnieKGEntityAttention",
    "ErnieKGEntityGate",
    "ErnieKGEntityOutput",
    "shut_knowledge_gates",
]


# --------------------------------------------------------------------------- entity modules
class ErnieKGEntityAttention(nn.Module):
    """Multi-head self-attention among the entities of each sequence, + residual and LN.

    ERNIE's ``BertSelfAttention`` + ``BertSelfOutput`` at ``hidden_size = entity_dim``; it
    never looks at the tokens (the streams meet only in the feed-forward fusion). It runs
    as batched matmuls over all N entities of the batch, the sequence bias
    (:meth:`EntityLayout.sequence_bias`, built once per forward pass) keeping each entity
    within its sequence: the q/k/v split is three views, with no packing or unpacking.
    Each op saved here is paid for in every knowledge layer: on an Intel Xeon an op run
    between the token stream's large products costs several times its arithmetic
    (``benchmarks/small_op_cost.py``). Past :data:`DENSE_ATTENTION_MAX_ENTITIES` it
    attends on per-sequence packed slots instead (without dropout as batched matmuls:
    ``scaled_dot_product_attention``'s CPU kernel costs about three times as much at such
    sizes, 130 us against 42 us for 16 sequences of 6 slots, AMD EPYC).
    """

    def __init__(self, config: ErnieKGConfig) -> None:
        super().__init__()
        dim = config.entity_dim
        self.num_heads = config.entity_attention_heads
        self.head_dim = dim // self.num_heads
        self.qkv = nn.Linear(dim, 3 * dim)  # query, key, value in one matmul
        self.dense = nn.Linear(dim, dim)
        self.LayerNorm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.attention_dropout = config.attention_probs_dropout_prob

    def forward(self, states: torch.Tensor, layout: EntityLayout) -> torch.Tensor:
        """Entity states ``[N, entity_dim]`` after attending to their sequence's entities."""
        count = states.shape[0]
        dropout = self.attention_dropout if self.training else 0.0
        if count > DENSE_ATTENTION_MAX_ENTITIES:
            context = self._attend_packed(self.qkv(states), layout, dropout)
        else:  # [N, 3 * dim] -> three [heads, N, head_dim] views
            query, key, value = self.qkv(states).view(
                count, 3, self.num_heads, self.head_dim).permute(1, 2, 0, 3).unbind(0)
            scores = torch.baddbmm(layout.sequence_bias(query.dtype), query,
                                   key.transpose(1, 2), alpha=self.head_dim ** -0.5)
            probs = scores.softmax(-1)
            if dropout:
                probs = F.dropout(probs, dropout)
            context = torch.bmm(probs, value).transpose(0, 1).reshape(count, -1)
        return self.LayerNorm(states + _dropout(self.dropout, self.dense(context)))

    def _attend_packed(self, qkv: torch.Tensor, layout: EntityLayout,
                       dropout: float) -> torch.Tensor:
        """Attention on the per-sequence packed slots: ``[N, 3 * dim]`` -> ``[N, dim]``."""
        query, key, value = layout.pack_heads(qkv, 3, self.num_heads).unbind(0)
        if dropout:
            bias = layout.key_bias.to(query.dtype)  # [B, 1, 1, slots]
            context = F.scaled_dot_product_attention(query, key, value, attn_mask=bias,
                                                     dropout_p=dropout)
        else:
            context = self._attend(query, key, value, layout)
        return layout.unpack_heads(context)

    def _attend(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                layout: EntityLayout) -> torch.Tensor:
        """``softmax(q k^T / sqrt(d) + key_bias) v`` without dropout, as batched matmuls
        (``query``, ``key``, ``value`` contiguous ``[B, heads, slots, d]``)."""
        batch, heads, slots, head_dim = query.shape
        flat = (batch * heads, slots, head_dim)
        scores = torch.baddbmm(layout.attention_bias(heads, query.dtype), query.view(flat),
                               key.view(flat).transpose(1, 2), alpha=head_dim ** -0.5)
        return torch.bmm(scores.softmax(-1), value.view(flat)).view(query.shape)


class ErnieKGEntityOutput(nn.Module):
    """``e' = LN(e + Dropout(W_oe h + b_oe))``: the entity half of ERNIE's ``BertOutput``."""

    def __init__(self, config: ErnieKGConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.entity_dim)
        self.LayerNorm = nn.LayerNorm(config.entity_dim, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, fused: torch.Tensor, entity_states: torch.Tensor) -> torch.Tensor:
        """The fused rows ``[N, intermediate]`` projected into the next entity states."""
        return self.LayerNorm(entity_states + _dropout(self.dropout, self.dense(fused)))


#: Name fragments of the parameters that start fresh in ERNIE-KG (the entity stream).
KNOWLEDGE_PARAMETERS = ("entity_attention.", "entity_intermediate.", "entity_output.",
                        "entity_gate.")
#: Name fragment of the knowledge gates' openings (:attr:`ErnieKGEntityGate.scale`).
GATE_PARAMETERS = ("entity_gate.scale",)


def shut_knowledge_gates(model: nn.Module) -> int:
    """Close every knowledge gate of ``model`` (opening 0), keeping all other weights;
    returns how many were closed.

    Why: a gate's opening is how far *this task* trusts the entities. A model pre-trained
    with dEA has opened its gates for predicting entities from a KG that holds every
    fact; fine-tuned on a task as it is, it starts with that trust, and where the task's
    KG lacks the test facts (the open setting) it is worse than its backbone (FewRel-16,
    results/pretrain_dea.md). Closed, the fine-tuned model again starts at its
    (post-trained) backbone's outputs and opens the gates only as far as the task's
    entities help, now onto pre-trained entity modules.
    """
    scales = [p for n, p in model.named_parameters() if any(g in n for g in GATE_PARAMETERS)]
    with torch.no_grad():
        for scale in scales:
            scale.zero_()
    return len(scales)


def knowledge_role(name: str) -> str | None:
    """"gate" (a gate's opening), "knowledge" (another fresh entity-stream parameter) or
    None (the backbone's, or a head's), from a parameter's name: the optimizers' groups."""
    if any(part in name for part in GATE_PARAMETERS):
        return "gate"
    return "knowledge" if any(part in name for part in KNOWLEDGE_PARAMETERS) else None


class ErnieKGEntityGate(nn.Module):
    """How much of ``W_e e_k + b_e`` reaches token j: ``tanh(a) * 2 sigmoid(w [h_j; e_k] + b)``
    ("token") or ``tanh(a)`` ("layer"), with ``a = 0`` at the start.

    Why: ERNIE adds every linked entity at full strength from the first step, through
    fresh weights, so a model that has not yet learned what the entities mean is worse
    than its backbone, and an entity the linker got wrong can never be ignored. With the
    gate at zero the untrained fused model *is* the backbone (the token stream never
    sees an entity), training opens it only as far as entities lower the loss, and the
    per-token factor (1 at the start) lets the model close it for a token whose context
    says the entity does not fit. Flamingo's tanh-gated cross-attention does the same.
    With ``config.knowledge_links`` the per-token factor also reads whether the KG has a
    fact between the token's entity and another entity of the text: what separates a
    pair whose fact the KG holds (every training pair, when the KG was built from the
    training data) from one it does not (an open-KG test pair), which embeddings alone
    do not tell the model.
    """

    def __init__(self, config: ErnieKGConfig) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(()))
        self.trust = None
        self.reads_links = bool(config.knowledge_links)
        if config.knowledge_gate == "token":
            inputs = config.hidden_size + config.entity_dim + int(self.reads_links)
            self.trust = nn.Linear(inputs, 1)

    def forward(self, tokens: torch.Tensor, entities: torch.Tensor,
                links: torch.Tensor | None = None) -> torch.Tensor:
        """The factor on each aligned token's ``W_e e_k + b_e``: ``[N, 1]`` ("token") or a
        scalar ("layer"). ``tokens`` ``[N, H]`` are the aligned tokens' attention outputs,
        ``entities`` ``[N, entity_dim]`` their entities, ``links`` ``[N, 1]`` their
        ``entity_links`` (:meth:`EntityLayout.link_column`), read with
        ``config.knowledge_links``; None reads as 0, no fact with the text's other
        entities."""
        gate = torch.tanh(self.scale)
        if self.trust is None:
            return _cast(gate, tokens.dtype)
        parts = [tokens, _cast(entities, tokens.dtype)]
        if self.reads_links:
            parts.append(tokens.new_zeros(len(tokens), 1) if links is None
                         else _cast(links, tokens.dtype))
        trust = self.trust(torch.cat(parts, dim=-1))
        return torch.sigmoid(trust) * (2 * gate)


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
        entity_stream = self._entity_stream(hidden_states.device)
        if self.entity_attention is not None:
            with entity_stream(0):
                entity_states = self.entity_attention(entity_states, layout)
        tokens = attention_output.reshape(-1, attention_output.shape[-1])  # [B*L, H]
        pre_tokens = self.intermediate.dense(tokens)  # W_t w_j + b_t, every token
        knowledge = _cast(self.entity_intermediate(entity_states), pre_tokens.dtype)
        gate = None  # W_e e_k + b_e at full strength
        if self.entity_gate is not None:
            links = (layout.link_column(tokens.dtype) if self.entity_gate.reads_links
                     else None)
            gate = self.entity_gate(tokens.index_select(0, layout.flat_index),
                                    entity_states, links)
        intermediate, fused = _fuse(self.intermediate.intermediate_act_fn, pre_tokens,
                                    knowledge, layout.flat_index, gate)
        layer_output = self.output(intermediate.view(*attention_output.shape[:-1], -1),
                                   attention_output)
        next_entity_states = None
        if self.entity_output is not None:
            with entity_stream(1):
                next_entity_states = self.entity_output(fused, entity_states)
        return layer_output, next_entity_states, entity_states

    def _entity_stream(self, device: torch.device) -> Any:
        """The entity modules' random numbers (:mod:`.random_streams`): while training, a
        stream of their own per layer and call site, so the token stream's dropout masks
        are the text-only backbone's; nothing to draw otherwise."""
        layer = self.layer_idx or 0
        if not self.training:
            return lambda site: nullcontext()
        return lambda site: entity_random_stream(device, salt=2 * layer + site)


def _cast(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``tensor`` in ``dtype``, without dispatching an op when it already is."""
    return tensor if tensor.dtype == dtype else tensor.to(dtype)


def _dropout(dropout: nn.Module, tensor: torch.Tensor) -> torch.Tensor:
    """``dropout(tensor)`` while training; in eval (where it is the identity) no call."""
    return dropout(tensor) if dropout.training else tensor


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
               else aligned.addcmul_(knowledge, _cast(gate, aligned.dtype)))
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
        knowledge = knowledge * _cast(gate, knowledge.dtype)
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
