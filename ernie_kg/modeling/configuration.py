"""Configuration of the ERNIE-KG fusion encoder: a BERT config plus the knowledge layout."""

from __future__ import annotations

from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import BertConfig

from ernie_kg.errors import SettingError

#: Layer kinds, named as in the released ERNIE code (``code/knowledge_bert/modeling.py``):
#: "sim" is a plain BERT layer, "mix" fuses entities without entity self-attention (it
#: starts the entity stream), "norm" is a full K-Encoder aggregator.
LAYER_TYPES = ("sim", "mix", "norm")
#: What a sentence-level head classifies: pooled [CLS], start markers, or mention starts.
CLASSIFIER_INPUTS = ("cls", "markers", "entity_start")
#: How much of an entity's ``W_e e_k + b_e`` reaches its token (see ErnieKGEntityGate):
#: "none" all of it (the paper), "layer" a learned scale per layer starting at zero,
#: "token" that scale times a learned per-token trust in the entity.
KNOWLEDGE_GATES = ("none", "layer", "token")
#: The gate new models get (``from_backbone``), chosen on FewRel-16 dev over 3 seeds
#: (results/fewrel16_gate_dev.md); a config without the key means the paper's "none".
DEFAULT_KNOWLEDGE_GATE = "token"

#: Keys of a backbone config that describe the checkpoint or its old task, not the encoder.
_BACKBONE_ONLY_KEYS = ("model_type", "architectures", "_name_or_path", "transformers_version",
                       "id2label", "label2id", "num_labels", "problem_type")


def default_layer_types(num_hidden_layers: int, num_knowledge_layers: int) -> list[str]:
    """The paper's layout: the last M layers are full aggregators ("norm").

    The layer just before them becomes a "mix" layer that starts the entity stream, as in
    the released ERNIE: M=6 on a 12-layer BERT-base gives ``sim*5 + mix + norm*6``. When
    M equals the depth there is no room for it and every layer is "norm"; M=0 is the
    plain backbone.
    """
    if not 0 <= num_knowledge_layers <= num_hidden_layers:
        raise SettingError(
            f"num_knowledge_layers={num_knowledge_layers} must lie in [0, num_hidden_layers="
            f"{num_hidden_layers}]"
        )
    if num_knowledge_layers == 0:
        return ["sim"] * num_hidden_layers
    num_plain = num_hidden_layers - num_knowledge_layers
    if num_plain == 0:
        return ["norm"] * num_hidden_layers
    return ["sim"] * (num_plain - 1) + ["mix"] + ["norm"] * num_knowledge_layers


@strict
class ErnieKGConfig(BertConfig):
    r"""A :class:`~transformers.BertConfig` plus the fields of the knowledge stream.

    Args:
        num_knowledge_layers: M, the number of full aggregator (K-Encoder) layers at the
            top; ``None`` means half the depth (ERNIE's 6 of 12). Ignored when
            ``layer_types`` is given, and then set to the number of "norm" layers.
        layer_types: one of "sim" / "mix" / "norm" per backbone layer; derived from
            ``num_knowledge_layers`` by :func:`default_layer_types` when ``None``.
        entity_dim: size of the entity vectors (100: TransE as in ERNIE).
        entity_attention_heads: heads of the entity self-attention (4 in ERNIE).
        num_entities: rows of the entity table without the "no entity" row 0.
        freeze_entity_table: keep the KG vectors fixed while training (ERNIE does).
        rc_classifier: relation classification over the pooled "[CLS]" state (``"cls"``,
            the paper), over the concatenated head/tail start-marker states
            (``"markers"``) or over the states of each mention's first wordpiece, where
            its entity is fused (``"entity_start"``).
        typing_classifier: the same choice for entity typing (one mention marker).
        typing_threshold: probability above which an entity type is predicted.
        entity_dropout: share of the aligned entities dropped at random in training mode,
            so the model also learns from the text of mentions whose entity it will not
            have at inference (unlinked, or outside the KG); 0 (default) keeps all.
        entity_table_sha256: :meth:`EntityEmbeddings.content_hash` of the table, checked
            when a saved model is loaded.
        entity_table: where a saved model's table lives when it is not in the weights
            (path, hash, size; see :mod:`ernie_kg.modeling.entity_table`); set on save.
        knowledge_gate: one of :data:`KNOWLEDGE_GATES`. "layer" and "token" start at
            zero, so an untrained fused model computes exactly the backbone's outputs and
            the entity path grows only as far as training finds it useful. The class
            default is the paper's "none" (configs saved before the gate existed mean
            that); ``from_backbone`` builds new models with the recipe's gate.
        knowledge_links: the "token" gate also reads ``entity_links`` (1 where the KG has
            a fact between the token's entity and another entity of the text), so the
            model can learn to trust the entities of pairs the KG knows and to distrust
            the others, instead of one trust for both.
    """

    model_type = "ernie_kg"

    num_knowledge_layers: int | None = None
    layer_types: list[str] | None = None
    entity_dim: int = 100
    entity_attention_heads: int = 4
    num_entities: int = 0
    freeze_entity_table: bool = True
    rc_classifier: str = "cls"
    typing_classifier: str = "cls"
    typing_threshold: float = 0.5
    entity_dropout: float = 0.0
    entity_table_sha256: str | None = None
    entity_table: dict | None = None
    knowledge_gate: str = "none"
    knowledge_links: bool = False

    def __post_init__(self, **kwargs: Any) -> None:
        if self.layer_types is None:
            if self.num_knowledge_layers is None:
                self.num_knowledge_layers = self.num_hidden_layers // 2
            self.layer_types = default_layer_types(
                self.num_hidden_layers, self.num_knowledge_layers
            )
        else:
            self.layer_types = list(self.layer_types)
            self.num_knowledge_layers = self.layer_types.count("norm")
        super().__post_init__(**kwargs)

    # Validators run by ``@strict``; HF's own ``validate_layer_type`` would reject our kinds.
    def validate_layer_type(self) -> None:
        """Check ``layer_types``: one known kind per hidden layer."""
        if len(self.layer_types) != self.num_hidden_layers:
            raise SettingError(
                f"layer_types has {len(self.layer_types)} entries, expected num_hidden_layers="
                f"{self.num_hidden_layers}"
            )
        unknown = sorted(set(self.layer_types) - set(LAYER_TYPES))
        if unknown:
            raise SettingError(f"layer_types: unknown kinds {unknown}; allowed {list(LAYER_TYPES)}")

    def validate_knowledge_fields(self) -> None:
        """Check the entity fields, the classifier inputs and ``entity_dropout``."""
        if self.entity_dim % self.entity_attention_heads:
            raise SettingError(
                f"entity_dim={self.entity_dim} is not a multiple of entity_attention_heads="
                f"{self.entity_attention_heads}"
            )
        if self.num_entities < 0:
            raise SettingError(f"num_entities={self.num_entities} must be >= 0")
        for field, value in (("rc_classifier", self.rc_classifier),
                             ("typing_classifier", self.typing_classifier)):
            if value not in CLASSIFIER_INPUTS:
                raise SettingError(f"{field}={value!r}: expected one of {list(CLASSIFIER_INPUTS)}")
        if self.knowledge_gate not in KNOWLEDGE_GATES:
            raise SettingError(f"knowledge_gate={self.knowledge_gate!r}: expected one of "
                               f"{list(KNOWLEDGE_GATES)}")
        if self.knowledge_links and self.knowledge_gate != "token":
            raise SettingError(f"knowledge_links=True needs knowledge_gate='token' (the gate "
                               f"that reads it), got {self.knowledge_gate!r}")
        if not 0.0 <= self.entity_dropout < 1.0:
            raise SettingError(f"entity_dropout={self.entity_dropout} must lie in [0, 1)")
        if not 0.0 < self.typing_threshold < 1.0:
            raise SettingError(f"typing_threshold={self.typing_threshold} must lie in (0, 1)")

    @property
    def knowledge_layer_indices(self) -> list[int]:
        """Indices of the layers that read the entity stream ("mix" or "norm")."""
        return [i for i, kind in enumerate(self.layer_types) if kind != "sim"]

    @classmethod
    def from_backbone_config(cls, backbone: BertConfig, **overrides: Any) -> ErnieKGConfig:
        """This config with every BERT field copied from ``backbone``; a new model gets
        :data:`DEFAULT_KNOWLEDGE_GATE` unless ``overrides`` name another."""
        values = backbone.to_dict()
        for key in _BACKBONE_ONLY_KEYS:
            values.pop(key, None)
        values["knowledge_gate"] = DEFAULT_KNOWLEDGE_GATE
        values.update(overrides)
        return cls(**values)
