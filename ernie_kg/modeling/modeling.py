"""The ERNIE-KG base model: the shared ``PreTrainedModel`` base and :class:`ErnieKGModel`.

The base class owns what every head shares: weight init, building on a BERT backbone
(:meth:`ErnieKGPreTrainedModel.from_backbone`) and saving / loading the entity table
with its KG ids. :class:`ErnieKGModel` is BERT's embeddings and pooler around the fusion
encoder of :mod:`ernie_kg.modeling.layers`, with the entity table inside: a frozen table
read from a saved :class:`~ernie_kg.kg.EntityEmbeddings` directory stays memory-mapped and
is referred to by checkpoints, not copied (:mod:`ernie_kg.modeling.entity_table`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.masking_utils import create_bidirectional_mask
from transformers.models.bert.modeling_bert import (
    BertEmbeddings,
    BertLMPredictionHead,
    BertPooler,
)

from ernie_kg.errors import ErnieKGError, SavedFileError
from ernie_kg.kg.embeddings import EntityEmbeddings
from ernie_kg.kg.vocab import EntityVocab
from ernie_kg.modeling.configuration import ErnieKGConfig
from ernie_kg.modeling.entity_layout import EntityLayout
from ernie_kg.modeling.entity_modules import KNOWLEDGE_PARAMETERS, ErnieKGEntityGate
from ernie_kg.modeling.entity_table import (
    DELTA_FILE,
    TABLE_DIR,
    MappedEntityTable,
    apply_delta,
    find_table,
    restore_trained_table,
    save_delta,
    table_copy,
    table_reference,
)
from ernie_kg.modeling.layers import ErnieKGEncoder
from ernie_kg.modeling.outputs import ErnieKGModelOutput
from ernie_kg.modeling.random_streams import drop_entities

#: Written next to the weights by ``save_pretrained``: the KG id of every table row >= 1.
ENTITY_IDS_FILE = "entity_ids.json"


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
    # a table saved by reference (config.entity_table) is not in the weights
    _keys_to_ignore_on_load_missing = [r"entity_embeddings\.weight"]

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, BertLMPredictionHead):
            init.zeros_(module.bias)
        elif isinstance(module, ErnieKGEntityGate):
            init.zeros_(module.scale)  # closed: the untrained model is the backbone
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
        from ernie_kg.hub import check_backbone
        from ernie_kg.paths import default_backbone

        path = str(name_or_path) if name_or_path is not None else default_backbone()
        check_backbone(path)
        try:
            backbone, head_state = cls._load_backbone(path)
        except OSError as problem:  # missing files, or the hub failed midway
            raise ErnieKGError(f"backbone {path!r} could not be loaded: {problem}") from None
        if backbone.config.model_type != "bert":
            raise ValueError(
                f"backbone {path!r} has model_type={backbone.config.model_type!r}; ErnieKG "
                "builds on BERT-architecture checkpoints (model_type 'bert')"
            )
        overrides = dict(config_overrides)
        if entity_embeddings is not None:  # a frozen table is mapped, not allocated here
            frozen = overrides.get("freeze_entity_table", True)
            overrides.update(num_entities=0 if frozen else len(entity_embeddings),
                             entity_dim=entity_embeddings.dim)
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
        not_loaded = [k for k in missing if k != "entity_embeddings.weight"
                      and not any(part in k for part in KNOWLEDGE_PARAMETERS)]
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
    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any,
                        include_entity_table: bool = False,
                        keep_entities: Iterable[str] | None = None, **kwargs: Any):
        """HF ``save_pretrained``. A table read from a saved directory is referred to
        (path + hash in ``config.entity_table``; trained rows that changed go to
        :data:`DELTA_FILE`); ``include_entity_table=True`` (or a table built in memory)
        writes a copy into :data:`TABLE_DIR`, only the rows of ``keep_entities`` when
        given. A model whose table has no KG ids keeps it in the weights, as before."""
        base = self.base_model
        source = base._entity_source
        if base.entity_vocab is None or source is None:
            if base.entity_vocab is not None and not self.config.freeze_entity_table:
                self.config.entity_table_sha256 = base.entity_table_hash()  # it was trained
            result = super().save_pretrained(save_directory, *args, **kwargs)
            if base.entity_vocab is not None and kwargs.get("is_main_process", True):
                base.entity_vocab.save(Path(save_directory) / ENTITY_IDS_FILE)
            return result
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        mapped = isinstance(base.entity_embeddings, MappedEntityTable)
        main = kwargs.get("is_main_process", True)
        delta = None
        if include_entity_table or source.directory is None:
            table = source if mapped else EntityEmbeddings(
                base.entity_vocab,
                base.entity_embeddings.weight.detach()[1:].float().cpu().numpy())
            source = table_copy(table, directory / TABLE_DIR, keep_entities) if main else table
        elif not mapped:  # trained: only the rows that moved
            delta = DELTA_FILE
            if main:
                save_delta(base.entity_embeddings.weight, source, directory / DELTA_FILE)
        if main and source.directory is not None:
            self.config.entity_table = {**table_reference(source, directory), "delta": delta}
            self.config.entity_table_sha256 = source.content_hash()
        state = kwargs.get("state_dict")  # Trainer passes its own: the table leaves it too
        kwargs["state_dict"] = {k: v for k, v in (state if state is not None else
                                                  self.state_dict()).items()
                                if not k.endswith("entity_embeddings.weight")}
        result = super().save_pretrained(directory, *args, **kwargs)
        if main:
            (directory / ENTITY_IDS_FILE).unlink(missing_ok=True)  # an earlier save's
            if delta is None:
                (directory / DELTA_FILE).unlink(missing_ok=True)
        return result

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *args,
                        entity_embeddings: EntityEmbeddings | str | os.PathLike | None = None,
                        **kwargs):
        """HF ``from_pretrained``; then finds the entity table (``config.entity_table``:
        ``entity_embeddings=`` a table or its directory, else the saved reference), or
        reads ``entity_ids.json`` and checks the hash of a table saved in the weights."""
        loaded = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        base = model.base_model
        reference = model.config.entity_table
        if reference is not None:
            checkpoint = Path(pretrained_model_name_or_path)
            table = find_table(reference, checkpoint if checkpoint.is_dir() else None,
                               entity_embeddings)
            base.attach_entity_table(table, checkpoint / reference["delta"]
                                     if reference.get("delta") else None)
            return loaded
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

    def restore_entity_table(self, checkpoint: str | os.PathLike) -> None:
        """After a trainer loaded ``checkpoint``'s weights, which hold no trainable table
        saved by reference: put that checkpoint's table back (its changed rows, or its
        copy), as its own config.json says; this model may never have saved (a resumed
        run, a DDP rank other than 0). A frozen table never changes: nothing to do."""
        restore_trained_table(self.base_model, Path(checkpoint))


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
    the text-only baseline, identical to the backbone. ``entity_links`` ``[B, L]`` (or
    None: all 0) is 1 where the KG links the token's entity to another entity of the
    text, read by the gate with ``config.knowledge_links``. Unlike the paper, whose fusion adds
    every entity at full strength, new models gate it (``config.knowledge_gate``,
    :class:`ErnieKGEntityGate`): closed at the start, so the untrained model is its
    backbone even with entities, and opened by training only where they lower the loss.
    """

    def __init__(self, config: ErnieKGConfig, add_pooling_layer: bool = True) -> None:
        super().__init__(config)
        self.embeddings = BertEmbeddings(config)
        self.encoder = ErnieKGEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self.entity_embeddings: nn.Module
        if config.entity_table is not None and config.freeze_entity_table:
            self.entity_embeddings = MappedEntityTable(None, config.entity_dim)  # filled on load
        else:
            self.entity_embeddings = nn.Embedding(
                config.num_entities + 1, config.entity_dim, padding_idx=0)
            self.entity_embeddings.weight.requires_grad_(not config.freeze_entity_table)
        self._entity_vocab: EntityVocab | None = None  # KG ids of rows 1.. (when known)
        self._entity_source: EntityEmbeddings | None = None  # the table the rows came from
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        """The word embeddings (Hugging Face's hook)."""
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        """Replace the word embeddings (Hugging Face's hook)."""
        self.embeddings.word_embeddings = value

    # ------------------------------------------------------------- entity table
    def set_entity_embeddings(self, embeddings: EntityEmbeddings) -> None:
        """Use a KG table (rows = ``embeddings.row(id)``), replacing the current one: a
        frozen table is looked up where it is (memory-mapped when loaded so), a
        trainable one is copied into a parameter."""
        self.attach_entity_table(embeddings)
        self.config.entity_table_sha256 = embeddings.content_hash()

    def attach_entity_table(self, embeddings: EntityEmbeddings, delta: Path | None = None,
                            ) -> None:
        """:meth:`set_entity_embeddings` without a new hash; ``delta``: a trained
        table's changed rows (:func:`~ernie_kg.modeling.entity_table.apply_delta`)."""
        if embeddings.dim != self.config.entity_dim:
            raise ValueError(
                f"entity embeddings have dim {embeddings.dim}, the model expects entity_dim="
                f"{self.config.entity_dim}"
            )
        old = self.entity_embeddings
        device = old.vectors.device if isinstance(old, MappedEntityTable) else old.weight.device
        device = torch.device("cpu") if device.type == "meta" else device  # HF's placeholder
        if self.config.freeze_entity_table and delta is None:
            self.entity_embeddings = MappedEntityTable(embeddings, embeddings.dim).to(device)
        else:
            table = (apply_delta(embeddings, delta) if delta is not None
                     else torch.from_numpy(embeddings.padded_table()))
            weight = getattr(self.entity_embeddings, "weight", None)
            if weight is None or table.shape != weight.shape:
                self.entity_embeddings = nn.Embedding(len(table), table.shape[1], padding_idx=0,
                                                      device=device)
                weight = self.entity_embeddings.weight
            with torch.no_grad():
                weight.copy_(table.to(weight.dtype))
            weight.requires_grad_(not self.config.freeze_entity_table)
        self.config.num_entities = len(embeddings)
        self._entity_source = embeddings
        self.entity_vocab = embeddings.vocab

    def entity_row(self, entity_id: str) -> int:
        """The table row of ``entity_id``; an id outside the table raises UnknownIdError."""
        if self.entity_vocab is None:
            raise ValueError("this model's entity table has no KG ids (built without embeddings)")
        return self.entity_vocab.strict_row(entity_id)

    def entity_table_hash(self) -> str:
        """:meth:`EntityEmbeddings.content_hash` of the table as it is now."""
        if isinstance(self.entity_embeddings, MappedEntityTable):
            return self.entity_embeddings.embeddings.content_hash()
        vectors = self.entity_embeddings.weight.detach()[1:].float().cpu().numpy()
        vocab = self.entity_vocab or EntityVocab()
        return EntityEmbeddings(vocab, np.asarray(vectors)).content_hash()

    def entity_layout(self, entity_ids: torch.Tensor | None, input_shape: torch.Size,
                      dtype: torch.dtype, entity_links: torch.Tensor | None = None
                      ) -> EntityLayout | None:
        """Validate ``entity_ids`` (and ``entity_links``) and locate the entities; None
        means knowledge off."""
        if entity_ids is None or not self.config.knowledge_layer_indices:
            return None
        for name, value in (("entity_ids", entity_ids), ("entity_links", entity_links)):
            if value is not None and value.shape != input_shape:
                raise ValueError(f"{name} has shape {tuple(value.shape)}, expected the "
                                 f"input_ids shape {tuple(input_shape)}")
        if entity_ids.numel() and not torch.compiler.is_compiling():
            # one pass and one host sync (a GPU stalls at each); a compiled graph skips it
            low, high = torch.stack(torch.aminmax(entity_ids)).tolist()
            if low < 0 or high > self.config.num_entities:
                raise ValueError(
                    f"entity_ids must be entity-table rows in [0, num_entities="
                    f"{self.config.num_entities}], got values in [{low}, {high}]"
                )
        return EntityLayout.from_entity_ids(entity_ids, dtype, entity_links)

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
        entity_links: torch.Tensor | None = None,
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
            entity_ids = drop_entities(entity_ids, self.config.entity_dropout)
        layout = self.entity_layout(entity_ids, input_ids.shape, embedding_output.dtype,
                                    entity_links)
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
