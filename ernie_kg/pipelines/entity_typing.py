"""Entity typing end to end: a multi-label typer that reads raw text, built and trained.

Why its own module: typing differs from relation classification in its labels (a set of
types per mention, sigmoid + threshold, FIGER/OpenEntity metrics) and in its one marked
span; the model, processor, linker, KG and storage are shared
(:class:`~ernie_kg.pipelines.base.SavedTextModel`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ernie_kg.data.examples import TypingExample
from ernie_kg.data.features import FeatureDataset, LabelMap, typing_features
from ernie_kg.kg.embeddings import EntityEmbeddings
from ernie_kg.kg.graph import KnowledgeGraph
from ernie_kg.linking.aliases import AliasTable
from ernie_kg.pipelines.base import SavedTextModel, SpanLike, find_span
from ernie_kg.training.evaluation import predict_logits
from ernie_kg.training.finetuning import typing_compute_metrics
from ernie_kg.training.metrics import typing_metrics

__all__ = ["TYPING_SELECTION_METRIC", "EntityTyper", "build_entity_typer", "evaluate_typing",
           "train_entity_typer"]

#: The model-selection metric of typing runs (ERNIE reports it for FIGER and OpenEntity).
TYPING_SELECTION_METRIC = "loose_micro_f1"


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))


class EntityTyper(SavedTextModel):
    """Raw text and a mention in, the mention's types out (multi-label).

    ``model`` is an :class:`~ernie_kg.modeling.ErnieKGForEntityTyping` whose
    ``config.id2label`` names the types; a type is predicted when its probability
    exceeds ``config.typing_threshold``. See :class:`SavedTextModel` for the rest.
    """

    _format = "ernie_kg.entity_typer"
    _task = "entity_typing"
    # the mention's first wordpiece (where its entity is fused)
    model_defaults = {"typing_classifier": "entity_start", "typing_threshold": 0.5}
    selection_metric = TYPING_SELECTION_METRIC

    @classmethod
    def _model_class(cls) -> type:
        from ernie_kg.modeling import ErnieKGForEntityTyping

        return ErnieKGForEntityTyping

    @property
    def threshold(self) -> float:
        """A type is predicted when its probability exceeds this."""
        return float(self.model.config.typing_threshold)

    # ------------------------------------------------------------------ inference
    def predict(self, text: str, mention: SpanLike) -> list[tuple[str, float]]:
        """``[(type, probability), ...]`` above the threshold, most probable first.

        ``mention`` is a string (its first occurrence) or a char span ``(s, e)``.
        """
        probabilities = self.predict_proba(text, mention)
        return [(t, p) for t, p in probabilities.items() if p > self.threshold]

    def predict_proba(self, text: str, mention: SpanLike) -> dict[str, float]:
        """Every type's probability, most probable first."""
        if not isinstance(text, str):
            raise TypeError(f"expected text as a str, got {type(text).__name__}")
        example = TypingExample(text, find_span(text, mention, "mention"))
        probabilities = self.probabilities([example])[0]
        order = np.argsort(-probabilities)
        labels = self.label_map.labels
        return {labels[i]: float(probabilities[i]) for i in order}

    def probabilities(self, examples: Sequence[TypingExample],
                      batch_size: int = 64) -> np.ndarray:
        """``[N, num_types]`` probabilities."""
        features = typing_features(examples, self.processor, entities=self.entities)
        return _sigmoid(predict_logits(self.model, features, batch_size))

    # ------------------------------------------------------------------ task hooks
    def features(self, examples: Sequence[TypingExample], entities: str | None = None,
                 progress: bool = False) -> FeatureDataset:
        """Labelled features (multi-hot rows over the model's types)."""
        return typing_features(examples, self.processor, self.label_map,
                               entities or self.entities, progress=progress)

    def score(self, features: FeatureDataset, batch_size: int = 64) -> dict[str, Any]:
        """Strict accuracy, loose macro-F1, loose micro-F1 and per-type F1."""
        return evaluate_typing(self.model, features, self.label_map, batch_size)

    def _compute_metrics(self) -> Callable:
        return typing_compute_metrics(self.threshold)

    def _dev_metrics(self, dev: Sequence[TypingExample], features: FeatureDataset,
                     entities: str) -> dict[str, Any]:
        """Dev scored the way inference runs (the typer's own entities)."""
        return self.evaluate(dev)


def evaluate_typing(model: Any, features: FeatureDataset, label_map: LabelMap,
                    batch_size: int = 64) -> dict[str, Any]:
    """:func:`~ernie_kg.training.metrics.typing_metrics` of ``model`` on ``features``,
    plus each type's F1 and the example count."""
    probabilities = _sigmoid(predict_logits(model, features, batch_size))
    predicted = probabilities > float(model.config.typing_threshold)
    gold = np.asarray([f["labels"] for f in features], dtype=np.float64) > 0.5
    metrics: dict[str, Any] = typing_metrics(gold, predicted)
    per_type = {}
    for k, label in enumerate(label_map.labels):
        hits = float((gold[:, k] & predicted[:, k]).sum())
        denominator = float(gold[:, k].sum() + predicted[:, k].sum())
        per_type[label] = 2 * hits / denominator if denominator else 0.0
    metrics["per_label_f1"] = per_type
    metrics["num_examples"] = len(features)
    return metrics


def build_entity_typer(
    types: LabelMap | Sequence[str], kg: KnowledgeGraph, embeddings: EntityEmbeddings,
    aliases: AliasTable | None = None, *, threshold: float = 0.5, **settings: Any,
) -> EntityTyper:
    """A fresh typer: backbone + entity table + linker over ``kg`` and ``aliases``
    (:meth:`SavedTextModel.build`: ``knowledge``, ``backbone``, ``seed``, ``max_length``,
    ``num_knowledge_layers``, ``linker_config`` and model settings such as
    ``typing_classifier`` and ``entity_dropout``); ``threshold`` is the typing threshold.
    """
    return EntityTyper.build(types, kg, embeddings, aliases, typing_threshold=threshold,
                             **settings)


def train_entity_typer(
    typer: EntityTyper, train: Sequence[TypingExample], dev: Sequence[TypingExample] | None,
    output_dir: str | os.PathLike, **settings: Any,
) -> dict[str, Any]:
    """Fine-tune ``typer`` in place (best dev loose micro-F1 kept), save it to
    ``output_dir/model`` and return its dev metrics, scored the way inference runs
    (:meth:`SavedTextModel.fit`)."""
    return typer.fit(train, dev, output_dir, **settings)
