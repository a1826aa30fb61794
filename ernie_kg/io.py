"""Atomic writes, and text / JSON / JSONL reads whose errors name the file and the line.

Why one home: every saved artefact (models, linkers, alias tables, embeddings, results)
must survive a crash mid-write, and every bad file must be reported the same way. A
write goes to a temporary file beside the target and is renamed over it, so readers see
the old file or the new one, never half of one.

The input-text rule, the same for KG files, datasets, corpora and link input: files are
UTF-8 (a byte that is not raises an error naming the file, the line and the column); a
byte-order mark opening the file is dropped; an unpaired surrogate (only a JSON escape
such as ``"\ud800"`` can make one) becomes U+FFFD, one code point for one so every span
stays valid, with one warning per file naming the first line. Invisible format
characters (zero-width space, soft hyphen, ...) stay in the text, so offsets hold; the
linker's normalisation ignores them when it builds and looks up alias keys.
"""

from __future__ import annotations

import json
import mmap
import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from ernie_kg.errors import ErnieKGError, FileFormatError, SavedFileError

__all__ = ["SurrogateRepair", "check_writable", "claim_run_dir",
           "count_lines", "decode_line", "iter_jsonl", "iter_text_lines", "read_json",
           "release_mapped", "replace_lone_surrogates", "write_atomic", "write_json"]

ErrorClass = type[FileFormatError]
BOM = "\ufeff"
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # the only way one gets in


def write_atomic(path: str | os.PathLike, write: Callable[[Any], None], binary: bool = False,
                 ) -> Path:
    """Call ``write(handle)`` on a temporary file beside ``path``, then rename it over
    ``path`` (parents are created). A failure leaves ``path`` as it was."""
    path = Path(path)
    check_writable(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if binary:
            with open(temporary, "wb") as handle:
                write(handle)
        else:
            with open(temporary, "w", encoding="utf-8") as handle:
                write(handle)
        os.replace(temporary, path)
    except OSError as problem:  # a full disk, a directory or file in the way, ...
        raise ErnieKGError(f"{path}: cannot write ({problem.strerror or problem})") from None
    finally:
        temporary.unlink(missing_ok=True)
    return path


def check_writable(path: str | os.PathLike) -> Path:
    """Make ``path``'s folder (parents too) and check a file can go at ``path``: called
    before long work, so an output that cannot be written fails first, not last."""
    path = Path(path)
    if path.is_dir():
        raise ErnieKGError(f"{path}: is a directory; give a file path for the output")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as problem:
        raise ErnieKGError(f"{path}: cannot create its folder {path.parent} "
                           f"({problem.strerror or problem})") from None
    if not os.access(path.parent, os.W_OK):
        raise ErnieKGError(f"{path}: its folder {path.parent} is not writable")
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


def _not_utf8(path: Path, line: int, raw: bytes, problem: UnicodeDecodeError,
              error: ErrorClass) -> FileFormatError:
    start = raw.rfind(b"\n", 0, problem.start) + 1
    return error(path, line, f"not UTF-8 text: byte 0x{raw[problem.start]:02x} at column "
                 f"{problem.start - start + 1} ({problem.reason}); save the file as UTF-8")


def decode_line(raw: bytes, path: Path, number: int, error: ErrorClass) -> str:
    """Line ``number`` of ``path`` as text, under the module's input rule (UTF-8, an
    opening byte-order mark dropped); the line ending is kept."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as problem:
        raise _not_utf8(path, number, raw, problem, error) from None
    return line[1:] if number == 1 and line.startswith(BOM) else line


def iter_text_lines(path: str | os.PathLike, error: ErrorClass = SavedFileError,
                    ) -> Iterator[tuple[int, str]]:
    """``(line number, line without its line ending)`` per line of a UTF-8 text file,
    decoded line by line so a bad byte names its line."""
    path = Path(path)
    if not path.is_file():
        raise error(path, None, "missing: no such file")
    with open(path, "rb") as lines:
        for number, raw in enumerate(lines, start=1):
            yield number, decode_line(raw, path, number, error).rstrip("\r\n")


def replace_lone_surrogates(value: Any) -> tuple[Any, int]:
    """``value`` (a JSON value) with each unpaired surrogate replaced by U+FFFD, and how
    many there were: such a string cannot be written as UTF-8 or tokenised."""
    if isinstance(value, str):
        return _LONE_SURROGATE.subn("\ufffd", value)
    if isinstance(value, list):
        pairs = [replace_lone_surrogates(v) for v in value]
        return [v for v, _ in pairs], sum(n for _, n in pairs)
    if isinstance(value, dict):
        pairs = {k: replace_lone_surrogates(v) for k, v in value.items()}
        return {k: v for k, (v, _) in pairs.items()}, sum(n for _, n in pairs.values())
    return value, 0


class SurrogateRepair:
    """Applies :func:`replace_lone_surrogates` to the JSON values read from one file,
    warning once (naming the file and the first line) when it replaced any."""

    def __init__(self, path: Path) -> None:
        self.path, self.warned = path, False

    def __call__(self, value: Any, source: str, line: int | None = None) -> Any:
        """``value`` repaired; ``source`` is the JSON text it was parsed from."""
        if not _SURROGATE_ESCAPE.search(source):
            return value
        value, count = replace_lone_surrogates(value)
        if count and not self.warned:
            self.warned = True
            where = f"{self.path}:{line}" if line else str(self.path)
            warnings.warn(f"{where}: {count} unpaired surrogate escape(s) (such as \\ud800) "
                          "replaced by U+FFFD, offsets unchanged (one warning per file)",
                          stacklevel=4)
        return value


def read_json(path: str | os.PathLike, error: ErrorClass = SavedFileError,
              what: str | None = None) -> Any:
    """The JSON value in ``path`` (the module's input rule applies); a missing or
    malformed file raises ``error`` naming the file (and the line). ``what`` names the
    expected content in the "missing" message."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        raise error(path, None, f"missing: {what or 'no such file'}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as problem:
        line = raw.count(b"\n", 0, problem.start) + 1
        raise _not_utf8(path, line, raw, problem, error) from None
    try:
        value = json.loads(text.removeprefix(BOM))
    except json.JSONDecodeError as problem:
        raise error(path, problem.lineno, f"invalid JSON: {problem.msg}") from None
    return SurrogateRepair(path)(value, text)


def iter_jsonl(path: str | os.PathLike, error: ErrorClass = SavedFileError,
               expected: str = "a JSON object") -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` per non-blank line of a JSONL file (the module's input
    rule applies); a line that is not a JSON object raises ``error`` naming the file, the
    line and what was ``expected``."""
    path = Path(path)
    repair = SurrogateRepair(path)
    for number, line in iter_text_lines(path, error):
        record = jsonl_record(line, path, number, error, expected, repair)
        if record is not None:
            yield number, record


def jsonl_record(line: str, path: Path, number: int, error: type[ErnieKGError],
                 expected: str, repair: SurrogateRepair) -> dict | None:
    """One decoded JSONL line as a dict (None for a blank one): the rule of
    :func:`iter_jsonl`, for readers that get their lines another way (a shard's bytes)."""
    if not line.strip():
        return None
    try:
        record = json.loads(line)
    except json.JSONDecodeError as problem:
        raise error(path, number, f"invalid JSON: {problem.msg}") from None
    if not isinstance(record, dict):
        raise error(path, number, f"expected {expected}")
    return repair(record, line, number)


def count_lines(paths: Iterable[str | os.PathLike]) -> int:
    """Non-blank lines in ``paths`` (bytes only: a progress total, before any decoding)."""
    total = 0
    for path in paths:
        with open(path, "rb") as lines:
            total += sum(1 for line in lines if line.strip())
    return total


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


def _mapping(array: Any) -> mmap.mmap | None:
    mapping = getattr(array, "_mmap", None)  # where numpy's memmap keeps its mmap
    if mapping is None:
        base = getattr(array, "base", None)
        mapping = base if isinstance(base, mmap.mmap) else getattr(base, "_mmap", None)
    return mapping


def release_mapped(array: Any) -> None:
    """Unmap the pages a pass over a memory-mapped numpy array (``np.load(...,
    mmap_mode=...)``, ``open_memmap``) brought into this process; no-op for a plain
    array. Why: a pass over a 2 GB table would otherwise count 2 GB in the peak RSS,
    though the pages are the OS page cache's. Linux keeps a shared page's dirty bit when
    the mapping drops it, so written pages are not lost, only written back later."""
    mapping = _mapping(array)
    if mapping is not None and hasattr(mmap, "MADV_DONTNEED"):
        mapping.madvise(mmap.MADV_DONTNEED)
