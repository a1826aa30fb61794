"""The readers of a KG directory's files, streaming: one line in memory at a time.

``train.txt`` / ``valid.txt`` / ``test.txt`` hold ``head<TAB>relation<TAB>tail`` lines;
``entities.jsonl`` holds ``id``, ``label`` and optional ``aliases``, ``types``,
``description``; ``relations.jsonl`` holds ``id`` and ``label``. Every problem raises
:class:`KGFormatError` naming the file and the line. Files are read as bytes and each
line decoded on its own, so a progress callback can count bytes and a bad byte names
its line.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from ernie_kg.errors import KGFormatError
from ernie_kg.kg.records import Entity, Relation

__all__ = ["iter_entities", "iter_relations", "iter_triples"]

Progress = Callable[[int], None]  # called with the number of bytes read since last call
_FIELDS = ("head", "relation", "tail")
_REPORT_EVERY = 65536  # lines between progress calls


def _lines(path: Path, progress: Progress | None) -> Iterator[tuple[int, str]]:
    """``(line number, decoded line without its newline)`` per non-blank line."""
    read = 0
    with open(path, "rb") as raw_lines:
        for number, raw in enumerate(raw_lines, start=1):
            read += len(raw)
            if progress is not None and number % _REPORT_EVERY == 0:
                progress(read)
                read = 0
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as problem:
                raise KGFormatError(path, number, f"not UTF-8 text ({problem.reason})") from None
            if line.strip():
                yield number, line
    if progress is not None and read:
        progress(read)


def iter_triples(path: str | Path, progress: Progress | None = None
                 ) -> Iterator[tuple[int, str, str, str]]:
    """``(line number, head, relation, tail)`` per line of a triple file."""
    path = Path(path)
    for number, line in _lines(path, progress):
        fields = line.split("\t")
        if len(fields) != 3:
            raise KGFormatError(
                path, number,
                f"expected 3 tab-separated fields (head, relation, tail), got {len(fields)}",
            )
        head, relation, tail = fields[0].strip(), fields[1].strip(), fields[2].strip()
        if not (head and relation and tail):
            empty = _FIELDS[(head, relation, tail).index("")]
            raise KGFormatError(path, number, f"empty {empty} field")
        yield number, head, relation, tail


def _records(path: Path, progress: Progress | None) -> Iterator[tuple[int, dict]]:
    """Records of an optional JSONL file (none when it is absent), each with an id."""
    if not path.exists():
        return
    for number, line in _lines(path, progress):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as problem:
            raise KGFormatError(path, number, f"invalid JSON: {problem.msg}") from None
        if not isinstance(record, dict):
            raise KGFormatError(path, number, "expected a JSON object")
        if not isinstance(record.get("id"), str) or not record["id"]:
            raise KGFormatError(path, number, "missing or non-string field 'id'")
        yield number, record


def _string_list(path: Path, number: int, record: Mapping, name: str) -> tuple[str, ...]:
    value = record.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise KGFormatError(path, number, f"field '{name}' must be a list of strings")
    return tuple(value)


def _string(path: Path, number: int, record: Mapping, name: str) -> str:
    value = record.get(name, "")
    if not isinstance(value, str):
        raise KGFormatError(path, number, f"field '{name}' must be a string")
    return value


def _unique(path: Path, kind: str) -> Callable[[int, str], None]:
    """A check that raises on an id seen before, naming both lines."""
    seen: dict[str, int] = {}

    def check(number: int, identifier: str) -> None:
        first = seen.setdefault(identifier, number)
        if first != number:
            raise KGFormatError(
                path, number, f"duplicate {kind} id '{identifier}' (first on line {first})"
            )

    return check


def iter_entities(path: str | Path, progress: Progress | None = None
                  ) -> Iterator[tuple[int, Entity]]:
    """``(line number, Entity)`` per line of ``entities.jsonl`` (none when absent)."""
    path = Path(path)
    check = _unique(path, "entity")
    for number, record in _records(path, progress):
        check(number, record["id"])
        yield number, Entity(
            id=record["id"],
            label=_string(path, number, record, "label"),
            aliases=_string_list(path, number, record, "aliases"),
            types=_string_list(path, number, record, "types"),
            description=_string(path, number, record, "description"),
        )


def iter_relations(path: str | Path) -> Iterator[tuple[int, Relation]]:
    """``(line number, Relation)`` per line of ``relations.jsonl`` (none when absent)."""
    path = Path(path)
    check = _unique(path, "relation")
    for number, record in _records(path, None):
        check(number, record["id"])
        yield number, Relation(record["id"], _string(path, number, record, "label"))
