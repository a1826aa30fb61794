"""Marker insertion and the truncation window that keeps the marked spans.

A task marks its spans with marker tokens (ERNIE: '#' around the head, '$' around the
tail; here '@' around a typed mention), inserted into the text before tokenization so
the markers become whole wordpieces. When the text is too long, the window of kept
wordpieces is centred on the markers, so truncation never cuts a task span away.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ernie_kg.errors import SpanError
from ernie_kg.spans import Span

__all__ = ["DEFAULT_MARKERS", "check_marker_tokens", "check_nesting", "insert_markers",
           "token_at", "truncation_window", "unmarked_offsets"]

#: ERNIE's choice for relation classification; '@' marks a typed mention.
DEFAULT_MARKERS: dict[str, str] = {
    "head_start": "#", "head_end": "#",
    "tail_start": "$", "tail_end": "$",
    "mention_start": "@", "mention_end": "@",
}


def check_marker_tokens(tokenizer: Any, markers: Mapping[str, str], roles: Sequence[str],
                        ) -> None:
    """Raise ValueError unless each marker of ``roles`` is one known token of
    ``tokenizer`` (so it stays one wordpiece and needs no new embedding)."""
    for role in roles:
        for edge in ("start", "end"):
            name = f"{role}_{edge}"
            marker = markers[name]
            ids = tokenizer(marker, add_special_tokens=False, verbose=False)["input_ids"]
            if not marker.strip() or len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
                raise ValueError(
                    f"marker {name}={marker!r} is not a single known token of the "
                    f"tokenizer (it gives {ids}); pick a vocabulary character or add it "
                    "with tokenizer.add_tokens and resize the model's embeddings"
                )


def check_nesting(spans: Mapping[str, Span], where: str = "") -> None:
    """Raise :class:`SpanError` when two task spans cross (their markers cannot nest)."""
    items = list(spans.items())
    for i, (a, (s1, e1)) in enumerate(items):
        for b, (s2, e2) in items[i + 1:]:
            if s1 < s2 < e1 < e2 or s2 < s1 < e2 < e1:
                raise SpanError(
                    f"{where}{a} ({s1}, {e1}) and {b} ({s2}, {e2}) overlap without one "
                    "containing the other, so their markers cannot be nested"
                )


def insert_markers(
    text: str, task_spans: Mapping[str, Span], markers: Mapping[str, str]
) -> tuple[str, Callable[[int], int], dict[str, int]]:
    """The text with each role's start/end markers inserted, a map old char -> new char,
    and each marker's char in the new text (``"{role}_start"``, ``"{role}_end"``)."""
    inserts = []  # (position, order at that position, string, marker name)
    for n, (role, (start, end)) in enumerate(task_spans.items()):
        length = end - start
        # at one position: ends before starts, inner ends first, outer starts first
        # (the earlier role counts as outer when two spans are equal)
        inserts.append((start, (1, -length, n), markers[f"{role}_start"] + " ",
                        f"{role}_start"))
        inserts.append((end, (0, length, -n), " " + markers[f"{role}_end"], f"{role}_end"))
    inserts.sort(key=lambda x: x[:2])
    pieces, positions, cumulative, marker_chars = [], [], [], {}
    last = added = 0
    for position, _, string, name in inserts:
        pieces.append(text[last:position])
        new_position = position + added
        marker_chars[name] = new_position + (0 if name.endswith("_start") else 1)
        pieces.append(string)
        added += len(string)
        positions.append(position)
        cumulative.append(added)
        last = position
    pieces.append(text[last:])

    def shift(char: int) -> int:
        k = bisect_right(positions, char)
        return char + (cumulative[k - 1] if k else 0)

    return "".join(pieces), shift, marker_chars


def unmarked_offsets(offsets: Sequence[tuple[int, int]], length: int,
                     shift: Callable[[int], int]) -> list[tuple[int, int]]:
    """Wordpiece char spans in the marked text (:func:`insert_markers`) as spans in the
    original text of ``length`` chars; a marker's wordpiece gets ``(0, 0)``, as special
    tokens do."""
    origin = {shift(char): char for char in range(length)}
    return [(origin[start], origin.get(end - 1, origin[start]) + 1)
            if end > start and start in origin else (0, 0) for start, end in offsets]


def token_at(offsets: Sequence[tuple[int, int]], char: int) -> int:
    """The token whose char span holds ``char`` (markers are whole tokens)."""
    for k, (start, end) in enumerate(offsets):
        if start <= char < end:
            return k
    raise RuntimeError(f"no token at char {char}: the marker vanished in tokenization")


def truncation_window(
    length: int, budget: int, markers: Mapping[str, int], roles: Sequence[str]
) -> list[int]:
    """Token indices to keep: ``budget`` tokens holding every start marker (and, when
    they fit, every end marker, else the wordpiece after each start marker), centred on
    the marked spans; if the spans lie too far apart, one window from each start
    marker, joined."""
    if not markers:
        return list(range(budget))
    if budget < len(roles):
        raise ValueError(f"max_length leaves {budget} wordpieces for text: too few to keep "
                         f"the {len(roles)} start markers")
    starts = [markers[f"{role}_start"] for role in roles]
    firsts = starts + [min(length - 1, k + 1) for k in starts]  # + each first wordpiece
    for needed in (list(markers.values()), firsts, starts):
        low, high = min(needed), max(needed)
        if high - low + 1 <= budget:
            start = max(0, min(low - (budget - (high - low + 1)) // 2, length - budget))
            return list(range(start, start + budget))
    return _joined_windows(length, budget, markers, roles)


def _joined_windows(
    length: int, budget: int, markers: Mapping[str, int], roles: Sequence[str]
) -> list[int]:
    """Each role its share of the budget: its start marker first, then its words, then
    context after the first region and before it."""
    share = [budget // len(roles) + (1 if n < budget % len(roles) else 0)
             for n in range(len(roles))]
    regions = []
    for role, size in sorted(zip(roles, share), key=lambda x: markers[f"{x[0]}_start"]):
        first = markers[f"{role}_start"]
        regions.append((first, min(length, first + size)))
    kept: set[int] = set()
    for first, stop in regions:
        kept.update(range(first, stop))
    spare = budget - len(kept)
    extra = regions[0][1]
    while spare > 0 and extra < length:  # fill with the text after the first region
        if extra not in kept:
            kept.add(extra)
            spare -= 1
        extra += 1
    back = regions[0][0] - 1
    while spare > 0 and back >= 0:
        kept.add(back)
        spare -= 1
        back -= 1
    return sorted(kept)
