"""First-wordpiece alignment: one entity row per wordpiece, as ERNIE feeds its K-Encoder.

ERNIE puts a mention's entity on the first wordpiece of the mention and "no entity"
(row 0) everywhere else. Its own code found that wordpiece through whitespace tokens and
silently dropped mentions that did not start on one. Here a fast tokenizer's char offsets
locate the wordpiece holding the mention's first non-space character, so a mention is
dropped only when

* that wordpiece is not in the encoding (truncated away),
* another mention overlaps it and wins (longest first, then leftmost, then input order),
* another mention already put its entity on the same wordpiece, or
* its entity has no row in the entity table.

Works on raw text and on pre-tokenized input (``is_split_into_words=True``, whose
offsets are per word: they are moved onto ``" ".join(words)``), on single encodings and
on batches; special, padding and added marker tokens carry no entity unless a mention
covers them.
"""

from __future__ import annotations

import unicodedata
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ernie_kg.errors import SpanError
from ernie_kg.kg.embeddings import EntityEmbeddings
from ernie_kg.kg.vocab import NO_ENTITY, EntityVocab
from ernie_kg.linking.mentions import LinkedMention
from ernie_kg.spans import check_span, token_char_spans

__all__ = [
    "EntitySpan",
    "RowLookup",
    "align_batch",
    "align_entities",
    "align_offsets",
    "as_entity_spans",
    "resolve_overlaps",
    "row_lookup",
    "token_char_offsets",
]

#: Where entity rows come from: an :class:`EntityVocab`, :class:`EntityEmbeddings` (their
#: vocabulary), the list of ids of rows 1, 2, ..., ``{entity_id: row}`` or a function
#: (None/0 = no row).
RowLookup = (EntityVocab | EntityEmbeddings | Sequence[str] | Mapping[str, int]
             | Callable[[str], int | None])


@dataclass(frozen=True, slots=True)
class EntitySpan:
    """A half-open char span ``[start, end)`` whose first wordpiece gets ``row``."""

    start: int
    end: int
    row: int


#: A mention as :func:`align_entities` takes it: an EntitySpan, a LinkedMention or a
#: ``(start, end, row or entity_id)`` tuple.
MentionLike = EntitySpan | LinkedMention | tuple

# ---------------------------------------------------------------------- entity rows
class _RowFunction:
    """``entity_id -> row`` (0: no row) over a caller's mapping or function; a class, not
    a closure, so processors holding one can be pickled."""

    def __init__(self, source: Mapping[str, int] | Callable[[str], int | None]) -> None:
        self.source = source

    def __call__(self, entity_id: str) -> int:
        if isinstance(self.source, Mapping):
            return _checked_row(self.source.get(entity_id), entity_id)
        try:
            return _checked_row(self.source(entity_id), entity_id)
        except KeyError:  # e.g. UnknownIdError: no row
            return NO_ENTITY


def row_lookup(entity_rows: RowLookup) -> EntityVocab | _RowFunction:
    """A function ``entity_id -> row`` that answers 0 for ids without a row: the
    :class:`EntityVocab` itself where the rows are one (a vocabulary, embeddings, a list
    of ids, a mapping onto rows 1..n), else a wrapper of the caller's mapping or function.
    """
    if isinstance(entity_rows, (EntityVocab, _RowFunction)):
        return entity_rows
    if isinstance(entity_rows, EntityEmbeddings):
        return entity_rows.vocab
    if isinstance(entity_rows, Mapping):
        rows = list(entity_rows.values())
        if sorted(rows, key=lambda r: (r is None, r)) == list(range(1, len(rows) + 1)):
            return EntityVocab(sorted(entity_rows, key=entity_rows.get))
        return _RowFunction(entity_rows)
    if isinstance(entity_rows, Sequence) and not isinstance(entity_rows, (str, bytes)):
        if len(set(entity_rows)) == len(entity_rows):
            return EntityVocab(entity_rows)
        return _RowFunction({e: row for row, e in enumerate(entity_rows, start=1)})
    if callable(entity_rows):
        return _RowFunction(entity_rows)
    raise TypeError(
        "entity_rows must be an EntityVocab, EntityEmbeddings, a list of entity ids, a "
        f"{{entity_id: row}} mapping or a function, not {type(entity_rows).__name__}"
    )


def _checked_row(row: Any, entity_id: str) -> int:
    if row is None:
        return NO_ENTITY
    if isinstance(row, bool) or not isinstance(row, int) and not hasattr(row, "__index__"):
        raise TypeError(f"entity {entity_id!r}: row must be an int, got {row!r}")
    row = int(row)
    if row < 0:
        raise ValueError(f"entity {entity_id!r}: row must be >= 0 (0 = no entity), got {row}")
    return row


def as_entity_spans(
    mentions: Iterable[MentionLike], entity_rows: RowLookup | Callable[[str], int] | None = None
) -> list[EntitySpan]:
    """Mentions as :class:`EntitySpan` s; those without an entity row are left out.

    Takes :class:`EntitySpan`, :class:`~ernie_kg.linking.LinkedMention` (NIL = no row) and
    ``(start, end, row_or_entity_id)`` tuples; entity ids need ``entity_rows``.
    """
    lookup = None
    spans = []
    for n, mention in enumerate(mentions):
        if isinstance(mention, EntitySpan):
            start, end, target = mention.start, mention.end, mention.row
        elif isinstance(mention, LinkedMention):
            start, end, target = mention.start, mention.end, mention.entity_id
        else:
            try:
                start, end, target = mention
            except (TypeError, ValueError):
                raise SpanError(
                    f"mention {n} {mention!r}: expected (start, end, row or entity id), an "
                    "EntitySpan or a LinkedMention"
                ) from None
        if target is None:
            continue
        if isinstance(target, str):
            if lookup is None:
                if entity_rows is None:
                    raise TypeError(
                        f"mention {n} names entity {target!r}: pass entity_rows to map ids "
                        "to rows"
                    )
                lookup = row_lookup(entity_rows)
            row = lookup(target)
        else:
            row = _checked_row(target, f"of mention {n}")
        if row > 0:
            spans.append(EntitySpan(start, end, row))
    return spans


# ---------------------------------------------------------------------- overlaps
def _priority(indexed: tuple[int, EntitySpan]) -> tuple[int, int, int]:
    n, span = indexed
    return (span.start - span.end, span.start, n)


def resolve_overlaps(spans: Sequence[EntitySpan]) -> list[EntitySpan]:
    """Non-overlapping spans: longest first, then leftmost, then input order wins.

    Returned in that priority order (the order :func:`align_offsets` claims wordpieces).
    """
    kept: list[EntitySpan] = []
    starts: list[int] = []  # kept intervals, sorted by start (they never overlap)
    ends: list[int] = []
    for _, span in sorted(enumerate(spans), key=_priority):
        if span.start >= span.end:
            continue
        k = bisect_right(starts, span.start)
        if k and ends[k - 1] > span.start:
            continue  # the kept span on the left reaches into this one
        if k < len(starts) and starts[k] < span.end:
            continue  # this one reaches into the kept span on the right
        starts.insert(k, span.start)
        ends.insert(k, span.end)
        kept.append(span)
    return kept


# ---------------------------------------------------------------------- offsets
def _encoding_of(encoding: Any, batch_index: int) -> Any:
    """The ``tokenizers.Encoding`` of one sequence of a BatchEncoding (or itself)."""
    if hasattr(encoding, "offsets") and hasattr(encoding, "sequence_ids"):
        return encoding
    encodings = getattr(encoding, "encodings", None)
    if encodings is None:
        raise TypeError(
            "alignment needs the char offsets of a Hugging Face *fast* tokenizer (a "
            "BatchEncoding with .encodings, or a tokenizers.Encoding); use_fast=True"
        )
    if not 0 <= batch_index < len(encodings):
        raise IndexError(f"batch_index {batch_index} out of range: {len(encodings)} encodings")
    return encodings[batch_index]


def token_char_offsets(
    encoding: Any, text: str | Sequence[str], batch_index: int = 0, sequence_index: int = 0
) -> list[tuple[int, int] | None]:
    """Per token, its ``(start, end)`` chars in ``text`` (``" ".join(words)`` when
    ``text`` is a list of words), or None for special, padding and other-sequence tokens.
    """
    item = _encoding_of(encoding, batch_index)
    offsets = item.offsets
    sequence_ids = item.sequence_ids
    if isinstance(text, str):
        return [
            (a, b) if sid == sequence_index and b > a else None
            for (a, b), sid in zip(offsets, sequence_ids)
        ]
    word_starts = [start for start, _ in token_char_spans(list(text))]
    result: list[tuple[int, int] | None] = []
    for (a, b), sid, word in zip(offsets, sequence_ids, item.word_ids):
        if sid != sequence_index or b <= a or word is None or word >= len(word_starts):
            result.append(None)
        else:
            result.append((word_starts[word] + a, word_starts[word] + b))
    return result


def _dropped(chars: str) -> bool:
    """True when tokenizers emit nothing for ``chars``: spaces, controls, format marks."""
    return all(c.isspace() or unicodedata.category(c)[0] in "CZM" for c in chars)


# ---------------------------------------------------------------------- alignment
def align_offsets(
    offsets: Sequence[tuple[int, int] | None],
    text: str,
    spans: Sequence[EntitySpan],
    resolve: bool = True,
) -> list[int]:
    """Entity row per token: a span's row on the token holding its first non-space char.

    ``offsets`` gives each token's char span in ``text`` (None: special/padding). With
    ``resolve``, overlapping spans are reduced by :func:`resolve_overlaps` first; either
    way spans claim tokens in priority order, so one token never carries two entities.
    A span whose first wordpiece is missing (truncated) is dropped.
    """
    rows = [0] * len(offsets)
    content = sorted(
        (o[0], o[1], i) for i, o in enumerate(offsets) if o is not None and o[1] > o[0]
    )
    if not content:
        return rows
    starts = [c[0] for c in content]
    ordered = resolve_overlaps(spans) if resolve else list(spans)
    length = len(text)
    for span in ordered:
        if span.row <= 0:
            continue
        start, end = max(0, span.start), min(length, span.end)
        anchor = start
        while anchor < end and text[anchor].isspace():
            anchor += 1
        if anchor >= end:
            continue
        k = bisect_right(starts, anchor) - 1
        while k > 0 and content[k - 1][1] > anchor:
            k -= 1  # the earliest token holding the anchor
        if k >= 0 and content[k][1] > anchor:
            token = content[k][2]
        else:
            j = k + 1  # the anchor char produced no token: take the next one in the span
            if j >= len(content) or starts[j] >= end:
                continue
            gap_from = anchor if j == 0 else max(anchor, content[k][1])
            if not _dropped(text[gap_from:starts[j]]):
                continue  # text before it was cut away (left truncation)
            token = content[j][2]
        if rows[token] == 0:
            rows[token] = span.row
    return rows


def align_entities(
    encoding: Any,
    text: str | Sequence[str],
    mentions: Iterable[MentionLike],
    entity_rows: RowLookup | None = None,
    batch_index: int = 0,
    sequence_index: int = 0,
    resolve: bool = True,
) -> list[int]:
    """Entity rows (0 = none) for every token of one encoded sequence.

    ``encoding`` is a fast tokenizer's BatchEncoding (``batch_index`` picks the row) or
    a ``tokenizers.Encoding``; ``text`` is the string it encoded (for a text pair, the
    one at ``sequence_index``) or, for ``is_split_into_words=True``, the list of words;
    mention char spans then refer to ``" ".join(words)``. ``mentions`` are
    ``(start, end, row or entity_id)`` tuples, EntitySpans or LinkedMentions; ids are
    mapped with ``entity_rows`` (unknown ids: no entity). Spans outside the text raise
    :class:`~ernie_kg.errors.SpanError`.
    """
    joined = text if isinstance(text, str) else " ".join(text)
    spans = as_entity_spans(mentions, entity_rows)
    for n, span in enumerate(spans):
        check_span((span.start, span.end), len(joined), f"mention {n}")
    offsets = token_char_offsets(encoding, text, batch_index, sequence_index)
    return align_offsets(offsets, joined, spans, resolve)


def align_batch(
    encoding: Any,
    texts: Sequence[str | Sequence[str]],
    mentions: Sequence[Iterable[MentionLike]],
    entity_rows: RowLookup | None = None,
    sequence_index: int = 0,
    resolve: bool = True,
) -> list[list[int]]:
    """:func:`align_entities` for every row of a batch encoding (padding gets 0)."""
    if len(texts) != len(mentions):
        raise ValueError(f"got {len(texts)} texts but {len(mentions)} mention lists")
    lookup = row_lookup(entity_rows) if entity_rows is not None else None
    return [
        align_entities(encoding, text, found, lookup, n, sequence_index, resolve)
        for n, (text, found) in enumerate(zip(texts, mentions))
    ]
