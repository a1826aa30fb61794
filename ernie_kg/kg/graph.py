"""The knowledge graph: entities with names, relations, triples, and a networkx view.

A KG directory (the contract every ``--kg`` option reads) holds tab-separated
``head<TAB>relation<TAB>tail`` lines in ``train.txt`` (plus optional ``valid.txt`` and
``test.txt``, the CoDEx/PyKEEN layout), optional ``entities.jsonl`` (``id``, ``label``,
optional ``aliases``, ``types``, ``description``) and optional ``relations.jsonl``
(``id``, ``label``). Entities without metadata are allowed: their id is their only name.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import networkx as nx

from ernie_kg.errors import EmptyGraphError, KGFormatError, UnknownIdError
from ernie_kg.io import iter_jsonl, write_atomic

Triple = tuple[str, str, str]
SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Entity:
    """A KG entity; ``label`` defaults to the id when the KG gives no name."""

    id: str
    label: str = ""
    aliases: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        if not self.label:
            object.__setattr__(self, "label", self.id)

    @property
    def names(self) -> tuple[str, ...]:
        """The label followed by the aliases, without repeats."""
        return tuple(dict.fromkeys((self.label, *self.aliases)))

    def to_json(self) -> dict:
        """The entity as a JSON object (empty fields left out)."""
        record: dict = {"id": self.id, "label": self.label}
        if self.aliases:
            record["aliases"] = list(self.aliases)
        if self.types:
            record["types"] = list(self.types)
        if self.description:
            record["description"] = self.description
        return record


@dataclass(frozen=True)
class Relation:
    """A KG relation; ``label`` defaults to the id."""

    id: str
    label: str = ""

    def __post_init__(self) -> None:
        if not self.label:
            object.__setattr__(self, "label", self.id)


@dataclass
class KnowledgeGraph:
    """Entities, relations and triples split into train/valid/test.

    Build one with :meth:`load` (a KG directory) or :meth:`from_triples`. Entity and
    relation order is deterministic: metadata order first, then first appearance in
    the triples.
    """

    entities: dict[str, Entity]
    relations: dict[str, Relation]
    splits: dict[str, list[Triple]] = field(default_factory=dict)

    # ------------------------------------------------------------------ building
    @classmethod
    def from_triples(
        cls,
        train: Iterable[Triple],
        valid: Iterable[Triple] = (),
        test: Iterable[Triple] = (),
        entities: Iterable[Entity] = (),
        relations: Iterable[Relation] = (),
    ) -> KnowledgeGraph:
        """Build a graph from triples; entities/relations give optional metadata."""
        splits = {"train": list(train), "valid": list(valid), "test": list(test)}
        entity_meta = {e.id: e for e in entities}
        relation_meta = {r.id: r for r in relations}
        return cls._assemble(splits, entity_meta, relation_meta, source="<triples>")

    @classmethod
    def _assemble(
        cls,
        splits: dict[str, list[Triple]],
        entity_meta: dict[str, Entity],
        relation_meta: dict[str, Relation],
        source: str,
    ) -> KnowledgeGraph:
        if not any(splits.values()):
            raise EmptyGraphError(f"{source}: the knowledge graph has no triples")
        entity_ids: dict[str, None] = {}
        relation_ids: dict[str, None] = {}
        for split in SPLITS:
            for head, relation, tail in splits.get(split, []):
                entity_ids[head] = None
                entity_ids[tail] = None
                relation_ids[relation] = None
        for entity_id in entity_meta:
            if entity_id not in entity_ids:
                raise UnknownIdError(
                    f"{source}: entity '{entity_id}' has metadata but occurs in no triple"
                )
        for relation_id in relation_meta:
            if relation_id not in relation_ids:
                raise UnknownIdError(
                    f"{source}: relation '{relation_id}' has metadata but occurs in no triple"
                )
        ordered_entities = list(entity_meta) + [e for e in entity_ids if e not in entity_meta]
        ordered_relations = list(relation_meta) + [
            r for r in relation_ids if r not in relation_meta
        ]
        return cls(
            entities={e: entity_meta.get(e) or Entity(e) for e in ordered_entities},
            relations={r: relation_meta.get(r) or Relation(r) for r in ordered_relations},
            splits={split: list(splits.get(split, [])) for split in SPLITS},
        )

    @classmethod
    def load(cls, directory: str | Path) -> KnowledgeGraph:
        """Read a KG directory; malformed input raises :class:`KGFormatError`."""
        directory = Path(directory)
        if not directory.is_dir():
            raise KGFormatError(directory, None, "not a directory (expected a KG directory)")
        train_path = directory / "train.txt"
        if not train_path.exists():
            raise KGFormatError(train_path, None, "missing: a KG directory needs train.txt")
        splits = {
            split: read_triples(directory / f"{split}.txt")
            for split in SPLITS
            if (directory / f"{split}.txt").exists()
        }
        entity_meta = {e.id: e for e in _read_entities(directory / "entities.jsonl")}
        relation_meta = {r.id: r for r in _read_relations(directory / "relations.jsonl")}
        return cls._assemble(splits, entity_meta, relation_meta, source=str(directory))

    def save(self, directory: str | Path) -> Path:
        """Write the graph as a KG directory that :meth:`load` reads back identically."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for split in SPLITS:
            triples = self.splits.get(split, [])
            if split == "train" or triples:
                text = "".join(f"{h}\t{r}\t{t}\n" for h, r, t in triples)
                write_atomic(directory / f"{split}.txt", lambda out, text=text: out.write(text))

        def write_entities(out) -> None:
            for entity in self.entities.values():
                out.write(json.dumps(entity.to_json(), ensure_ascii=False) + "\n")

        def write_relations(out) -> None:
            for relation in self.relations.values():
                record = {"id": relation.id, "label": relation.label}
                out.write(json.dumps(record, ensure_ascii=False) + "\n")

        write_atomic(directory / "entities.jsonl", write_entities)
        write_atomic(directory / "relations.jsonl", write_relations)
        return directory

    def merged_with(self, other: KnowledgeGraph) -> KnowledgeGraph:
        """A new graph with both graphs' triples (per split) and metadata (self wins)."""
        splits = {
            s: list(dict.fromkeys(self.splits.get(s, []) + other.splits.get(s, [])))
            for s in SPLITS
        }
        entity_meta = {**other.entities, **self.entities}
        relation_meta = {**other.relations, **self.relations}
        return KnowledgeGraph._assemble(splits, entity_meta, relation_meta, "<merged>")

    # ------------------------------------------------------------------ access
    @property
    def train(self) -> list[Triple]:
        """The training split's triples."""
        return self.splits.get("train", [])

    @property
    def triples(self) -> list[Triple]:
        """Every triple of every split."""
        return [t for split in SPLITS for t in self.splits.get(split, [])]

    def entity(self, entity_id: str) -> Entity:
        """The entity of ``entity_id``; an unknown id raises :class:`UnknownIdError`."""
        try:
            return self.entities[entity_id]
        except KeyError:
            raise UnknownIdError(f"unknown entity id '{entity_id}'") from None

    def __contains__(self, entity_id: object) -> bool:
        return entity_id in self.entities

    def __len__(self) -> int:
        return len(self.entities)

    def __repr__(self) -> str:
        counts = ", ".join(f"{s}={len(self.splits.get(s, []))}" for s in SPLITS)
        return (
            f"KnowledgeGraph({len(self.entities)} entities, "
            f"{len(self.relations)} relations, triples: {counts})"
        )

    # ------------------------------------------------------------------ graph view
    @cached_property
    def graph(self) -> nx.MultiDiGraph:
        """All triples as a networkx MultiDiGraph; edges carry ``relation``."""
        graph = nx.MultiDiGraph()
        graph.add_nodes_from(self.entities)
        for head, relation, tail in self.triples:
            graph.add_edge(head, tail, key=relation, relation=relation)
        return graph

    @cached_property
    def _undirected(self) -> nx.Graph:
        return nx.Graph(self.graph)

    def neighbors(self, entity_id: str, direction: str = "both") -> set[str]:
        """Entities one edge away: ``out`` (as head), ``in`` (as tail) or ``both``."""
        self.entity(entity_id)
        if direction not in ("in", "out", "both"):
            raise ValueError(f"direction must be 'in', 'out' or 'both', not {direction!r}")
        found: set[str] = set()
        if direction in ("out", "both"):
            found.update(self.graph.successors(entity_id))
        if direction in ("in", "both"):
            found.update(self.graph.predecessors(entity_id))
        found.discard(entity_id)
        return found

    def k_hop_entities(self, entity_ids: Iterable[str], hops: int = 1) -> set[str]:
        """Entities within ``hops`` undirected edges of any of ``entity_ids``."""
        seeds = [e for e in entity_ids if e in self.entities]
        lengths = nx.multi_source_dijkstra_path_length(self._undirected, seeds, cutoff=hops)
        return set(lengths) if seeds else set()

    def subgraph(self, entity_ids: Iterable[str], hops: int = 1) -> nx.MultiDiGraph:
        """The k-hop neighbourhood of ``entity_ids`` as a networkx subgraph (a copy)."""
        return self.graph.subgraph(self.k_hop_entities(entity_ids, hops)).copy()

    def distance(self, source: str, target: str, cutoff: int = 3) -> int | None:
        """Undirected hop distance, or None when farther than ``cutoff``."""
        if source not in self.entities or target not in self.entities:
            return None
        lengths = nx.single_source_shortest_path_length(self._undirected, source, cutoff)
        return lengths.get(target)

    def degree_stats(self) -> dict[str, float]:
        """Degree statistics over entities (in + out edges, multi-edges counted)."""
        degrees = [d for _, d in self.graph.degree()]
        return {
            "entities": float(len(degrees)),
            "mean": float(statistics.fmean(degrees)),
            "median": float(statistics.median(degrees)),
            "max": float(max(degrees)),
            "min": float(min(degrees)),
            "isolated": float(sum(1 for d in degrees if d == 0)),
        }


# ---------------------------------------------------------------------- file readers
def read_triples(path: str | Path) -> list[Triple]:
    """Read ``head<TAB>relation<TAB>tail`` lines; blank lines are skipped."""
    path = Path(path)
    triples: list[Triple] = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) != 3:
                raise KGFormatError(
                    path,
                    number,
                    f"expected 3 tab-separated fields (head, relation, tail), got {len(fields)}",
                )
            names = ("head", "relation", "tail")
            fields = [f.strip() for f in fields]
            for name, value in zip(names, fields):
                if not value:
                    raise KGFormatError(path, number, f"empty {name} field")
            triples.append((fields[0], fields[1], fields[2]))
    return triples


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """Records of an optional KG JSONL file (none when it is absent), each with an id."""
    if not path.exists():
        return
    for number, record in iter_jsonl(path, KGFormatError):
        if not isinstance(record.get("id"), str) or not record["id"]:
            raise KGFormatError(path, number, "missing or non-string field 'id'")
        yield number, record


def _string_list(path: Path, number: int, record: Mapping, name: str) -> tuple[str, ...]:
    value = record.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise KGFormatError(path, number, f"field '{name}' must be a list of strings")
    return tuple(value)


def _string(path: Path, number: int, record: Mapping, name: str) -> str:
    value = record.get(name, "")
    if not isinstance(value, str):
        raise KGFormatError(path, number, f"field '{name}' must be a string")
    return value


def _read_entities(path: Path) -> list[Entity]:
    seen: dict[str, int] = {}
    entities = []
    for number, record in _read_jsonl(path):
        entity_id = record["id"]
        if entity_id in seen:
            raise KGFormatError(
                path, number, f"duplicate entity id '{entity_id}' (first on line {seen[entity_id]})"
            )
        seen[entity_id] = number
        entities.append(
            Entity(
                id=entity_id,
                label=_string(path, number, record, "label"),
                aliases=_string_list(path, number, record, "aliases"),
                types=_string_list(path, number, record, "types"),
                description=_string(path, number, record, "description"),
            )
        )
    return entities


def _read_relations(path: Path) -> list[Relation]:
    seen: dict[str, int] = {}
    relations = []
    for number, record in _read_jsonl(path):
        relation_id = record["id"]
        if relation_id in seen:
            raise KGFormatError(
                path,
                number,
                f"duplicate relation id '{relation_id}' (first on line {seen[relation_id]})",
            )
        seen[relation_id] = number
        relations.append(Relation(relation_id, _string(path, number, record, "label")))
    return relations
