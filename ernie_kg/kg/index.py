"""Nearest-neighbour search over entity embeddings with faiss.

Exact (``flat``) by default; ``ivf`` and ``hnsw`` trade exactness for speed on large
graphs. Scores are "higher is closer": negative L2 distance, or the inner product.
"""

from __future__ import annotations

from collections.abc import Sequence

import faiss
import numpy as np

from ernie_kg.kg.embeddings import EntityEmbeddings

INDEX_KINDS = ("flat", "ivf", "hnsw")
METRICS = ("l2", "ip")


class EntityIndex:
    """A faiss index over an :class:`EntityEmbeddings` table."""

    def __init__(
        self,
        embeddings: EntityEmbeddings,
        kind: str = "flat",
        metric: str = "l2",
        nlist: int | None = None,
        nprobe: int = 8,
        hnsw_neighbors: int = 32,
    ) -> None:
        if kind not in INDEX_KINDS:
            raise ValueError(f"index kind must be one of {INDEX_KINDS}, not {kind!r}")
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, not {metric!r}")
        self.embeddings = embeddings
        self.kind = kind
        self.metric = metric
        vectors = np.ascontiguousarray(embeddings.vectors, dtype=np.float32)
        faiss_metric = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
        dim = embeddings.dim
        if kind == "flat":
            index = faiss.IndexFlat(dim, faiss_metric)
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim, hnsw_neighbors, faiss_metric)
        else:
            lists = nlist or max(1, int(np.sqrt(len(vectors))))
            quantizer = faiss.IndexFlat(dim, faiss_metric)
            index = faiss.IndexIVFFlat(quantizer, dim, lists, faiss_metric)
            index.train(vectors)
            index.nprobe = min(nprobe, lists)
        index.add(vectors)
        self.index = index

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Row indices ``[n, k]`` and scores ``[n, k]`` (higher is closer); -1 pads."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = min(k, len(self.embeddings))
        raw, indices = self.index.search(queries, k)
        scores = -np.sqrt(np.maximum(raw, 0.0)) if self.metric == "l2" else raw
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
