"""Dataset readers into :class:`RelationExample` / :class:`TypingExample`.

Formats: FewRel JSON (also SemEval in FewRel format), TACRED JSON, OpenNRE-style JSONL
with char spans, ERNIE-processed OpenEntity/FIGER JSON, and a generic typing JSONL.
Malformed input raises :class:`DataFormatError` naming the file, the item and the field.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ernie_kg.data.examples import (
    RelationExample,
    TypingExample,
    detokenize,
    token_range_to_span,
)
from ernie_kg.errors import DataFormatError

FewRelData = Mapping[str, list[Mapping[str, Any]]]


def load_fewrel(source: str | Path | FewRelData) -> tuple[str, FewRelData]:
    """Read a FewRel JSON file (or take a loaded dict); return (name, data)."""
    if isinstance(source, Mapping):
        return "<fewrel>", source
    path = Path(source)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataFormatError(path, None, "file not found") from None
    except json.JSONDecodeError as error:
        raise DataFormatError(path, error.lineno, f"invalid JSON: {error.msg}") from None
    if not isinstance(data, dict):
        raise DataFormatError(path, None, "expected a JSON object {relation: [instances]}")
    return str(path), data


def read_fewrel(source: str | Path | FewRelData, gold_ids: bool = True) -> list[RelationExample]:
    """FewRel format: ``{relation: [{"tokens", "h": [name, id, [[idx]]], "t": ...}]}``.

    ``gold_ids=False`` ignores the ids (SemEval in FewRel format has words, not KG ids).
    """
    name, data = load_fewrel(source)
    examples = []
    for relation, instances in data.items():
        for number, instance in enumerate(instances):
            where = f"relation {relation!r}, instance {number}"
            try:
                tokens = instance["tokens"]
                text, token_spans = detokenize(tokens)
                head = _fewrel_span(instance["h"], token_spans)
                tail = _fewrel_span(instance["t"], token_spans)
            except (KeyError, IndexError, TypeError, ValueError) as error:
                raise DataFormatError(name, None, f"{where}: bad field ({error!r})") from None
            examples.append(
                RelationExample(
                    text=text,
                    head=head,
                    tail=tail,
                    label=relation,
                    head_id=instance["h"][1] if gold_ids else None,
                    tail_id=instance["t"][1] if gold_ids else None,
                )
            )
    return examples


def _fewrel_span(mention: list, token_spans: list[tuple[int, int]]) -> tuple[int, int]:
    indices = mention[2][0]
    if not indices:
        raise ValueError("empty token index list")
    return token_range_to_span(token_spans, min(indices), max(indices))


def read_semeval(source: str | Path | FewRelData) -> list[RelationExample]:
    """SemEval-2010 Task 8 in FewRel format: same layout, no KG ids."""
    return read_fewrel(source, gold_ids=False)


def read_tacred(path: str | Path) -> list[RelationExample]:
    """TACRED JSON: a list of ``{"token", "subj_start", "subj_end", "obj_*", "relation"}``."""
    path = Path(path)
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataFormatError(path, error.lineno, f"invalid JSON: {error.msg}") from None
    examples = []
    for number, item in enumerate(items):
        try:
            text, spans = detokenize(item["token"])
            head = token_range_to_span(spans, item["subj_start"], item["subj_end"])
            tail = token_range_to_span(spans, item["obj_start"], item["obj_end"])
            label = item["relation"]
        except (KeyError, IndexError, TypeError) as error:
            raise DataFormatError(path, None, f"item {number}: bad field ({error!r})") from None
        examples.append(RelationExample(text, head, tail, label))
    return examples


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` per non-blank line; bad lines raise DataFormatError."""
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataFormatError(path, number, f"invalid JSON: {error.msg}") from None
            if not isinstance(record, dict):
                raise DataFormatError(path, number, "expected a JSON object")
            yield number, record


def _char_span(path: Path, number: int, text: str, value: Any, field: str) -> tuple[int, int]:
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or not all(isinstance(v, int) for v in value)
    ):
        raise DataFormatError(path, number, f"field '{field}' must be [start, end] integers")
    start, end = value
    if not 0 <= start < end <= len(text):
        raise DataFormatError(
            path, number, f"field '{field}' span [{start}, {end}) is outside the text "
            f"(length {len(text)}) or empty"
        )
    return start, end


def read_relation_jsonl(path: str | Path) -> list[RelationExample]:
    """Lines ``{"text", "h": {"pos": [s, e], "id"?}, "t": {...}, "relation"}``, char spans."""
    path = Path(path)
    examples = []
    for number, record in iter_jsonl(path):
        text = record.get("text")
        if not isinstance(text, str):
            raise DataFormatError(path, number, "missing or non-string field 'text'")
        head, tail = record.get("h"), record.get("t")
        if not isinstance(head, dict) or not isinstance(tail, dict):
            raise DataFormatError(path, number, "fields 'h' and 't' must be objects with 'pos'")
        examples.append(
            RelationExample(
                text=text,
                head=_char_span(path, number, text, head.get("pos"), "h.pos"),
                tail=_char_span(path, number, text, tail.get("pos"), "t.pos"),
                label=record.get("relation"),
                head_id=head.get("id"),
                tail_id=tail.get("id"),
            )
        )
    return examples


def read_typing_json(path: str | Path) -> list[TypingExample]:
    """ERNIE-processed OpenEntity/FIGER: ``[{"sent", "start", "end", "labels", "ents"}]``.

    The mention's KG id is taken from ``ents`` when an annotation covers the mention
    exactly (ERNIE's files carry TAGME annotations as ``[id, start, end, score]``).
    """
    path = Path(path)
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataFormatError(path, error.lineno, f"invalid JSON: {error.msg}") from None
    examples = []
    for number, item in enumerate(items):
        try:
            text, start, end = item["sent"], item["start"], item["end"]
            labels = tuple(item["labels"])
        except (KeyError, TypeError) as error:
            raise DataFormatError(path, None, f"item {number}: bad field ({error!r})") from None
        entity_id = next(
            (a[0] for a in item.get("ents", []) if a[1] == start and a[2] == end), None
        )
        examples.append(TypingExample(text, (start, end), labels, entity_id))
    return examples


def read_typing_jsonl(path: str | Path) -> list[TypingExample]:
    """Lines ``{"text", "pos": [s, e], "labels": [...], "id"?}`` with char spans."""
    path = Path(path)
    examples = []
    for number, record in iter_jsonl(path):
        text = record.get("text")
        if not isinstance(text, str):
            raise DataFormatError(path, number, "missing or non-string field 'text'")
        labels = record.get("labels", [])
        if not isinstance(labels, list):
            raise DataFormatError(path, number, "field 'labels' must be a list")
        span = _char_span(path, number, text, record.get("pos"), "pos")
        examples.append(TypingExample(text, span, tuple(labels), record.get("id")))
    return examples


def typed_mentions(
    examples: list[RelationExample], types_of: Mapping[str, Any]
) -> list[TypingExample]:
    """Typing examples from relation examples: each head and tail whose KG id has types
    in ``types_of`` (``id -> [type, ...]``: a KG's entity types, or Wikidata instance-of
    lists such as CoDEx's ``entity2types.json``) becomes one mention. Mentions without an
    id or without types are skipped."""
    typed = []
    for example in examples:
        for span, entity_id in ((example.head, example.head_id), (example.tail, example.tail_id)):
            types = types_of.get(entity_id) if entity_id is not None else None
            if types:
                typed.append(TypingExample(example.text, span, tuple(types), entity_id))
    return typed
