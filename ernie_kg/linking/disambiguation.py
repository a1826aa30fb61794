"""Disambiguation: the alias prior combined with coherence among a text's mentions.

For mention *i* with candidates *e* (prior p_i(e), alias-match similarity q_i(e)):

    coherence_i(e) = mean over other mentions j (within ``window``) of
                     sum over j's candidates e' of p_j(e') * relatedness(e, e')
    posterior_i(e) ∝ p_i(e) * exp(coherence_weight * coherence_i(e))
    score_i(e)     = posterior_i(e) * q_i(e)

Relatedness is graph proximity in the KG's networkx view (1 for an edge, up to 0.5 for
shared neighbours, hubs counting less) and, with TransE embeddings, the positive cosine
of the two vectors; the larger of the two counts. ``coherence_weight=0`` gives the
prior-only baseline with the same candidates. The linker links the top candidate when
its score reaches the NIL threshold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ernie_kg.kg.embeddings import EntityEmbeddings
from ernie_kg.kg.graph import KnowledgeGraph

__all__ = ["Candidate", "Disambiguator"]

#: ``(entity_id, prior, match similarity)``
Candidate = tuple[str, float, float]


class Disambiguator:
    """Ranks each mention's candidates; see the module docstring for the formula."""

    def __init__(
        self,
        kg: KnowledgeGraph | None = None,
        embeddings: EntityEmbeddings | None = None,
        coherence_weight: float = 4.0,
        window: int = 20,
    ) -> None:
        self.kg = kg
        self.embeddings = embeddings
        self.coherence_weight = float(coherence_weight)
        self.window = int(window)
        self._neighbours: dict[str, frozenset[str]] = {}
        self._related: dict[tuple[str, str], float] = {}
        self._unit: dict[str, np.ndarray | None] = {}

    # ------------------------------------------------------------------ relatedness
    def neighbours(self, entity_id: str) -> frozenset[str]:
        found = self._neighbours.get(entity_id)
        if found is None:
            graph = self.kg.graph if self.kg is not None else None
            if graph is None or entity_id not in graph:
                found = frozenset()
            else:
                found = frozenset(graph.successors(entity_id)).union(
                    graph.predecessors(entity_id)) - {entity_id}
            self._neighbours[entity_id] = found
        return found

    def relatedness(self, a: str, b: str) -> float:
        """In [0, 1]: 1 for KG neighbours, less for shared neighbours or TransE cosine."""
        if a == b:
            return 0.0  # no evidence: a text naming one entity twice
        pair = (a, b) if a < b else (b, a)
        value = self._related.get(pair)
        if value is None:
            value = max(self._graph_relatedness(a, b), self._vector_relatedness(a, b))
            if len(self._related) > 1_000_000:
                self._related.clear()
            self._related[pair] = value
        return value

    def _graph_relatedness(self, a: str, b: str) -> float:
        near_a = self.neighbours(a)
        if not near_a:
            return 0.0
        if b in near_a:
            return 1.0
        shared = near_a & self.neighbours(b)
        if not shared:
            return 0.0
        weight = sum(1.0 / math.log2(1 + len(self.neighbours(z))) for z in shared)
        return 0.5 * min(1.0, weight)

    def _vector(self, entity_id: str) -> np.ndarray | None:
        if entity_id not in self._unit:
            vector = None
            if self.embeddings is not None and entity_id in self.embeddings:
                raw = np.asarray(self.embeddings.vector(entity_id), dtype=np.float32)
                norm = float(np.linalg.norm(raw))
                vector = raw / norm if norm else None
            self._unit[entity_id] = vector
        return self._unit[entity_id]

    def _vector_relatedness(self, a: str, b: str) -> float:
        if self.embeddings is None:
            return 0.0
        va, vb = self._vector(a), self._vector(b)
        if va is None or vb is None:
            return 0.0
        return max(0.0, float(va @ vb))

    # ------------------------------------------------------------------ ranking
    def rank(self, mentions: Sequence[Sequence[Candidate]]) -> list[list[tuple[str, float]]]:
        """For each mention, its candidates with final scores, best first."""
        priors = [_normalised(c) for c in mentions]
        live = [i for i, c in enumerate(mentions) if c]
        use_coherence = self.coherence_weight > 0 and len(live) > 1 and (
            self.kg is not None or self.embeddings is not None)
        ranked = []
        for i, candidates in enumerate(mentions):
            if not candidates:
                ranked.append([])
                continue
            posterior = priors[i]
            if use_coherence and len(candidates) > 1:
                posterior = self._with_coherence(i, mentions, priors, live)
            scores = [(c[0], posterior[n] * c[2]) for n, c in enumerate(candidates)]
            scores.sort(key=lambda item: -item[1])
            ranked.append(scores)
        return ranked

    def _with_coherence(
        self, i: int, mentions: Sequence[Sequence[Candidate]], priors: list[list[float]],
        live: list[int],
    ) -> list[float]:
        others = [j for j in live if j != i and abs(j - i) <= self.window]
        if not others:
            return priors[i]
        weights = []
        for (entity_id, _, _), prior in zip(mentions[i], priors[i]):
            support = 0.0
            for j in others:
                support += sum(
                    p * self.relatedness(entity_id, other[0])
                    for other, p in zip(mentions[j], priors[j])
                )
            coherence = support / len(others)
            weights.append(prior * math.exp(self.coherence_weight * coherence))
        return _normalised_values(weights)


def _normalised(candidates: Sequence[Candidate]) -> list[float]:
    return _normalised_values([c[1] for c in candidates])


def _normalised_values(values: list[float]) -> list[float]:
    total = sum(values)
    if total <= 0:
        return [1.0 / len(values)] * len(values) if values else []
    return [v / total for v in values]
