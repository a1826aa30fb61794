"""One example type per task: raw text plus half-open character spans.

Every reader (FewRel, TACRED, SemEval, JSONL, OpenEntity/FIGER) produces these, so
feature building, training and inference share one item format (as OpenNRE does).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

Span = tuple[int, int]


@dataclass(frozen=True)
class RelationExample:
    """A sentence, its head and tail spans, optional KG ids of both, and the label.

    An id of 0 (the entity table's "no entity" row) means: no entity, do not link."""

    text: str
    head: Span
    tail: Span
    label: str | None = None
    head_id: str | int | None = None
    tail_id: str | int | None = None

    @property
    def head_text(self) -> str:
        """The head mention's text."""
        return self.text[self.head[0] : self.head[1]]

    @property
    def tail_text(self) -> str:
        """The tail mention's text."""
        return self.text[self.tail[0] : self.tail[1]]


@dataclass(frozen=True)
class PairExample:
    """A text, an optional second text (segment B of a BERT sentence pair, e.g. an
    auxiliary question about an aspect) and the label; entities come from the linker."""

    text: str
    text_pair: str | None = None
    label: str | None = None


@dataclass(frozen=True)
class TypingExample:
    """A sentence, one mention span, optional KG id, and its (multi-label) types."""

    text: str
    mention: Span
    labels: tuple[str, ...] = field(default_factory=tuple)
    entity_id: str | None = None

    @property
    def mention_text(self) -> str:
        """The mention's text."""
        return self.text[self.mention[0] : self.mention[1]]


def token_range_to_span(token_spans: Sequence[Span], first: int, last: int) -> Span:
    """Char span covering tokens ``first..last`` (inclusive)."""
    return token_spans[first][0], token_spans[last][1]
