"""Context profiles: which words surround an entity's mentions.

The prior and KG coherence cannot tell "Major General" of the Australian Army from the
British or US rank, or two Marias apart, when the other mentions of the sentence are new
to the KG. The words around a mention can. Each entity gets an idf-weighted bag of the
words seen around its annotated mentions (FewRel sentences, minus the mention words) and
of its KG description; the disambiguator scores a candidate by the cosine between its
profile and the words of the text being linked (minus the mentions themselves).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ernie_kg.errors import KGFormatError
from ernie_kg.kg.graph import KnowledgeGraph
from ernie_kg.linking.normalize import token_norm

__all__ = ["CONTEXT_FILE", "ContextModel", "context_words"]

#: File name of a context model stored with a linker.
CONTEXT_FILE = "context.json"
_FORMAT = "ernie_kg.context"
_WORD = re.compile(r"\w+")
# Function words carry no evidence about an entity.
_STOP = frozenset(
    "a about after also an and are as at be been but by for from had has have he her his "
    "i in into is it its not of on or she that the their them then there they this to was "
    "were which who with would".split()
)


def context_words(text: str) -> list[str]:
    """Folded, case-free words of ``text`` without function words and bare digits."""
    return [w for w in _WORD.findall(token_norm(text))
            if w not in _STOP and not w.isdigit() and len(w) > 1]


class ContextModel:
    """Entity profiles: idf-weighted, unit-length word vectors (sparse dicts)."""

    def __init__(self) -> None:
        self._counts: dict[str, Counter] = {}
        self._df: Counter = Counter()
        self._documents = 0
        self._profiles: dict[str, dict[str, float]] | None = None
        self._idf: dict[str, float] = {}
        self._default_idf = 1.0

    # ------------------------------------------------------------------ building
    def add(self, entity_ids: Iterable[str], words: Sequence[str]) -> None:
        """One document (a sentence, a description) of ``words`` about ``entity_ids``."""
        if not words:
            return
        self._profiles = None
        self._documents += 1
        self._df.update(set(words))
        for entity_id in entity_ids:
            self._counts.setdefault(entity_id, Counter()).update(words)

    def add_text(self, entity_ids: Iterable[str], text: str,
                 skip: Sequence[tuple[int, int]] = ()) -> None:
        """:meth:`add` the words of ``text`` outside the char spans ``skip``."""
        self.add(entity_ids, context_words(_blank_spans(text, skip)))

    def add_fewrel(self, data: str | Path | Mapping[str, Any]) -> ContextModel:
        """Each FewRel sentence, minus its head and tail, describes both entities."""
        from ernie_kg.linking.fewrel import instance_text, read_fewrel

        for instances in read_fewrel(data).values():
            for instance in instances:
                text, head, tail = instance_text(instance)
                self.add_text((instance["h"][1], instance["t"][1]), text, (head, tail))
        return self

    def add_kg(self, kg: KnowledgeGraph) -> ContextModel:
        """Each KG entity's description (when it has one)."""
        for entity in kg.entities.values():
            if entity.description:
                self.add((entity.id,), context_words(entity.description))
        return self

    # ------------------------------------------------------------------ lookup
    def _build(self) -> dict[str, dict[str, float]]:
        documents = max(1, self._documents)
        self._idf = {w: math.log((1 + documents) / (1 + c)) + 1 for w, c in self._df.items()}
        self._default_idf = math.log(1 + documents) + 1
        self._profiles = {e: self._unit(c) for e, c in self._counts.items()}
        return self._profiles

    def _unit(self, counts: Mapping[str, float]) -> dict[str, float]:
        idf, default = self._idf, self._default_idf
        vector = {w: c * idf.get(w, default) for w, c in counts.items()}
        norm = math.sqrt(sum(v * v for v in vector.values()))
        return {w: v / norm for w, v in vector.items()} if norm else {}

    def vector(self, text: str, skip: Sequence[tuple[int, int]] = ()) -> dict[str, float]:
        """The unit word vector of ``text`` outside the char spans ``skip``."""
        if self._profiles is None:
            self._build()
        return self._unit(Counter(context_words(_blank_spans(text, skip))))

    def similarity(self, entity_id: str, vector: Mapping[str, float]) -> float:
        """Cosine in [0, 1] between the entity's profile and a :meth:`vector`."""
        profiles = self._profiles if self._profiles is not None else self._build()
        profile = profiles.get(entity_id)
        if not profile or not vector:
            return 0.0
        if len(profile) < len(vector):
            return sum(v * vector.get(w, 0.0) for w, v in profile.items())
        return sum(v * profile.get(w, 0.0) for w, v in vector.items())

    def __contains__(self, entity_id: object) -> bool:
        return entity_id in self._counts

    def __len__(self) -> int:
        return len(self._counts)

    def __repr__(self) -> str:
        return f"ContextModel({len(self)} entities, {self._documents} documents)"

    # ------------------------------------------------------------------ storage
    def save(self, path: str | Path) -> Path:
        """Write JSON (a directory gets ``context.json``)."""
        path = Path(path)
        if path.is_dir():
            path = path / CONTEXT_FILE
        payload = {"format": _FORMAT, "version": 1, "documents": self._documents,
                   "df": dict(self._df), "counts": {e: dict(c) for e, c in self._counts.items()}}
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(json.dumps(payload, ensure_ascii=False), encoding="utf-8")
        os.replace(temporary, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> ContextModel:
        path = Path(path)
        if path.is_dir():
            path = path / CONTEXT_FILE
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise KGFormatError(path, None, "missing: no context model here") from None
        except json.JSONDecodeError as error:
            raise KGFormatError(path, error.lineno, f"invalid JSON: {error.msg}") from None
        if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
            raise KGFormatError(path, None, f"not a context model (expected {_FORMAT!r})")
        model = cls()
        model._documents = int(payload.get("documents", 0))
        model._df = Counter(payload.get("df", {}))
        model._counts = {e: Counter(c) for e, c in payload.get("counts", {}).items()}
        return model


def _blank_spans(text: str, spans: Sequence[tuple[int, int]]) -> str:
    """``text`` with the chars of ``spans`` replaced by spaces."""
    if not spans:
        return text
    pieces, last = [], 0
    for start, end in sorted(spans):
        start = max(start, last)
        if end <= start:
            continue
        pieces.append(text[last:start])
        pieces.append(" ")
        last = end
    pieces.append(text[last:])
    return "".join(pieces)
