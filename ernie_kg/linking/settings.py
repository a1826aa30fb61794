"""The linker's settings: every one with its default, and their validation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ernie_kg.linking.mentions import LinkerConfigError

__all__ = ["DEFAULT_LINKER_CONFIG", "checked_config"]

#: Every linker setting with its default. Weights and back-off qualities were chosen on a
#: dev split carved out of the FewRel-16 training part (results/linking_fewrel16_dev.md).
#: A match quality of 0 switches that back-off off.
DEFAULT_LINKER_CONFIG: dict[str, Any] = {
    "lang": "en",
    "use_ner": False,  # extra recall from an installed spaCy NER pipeline
    "ner_model": "en_core_web_sm",
    "fuzzy": False,  # faiss character n-gram candidates for near-miss spellings
    "fuzzy_threshold": 0.55,  # least alias similarity for a fuzzy candidate
    "fuzzy_k": 5,  # alias keys a fuzzy lookup returns
    "fuzzy_sharpness": 8.0,  # fuzzy candidate weight: similarity ** sharpness * count
    "loose_similarity": 0.95,  # match quality of a punctuation-free key match
    "acronym_similarity": 0.9,  # match quality of an acronym match ("WTO")
    "stem_similarity": 0.8,  # match quality of a root ("stem") key match ("fencer")
    "nil_threshold": 0.25,  # least score (posterior * match quality) to link
    "coherence_weight": 4.0,  # 0 = prior only
    "coherence_window": 20,  # mentions on either side that count for coherence
    "context_weight": 2.0,  # weight of context-profile similarity (needs a ContextModel)
    "max_candidates": 10,
    "skip_stop_words": True,  # aliases made only of stop words/punctuation never match
    "min_chars": 2,  # shortest alias (non-space chars) the matcher uses
}


def checked_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` over the defaults; an unknown or out-of-range setting raises
    :class:`LinkerConfigError` naming it."""
    unknown = set(config) - set(DEFAULT_LINKER_CONFIG)
    if unknown:
        raise LinkerConfigError(
            f"unknown linker settings {sorted(unknown)}; known: {sorted(DEFAULT_LINKER_CONFIG)}"
        )
    merged = {**DEFAULT_LINKER_CONFIG, **config}
    for name in ("nil_threshold", "fuzzy_threshold", "loose_similarity", "stem_similarity",
                 "acronym_similarity"):
        if not 0.0 <= float(merged[name]) <= 1.0:
            raise LinkerConfigError(f"{name} must be in [0, 1], not {merged[name]!r}")
    for name in ("coherence_weight", "fuzzy_sharpness", "context_weight"):
        if float(merged[name]) < 0:
            raise LinkerConfigError(f"{name} must be >= 0, not {merged[name]!r}")
    for name in ("max_candidates", "fuzzy_k", "coherence_window", "min_chars"):
        if int(merged[name]) < (1 if name in ("max_candidates", "fuzzy_k") else 0):
            raise LinkerConfigError(f"{name} is too small: {merged[name]!r}")
    return merged
