"""The knowledge graph: entities with names, relations, triples, and networkx views.

A KG directory (the contract every ``--kg`` option reads) holds tab-separated
``head<TAB>relation<TAB>tail`` lines in ``train.txt`` (plus optional ``valid.txt`` and
``test.txt``, the CoDEx/PyKEEN layout), optional ``entities.jsonl`` (``id``, ``label``,
optional ``aliases``, ``types``, ``description``) and optional ``relations.jsonl``
(``id``, ``label``). Entities without metadata are allowed: their id is their only name;
entities with metadata and no fact are kept (linkable, isolated).

:meth:`KnowledgeGraph.load` reads a directory through its on-disk index
(:mod:`ernie_kg.kg.store`): entities and triples are views decoded on access, and
neighbourhoods come from CSR arrays, so a Wikidata-sized KG opens in a second and holds
no Python object per entity. networkx stays the graph API: :meth:`~KnowledgeGraph.subgraph`
materialises the requested neighbourhood only (:attr:`~KnowledgeGraph.graph` the whole KG,
for small graphs).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

from ernie_kg.errors import EmptyGraphError, KGFormatError, SavedFileError, UnknownIdError
from ernie_kg.io import write_atomic
from ernie_kg.kg.adjacency import Adjacency
from ernie_kg.kg.reading import iter_triples
from ernie_kg.kg.records import SPLITS, Entity, Relation, Triple
from ernie_kg.kg.store import KGStore, open_store

__all__ = ["SPLITS", "Entity", "KnowledgeGraph", "Relation", "Triple", "read_triples"]

#: What :meth:`KnowledgeGraph.reference` writes.
REFERENCE_FORMAT = "ernie_kg.kg_reference"


class _StoredEntities(Mapping[str, Entity]):
    """Entity id -> :class:`Entity`, decoded from the store on access."""

    def __init__(self, store: KGStore) -> None:
        self._store = store

    def __getitem__(self, entity_id: str) -> Entity:
        row = self._store.row(entity_id)
        if row is None:
            raise KeyError(entity_id)
        return self._store.entity(row)

    def __contains__(self, entity_id: object) -> bool:
        return isinstance(entity_id, str) and self._store.row(entity_id) is not None

    def __iter__(self) -> Iterator[str]:
        return self._store.ids()

    def __len__(self) -> int:
        return self._store.entity_count

    def values(self) -> Iterator[Entity]:  # type: ignore[override]
        """Entities in row order, one decoded at a time."""
        return (self._store.entity(row) for row in range(self._store.entity_count))


class _StoredTriples(Sequence[Triple]):
    """A split's triples as ``(head, relation, tail)`` strings, decoded on access."""

    def __init__(self, store: KGStore, rows: np.ndarray) -> None:
        self._store, self._rows = store, rows

    def __len__(self) -> int:
        return int(self._rows.shape[0])

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self._decode(row) for row in self._rows[index]]
        return self._decode(self._rows[index])

    def __iter__(self) -> Iterator[Triple]:
        for start in range(0, len(self), 65536):
            yield from map(self._decode, self._rows[start:start + 65536])

    def _decode(self, row: np.ndarray) -> Triple:
        store = self._store
        return (store.entity_id(row[0]), store.relation_ids[row[1]], store.entity_id(row[2]))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str):
            return NotImplemented
        return len(self) == len(other) and all(a == tuple(b) for a, b in zip(self, other))

    def __repr__(self) -> str:
        return f"<{len(self)} stored triples>"


class _Rows:
    """Entity id <-> row for a graph built in memory (the store has its own)."""

    def __init__(self, ids: Iterable[str]) -> None:
        self.ids = list(ids)
        self.rows = {entity_id: row for row, entity_id in enumerate(self.ids)}

    def row(self, entity_id: str) -> int | None:
        return self.rows.get(entity_id)

    def entity_id(self, row: int) -> str:
        return self.ids[row]


class KnowledgeGraph:
    """Entities, relations and triples split into train/valid/test.

    Build one with :meth:`load` (a KG directory, through its index) or
    :meth:`from_triples` (in memory). Entity and relation order is deterministic:
    metadata order first, then first appearance in the triples.
    """

    def __init__(self, entities: Mapping[str, Entity], relations: Mapping[str, Relation],
                 splits: Mapping[str, Sequence[Triple]], store: KGStore | None = None,
                 directory: Path | None = None) -> None:
        self.entities = entities
        self.relations = relations
        self.splits = splits
        self.store = store
        self.directory = directory  # the KG directory it was loaded from; None: in memory

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
        """Build a graph in memory; entities/relations give optional metadata."""
        splits = {"train": list(train), "valid": list(valid), "test": list(test)}
        if not any(splits.values()):
            raise EmptyGraphError("<triples>: the knowledge graph has no triples")
        entity_meta = {e.id: e for e in entities}
        relation_meta = {r.id: r for r in relations}
        for split in SPLITS:
            for head, relation, tail in splits[split]:
                for entity_id in (head, tail):
                    if entity_id not in entity_meta:
                        entity_meta[entity_id] = Entity(entity_id)
                if relation not in relation_meta:
                    relation_meta[relation] = Relation(relation)
        return cls(entity_meta, relation_meta, splits)

    @classmethod
    def load(cls, directory: str | Path, progress: bool = False) -> KnowledgeGraph:
        """Open a KG directory through its index (built on first use); malformed input
        raises :class:`KGFormatError` naming the file and line."""
        store = open_store(directory, progress=progress)
        splits = {s: _StoredTriples(store, store.triples(s)) for s in SPLITS}
        return cls(_StoredEntities(store), dict(store.relations), splits, store=store,
                   directory=Path(directory).resolve())

    def reference(self) -> dict[str, str] | None:
        """What a saved model records instead of a copy of a KG loaded from a directory:
        the directory and its files' content hash (None for an in-memory graph)."""
        if self.directory is None or self.store is None:
            return None
        return {"format": REFERENCE_FORMAT, "kg_dir": str(self.directory),
                "kg_content_hash": self.store.content_hash}

    @classmethod
    def from_reference(cls, reference: Any, where: Path) -> KnowledgeGraph:
        """The KG :meth:`reference` names, read from ``where`` (a saved file): a
        missing, unreadable or changed KG raises :class:`SavedFileError` naming both."""
        if not isinstance(reference, Mapping) or reference.get("format") != REFERENCE_FORMAT \
                or not all(isinstance(reference.get(f), str)
                           for f in ("kg_dir", "kg_content_hash")):
            raise SavedFileError(where, None, "not a KG reference (expected format, kg_dir "
                                 "and kg_content_hash)")
        kg_dir = Path(reference["kg_dir"])
        if not (kg_dir / "train.txt").is_file():
            raise SavedFileError(where, None, f"its KG directory {kg_dir} is gone (no "
                                 "train.txt): put the KG back there, or build the model again")
        try:
            kg = cls.load(kg_dir)
        except KGFormatError as problem:
            raise SavedFileError(where, None, f"its KG is unreadable: {problem}") from None
        if kg.store is None or kg.store.content_hash != reference["kg_content_hash"]:
            raise SavedFileError(where, None, f"the KG files in {kg_dir} changed since this "
                                 "was saved; use the KG it was saved with, or build it again")
        return kg

    def save(self, directory: str | Path) -> Path:
        """Write the graph as a KG directory that :meth:`load` reads back identically."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)

        def write_triples(out, triples: Sequence[Triple]) -> None:
            for head, relation, tail in triples:
                out.write(f"{head}\t{relation}\t{tail}\n")

        for split in SPLITS:
            triples = self.splits.get(split, [])
            if split == "train" or triples:
                write_atomic(directory / f"{split}.txt",
                             lambda out, triples=triples: write_triples(out, triples))

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
        """A new in-memory graph with both graphs' triples (per split, repeats dropped)
        and metadata (self wins)."""
        splits = {
            s: list(dict.fromkeys([*self.splits.get(s, []), *other.splits.get(s, [])]))
            for s in SPLITS
        }
        entities = {**dict(other.entities.items()), **dict(self.entities.items())}
        relations = {**other.relations, **self.relations}
        return KnowledgeGraph.from_triples(splits["train"], splits["valid"], splits["test"],
                                           entities.values(), relations.values())

    # ------------------------------------------------------------------ access
    @property
    def train(self) -> Sequence[Triple]:
        """The training split's triples."""
        return self.splits.get("train", [])

    @property
    def triples(self) -> list[Triple]:
        """Every triple of every split (a list: for large KGs iterate ``splits``)."""
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

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KnowledgeGraph):
            return NotImplemented
        return (dict(self.entities.items()) == dict(other.entities.items())
                and dict(self.relations) == dict(other.relations)
                and all(list(self.splits.get(s, [])) == list(other.splits.get(s, []))
                        for s in SPLITS))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        counts = ", ".join(f"{s}={len(self.splits.get(s, []))}" for s in SPLITS)
        return (
            f"KnowledgeGraph({len(self.entities)} entities, "
            f"{len(self.relations)} relations, triples: {counts})"
        )

    # ------------------------------------------------------------------ graph views
    @cached_property
    def _index(self) -> tuple[KGStore | _Rows, Adjacency]:
        """Id <-> row and the CSR adjacency: the store's, or built from memory once."""
        if self.store is not None:
            return self.store, self.store.adjacency
        rows = _Rows(self.entities)
        relation_rows = {r: i for i, r in enumerate(self.relations)}
        triples = np.array([(rows.rows[h], relation_rows[r], rows.rows[t])
                            for split in SPLITS for h, r, t in self.splits.get(split, [])],
                           dtype=np.int64).reshape(-1, 3)
        return rows, Adjacency.from_triples(triples, len(rows.ids), len(relation_rows))

    def entity_row(self, entity_id: str) -> int | None:
        """The row of ``entity_id`` in the KG's entity order (``iter(kg.entities)``),
        None when the KG lacks it: the key of arrays over the KG's entities."""
        return self._index[0].row(entity_id)

    def _row(self, entity_id: str) -> int:
        row = self._index[0].row(entity_id)
        if row is None:
            raise UnknownIdError(f"unknown entity id '{entity_id}'")
        return row

    def _ids(self, rows: Iterable[int]) -> set[str]:
        to_id = self._index[0].entity_id
        return {to_id(int(row)) for row in rows}

    @cached_property
    def graph(self) -> nx.MultiDiGraph:
        """The whole KG as a networkx MultiDiGraph (edges carry ``relation``).

        Builds Python objects for every entity and fact: for large KGs use
        :meth:`subgraph`, :meth:`neighbors` and :meth:`k_hop_entities`, which do not."""
        graph = nx.MultiDiGraph()
        graph.add_nodes_from(self.entities)
        for split in SPLITS:
            for head, relation, tail in self.splits.get(split, []):
                graph.add_edge(head, tail, key=relation, relation=relation)
        return graph

    def neighbors(self, entity_id: str, direction: str = "both") -> set[str]:
        """Entities one edge away: ``out`` (as head), ``in`` (as tail) or ``both``."""
        row = self._row(entity_id)
        found = self._ids(self._index[1].neighbour_rows([row], direction))
        found.discard(entity_id)
        return found

    def k_hop_entities(self, entity_ids: Iterable[str], hops: int = 1) -> set[str]:
        """Entities within ``hops`` undirected edges of any of ``entity_ids`` (known ids
        only; the seeds themselves included)."""
        rows = [r for r in (self._index[0].row(e) for e in entity_ids) if r is not None]
        return self._ids(self._index[1].k_hop(rows, hops)) if rows else set()

    def subgraph(self, entity_ids: Iterable[str], hops: int = 1) -> nx.MultiDiGraph:
        """The k-hop neighbourhood of ``entity_ids`` as a networkx graph, built from the
        adjacency for those entities only."""
        ids, adjacency = self._index
        rows = [r for r in (ids.row(e) for e in entity_ids) if r is not None]
        members = adjacency.k_hop(rows, hops) if rows else np.empty(0, np.int64)
        relation_ids = list(self.relations)
        graph = nx.MultiDiGraph()
        names = {int(row): ids.entity_id(int(row)) for row in members}
        graph.add_nodes_from(names.values())
        for row, head in names.items():
            for tail, relation in adjacency.out_edges(row):
                if int(tail) in names:
                    label = relation_ids[relation]
                    graph.add_edge(head, names[int(tail)], key=label, relation=label)
        return graph

    def distance(self, source: str, target: str, cutoff: int = 3) -> int | None:
        """Undirected hop distance, or None when farther than ``cutoff``."""
        ids, adjacency = self._index
        a, b = ids.row(source), ids.row(target)
        if a is None or b is None:
            return None
        return adjacency.distance(a, b, cutoff)

    def degree_stats(self) -> dict[str, float]:
        """Degree statistics over entities (in + out facts, repeats counted once)."""
        degrees = self._index[1].degrees()
        return {
            "entities": float(len(degrees)),
            "mean": float(degrees.mean()),
            "median": float(statistics.median(degrees.tolist())),
            "max": float(degrees.max()),
            "min": float(degrees.min()),
            "isolated": float(np.count_nonzero(degrees == 0)),
        }


def read_triples(path: str | Path) -> list[Triple]:
    """Read ``head<TAB>relation<TAB>tail`` lines; blank lines are skipped."""
    return [(head, relation, tail) for _, head, relation, tail in iter_triples(path)]
