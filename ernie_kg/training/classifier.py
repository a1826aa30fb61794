"""A fine-tuned relation classifier that reads raw text: model + processor + linker + KG.

Why one object: inference needs the model, its tokenizer and markers, the linker that
found the entities during training and the KG that gives the linker its coherence. They
are saved to and loaded from one directory, so ``RelationClassifier.load(DIR)
.predict(text, head="Bob Dylan", tail="Blowin' in the Wind")`` is the whole API
(OpenNRE's ``model.infer`` in one call, with linking inside).

Directory layout: the model (``save_pretrained``: config, weights with the entity table,
``entity_ids.json``), the processor (tokenizer, ``ernie_kg_processor.json``,
``linker/``), ``kg/`` (the KG the linker scores coherence on) and
``ernie_kg_classifier.json`` (where inference takes its entities from).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ernie_kg.data.examples import RelationExample
from ernie_kg.data.features import FeatureDataset, LabelMap, check_entity_source, relation_features
from ernie_kg.errors import KGFormatError, SpanError
from ernie_kg.kg.embeddings import EntityEmbeddings
from ernie_kg.kg.graph import KnowledgeGraph
from ernie_kg.training.evaluation import evaluate_relations, predict_logits, softmax

CLASSIFIER_FILE = "ernie_kg_classifier.json"
KG_DIR = "kg"

SpanLike = str | tuple[int, int] | Sequence[int]


def find_span(text: str, value: SpanLike, name: str = "span") -> tuple[int, int]:
    """A char span from a string (its first occurrence in ``text``) or a (start, end) pair."""
    if isinstance(value, str):
        start = text.find(value)
        if not value or start < 0:
            raise SpanError(f"{name} {value!r} does not occur in the text")
        return start, start + len(value)
    try:
        start, end = (int(v) for v in value)
    except (TypeError, ValueError):
        raise SpanError(f"{name} {value!r}: expected a string or a (start, end) pair") from None
    if not 0 <= start < end <= len(text):
        raise SpanError(f"{name} ({start}, {end}) is outside the text (length {len(text)})")
    return start, end


class SavedTextModel:
    """What every task's raw-text model shares: model + processor (+ linker) + KG, and
    their storage in one directory. Subclasses name their model class and file format."""

    _format = "ernie_kg.text_model"

    def __init__(self, model: torch.nn.Module, processor: Any,
                 kg: KnowledgeGraph | None = None, entities: str = "linker") -> None:
        self.model = model
        self.processor = processor
        self.kg = kg
        self.entities = check_entity_source(entities)

    _task: str | None = None  # the processor's task

    @classmethod
    def _model_class(cls) -> type:
        raise NotImplementedError

    @property
    def label_map(self) -> LabelMap:
        return LabelMap.from_config(self.model.config.id2label)

    @classmethod
    def build(
        cls, labels: LabelMap | Sequence[str], kg: KnowledgeGraph,
        embeddings: EntityEmbeddings, aliases: Any = None, *, knowledge: bool = True,
        backbone: str | None = None, seed: int = 0, max_length: int = 128,
        num_knowledge_layers: int | None = None,
        linker_config: dict[str, Any] | None = None, **config: Any,
    ):  # noqa: ANN206
        """A fresh model on ``backbone`` (default: the packaged MiniLM) with the entity
        table, a processor for the task and a linker over ``kg`` and ``aliases``;
        ``config`` goes to the model's config. ``knowledge=False`` builds the same model
        but feeds it no entities (the baseline)."""
        from transformers import set_seed

        from ernie_kg.paths import default_backbone

        label_map = labels if isinstance(labels, LabelMap) else LabelMap(tuple(labels))
        backbone = backbone or default_backbone()
        set_seed(seed)
        model = cls._model_class().from_backbone(
            backbone, embeddings, num_knowledge_layers=num_knowledge_layers,
            id2label=label_map.id2label, **config)
        processor = build_processor(backbone, cls._task, kg, embeddings, aliases,
                                    max_length, linker_config)
        return cls(model, processor, kg, entities="linker" if knowledge else "none")

    # ------------------------------------------------------------------ storage
    def save(self, directory: str | os.PathLike) -> Path:
        """Write everything :meth:`load` needs into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(directory)
        self.processor.save_pretrained(directory)
        if self.kg is not None:
            self.kg.save(directory / KG_DIR)
        settings = {"format": self._format, "version": 1,
                    "entities": self.entities, "kg": KG_DIR if self.kg is not None else None}
        temporary = directory / (CLASSIFIER_FILE + ".tmp")
        temporary.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
        os.replace(temporary, directory / CLASSIFIER_FILE)
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike, entities: str | None = None):  # noqa: ANN206
        """Read :meth:`save`'s directory; the linker gets its KG and the model's vectors."""
        from ernie_kg.linking.linker import EntityLinker
        from ernie_kg.linking.processor import ErnieKGProcessor

        directory = Path(directory)
        path = directory / CLASSIFIER_FILE
        if not path.exists():
            raise KGFormatError(path, None, f"missing: not a saved {cls.__name__} directory")
        try:
            settings = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise KGFormatError(path, error.lineno, f"invalid JSON: {error.msg}") from None
        if settings.get("format") != cls._format:
            raise KGFormatError(path, None, f"format {settings.get('format')!r}: this "
                                f"directory holds no {cls.__name__} ({cls._format!r})")
        model = cls._model_class().from_pretrained(directory)
        model.eval()
        kg = KnowledgeGraph.load(directory / settings["kg"]) if settings.get("kg") else None
        linker = None
        if (directory / "linker").is_dir():
            linker = EntityLinker.load(directory / "linker", kg=kg,
                                       embeddings=model_embeddings(model))
        processor = ErnieKGProcessor.from_pretrained(directory, linker=linker)
        return cls(model, processor, kg, entities or settings.get("entities", "linker"))


class RelationClassifier(SavedTextModel):
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

    @classmethod
    def _model_class(cls) -> type:
        from ernie_kg.modeling import ErnieKGForRelationClassification

        return ErnieKGForRelationClassification

    @property
    def labels(self) -> tuple[str, ...]:
        return self.label_map.labels

    # ------------------------------------------------------------------ inference
    def predict(self, text: str, head: SpanLike, tail: SpanLike) -> tuple[str, float]:
        """``(label, probability)`` for the relation of ``head`` to ``tail`` in ``text``.

        ``head``/``tail`` are strings (their first occurrence) or char spans ``(s, e)``.
        """
        return self.predict_batch([(text, head, tail)])[0]

    def predict_proba(self, text: str, head: SpanLike, tail: SpanLike) -> dict[str, float]:
        """Every label's probability, best first."""
        example = self._example(text, head, tail)
        probabilities = softmax(self._logits([example]))[0]
        order = np.argsort(-probabilities)
        return {self.labels[i]: float(probabilities[i]) for i in order}

    def predict_batch(
        self, items: Sequence[tuple[str, SpanLike, SpanLike] | RelationExample],
        batch_size: int = 64,
    ) -> list[tuple[str, float]]:
        """:meth:`predict` over many ``(text, head, tail)`` triples or examples."""
        examples = [item if isinstance(item, RelationExample) else self._example(*item)
                    for item in items]
        probabilities = softmax(self._logits(examples, batch_size))
        best = probabilities.argmax(-1)
        return [(self.labels[int(i)], float(p[i])) for i, p in zip(best, probabilities)]

    def _example(self, text: str, head: SpanLike, tail: SpanLike) -> RelationExample:
        if not isinstance(text, str):
            raise TypeError(f"expected text as a str, got {type(text).__name__}")
        return RelationExample(text, find_span(text, head, "head"), find_span(text, tail, "tail"))

    def _logits(self, examples: Sequence[RelationExample], batch_size: int = 64) -> np.ndarray:
        features = relation_features(examples, self.processor, entities=self.entities)
        return predict_logits(self.model, features, batch_size)

    # ------------------------------------------------------------------ evaluation
    def features(self, examples: Sequence[RelationExample], entities: str | None = None,
                 progress: bool = False) -> FeatureDataset:
        """Labelled features of ``examples`` (entities from ``entities`` or the default)."""
        return relation_features(examples, self.processor, self.label_map,
                                 entities or self.entities, progress=progress)

    def evaluate(self, examples: Sequence[RelationExample], entities: str | None = None,
                 batch_size: int = 64, progress: bool = False) -> dict[str, Any]:
        """Accuracy, macro-F1, micro-F1 and per-label F1 on labelled ``examples``."""
        features = self.features(examples, entities, progress)
        return evaluate_relations(self.model, features, self.label_map.id2label, batch_size,
                                  progress=progress)


def build_processor(
    backbone: str, task: str | None, kg: KnowledgeGraph, embeddings: EntityEmbeddings,
    aliases: Any = None, max_length: int = 128, linker_config: dict[str, Any] | None = None,
) -> Any:
    """The ``ErnieKGProcessor`` of a task: the backbone's tokenizer, the entity table's
    rows and a linker over ``kg``'s names plus ``aliases``."""
    from transformers import AutoTokenizer

    from ernie_kg.linking.linker import EntityLinker
    from ernie_kg.linking.processor import ErnieKGProcessor

    linker = EntityLinker.from_kg(kg, embeddings, extra_aliases=aliases,
                                  **(linker_config or {}))
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    return ErnieKGProcessor(tokenizer, list(embeddings.entity_ids), linker=linker,
                            task=task, max_length=max_length)


def model_embeddings(model: torch.nn.Module) -> EntityEmbeddings | None:
    """The model's entity table as :class:`EntityEmbeddings` (None without KG ids)."""
    ids = model.entity_ids
    if not ids:
        return None
    table = model.base_model.entity_embeddings.weight.detach()[1:].float().cpu().numpy()
    return EntityEmbeddings(list(ids), np.asarray(table))


def predict(model: torch.nn.Module, processor: Any, text: str, head: SpanLike,
            tail: SpanLike, entities: str = "linker") -> tuple[str, float]:
    """One call from raw text to ``(label, probability)``; linking happens inside."""
    return RelationClassifier(model, processor, entities=entities).predict(text, head, tail)
