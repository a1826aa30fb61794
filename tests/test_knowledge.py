"""The alias table is built once: a KG name counts once, in the table and in the linker
that fine-tuning and inference use (it used to be merged into itself, 0.5 -> 0.67)."""

from __future__ import annotations

import pytest

from ernie_kg.data.fewrel import fewrel_aliases
from ernie_kg.data.knowledge import fewrel_knowledge
from ernie_kg.kg import Entity, EntityEmbeddings, KnowledgeGraph
from ernie_kg.linking import AliasTable, EntityLinker
from ernie_kg.pipelines import build_relation_classifier

# one sentence naming "Paris" (Texas): the KG's label "Paris" names the French capital
FEWREL = {"P131": [{"tokens": ["Paris", "lies", "in", "Lamar", "County", "."],
                    "h": ["Paris", "Q830149", [[0]]], "t": ["Lamar County", "Q26695", [[3, 4]]]}]}
BACKGROUND = KnowledgeGraph.from_triples(
    [("Q90", "P17", "Q142")], entities=[Entity("Q90", "Paris"), Entity("Q142", "France")])


def test_kg_name_counts_once_in_the_table():
    kg, aliases = fewrel_knowledge([FEWREL], BACKGROUND)
    assert aliases.counts("paris") == {"Q90": 1.0, "Q830149": 1.0}
    assert dict(aliases.candidates("Paris")) == pytest.approx({"Q90": 0.5, "Q830149": 0.5})
    assert dict(aliases.candidates("France")) == {"Q142": 1.0}


def test_the_linker_uses_the_table_as_it_is(tiny_backbone):
    kg, aliases = fewrel_knowledge([FEWREL], BACKGROUND)
    expected = dict(aliases.candidates("Paris"))
    assert dict(EntityLinker.from_kg(kg, aliases=aliases).aliases.candidates("Paris")) == expected
    embeddings = EntityEmbeddings.random(sorted(kg.entities), dim=8)
    classifier = build_relation_classifier(["P131"], kg, embeddings, aliases,
                                           backbone=tiny_backbone)
    linked = classifier.processor.linker.aliases
    assert linked is aliases
    assert dict(linked.candidates("Paris")) == pytest.approx({"Q90": 0.5, "Q830149": 0.5})


def test_linker_refuses_an_unfinished_table():
    with pytest.raises(TypeError, match="finished AliasTable"):
        EntityLinker.from_kg(BACKGROUND, aliases={"Paris": "Q90"})  # type: ignore[arg-type]


def test_fewrel_aliases_count_span_and_name():
    table = fewrel_aliases(FEWREL, AliasTable.from_kg(BACKGROUND))
    assert table.counts("lamar county") == {"Q26695": 1.0}
    assert table.entity_count("Q90") == 1.0
