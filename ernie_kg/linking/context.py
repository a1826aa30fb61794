"""Context profiles: which words surround an entity's mentions.

The prior and KG coherence cannot tell "Major General" of the Australian Army from the
British or US rank, or two Marias apart, when the other mentions of the sentence are new
to the KG. The words around a mention can. Each entity gets a tf-idf profile of the words
seen around its annotated mentions (FewRel sentences, minus the mention words) and of its
KG description; a candidate is scored by the cosine between its profile and the words of
the text being linked (minus the mentions themselves).

Words are the NORMs of a blank spaCy tokenizer (:func:`token_norm`: folded, case-free),
without function words, digits and punctuation: the same tokens the linker's phrase
matcher reads, so a linked doc needs no second tokenization. Per candidate list, the
profiles are inverted into ``NORM hash -> weights``, so scoring walks the text's tokens
once instead of building a vector per text.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import spacy
from spacy.attrs import NORM
from spacy.language import Language
from spacy.strings import hash_string
from spacy.tokens import Doc

from ernie_kg.errors import SavedFileError
from ernie_kg.io import read_json, write_json
from ernie_kg.kg.graph import KnowledgeGraph
from ernie_kg.linking.compiled import speedups
from ernie_kg.linking.normalize import token_norm

__all__ = ["CONTEXT_FILE", "ContextModel", "ContextQuery", "is_context_word"]

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


def is_context_word(norm: str) -> bool:
    """A token NORM that counts as context: a word of 2+ characters, not a number and
    not a function word."""
    return (len(norm) > 1 and norm not in _STOP and not norm.isdigit()
            and _WORD.fullmatch(norm) is not None)


class ContextQuery:
    """The context words of one text, ready to score candidate lists against entity
    profiles. Each word counts once (binary tf: a sentence seldom repeats a context
    word, and a set of NORM hashes is all the linker's hot path can afford)."""

    __slots__ = ("_model", "_norm", "_strings", "_words")

    def __init__(self, model: ContextModel, words: Iterable[int], strings: Any) -> None:
        """``words``: the text's NORM hashes (:func:`context_words` gives them as a set;
        0 means none)."""
        self._model = model
        if type(words) is not set:
            words = set(words)
        words.discard(0)
        self._words = words
        self._strings = strings
        self._norm: float | None = None  # computed when first needed

    def norm(self) -> float:
        """Length of the text's tf-idf vector."""
        if self._norm is None:
            squares = self._model._hash_idf2
            try:
                total = sum(map(squares.__getitem__, self._words))
            except KeyError:  # words never seen: learn their idf once
                for h in self._words:
                    if h not in squares:
                        self._model._learn_hash(h, self._strings)
                total = sum(map(squares.__getitem__, self._words))
            self._norm = math.sqrt(total)
        return self._norm

    def similarities(self, candidates: Sequence[tuple]) -> list[float]:
        """Cosine in [0, 1] of each candidate's profile (``candidates[k][0]`` is the
        entity id) with the text (all 0.0 when no profile shares a word with it)."""
        inverted = self._model._inverted(candidates)
        shared = self._words & inverted.keys()
        sums = [0.0] * len(candidates)
        if not shared:  # the common case: the norm is not even needed
            return sums
        norm = self.norm()
        if not norm:
            return sums
        for h in shared:
            for k, value in inverted[h]:
                sums[k] += value
        return [s / norm for s in sums]


class ContextModel:
    """Entity profiles: tf-idf bags of the words around each entity's mentions."""

    def __init__(self, lang: str = "en") -> None:
        self.lang = lang
        self._counts: dict[str, Counter] = {}
        self._df: Counter = Counter()
        self._documents = 0
        self._nlp: Language | None = None
        self._built = False
        self._idf: dict[str, float] = {}
        self._default_idf = 1.0
        self._profiles: dict[str, dict[int, float]] = {}  # entity -> NORM hash -> weight
        self._hash_idf2: dict[int, float] = {}  # NORM hash -> idf² (0.0: no context word)
        self._inverse: dict[int, tuple[Sequence[tuple], dict[int, list]]] = {}

    # ------------------------------------------------------------------ words
    @property
    def nlp(self) -> Language:
        """The blank tokenizer whose NORMs are the words (same as the linker's)."""
        if self._nlp is None:
            self._nlp = spacy.blank(self.lang)
            self._nlp.vocab.lex_attr_getters[NORM] = token_norm
            for lexeme in self._nlp.vocab:
                lexeme.norm_ = token_norm(lexeme.orth_)
            self._nlp.max_length = 10**8
        return self._nlp

    def words(self, text: str, skip: Sequence[tuple[int, int]] = ()) -> list[str]:
        """Context words of ``text``, leaving out tokens that touch the char spans
        ``skip`` (the mentions)."""
        doc = self.nlp.make_doc(text)
        return [t.norm_ for t in doc
                if not _touches(t.idx, t.idx + len(t), skip) and is_context_word(t.norm_)]

    # ------------------------------------------------------------------ building
    def add(self, entity_ids: Iterable[str], words: Sequence[str]) -> None:
        """One document (a sentence, a description) of ``words`` about ``entity_ids``."""
        if not words:
            return
        self._built = False
        self._documents += 1
        self._df.update(set(words))
        for entity_id in entity_ids:
            self._counts.setdefault(entity_id, Counter()).update(words)

    def add_text(self, entity_ids: Iterable[str], text: str,
                 skip: Sequence[tuple[int, int]] = ()) -> None:
        """:meth:`add` the words of ``text`` outside the char spans ``skip``."""
        self.add(entity_ids, self.words(text, skip))

    def add_kg(self, kg: KnowledgeGraph) -> ContextModel:
        """Each KG entity's description (when it has one)."""
        for entity in kg.entities.values():
            if entity.description:
                self.add_text((entity.id,), entity.description)
        return self

    def _build(self) -> None:
        documents = max(1, self._documents)
        self._idf = {w: math.log((1 + documents) / (1 + c)) + 1 for w, c in self._df.items()}
        self._default_idf = math.log(1 + documents) + 1
        self._hash_idf2 = {hash_string(w): idf * idf for w, idf in self._idf.items()}
        self._profiles = {}
        for entity_id, counts in self._counts.items():
            weights = {w: c * self._idf[w] for w, c in counts.items()}
            norm = math.sqrt(sum(v * v for v in weights.values()))
            # unit tf-idf weight times the word's idf: a text's token then adds its share
            self._profiles[entity_id] = {hash_string(w): v / norm * self._idf[w]
                                         for w, v in weights.items()} if norm else {}
        self._inverse = {}
        self._built = True

    def _learn_hash(self, h: int, strings: Any) -> None:
        """Store the idf² of an unseen NORM hash (0.0 when it is no context word)."""
        text = strings[h] if h and h in strings else None
        idf = self._default_idf if text is not None and is_context_word(text) else 0.0
        if len(self._hash_idf2) > 2_000_000:
            self._build()
        self._hash_idf2[h] = idf * idf

    def _inverted(self, candidates: Sequence[tuple]) -> dict[int, list]:
        """``NORM hash -> [(candidate index, weight)]`` for one candidate list, cached
        per list object (the linker reuses them)."""
        found = self._inverse.get(id(candidates))
        if found is not None and found[0] is candidates:
            return found[1]
        inverted: dict[int, list] = {}
        for k, candidate in enumerate(candidates):
            for h, value in self._profiles.get(candidate[0], {}).items():
                inverted.setdefault(h, []).append((k, value))
        if len(self._inverse) > 100_000:
            self._inverse.clear()
        self._inverse[id(candidates)] = (candidates, inverted)
        return inverted

    # ------------------------------------------------------------------ queries
    def query(self, doc: Doc, skip: Sequence[tuple[int, int]] = ()) -> ContextQuery:
        """The words of a doc of the linker's tokenizer, leaving out the token spans
        ``skip``; its NORMs must be :func:`token_norm` (the linker's tokenizer)."""
        if not self._built:
            self._build()
        return ContextQuery(self, context_words(doc, skip), doc.vocab.strings)

    def query_text(self, text: str, skip: Sequence[tuple[int, int]] = ()) -> ContextQuery:
        """:meth:`query` of raw text, leaving out tokens that touch the char spans."""
        doc = self.nlp.make_doc(text)
        skipped = [(t.i, t.i + 1) for t in doc
                   if skip and _touches(t.idx, t.idx + len(t), skip)]
        return self.query(doc, skipped)

    def similarity(self, entity_id: str, text: str) -> float:
        """Cosine between an entity's profile and the words of ``text``."""
        return self.query_text(text).similarities([(entity_id,)])[0]

    def __contains__(self, entity_id: object) -> bool:
        return entity_id in self._counts

    def __len__(self) -> int:
        return len(self._counts)

    def __repr__(self) -> str:
        return f"ContextModel({len(self)} entities, {self._documents} documents)"

    def __getstate__(self) -> dict[str, Any]:  # the tokenizer is rebuilt, not pickled
        state = dict(self.__dict__)
        state["_nlp"] = None
        state["_built"] = False
        state["_inverse"] = {}
        return state

    # ------------------------------------------------------------------ storage
    def save(self, path: str | Path) -> Path:
        """Write JSON (a directory gets ``context.json``)."""
        path = Path(path)
        if path.is_dir():
            path = path / CONTEXT_FILE
        payload = {"format": _FORMAT, "version": 2, "lang": self.lang,
                   "documents": self._documents, "df": dict(self._df),
                   "counts": {e: dict(c) for e, c in self._counts.items()}}
        return write_json(path, payload, indent=None)

    @classmethod
    def load(cls, path: str | Path) -> ContextModel:
        """Read a model :meth:`save` wrote (a directory's ``context.json``)."""
        path = Path(path)
        if path.is_dir():
            path = path / CONTEXT_FILE
        payload = read_json(path, SavedFileError, what="no context model here")
        if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
            raise SavedFileError(path, None, f"not a context model (expected {_FORMAT!r})")
        model = cls(payload.get("lang", "en"))
        model._documents = int(payload.get("documents", 0))
        model._df = Counter(payload.get("df", {}))
        model._counts = {e: Counter(c) for e, c in payload.get("counts", {}).items()}
        return model


def context_words_python(doc: Doc, skip: Iterable[tuple[int, int]] = ()) -> set[int]:
    """The set of NORM hashes of the tokens outside the token spans ``skip`` (clipped to
    the doc; 0, no NORM, left out), added in token order like the compiled
    ``_speedups.context_words``, so both sets iterate alike and sum to the same bits."""
    hashes = doc.to_array(NORM).tolist()
    for start, end in skip:
        start, end = max(start, 0), min(end, len(hashes))
        if start < end:
            hashes[start:end] = [0] * (end - start)
    return {h for h in hashes if h}


context_words = speedups.context_words if speedups is not None else context_words_python


def _touches(start: int, end: int, spans: Sequence[tuple[int, int]]) -> bool:
    return any(start < e and s < end for s, e in spans)
