"""Nearest-neighbour search over entity embeddings with faiss.

Kinds: ``flat`` (exact), ``ivf`` and ``hnsw`` (approximate, vectors kept whole) and
``ivfpq`` for Wikidata-sized tables: an inverted file of product-quantised codes (about
``dim / 4`` bytes a vector instead of ``4 * dim``), whose shortlist of ``rerank * k``
candidates is re-ranked with the exact vectors (read from the memory-mapped table), so
the answer's order is exact among what the shortlist found. ``auto`` is ``flat`` below
:data:`LARGE_TABLE` vectors and ``ivfpq`` from there. Scores are "higher is closer":
negative L2 distance, or the inner product. A built index is saved with :meth:`save` and
read back by :meth:`EntityIndex.load`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import faiss
import numpy as np

from ernie_kg.errors import SavedFileError, SettingError
from ernie_kg.io import check_writable, release_mapped
from ernie_kg.kg.embeddings import EntityEmbeddings

__all__ = ["INDEX_KINDS", "LARGE_TABLE", "EntityIndex"]

INDEX_KINDS = ("auto", "flat", "ivf", "hnsw", "ivfpq")
METRICS = ("l2", "ip")
#: Vectors from which ``auto`` builds ``ivfpq`` (a flat search over 1M x 100 takes ~50 ms).
LARGE_TABLE = 1_000_000
_TRAIN_PER_LIST = 64  # training vectors per inverted list (faiss warns below 39)
_ADD_BATCH = 262_144


class EntityIndex:
    """A faiss index over an :class:`EntityEmbeddings` table."""

    def __init__(
        self,
        embeddings: EntityEmbeddings,
        kind: str = "flat",
        metric: str = "l2",
        nlist: int | None = None,
        nprobe: int | None = None,
        hnsw_neighbors: int = 32,
        pq_bytes: int | None = None,
        rerank: int = 10,
        seed: int = 0,
        progress: Callable[[int], None] | None = None,
        index: faiss.Index | None = None,
    ) -> None:
        if kind not in INDEX_KINDS:
            raise SettingError(f"index kind must be one of {INDEX_KINDS}, not {kind!r}")
        if metric not in METRICS:
            raise SettingError(f"metric must be one of {METRICS}, not {metric!r}")
        if kind == "auto":
            kind = "ivfpq" if len(embeddings) >= LARGE_TABLE else "flat"
        self.embeddings, self.kind, self.metric = embeddings, kind, metric
        self.rerank = rerank if kind == "ivfpq" else 1
        self._rows = _RowReader(embeddings.vectors) if self.rerank > 1 else None
        self.index = index if index is not None else self._build(
            nlist, nprobe, hnsw_neighbors, pq_bytes, seed, progress)

    def _build(self, nlist: int | None, nprobe: int | None, hnsw_neighbors: int,
               pq_bytes: int | None, seed: int, progress: Callable[[int], None] | None
               ) -> faiss.Index:
        vectors, dim = self.embeddings.vectors, self.embeddings.dim
        faiss_metric = faiss.METRIC_L2 if self.metric == "l2" else faiss.METRIC_INNER_PRODUCT
        if self.kind == "flat":
            index = faiss.IndexFlat(dim, faiss_metric)
        elif self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim, hnsw_neighbors, faiss_metric)
        else:
            lists = nlist or max(1, int(np.sqrt(len(vectors))) * (4 if self.kind == "ivfpq"
                                                                   else 1))
            lists = min(lists, max(1, len(vectors) // _TRAIN_PER_LIST))
            quantizer = faiss.IndexFlat(dim, faiss_metric)
            if self.kind == "ivf":
                index = faiss.IndexIVFFlat(quantizer, dim, lists, faiss_metric)
            else:
                index = faiss.IndexIVFPQ(quantizer, dim, lists, _subquantizers(dim, pq_bytes),
                                         8, faiss_metric)
            index.cp.seed = seed
            index.train(_sample(vectors, lists * _TRAIN_PER_LIST, seed))
            index.nprobe = min(nprobe or (32 if self.kind == "ivfpq" else 8), lists)
        for start in range(0, len(vectors), _ADD_BATCH):  # in batches: a mapped table
            batch = np.ascontiguousarray(vectors[start:start + _ADD_BATCH], dtype=np.float32)
            index.add(batch)
            release_mapped(vectors)  # a pass over a mapped table: not all of it in RSS
            if progress is not None:
                progress(len(batch))
        return index

    # ------------------------------------------------------------------ storage
    def save(self, path: str | Path) -> Path:
        """Write the faiss index to ``path`` (its table stays where it is)."""
        path = check_writable(path)
        temporary = path.with_name(f".{path.name}.tmp")
        faiss.write_index(self.index, str(temporary))
        temporary.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path, embeddings: EntityEmbeddings, kind: str, metric: str = "l2",
             nprobe: int | None = None, rerank: int = 10) -> EntityIndex:
        """An index :meth:`save` wrote over ``embeddings``. The codes are read into memory
        (``ivfpq``: ~``dim / 4 + 8`` bytes a vector, 0.2 GB at 5M x 100): faiss's
        memory-mapped inverted lists made one query 4x slower (2.6 against 0.6 ms at
        200k); the exact vectors for re-ranking stay memory-mapped in the table."""
        path = Path(path)
        if not path.is_file():
            raise SavedFileError(path, None, "missing: a saved faiss index")
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as problem:
            raise SavedFileError(path, None, f"unreadable faiss index: {problem}") from None
        if index.ntotal != len(embeddings) or index.d != embeddings.dim:
            raise SavedFileError(path, None, f"an index of {index.ntotal} x {index.d} vectors "
                                 f"does not fit the table ({len(embeddings)} x "
                                 f"{embeddings.dim})")
        if nprobe is not None and hasattr(index, "nprobe"):
            index.nprobe = nprobe
        return cls(embeddings, kind=kind, metric=metric, rerank=rerank, index=index)

    # ------------------------------------------------------------------ search
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Row indices ``[n, k]`` and scores ``[n, k]`` (higher is closer); -1 pads."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = min(k, len(self.embeddings))
        raw, indices = self.index.search(queries, min(k * self.rerank, len(self.embeddings)))
        if self.rerank > 1:
            return self._rerank(queries, indices, k)
        scores = -np.sqrt(np.maximum(raw, 0.0)) if self.metric == "l2" else raw
        return indices, scores

    def _rerank(self, queries: np.ndarray, shortlist: np.ndarray, k: int
                ) -> tuple[np.ndarray, np.ndarray]:
        """The exact top ``k`` of each query's shortlist (exact vectors, exact scores)."""
        indices = np.full((len(queries), k), -1, dtype=np.int64)
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        for n, (query, rows) in enumerate(zip(queries, shortlist)):
            rows = rows[rows >= 0]
            order = np.argsort(rows)  # sorted reads of the table
            exact = self._rows(rows[order])
            score = (-np.linalg.norm(exact - query, axis=1) if self.metric == "l2"
                     else exact @ query)
            best = np.argsort(-score, kind="stable")[:k]
            indices[n, :len(best)] = rows[order][best]
            scores[n, :len(best)] = score[best]
        return indices, scores

    def nearest(self, entity_id: str, k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` entities closest to ``entity_id`` (itself excluded), best first."""
        own = self.embeddings.index_of(entity_id)
        indices, scores = self.search(self.embeddings.vectors[own], k + 1)
        found = [
            (self.embeddings.entity_ids[i], float(s))
            for i, s in zip(indices[0], scores[0])
            if i >= 0 and i != own
        ]
        return found[:k]

    def nearest_to_vectors(
        self, vectors: np.ndarray, k: int = 10
    ) -> list[list[tuple[str, float]]]:
        """For each query vector, the ``k`` closest entities with scores."""
        indices, scores = self.search(vectors, k)
        ids: Sequence[str] = self.embeddings.entity_ids
        return [
            [(ids[i], float(s)) for i, s in zip(row_i, row_s) if i >= 0]
            for row_i, row_s in zip(indices, scores)
        ]


class _RowReader:
    """Rows of a table by number. A memory-mapped table is read with ``os.pread``, not
    through the mapping: the kernel maps up to 16 cached pages around each touched one
    ("fault-around", whatever ``madvise`` says), so re-ranking 200 shortlists of 100 rows
    put 0.9 GB of a 5M-row table into the process; reads put none."""

    def __init__(self, vectors: np.ndarray) -> None:
        self.vectors = vectors
        self.file = None
        if isinstance(vectors, np.memmap) and vectors.filename and vectors.flags.c_contiguous:
            self.file = open(vectors.filename, "rb", buffering=0)  # noqa: SIM115 - kept
            self.offset, self.row_bytes = vectors.offset, vectors.strides[0]

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        if self.file is None:
            return np.asarray(self.vectors[rows], dtype=np.float32)
        descriptor, size = self.file.fileno(), self.row_bytes
        data = b"".join(os.pread(descriptor, size, self.offset + int(r) * size) for r in rows)
        return np.frombuffer(data, dtype=self.vectors.dtype).reshape(
            len(rows), -1).astype(np.float32, copy=False)

    def __del__(self) -> None:
        if self.file is not None:
            self.file.close()


def _subquantizers(dim: int, pq_bytes: int | None) -> int:
    """Sub-quantisers (one byte each): ``pq_bytes``, else about ``dim / 4``, a divisor of
    ``dim`` either way (faiss needs one)."""
    target = pq_bytes or max(1, dim // 4)
    return max(m for m in range(1, min(target, dim) + 1) if dim % m == 0)


def _sample(vectors: np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` rows (all when fewer), read in sorted order from a mapped table."""
    if len(vectors) <= count:
        return np.ascontiguousarray(vectors, dtype=np.float32)
    rows = np.sort(np.random.default_rng(seed).choice(len(vectors), count, replace=False))
    return np.ascontiguousarray(vectors[rows], dtype=np.float32)
