"""Entity resolution: the (span, entity) pairs of one text, turned into entity rows.

Spellings of an entity on its way in: a KG id (str), a table row (int), ``None`` ("not
known yet: link this span") and :data:`~ernie_kg.kg.vocab.NO_ENTITY` (0: "no entity, do
not link again", also what the linker's NIL mentions become). Task spans (head, tail,
mention) come first and win over other spans they overlap; spans still without an
entity are disambiguated together in one call of the linker, so they are coherent with
each other.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from ernie_kg.errors import SpanError
from ernie_kg.kg.vocab import NO_ENTITY
from ernie_kg.linking.linker import EntityLinker
from ernie_kg.processing.alignment import EntitySpan, resolve_overlaps
from ernie_kg.spans import Span, token_char_spans

__all__ = ["EntityArgument", "entity_links", "entity_row", "other_spans", "resolve_entities"]

#: What a caller may give for one span's entity: KG id, row, None (link it).
EntityArgument = str | int | None


def other_spans(
    text: str, kw: Mapping[str, Any], where: str, to_chars: Callable[[Any, str], Span],
    words: list[str] | None, linker: EntityLinker | None, detect_only: bool = False,
) -> list[tuple[Span, EntityArgument]]:
    """The non-task spans with their entities: the given ``entity_spans`` (ids, or None
    to link) or, without them, the linker's mentions of the whole text (NIL ones as
    :data:`NO_ENTITY`, so they are not linked again). ``detect_only`` leaves the
    mentions' entities None, for :func:`resolve_entities` to disambiguate them with the
    task spans in one pass (when some task span has no id)."""
    spans, ids = kw["entity_spans"], kw["entity_ids"]
    if spans is not None:
        if isinstance(spans, (str, bytes)) or not isinstance(spans, Sequence):
            raise SpanError(f"{where}entity_spans must be a list of (start, end) pairs")
        if ids is not None and (isinstance(ids, (str, bytes)) or len(ids) != len(spans)):
            raise SpanError(f"{where}entity_ids must be a list as long as entity_spans "
                            f"({len(spans)})")
        if ids is None and linker is None:
            raise ValueError(f"{where}entity_spans without entity_ids need a linker")
        return [(to_chars(span, f"entity_spans[{n}]"), None if ids is None else ids[n])
                for n, span in enumerate(spans)]
    if ids is not None:
        raise ValueError(f"{where}entity_ids given without entity_spans")
    if linker is None:
        return []
    if detect_only:
        spans = linker.mention_spans(text)
        if words is not None:  # mentions on token boundaries only, as link_tokens keeps
            chars = token_char_spans(words)
            starts, ends = {s for s, _ in chars}, {e for _, e in chars}
            spans = [(s, e) for s, e in spans if s in starts and e in ends]
        return [(span, None) for span in spans]
    detected = linker.link_tokens(words) if words is not None else linker(text)
    return [((m.start, m.end), NO_ENTITY if m.entity_id is None else m.entity_id)
            for m in detected]


def resolve_entities(
    text: str, task_spans: Mapping[str, Span], task_ids: dict[str, EntityArgument],
    others: list[tuple[Span, EntityArgument]], where: str, linker: EntityLinker | None,
    lookup: Callable[[str], int],
) -> list[EntitySpan]:
    """Entity rows of the task spans (first) and the other spans, in claim order.

    A given entity (an id, a row, or 0 for none) for the very same span fills a task
    span's missing id. Among the
    others, one entity per char: the longest of overlapping spans, then the leftmost.
    Spans still without an entity are linked together with the rest, once."""
    taken = list(task_spans.values())
    kept: list[tuple[Span, EntityArgument]] = []
    for span, entity in others:
        same = [role for role, s in task_spans.items() if s == span]
        for role in same:
            if task_ids[role] is None and entity is not None:
                task_ids[role] = entity
        if not same and not any(span[0] < e and s < span[1] for s, e in taken):
            kept.append((span, entity))
    order = resolve_overlaps([EntitySpan(s, e, n + 1) for n, ((s, e), _) in enumerate(kept)])
    slots = [(task_spans[role], task_ids[role]) for role in task_spans]
    slots += [kept[span.row - 1] for span in order]
    unresolved = [n for n, (_, entity) in enumerate(slots) if entity is None]
    if unresolved and linker is not None:
        linked = linker.link_spans(text, [span for span, _ in slots])
        for n in unresolved:
            slots[n] = (slots[n][0], linked[n].entity_id)
    entities = []
    for (start, end), entity in slots:
        row = entity_row(entity, where, lookup)
        if row > NO_ENTITY:
            entities.append(EntitySpan(start, end, row))
    return entities


def entity_row(entity: EntityArgument, where: str, lookup: Callable[[str], int]) -> int:
    """The table row of one entity argument: KG ids through ``lookup`` (0 when unknown),
    rows as given, None as :data:`NO_ENTITY`."""
    if entity is None:
        return NO_ENTITY
    if isinstance(entity, str):
        return lookup(entity)
    if isinstance(entity, bool) or not hasattr(entity, "__index__"):
        raise TypeError(f"{where}entity ids must be str (KG id), int (row) or None, "
                        f"got {entity!r}")
    entity = operator.index(entity)
    if entity < 0:
        raise ValueError(f"{where}entity row must be >= 0, got {entity}")
    return entity


def entity_links(rows: Sequence[int], entity_id: Callable[[int], str | None],
                 neighbours: Callable[[str], Collection[str]]) -> list[int]:
    """Per position of ``rows`` (entity-table rows, 0 = none): 1 where the KG has a fact,
    either direction, between that entity and another entity of the same rows, else 0.

    Why: in an open KG a test pair's own fact is missing, in a closed one it is there;
    the knowledge gate reads this bit to learn how far to trust each case."""
    ids = {row: entity_id(row) for row in set(rows) if row > NO_ENTITY}
    linked = {row for row, kg_id in ids.items() if kg_id is not None and any(
        other != row and other_id is not None and other_id in neighbours(kg_id)
        for other, other_id in ids.items())}
    return [1 if row in linked else 0 for row in rows]
