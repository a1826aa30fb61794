"""``surface_keys`` (the one-pass keys alias building files a name under) agrees with
the lookup functions it stands for, on every demo KG name and on awkward strings."""

from __future__ import annotations

import pytest

from ernie_kg.kg import KnowledgeGraph
from ernie_kg.linking.normalize import (
    acronyms,
    cased_key,
    loose_key,
    normalize,
    stem_key,
    surface_keys,
)
from ernie_kg.paths import demo_kg_dir

AWKWARD = [
    "Asia-Pacific Economic Cooperation", "Organization for Security and Co-operation in Europe",
    "Straße", "ROLLS\u2013ROYCE", "Zoë Saldaña", "l'Hôpital", "\u201cQuoted\u201d  Name",
    "C++", "...", "-", "  ", "", "New York City", "The the", "a b", "AT&T", "fencing",
    "Ångström unit", "de la Rúa", "under_score name", "ﬁne ligature", "U.S.A.",
]


def _names() -> list[str]:
    kg = KnowledgeGraph.load(demo_kg_dir())
    return [name for entity in kg.entities.values() for name in entity.names]


@pytest.mark.parametrize("surfaces", [AWKWARD, _names()], ids=["awkward", "demo-kg"])
def test_surface_keys_agree_with_the_lookup_functions(surfaces):
    for surface in surfaces:
        found = surface_keys(surface)
        if not normalize(surface):
            assert found is None, surface
            continue
        assert found.key == normalize(surface)
        assert found.cased == cased_key(surface)
        assert found.loose == loose_key(surface)
        if found.loose:
            assert found.stem == stem_key(surface)
            assert set(found.acronyms) == acronyms(surface)
        else:
            assert (found.stem, found.acronyms) == ("", ())
