"""CSR adjacency over entity rows: neighbours, k-hop sets and hop distances in numpy.

Why plain numpy arrays (``indptr`` + ``(neighbour, relation)`` pairs, one set per
direction) and not a networkx graph or a scipy.sparse matrix: the arrays memory-map
from the KG store as they are, so a 24M-fact graph costs nothing until a neighbourhood
is read; networkx holds ~1 KB of Python objects per edge (24 GB for Wikidata), and
scipy's csgraph searches return dense per-source arrays of every entity. Edges are the
distinct ``(head, relation, tail)`` facts of all splits, as the networkx view has them.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

__all__ = ["Adjacency"]

_DIRECTIONS = ("in", "out", "both")


def _gather(indptr: np.ndarray, pairs: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The ``pairs`` of every row in ``rows`` (vectorised CSR row gather)."""
    starts, ends = indptr[rows], indptr[rows + 1]
    lengths = ends - starts
    total = int(lengths.sum())
    if total == 0:
        return pairs[:0]
    offsets = np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
    return pairs[offsets + np.arange(total)]


class Adjacency:
    """Outgoing ``(tail, relation)`` and incoming ``(head, relation)`` pairs per row."""

    def __init__(self, out_indptr: np.ndarray, out_pairs: np.ndarray,
                 in_indptr: np.ndarray, in_pairs: np.ndarray) -> None:
        self.out_indptr, self.out_pairs = out_indptr, out_pairs
        self.in_indptr, self.in_pairs = in_indptr, in_pairs

    @classmethod
    def from_triples(cls, triples: np.ndarray, entity_count: int,
                     relation_count: int) -> Adjacency:
        """From an ``(n, 3)`` array of (head, relation, tail) rows; repeats collapse."""
        triples = np.asarray(triples, dtype=np.int64).reshape(-1, 3)
        relations, entities = max(relation_count, 1), max(entity_count, 1)
        if entities * entities * relations < 2**62:  # one sortable key per fact
            keys = np.unique((triples[:, 0] * relations + triples[:, 1]) * entities
                             + triples[:, 2])
            heads, rest = np.divmod(keys, relations * entities)
            relation, tails = np.divmod(rest, entities)
            del keys, rest
        else:  # astronomically many ids: sort the rows themselves
            unique = np.unique(triples, axis=0)
            heads, relation, tails = unique[:, 0], unique[:, 1], unique[:, 2]
        out_pairs = np.stack([tails, relation], axis=1).astype(np.int32)
        out_indptr = _indptr(heads, entity_count)
        order = np.argsort(tails, kind="stable")
        in_pairs = np.stack([heads[order], relation[order]], axis=1).astype(np.int32)
        in_indptr = _indptr(tails[order], entity_count)
        return cls(out_indptr, out_pairs, in_indptr, in_pairs)

    def arrays(self) -> dict[str, np.ndarray]:
        """The four arrays by file stem (what the KG store saves)."""
        return {"out_indptr": self.out_indptr, "out_pairs": self.out_pairs,
                "in_indptr": self.in_indptr, "in_pairs": self.in_pairs}

    # ------------------------------------------------------------------ queries
    def out_edges(self, row: int) -> np.ndarray:
        """``(tail, relation)`` pairs of the facts with ``row`` as head."""
        return self.out_pairs[self.out_indptr[row]:self.out_indptr[row + 1]]

    def in_edges(self, row: int) -> np.ndarray:
        """``(head, relation)`` pairs of the facts with ``row`` as tail."""
        return self.in_pairs[self.in_indptr[row]:self.in_indptr[row + 1]]

    def neighbour_rows(self, rows: Iterable[int] | np.ndarray, direction: str = "both"
                       ) -> np.ndarray:
        """Distinct rows one edge from any of ``rows`` (``out``, ``in`` or ``both``)."""
        if direction not in _DIRECTIONS:
            raise ValueError(f"direction must be 'in', 'out' or 'both', not {direction!r}")
        rows = np.asarray(list(rows) if not isinstance(rows, np.ndarray) else rows,
                          dtype=np.int64)
        found = []
        if direction in ("out", "both"):
            found.append(_gather(self.out_indptr, self.out_pairs, rows)[:, 0])
        if direction in ("in", "both"):
            found.append(_gather(self.in_indptr, self.in_pairs, rows)[:, 0])
        return np.unique(np.concatenate(found)) if found else np.empty(0, np.int64)

    def k_hop(self, rows: Iterable[int], hops: int) -> np.ndarray:
        """Rows within ``hops`` undirected edges of ``rows`` (the seeds included)."""
        seen = np.unique(np.asarray(list(rows), dtype=np.int64))
        frontier = seen
        for _ in range(max(0, int(hops))):
            if frontier.size == 0:
                break
            reached = self.neighbour_rows(frontier)
            frontier = np.setdiff1d(reached, seen, assume_unique=True)
            seen = np.union1d(seen, frontier)
        return seen

    def distance(self, source: int, target: int, cutoff: int) -> int | None:
        """Undirected hops from ``source`` to ``target``, None beyond ``cutoff``."""
        if source == target:
            return 0
        seen = np.asarray([source], dtype=np.int64)
        frontier = seen
        for hop in range(1, max(0, int(cutoff)) + 1):
            reached = self.neighbour_rows(frontier)
            if np.any(reached == target):
                return hop
            frontier = np.setdiff1d(reached, seen, assume_unique=True)
            if frontier.size == 0:
                return None
            seen = np.union1d(seen, frontier)
        return None

    def degrees(self) -> np.ndarray:
        """In + out facts per row (a self-loop counts twice, as in networkx)."""
        return np.diff(self.out_indptr) + np.diff(self.in_indptr)


def _indptr(sorted_rows: np.ndarray, count: int) -> np.ndarray:
    """CSR row pointers of a sorted row array over ``count`` rows."""
    indptr = np.zeros(count + 1, dtype=np.int64)
    np.cumsum(np.bincount(sorted_rows, minlength=count), out=indptr[1:])
    return indptr
