"""Readers of entity vectors trained elsewhere, each in its writer's on-disk layout.

Why streaming readers: the files users bring are bigger than the KG they serve
(PyTorch-BigGraph's public Wikidata vectors hold 78M entities x 200 dims, tens of GB, for
a 5M-entity KG). Each reader yields :class:`VectorBatch` es of at most :data:`BATCH`
rows, never the whole file. Layouts (../shared/REFERENCE.md, section 9):

- ``openke``: ``entity2id.txt`` (a first line with the count, then ``name<TAB>row``) and
  ``entity2vec.vec`` (row ``r`` on line ``r + 1``, tab-separated floats): ERNIE's
  ``kg_embed/``;
- ``pbg``: a PyTorch-BigGraph checkpoint directory, ``embeddings_<type>_<part>.v<N>.h5``
  (dataset ``embeddings``) with its importer's ``entity_names_<type>_<part>.json``;
- ``dglke``: ``<dataset>_<model>_entity.npy`` with ``entities.tsv`` (``row<TAB>name``);
- ``pykeen``: a saved pipeline result (``trained_model.pkl`` and
  ``training_triples/entity_to_id.tsv.gz``);
- ``word2vec``: the text format (``count dim``, then ``name v1 ... vd``); Wikipedia2Vec's
  ``ENTITY/`` prefix is dropped and its words (no prefix) are skipped.
"""

from __future__ import annotations

import codecs
import gzip
import json
import re
import warnings
from array import array
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ernie_kg.errors import FileFormatError, SavedFileError, SettingError
from ernie_kg.io import decode_line, iter_text_lines

__all__ = ["BATCH", "FORMATS", "VectorBatch", "read_vectors"]

BATCH = 65536
ENTITY_PREFIX = "ENTITY/"
_SEPARATORS = re.compile(r"[\s,]*")


class VectorBatch(NamedTuple):
    """Rows of a source file: the KG row each one is for, its vector, where it is."""

    rows: np.ndarray  # [n] int64 KG rows; NOT_IN_KG for a name the KG lacks
    vectors: np.ndarray  # [n, dim]
    file: Path
    first: int  # the line (text files) or row (binary files) of rows[0]
    unit: str  # "line" or "row"

    def error(self, index: int, message: str) -> SavedFileError:
        """An error about row ``index`` of this batch: ``file:line: message`` for a text
        file, ``file: row N: message`` for a binary one."""
        position = self.first + index
        if self.unit == "line":
            return SavedFileError(self.file, position, message)
        return SavedFileError(self.file, None, f"row {position}: {message}")


Lookup = Callable[[str], "int | None"]  # a name -> its KG row, None when the KG lacks it
NOT_IN_KG, UNNAMED = -1, -2


class _RowMap:
    """Source row -> KG row, from a file naming each source row: an int64 array, not a
    dict of names (5M names as Python strings cost about 0.5 GB)."""

    def __init__(self, lookup: Lookup) -> None:
        self.lookup, self.map = lookup, array("q")

    def add(self, source_row: int, name: str) -> None:
        """Record that ``source_row`` holds the vector of ``name``."""
        if source_row >= len(self.map):
            self.map.extend([UNNAMED] * (source_row + 1 - len(self.map)))
        found = self.lookup(name)
        self.map[source_row] = NOT_IN_KG if found is None else found

    def rows(self, start: int, stop: int, names_file: Path) -> np.ndarray:
        """KG rows of source rows ``start..stop``; a row no line names is an error."""
        rows = np.full(stop - start, UNNAMED, dtype=np.int64)
        known = self.map[start:min(stop, len(self.map))]
        rows[:len(known)] = np.frombuffer(known, dtype=np.int64) if known else []
        unnamed = np.flatnonzero(rows == UNNAMED)
        if len(unnamed):
            raise _format_error(names_file, None, f"source row {start + unnamed[0]} has no "
                                "name in this file")
        return rows


def _lookup_all(names: list[str], lookup: Lookup) -> np.ndarray:
    return np.array([NOT_IN_KG if (row := lookup(n)) is None else row for n in names],
                    dtype=np.int64)


def _format_error(path: Path, line: int | None, message: str) -> FileFormatError:
    return SavedFileError(path, line, message)


def _parse_rows(lines: list[str], path: Path, first_line: int, dim: int | None
                ) -> np.ndarray:
    """Whitespace-separated floats, one row per line; a line with another number of
    values, or a value that is not a number, names its line."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # numpy's "could not read"
        try:
            values = np.fromstring(" ".join(lines), dtype=np.float32, sep=" ")
        except (ValueError, DeprecationWarning):
            values = None
    separators = {line.count("\t") + line.count(" ") for line in lines}
    width = dim or len(lines[0].split())  # the first row sets the width
    if values is not None and len(separators) == 1 and values.size == width * len(lines):
        return values.reshape(len(lines), width)
    for offset, line in enumerate(lines):  # spacing varies, or a line is bad: find it
        try:
            row = np.array(line.split(), dtype=np.float32)
        except ValueError:
            raise _format_error(path, first_line + offset, "a value is not a number") from None
        if len(row) != width:
            raise _format_error(path, first_line + offset, f"{len(row)} values where the "
                                f"file's rows have {width}: the dimension changes mid-file")
    return np.array([line.split() for line in lines], dtype=np.float32)


def _read_openke(source: Path, lookup: Lookup) -> Iterator[VectorBatch]:
    ids_path, vectors_path = source / "entity2id.txt", source / "entity2vec.vec"
    for path in (ids_path, vectors_path):
        if not path.is_file():
            raise _format_error(path, None, "missing: an OpenKE export has entity2id.txt "
                                "and entity2vec.vec")
    row_map = _RowMap(lookup)
    for number, line in iter_text_lines(ids_path):
        if number == 1 or not line.strip():
            continue  # the first line is the count
        fields = line.rsplit(None, 1)
        if len(fields) != 2 or not fields[1].isdigit():
            raise _format_error(ids_path, number, "expected 'name<TAB>row'")
        row_map.add(int(fields[1]), fields[0])
    dim = None
    lines: list[str] = []
    for number, line in iter_text_lines(vectors_path):
        lines.append(line)
        if len(lines) == BATCH:
            first = number - len(lines) + 1
            vectors = _parse_rows(lines, vectors_path, first, dim)
            dim = vectors.shape[1]
            yield VectorBatch(row_map.rows(first - 1, number, ids_path), vectors,
                              vectors_path, first, "line")
            lines = []
    if lines:
        first = number - len(lines) + 1
        yield VectorBatch(row_map.rows(first - 1, number, ids_path),
                          _parse_rows(lines, vectors_path, first, dim), vectors_path, first,
                          "line")


def _json_strings(path: Path) -> Iterator[str]:
    """The strings of a JSON list, read in chunks (a PBG names file can be GBs)."""
    decoder, text = json.JSONDecoder(), codecs.getincrementaldecoder("utf-8")()
    buffer, position, started = "", 0, False
    with open(path, "rb") as data:
        while True:
            chunk = data.read(1 << 22)
            try:
                buffer = buffer[position:] + text.decode(chunk, final=not chunk)
            except UnicodeDecodeError as problem:
                raise _format_error(path, None, f"not UTF-8 text ({problem.reason})") from None
            position = 0
            while True:
                position = _SEPARATORS.match(buffer, position).end()
                if position == len(buffer) and chunk:
                    break  # read on
                if not started:
                    if buffer[position:position + 1] != "[":
                        raise _format_error(path, None, "expected a JSON list of names")
                    started, position = True, position + 1
                    continue
                if buffer[position:position + 1] == "]":
                    return
                try:
                    value, end = decoder.raw_decode(buffer, position)
                except json.JSONDecodeError:
                    if chunk:
                        break  # the string goes on in the next chunk
                    raise _format_error(path, None, "invalid or truncated JSON list of "
                                        "names") from None
                if not isinstance(value, str):
                    raise _format_error(path, None, "expected a JSON list of names (strings)")
                yield value
                position = end


def _read_pbg(source: Path, lookup: Lookup) -> Iterator[VectorBatch]:
    try:
        import h5py
    except ImportError:
        raise ImportError("reading PyTorch-BigGraph checkpoints needs h5py: "
                          "pip install 'ernie-kg[pbg]'") from None
    newest: dict[tuple[str, str], tuple[int, Path]] = {}
    for path in source.glob("embeddings_*_*.v*.h5"):
        found = re.fullmatch(r"embeddings_(.+)_(\d+)\.v(\d+)\.h5", path.name)
        if found:
            key, version = (found[1], found[2]), int(found[3])
            if key not in newest or version > newest[key][0]:
                newest[key] = (version, path)
    if not newest:
        raise _format_error(source, None, "no embeddings_<type>_<part>.v<N>.h5 file: not a "
                            "PyTorch-BigGraph checkpoint directory")
    for (entity_type, part), (_, path) in sorted(newest.items()):
        names_path = source / f"entity_names_{entity_type}_{part}.json"
        if not names_path.is_file():
            raise _format_error(names_path, None, "missing: the names of the rows of "
                                f"{path.name} (PBG's importer writes it)")
        names = _json_strings(names_path)
        try:
            with h5py.File(path, "r") as handle:
                table = handle["embeddings"]
                for start in range(0, table.shape[0], BATCH):
                    vectors = np.asarray(table[start:start + BATCH], dtype=np.float32)
                    batch = list(islice(names, len(vectors)))
                    if len(batch) != len(vectors):
                        raise _format_error(names_path, None, f"{start + len(batch)} names "
                                            f"for the {table.shape[0]} rows of {path.name}")
                    yield VectorBatch(_lookup_all(batch, lookup), vectors, path, start, "row")
        except (OSError, KeyError) as problem:
            raise _format_error(path, None, f"unreadable HDF5 embeddings (truncated?): "
                                f"{problem}") from None


def _read_dglke(source: Path, lookup: Lookup) -> Iterator[VectorBatch]:
    found = sorted(source.glob("*_entity.npy"))
    names_path = source / "entities.tsv"
    if len(found) != 1 or not names_path.is_file():
        raise _format_error(source, None, "a DGL-KE export has one <dataset>_<model>_entity"
                            f".npy and entities.tsv (found {[p.name for p in found]})")
    path = found[0]
    try:
        table = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as problem:
        raise _format_error(path, None, f"unreadable (truncated?): {problem}") from None
    row_map = _RowMap(lookup)
    for number, line in iter_text_lines(names_path):
        if line.strip():
            fields = line.split("\t", 1)
            if len(fields) != 2 or not fields[0].strip().isdigit():
                raise _format_error(names_path, number, "expected 'row<TAB>name'")
            row_map.add(int(fields[0]), fields[1])
    for start in range(0, len(table), BATCH):
        stop = min(start + BATCH, len(table))
        yield VectorBatch(row_map.rows(start, stop, names_path),
                          np.asarray(table[start:stop], dtype=np.float32), path, start, "row")


def _read_pykeen(source: Path, lookup: Lookup) -> Iterator[VectorBatch]:
    import torch

    model_path = source / "trained_model.pkl"
    ids_path = source / "training_triples" / "entity_to_id.tsv.gz"
    for path in (model_path, ids_path):
        if not path.is_file():
            raise _format_error(path, None, "missing: a saved PyKEEN pipeline result has "
                                "trained_model.pkl and training_triples/entity_to_id.tsv.gz")
    try:
        model = torch.load(model_path, map_location="cpu", weights_only=False)
        table = model.entity_representations[0](indices=None).detach().numpy()
    except Exception as problem:  # an unpickling error can be of any type
        raise _format_error(model_path, None, f"unreadable PyKEEN model: {problem}") from None
    row_map = _RowMap(lookup)
    with gzip.open(ids_path, "rb") as lines:
        for number, raw in enumerate(lines, start=1):
            line = decode_line(raw, ids_path, number, SavedFileError).rstrip("\r\n")
            fields = line.split("\t")
            if number == 1 or not line.strip():
                continue  # the header: id, label
            if len(fields) != 2 or not fields[0].isdigit():
                raise _format_error(ids_path, number, "expected 'id<TAB>label'")
            row_map.add(int(fields[0]), fields[1])
    table = np.asarray(table, dtype=np.float32).reshape(len(table), -1)
    for start in range(0, len(table), BATCH):
        stop = min(start + BATCH, len(table))
        yield VectorBatch(row_map.rows(start, stop, ids_path), table[start:stop], model_path,
                          start, "row")


def _read_word2vec(source: Path, lookup: Lookup) -> Iterator[VectorBatch]:
    path = source
    if not path.is_file():
        raise _format_error(path, None, "missing: a word2vec text file")
    dim, first = None, 1
    names: list[str] = []
    lines: list[str] = []
    for number, line in iter_text_lines(path):
        if number == 1:
            header = line.split()
            if len(header) == 2 and all(f.isdigit() for f in header):
                dim, first = int(header[1]), 2
                continue
        if not line.strip():
            continue
        name, _, values = _split_name(line, dim)
        if not lines:
            first = number
        names.append(name)
        lines.append(values)
        if len(lines) == BATCH:
            yield _word2vec_batch(names, lines, path, first, dim, lookup)
            names, lines = [], []
    if lines:
        yield _word2vec_batch(names, lines, path, first, dim, lookup)


def _split_name(line: str, dim: int | None) -> tuple[str, str, str]:
    """A name may hold spaces: with a known ``dim``, the last ``dim`` fields are values."""
    if dim:
        fields = line.rstrip().rsplit(" ", dim)
        return fields[0], " ", " ".join(fields[1:])
    return line.partition(" ")


def _word2vec_batch(names: list[str], lines: list[str], path: Path, first: int,
                    dim: int | None, lookup: Lookup) -> VectorBatch:
    """Wikipedia2Vec's ``ENTITY/Title`` is the name ``Title``; its words keep theirs (it
    writes words first, so for a name that is both, the entity's row comes later and
    wins)."""
    names = [name.removeprefix(ENTITY_PREFIX) for name in names]
    return VectorBatch(_lookup_all(names, lookup), _parse_rows(lines, path, first, dim),
                       path, first, "line")


FORMATS: dict[str, Callable[[Path, Lookup], Iterator[VectorBatch]]] = {
    "openke": _read_openke,
    "pbg": _read_pbg,
    "dglke": _read_dglke,
    "pykeen": _read_pykeen,
    "word2vec": _read_word2vec,
}


def read_vectors(source: str | Path, format: str, lookup: Lookup) -> Iterator[VectorBatch]:
    """The vectors of ``source`` in ``format`` (one of :data:`FORMATS`), batch by batch,
    each row labelled with ``lookup(its name)``, the KG row it is for."""
    if format not in FORMATS:
        raise SettingError(f"unknown embeddings format {format!r}; one of {sorted(FORMATS)}")
    source = Path(source)
    if not source.exists():
        raise _format_error(source, None, "missing: no such file or directory")
    return FORMATS[format](source, lookup)
