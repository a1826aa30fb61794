"""Disambiguation: the alias prior combined with coherence among a text's mentions.

For mention *i* with candidates *e* (prior p_i(e), alias-match similarity q_i(e)):

    coherence_i(e) = mean over other mentions j (within ``window``) of
                     sum over j's candidates e' of p_j(e') * relatedness(e, e')
    context_i(e)   = cosine(words around e's known mentions, words of this text)
    posterior_i(e) ∝ p_i(e) * exp(coherence_weight * coherence_i(e))
                           * exp(context_weight * context_i(e))
    score_i(e)     = posterior_i(e) * q_i(e)

Relatedness is graph proximity in the KG (its CSR adjacency) (1 for an edge, up to 0.5 for
shared neighbours, hubs counting less) and, with TransE embeddings, the positive cosine
of the two vectors; the larger of the two counts. Context profiles come from
:mod:`ernie_kg.linking.context`. ``coherence_weight=0`` and ``context_weight=0`` give
the prior-only baseline with the same candidates. The linker links the top candidate
when its score reaches the NIL threshold.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from ernie_kg.kg.embeddings import EntityEmbeddings
from ernie_kg.kg.graph import KnowledgeGraph
from ernie_kg.linking.context import ContextModel, ContextQuery

__all__ = ["Candidate", "Disambiguator"]

#: ``(entity_id, prior, match similarity)``
Candidate = tuple[str, float, float]
#: One mention's ``(entity_id, score)`` pairs, best first.
Ranking = tuple[tuple[str, float], ...]


class Disambiguator:
    """Ranks each mention's candidates; see the module docstring for the formula."""

    def __init__(
        self,
        kg: KnowledgeGraph | None = None,
        embeddings: EntityEmbeddings | None = None,
        coherence_weight: float = 4.0,
        window: int = 20,
        context: ContextModel | None = None,
        context_weight: float = 0.0,
    ) -> None:
        self.kg = kg
        self.embeddings = embeddings
        self.coherence_weight = float(coherence_weight)
        self.window = int(window)
        self.context = context
        self.context_weight = float(context_weight)
        self._supports: dict[tuple[str, int], tuple[Sequence[Candidate], float]] = {}
        self._reaches: dict[int, tuple[Sequence[Candidate], frozenset[str]]] = {}
        self._touches: dict[tuple[int, int], tuple[Sequence[Candidate], Sequence[Candidate],
                                                   bool]] = {}
        self._neighbours: dict[str, frozenset[str]] = {}
        self._related: dict[tuple[str, str], float] = {}
        self._unit: dict[str, np.ndarray | None] = {}
        self._priors: dict[int, tuple[Sequence[Candidate], tuple[float, ...]]] = {}
        self._prior_rankings: dict[int, tuple[Sequence[Candidate], Ranking]] = {}

    # ------------------------------------------------------------------ relatedness
    def neighbours(self, entity_id: str) -> frozenset[str]:
        """KG neighbours of ``entity_id``, both directions (none without a graph); cached."""
        found = self._neighbours.get(entity_id)
        if found is None:
            kg = self.kg
            found = (frozenset(kg.neighbors(entity_id))
                     if kg is not None and entity_id in kg else frozenset())
            if len(self._neighbours) > 200_000:  # bounded on a Wikidata-sized KG
                self._neighbours.clear()
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
    def rank(
        self,
        mentions: Sequence[Sequence[Candidate]],
        context: Callable[[], ContextQuery] | None = None,
    ) -> list[Ranking]:
        """For each mention, its candidates with final scores, best first.

        ``context`` returns the text's :class:`ContextQuery`; it is only called when
        some mention is ambiguous and a context model is set.
        """
        if not mentions or max(map(len, mentions)) < 2:  # nothing to choose: posterior 1
            return [((c[0][0], c[0][2]),) if c else () for c in mentions]
        use_coherence = self.coherence_weight > 0 and (
            self.kg is not None or self.embeddings is not None)
        use_context = context is not None and self.context is not None and (
            self.context_weight > 0)
        priors: list[Sequence[float]] | None = None
        live = [j for j, c in enumerate(mentions) if c] if use_coherence else []
        query: ContextQuery | None = None
        ranked: list[Ranking] = []
        for i, candidates in enumerate(mentions):
            if len(candidates) < 2:
                ranked.append(((candidates[0][0], candidates[0][2]),) if candidates else ())
                continue
            posterior: Sequence[float] | None = None  # None: the prior alone decides
            if len(live) > 1 and self._coherent(i, mentions, live):
                if priors is None:
                    priors = list(map(self._prior, mentions))
                posterior = self._with_coherence(i, mentions, priors, live)
            if use_context:
                if query is None:
                    query = context()
                similarities = query.similarities(candidates)
                if any(similarities):  # all 0 (the common case) would leave it as it is
                    weight, exp = self.context_weight, math.exp
                    posterior = [p * exp(weight * s) for s, p in zip(
                        similarities, posterior or self._prior(candidates))]
            if posterior is None:  # the common case: ranked once per candidate list
                ranked.append(self._prior_ranking(candidates))
            else:
                ranked.append(_ranking(candidates, posterior))
        return ranked

    def _prior(self, candidates: Sequence[Candidate]) -> tuple[float, ...]:
        """The candidates' priors, normalised (cached per candidate tuple, as the
        linker's alias lookups return the same tuples; a list may change in place)."""
        found = self._priors.get(id(candidates))
        if found is not None and found[0] is candidates:
            return found[1]
        prior = tuple(_normalised(candidates))
        if type(candidates) is not tuple:
            return prior
        if len(self._priors) > 200_000:
            self._priors.clear()
        self._priors[id(candidates)] = (candidates, prior)
        return prior

    def _prior_ranking(self, candidates: Sequence[Candidate]) -> Ranking:
        """The ranking by prior and match similarity alone (cached per candidate tuple,
        like :meth:`_prior`)."""
        found = self._prior_rankings.get(id(candidates))
        if found is not None and found[0] is candidates:
            return found[1]
        ranking = _ranking(candidates, self._prior(candidates))
        if type(candidates) is tuple:
            if len(self._prior_rankings) > 200_000:
                self._prior_rankings.clear()
            self._prior_rankings[id(candidates)] = (candidates, ranking)
        return ranking

    def _support(self, entity_id: str, candidates: Sequence[Candidate], prior: Sequence[float]
                 ) -> float:
        """sum over ``candidates`` e' of prior(e') * relatedness(entity_id, e'), cached by
        candidate list (alias lookups return the same tuple objects)."""
        key = (entity_id, id(candidates))
        found = self._supports.get(key)
        if found is not None and found[0] is candidates:
            return found[1]
        relatedness = self.relatedness
        value = 0.0
        for other, p in zip(candidates, prior):
            value += p * relatedness(entity_id, other[0])
        if len(self._supports) > 500_000:
            self._supports.clear()
        self._supports[key] = (candidates, value)  # holding it keeps its id unique
        return value

    def _reach(self, candidates: Sequence[Candidate]) -> frozenset[str]:
        """The candidates' entities and their KG neighbours (cached per candidate list):
        an entity whose neighbours miss this set has relatedness 0 with every one of
        them (no edge, no shared neighbour)."""
        found = self._reaches.get(id(candidates))
        if found is not None and found[0] is candidates:
            return found[1]
        reach = frozenset(c[0] for c in candidates).union(
            *(self.neighbours(c[0]) for c in candidates))
        if len(self._reaches) > 200_000:
            self._reaches.clear()
        self._reaches[id(candidates)] = (candidates, reach)
        return reach

    def _touching(self, own: Sequence[Candidate], other: Sequence[Candidate]) -> bool:
        """Whether some candidate of ``own`` has graph relatedness > 0 with some of
        ``other`` (cached per pair of candidate lists)."""
        key = (id(own), id(other))
        found = self._touches.get(key)
        if found is not None and found[0] is own and found[1] is other:
            return found[2]
        reach = self._reach(other)
        neighbours = self.neighbours
        touching = not all(neighbours(c[0]).isdisjoint(reach) for c in own)
        if len(self._touches) > 500_000:
            self._touches.clear()
        self._touches[key] = (own, other, touching)
        return touching

    def _coherent(self, i: int, mentions: Sequence[Sequence[Candidate]], live: list[int]
                  ) -> bool:
        """Whether coherence can move mention ``i``'s posterior: some other mention
        within the window, and (graph relatedness only) one whose candidates touch its
        own in the KG."""
        window = self.window
        own = mentions[i]
        if self.embeddings is not None:
            return any(j != i and abs(j - i) <= window for j in live)
        touching = self._touching
        return any(j != i and abs(j - i) <= window and touching(own, mentions[j])
                   for j in live)

    def _with_coherence(
        self, i: int, mentions: Sequence[Sequence[Candidate]], priors: list[Sequence[float]],
        live: list[int],
    ) -> list[float]:
        others = [j for j in live if j != i and abs(j - i) <= self.window]
        weights = []
        scale = self.coherence_weight / len(others)
        for (entity_id, _, _), prior in zip(mentions[i], priors[i]):
            support = 0.0
            for j in others:
                support += self._support(entity_id, mentions[j], priors[j])
            weights.append(prior * math.exp(scale * support))
        return _normalised_values(weights)


def _by_score(item: tuple[str, float]) -> float:
    return -item[1]


def _ranking(candidates: Sequence[Candidate], posterior: Sequence[float]) -> Ranking:
    """``(entity_id, posterior / total * match similarity)``, best first."""
    total = sum(posterior) or 1.0
    scores = [(c[0], p / total * c[2]) for c, p in zip(candidates, posterior)]
    scores.sort(key=_by_score)
    return tuple(scores)


def _normalised(candidates: Sequence[Candidate]) -> list[float]:
    return _normalised_values([c[1] for c in candidates])


def _normalised_values(values: list[float]) -> list[float]:
    total = sum(values)
    if total <= 0:
        return [1.0 / len(values)] * len(values) if values else []
    return [v / total for v in values]
