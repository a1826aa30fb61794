"""Knowledge that cannot reach the model is refused or warned about, never silent."""

from __future__ import annotations

import pytest

from ernie_kg.errors import ErnieKGError
from ernie_kg.kg import EntityEmbeddings
from ernie_kg.pipelines import build_relation_classifier

LABELS = ["capital_of", "located_in"]


def test_entity_table_covering_none_of_the_kg_is_an_error(tiny_backbone, demo_knowledge):
    kg = demo_knowledge[0]
    elsewhere = EntityEmbeddings.random(["Q1", "Q2", "Q3"], dim=8)
    with pytest.raises(ErnieKGError, match="covers none of the KG's"):
        build_relation_classifier(LABELS, kg, elsewhere, backbone=tiny_backbone)
    baseline = build_relation_classifier(LABELS, kg, elsewhere, knowledge=False,
                                         backbone=tiny_backbone)  # no knowledge: fine
    assert baseline.kg_coverage is None


def test_entity_table_covering_little_of_the_kg_warns(tiny_backbone, demo_knowledge):
    kg = demo_knowledge[0]
    ids = list(kg.entities)
    partial = EntityEmbeddings.random(ids[: len(ids) // 4], dim=8)
    with pytest.warns(UserWarning, match=r"covers 2\d\.\d% of the KG's entities"):
        classifier = build_relation_classifier(LABELS, kg, partial, backbone=tiny_backbone)
    assert classifier.kg_coverage == pytest.approx(len(ids) // 4 / len(ids))
    full = build_relation_classifier(LABELS, kg, demo_knowledge[1], backbone=tiny_backbone)
    assert full.kg_coverage == 1.0
