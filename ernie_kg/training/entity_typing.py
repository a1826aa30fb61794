"""Entity typing end to end: a multi-label typer that reads raw text, built and trained.

Why its own module: typing differs from relation classification in its labels (a set of
types per mention, sigmoid + threshold, FIGER/OpenEntity metrics) and in its one marked
span; the model, processor, linker, KG and storage are shared
(:class:`~ernie_kg.training.classifier.SavedTextModel`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ernie_kg.data.examples import TypingExample
from ernie_kg.data.features import FeatureDataset, LabelMap, check_entity_source, typing_features
from ernie_kg.kg.embeddings import EntityEmbeddings
from ernie_kg.kg.graph import KnowledgeGraph
from ernie_kg.linking.aliases import AliasTable
from ernie_kg.training.classifier import SavedTextModel, SpanLike, find_span
from ernie_kg.training.evaluation import predict_logits
from ernie_kg.training.finetune import finetune, typing_compute_metrics
from ernie_kg.training.metrics import typing_metrics

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

    @classmethod
    def _model_class(cls) -> type:
        from ernie_kg.modeling import ErnieKGForEntityTyping

        return ErnieKGForEntityTyping

    @property
    def threshold(self) -> float:
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

    # ------------------------------------------------------------------ evaluation
    def features(self, examples: Sequence[TypingExample], entities: str | None = None,
                 progress: bool = False) -> FeatureDataset:
        """Labelled features (multi-hot rows over the model's types)."""
        return typing_features(examples, self.processor, self.label_map,
                               entities or self.entities, progress=progress)

    def evaluate(self, examples: Sequence[TypingExample], entities: str | None = None,
                 batch_size: int = 64, progress: bool = False) -> dict[str, Any]:
        """Strict accuracy, loose macro-F1, loose micro-F1 and per-type F1."""
        features = self.features(examples, entities, progress)
        return evaluate_typing(self.model, features, self.label_map, batch_size)


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
    types: LabelMap | Sequence[str],
    kg: KnowledgeGraph,
    embeddings: EntityEmbeddings,
    aliases: AliasTable | None = None,
    *,
    knowledge: bool = True,
    backbone: str | None = None,
    seed: int = 0,
    max_length: int = 128,
    typing_classifier: str = "entity_start",  # the mention's first wordpiece (its entity)
    num_knowledge_layers: int | None = None,
    threshold: float = 0.5,
    entity_dropout: float = 0.0,
    linker_config: dict[str, Any] | None = None,
) -> EntityTyper:
    """A fresh typer: backbone + entity table + linker over ``kg`` and ``aliases``.

    ``knowledge=False`` builds the same model but feeds it no entities (the baseline);
    ``entity_dropout`` drops that share of the entities while training (see
    :class:`~ernie_kg.modeling.ErnieKGConfig`).
    """
    return EntityTyper.build(
        types, kg, embeddings, aliases, knowledge=knowledge, backbone=backbone, seed=seed,
        max_length=max_length, num_knowledge_layers=num_knowledge_layers,
        linker_config=linker_config, typing_classifier=typing_classifier,
        typing_threshold=threshold, entity_dropout=entity_dropout,
    )


def train_entity_typer(
    typer: EntityTyper,
    train: Sequence[TypingExample],
    dev: Sequence[TypingExample] | None,
    output_dir: str | Path,
    *,
    train_entities: str = "both",
    log_path: str | Path | None = None,
    progress: bool = True,
    **settings: Any,
) -> dict[str, Any]:
    """Fine-tune ``typer`` in place (best dev loose micro-F1 kept), save it to
    ``output_dir/model`` and return its dev metrics; ``settings`` go to
    :func:`~ernie_kg.training.finetune.finetune`. Dev is scored the way inference runs
    (the typer's own entities: linker only, or none for the baseline)."""
    output_dir = Path(output_dir)
    entities = "none" if typer.entities == "none" else check_entity_source(train_entities)
    started = time.perf_counter()
    train_features = typer.features(train, entities, progress)
    dev_features = typer.features(dev, entities, progress) if dev else None
    settings.setdefault("metric_for_best_model", TYPING_SELECTION_METRIC)
    result = finetune(
        typer.model, train_features, dev_features, output_dir=output_dir / "checkpoints",
        compute_metrics=typing_compute_metrics(typer.threshold), log_path=log_path,
        progress=progress, **settings,
    )
    typer.model = result.model
    typer.model.eval()
    metrics: dict[str, Any] = {
        "train_examples": len(train_features),
        "train_entities": entities,
        "train_entities_per_example": train_features.entity_coverage(),
        "train_seconds": result.seconds,
        "train_samples_per_second": result.metrics.get("train_samples_per_second"),
    }
    if dev:
        metrics.update(typer.evaluate(dev))
    typer.save(output_dir / "model")
    metrics["seconds"] = time.perf_counter() - started
    return metrics
