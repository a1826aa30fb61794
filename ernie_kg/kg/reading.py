"""The readers of a KG directory's files, streaming: one line in memory at a time.

``train.txt`` / ``valid.txt`` / ``test.txt`` hold ``head<TAB>relation<TAB>tail`` lines;
``entities.jsonl`` holds ``id``, ``label`` and optional ``aliases``, ``types``,
``description``; ``relations.jsonl`` holds ``id`` and ``label``. Every problem raises
:class:`KGFormatError` naming the file and the line. Files are read as bytes and each
line decoded on its own, so a progress callback can count bytes and a bad byte names
its line.

A triple file is first read by :func:`triple_columns`: pyarrow's multi-threaded CSV
reader, whose columns the index maps to rows without a Python object per line (measured
on 2 cores: the 24M-fact synthetic KG's whole `kg index` went from 493 s to 428 s; the
line loop is the slow part at that size, not at 2.4M facts, where the store build took
11.6-14.0 s against 12.2-18.7 s). Whatever it cannot take
exactly as the line loop would (a parse error, surrounding whitespace, an empty field, a
byte-order mark) goes to :func:`iter_triples`, which reads the same values or names the
bad line.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ernie_kg.errors import KGFormatError
from ernie_kg.io import SurrogateRepair, decode_line
from ernie_kg.kg.records import Entity, Relation

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["iter_entities", "iter_relations", "iter_triples", "triple_columns"]

Progress = Callable[[int], None]  # called with the number of bytes read since last call
_FIELDS = ("head", "relation", "tail")
_REPORT_EVERY = 65536  # lines between progress calls
_EDGE_SEPARATORS = "^[\\x1c-\\x1f]|[\\x1c-\\x1f]$"


def _lines(path: Path, progress: Progress | None) -> Iterator[tuple[int, str]]:
    """``(line number, decoded line without its newline)`` per non-blank line."""
    read = 0
    with open(path, "rb") as raw_lines:
        for number, raw in enumerate(raw_lines, start=1):
            read += len(raw)
            if progress is not None and number % _REPORT_EVERY == 0:
                progress(read)
                read = 0
            line = decode_line(raw, path, number, KGFormatError).rstrip("\r\n")
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


def triple_columns(path: str | Path) -> tuple[pa.Array, pa.Array, pa.Array] | None:
    """The head, relation and tail columns of a triple file, exactly as
    :func:`iter_triples` reads them, or None when only it can say (see module doc)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from pyarrow import csv

    with open(path, "rb") as start:
        if start.read(3) == b"\xef\xbb\xbf":
            return None  # the line loop drops the byte-order mark: let it read the file
    try:
        table = csv.read_csv(
            path,
            read_options=csv.ReadOptions(column_names=list(_FIELDS)),
            parse_options=csv.ParseOptions(delimiter="\t", quote_char=False,
                                           double_quote=False, escape_char=False,
                                           newlines_in_values=False, ignore_empty_lines=True),
            convert_options=csv.ConvertOptions(  # 64-bit offsets: a column may pass 2 GB
                column_types=dict.fromkeys(_FIELDS, pa.large_string()),
                strings_can_be_null=False))
    except (pa.ArrowInvalid, OSError):
        return None
    columns = []
    for name in _FIELDS:
        column = table.column(name).combine_chunks()
        if len(column) and (
                pc.any(pc.equal(pc.utf8_length(column), 0)).as_py()
                or pc.any(pc.not_equal(pc.utf8_trim_whitespace(column), column)).as_py()
                # separators str.strip() removes and Unicode's White_Space does not
                or pc.any(pc.match_substring_regex(column, _EDGE_SEPARATORS)).as_py()):
            return None
        columns.append(column)
    return columns[0], columns[1], columns[2]


def _records(path: Path, progress: Progress | None) -> Iterator[tuple[int, dict]]:
    """Records of an optional JSONL file (none when it is absent), each with an id."""
    if not path.exists():
        return
    repair = SurrogateRepair(path)
    for number, line in _lines(path, progress):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as problem:
            raise KGFormatError(path, number, f"invalid JSON: {problem.msg}") from None
        if not isinstance(record, dict):
            raise KGFormatError(path, number, "expected a JSON object")
        if not isinstance(record.get("id"), str) or not record["id"]:
            raise KGFormatError(path, number, "missing or non-string field 'id'")
        yield number, repair(record, line, number)


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
