"""The entity stream's own modules in a knowledge layer: entity self-attention, the
entity output and the knowledge gate, and the names of their parameters (the
optimizers' groups). :mod:`.layers` puts them into BERT layers; why each op counts is
said there.
"""

from __future__ import annotations

import torch
from torch import nn

from ernie_kg.modeling.configuration import ErnieKGConfig
from ernie_kg.modeling.entity_layout import EntityLayout
from ernie_kg.modeling.random_streams import entity_dropout

__all__ = [
    "DENSE_ATTENTION_MAX_ENTITIES",
    "GATE_PARAMETERS",
    "KNOWLEDGE_PARAMETERS",
    "ErnieKGEntityAttention",
    "ErnieKGEntityGate",
    "ErnieKGEntityOutput",
    "as_dtype",
    "kernel_ready",
    "knowledge_role",
    "shut_knowledge_gates",
]

#: Entity self-attention runs over all N entities of a batch (scores ``[heads, N, N]``)
#: up to this N; beyond, per sequence on the packed slots, whose scores grow with the
#: batch instead of N squared (1024: 16 MB of scores at 4 heads).
DENSE_ATTENTION_MAX_ENTITIES = 1024


def as_dtype(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``tensor`` in ``dtype``, without dispatching an op when it already is."""
    return tensor if tensor.dtype == dtype else tensor.to(dtype)


def kernel_ready(*modules: nn.Module, dtype: torch.dtype) -> bool:
    """Whether ``modules`` are exactly ``nn.Linear`` / affine ``nn.LayerNorm`` with
    ``dtype`` weights, what the native kernels read (a quantized or adapter-wrapped
    linear runs its own forward, through the ATen path)."""
    for module in modules:
        if type(module) not in (nn.Linear, nn.LayerNorm) or module.weight is None:
            return False
        if module.weight.dtype != dtype or module.bias is None:
            return False
    return True


def _dropout(dropout: nn.Dropout, tensor: torch.Tensor,
             generator: torch.Generator | None) -> torch.Tensor:
    """``dropout(tensor)`` drawn from ``generator`` while training; in eval (where it is
    the identity) no call."""
    return entity_dropout(tensor, dropout.p, generator) if dropout.training else tensor


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
    attends on per-sequence packed slots instead, also as batched matmuls
    (``scaled_dot_product_attention``'s CPU kernel costs about three times as much at such
    sizes, 130 us against 42 us for 16 sequences of 6 slots, AMD EPYC, and its dropout
    would draw from the global generator, :mod:`.random_streams`). Where the layout
    carries the native kernels (a CPU pass, :mod:`.native`), the whole module is one call
    that attends within each sequence's entities directly, at any N.
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

    def forward(self, states: torch.Tensor, layout: EntityLayout,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Entity states ``[N, entity_dim]`` after attending to their sequence's entities
        (dropout, while training, drawn from ``generator``)."""
        count = states.shape[0]
        dropout = self.attention_dropout if self.training else 0.0
        if layout.kernels is not None and kernel_ready(self.qkv, self.dense, self.LayerNorm,
                                                 dtype=states.dtype):
            return layout.kernels.entity_attention(  # one native call, any N (.native)
                states, self.qkv.weight, self.qkv.bias, self.dense.weight, self.dense.bias,
                self.LayerNorm.weight, self.LayerNorm.bias, layout.batch_index,
                self.num_heads, self.LayerNorm.eps, dropout,
                self.dropout.p if self.training else 0.0, generator)
        if count > DENSE_ATTENTION_MAX_ENTITIES:
            context = self._attend_packed(self.qkv(states), layout, dropout, generator)
        else:  # [N, 3 * dim] -> three [heads, N, head_dim] views
            query, key, value = self.qkv(states).view(
                count, 3, self.num_heads, self.head_dim).permute(1, 2, 0, 3).unbind(0)
            scores = torch.baddbmm(layout.sequence_bias(query.dtype), query,
                                   key.transpose(1, 2), alpha=self.head_dim ** -0.5)
            probs = entity_dropout(scores.softmax(-1), dropout, generator)
            context = torch.bmm(probs, value).transpose(0, 1).reshape(count, -1)
        return self.LayerNorm(states + _dropout(self.dropout, self.dense(context), generator))

    def _attend_packed(self, qkv: torch.Tensor, layout: EntityLayout, dropout: float,
                       generator: torch.Generator | None) -> torch.Tensor:
        """Attention on the per-sequence packed slots: ``[N, 3 * dim]`` -> ``[N, dim]``."""
        query, key, value = layout.pack_heads(qkv, 3, self.num_heads).unbind(0)
        return layout.unpack_heads(self._attend(query, key, value, layout, dropout, generator))

    def _attend(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                layout: EntityLayout, dropout: float = 0.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """``softmax(q k^T / sqrt(d) + key_bias) v``, dropout on the probabilities, as
        batched matmuls (``query``, ``key``, ``value`` contiguous ``[B, heads, slots, d]``)."""
        batch, heads, slots, head_dim = query.shape
        flat = (batch * heads, slots, head_dim)
        scores = torch.baddbmm(layout.attention_bias(heads, query.dtype), query.view(flat),
                               key.view(flat).transpose(1, 2), alpha=head_dim ** -0.5)
        probs = entity_dropout(scores.softmax(-1), dropout, generator)
        return torch.bmm(probs, value.view(flat)).view(query.shape)


class ErnieKGEntityOutput(nn.Module):
    """``e' = LN(e + Dropout(W_oe h + b_oe))``: the entity half of ERNIE's ``BertOutput``."""

    def __init__(self, config: ErnieKGConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.entity_dim)
        self.LayerNorm = nn.LayerNorm(config.entity_dim, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, fused: torch.Tensor, entity_states: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """The fused rows ``[N, intermediate]`` projected into the next entity states
        (dropout, while training, drawn from ``generator``)."""
        return self.LayerNorm(entity_states + _dropout(self.dropout, self.dense(fused),
                                                       generator))

    def kernel_arguments(self, dtype: torch.dtype) -> tuple | None:
        """Its weights and dropout for the native fused rows (:mod:`.native`), or None
        where its modules are not plain ones of ``dtype`` (quantized, adapted)."""
        if not kernel_ready(self.dense, self.LayerNorm, dtype=dtype):
            return None
        return (self.dense.weight, self.dense.bias, self.LayerNorm.weight, self.LayerNorm.bias,
                self.LayerNorm.eps, self.dropout.p if self.training else 0.0)


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
            return as_dtype(gate, tokens.dtype)
        parts = [tokens, as_dtype(entities, tokens.dtype)]
        if self.reads_links:
            parts.append(tokens.new_zeros(len(tokens), 1) if links is None
                         else as_dtype(links, tokens.dtype))
        trust = self.trust(torch.cat(parts, dim=-1))
        return torch.sigmoid(trust) * (2 * gate)

    def kernel_inputs(self, tokens: torch.Tensor, entities: torch.Tensor,
                      links: torch.Tensor | None) -> tuple | None:
        """The gate's part of the native fused rows' arguments (:mod:`.native`: links,
        trust weight and bias, opening; None for what it does not read), or None where its
        trust is not a plain linear of the tokens' dtype (quantized)."""
        if self.trust is None:
            return None, None, None, self.scale
        if not kernel_ready(self.trust, dtype=tokens.dtype) or entities.dtype != tokens.dtype:
            return None
        return links, self.trust.weight, self.trust.bias, self.scale
