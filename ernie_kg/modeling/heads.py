"""Task heads: thin subclasses over :class:`ErnieKGModel`, as in Hugging Face models.

Sequence (and sentence-pair) classification reads the pooled [CLS] state, as
``BertForSequenceClassification`` does; relation classification is the same head over
marked text, with the option to read marker states instead. Marker tokens (the paper's
[HD]/[TL] around head and tail, [ENT] around a typed mention) are inserted by the
feature builder; a head only needs their positions when it classifies from marker
states (``config.rc_classifier`` / ``typing_classifier`` = ``"markers"``) instead of the
pooled [CLS] state (the paper).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from transformers import BertConfig, BertForPreTraining, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.models.bert.modeling_bert import BertPreTrainingHeads
from transformers.utils import logging as hf_logging

from ernie_kg.modeling.configuration import ErnieKGConfig
from ernie_kg.modeling.mlm_head import init_mlm_head, mlm_head_missing
from ernie_kg.modeling.modeling import ErnieKGModel, ErnieKGPreTrainedModel
from ernie_kg.modeling.outputs import ErnieKGClassifierOutput, ErnieKGPreTrainingOutput


class _ErnieKGClassifierHead(ErnieKGPreTrainedModel):
    """Shared body of the sentence-level heads: features, dropout, one linear layer."""

    #: The config field choosing the classifier input; None: always the pooled [CLS].
    _classifier_field: str | None = "rc_classifier"
    _num_markers = 2

    def __init__(self, config: ErnieKGConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        field = self._classifier_field
        choice = "cls" if field is None else getattr(config, field)
        self.use_markers = choice in ("markers", "entity_start")
        # "entity_start" reads the first wordpiece after each start marker: the mention's
        # first wordpiece, where its entity is fused (the marker only sees it by attention)
        self._offset = 1 if choice == "entity_start" else 0
        # The pooler is only built when read: the marker classifier ignores [CLS].
        self.ernie = ErnieKGModel(config, add_pooling_layer=not self.use_markers)
        dropout = config.classifier_dropout
        self.dropout = nn.Dropout(config.hidden_dropout_prob if dropout is None else dropout)
        width = config.hidden_size * (self._num_markers if self.use_markers else 1)
        self.classifier = nn.Linear(width, config.num_labels)
        self.post_init()

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _features(self, sequence_output: torch.Tensor, pooled: torch.Tensor | None,
                  marker_positions: torch.Tensor | None) -> torch.Tensor:
        if not self.use_markers:
            return pooled
        batch, _, hidden = sequence_output.shape
        expected = (batch, self._num_markers)
        if marker_positions is None or tuple(marker_positions.shape) != expected:
            got = None if marker_positions is None else tuple(marker_positions.shape)
            raise ValueError(
                f"{self._classifier_field}={getattr(self.config, self._classifier_field)!r}"
                f" needs marker_positions of shape "
                f"{expected}, got {got}"
            )
        index = (marker_positions.long() + self._offset)[:, :, None].expand(-1, -1, hidden)
        return sequence_output.gather(1, index).reshape(batch, self._num_markers * hidden)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        entity_ids: torch.Tensor | None = None,
        marker_positions: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        entity_links: torch.Tensor | None = None,
    ) -> ErnieKGClassifierOutput | tuple:
        """``logits`` ``[B, num_labels]``; ``loss`` when ``labels`` are given."""
        if return_dict is None:
            return_dict = self.config.return_dict
        outputs = self.ernie(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            entity_ids=entity_ids,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            entity_links=entity_links,
        )
        features = self._features(outputs.last_hidden_state, outputs.pooler_output,
                                  marker_positions)
        logits = self.classifier(self.dropout(features))
        result = ErnieKGClassifierOutput(
            loss=self._loss(logits, labels) if labels is not None else None,
            logits=logits,
            hidden_states=outputs.hidden_states,
            entity_hidden_states=outputs.entity_hidden_states,
        )
        return result if return_dict else result.to_tuple()


class ErnieKGForSequenceClassification(_ErnieKGClassifierHead):
    """A text or a text pair -> classes, from the pooled [CLS] state (dropout + linear),
    as ``BertForSequenceClassification``; with no entities it is exactly that model.

    ``labels`` follow BERT's ``config.problem_type`` (set from the first labels when
    None): one label is regression (MSE), class ids ``[B]`` single-label cross-entropy,
    float rows ``[B, C]`` multi-label BCE. The Auto class of ``ernie_kg`` configs: a saved
    subclass head (a relation classifier) loads as the class it was saved from.
    """

    _classifier_field = None
    _num_markers = 0

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *args,
                        **kwargs):
        """HF ``from_pretrained``; a checkpoint whose ``config.architectures`` names a
        subclass of this class (e.g. a saved relation classifier, whose marker readout
        this head lacks) is loaded as that subclass, so the Auto class keeps loading it."""
        config = kwargs.get("config")
        if not isinstance(config, ErnieKGConfig):
            hub = {k: kwargs[k] for k in _HUB_KWARGS if k in kwargs}
            config = ErnieKGConfig.from_pretrained(pretrained_model_name_or_path, **hub)
        saved = _subclass_named(cls, (config.architectures or [None])[0])
        if saved is not None:
            return saved.from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        config = self.config
        if config.problem_type is None:  # as BERT decides it
            if self.num_labels == 1:
                config.problem_type = "regression"
            elif labels.dtype in (torch.long, torch.int):
                config.problem_type = "single_label_classification"
            else:
                config.problem_type = "multi_label_classification"
        if config.problem_type == "regression":
            labels = labels.to(logits.dtype)
            if self.num_labels == 1:
                return F.mse_loss(logits.squeeze(), labels.squeeze())
            return F.mse_loss(logits, labels)
        if config.problem_type == "single_label_classification":
            return F.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1).long())
        return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


#: Config keys that name an ERNIE-KG checkpoint, not a BERT one (left out by ``to_bert``).
_NOT_BERT_KEYS = ("model_type", "architectures", "auto_map", "transformers_version")

#: ``from_pretrained`` keywords that say where (and how) to read a config.
_HUB_KWARGS = ("cache_dir", "revision", "token", "local_files_only", "subfolder",
               "force_download", "proxies")


def _subclass_named(cls: type, name: str | None) -> type | None:
    """The strict subclass of ``cls`` called ``name`` (None when there is none)."""
    pending = list(cls.__subclasses__())
    while pending:
        sub = pending.pop()
        if sub.__name__ == name:
            return sub
        pending.extend(sub.__subclasses__())
    return None


class ErnieKGForRelationClassification(ErnieKGForSequenceClassification):
    """Relation classification: pooled [CLS] (ERNIE) or the head/tail start-marker states
    concatenated (``rc_classifier="markers"``, ``marker_positions`` ``[B, 2]``); ``labels``
    ``[B]`` class ids, cross-entropy. A sequence classifier over marked text, so the
    Auto class loads a saved one as this class."""

    _classifier_field = "rc_classifier"
    _num_markers = 2

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1).long())


class ErnieKGForEntityTyping(_ErnieKGClassifierHead):
    """Entity typing: multi-label, ``labels`` ``[B, C]`` multi-hot floats, BCE with logits.

    Classifies pooled [CLS] (ERNIE) or the mention start-marker state
    (``typing_classifier="markers"``, ``marker_positions`` ``[B, 1]``); a type is predicted
    when its probability exceeds ``config.typing_threshold`` (:meth:`predict`).
    """

    _classifier_field = "typing_classifier"
    _num_markers = 1

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        """Boolean ``[B, C]`` decisions: sigmoid(logit) > ``config.typing_threshold``."""
        return torch.sigmoid(logits) > self.config.typing_threshold


class _EntityLayerNorm(nn.LayerNorm):
    """The dEA head's LayerNorm (a class of its own for its initial gain)."""


class ErnieKGEntityPredictionHead(nn.Module):
    """dEA transform (ERNIE's ``BertEntPredictionHead``): token state -> entity space.

    Its LayerNorm gain starts at ``1/sqrt(entity_dim)`` (unit-norm outputs), so a logit
    is about one entity-vector component, not ``sqrt(entity_dim)`` of them: with gain 1
    and the TransE table of experiments/pretrain_dea.py (norm 10) the first dEA loss was
    25 against ln(candidates) = 4.4, and its gradients as large.
    """

    def __init__(self, config: ErnieKGConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.entity_dim)
        self.transform_act_fn = ACT2FN[config.hidden_act]
        self.LayerNorm = _EntityLayerNorm(config.entity_dim, eps=config.layer_norm_eps)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """Token states ``[..., hidden]`` -> entity space ``[..., entity_dim]``."""
        return self.LayerNorm(self.transform_act_fn(self.dense(states)))


class ErnieKGForPreTraining(ErnieKGPreTrainedModel):
    """Masked LM + next-sentence prediction + denoising entity auto-encoder (dEA).

    ``labels`` ``[B, L]`` (MLM, -100 ignored), ``next_sentence_label`` ``[B]`` and
    ``entity_labels`` ``[B, L]`` (the original entity row of each aligned token, -100 or
    0 ignored; see :func:`ernie_kg.data.dea_noise`). dEA scores each labelled token
    against the entities present in the batch (ERNIE's code; the paper uses the
    sequence's), through the entity table itself; ``entity_candidates`` (rows) adds to
    that set, so a batch split over processes can score against the whole global
    batch's entities. The total loss is the unweighted sum.

    With ``labels``, ``prediction_logits`` holds only the labelled positions (``[M, V]``,
    row-major), as dEA's ``entity_logits`` does: projecting every token onto the
    vocabulary and softmaxing it would cost about as much as the encoder (30k x hidden per
    token, ~85% of them thrown away by the ignore index); the loss is the same.
    """

    _tied_weights_keys = {
        "cls.predictions.decoder.weight": "ernie.embeddings.word_embeddings.weight",
        "cls.predictions.decoder.bias": "cls.predictions.bias",
    }

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, _EntityLayerNorm):  # instead of the generic LayerNorm init
            init.constant_(module.weight, module.weight.shape[0] ** -0.5)
            init.zeros_(module.bias)
        else:
            super()._init_weights(module)

    def __init__(self, config: ErnieKGConfig) -> None:
        super().__init__(config)
        self.ernie = ErnieKGModel(config)
        self.cls = BertPreTrainingHeads(config)
        self.entity_predictions = ErnieKGEntityPredictionHead(config)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        """The MLM decoder (tied to the word embeddings)."""
        return self.cls.predictions.decoder

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        """Replace the MLM decoder and its bias."""
        self.cls.predictions.decoder = new_embeddings
        self.cls.predictions.bias = new_embeddings.bias

    def to_bert(self) -> BertForPreTraining:
        """This model as a plain ``BertForPreTraining`` with the very same weights (MLM
        and NSP heads included; the entity table and the dEA head left out), so a model
        without knowledge layers (domain post-training) saves as a backbone every BERT
        loader and :meth:`from_backbone` read, and post-training can be continued."""
        if self.config.knowledge_layer_indices:
            raise ValueError(f"this model has knowledge layers ({self.config.layer_types}): "
                             "only a model without any is a plain BERT")
        values = {k: v for k, v in self.config.to_dict().items()
                  if k not in ErnieKGConfig.__annotations__ and k not in _NOT_BERT_KEYS}
        bert = BertForPreTraining(BertConfig(**values))
        prefix = self.base_model_prefix + "."
        state = {("bert." + k[len(prefix):] if k.startswith(prefix) else k): v
                 for k, v in self.state_dict().items()
                 if not k.startswith((prefix + "entity_embeddings.", "entity_predictions."))}
        bert.load_state_dict(state, strict=True)
        return bert.to(self.dtype)

    @classmethod
    def _load_backbone(cls, path: str) -> tuple[PreTrainedModel, dict[str, Any]]:
        """Reuse the checkpoint's MLM/NSP heads when it has them (BERT-base does); start
        a missing MLM head as the identity path (:mod:`ernie_kg.modeling.mlm_head`)."""
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # MiniLM has no heads: silence "newly initialized"
        try:
            full, info = BertForPreTraining.from_pretrained(path, output_loading_info=True)
        finally:
            hf_logging.set_verbosity(verbosity)
        missing = set(info["missing_keys"])
        if mlm_head_missing(missing):
            init_mlm_head(full.cls.predictions)
            missing = {k for k in missing if not k.startswith("cls.predictions.")}
        heads = {f"cls.{k}": v for k, v in full.cls.state_dict().items()
                 if f"cls.{k}" not in missing and not k.startswith("predictions.decoder")}
        return full.bert, heads

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        entity_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        next_sentence_label: torch.Tensor | None = None,
        entity_labels: torch.Tensor | None = None,
        entity_candidates: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> ErnieKGPreTrainingOutput | tuple:
        """MLM, NSP and dEA logits; each loss when its labels are given (see the class)."""
        if return_dict is None:
            return_dict = self.config.return_dict
        outputs = self.ernie(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            entity_ids=entity_ids,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        sequence_output = outputs.last_hidden_state
        nsp_logits = self.cls.seq_relationship(outputs.pooler_output)
        mlm_loss = nsp_loss = None
        if labels is not None:  # the vocabulary projection only where a loss is taken
            labelled = labels != -100
            prediction_logits = self.cls.predictions(sequence_output[labelled])
            mlm_loss = F.cross_entropy(prediction_logits, labels[labelled])
        else:
            prediction_logits = self.cls.predictions(sequence_output)
        if next_sentence_label is not None:
            nsp_loss = F.cross_entropy(nsp_logits.view(-1, 2), next_sentence_label.view(-1))
        entity_logits, candidates, dea_loss = self._dea(sequence_output, entity_ids,
                                                        entity_labels, entity_candidates)
        losses = [x for x in (mlm_loss, nsp_loss, dea_loss) if x is not None]
        result = ErnieKGPreTrainingOutput(
            loss=sum(losses[1:], losses[0]) if losses else None,
            prediction_logits=prediction_logits,
            seq_relationship_logits=nsp_logits,
            entity_logits=entity_logits,
            entity_candidates=candidates,
            mlm_loss=mlm_loss,
            nsp_loss=nsp_loss,
            dea_loss=dea_loss,
            hidden_states=outputs.hidden_states,
            entity_hidden_states=outputs.entity_hidden_states,
        )
        return result if return_dict else result.to_tuple()

    def _dea(
        self,
        sequence_output: torch.Tensor,
        entity_ids: torch.Tensor | None,
        entity_labels: torch.Tensor | None,
        entity_candidates: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """(logits [P, K], candidate rows [K], loss) of the dEA task, or Nones."""
        present = [t[t > 0] for t in (entity_labels, entity_ids, entity_candidates)
                   if t is not None]
        if not present:
            return None, None, None
        candidates = torch.unique(torch.cat(present))
        if candidates.numel() == 0:
            return None, None, None
        if int(candidates[-1]) > self.config.num_entities:
            raise ValueError(
                f"entity_labels/entity_ids hold row {int(candidates[-1])}, beyond "
                f"num_entities={self.config.num_entities}"
            )
        positions = (entity_labels if entity_labels is not None else entity_ids) > 0
        if not bool(positions.any()):
            return None, candidates, None
        states = self.entity_predictions(sequence_output[positions])
        logits = states @ self.ernie.entity_embeddings(candidates).to(states.dtype).T
        loss = None
        if entity_labels is not None:
            targets = torch.searchsorted(candidates, entity_labels[positions])
            loss = F.cross_entropy(logits, targets)
        return logits, candidates, loss
