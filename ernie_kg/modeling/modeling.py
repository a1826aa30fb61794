"""The ERNIE fusion encoder: BERT layers whose top layers also carry an entity stream.

Why it is built this way:

* An aggregator layer *is* a :class:`~transformers.models.bert.modeling_bert.BertLayer`
  (subclass) with a few entity modules added. Its token attention, ``W_t`` (the FFN's
  ``intermediate.dense``) and token output projection are the backbone layer's own
  modules, and its parameter names are BERT's, so backbone checkpoints load directly.
  Without entities it runs ``BertLayer.forward`` itself: knowledge off is the backbone,
  bit for bit, whatever the number of aggregator layers.
* Entities are sparse (about a quarter of the tokens), so the entity stream is stored
  only at aligned positions (``[N, entity_dim]``). Entity self-attention runs on a small
  per-sequence packed tensor ``[B, max_entities, entity_dim]``; ``W_e e_k + b_e`` is
  added into the ``[B, L, intermediate]`` pre-activation only at the aligned rows; the
  entity output projection reads only those rows. Masked attention over all L positions
  gives the same result, since non-entity keys get zero weight and non-entity queries are
  discarded by ERNIE's ``ent_mask``.
* For GELU backbones (BERT, MiniLM) the fusion activation is one autograd function
  (:class:`_FusedGelu`) whose backward touches the full ``[B*L, intermediate]`` grid
  only as the backbone's own GELU backward does: autograd's generic index ops would add
  a zero-filled grid, a scatter and a full-size add per layer, a few percent of a step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F
from transformers import AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.activations import GELUActivation
from transformers.masking_utils import create_bidirectional_mask
from transformers.models.bert.modeling_bert import (
    BertEmbeddings,
    BertLayer,
    BertLMPredictionHead,
    BertPooler,
)

from ernie_kg.errors import SavedFileError
from ernie_kg.kg.embeddings import EntityEmbeddings
from ernie_kg.kg.vocab import EntityVocab
from ernie_kg.modeling.configuration import ErnieKGConfig
from ernie_kg.modeling.outputs import ErnieKGModelOutput

#: Written next to the weights by ``save_pretrained``: the KG id of every table row >= 1.
ENTITY_IDS_FILE = "entity_ids.json"


# --------------------------------------------------------------------------- layout
@dataclass
class EntityLayout:
    """Where the entities of a batch sit, computed once per forward pass.

    ``flat_index`` holds the aligned positions in the flattened ``[B * L]`` token grid;
    ``slot_index`` is each entity's rank within its sequence, so ``(batch_index,
    slot_index)`` addresses the packed ``[B, num_slots, dim]`` tensor used by entity
    self-attention. ``key_bias`` is the additive mask hiding padding slots.
    """

    flat_index: torch.Tensor
    batch_index: torch.Tensor
    slot_index: torch.Tensor
    rows: torch.Tensor
    key_bias: torch.Tensor
    batch_size: int
    seq_len: int
    num_slots: int

    @classmethod
    def from_entity_ids(cls, entity_ids: torch.Tensor, dtype: torch.dtype) -> EntityLayout | None:
        """The layout of ``entity_ids`` ``[B, L]`` (0 = no entity); None if nothing is aligned."""
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
        )

    def pack(self, states: torch.Tensor) -> torch.Tensor:
        """``[N, d]`` -> ``[B, num_slots, d]``, zero in the padding slots."""
        packed = states.new_zeros(self.batch_size, self.num_slots, states.shape[-1])
        return packed.index_put((self.batch_index, self.slot_index), states)

    def unpack(self, packed: torch.Tensor) -> torch.Tensor:
        """``[B, num_slots, d]`` -> ``[N, d]`` (the real entities only)."""
        return packed[self.batch_index, self.slot_index]

    def scatter(self, states: torch.Tensor) -> torch.Tensor:
        """``[N, d]`` -> position-aligned ``[B, L, d]``, zero where no entity is aligned."""
        grid = states.new_zeros(self.batch_size * self.seq_len, states.shape[-1])
        grid = grid.index_copy(0, self.flat_index, states)
        return grid.view(self.batch_size, self.seq_len, -1)


# --------------------------------------------------------------------------- entity modules
class ErnieKGEntityAttention(nn.Module):
    """Multi-head self-attention among the entities of each sequence, + residual and LN.

    ERNIE's ``BertSelfAttention`` + ``BertSelfOutput`` at ``hidden_size = entity_dim``; it
    never looks at the tokens (the streams meet only in the feed-forward fusion).
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
        batch, slots = layout.batch_size, layout.num_slots
        qkv = layout.pack(self.qkv(states)).view(batch, slots, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        context = F.scaled_dot_product_attention(
            query,
            key,
            value,
            attn_mask=layout.key_bias.to(query.dtype),
            dropout_p=self.attention_dropout if self.training else 0.0,
        )
        context = layout.unpack(context.transpose(1, 2).reshape(batch, slots, -1))
        return self.LayerNorm(states + self.dropout(self.dense(context)))


class ErnieKGEntityOutput(nn.Module):
    """``e' = LN(e + Dropout(W_oe h + b_oe))``: the entity half of ERNIE's ``BertOutput``."""

    def __init__(self, config: ErnieKGConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.entity_dim)
        self.LayerNorm = nn.LayerNorm(config.entity_dim, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, fused: torch.Tensor, entity_states: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(entity_states + self.dropout(self.dense(fused)))


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
        self.kind = kind
        self.entity_attention = ErnieKGEntityAttention(config) if kind == "norm" else None
        self.entity_intermediate = nn.Linear(config.entity_dim, config.intermediate_size)
        self.entity_output = ErnieKGEntityOutput(config) if entity_output else None

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
        if self.entity_attention is not None:
            entity_states = self.entity_attention(entity_states, layout)
        tokens = attention_output.reshape(-1, attention_output.shape[-1])  # [B*L, H]
        pre_tokens = self.intermediate.dense(tokens)  # W_t w_j + b_t, every token
        knowledge = self.entity_intermediate(entity_states).to(pre_tokens.dtype)  # W_e e_k + b_e
        intermediate, fused = _fuse(self.intermediate.intermediate_act_fn, pre_tokens,
                                    knowledge, layout.flat_index)
        layer_output = self.output(intermediate.view(*attention_output.shape[:-1], -1),
                                   attention_output)
        next_entity_states = None
        if self.entity_output is not None:
            next_entity_states = self.entity_output(fused, entity_states)
        return layer_output, next_entity_states, entity_states


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
    def forward(ctx, pre, knowledge, index, approximate):
        pre_aligned = pre.index_select(0, index) + knowledge
        fused = F.gelu(pre_aligned, approximate=approximate)
        hidden = F.gelu(pre, approximate=approximate)
        hidden.index_copy_(0, index, fused)
        ctx.save_for_backward(pre, pre_aligned, index)
        ctx.approximate = approximate
        return hidden, fused

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_hidden, grad_fused):
        pre, pre_aligned, index = ctx.saved_tensors
        gelu_backward = torch.ops.aten.gelu_backward
        grad_aligned = grad_hidden.index_select(0, index)
        if grad_fused is not None:
            grad_aligned = grad_aligned + grad_fused
        grad_knowledge = gelu_backward(grad_aligned, pre_aligned, approximate=ctx.approximate)
        grad_pre = gelu_backward(grad_hidden, pre, approximate=ctx.approximate)
        grad_pre.index_copy_(0, index, grad_knowledge)
        return grad_pre, grad_knowledge, None, None


def _fuse(activation: nn.Module, pre: torch.Tensor, knowledge: torch.Tensor,
          index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(act(pre + scatter(knowledge)), its rows at index)`` for ``pre`` ``[T, I]``."""
    approximate = _gelu_approximation(activation)
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


# --------------------------------------------------------------------------- base class
class ErnieKGPreTrainedModel(PreTrainedModel):
    """Weight init, backbone loading and entity-table persistence shared by all heads."""

    config_class = ErnieKGConfig
    config: ErnieKGConfig
    base_model_prefix = "ernie"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_attention_backend = True
    _no_split_modules = ["BertEmbeddings", "BertLayer", "ErnieKGAggregatorLayer"]

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, BertLMPredictionHead):
            init.zeros_(module.bias)
        elif isinstance(module, BertEmbeddings):
            positions = torch.arange(module.position_ids.shape[-1]).expand((1, -1))
            init.copy_(module.position_ids, positions)
            init.zeros_(module.token_type_ids)

    # ------------------------------------------------------------- entity table access
    @property
    def entity_ids(self) -> list[str] | None:
        """KG id of every entity-table row >= 1 (row r is ``entity_ids[r - 1]``), if known."""
        vocab = self.base_model.entity_vocab
        return None if vocab is None else vocab.ids

    @property
    def entity_vocab(self) -> EntityVocab | None:
        """The entity table's vocabulary (KG ids <-> rows, 0 = none), if known."""
        return self.base_model._entity_vocab

    @entity_vocab.setter
    def entity_vocab(self, vocab: EntityVocab | None) -> None:
        self.base_model._entity_vocab = vocab

    def entity_row(self, entity_id: str) -> int:
        """Entity-table row of a KG id (index + 1, since row 0 is "no entity")."""
        return self.base_model.entity_row(entity_id)

    # ------------------------------------------------------------- construction
    @classmethod
    def from_backbone(
        cls,
        name_or_path: str | os.PathLike | None = None,
        entity_embeddings: EntityEmbeddings | None = None,
        num_knowledge_layers: int | None = None,
        layer_types: list[str] | None = None,
        **config_overrides: Any,
    ) -> ErnieKGPreTrainedModel:
        """Build the model on a BERT-architecture checkpoint (default: the packaged MiniLM).

        The backbone's weights are copied into every layer (aggregators included); the
        entity modules start fresh, as in ERNIE. ``entity_embeddings`` fills the entity
        table (its size and dim win over ``config_overrides``); without it the table has
        ``num_entities`` random rows (0 by default) besides row 0. Heads take their
        ``num_labels`` / ``id2label`` through ``config_overrides``.
        """
        from ernie_kg.paths import default_backbone

        path = str(name_or_path) if name_or_path is not None else default_backbone()
        backbone, head_state = cls._load_backbone(path)
        if backbone.config.model_type != "bert":
            raise ValueError(
                f"backbone {path!r} has model_type={backbone.config.model_type!r}; ErnieKG "
                "builds on BERT-architecture checkpoints (model_type 'bert')"
            )
        overrides = dict(config_overrides)
        if entity_embeddings is not None:
            overrides.update(num_entities=len(entity_embeddings), entity_dim=entity_embeddings.dim)
        if "id2label" in overrides and "label2id" not in overrides:
            id2label = {int(k): v for k, v in overrides["id2label"].items()}
            overrides.update(id2label=id2label, label2id={v: k for k, v in id2label.items()})
            overrides.setdefault("num_labels", len(id2label))
        config = ErnieKGConfig.from_backbone_config(
            backbone.config,
            num_knowledge_layers=num_knowledge_layers,
            layer_types=layer_types,
            **overrides,
        )
        config._name_or_path = path
        model = cls(config)
        base = model.base_model
        missing, unexpected = base.load_state_dict(backbone.state_dict(), strict=False)
        new_modules = ("entity_attention.", "entity_intermediate.", "entity_output.")
        not_loaded = [k for k in missing if k != "entity_embeddings.weight"
                      and not any(part in k for part in new_modules)]
        if not_loaded or [k for k in unexpected if not k.startswith("pooler.")]:
            raise ValueError(
                f"backbone {path!r} does not fit ErnieKG: missing {not_loaded[:5]}, "
                f"unexpected {unexpected[:5]}"
            )
        if head_state:
            model.load_state_dict(head_state, strict=False)
        if entity_embeddings is not None:
            base.set_entity_embeddings(entity_embeddings)
        return model

    @classmethod
    def _load_backbone(cls, path: str) -> tuple[PreTrainedModel, dict[str, torch.Tensor]]:
        """The backbone encoder, plus head weights this class can reuse (none here)."""
        return AutoModel.from_pretrained(path), {}

    # ------------------------------------------------------------- persistence
    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any):
        """HF ``save_pretrained`` (weights hold the entity table) + ``entity_ids.json``."""
        base = self.base_model
        if base.entity_vocab is not None and not self.config.freeze_entity_table:
            self.config.entity_table_sha256 = base.entity_table_hash()  # it was trained
        result = super().save_pretrained(save_directory, *args, **kwargs)
        if base.entity_vocab is not None and kwargs.get("is_main_process", True):
            base.entity_vocab.save(Path(save_directory) / ENTITY_IDS_FILE)
        return result

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *args, **kwargs):
        """HF ``from_pretrained``; also reads ``entity_ids.json`` and checks the table hash."""
        loaded = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        base = model.base_model
        base.entity_embeddings.weight.requires_grad_(not model.config.freeze_entity_table)
        ids_file = _resolve_entity_ids_file(pretrained_model_name_or_path, kwargs)
        if ids_file is not None:
            base.entity_vocab = EntityVocab.load(ids_file)
            expected = model.config.entity_table_sha256
            # The hash is over float32 vectors: a table cast to half precision cannot match.
            exact = base.entity_embeddings.weight.dtype == torch.float32
            if expected is not None and exact and base.entity_table_hash() != expected:
                raise SavedFileError(
                    ids_file, None,
                    "entity ids and table weights do not match config.entity_table_sha256 "
                    f"({expected[:12]}...): the saved entity table was altered",
                )
        return loaded


def _resolve_entity_ids_file(name_or_path: str | os.PathLike, kwargs: dict) -> str | None:
    local = Path(name_or_path) / ENTITY_IDS_FILE
    if local.is_file():
        return str(local)
    if Path(name_or_path).is_dir():
        return None
    from transformers.utils import cached_file

    hub_kwargs = {k: kwargs[k] for k in ("cache_dir", "revision", "token", "local_files_only")
                  if k in kwargs}
    return cached_file(
        str(name_or_path), ENTITY_IDS_FILE, _raise_exceptions_for_missing_entries=False,
        **hub_kwargs,
    )


# --------------------------------------------------------------------------- base model
class ErnieKGModel(ErnieKGPreTrainedModel):
    """BERT embeddings + the fusion encoder + pooler, with the entity table inside.

    ``entity_ids`` ``[B, L]`` holds entity-table rows (0 = no entity; ERNIE aligns a
    mention to its first wordpiece). ``entity_ids=None`` (or all zeros) is knowledge off:
    the text-only baseline, identical to the backbone.
    """

    def __init__(self, config: ErnieKGConfig, add_pooling_layer: bool = True) -> None:
        super().__init__(config)
        self.embeddings = BertEmbeddings(config)
        self.encoder = ErnieKGEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self.entity_embeddings = nn.Embedding(
            config.num_entities + 1, config.entity_dim, padding_idx=0
        )
        self.entity_embeddings.weight.requires_grad_(not config.freeze_entity_table)
        self._entity_vocab: EntityVocab | None = None  # KG ids of rows 1.. (when known)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.word_embeddings = value

    # ------------------------------------------------------------- entity table
    def set_entity_embeddings(self, embeddings: EntityEmbeddings) -> None:
        """Load a KG table (rows = ``embeddings.row(id)``), replacing the current one."""
        if embeddings.dim != self.config.entity_dim:
            raise ValueError(
                f"entity embeddings have dim {embeddings.dim}, the model expects entity_dim="
                f"{self.config.entity_dim}"
            )
        table = torch.from_numpy(embeddings.padded_table())
        weight = self.entity_embeddings.weight
        if table.shape != weight.shape:
            self.entity_embeddings = nn.Embedding(len(table), table.shape[1], padding_idx=0)
            weight = self.entity_embeddings.weight
        with torch.no_grad():
            weight.copy_(table.to(weight.dtype))
        weight.requires_grad_(not self.config.freeze_entity_table)
        self.config.num_entities = len(embeddings)
        self.config.entity_table_sha256 = embeddings.content_hash()
        self.entity_vocab = embeddings.vocab

    def entity_row(self, entity_id: str) -> int:
        """The table row of ``entity_id``; an id outside the table raises UnknownIdError."""
        if self.entity_vocab is None:
            raise ValueError("this model's entity table has no KG ids (built without embeddings)")
        return self.entity_vocab.strict_row(entity_id)

    def entity_table_hash(self) -> str:
        """:meth:`EntityEmbeddings.content_hash` of the table as it is now."""
        vectors = self.entity_embeddings.weight.detach()[1:].float().cpu().numpy()
        vocab = self.entity_vocab or EntityVocab()
        return EntityEmbeddings(vocab, np.asarray(vectors)).content_hash()

    def entity_layout(self, entity_ids: torch.Tensor | None, input_shape: torch.Size,
                      dtype: torch.dtype) -> EntityLayout | None:
        """Validate ``entity_ids`` and locate its entities; None means knowledge off."""
        if entity_ids is None or not self.config.knowledge_layer_indices:
            return None
        if entity_ids.shape != input_shape:
            raise ValueError(
                f"entity_ids has shape {tuple(entity_ids.shape)}, expected the input_ids "
                f"shape {tuple(input_shape)}"
            )
        if entity_ids.numel() and (
            int(entity_ids.min()) < 0 or int(entity_ids.max()) > self.config.num_entities
        ):
            raise ValueError(
                f"entity_ids must be entity-table rows in [0, num_entities="
                f"{self.config.num_entities}], got values in [{int(entity_ids.min())}, "
                f"{int(entity_ids.max())}]"
            )
        return EntityLayout.from_entity_ids(entity_ids, dtype)

    # ------------------------------------------------------------- forward
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        entity_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> ErnieKGModelOutput | tuple:
        """Encode a batch; see the class docstring for ``entity_ids``."""
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        if return_dict is None:
            return_dict = self.config.return_dict
        embedding_output = self.embeddings(
            input_ids=input_ids, token_type_ids=token_type_ids, position_ids=position_ids
        )
        mask = create_bidirectional_mask(
            config=self.config, inputs_embeds=embedding_output, attention_mask=attention_mask
        )
        if self.training and self.config.entity_dropout and entity_ids is not None:
            kept = torch.rand(entity_ids.shape, device=entity_ids.device)
            entity_ids = entity_ids * (kept >= self.config.entity_dropout)
        layout = self.entity_layout(entity_ids, input_ids.shape, embedding_output.dtype)
        entity_states = None
        if layout is not None:
            entity_states = self.entity_embeddings(layout.rows).to(embedding_output.dtype)
        sequence_output, all_hidden, fused = self.encoder(
            embedding_output, mask, entity_states, layout, output_hidden_states
        )
        pooled = self.pooler(sequence_output) if self.pooler is not None else None
        entity_last = layout.scatter(fused[-1]) if fused else None
        entity_all = None
        if output_hidden_states and fused:
            entity_all = tuple(layout.scatter(states) for states in fused)
        output = ErnieKGModelOutput(
            last_hidden_state=sequence_output,
            pooler_output=pooled,
            hidden_states=all_hidden,
            entity_last_hidden_state=entity_last,
            entity_hidden_states=entity_all,
        )
        return output if return_dict else output.to_tuple()
