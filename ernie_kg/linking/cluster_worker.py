"""The Dask tasks of cluster linking (:mod:`ernie_kg.linking.cluster`), run on the
workers: each worker process keeps one linker, built once from its spec, and links the
byte range of one shard into an atomic part file."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ernie_kg.errors import DataFormatError, ErnieKGError
from ernie_kg.io import SurrogateRepair, decode_line, jsonl_record, write_atomic
from ernie_kg.linking.files import EXPECTED, linked_line

if TYPE_CHECKING:
    from ernie_kg.linking.cluster import LinkerSpec

__all__ = ["link_shard", "load_on_worker"]

_LINKERS: dict[str, Any] = {}
_LOCK = threading.Lock()  # one shard at a time per process: a linker is not thread-safe


def _worker_linker(spec: LinkerSpec) -> Any:
    linker = _LINKERS.get(spec.key)
    if linker is None:
        linker = spec.build()
        linker.detector  # built now, not inside the first shard  # noqa: B018
        _LINKERS.clear()  # one linker per worker: a new spec replaces the last one
        _LINKERS[spec.key] = linker
    return linker


def load_on_worker(spec: LinkerSpec) -> str | None:
    """A task pinned to each worker: load the linker now (in the worker's thread, not
    its event loop); an error comes back as text."""
    try:
        with _LOCK:
            _worker_linker(spec)
    except Exception as error:  # reported by the driver, naming the worker
        return f"{type(error).__name__}: {error}"
    return None


def link_shard(spec: LinkerSpec, source: str, first_byte: int, end_byte: int,
               first_line: int, lines: int, part: str) -> dict[str, Any]:
    """A Dask task: link one shard of ``source`` into ``part`` (atomically). A bad line
    comes back as ``{"error": [path, line, message]}``: the file-naming error classes do
    not survive pickling."""
    path = Path(source)
    try:
        with open(path, "rb") as handle:
            handle.seek(first_byte)
            raw = handle.read(end_byte - first_byte)
        rows = raw.split(b"\n")
        if rows and not rows[-1]:
            rows.pop()
        if len(rows) != lines:
            raise ErnieKGError(f"{path}: lines {first_line}-{first_line + lines - 1} changed "
                               "while being linked")
        repair, out, mentions = SurrogateRepair(path), [], 0
        with _LOCK:
            linker = _worker_linker(spec)
            for number, row in enumerate(rows, start=first_line):
                line = decode_line(row, path, number, DataFormatError).rstrip("\r\n")
                record = jsonl_record(line, path, number, DataFormatError, EXPECTED, repair)
                if record is None:
                    continue
                text, found = linked_line(linker, record, path, number)
                out.append(text)
                mentions += found
    except DataFormatError as error:
        where = error.path if error.line is None else f"{error.path}:{error.line}"
        return {"error": [error.path, error.line, str(error)[len(where) + 2:]]}
    except (ErnieKGError, OSError) as error:
        return {"error": [None, None, str(error)]}
    data = "".join(out).encode("utf-8")
    write_atomic(part, lambda sink: sink.write(data), binary=True)
    return {"texts": len(out), "mentions": mentions, "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest()}
