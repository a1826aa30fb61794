"""Atomic writes and JSON / JSONL reads whose errors name the file and the line.

Why one home: every saved artefact (models, linkers, alias tables, embeddings, results)
must survive a crash mid-write, and every bad file must be reported the same way. A
write goes to a temporary file beside the target and is renamed over it, so readers see
the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ernie_kg.errors import ErnieKGError, FileFormatError, SavedFileError

__all__ = ["claim_run_dir", "iter_jsonl", "read_json", "write_atomic", "write_json"]

ErrorClass = type[FileFormatError]


def write_atomic(path: str | os.PathLike, write: Callable[[Any], None], binary: bool = False,
                 ) -> Path:
    """Call ``write(handle)`` on a temporary file beside ``path``, then rename it over
    ``path`` (parents are created). A failure leaves ``path`` as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if binary:
            with open(temporary, "wb") as handle:
                write(handle)
        else:
            with open(temporary, "w", encoding="utf-8") as handle:
                write(handle)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def write_json(path: str | os.PathLike, payload: Any, indent: int | None = 2) -> Path:
    """``payload`` as UTF-8 JSON (a trailing newline when indented), written atomically."""
    text = json.dumps(payload, indent=indent, ensure_ascii=False, default=_plain)
    return write_atomic(path, lambda handle: handle.write(text + ("\n" if indent else "")))


def _plain(value: Any) -> Any:
    """numpy scalars and paths as plain JSON values; anything else as its string."""
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def read_json(path: str | os.PathLike, error: ErrorClass = SavedFileError,
              what: str | None = None) -> Any:
    """The JSON value in ``path``; a missing or malformed file raises ``error`` naming the
    file (and the line). ``what`` names the expected content in the "missing" message."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(path, None, f"missing: {what or 'no such file'}") from None
    except UnicodeDecodeError as problem:
        raise error(path, None, f"not UTF-8 text ({problem.reason})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as problem:
        raise error(path, problem.lineno, f"invalid JSON: {problem.msg}") from None


def iter_jsonl(path: str | os.PathLike, error: ErrorClass = SavedFileError,
               expected: str = "a JSON object") -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` per non-blank line of a JSONL file; a line that is not a
    JSON object raises ``error`` naming the file, the line and what was ``expected``."""
    path = Path(path)
    if not path.is_file():
        raise error(path, None, "missing: no such file")
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as problem:
                raise error(path, number, f"invalid JSON: {problem.msg}") from None
            if not isinstance(record, dict):
                raise error(path, number, f"expected {expected}")
            yield number, record


def claim_run_dir(directory: str | os.PathLike, *, resume: bool = False,
                  overwrite: bool = False) -> Path | None:
    """Make ``directory`` ready for a run: absent or empty is fine; holding an earlier
    run, it is continued (``resume``), moved aside to ``DIR.old-N`` and started afresh
    (``overwrite``; returns where it went), or refused: never silently replaced or
    appended to."""
    directory = Path(directory)
    if not directory.exists() or (directory.is_dir() and not any(directory.iterdir())):
        return None
    if not directory.is_dir():
        raise ErnieKGError(f"{directory}: exists and is not a directory")
    if resume:
        return None
    if not overwrite:
        raise ErnieKGError(f"{directory} already holds a run: continue it (--resume, where "
                           "the command has it) or start again with --overwrite (the earlier "
                           "run is moved aside, not deleted), or choose another directory")
    number = 1
    while directory.with_name(f"{directory.name}.old-{number}").exists():
        number += 1
    aside = directory.with_name(f"{directory.name}.old-{number}")
    directory.rename(aside)
    return aside
