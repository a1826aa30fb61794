"""Back-off candidates: several alias keys pooled into one candidate list.

Used by :meth:`~ernie_kg.linking.linker.EntityLinker.surface_candidates` when a span's
exact alias key finds nothing: the punctuation-free, acronym and root ("stem") keys pool
their counts at one match quality; fuzzy (faiss character n-gram) neighbours weigh each
key's counts by its similarity. Works on an :class:`AliasTable` or an :class:`AliasIndex`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["fuzzy_candidates", "pooled_candidates"]

Candidate = tuple[str, float, float]  # (entity id, prior, match quality)


def pooled_candidates(aliases: Any, keys: Iterable[str], quality: float
                      ) -> tuple[Candidate, ...]:
    """Candidates of several alias keys, counts pooled, at one match quality."""
    counts: dict[str, float] = {}
    for key in keys:
        for entity_id, count in aliases.counts(key).items():
            counts[entity_id] = counts.get(entity_id, 0.0) + count
    total = sum(counts.values())
    popularity = aliases.entity_count
    ranked = sorted(counts.items(), key=lambda item: (-item[1], -popularity(item[0]), item[0]))
    return tuple((e, c / total, quality) for e, c in ranked)


def fuzzy_candidates(aliases: Any, hits: Sequence[tuple[str, float]], sharpness: float
                     ) -> tuple[Candidate, ...]:
    """Candidates of fuzzy key ``hits`` (``(key, similarity)``): each entity weighs
    ``similarity ** sharpness * count``; its match quality is its best similarity."""
    weight: dict[str, float] = {}
    quality: dict[str, float] = {}
    for key, similarity in hits:
        for entity_id, count in aliases.counts(key).items():
            weight[entity_id] = weight.get(entity_id, 0.0) + similarity ** sharpness * count
            quality[entity_id] = max(quality.get(entity_id, 0.0), similarity)
    total = sum(weight.values())
    ranked = sorted(weight.items(), key=lambda item: (-item[1], item[0]))
    return tuple((e, w / total, quality[e]) for e, w in ranked)
