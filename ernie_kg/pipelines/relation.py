"""Relation classification from raw text: :class:`RelationClassifier`, built and trained.

Why here: the CLI (``ernie-kg finetune``), the experiments and the demo all run the same
recipe; keeping it in one place means they cannot drift apart. ERNIE-KG and the
text-only baseline are the same model; the baseline simply gets no entity inputs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ernie_kg.data.examples import RelationExample
from ernie_kg.data.features import FeatureDataset, LabelMap
from ernie_kg.kg.embeddings import EntityEmbeddings
from ernie_kg.kg.graph import KnowledgeGraph
from ernie_kg.linking.aliases import AliasTable
from ernie_kg.pipelines.base import SingleLabelTextModel, SpanLike, find_span

__all__ = ["DEFAULT_MODEL_SETTINGS", "RelationClassifier", "build_relation_classifier",
           "predict", "train_relation_classifier"]

#: Model defaults for relation classification on the packaged MiniLM (the model's other
#: defaults, e.g. half the backbone's layers as knowledge layers, are ErnieKGConfig's).
DEFAULT_MODEL_SETTINGS: dict[str, Any] = {
    # the states of the head's and tail's first wordpieces, where their entities are fused
    # ("markers": the start-marker states, which see the entities only through attention;
    # FewRel-16 closed KG, seed 0, dev macro-F1 after one epoch: 96.9 vs 87.1; "cls" is the
    # paper's)
    "rc_classifier": "entity_start",
}


class RelationClassifier(SingleLabelTextModel):
    """Raw text in, relation label out.

    Args:
        model: an :class:`~ernie_kg.modeling.ErnieKGForRelationClassification` whose
            ``config.id2label`` names the relations.
        processor: an ``ErnieKGProcessor`` for ``task="relation_classification"``; its
            linker (if any) finds the entities.
        kg: the KG behind the linker (saved with the classifier for coherence).
        entities: where inference takes entities from: ``"linker"`` (default) or
            ``"none"`` (a text-only baseline); ``"gold"``/``"both"`` use ids carried by
            :class:`RelationExample` s.
    """

    _format = "ernie_kg.relation_classifier"
    _task = "relation_classification"
    model_defaults = DEFAULT_MODEL_SETTINGS

    @classmethod
    def _model_class(cls) -> type:
        from ernie_kg.modeling import ErnieKGForRelationClassification

        return ErnieKGForRelationClassification

    # ------------------------------------------------------------------ inference
    def predict(self, text: str, head: SpanLike, tail: SpanLike) -> tuple[str, float]:
        """``(label, probability)`` for the relation of ``head`` to ``tail`` in ``text``.

        ``head``/``tail`` are strings (their first occurrence) or char spans ``(s, e)``.
        """
        return self.predict_batch([(text, head, tail)])[0]

    def predict_proba(self, text: str, head: SpanLike, tail: SpanLike) -> dict[str, float]:
        """Every label's probability, best first."""
        return self._ranked(self._example(text, head, tail))

    def predict_batch(
        self, items: Sequence[tuple[str, SpanLike, SpanLike] | RelationExample],
        batch_size: int = 64,
    ) -> list[tuple[str, float]]:
        """:meth:`predict` over many ``(text, head, tail)`` triples or examples."""
        return self._best([item if isinstance(item, RelationExample) else self._example(*item)
                           for item in items], batch_size)

    def _example(self, text: str, head: SpanLike, tail: SpanLike) -> RelationExample:
        if not isinstance(text, str):
            raise TypeError(f"expected text as a str, got {type(text).__name__}")
        return RelationExample(text, find_span(text, head, "head"), find_span(text, tail, "tail"))

    # ------------------------------------------------------------------ task hooks
    def _dev_metrics(self, dev: Sequence[RelationExample], features: FeatureDataset,
                     entities: str) -> dict[str, Any]:
        """Dev scored with the training entities, and also the way inference runs
        (``dev_linker_*``: linker only, no gold ids) when that differs."""
        metrics = self.score(features)
        metrics.pop("predictions")
        metrics["dev_entities_per_example"] = features.entity_coverage()
        if entities not in ("none", self.entities):
            linked = self.evaluate(dev)
            for key in ("accuracy", "macro_f1", "micro_f1"):
                metrics[f"dev_{self.entities}_{key}"] = linked[key]
        return metrics


def build_relation_classifier(
    labels: LabelMap | Sequence[str], kg: KnowledgeGraph, embeddings: EntityEmbeddings,
    aliases: AliasTable | None = None, **settings: Any,
) -> RelationClassifier:
    """A fresh classifier: backbone + entity table + linker over ``kg`` and ``aliases``
    (:meth:`SavedTextModel.build`: ``knowledge``, ``backbone``, ``seed``, ``max_length``,
    ``num_knowledge_layers``, ``linker_config`` and model settings such as
    ``rc_classifier`` and ``entity_dropout``)."""
    return RelationClassifier.build(labels, kg, embeddings, aliases, **settings)


def train_relation_classifier(
    classifier: RelationClassifier, train: Sequence[RelationExample],
    dev: Sequence[RelationExample] | None, output_dir: str | os.PathLike, **settings: Any,
) -> dict[str, Any]:
    """Fine-tune ``classifier`` in place, save it to ``output_dir/model`` and return its
    metrics (:meth:`SavedTextModel.fit`)."""
    return classifier.fit(train, dev, output_dir, **settings)


def predict(model: Any, processor: Any, text: str, head: SpanLike, tail: SpanLike,
            entities: str = "linker") -> tuple[str, float]:
    """One call from raw text to ``(label, probability)``; linking happens inside."""
    return RelationClassifier(model, processor, entities=entities).predict(text, head, tail)
