"""Dataset readers into :class:`RelationExample` / :class:`TypingExample`.

Formats: SemEval in FewRel format (FewRel itself: :mod:`ernie_kg.data.fewrel`), TACRED
JSON, OpenNRE-style JSONL with char spans, ERNIE-processed OpenEntity/FIGER JSON, and a
generic typing JSONL.
Malformed input raises :class:`DataFormatError` naming the file, the item and the field.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ernie_kg.data.examples import RelationExample, TypingExample, token_range_to_span
from ernie_kg.data.fewrel import read_fewrel
from ernie_kg.errors import DataFormatError, SpanError
from ernie_kg.io import iter_jsonl, read_json
from ernie_kg.spans import check_span, detokenize


def read_semeval(source: str | Path | Mapping[str, Any]) -> list[RelationExample]:
    """SemEval-2010 Task 8 in FewRel format: same layout, no KG ids."""
    return read_fewrel(source, gold_ids=False)


def read_tacred(path: str | Path) -> list[RelationExample]:
    """TACRED JSON: a list of ``{"token", "subj_start", "subj_end", "obj_*", "relation"}``."""
    path = Path(path)
    items = _json_list(path)
    examples = []
    for number, item in enumerate(items):
        try:
            tokens = item["token"]
            if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
                raise TypeError("'token' must be a list of strings")
            text, spans = detokenize(tokens)
            ranges = [check_span((item[f"{role}_start"], item[f"{role}_end"] + 1), len(tokens),
                                 f"{role}_start..{role}_end", "token") for role in ("subj", "obj")]
            head, tail = (token_range_to_span(spans, first, end - 1) for first, end in ranges)
            label = item["relation"]
        except KeyError as error:
            raise DataFormatError(path, None, f"item {number}: missing field {error}") from None
        except (TypeError, SpanError) as error:
            raise DataFormatError(path, None, f"item {number}: {error}") from None
        examples.append(RelationExample(text, head, tail, label))
    return examples


def _json_list(path: Path) -> list:
    items = read_json(path, DataFormatError, "no such data file")
    if not isinstance(items, list):
        raise DataFormatError(path, None, "expected a JSON list of items")
    return items


def _text_records(path: Path) -> Iterator[tuple[int, dict[str, Any], str]]:
    """``(line number, record, its "text")`` of each line of a JSONL file with texts."""
    for number, record in iter_jsonl(path, DataFormatError):
        text = record.get("text")
        if not isinstance(text, str):
            raise DataFormatError(path, number, "missing or non-string field 'text'")
        yield number, record, text


def _char_span(path: Path, number: int, text: str, value: Any, field: str) -> tuple[int, int]:
    try:
        return check_span(value, len(text), f"field '{field}'")
    except SpanError as error:
        raise DataFormatError(path, number, str(error)) from None


def read_relation_jsonl(path: str | Path) -> list[RelationExample]:
    """Lines ``{"text", "h": {"pos": [s, e], "id"?}, "t": {...}, "relation"}``, char spans."""
    path = Path(path)
    examples = []
    for number, record, text in _text_records(path):
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
    items = _json_list(path)
    examples = []
    for number, item in enumerate(items):
        try:
            text, labels = item["sent"], item["labels"]
            if not isinstance(text, str) or not isinstance(labels, list):
                raise TypeError("'sent' must be a string and 'labels' a list")
            start, end = check_span((item["start"], item["end"]), len(text), "start..end")
            labels = tuple(labels)
        except KeyError as error:
            raise DataFormatError(path, None, f"item {number}: missing field {error}") from None
        except (TypeError, SpanError) as error:
            raise DataFormatError(path, None, f"item {number}: {error}") from None
        entity_id = next(
            (a[0] for a in item.get("ents") or [] if isinstance(a, list) and len(a) >= 3
             and a[1] == start and a[2] == end), None
        )
        examples.append(TypingExample(text, (start, end), labels, entity_id))
    return examples


def read_typing_jsonl(path: str | Path) -> list[TypingExample]:
    """Lines ``{"text", "pos": [s, e], "labels": [...], "id"?}`` with char spans."""
    path = Path(path)
    examples = []
    for number, record, text in _text_records(path):
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
