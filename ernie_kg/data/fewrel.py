"""FewRel: the one module for the format. Reading and checking a file, relation examples,
mentions, triples, a KG of its facts, the alias counts and context words its mentions
give the linker, and a stratified split.

FewRel format: ``{"P177": [{"tokens": [...], "h": [name, QID, [[token indices]]],
"t": [...]}, ...], ...}``. Sentences are rebuilt as ``" ".join(tokens)``, so a token
span maps to one character span (:func:`instance_text`). SemEval-2010 Task 8 in FewRel
format has words where the ids are (``read_fewrel(..., gold_ids=False)``).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ernie_kg.data.examples import RelationExample
from ernie_kg.errors import DataFormatError
from ernie_kg.io import read_json
from ernie_kg.kg.graph import Entity, KnowledgeGraph
from ernie_kg.linking.aliases import AliasTable
from ernie_kg.linking.context import ContextModel
from ernie_kg.linking.normalize import normalize
from ernie_kg.spans import token_char_spans

__all__ = [
    "FewRelData",
    "FewRelMention",
    "fewrel_aliases",
    "fewrel_context",
    "fewrel_kg",
    "fewrel_mentions",
    "fewrel_triples",
    "instance_text",
    "load_fewrel",
    "read_fewrel",
    "split_fewrel",
]

FewRelData = dict[str, list[dict[str, Any]]]
FewRelSource = str | Path | Mapping[str, Any]


@dataclass(frozen=True)
class FewRelMention:
    """One head or tail mention of one instance."""

    relation: str
    index: int  # instance index within its relation
    role: str  # "h" or "t"
    name: str
    entity_id: str
    text: str  # the sentence, " ".join(tokens)
    start: int  # char span in text, half-open
    end: int
    token_start: int
    token_end: int

    @property
    def span_text(self) -> str:
        """The mention's text."""
        return self.text[self.start:self.end]


def load_fewrel(data: FewRelSource) -> FewRelData:
    """Load and check a FewRel file (or check a dict); errors name the file and field."""
    source = "<dict>"
    if isinstance(data, (str, Path)):
        source = str(data)
        data = read_json(data, DataFormatError, "no such FewRel file")
    if not isinstance(data, Mapping):
        raise DataFormatError(source, None, "expected a JSON object {relation: [instances]}")
    for relation, instances in data.items():
        if not isinstance(instances, list):
            raise DataFormatError(source, None, f"relation {relation!r}: expected a list")
        for index, instance in enumerate(instances):
            _check_instance(source, relation, index, instance)
    return {str(r): list(v) for r, v in data.items()}


def _check_instance(source: str, relation: str, index: int, instance: Any) -> None:
    where = f"relation {relation!r}, instance {index}"
    if not isinstance(instance, Mapping):
        raise DataFormatError(source, None, f"{where}: expected an object")
    tokens = instance.get("tokens")
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise DataFormatError(source, None, f"{where}: field 'tokens' must be a list of strings")
    for role in ("h", "t"):
        value = instance.get(role)
        ok = (isinstance(value, list) and len(value) >= 3 and isinstance(value[0], str)
              and isinstance(value[1], str) and isinstance(value[2], list) and value[2]
              and all(isinstance(p, list) and p for p in value[2]))
        if not ok:
            raise DataFormatError(
                source, None, f"{where}: field '{role}' must be [name, id, [[token indices]]]"
            )
        positions = value[2][0]
        if not all(isinstance(i, int) and 0 <= i < len(tokens) for i in positions):
            raise DataFormatError(
                source, None, f"{where}: field '{role}' token indices out of range"
            )


def read_fewrel(source: FewRelSource, gold_ids: bool = True) -> list[RelationExample]:
    """The instances of a FewRel file or dict as :class:`RelationExample` s.

    ``gold_ids=False`` ignores the ids (SemEval in FewRel format has words, not KG ids).
    """
    examples = []
    for relation, instances in load_fewrel(source).items():
        for instance in instances:
            text, head, tail = instance_text(instance)
            examples.append(RelationExample(
                text, head, tail, relation,
                instance["h"][1] if gold_ids else None, instance["t"][1] if gold_ids else None,
            ))
    return examples


def instance_text(instance: Mapping[str, Any]) -> tuple[str, tuple[int, int], tuple[int, int]]:
    """``(text, head char span, tail char span)`` of a FewRel instance (first occurrence)."""
    tokens = instance["tokens"]
    spans = token_char_spans(tokens)
    text = " ".join(tokens)
    result = []
    for role in ("h", "t"):
        positions = instance[role][2][0]
        result.append((spans[min(positions)][0], spans[max(positions)][1]))
    return text, result[0], result[1]


def fewrel_mentions(data: FewRelSource) -> Iterator[FewRelMention]:
    """Every head and tail mention, in file order."""
    for relation, instances in load_fewrel(data).items():
        for index, instance in enumerate(instances):
            text, head, tail = instance_text(instance)
            for role, (start, end) in (("h", head), ("t", tail)):
                positions = instance[role][2][0]
                yield FewRelMention(
                    relation, index, role, instance[role][0], instance[role][1], text,
                    start, end, min(positions), max(positions) + 1,
                )


def fewrel_triples(data: FewRelSource) -> list[tuple[str, str, str]]:
    """``(head id, relation, tail id)`` of every instance, without repeats."""
    triples = (
        (instance["h"][1], relation, instance["t"][1])
        for relation, instances in load_fewrel(data).items()
        for instance in instances
    )
    return list(dict.fromkeys(triples))


def fewrel_kg(data: FewRelSource) -> KnowledgeGraph:
    """A KG of the instances' triples; each entity's label is its most frequent name."""
    data = load_fewrel(data)
    names: dict[str, Counter] = {}
    for mention in fewrel_mentions(data):
        names.setdefault(mention.entity_id, Counter())[mention.name] += 1
    entities = [Entity(e, counts.most_common(1)[0][0]) for e, counts in names.items()]
    return KnowledgeGraph.from_triples(fewrel_triples(data), entities=entities)


def fewrel_aliases(data: FewRelSource, table: AliasTable | None = None) -> AliasTable:
    """``table`` (default: a new one) plus one count per head/tail mention: the span text
    as written (case kept) and, when it normalises differently, the annotated name."""
    table = AliasTable() if table is None else table
    for mention in fewrel_mentions(data):
        table.add(mention.span_text, mention.entity_id)
        if normalize(mention.name) != normalize(mention.span_text):
            table.add(mention.name, mention.entity_id)
    return table


def fewrel_context(data: FewRelSource, context: ContextModel | None = None) -> ContextModel:
    """``context`` (default: a new one) plus each sentence, minus its head and tail, as a
    document describing both entities."""
    context = ContextModel() if context is None else context
    for instances in load_fewrel(data).values():
        for instance in instances:
            text, head, tail = instance_text(instance)
            context.add_text((instance["h"][1], instance["t"][1]), text, (head, tail))
    return context


def split_fewrel(
    data: FewRelSource,
    fractions: Sequence[float] = (0.8, 0.2),
    seed: int = 0,
) -> list[FewRelData]:
    """Split instances into parts of the given ``fractions``, stratified by relation.

    Each relation's instances are shuffled with ``random.Random(f"{seed}:{relation}")``
    (stable across Python versions and independent of the other relations) and cut by
    largest remainder, so every part gets its share of every relation and the same seed
    always gives the same split. Returns one FewRel dict per fraction.
    """
    if not fractions or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must be non-negative and sum to 1, got {list(fractions)}")
    data = load_fewrel(data)
    parts: list[FewRelData] = [{} for _ in fractions]
    for relation in sorted(data):
        instances = data[relation]
        order = list(range(len(instances)))
        random.Random(f"{seed}:{relation}").shuffle(order)
        sizes = _largest_remainder(len(order), fractions)
        start = 0
        for part, size in zip(parts, sizes):
            part[relation] = [instances[i] for i in order[start:start + size]]
            start += size
    return parts


def _largest_remainder(total: int, fractions: Sequence[float]) -> list[int]:
    exact = [total * f for f in fractions]
    sizes = [int(x) for x in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: (-(exact[i] - sizes[i]), i))
    for i in by_remainder[: total - sum(sizes)]:
        sizes[i] += 1
    return sizes
