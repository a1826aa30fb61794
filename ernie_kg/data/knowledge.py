"""The knowledge of an experiment: a KG and its alias table from FewRel files (+ a
background KG), and entity vectors for it.

Why: a FewRel file is also knowledge. Its (head, relation, tail) QID facts go into the
KG that TransE embeds, and its mention names go into the alias table the linker uses;
a background KG (e.g. CoDEx-M) adds structure around them. Which files count decides the
setting: the training split only ("open") or also the evaluation split ("closed", as in
ERNIE, whose Wikidata held the test facts).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ernie_kg.data.examples import RelationExample
from ernie_kg.data.fewrel import FewRelSource, fewrel_aliases, fewrel_kg, load_fewrel
from ernie_kg.kg.embeddings import EntityEmbeddings
from ernie_kg.kg.graph import KnowledgeGraph
from ernie_kg.linking.aliases import AliasTable


def merge_fewrel(sources: Sequence[FewRelSource]) -> dict[str, list[dict[str, Any]]]:
    """One FewRel dict holding every instance of every source (relation lists joined)."""
    merged: dict[str, list[dict[str, Any]]] = {}
    for source in sources:
        for relation, instances in load_fewrel(source).items():
            merged.setdefault(relation, []).extend(instances)
    return merged


def flatten_splits(kg: KnowledgeGraph) -> KnowledgeGraph:
    """All of ``kg``'s triples (train, valid and test) as training triples."""
    return KnowledgeGraph.from_triples(
        list(dict.fromkeys(kg.triples)),
        entities=kg.entities.values(),
        relations=kg.relations.values(),
    )


def neighbourhood(kg: KnowledgeGraph, seeds: set[str], hops: int) -> KnowledgeGraph | None:
    """The triples of ``kg`` within ``hops`` of ``seeds`` (1: triples touching a seed)."""
    keep: list = []
    frontier = set(seeds)
    remaining = list(dict.fromkeys(kg.triples))
    for _ in range(hops):
        touched = [t for t in remaining if t[0] in frontier or t[2] in frontier]
        if not touched:
            break
        chosen = set(touched)
        remaining = [t for t in remaining if t not in chosen]
        keep += touched
        frontier |= {t[0] for t in touched} | {t[2] for t in touched}
    if not keep:
        return None
    present = {e for h, _, t in keep for e in (h, t)}
    return KnowledgeGraph.from_triples(
        keep, entities=[e for i, e in kg.entities.items() if i in present],
        relations=[r for i, r in kg.relations.items() if i in {x[1] for x in keep}],
    )


def fewrel_knowledge(
    sources: Sequence[FewRelSource],
    background: KnowledgeGraph | str | Path | None = None,
    hops: int | None = None,
) -> tuple[KnowledgeGraph, AliasTable]:
    """The KG (facts of ``sources`` + every split of ``background``) and its finished
    alias table: each name of each background entity once, plus every mention of
    ``sources`` once (:func:`~ernie_kg.data.fewrel.fewrel_aliases`). An entity known only
    from ``sources`` is named by its mentions (its KG label is their most frequent name,
    so it is not counted again). Hand both to the linker as they are
    (``EntityLinker.from_kg(kg, aliases=aliases)``): the table is built here only.

    ``hops`` keeps only the background triples within that many hops of the sources'
    entities (None: all). Background entities without names are never linked, so their
    far-away triples only cost TransE time and dilute its updates of the FewRel facts.
    """
    data = merge_fewrel(sources)
    kg = fewrel_kg(data) if data else None
    if background is not None:
        if not isinstance(background, KnowledgeGraph):
            background = KnowledgeGraph.load(background)
        background = flatten_splits(background)
        if hops is not None and kg is not None:
            background = neighbourhood(background, set(kg.entities), hops)
    aliases = AliasTable() if background is None else AliasTable.from_kg(background)
    if background is not None:
        # the background's metadata (labels, aliases, types) wins over FewRel names
        kg = background if kg is None else background.merged_with(kg)
    if kg is None:
        raise ValueError("no knowledge: give FewRel sources or a background KG")
    if data:
        fewrel_aliases(data, aliases)
    return kg, aliases


def hide_sole_fact_entities(
    examples: Sequence[RelationExample], kg: KnowledgeGraph
) -> tuple[list[RelationExample], dict[str, float]]:
    """``examples`` with each head/tail id set to 0 (no entity, and not linked again)
    where the KG knows that entity only through the example's own fact; plus the share
    of heads and tails hidden.

    Why: when the KG holds the training facts but not the evaluation facts (the open
    setting), TransE places a training head at ``t - r``, so its vector spells out the
    label; at test time such an entity is not in the KG at all. A model trained on the
    first learns a shortcut the second never offers. Hiding those entities makes training
    see what test sees (FewRel-16, open KG: 9% of training heads and 63% of tails have a
    fact of their own besides the example's; 8% of test heads and 64% of tails are in the
    KG).
    """
    facts = set(kg.triples)
    degree: Counter[str] = Counter()
    for head, _, tail in facts:
        degree[head] += 1
        degree[tail] += 1

    def sole(entity: str | int | None, fact: tuple) -> bool:
        return isinstance(entity, str) and degree[entity] == 1 and fact in facts

    hidden = {"head": 0, "tail": 0}
    out = []
    for example in examples:
        fact = (example.head_id, example.label, example.tail_id)
        changes: dict[str, int] = {}
        for role in ("head", "tail"):
            if sole(getattr(example, f"{role}_id"), fact):
                changes[f"{role}_id"] = 0
                hidden[role] += 1
        out.append(dataclasses.replace(example, **changes) if changes else example)
    total = max(len(examples), 1)
    return out, {f"{role}s_hidden": count / total for role, count in hidden.items()}


def relation_knowledge(
    sources: Sequence[FewRelSource],
    background: KnowledgeGraph | str | Path | None = None,
    embeddings: str | Path | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    hops: int | None = None,
    **embedding_settings: Any,
) -> tuple[KnowledgeGraph, EntityEmbeddings, AliasTable]:
    """:func:`fewrel_knowledge` plus entity vectors: loaded from ``embeddings`` (a saved
    table), else TransE trained with PyKEEN and cached by content hash in ``cache_dir``."""
    from ernie_kg.kg.cache import cached_entity_embeddings
    from ernie_kg.paths import PROJECT_ROOT

    kg, aliases = fewrel_knowledge(sources, background, hops)
    if embeddings is not None:
        table = EntityEmbeddings.load(embeddings)
    else:
        cache = Path(cache_dir) if cache_dir is not None else PROJECT_ROOT / "cache" / "kg"
        table = cached_entity_embeddings(kg, cache, progress=progress, **embedding_settings)
    return kg, table, aliases
