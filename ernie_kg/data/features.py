"""Relation, typing and text-pair examples -> model features, built by an
:class:`ErnieKGProcessor`.

Why one place: training, evaluation and one-call inference must turn text into inputs
the same way, and must agree on where entities come from:

* ``"gold"``   the dataset's own KG ids for head and tail (FewRel QIDs) or the typed
               mention, nothing else (none for text pairs, which carry no ids);
* ``"linker"`` the processor's linker over the text (task spans included), no ids;
* ``"both"``   the linker's entities, with the dataset's ids overriding the task spans;
* ``"none"``   no entities at all: knowledge off, the text-only baseline.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch.utils.data import Dataset

from ernie_kg.data.examples import PairExample, RelationExample, TypingExample
from ernie_kg.errors import ErnieKGError, SettingError

ENTITY_SOURCES = ("gold", "linker", "both", "none")


class UnknownLabelError(ErnieKGError, KeyError):
    """A label that the model's label set does not contain."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class LabelMap:
    """The label set of a classification task, in a fixed (sorted) order."""

    labels: tuple[str, ...]

    @classmethod
    def from_examples(cls, examples: Iterable[RelationExample]) -> LabelMap:
        """The sorted label set of the labelled ``examples``."""
        found = sorted({e.label for e in examples if e.label is not None})
        if not found:
            raise SettingError("no labelled examples: cannot build a label set")
        return cls(tuple(found))

    @classmethod
    def from_config(cls, id2label: Mapping[int | str, str]) -> LabelMap:
        """The label set a model config's ``id2label`` holds."""
        return cls(tuple(id2label[k] for k in sorted(id2label, key=int)))

    @property
    def id2label(self) -> dict[int, str]:
        """Class id -> label, as a model config stores it."""
        return dict(enumerate(self.labels))

    @property
    def label2id(self) -> dict[str, int]:
        """Label -> class id."""
        return {label: i for i, label in enumerate(self.labels)}

    def __len__(self) -> int:
        return len(self.labels)

    def multi_hot(self, labels: Iterable[str]) -> list[float]:
        """1.0 at each of ``labels`` that the set holds, 0.0 elsewhere (others dropped)."""
        index = self.label2id
        row = [0.0] * len(self)
        for label in labels:
            if label in index:
                row[index[label]] = 1.0
        return row

    def encode(self, label: str) -> int:
        """The class id of ``label``; an unknown label raises :class:`UnknownLabelError`."""
        try:
            return self.label2id[label]
        except KeyError:
            raise UnknownLabelError(
                f"label {label!r} is not in the model's {len(self)} labels "
                f"({', '.join(self.labels[:5])}{', ...' if len(self) > 5 else ''})"
            ) from None


class FeatureDataset(Dataset):
    """A list of feature dicts (lists of ints) that ``Trainer`` and DataLoader can index."""

    def __init__(self, features: Sequence[dict[str, Any]]) -> None:
        self.features = list(features)

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.features[index]

    @property
    def lengths(self) -> list[int]:
        """Token count of every feature (for length-grouped batches)."""
        return [len(f["input_ids"]) for f in self.features]

    def entity_coverage(self) -> float:
        """Mean number of aligned entities per example (a quick check that linking ran)."""
        if not self.features:
            return 0.0
        return sum(sum(1 for r in f["entity_ids"] if r) for f in self.features) / len(self)


def check_entity_source(entities: str) -> str:
    """``entities`` itself if it is one of :data:`ENTITY_SOURCES`, else ValueError."""
    if entities not in ENTITY_SOURCES:
        raise SettingError(f"entities={entities!r}: expected one of {list(ENTITY_SOURCES)}")
    return entities


def task_features(
    examples: Sequence[RelationExample] | Sequence[TypingExample] | Sequence[PairExample],
    processor: Any,
    label_map: LabelMap | None = None,
    entities: str = "gold",
    batch_size: int = 256,
    progress: bool = False,
) -> FeatureDataset:
    """Encode ``examples`` with ``processor`` (an ``ErnieKGProcessor`` for their task),
    taking entities from ``entities`` (see the module docstring).

    With ``label_map``, a relation or pair example's label becomes its class id (an unknown
    label raises :class:`UnknownLabelError`; unlabelled examples get no ``labels`` key)
    and a typing example's types become a multi-hot float row (types outside the map are
    dropped, so a model can be scored on the types it knows).
    """
    features: list[dict[str, Any]] = []
    for chunk in _chunks(examples, batch_size, entities, progress):
        for example, feature in zip(chunk, encode_examples(processor, chunk, entities)):
            if label_map is None:
                pass
            elif isinstance(example, TypingExample):
                feature["labels"] = label_map.multi_hot(example.labels)
            elif example.label is not None:
                feature["labels"] = label_map.encode(example.label)
            features.append(feature)
    return FeatureDataset(features)


#: The tasks' names for :func:`task_features` (one implementation).
relation_features = task_features
typing_features = task_features
pair_features = task_features


#: The example field holding the KG id of each task span the processor marks.
_ID_FIELDS = {"head": "head_id", "tail": "tail_id", "mention": "entity_id"}


def encode_examples(
    processor: Any, examples: Sequence[RelationExample | TypingExample | PairExample],
    entities: str,
) -> list[dict[str, list[int]]]:
    """One unpadded feature dict per example (``input_ids``, ``attention_mask``,
    ``token_type_ids``, ``entity_ids``, ``marker_positions``); the task spans' ids are
    passed for ``"gold"`` and ``"both"``, the linker runs for ``"linker"`` and ``"both"``.
    A :class:`PairExample` with a ``text_pair`` becomes a sentence pair (segment ids 0/1)."""
    check_entity_source(entities)
    if not examples:
        return []
    paired = [getattr(e, "text_pair", None) is not None for e in examples]
    if any(paired) and not all(paired):  # pairs and single texts: each kind on its own
        groups = [[e for e, p in zip(examples, paired) if p is flag] for flag in (False, True)]
        encoded = [iter(encode_examples(processor, group, entities)) for group in groups]
        return [next(encoded[p]) for p in paired]
    kwargs: dict[str, Any] = {"text_pair": [e.text_pair for e in examples]} if any(
        paired) else {}
    for role in processor.task_roles:
        kwargs[role] = [getattr(e, role) for e in examples]
        if entities in ("gold", "both"):
            kwargs[f"{role}_id"] = [getattr(e, _ID_FIELDS[role]) for e in examples]
    target = processor if entities in ("linker", "both") else _without_linker(processor)
    features = _unbatch(target([e.text for e in examples], padding=False, **kwargs))
    if entities == "none":
        for feature in features:
            feature["entity_ids"] = [0] * len(feature["input_ids"])
            feature.pop("entity_links", None)
    return features


def _chunks(examples: Sequence[Any], size: int, entities: str, progress: bool
            ) -> Iterable[Sequence[Any]]:
    """``examples`` in slices of ``size`` (with a progress bar); checks ``entities``."""
    check_entity_source(entities)
    starts = range(0, len(examples), size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=f"features ({entities})", unit="batch")
    for start in starts:
        yield examples[start:start + size]


def _without_linker(processor: Any) -> Any:
    """The processor with its linker switched off (gold ids or no entities only)."""
    if getattr(processor, "linker", None) is None:
        return processor
    import copy

    clone = copy.copy(processor)
    clone.linker = None
    return clone


def _unbatch(encoded: Mapping[str, list]) -> list[dict[str, Any]]:
    """The processor's unpadded batch (one list per key) as one feature dict per
    example; the collator pads each training batch to its own longest sequence."""
    names = list(encoded)
    return [dict(zip(names, values)) for values in zip(*(encoded[n] for n in names))]
