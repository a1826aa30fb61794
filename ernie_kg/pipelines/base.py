"""What every saved raw-text model shares: model + processor (+ linker) + KG, built, fitted,
evaluated, saved and loaded as one directory.

Why one object: inference needs the model, its tokenizer and markers, the linker that
found the entities during training and the KG that gives the linker its coherence. They
are saved to and loaded from one directory, so ``RelationClassifier.load(DIR)
.predict(text, head="Bob Dylan", tail="Blowin' in the Wind")`` is the whole API
(OpenNRE's ``model.infer`` in one call, with linking inside), as Hugging Face pipelines
are the inference home of a model.

Directory layout: the model (``save_pretrained``: config, weights with the entity table,
``entity_ids.json``, the one copy of the entity vocabulary), the processor (tokenizer,
``ernie_kg_processor.json``, ``linker/``), ``kg/`` (the KG the linker scores coherence
on) and a settings file naming the task's format and where inference takes its entities.

Inference precision (``load(DIR, dtype=...)`` or :meth:`SavedTextModel.to_dtype`):
``float32`` (as trained), ``bfloat16`` or ``int8``, set here once for every classifier
and every inference path (:mod:`ernie_kg.modeling.precision` says how each runs).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError

from ernie_kg.data.features import FeatureDataset, LabelMap, check_entity_source, task_features
from ernie_kg.errors import ErnieKGError, SavedFileError, SpanError
from ernie_kg.hub import no_save_progress_bars
from ernie_kg.io import read_json, write_json
from ernie_kg.kg.embeddings import EntityEmbeddings
from ernie_kg.kg.graph import KnowledgeGraph
from ernie_kg.linking.aliases import AliasTable
from ernie_kg.modeling.entity_table import MappedEntityTable
from ernie_kg.modeling.modeling import ENTITY_IDS_FILE
from ernie_kg.modeling.precision import check_dtype, reduce_precision
from ernie_kg.processing.processor import MODEL_TABLE_ROWS, PROCESSOR_FILE
from ernie_kg.training.evaluation import evaluate_relations, predict_logits, softmax
from ernie_kg.training.finetuning import relation_compute_metrics
from ernie_kg.training.gate_rate import finetune_choosing_gate_rate

#: Settings file of a saved raw-text model (every task; ``format`` names the task).
CLASSIFIER_FILE = "ernie_kg_classifier.json"
logger = logging.getLogger(__name__)

KG_DIR = "kg"
WEIGHTS_FILE = "model.safetensors"
#: Least share of the KG's entities the entity table must cover before a warning.
MIN_KG_COVERAGE = 0.5
LINKER_DIR = "linker"

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
    """A task's raw-text model. Subclasses name their model class, processor task, file
    format, model defaults, feature builder, scoring and selection metric."""

    _format = "ernie_kg.text_model"
    _task: str | None = None  # the processor's task
    #: Model-config defaults of the task (``build`` keywords override them).
    model_defaults: dict[str, Any] = {}
    #: The dev metric that picks the best epoch.
    selection_metric = "macro_f1"

    def __init__(self, model: torch.nn.Module, processor: Any,
                 kg: KnowledgeGraph | None = None, entities: str = "linker") -> None:
        self.model = model
        self.processor = processor
        self.kg = kg
        self.entities = check_entity_source(entities)
        self.kg_coverage: float | None = None  # share of the KG with a vector (build)
        self.dtype = "float32"  # the inference precision (:meth:`to_dtype`)

    # ------------------------------------------------------------------ task hooks
    @classmethod
    def _model_class(cls) -> type:
        raise NotImplementedError

    def features(self, examples: Sequence[Any], entities: str | None = None,
                 progress: bool = False) -> FeatureDataset:
        """Labelled features of ``examples`` (entities from ``entities`` or the default)."""
        raise NotImplementedError

    def score(self, features: FeatureDataset, batch_size: int = 64) -> dict[str, Any]:
        """The task's metrics of the model on labelled ``features``."""
        raise NotImplementedError

    def _compute_metrics(self) -> Callable:
        """The ``Trainer`` ``compute_metrics`` of the task."""
        raise NotImplementedError

    def _dev_metrics(self, dev: Sequence[Any], features: FeatureDataset,
                     entities: str) -> dict[str, Any]:
        """Dev metrics after training (``features`` carry the training entities)."""
        raise NotImplementedError

    @property
    def label_map(self) -> LabelMap:
        """The model's labels, in the order of its logits."""
        return LabelMap.from_config(self.model.config.id2label)

    # ------------------------------------------------------------------ build / fit
    @classmethod
    def build(
        cls, labels: LabelMap | Sequence[str], kg: KnowledgeGraph,
        embeddings: EntityEmbeddings, aliases: AliasTable | None = None, *,
        knowledge: bool = True, backbone: str | None = None, seed: int = 0,
        max_length: int = 128, num_knowledge_layers: int | None = None,
        linker_config: dict[str, Any] | None = None,
        min_kg_coverage: float = MIN_KG_COVERAGE, **config: Any,
    ):  # noqa: ANN206
        """A fresh model on ``backbone`` (default: the packaged MiniLM) with the entity
        table, a processor for the task and a linker over ``kg`` with ``aliases`` (the
        finished alias table; default: the KG's names); ``config`` goes to the model's
        config over :attr:`model_defaults`. ``knowledge=False`` builds the same model but
        feeds it no entities (the baseline). With knowledge, an entity table covering none
        of the KG is an error and one covering less than ``min_kg_coverage`` a warning
        (:func:`check_kg_coverage`)."""
        from transformers import set_seed

        from ernie_kg.paths import default_backbone

        label_map = labels if isinstance(labels, LabelMap) else LabelMap(tuple(labels))
        backbone = backbone or default_backbone()
        set_seed(seed)
        model = cls._model_class().from_backbone(
            backbone, embeddings, num_knowledge_layers=num_knowledge_layers,
            id2label=label_map.id2label, **{**cls.model_defaults, **config})
        processor = build_processor(backbone, cls._task, kg, embeddings, aliases,
                                    max_length, linker_config,
                                    entity_links=model.config.knowledge_links)
        built = cls(model, processor, kg, entities="linker" if knowledge else "none")
        if knowledge:
            built.kg_coverage = check_kg_coverage(kg, embeddings, min_kg_coverage)
        return built

    def fit(
        self, train: Sequence[Any], dev: Sequence[Any] | None, output_dir: str | os.PathLike,
        *, train_entities: str = "both", log_path: str | os.PathLike | None = None,
        resume_from_checkpoint: str | bool | None = None, progress: bool = True,
        **settings: Any,
    ) -> dict[str, Any]:
        """Fine-tune in place (best dev :attr:`selection_metric` kept), save to
        ``output_dir/model`` and return the metrics. Training and dev features take
        entities from ``train_entities`` (``"both"``: the linker's, with the dataset's ids
        for the task spans); a model whose inference uses no entities (the baseline) is
        trained without them too. ``settings`` go to ``finetune`` through
        :func:`~ernie_kg.training.gate_rate.finetune_choosing_gate_rate` (gate rate on dev)."""
        self._require_float32("be trained")
        output_dir = Path(output_dir)
        entities = "none" if self.entities == "none" else check_entity_source(train_entities)
        if progress and self.kg_coverage is not None:
            print(f"entity table: vectors for {self.kg_coverage:.1%} of the KG's entities")
        started = time.perf_counter()
        train_features = self.features(train, entities, progress)
        dev_features = self.features(dev, entities, progress) if dev else None
        feature_seconds = time.perf_counter() - started
        settings.setdefault("metric_for_best_model", self.selection_metric)
        result = finetune_choosing_gate_rate(
            self.model, train_features, dev_features, output_dir=output_dir / "checkpoints",
            compute_metrics=self._compute_metrics(), log_path=log_path,
            resume_from_checkpoint=resume_from_checkpoint, progress=progress,
            knowledge=entities != "none", **settings)
        self.model = result.model
        self.model.eval()
        metrics: dict[str, Any] = {
            "train_examples": len(train_features),
            "train_entities": entities,
            "train_entities_per_example": train_features.entity_coverage(),
            "kg_entity_coverage": self.kg_coverage,
            "feature_seconds": feature_seconds,
            "train_seconds": result.seconds,
            "train_samples_per_second": result.metrics.get("train_samples_per_second"),
            "best_checkpoint": result.best_checkpoint,
            **{k: v for k, v in result.metrics.items() if k.startswith("gate_learning_")},
        }
        if dev_features is not None:
            metrics.update(self._dev_metrics(dev, dev_features, entities))
        self.save(output_dir / "model")
        metrics["seconds"] = time.perf_counter() - started
        return metrics

    def evaluate(self, examples: Sequence[Any], entities: str | None = None,
                 batch_size: int = 64, progress: bool = False) -> dict[str, Any]:
        """The task's metrics on labelled ``examples`` (entities from ``entities`` or the
        model's default: its linker, or none for the baseline)."""
        return self.score(self.features(examples, entities, progress), batch_size)

    def extract_features(
        self, texts: str | Sequence[str] | None = None, *,
        layers: Sequence[int] = (-1, -2, -3, -4), combine: str = "concat",
        level: str = "token", text_pairs: Sequence[str] | None = None,
        words: Sequence[Sequence[str]] | None = None, word_pooling: str = "first",
        sentence_pooling: str = "cls", batch_size: int = 32, entities: str | None = None,
        max_length: int | None = None, return_offsets: bool = False,
    ) -> list[np.ndarray] | np.ndarray | tuple[list[np.ndarray], list[np.ndarray]]:
        """Frozen-encoder features of plain texts (no task spans) through this model's
        processor, with its entity source unless ``entities`` says otherwise (the
        linker's entities; none for the text-only baseline). The arguments are
        :func:`~ernie_kg.pipelines.features.extract_features`'s."""
        from ernie_kg.pipelines.features import extract_features

        return extract_features(
            self.model, self.processor, texts, layers=layers, combine=combine, level=level,
            text_pairs=text_pairs, words=words, word_pooling=word_pooling,
            sentence_pooling=sentence_pooling, batch_size=batch_size,
            entities=entities or self.entities, max_length=max_length,
            return_offsets=return_offsets)

    # ------------------------------------------------------------------ precision
    def to_dtype(self, dtype: str) -> SavedTextModel:
        """Run inference in ``dtype`` (``"float32"``, ``"bfloat16"`` or ``"int8"``) from
        now on, in place; returns self. One way, from float32 only: a reduced model is for
        inference, so it cannot be trained, saved over the float32 weights, or turned back
        (load it again). int8 runs on the CPU only."""
        dtype = check_dtype(dtype)
        if dtype != self.dtype:
            self._require_float32(f"be converted to {dtype}")
            self.model = reduce_precision(self.model, dtype)
            self.dtype = dtype
        return self

    def _require_float32(self, action: str) -> None:
        if self.dtype != "float32":
            raise ErnieKGError(f"this {type(self).__name__} runs in {self.dtype} (inference "
                               f"only) and cannot {action}: load the float32 model again")

    # ------------------------------------------------------------------ storage
    def save(self, directory: str | os.PathLike, include_entity_table: bool = False) -> Path:
        """Write everything :meth:`load` needs into ``directory``. The entity table stays
        where it was read from (path + hash); ``include_entity_table`` copies the rows
        of the KG's entities into the directory (self-contained)."""
        self._require_float32("be saved")
        directory = Path(directory)
        keep = self.kg.entities if include_entity_table and self.kg is not None else None
        with no_save_progress_bars():
            self.model.save_pretrained(directory, include_entity_table=include_entity_table,
                                       keep_entities=keep)
        shared = self.model.entity_vocab is not None and self.model.entity_vocab == \
            self.processor.vocab  # then the model's vocabulary serves both
        rows_file = MODEL_TABLE_ROWS if self.model.config.entity_table else ENTITY_IDS_FILE
        self.processor.save_pretrained(directory, rows_file if shared else None)
        kg = None  # a KG read from a directory is referred to (path + hash), not copied
        if self.kg is not None:
            kg = self.kg.reference()
            if kg is None:
                kg = KG_DIR
                self.kg.save(directory / KG_DIR)
            elif (directory / KG_DIR).is_dir():
                shutil.rmtree(directory / KG_DIR)  # a copy from an earlier save here
        write_json(directory / CLASSIFIER_FILE, {
            "format": self._format, "version": 1, "entities": self.entities, "kg": kg})
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike, entities: str | None = None,
             dtype: str = "float32"):  # noqa: ANN206
        """Read :meth:`save`'s directory; the linker gets its KG and the model's vectors.
        ``dtype``: the inference precision (:meth:`to_dtype`), checked before loading."""
        check_dtype(dtype)
        from ernie_kg.linking.linker import EntityLinker
        from ernie_kg.processing.processor import ErnieKGProcessor

        directory = Path(directory)
        path = directory / CLASSIFIER_FILE
        settings = read_json(path, what=f"not a saved {cls.__name__} directory")
        if not isinstance(settings, dict) or settings.get("format") != cls._format:
            found = settings.get("format") if isinstance(settings, dict) else None
            raise SavedFileError(path, None, f"format {found!r}: this directory holds no "
                                 f"{cls.__name__} ({cls._format!r})")
        _check_saved_files(directory)
        try:
            model = cls._model_class().from_pretrained(directory)
        except SavedFileError:
            raise  # names its own file (an altered entity table: entity_ids.json)
        except (OSError, RuntimeError, ValueError, SafetensorError) as problem:
            raise SavedFileError(directory / WEIGHTS_FILE, None, "unreadable model weights "
                                 f"(truncated, or from another model?): {problem}") from None
        model.eval()
        kg = settings.get("kg")
        if isinstance(kg, dict):
            kg = KnowledgeGraph.from_reference(kg, path)
        elif kg:
            kg = KnowledgeGraph.load(directory / kg)  # a copy (an in-memory KG, or older)
        linker = None
        if (directory / LINKER_DIR).is_dir():
            linker = EntityLinker.load(directory / LINKER_DIR, kg=kg,
                                       embeddings=model_embeddings(model))
        processor = ErnieKGProcessor.from_pretrained(  # rows: the model's own table
            directory, entity_rows=model.entity_vocab, linker=linker)
        loaded = cls(model, processor, kg, entities or settings.get("entities", "linker"))
        return loaded.to_dtype(dtype)


class SingleLabelTextModel(SavedTextModel):
    """A saved model with one label per example (softmax over its classes): the relation
    and the pair classifier share their inference, features and scoring here."""

    @property
    def labels(self) -> tuple[str, ...]:
        """The labels, in the order of the model's logits."""
        return self.label_map.labels

    def _logits(self, examples: Sequence[Any], batch_size: int = 64) -> np.ndarray:
        features = task_features(examples, self.processor, entities=self.entities)
        return predict_logits(self.model, features, batch_size)

    def _best(self, examples: Sequence[Any], batch_size: int = 64) -> list[tuple[str, float]]:
        """``(label, probability)`` of each example's most probable label."""
        probabilities = softmax(self._logits(examples, batch_size))
        best = probabilities.argmax(-1)
        return [(self.labels[int(i)], float(p[i])) for i, p in zip(best, probabilities)]

    def _ranked(self, example: Any) -> dict[str, float]:
        """Every label's probability for ``example``, best first."""
        probabilities = softmax(self._logits([example]))[0]
        order = np.argsort(-probabilities)
        return {self.labels[i]: float(probabilities[i]) for i in order}

    def features(self, examples: Sequence[Any], entities: str | None = None,
                 progress: bool = False) -> FeatureDataset:
        """Labelled features of ``examples`` (entities from ``entities`` or the default)."""
        return task_features(examples, self.processor, self.label_map,
                             entities or self.entities, progress=progress)

    def score(self, features: FeatureDataset, batch_size: int = 64) -> dict[str, Any]:
        """Accuracy, macro-F1, micro-F1, per-label F1 and the predicted labels."""
        return evaluate_relations(self.model, features, self.label_map.id2label, batch_size)

    def _compute_metrics(self) -> Callable:
        return relation_compute_metrics(self.label_map.id2label)


def _check_saved_files(directory: Path) -> None:
    """Every file a saved model needs is there and, for JSON, readable: one error naming
    the file and what it is, not a loader's traceback."""
    read_json(directory / "config.json", what="the model's configuration")
    if not any((directory / name).is_file() for name in (WEIGHTS_FILE, "pytorch_model.bin")):
        raise SavedFileError(directory / WEIGHTS_FILE, None, "missing: the model's weights")
    if not any((directory / name).is_file() for name in ("tokenizer.json", "vocab.txt")):
        raise SavedFileError(directory / "tokenizer.json", None, "missing: the tokenizer")
    settings = read_json(directory / PROCESSOR_FILE, what="the processor's settings")
    rows = settings.get("entity_rows") if isinstance(settings, dict) else None
    if isinstance(rows, str) and rows != MODEL_TABLE_ROWS:
        read_json(directory / rows, what="the entity vocabulary (model table rows)")


def check_kg_coverage(kg: KnowledgeGraph, embeddings: EntityEmbeddings,
                      minimum: float = MIN_KG_COVERAGE) -> float:
    """The share of ``kg``'s entities with a vector in ``embeddings``. None is an error
    (the knowledge model would silently train as the baseline); less than ``minimum`` a
    warning: a table made for another KG, or a KG grown since."""
    covered, total = embeddings.coverage(kg.entities)
    share = covered / max(total, 1)
    if covered == 0:
        raise ErnieKGError(f"the entity table ({len(embeddings)} vectors) covers none of "
                           f"the KG's {total} entities: no entity would reach the model. "
                           "Were the embeddings trained on another KG?")
    if share < minimum:
        message = (f"the entity table covers {share:.1%} of the KG's entities ({covered} of "
                   f"{total}), less than {minimum:.0%}: most linked entities will reach "
                   "the model as 'no entity'")
        logger.warning(message)
        warnings.warn(message, stacklevel=3)
    return share


def build_processor(
    backbone: str, task: str | None, kg: KnowledgeGraph, embeddings: EntityEmbeddings,
    aliases: AliasTable | None = None, max_length: int = 128,
    linker_config: dict[str, Any] | None = None, entity_links: bool = False,
) -> Any:
    """The ``ErnieKGProcessor`` of a task: the backbone's tokenizer, the entity table's
    vocabulary and a linker over ``kg`` with the finished alias table ``aliases``
    (``entity_links``: for a model whose gate reads them, ``config.knowledge_links``)."""
    from transformers import AutoTokenizer

    from ernie_kg.hub import check_backbone
    from ernie_kg.linking.linker import EntityLinker
    from ernie_kg.processing.processor import ErnieKGProcessor

    linker_config = linker_config or {}
    if aliases is None and kg.directory is not None and kg.store is not None:
        from ernie_kg.linking.alias_index import open_alias_index  # the directory's index

        aliases = open_alias_index(kg.store, kg.directory, linker_config.get("lang", "en"))
    linker = EntityLinker.from_kg(kg, embeddings, aliases=aliases, **linker_config)
    check_backbone(backbone)
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    return ErnieKGProcessor(tokenizer, embeddings.vocab, linker=linker, task=task,
                            max_length=max_length, entity_links=entity_links)


def model_embeddings(model: torch.nn.Module) -> EntityEmbeddings | None:
    """The model's entity table as :class:`EntityEmbeddings` (None without KG ids)."""
    vocab = model.entity_vocab
    if vocab is None:
        return None
    table = model.base_model.entity_embeddings
    if isinstance(table, MappedEntityTable):  # the source itself: no copy of a mapped table
        return table.embeddings
    table = model.base_model.entity_embeddings.weight.detach()[1:].float().cpu().numpy()
    return EntityEmbeddings(vocab, np.asarray(table))
