"""Entity vectors trained elsewhere, mapped onto a KG's entities by id.

Why stream into a memory-mapped table: the output is the only thing of KG size held at
once. Source rows arrive in batches (:mod:`ernie_kg.kg.vector_formats`); rows whose name
is a KG id are written into ``entity_vectors.npy`` (opened as a memory map, one row per
KG entity, in the KG's order), the rest are counted and dropped. The KG entities left
without a vector get the ``missing`` policy: ``zero`` (ERNIE's "no entity" row is zero
too), ``mean`` (the mean imported vector) or ``error``. The result is the directory
``kg embed`` writes, so everything that reads entity tables reads it.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ernie_kg.errors import ErnieKGError, SettingError
from ernie_kg.io import claim_run_dir, release_mapped, write_json
from ernie_kg.kg.embeddings import EntityEmbeddings, saved_content_hash, write_table_meta
from ernie_kg.kg.graph import KnowledgeGraph
from ernie_kg.kg.vector_formats import FORMATS, VectorBatch, read_vectors

__all__ = ["MISSING_POLICIES", "ImportReport", "import_embeddings"]

MISSING_POLICIES = ("zero", "mean", "error")
REPORT_FILE = "import_report.json"
_VECTORS = "entity_vectors.npy"


@dataclass
class ImportReport:
    """What an import found: coverage of the KG and what was dropped."""

    format: str
    source: str
    dim: int
    kg_entities: int
    covered: int  # KG entities that got a vector from the source
    source_rows: int
    not_in_kg: int  # source rows whose name is no KG id (dropped)
    duplicates: int  # source rows for a KG entity that already had one (the later wins)
    missing_policy: str
    seconds: float

    @property
    def coverage(self) -> float:
        """The share of the KG's entities with an imported vector."""
        return self.covered / max(self.kg_entities, 1)

    def to_json(self) -> dict[str, Any]:
        """The report as written to ``import_report.json``."""
        return {**asdict(self), "coverage": self.coverage}


def import_embeddings(
    source: str | os.PathLike, kg: KnowledgeGraph, out: str | os.PathLike,
    format: str, missing: str = "zero", overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> tuple[EntityEmbeddings, ImportReport]:
    """Read ``source`` (a file or directory in ``format``, see :data:`FORMATS`), keep
    the vectors of ``kg``'s entities, fill the others by the ``missing`` policy and save
    an :class:`EntityEmbeddings` directory at ``out`` (written beside it, renamed into
    place when complete; an earlier run at ``out`` is refused, or moved aside with
    ``overwrite``). ``progress`` is called with the rows read per batch."""
    if format not in FORMATS:
        raise SettingError(f"format must be one of {sorted(FORMATS)}, got {format!r}")
    if missing not in MISSING_POLICIES:
        raise SettingError(f"missing must be one of {list(MISSING_POLICIES)}, got "
                           f"{missing!r}")
    out = Path(out)
    claim_run_dir(out, overwrite=overwrite)
    started = time.perf_counter()
    ids = list(kg.entities)
    staging = out.with_name(f".{out.name}.importing")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        table = _Table(staging / _VECTORS, len(ids))
        for batch in read_vectors(source, format, kg.entity_row):
            table.add(batch, ids)
            if progress is not None:
                progress(len(batch.rows))
        report = ImportReport(format, str(source), table.dim, len(ids), table.covered,
                              table.rows_read, table.not_in_kg, table.duplicates,
                              missing, 0.0)
        table.fill_missing(missing, ids)
        report.seconds = time.perf_counter() - started
        write_table_meta(staging, ids,
                         saved_content_hash(ids, staging / _VECTORS), {
                             "model": "imported", "format": format, "source": str(source),
                             "dim": table.dim, "missing": missing},
                         {"coverage": report.coverage})
        write_json(staging / REPORT_FILE, report.to_json())
        if out.is_dir():
            out.rmdir()  # empty: claimed above
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    del ids, table  # before the saved table's own id list is read
    return EntityEmbeddings.load(out, verify=False), report


class _Table:
    """The output matrix, opened on the first batch (its width gives the dimension)."""

    def __init__(self, path: Path, rows: int) -> None:
        self.path, self.rows = path, rows
        self.matrix: np.ndarray | None = None
        self.dim = 0
        self.filled = np.zeros(rows, dtype=bool)
        self.total: np.ndarray | None = None
        self.covered = self.rows_read = self.not_in_kg = self.duplicates = 0

    def add(self, batch: VectorBatch, ids: list[str]) -> None:
        """Write the batch's rows that are for KG entities; count the rest."""
        vectors = batch.vectors
        if self.matrix is None:
            self.matrix = np.lib.format.open_memmap(self.path, mode="w+", dtype=np.float32,
                                                    shape=(self.rows, vectors.shape[1]))
            self.total = np.zeros(vectors.shape[1], dtype=np.float64)
            self.dim = int(vectors.shape[1])
        if vectors.shape[1] != self.dim:
            raise batch.error(0, f"{vectors.shape[1]} values where earlier rows have "
                                 f"{self.dim}")
        self.rows_read += len(batch.rows)
        keep = np.flatnonzero(batch.rows >= 0)
        self.not_in_kg += len(batch.rows) - len(keep)
        if not len(keep):
            return
        rows, kept = batch.rows[keep], vectors[keep]
        finite = np.isfinite(kept).all(axis=1)
        if not finite.all():
            bad = int(np.argmin(finite))
            raise batch.error(int(keep[bad]), f"the vector of entity '{ids[rows[bad]]}' "
                              "holds NaN or infinity")
        _, last = np.unique(rows[::-1], return_index=True)  # a name twice: the later row
        pick = np.sort(len(rows) - 1 - last)
        self.duplicates += len(rows) - len(pick)
        rows, kept = rows[pick], kept[pick]
        again = self.filled[rows]
        self.duplicates += int(again.sum())
        self.total -= self.matrix[rows[again]].sum(axis=0, dtype=np.float64)
        self.matrix[rows] = kept
        self.total += kept.sum(axis=0, dtype=np.float64)
        self.filled[rows] = True
        self.covered += len(rows) - int(again.sum())
        self._release()

    def _release(self) -> None:
        """A batch writes rows all over the table (the source's order is not the KG's),
        so without this the whole table soon counts in the peak RSS (see
        :func:`~ernie_kg.io.release_mapped`)."""
        release_mapped(self.matrix)

    def fill_missing(self, policy: str, ids: list[str]) -> None:
        """Give the KG entities without a vector the ``policy``'s row."""
        if self.matrix is None:
            raise ErnieKGError("the source holds no vectors")
        if self.covered == 0:
            raise ErnieKGError(f"none of the {self.rows_read} source vectors belongs to a KG "
                               "entity: are the names KG ids (QIDs vs titles)?")
        empty = np.flatnonzero(~self.filled)
        if len(empty) and policy == "error":
            shown = ", ".join(ids[r] for r in empty[:5])
            raise ErnieKGError(f"{len(empty)} KG entities have no vector in the source "
                               f"({shown}, ...); use --missing zero or mean to fill them")
        if len(empty) and policy == "mean":
            self.matrix[empty] = (self.total / self.covered).astype(np.float32)
        self.matrix.flush()
        self._release()
        self.matrix = None  # closes the map
