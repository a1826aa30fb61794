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
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ernie_kg.errors import FileFormatError, SavedFileError
from ernie_kg.io import decode_line, iter_text_lines

__all__ = ["BATCH", "FORMATS", "VectorBatch", "read_vectors"]

BATCH = 65536
ENTITY_PREFIX = "ENTITY/"
_SEPARATORS = re.compile(r"[\s,]*")


class VectorBatch(NamedTuple):
    """Rows of a source file: their names (KG ids to be), vectors and where they are."""

    names: list[str]
    vectors: np.ndarray  # [len(names), dim]
    file: Path
    first: int  # the line (text files) or row (binary files) of names[0]
    unit: str  # "line" or "row"

    def where(self, index: int) -> str:
        """``file:line`` or ``file row N`` of row ``index`` of this batch."""
        position = self.first + index
        return f"{self.file}:{position}" if self.unit == "line" else \
            f"{self.file} row {position}"


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


def _read_openke(source: Path) -> Iterator[VectorBatch]:
    ids_path, vectors_path = source / "entity2id.txt", source / "entity2vec.vec"
    for path in (ids_path, vectors_path):
        if not path.is_file():
            raise _format_error(path, None, "missing: an OpenKE export has entity2id.txt "
                                "and entity2vec.vec")
    names: dict[int, str] = {}
    for number, line in iter_text_lines(ids_path):
        if number == 1 or not line.strip():
            continue
        fields = line.rsplit(None, 1)
        if len(fields) != 2 or not fields[1].isdigit():
            raise _format_error(ids_path, number, "expected 'name<TAB>row'")
        names[int(fields[1])] = fields[0]
    dim = None
    lines: list[str] = []
    first = 1
    for number, line in iter_text_lines(vectors_path):
        lines.append(line)
        if len(lines) == BATCH:
            batch = _openke_batch(lines, names, vectors_path, first, dim)
            dim = batch.vectors.shape[1]
            yield batch
            first, lines = number + 1, []
    if lines:
        yield _openke_batch(lines, names, vectors_path, first, dim)


def _openke_batch(lines: list[str], names: dict[int, str], path: Path, first: int,
                  dim: int | None) -> VectorBatch:
    vectors = _parse_rows(lines, path, first, dim)
    missing = next((first + i for i in range(len(lines)) if first - 1 + i not in names), None)
    if missing is not None:
        raise _format_error(path, missing, f"row {missing - 1} has no name in entity2id.txt")
    return VectorBatch([names[first - 1 + i] for i in range(len(lines))], vectors, path,
                       first, "line")


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


def _read_pbg(source: Path) -> Iterator[VectorBatch]:
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
                    yield VectorBatch(batch, vectors, path, start, "row")
        except (OSError, KeyError) as problem:
            raise _format_error(path, None, f"unreadable HDF5 embeddings (truncated?): "
                                f"{problem}") from None


def _read_dglke(source: Path) -> Iterator[VectorBatch]:
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
    names: dict[int, str] = {}
    for number, line in iter_text_lines(names_path):
        if line.strip():
            fields = line.split("\t", 1)
            if len(fields) != 2 or not fields[0].strip().isdigit():
                raise _format_error(names_path, number, "expected 'row<TAB>name'")
            names[int(fields[0])] = fields[1]
    for start in range(0, len(table), BATCH):
        rows = range(start, min(start + BATCH, len(table)))
        missing = next((r for r in rows if r not in names), None)
        if missing is not None:
            raise _format_error(names_path, None, f"row {missing} of {path.name} has no name")
        yield VectorBatch([names[r] for r in rows], np.asarray(table[start:rows.stop],
                                                               dtype=np.float32), path,
                          start, "row")


def _read_pykeen(source: Path) -> Iterator[VectorBatch]:
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
    names: dict[int, str] = {}
    with gzip.open(ids_path, "rb") as lines:
        for number, raw in enumerate(lines, start=1):
            line = decode_line(raw, ids_path, number, SavedFileError).rstrip("\r\n")
            fields = line.split("\t")
            if number == 1 or not line.strip():
                continue  # the header: id, label
            if len(fields) != 2 or not fields[0].isdigit():
                raise _format_error(ids_path, number, "expected 'id<TAB>label'")
            names[int(fields[0])] = fields[1]
    table = np.asarray(table, dtype=np.float32).reshape(len(table), -1)
    for start in range(0, len(table), BATCH):
        rows = range(start, min(start + BATCH, len(table)))
        yield VectorBatch([names.get(r, "") for r in rows], table[start:rows.stop],
                          model_path, start, "row")


def _read_word2vec(source: Path) -> Iterator[VectorBatch]:
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
            yield _word2vec_batch(names, lines, path, first, dim)
            names, lines = [], []
    if lines:
        yield _word2vec_batch(names, lines, path, first, dim)


def _split_name(line: str, dim: int | None) -> tuple[str, str, str]:
    """A name may hold spaces: with a known ``dim``, the last ``dim`` fields are values."""
    if dim:
        fields = line.rstrip().rsplit(" ", dim)
        return fields[0], " ", " ".join(fields[1:])
    return line.partition(" ")


def _word2vec_batch(names: list[str], lines: list[str], path: Path, first: int,
                    dim: int | None) -> VectorBatch:
    """Wikipedia2Vec's ``ENTITY/Title`` is the name ``Title``; its words keep theirs (it
    writes words first, so for a name that is both, the entity's row comes later and
    wins)."""
    return VectorBatch([name.removeprefix(ENTITY_PREFIX) for name in names],
                       _parse_rows(lines, path, first, dim), path, first, "line")


FORMATS: dict[str, Callable[[Path], Iterator[VectorBatch]]] = {
    "openke": _read_openke,
    "pbg": _read_pbg,
    "dglke": _read_dglke,
    "pykeen": _read_pykeen,
    "word2vec": _read_word2vec,
}


def read_vectors(source: str | Path, format: str) -> Iterator[VectorBatch]:
    """The vectors of ``source`` in ``format`` (one of :data:`FORMATS`), batch by batch."""
    if format not in FORMATS:
        raise ValueError(f"unknown embeddings format {format!r}; one of {sorted(FORMATS)}")
    source = Path(source)
    if not source.exists():
        raise _format_error(source, None, "missing: no such file or directory")
    return FORMATS[format](source)
