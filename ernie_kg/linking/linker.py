"""The entity linker: mention detection, candidate generation, disambiguation.

``EntityLinker.from_kg(kg)`` needs nothing downloaded: a blank spaCy tokenizer and the
alias patterns (:mod:`~ernie_kg.linking.patterns`) find mentions of the KG's names; the
alias prior, KG coherence and (with a :class:`~ernie_kg.linking.context.ContextModel`)
context profiles pick the entity (:mod:`ernie_kg.linking.disambiguation`). Spans given
by a dataset are linked with :meth:`EntityLinker.link_spans`, which falls back from the
exact alias key to the punctuation-free key, an acronym, a root ("stem") key and, with
``fuzzy=True``, faiss character n-gram neighbours. ``pipe(texts, n_process=2)`` links
on worker processes. :meth:`EntityLinker.from_kg_dir` links with a KG directory's
memory-mapped alias index (:mod:`~ernie_kg.linking.alias_index`).
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from spacy.tokens import Doc

from ernie_kg.io import read_json, write_json
from ernie_kg.kg.embeddings import EntityEmbeddings
from ernie_kg.kg.graph import KnowledgeGraph
from ernie_kg.linking.alias_index import REFERENCE_FILE, AliasIndex, open_alias_index
from ernie_kg.linking.aliases import ALIASES_FILE, AliasTable
from ernie_kg.linking.candidates import fuzzy_candidates, pooled_candidates
from ernie_kg.linking.context import CONTEXT_FILE, ContextModel, ContextQuery
from ernie_kg.linking.disambiguation import Candidate, Disambiguator
from ernie_kg.linking.fuzzy import FuzzyAliasIndex
from ernie_kg.linking.mentions import (
    LinkedMention,
    Mention,
    MentionDetector,
    new_linked_mention,
)
from ernie_kg.linking.normalize import cased_key
from ernie_kg.linking.parallel import LinkerPool, can_fork, usable_cpus
from ernie_kg.linking.settings import DEFAULT_LINKER_CONFIG, checked_config
from ernie_kg.spans import check_spans, token_char_spans

__all__ = ["DEFAULT_LINKER_CONFIG", "EntityLinker", "LinkedMention"]

_DETECTION_KEYS = ("lang", "skip_stop_words", "min_chars", "use_ner", "ner_model")
_CONFIG_FILE = "linker.json"


class EntityLinker:
    """Links text to KG entities. Build with :meth:`from_kg` or :meth:`load`."""

    def __init__(
        self,
        aliases: AliasTable | AliasIndex,
        kg: KnowledgeGraph | None = None,
        embeddings: EntityEmbeddings | None = None,
        context: ContextModel | None = None,
        **config: Any,
    ) -> None:
        self.aliases = aliases
        self.kg = kg
        self.embeddings = embeddings
        self.context = context
        self.config = checked_config(config)
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
        *,
        aliases: AliasTable | None = None,
        context: ContextModel | None = None,
        **config: Any,
    ) -> EntityLinker:
        """A linker over ``kg``: ``aliases`` is the finished alias table, used as it is
        and not copied, so finish it first (default: the KG's names,
        :meth:`AliasTable.from_kg`; add to that table for more); ``embeddings`` add their
        similarity to coherence; ``context`` (a :class:`ContextModel`) is used with
        ``context_weight``; ``config`` overrides :data:`DEFAULT_LINKER_CONFIG`."""
        if "extra_aliases" in config:
            raise TypeError("extra_aliases is gone: pass the finished table as aliases=, "
                            "e.g. AliasTable.from_kg(kg).update(extra)")
        if aliases is None:
            aliases = AliasTable.from_kg(kg)
        elif not isinstance(aliases, (AliasTable, AliasIndex)):
            raise TypeError(f"aliases must be a finished AliasTable, not "
                            f"{type(aliases).__name__} (build one with AliasTable.from_kg "
                            "and add to it)")
        return cls(aliases, kg, embeddings, context, **config)

    @classmethod
    def from_kg_dir(
        cls,
        kg_dir: str | os.PathLike,
        embeddings: EntityEmbeddings | None = None,
        linker_dir: str | os.PathLike | None = None,
        *,
        progress: bool = False,
        workers: int = 1,
        **config: Any,
    ) -> EntityLinker:
        """The one way from a KG directory to a linker: the KG and its alias index are
        built once on disk (:mod:`ernie_kg.kg.store`, :mod:`.alias_index`) and memory-mapped;
        the index holds the KG's names plus ``KG_DIR/aliases.json`` (extra surfaces) when
        present. With ``linker_dir``, the table and settings of a saved linker.
        ``progress`` shows the first build; ``workers`` > 1 builds the alias index in
        that many processes (spawned: call it under ``if __name__ == "__main__":``)."""
        kg = KnowledgeGraph.load(kg_dir, progress=progress)
        if linker_dir is not None:
            return cls.load(linker_dir, kg, embeddings, **config)
        lang = config.get("lang", DEFAULT_LINKER_CONFIG["lang"])
        aliases = open_alias_index(kg.store, kg_dir, lang, progress=progress, workers=workers)
        return cls(aliases, kg, embeddings, **config)

    def replace(self, **config: Any) -> EntityLinker:
        """A copy with other settings, sharing the alias table, KG and built indexes."""
        clone = copy.copy(self)
        clone.config = checked_config({**self.config, **config})
        if any(clone.config[k] != self.config[k] for k in _DETECTION_KEYS):
            clone._detector = None
        clone._candidate_cache = {}
        clone._pool = None
        clone._setup()
        return clone

    @property
    def detector(self) -> MentionDetector:
        """The mention detector, built on first use (linking given spans never needs it)."""
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
        """The fuzzy alias index, built on first use."""
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
                linked.append(new_linked_mention((
                    start, end, text[start:end], best_id if best >= threshold else None,
                    best, scores[:limit], None, None)))
            else:
                linked.append(new_linked_mention((
                    start, end, text[start:end], None, 0.0, (), None, None)))
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
                found = pooled_candidates(aliases, keys(surface), quality)
        if not found and c["fuzzy"]:
            found = fuzzy_candidates(aliases, self.fuzzy_index.search(
                surface, c["fuzzy_k"], c["fuzzy_threshold"]), c["fuzzy_sharpness"])
        found = found[: self.max_candidates]
        self._remember(cache_key, found)
        return found

    # ------------------------------------------------------------------ given input
    def mention_spans(self, text: str) -> list[tuple[int, int]]:
        """Char spans of the mentions :meth:`__call__` would link, detected only (no
        candidates, no disambiguation): for callers that disambiguate them together with
        spans of their own in one :meth:`link_spans` call."""
        detector = self.detector
        ner = next(detector.ner_spans([text], 1)) if self.config["use_ner"] else ()
        return [(m[0], m[1]) for m in detector.spans(detector.nlp.make_doc(text), ner)]

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
    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``aliases.json`` (or, over a KG's alias index, ``alias_index.json``: the
        KG's path and hash, not a copy), ``linker.json`` and, with a context model,
        ``context.json`` (the KG is saved separately)."""
        directory = Path(directory)
        if isinstance(self.aliases, AliasIndex):
            write_json(directory / REFERENCE_FILE, self.aliases.reference())
            stale = directory / ALIASES_FILE
        else:
            self.aliases.save(directory / ALIASES_FILE)
            stale = directory / REFERENCE_FILE
        stale.unlink(missing_ok=True)  # a save over another kind of linker: one table
        if self.context is not None:
            self.context.save(directory / CONTEXT_FILE)
        write_json(directory / _CONFIG_FILE, self.config)
        return directory

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike,
        kg: KnowledgeGraph | None = None,
        embeddings: EntityEmbeddings | None = None,
        **config: Any,
    ) -> EntityLinker:
        """Read :meth:`save`'s directory; ``kg`` (and ``embeddings``) enable coherence."""
        directory = Path(directory)
        config_path = directory / _CONFIG_FILE
        saved: dict[str, Any] = read_json(config_path) if config_path.exists() else {}
        unknown = sorted(set(saved) - set(DEFAULT_LINKER_CONFIG))
        if unknown:  # written by another version: its other settings still apply
            warnings.warn(f"{config_path}: ignoring unknown linker settings {unknown}",
                          stacklevel=2)
            saved = {k: v for k, v in saved.items() if k in DEFAULT_LINKER_CONFIG}
        context = None
        if (directory / CONTEXT_FILE).exists():
            context = ContextModel.load(directory / CONTEXT_FILE)
        settings = {**saved, **config}
        if (directory / REFERENCE_FILE).exists():
            aliases: AliasTable | AliasIndex = AliasIndex.from_reference(
                directory / REFERENCE_FILE, kg.store if kg is not None else None,
                settings.get("lang", DEFAULT_LINKER_CONFIG["lang"]))
        else:
            aliases = AliasTable.load(directory / ALIASES_FILE)
        return cls(aliases, kg, embeddings, context, **settings)

    def __repr__(self) -> str:
        return f"EntityLinker({self.aliases!r}, kg={self.kg!r})"


# ---------------------------------------------------------------------- helpers
def _checked_text(text: Any) -> str:
    if not isinstance(text, str):
        raise TypeError(f"expected text as a str, got {type(text).__name__}")
    return text


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
