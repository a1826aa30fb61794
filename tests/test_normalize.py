"""``surface_keys`` (the one-pass keys alias building files a name under) agrees with
the lookup functions it stands for, on every demo KG name and on awkward strings, and
its stem and acronym rules (which ``stem_key`` / ``acronyms`` call) give the documented
keys."""

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
        if not found.loose:
            assert (found.stem, found.acronyms) == ("", ())


@pytest.mark.parametrize(("surface", "stem", "found"), [
    ("Asia-Pacific Economic Cooperation", "asia pacif econom cooper", {"apec", "aec"}),
    ("Organization for Security and Co-operation in Europe",
     "organiz for securit and co oper in europ", {"oscoe", "osce"}),
    ("fencing", "fenc", set()), ("fencer", "fenc", set()),
    ("linguistics", "linguist", set()), ("linguistic", "linguist", set()),
    ("Khafra", "khafr", set()), ("Khafre", "khafr", set()),
    ("the Who", "the who", set()), ("...", "", set()),
])
def test_stem_and_acronym_rules(surface, stem, found):
    assert stem_key(surface) == stem
    assert acronyms(surface) == found
