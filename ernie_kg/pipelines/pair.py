"""Text and text-pair classification from raw text: :class:`PairClassifier`.

Why its own saved model: sentence-pair tasks (entailment, paraphrase, aspect sentiment
with an auxiliary question, Sun et al. 2019) classify ``[CLS] text [SEP] text_pair
[SEP]`` with no marked spans, so the model is
:class:`~ernie_kg.modeling.ErnieKGForSequenceClassification` and the processor has no
task; the linker, KG, storage and training are the shared ones
(:class:`~ernie_kg.pipelines.base.SavedTextModel`). The labels are single-label classes,
scored with the relation metrics (accuracy, macro-F1, micro-F1, per-label F1).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ernie_kg.data.examples import PairExample
from ernie_kg.data.features import FeatureDataset, LabelMap
from ernie_kg.kg.embeddings import EntityEmbeddings
from ernie_kg.kg.graph import KnowledgeGraph
from ernie_kg.linking.aliases import AliasTable
from ernie_kg.pipelines.base import SingleLabelTextModel

__all__ = ["PairClassifier", "build_pair_classifier", "train_pair_classifier"]

#: What :meth:`PairClassifier.predict_batch` takes per item.
PairLike = str | tuple[str, str | None] | PairExample


class PairClassifier(SingleLabelTextModel):
    """A text, or a text and its pair, in; a label out.

    Args:
        model: an :class:`~ernie_kg.modeling.ErnieKGForSequenceClassification` whose
            ``config.id2label`` names the labels.
        processor: an ``ErnieKGProcessor`` with ``task=None``; its linker (if any) finds
            the entities of both texts.
        kg: the KG behind the linker (saved with the classifier for coherence).
        entities: where inference takes entities from: ``"linker"`` (default) or
            ``"none"`` (the text-only baseline; pairs carry no gold ids, so ``"gold"``
            means none and ``"both"`` the linker's).
    """

    _format = "ernie_kg.pair_classifier"
    _task = None

    @classmethod
    def _model_class(cls) -> type:
        from ernie_kg.modeling import ErnieKGForSequenceClassification

        return ErnieKGForSequenceClassification

    # ------------------------------------------------------------------ inference
    def predict(self, text: str, text_pair: str | None = None) -> tuple[str, float]:
        """``(label, probability)`` of ``text`` (and ``text_pair``, BERT's segment B)."""
        return self.predict_batch([(text, text_pair)])[0]

    def predict_proba(self, text: str, text_pair: str | None = None) -> dict[str, float]:
        """Every label's probability, best first."""
        return self._ranked(_example(text, text_pair))

    def predict_batch(self, items: Sequence[PairLike], batch_size: int = 64,
                      ) -> list[tuple[str, float]]:
        """:meth:`predict` over many texts, ``(text, text_pair)`` tuples or examples."""
        return self._best([_example(item) if isinstance(item, str) else
                           item if isinstance(item, PairExample) else _example(*item)
                           for item in items], batch_size)

    # ------------------------------------------------------------------ task hooks
    def _dev_metrics(self, dev: Sequence[PairExample], features: FeatureDataset,
                     entities: str) -> dict[str, Any]:
        """Dev scored with the training entities (for pairs, the way inference runs:
        they have no gold ids, so "both" is the linker's)."""
        metrics = self.score(features)
        metrics.pop("predictions")
        metrics["dev_entities_per_example"] = features.entity_coverage()
        return metrics


def _example(text: str, text_pair: str | None = None) -> PairExample:
    for name, value in (("text", text), ("text_pair", text_pair)):
        if not isinstance(value, str) and (name == "text" or value is not None):
            raise TypeError(f"expected {name} as a str, got {type(value).__name__}")
    return PairExample(text, text_pair)


def build_pair_classifier(
    labels: LabelMap | Sequence[str], kg: KnowledgeGraph, embeddings: EntityEmbeddings,
    aliases: AliasTable | None = None, **settings: Any,
) -> PairClassifier:
    """A fresh classifier: backbone + entity table + linker over ``kg`` and ``aliases``
    (:meth:`SavedTextModel.build`: ``knowledge``, ``backbone``, ``seed``, ``max_length``,
    ``num_knowledge_layers``, ``linker_config`` and model settings such as
    ``entity_dropout``)."""
    return PairClassifier.build(labels, kg, embeddings, aliases, **settings)


def train_pair_classifier(
    classifier: PairClassifier, train: Sequence[PairExample],
    dev: Sequence[PairExample] | None, output_dir: str | os.PathLike, **settings: Any,
) -> dict[str, Any]:
    """Fine-tune ``classifier`` in place, save it to ``output_dir/model`` and return its
    metrics (:meth:`SavedTextModel.fit`)."""
    return classifier.fit(train, dev, output_dir, **settings)
