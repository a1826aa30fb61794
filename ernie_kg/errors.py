"""Exceptions a user can cause. Each message names the file, line or field at fault."""

from __future__ import annotations

from pathlib import Path


class ErnieKGError(Exception):
    """Base class of every error raised for bad input or configuration."""


class FileFormatError(ErnieKGError, ValueError):
    """An input file is malformed; the message names the file and the line."""

    def __init__(self, path: str | Path, line: int | None, message: str) -> None:
        self.path = str(path)
        self.line = line
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class KGFormatError(FileFormatError):
    """A knowledge-graph file is malformed."""


class DataFormatError(FileFormatError):
    """A dataset file (FewRel, TACRED, JSONL, typing) is malformed."""


class SavedFileError(FileFormatError):
    """A file this package saved (model, processor, linker, alias table, embeddings,
    checkpoint) is missing, malformed or of another kind."""


class SettingError(ErnieKGError, ValueError):
    """A setting (an argument, a config field) outside its allowed values; the message
    names the setting and what is allowed."""


class UnknownIdError(ErnieKGError, KeyError):
    """An entity or relation id is not in the knowledge graph or the embedding table."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class EmptyGraphError(ErnieKGError, ValueError):
    """The knowledge graph holds no triples."""


class SpanError(ErnieKGError, ValueError):
    """A character span is out of range, reversed or overlapping; the message says which."""
