"""Mention detection: longest-match lookup of token n-grams in the alias patterns, and
optional NER.

A private ``spacy.blank(lang)`` pipeline tokenizes, so detection needs no downloaded
model. Its vocabulary's NORM getter is :func:`~ernie_kg.linking.normalize.token_norm`
(case-folded, accents stripped), computed once per word type, and patterns compare
NORMs, so "FÉLIX Trinidad" matches the alias "felix trinidad" at no per-token cost.
The vocabulary is private, so a user's own pipeline keeps its norms. The patterns
(:mod:`ernie_kg.linking.patterns`) are one hash table of token-NORM prefixes, built
from the alias table or memory-mapped from the KG index, instead of one spaCy pattern
doc per alias.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import spacy
from spacy.language import Language
from spacy.tokens import Doc

from ernie_kg.errors import ErnieKGError
from ernie_kg.linking.aliases import AliasTable
from ernie_kg.linking.patterns import AliasPatterns, detection_nlp

__all__ = ["LinkedMention", "LinkerConfigError", "Mention", "MentionDetector",
           "load_spacy_model"]


class LinkerConfigError(ErnieKGError, ValueError):
    """The linker was configured with something unusable (e.g. a missing spaCy model)."""


class LinkedMention(NamedTuple):
    """A mention with its entity (None = NIL); offsets are half-open chars in the text.

    ``candidates`` holds ``(entity_id, score)`` pairs, best first. ``token_start`` and
    ``token_end`` are token indices when the input was pre-tokenized. (An immutable
    named tuple: the linker makes one per mention, so it has to be cheap.)
    """

    start: int
    end: int
    text: str
    entity_id: str | None
    score: float
    candidates: tuple[tuple[str, float], ...] = ()
    token_start: int | None = None
    token_end: int | None = None

    @property
    def is_nil(self) -> bool:
        """True when no entity was chosen (a NIL mention)."""
        return self.entity_id is None

    def to_json(self) -> dict[str, Any]:
        """The mention as a JSON object (token positions only when known)."""
        record = self._asdict()
        record["candidates"] = [list(c) for c in self.candidates]
        if self.token_start is None:
            del record["token_start"], record["token_end"]
        return record


#: ``new_linked_mention((start, end, text, entity_id, score, candidates, None, None))``:
#: a :class:`LinkedMention` from all its fields in order, without the named tuple's
#: generated ``__new__`` (half the cost; the linker makes one per mention).
new_linked_mention = partial(tuple.__new__, LinkedMention)


@dataclass(frozen=True, slots=True)
class Mention:
    """A detected span: half-open char and token offsets, its alias key, its source."""

    start: int
    end: int
    key: str  # normalised alias key ("" when the span is not an alias)
    token_start: int
    token_end: int
    source: str = "alias"  # "alias" or "ner"


def load_spacy_model(name: str) -> Language:
    """``spacy.load(name)``, else the installed model package whose name starts with it."""
    try:
        return spacy.load(name)
    except OSError:
        pass
    for installed in sorted(spacy.util.get_installed_models()):
        if installed.startswith(name):
            return spacy.load(installed)
    raise LinkerConfigError(
        f"spaCy model {name!r} is not installed (needed because use_ner=True); install it "
        "(e.g. `pip install ernie-kg[ner]`) or set use_ner=False"
    )


class MentionDetector:
    """Finds alias occurrences (longest match wins, no overlaps) and optional NER spans."""

    def __init__(
        self,
        aliases: AliasTable,
        lang: str = "en",
        use_ner: bool = False,
        ner_model: str = "en_core_web_sm",
        skip_stop_words: bool = True,
        min_chars: int = 2,
    ) -> None:
        self.aliases = aliases
        self.use_ner = use_ner
        self.ner_model = ner_model
        self.skip_stop_words, self.min_chars = bool(skip_stop_words), int(min_chars)
        self.nlp = detection_nlp(lang)
        self._ner: Language | None = None
        self.patterns = self._patterns()
        # Tokenizing the aliases filled the tokenizer's chunk cache (10,000 entries);
        # re-setting the rules gives a fresh one, so running text gets the cache.
        if hasattr(self.nlp.tokenizer, "rules"):  # not on e.g. spaCy's Chinese tokenizer
            self.nlp.tokenizer.rules = self.nlp.tokenizer.rules

    def _patterns(self) -> AliasPatterns:
        """The alias index's own patterns when it has them, else built from the table."""
        prebuilt = getattr(self.aliases, "alias_patterns", None)
        if prebuilt is not None:
            return prebuilt(self.nlp)
        keys = list(self.aliases.keys())
        surfaces = ((i, key, surface) for i, key in enumerate(keys)
                    for surface in self.aliases.surfaces(key))
        return AliasPatterns.build(self.nlp, surfaces, keys.__getitem__)

    # ------------------------------------------------------------------ spaCy docs
    def make_doc(self, text: str) -> Doc:
        """``text`` run through the pipeline's tokenizer only."""
        return self.nlp.make_doc(text)

    def docs(self, texts: Iterable[str]) -> Iterator[tuple[str, Doc]]:
        """``(text, doc)`` pairs (``doc.text`` would rebuild the string token by token)."""
        make_doc = self.nlp.make_doc
        for text in texts:
            yield text, make_doc(text)

    @property
    def ner(self) -> Language:
        """The NER pipeline, loaded on first use."""
        if self._ner is None:
            self._ner = load_spacy_model(self.ner_model)
        return self._ner

    # ------------------------------------------------------------------ detection
    def detect(self, doc: Doc, ner_spans: Iterable[tuple[int, int]] = ()) -> list[Mention]:
        """Alias matches of ``doc`` (longest first, no overlaps) plus non-overlapping
        ``ner_spans`` (char spans), sorted by start."""
        return [Mention(*found) for found in self.spans(doc, ner_spans)]

    def spans(
        self, doc: Doc, ner_spans: Iterable[tuple[int, int]] = ()
    ) -> list[tuple[int, int, str, int, int, str]]:
        """:meth:`detect` as plain tuples ``(start, end, key, token_start, token_end,
        source)``: the linker's hot path, which runs once per sentence."""
        found = self.patterns.spans(doc, self.skip_stop_words, self.min_chars)
        if type(ner_spans) is not list:  # a tuple, generator, array...
            ner_spans = list(ner_spans)
        if not ner_spans:
            return found
        taken = bytearray(len(doc))
        for _, _, _, start, end, _ in found:
            taken[start:end] = b"\x01" * (end - start)
        for char_start, char_end in ner_spans:
            span = doc.char_span(char_start, char_end, alignment_mode="expand")
            if span is None or 1 in taken[span.start:span.end]:
                continue
            taken[span.start:span.end] = b"\x01" * len(span)
            found.append((char_start, char_end, "", span.start, span.end, "ner"))
        found.sort()
        return found

    def ner_spans(self, texts: Iterable[str], batch_size: int = 64) -> Iterator[list]:
        """Char spans of the NER pipeline's entities, one list per text."""
        for doc in self.ner.pipe(texts, batch_size=batch_size):
            yield [(ent.start_char, ent.end_char) for ent in doc.ents]
