"""Character and token spans: validation and maps, shared by linking, processing and data.

Convention: a span is a half-open ``(start, end)`` pair of offsets into the original text
(chars) or into a list of tokens; pre-tokenized text is ``" ".join(tokens)``, so a token
span maps to exactly one char span (:func:`token_char_spans`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ernie_kg.errors import SpanError

__all__ = ["Span", "check_span", "check_spans", "detokenize", "strip_span", "token_char_spans"]

Span = tuple[int, int]


def token_char_spans(tokens: Sequence[str]) -> list[Span]:
    """Char span of each token in ``" ".join(tokens)``."""
    spans = []
    position = 0
    for token in tokens:
        spans.append((position, position + len(token)))
        position += len(token) + 1
    return spans


def detokenize(tokens: Sequence[str]) -> tuple[str, list[Span]]:
    """``" ".join(tokens)`` and each token's char span in it."""
    return " ".join(tokens), token_char_spans(tokens)


def check_span(span: Any, length: int, name: str = "span", unit: str = "char") -> Span:
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


def check_spans(target: str | Sequence[str], spans: Any, unit: str = "char") -> list[Span]:
    """Validated ``[(start, end), ...]``: ints, ``0 <= start < end <= len(target)``.

    Raises :class:`~ernie_kg.errors.SpanError` (a ValueError) naming the span and why.
    """
    if spans is None or isinstance(spans, (str, bytes)):
        raise SpanError(f"spans must be a list of (start, end) pairs, got {spans!r}")
    length = len(target)
    return [check_span(span, length, f"span {n}", unit) for n, span in enumerate(spans)]


def strip_span(text: str, span: Span, name: str = "span") -> Span:
    """The span without surrounding whitespace; a span of only whitespace is an error."""
    start, end = span
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if start == end:
        raise SpanError(f"{name} {span}: covers only whitespace")
    return start, end
