"""``ModelOutput`` dataclasses returned by the ERNIE-KG models.

Entity states are position-aligned ``[B, L, entity_dim]`` (zero where no entity is
aligned), like ERNIE's entity stream: ``entity_hidden_states[i]`` is what the i-th
knowledge layer fuses into its tokens, and ``entity_last_hidden_state`` the last of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput


@dataclass
class ErnieKGModelOutput(ModelOutput):
    """Output of :class:`ErnieKGModel`; entity fields are None when knowledge is off."""

    last_hidden_state: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    entity_last_hidden_state: torch.Tensor | None = None
    entity_hidden_states: tuple[torch.Tensor, ...] | None = None


@dataclass
class ErnieKGClassifierOutput(ModelOutput):
    """Text (pair) or relation classification (``logits`` ``[B, C]``, cross-entropy; see
    ErnieKGForSequenceClassification for regression) or entity typing (``logits``
    ``[B, C]``, multi-label BCE); states only with ``output_hidden_states``."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    entity_hidden_states: tuple[torch.Tensor, ...] | None = None


@dataclass
class ErnieKGPreTrainingOutput(ModelOutput):
    """MLM + NSP + dEA. ``prediction_logits`` is ``[B, L, V]``, or ``[M, V]`` for the M
    labelled positions (``labels != -100``, row-major) when ``labels`` were given.
    ``entity_logits`` ``[P, K]`` scores the P dEA positions (those with an
    ``entity_labels`` row, else the aligned tokens) against the K batch entities whose
    table rows are ``entity_candidates``."""

    loss: torch.Tensor | None = None
    prediction_logits: torch.Tensor | None = None
    seq_relationship_logits: torch.Tensor | None = None
    entity_logits: torch.Tensor | None = None
    entity_candidates: torch.Tensor | None = None
    mlm_loss: torch.Tensor | None = None
    nsp_loss: torch.Tensor | None = None
    dea_loss: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    entity_hidden_states: tuple[torch.Tensor, ...] | None = None
