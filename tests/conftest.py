"""Shared fixtures: small graphs the project writes itself (no ../shared data)."""

from __future__ import annotations

import pytest

from ernie_kg.kg import Entity, KnowledgeGraph, Relation


@pytest.fixture
def tiny_kg() -> KnowledgeGraph:
    """Eight capitals/countries/continents facts with names and aliases."""
    train = [
        ("paris", "capital_of", "france"),
        ("berlin", "capital_of", "germany"),
        ("france", "continent", "europe"),
        ("germany", "continent", "europe"),
        ("france", "shares_border_with", "germany"),
        ("germany", "shares_border_with", "france"),
        ("tokyo", "capital_of", "japan"),
    ]
    test = [("japan", "continent", "asia")]
    entities = [
        Entity("france", "France", aliases=("French Republic",), types=("country",)),
        Entity("paris", "Paris", types=("city",), description="capital of France"),
        Entity("germany", "Germany", aliases=("Deutschland", "FRG")),
    ]
    relations = [Relation("capital_of", "capital of")]
    return KnowledgeGraph.from_triples(train, test=test, entities=entities, relations=relations)
