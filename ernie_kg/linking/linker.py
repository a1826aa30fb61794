"""The entity linker: mention detection, candidate generation, disambiguation.

``EntityLinker.from_kg(kg)`` needs nothing downloaded: a blank spaCy tokenizer and a
phrase matcher over the KG's names find mentions; the alias prior, KG coherence and
(with a :class:`~ernie_kg.linking.context.ContextModel`) context profiles pick the entity
(:mod:`ernie_kg.linking.disambiguation`). Spans given by a dataset are linked with
:meth:`EntityLinker.link_spans`, which falls back from the exact alias key to the
punctuation-free key, an acronym, a root ("stem") key and, with ``fuzzy=True``, faiss
character n-gram neighbours. ``pipe(texts, n_process=2)`` links on worker processes.
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from spacy.tokens import Doc

from ernie_kg.errors import KGFormatError, SpanError
from ernie_kg.kg.embeddings import EntityEmbeddings
from ernie_kg.kg.graph import KnowledgeGraph
from ernie_kg.linking.aliases import ALIASES_FILE, AliasTable
from ernie_kg.linking.context import CONTEXT_FILE, ContextModel, ContextQuery
from ernie_kg.linking.disambiguation import Candidate, Disambiguator
from ernie_kg.linking.fewrel import token_char_spans
from ernie_kg.linking.fuzzy import FuzzyAliasIndex
from ernie_kg.linking.mentions import LinkerConfigError, Mention, MentionDetector
from ernie_kg.linking.normalize import cased_key
from ernie_kg.linking.parallel import LinkerPool, can_fork, usable_cpus

__all__ = ["DEFAULT_LINKER_CONFIG", "EntityLinker", "LinkedMention"]

#: Every linker setting with its default. Weights and back-off qualities were chosen on a
#: dev split carved out of the FewRel-16 training part (results/linking_fewrel16_dev.md).
#: A match quality of 0 switches that back-off off.
DEFAULT_LINKER_CONFIG: dict[str, Any] = {
    "lang": "en",
    "use_ner": False,  # extra recall from an installed spaCy NER pipeline
    "ner_model": "en_core_web_sm",
    "fuzzy": False,  # faiss character n-gram candidates for near-miss spellings
    "fuzzy_threshold": 0.55,  # least alias similarity for a fuzzy candidate
    "fuzzy_k": 5,  # alias keys a fuzzy lookup returns
    "fuzzy_sharpness": 8.0,  # fuzzy candidate weight: similarity ** sharpness * count
    "loose_similarity": 0.95,  # match quality of a punctuation-free key match
    "acronym_similarity": 0.9,  # match quality of an acronym match ("WTO")
    "stem_similarity": 0.8,  # match quality of a root ("stem") key match ("fencer")
    "nil_threshold": 0.25,  # least score (posterior * match quality) to link
    "coherence_weight": 4.0,  # 0 = prior only
    "coherence_window": 20,  # mentions on either side that count for coherence
    "context_weight": 2.0,  # weight of context-profile similarity (needs a ContextModel)
    "max_candidates": 10,
    "skip_stop_words": True,  # aliases made only of stop words/punctuation never match
    "min_chars": 2,  # shortest alias (non-space chars) the matcher uses
}
_DETECTION_KEYS = ("lang", "skip_stop_words", "min_chars", "use_ner", "ner_model")
_CONFIG_FILE = "linker.json"


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
        return self.entity_id is None

    def to_json(self) -> dict[str, Any]:
        record = self._asdict()
        record["candidates"] = [list(c) for c in self.candidates]
        if self.token_start is None:
            del record["token_start"], record["token_end"]
        return record


class EntityLinker:
    """Links text to KG entities. Build with :meth:`from_kg` or :meth:`load`."""

    def __init__(
        self,
        aliases: AliasTable,
        kg: KnowledgeGraph | None = None,
        embeddings: EntityEmbeddings | None = None,
        context: ContextModel | None = None,
        **config: Any,
    ) -> None:
        self.aliases = aliases
        self.kg = kg
        self.embeddings = embeddings
        self.context = context
        self.config = _checked_config(config)
        self._detector: MentionDetector | None = None
        self._fuzzy: FuzzyAliasIndex | None = None
        self._candidate_cache: dict[str, tuple[Candidate, ...]] = {}
        self._pool: LinkerPool | None = None
        self._setup()

    def _setup(self) -> None:
        c = self.config
        self.disambiguator = Disambiguator(
            self.kg, self.embeddings, c["coherence_weight"], c["coherence_window"],
            self.context, c["context_weight"],
        )
        self.nil_threshold = c["nil_threshold"]
        self.max_candidates = c["max_candidates"]

    # ------------------------------------------------------------------ building
    @classmethod
    def from_kg(
        cls,
        kg: KnowledgeGraph,
        embeddings: EntityEmbeddings | None = None,
        extra_aliases: AliasTable | str | Path | Mapping | Iterable[tuple] | None = None,
        use_ner: bool = False,
        fuzzy: bool = False,
        nil_threshold: float = DEFAULT_LINKER_CONFIG["nil_threshold"],
        coherence_weight: float = DEFAULT_LINKER_CONFIG["coherence_weight"],
        context: ContextModel | None = None,
        **config: Any,
    ) -> EntityLinker:
        """A linker over the KG's names plus ``extra_aliases`` (an :class:`AliasTable`,
        a saved table, a FewRel file/dict, ``{surface: id}`` or ``(surface, id, count)``
        rows). ``context`` (a :class:`ContextModel`) is used with ``context_weight``."""
        aliases = AliasTable.from_kg(kg)
        if extra_aliases is not None:
            aliases.update(AliasTable.coerce(extra_aliases))
        return cls(aliases, kg, embeddings, context, use_ner=use_ner, fuzzy=fuzzy,
                   nil_threshold=nil_threshold, coherence_weight=coherence_weight, **config)

    @classmethod
    def from_kg_dir(
        cls, kg_dir: str | Path, embeddings: EntityEmbeddings | None = None, **config: Any
    ) -> EntityLinker:
        """Load a KG directory; its ``aliases.json`` (when present) adds to the names."""
        kg = KnowledgeGraph.load(kg_dir)
        saved = Path(kg_dir) / ALIASES_FILE
        extra = AliasTable.load(saved) if saved.exists() else None
        return cls.from_kg(kg, embeddings, extra_aliases=extra, **config)

    def replace(self, **config: Any) -> EntityLinker:
        """A copy with other settings, sharing the alias table, KG and built indexes."""
        clone = copy.copy(self)
        clone.config = _checked_config({**self.config, **config})
        if any(clone.config[k] != self.config[k] for k in _DETECTION_KEYS):
            clone._detector = None
        clone._candidate_cache = {}
        clone._pool = None
        clone._setup()
        return clone

    @property
    def detector(self) -> MentionDetector:
        """The phrase matcher, built on first use (linking given spans never needs it)."""
        if self._detector is None:
            c = self.config
            self._detector = MentionDetector(
                self.aliases, c["lang"], c["use_ner"], c["ner_model"],
                c["skip_stop_words"], c["min_chars"],
            )
            self._detector.nlp.max_length = 10**8
        return self._detector

    @property
    def fuzzy_index(self) -> FuzzyAliasIndex:
        if self._fuzzy is None:
            self._fuzzy = FuzzyAliasIndex(self.aliases)
        return self._fuzzy

    # ------------------------------------------------------------------ raw text
    def __call__(self, text: str) -> list[LinkedMention]:
        """Detect and link every mention of ``text``."""
        return next(iter(self.pipe([text], batch_size=1)))

    def pipe(
        self, texts: Iterable[str], batch_size: int = 256, n_process: int = 1
    ) -> Iterator[list[LinkedMention]]:
        """:meth:`__call__` over many texts. ``n_process`` > 1 (-1: every usable CPU)
        links batches on that many forked worker processes (:mod:`.parallel`), kept
        for later calls; results come in input order either way."""
        checked = map(_checked_text, texts)
        if n_process < 0:
            n_process = usable_cpus()
        if n_process > 1 and can_fork():
            self.detector  # build everything the workers should inherit  # noqa: B018
            if self.config["fuzzy"]:
                self.fuzzy_index  # noqa: B018
            if self._pool is None or self._pool.processes != n_process:
                self.close()
                self._pool = LinkerPool(self, n_process)
            yield from self._pool.pipe(checked, batch_size)
            return
        yield from self._pipe_here(checked, batch_size)

    def _pipe_here(self, texts: Iterable[str], batch_size: int) -> Iterator[list[LinkedMention]]:
        """:meth:`pipe` in this process (the pool's workers, and its parent, run this)."""
        detector = self.detector
        if not self.config["use_ner"]:
            make_doc, link_doc = detector.nlp.make_doc, self._link_doc
            for text in texts:
                yield link_doc(text, make_doc(text), ())
            return
        for batch in _batches(texts, batch_size):
            ner = detector.ner_spans(batch, batch_size)
            for (text, doc), spans in zip(detector.docs(batch), ner):
                yield self._link_doc(text, doc, spans)

    def close(self) -> None:
        """Stop the worker processes of ``pipe(..., n_process=...)``, if any."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def link_doc(self, doc: Doc) -> list[LinkedMention]:
        """Link ``doc.text`` (any spaCy doc; it is re-tokenized by the linker's own
        tokenizer, so a user pipeline's vocabulary is left untouched)."""
        return self(doc.text)

    def _link_doc(
        self, text: str, doc: Doc, ner_spans: Iterable[tuple[int, int]]
    ) -> list[LinkedMention]:
        found = self._detector.spans(doc, ner_spans)
        if not found:
            return []
        cache = self._candidate_cache
        candidates = []
        for start, end, key, _, _, source in found:
            surface = text[start:end]
            if source != "alias":
                candidates.append(self.surface_candidates(surface))
                continue
            cached = cache.get(surface)
            if cached is None:
                cached = self._key_candidates(key, surface)
            candidates.append(cached)
        context = None
        if self.context is not None:
            def context() -> ContextQuery:
                return self.context.query(doc, [(m[3], m[4]) for m in found])
        return self._resolve(text, found, candidates, context)

    def _mention_candidates(self, mention: Mention, text: str) -> tuple[Candidate, ...]:
        surface = text[mention.start:mention.end]
        if mention.source != "alias":
            return self.surface_candidates(surface)
        found = self._candidate_cache.get(surface)
        return found if found is not None else self._key_candidates(mention.key, surface)

    def _key_candidates(self, key: str, surface: str) -> tuple[Candidate, ...]:
        found = tuple(
            (e, p, 1.0) for e, p in self.aliases.key_candidates(key, cased_key(surface))
        )[: self.max_candidates]
        self._remember(surface, found)
        return found

    def _remember(self, surface: str, found: tuple[Candidate, ...]) -> None:
        if len(self._candidate_cache) > 200_000:
            self._candidate_cache.clear()
        self._candidate_cache[surface] = found

    def _resolve(
        self, text: str, spans: Sequence[Sequence[Any]],
        candidates: Sequence[Sequence[Candidate]],
        context: Callable[[], ContextQuery] | None = None,
    ) -> list[LinkedMention]:
        """Disambiguate the mentions at ``spans`` (their first two items are the
        char ``start, end``; the detector's tuples pass as they are)."""
        if context is None and self.context is not None:
            def context() -> ContextQuery:
                return self.context.query_text(text, [(s[0], s[1]) for s in spans])
        ranked = self.disambiguator.rank(candidates, context)
        threshold, limit = self.nil_threshold, self.max_candidates
        linked = []
        for span, scores in zip(spans, ranked):
            start, end = span[0], span[1]
            if scores:
                best_id, best = scores[0]
                linked.append(LinkedMention(
                    start, end, text[start:end], best_id if best >= threshold else None,
                    best, tuple(scores[:limit]),
                ))
            else:
                linked.append(LinkedMention(start, end, text[start:end], None, 0.0, ()))
        return linked

    # ------------------------------------------------------------------ candidates
    def surface_candidates(self, surface: str) -> tuple[Candidate, ...]:
        """Candidates of an arbitrary span: exact key, then the first back-off that finds
        any: punctuation-free key, acronym ("WTO"), word-prefix ("stem") key, (with
        ``fuzzy``) faiss neighbours. Each is ``(entity_id, prior, match similarity)``."""
        cache_key = "\x00" + surface
        found = self._candidate_cache.get(cache_key)
        if found is not None:
            return found
        found = tuple((e, p, 1.0) for e, p in self.aliases.candidates(surface))
        c, aliases = self.config, self.aliases
        backoffs = (
            (c["loose_similarity"], aliases.loose_keys),
            (c["acronym_similarity"], aliases.acronym_keys),
            (c["stem_similarity"], aliases.stem_keys),
        )
        for quality, keys in backoffs:
            if found:
                break
            if quality > 0:  # 0 switches a back-off off
                found = self._pooled(keys(surface), quality)
        if not found and c["fuzzy"]:
            found = self._fuzzy_candidates(surface)
        found = found[: self.max_candidates]
        self._remember(cache_key, found)
        return found

    def _pooled(self, keys: Iterable[str], quality: float) -> tuple[Candidate, ...]:
        """Candidates of several alias keys, counts pooled, at one match quality."""
        counts: dict[str, float] = {}
        for key in keys:
            for entity_id, count in self.aliases.counts(key).items():
                counts[entity_id] = counts.get(entity_id, 0.0) + count
        total = sum(counts.values())
        popularity = self.aliases.entity_count
        ranked = sorted(counts.items(), key=lambda item: (-item[1], -popularity(item[0]),
                                                          item[0]))
        return tuple((e, c / total, quality) for e, c in ranked)

    def _fuzzy_candidates(self, surface: str) -> tuple[Candidate, ...]:
        c = self.config
        hits = self.fuzzy_index.search(surface, c["fuzzy_k"], c["fuzzy_threshold"])
        weight: dict[str, float] = {}
        quality: dict[str, float] = {}
        for key, similarity in hits:
            for entity_id, count in self.aliases.counts(key).items():
                w = similarity ** c["fuzzy_sharpness"] * count
                weight[entity_id] = weight.get(entity_id, 0.0) + w
                quality[entity_id] = max(quality.get(entity_id, 0.0), similarity)
        total = sum(weight.values())
        ranked = sorted(weight.items(), key=lambda item: (-item[1], item[0]))
        return tuple((e, w / total, quality[e]) for e, w in ranked)

    # ------------------------------------------------------------------ given input
    def link_spans(
        self, text: str, spans: Sequence[tuple[int, int]]
    ) -> list[LinkedMention]:
        """Disambiguate the given char spans only (e.g. a dataset's head and tail),
        together, so each is coherent with the others. Bad spans raise SpanError."""
        text = _checked_text(text)
        spans = check_spans(text, spans)
        candidates = [self.surface_candidates(text[s:e]) for s, e in spans]
        return self._resolve(text, spans, candidates)

    def link_tokens(self, tokens: Sequence[str]) -> list[LinkedMention]:
        """Link pre-tokenized input. Offsets are chars of ``" ".join(tokens)``; mentions
        start and end on token boundaries and carry token indices."""
        if isinstance(tokens, str) or not all(isinstance(t, str) for t in tokens):
            raise TypeError("link_tokens expects a sequence of strings (tokens)")
        tokens = list(tokens)
        char_spans = token_char_spans(tokens)
        starts = {s: i for i, (s, _) in enumerate(char_spans)}
        ends = {e: i + 1 for i, (_, e) in enumerate(char_spans)}
        linked = []
        for mention in self(" ".join(tokens)):
            if mention.start in starts and mention.end in ends:
                linked.append(_with_tokens(mention, starts[mention.start], ends[mention.end]))
        return linked

    def link_token_spans(
        self, tokens: Sequence[str], spans: Sequence[tuple[int, int]]
    ) -> list[LinkedMention]:
        """:meth:`link_spans` for token spans ``[start, end)`` of pre-tokenized input."""
        tokens = list(tokens)
        char_spans = token_char_spans(tokens)
        checked = check_spans(tokens, spans, unit="token")
        chars = [(char_spans[s][0], char_spans[e - 1][1]) for s, e in checked]
        linked = self.link_spans(" ".join(tokens), chars)
        return [_with_tokens(m, s, e) for m, (s, e) in zip(linked, checked)]

    # ------------------------------------------------------------------ storage
    def save(self, directory: str | Path) -> Path:
        """Write ``aliases.json``, ``linker.json`` and, with a context model,
        ``context.json`` (the KG is saved separately)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.aliases.save(directory / ALIASES_FILE)
        if self.context is not None:
            self.context.save(directory / CONTEXT_FILE)
        temporary = directory / (_CONFIG_FILE + ".tmp")
        temporary.write_text(json.dumps(self.config, indent=2), encoding="utf-8")
        os.replace(temporary, directory / _CONFIG_FILE)
        return directory

    @classmethod
    def load(
        cls,
        directory: str | Path,
        kg: KnowledgeGraph | None = None,
        embeddings: EntityEmbeddings | None = None,
        **config: Any,
    ) -> EntityLinker:
        """Read :meth:`save`'s directory; ``kg`` (and ``embeddings``) enable coherence."""
        directory = Path(directory)
        config_path = directory / _CONFIG_FILE
        saved: dict[str, Any] = {}
        if config_path.exists():
            try:
                saved = json.loads(config_path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as error:
                raise KGFormatError(
                    config_path, error.lineno, f"invalid JSON: {error.msg}"
                ) from None
        unknown = sorted(set(saved) - set(DEFAULT_LINKER_CONFIG))
        if unknown:  # written by another version: its other settings still apply
            warnings.warn(f"{config_path}: ignoring unknown linker settings {unknown}",
                          stacklevel=2)
            saved = {k: v for k, v in saved.items() if k in DEFAULT_LINKER_CONFIG}
        context = None
        if (directory / CONTEXT_FILE).exists():
            context = ContextModel.load(directory / CONTEXT_FILE)
        return cls(AliasTable.load(directory / ALIASES_FILE), kg, embeddings, context,
                   **{**saved, **config})

    def __repr__(self) -> str:
        return f"EntityLinker({self.aliases!r}, kg={self.kg!r})"


# ---------------------------------------------------------------------- helpers
def _checked_config(config: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(config) - set(DEFAULT_LINKER_CONFIG)
    if unknown:
        raise LinkerConfigError(
            f"unknown linker settings {sorted(unknown)}; known: {sorted(DEFAULT_LINKER_CONFIG)}"
        )
    merged = {**DEFAULT_LINKER_CONFIG, **config}
    for name in ("nil_threshold", "fuzzy_threshold", "loose_similarity", "stem_similarity",
                 "acronym_similarity"):
        if not 0.0 <= float(merged[name]) <= 1.0:
            raise LinkerConfigError(f"{name} must be in [0, 1], not {merged[name]!r}")
    for name in ("coherence_weight", "fuzzy_sharpness", "context_weight"):
        if float(merged[name]) < 0:
            raise LinkerConfigError(f"{name} must be >= 0, not {merged[name]!r}")
    for name in ("max_candidates", "fuzzy_k", "coherence_window", "min_chars"):
        if int(merged[name]) < (1 if name in ("max_candidates", "fuzzy_k") else 0):
            raise LinkerConfigError(f"{name} is too small: {merged[name]!r}")
    return merged


def _checked_text(text: Any) -> str:
    if not isinstance(text, str):
        raise TypeError(f"expected text as a str, got {type(text).__name__}")
    return text


def check_spans(
    target: str | Sequence[str], spans: Any, unit: str = "char"
) -> list[tuple[int, int]]:
    """Validated ``[(start, end), ...]``: ints, ``0 <= start < end <= len(target)``.

    Raises :class:`~ernie_kg.errors.SpanError` (a ValueError) naming the span and why.
    """
    if spans is None or isinstance(spans, (str, bytes)):
        raise SpanError(f"spans must be a list of (start, end) pairs, got {spans!r}")
    length = len(target)
    checked = []
    for n, span in enumerate(spans):
        checked.append(check_span(span, length, f"span {n}", unit))
    return checked


def check_span(span: Any, length: int, name: str = "span", unit: str = "char") -> tuple[int, int]:
    """One validated half-open span; ``name`` says which one in the error message."""
    try:
        start, end = span
    except (TypeError, ValueError):
        raise SpanError(f"{name} {span!r}: expected a (start, end) pair") from None
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in (start, end)):
        raise SpanError(f"{name} {span!r}: start and end must be integers ({unit} offsets)")
    if start < 0 or end > length:
        raise SpanError(
            f"{name} ({start}, {end}) is out of range: the text has {length} {unit}s"
        )
    if start > end:
        raise SpanError(f"{name} ({start}, {end}) is reversed: start must be < end")
    if start == end:
        raise SpanError(f"{name} ({start}, {end}) is empty: start must be < end")
    return start, end


def _with_tokens(mention: LinkedMention, start: int, end: int) -> LinkedMention:
    return LinkedMention(mention.start, mention.end, mention.text, mention.entity_id,
                         mention.score, mention.candidates, start, end)


def _batches(items: Iterable[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
