"""Build the bundled demo knowledge graph from the hand-written tables.

Reads ``kg_data/tables/*.tsv`` and writes ``kg_data/demo/``:

* ``train.txt``, ``valid.txt``, ``test.txt``: ``head<TAB>relation<TAB>tail`` triples;
* ``entities.jsonl``: ``{"id", "label", "aliases", "types", "description"}`` per entity;
* ``relations.jsonl``: ``{"id", "label"}`` per relation.

Standard library only and deterministic (seeded split)::

    python kg_data/build_demo_kg.py

Table conventions: ``#`` starts a comment line, the first other line is the header,
multi-valued cells are ``;``-separated, a name written as ``the X`` takes the definite
article in running text (the article is not part of the KG label), and an alias written
as ``former:X`` is a historical name (a normal alias in the KG, skipped by the corpus).
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
TABLE_DIR = HERE / "tables"
OUT_DIR = HERE / "demo"
SEED = 1234
VALID_FRACTION = 0.05
TEST_FRACTION = 0.05

Triple = tuple[str, str, str]

# Relation id -> human-readable label, in output order.
RELATIONS: dict[str, str] = {
    "capital_of": "capital of",
    "has_capital": "has capital",
    "located_in": "located in",
    "continent": "continent",
    "official_language": "official language",
    "currency": "currency",
    "shares_border_with": "shares border with",
    "member_of": "member of",
    "flows_through": "flows through",
    "flows_into": "flows into",
    "citizen_of": "citizen of",
    "born_in": "born in",
    "died_in": "died in",
    "occupation": "occupation",
    "educated_at": "educated at",
    "award_received": "award received",
    "notable_work": "notable work",
    "created_by": "created by",
    "original_language": "original language",
    "founded_by": "founded by",
    "headquartered_in": "headquartered in",
    "country": "country",
    "industry": "industry",
    "parent_organization": "parent organisation",
}

# Inverse relation -> forward relation; a fact and its inverse share a split.
INVERSE = {"has_capital": "capital_of", "notable_work": "created_by"}
SYMMETRIC = {"shares_border_with"}

# Relation -> (allowed head types, allowed tail types); catches misaligned table cells.
SIGNATURES: dict[str, tuple[set[str], set[str]]] = {
    "capital_of": ({"city"}, {"country", "region"}),
    "has_capital": ({"country", "region"}, {"city"}),
    "located_in": (
        {"city", "region", "university", "lake", "mountain"},
        {"country", "region", "city"},
    ),
    "continent": ({"country"}, {"continent"}),
    "official_language": ({"country"}, {"language"}),
    "currency": ({"country"}, {"currency"}),
    "shares_border_with": ({"country"}, {"country"}),
    "member_of": ({"country", "organisation", "person"}, {"organisation"}),
    "flows_through": ({"river"}, {"country", "region", "city", "lake"}),
    "flows_into": ({"river"}, {"sea", "ocean", "lake", "river"}),
    "citizen_of": ({"person"}, {"country"}),
    "born_in": ({"person"}, {"city"}),
    "died_in": ({"person"}, {"city"}),
    "occupation": ({"person"}, {"occupation"}),
    "educated_at": ({"person"}, {"university"}),
    "award_received": ({"person"}, {"award"}),
    "notable_work": ({"person"}, {"creative_work"}),
    "created_by": ({"creative_work"}, {"person"}),
    "original_language": ({"creative_work"}, {"language"}),
    "founded_by": ({"organisation"}, {"person"}),
    "headquartered_in": ({"organisation"}, {"city"}),
    "country": ({"organisation"}, {"country"}),
    "industry": ({"organisation"}, {"industry"}),
    "parent_organization": ({"organisation"}, {"organisation"}),
}

ID_RE = re.compile(r"^[a-z0-9]+(?:_[a-z0-9]+)*$")


@dataclass(frozen=True)
class Name:
    """A surface name; ``article`` is ``"the"`` when running text needs one and
    ``former`` marks a historical name (``former:Constantinople`` in the tables)."""

    text: str
    article: str = ""
    former: bool = False

    @classmethod
    def parse(cls, raw: str) -> Name:
        raw = raw.strip()
        former = raw.startswith("former:")
        if former:
            raw = raw[len("former:") :].strip()
        if raw.startswith("the "):
            return cls(raw[4:].strip(), "the", former)
        return cls(raw, "", former)

    def display(self) -> str:
        return f"{self.article} {self.text}" if self.article else self.text


@dataclass
class Entity:
    """One KG entity with its names, types and description."""

    id: str
    name: Name
    alias_names: list[Name] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    description: str = ""

    @property
    def label(self) -> str:
        return self.name.text

    @property
    def aliases(self) -> list[str]:
        return [alias.text for alias in self.alias_names]

    def names(self) -> list[Name]:
        """Label first, then aliases."""
        return [self.name, *self.alias_names]

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "label": self.label,
            "aliases": self.aliases,
            "types": self.types,
            "description": self.description,
        }


class DemoKG:
    """Entities and triples collected from the tables."""

    def __init__(self) -> None:
        self.entities: dict[str, Entity] = {}
        self.triples: list[Triple] = []
        self._seen: set[Triple] = set()

    # -- construction -------------------------------------------------------------

    def add_entity(
        self,
        ent_id: str,
        label: str,
        aliases: Iterable[str] = (),
        types: Iterable[str] = (),
        description: str = "",
    ) -> Entity:
        if not ID_RE.match(ent_id):
            raise ValueError(f"bad entity id {ent_id!r}")
        if ent_id in self.entities:
            raise ValueError(f"duplicate entity id {ent_id!r}")
        name = Name.parse(label)
        alias_names: list[Name] = []
        for raw in aliases:
            alias = Name.parse(raw)
            if alias.text != name.text and alias.text not in {a.text for a in alias_names}:
                alias_names.append(alias)
        entity = Entity(ent_id, name, alias_names, list(dict.fromkeys(types)), description)
        self.entities[ent_id] = entity
        return entity

    def add(self, head: str, relation: str, tail: str) -> None:
        if relation not in RELATIONS:
            raise ValueError(f"unknown relation {relation!r}")
        if head == tail:
            raise ValueError(f"self-loop {head} {relation}")
        triple = (head, relation, tail)
        if triple not in self._seen:
            self._seen.add(triple)
            self.triples.append(triple)

    def add_all(self, head: str, relation: str, tails: Iterable[str]) -> None:
        for tail in tails:
            self.add(head, relation, tail)

    # -- queries ------------------------------------------------------------------

    def has(self, head: str, relation: str, tail: str) -> bool:
        return (head, relation, tail) in self._seen

    def tails(self, head: str, relation: str) -> list[str]:
        return [t for h, r, t in self.triples if h == head and r == relation]

    def heads(self, relation: str, tail: str) -> list[str]:
        return [h for h, r, t in self.triples if t == tail and r == relation]

    def display(self, ent_id: str) -> str:
        return self.entities[ent_id].name.display()

    def ambiguous_names(self) -> dict[str, list[str]]:
        """Surface names (label or alias) shared by more than one entity."""
        owners: dict[str, set[str]] = defaultdict(set)
        for entity in self.entities.values():
            for name in entity.names():
                owners[name.text].add(entity.id)
        return {n: sorted(ids) for n, ids in sorted(owners.items()) if len(ids) > 1}

    # -- checks -------------------------------------------------------------------

    def validate(self) -> None:
        """Raise ``ValueError`` on unknown ids, type mismatches or unused entities."""
        used: set[str] = set()
        for head, relation, tail in self.triples:
            for ent_id in (head, tail):
                if ent_id not in self.entities:
                    raise ValueError(f"undefined entity {ent_id!r} in {head} {relation} {tail}")
            used.update((head, tail))
            head_types, tail_types = SIGNATURES[relation]
            if not head_types & set(self.entities[head].types):
                raise ValueError(f"bad head type: {head} {relation} {tail}")
            if not tail_types & set(self.entities[tail].types):
                raise ValueError(f"bad tail type: {head} {relation} {tail}")
        unused = sorted(set(self.entities) - used)
        if unused:
            raise ValueError(f"entities without any triple: {unused}")
        for relation in SYMMETRIC:
            for head, rel, tail in self.triples:
                if rel == relation and not self.has(tail, rel, head):
                    raise ValueError(f"asymmetric {head} {rel} {tail}")
        for inverse, forward in INVERSE.items():
            for head, rel, tail in self.triples:
                if rel == inverse and not self.has(tail, forward, head):
                    raise ValueError(f"{head} {rel} {tail} lacks its {forward} triple")
                if rel == forward and not self.has(tail, inverse, head):
                    raise ValueError(f"{head} {rel} {tail} lacks its {inverse} triple")
        for entity in self.entities.values():
            if not entity.label or not entity.description or not entity.types:
                raise ValueError(f"incomplete metadata for {entity.id}")


# ---------------------------------------------------------------------------------
# Table reading
# ---------------------------------------------------------------------------------


def read_table(name: str, table_dir: Path = TABLE_DIR) -> list[dict[str, str]]:
    """Read ``<table_dir>/<name>.tsv`` into a list of row dicts."""
    path = table_dir / f"{name}.tsv"
    header: list[str] | None = None
    rows: list[dict[str, str]] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        cells = [cell.strip() for cell in line.split("\t")]
        if header is None:
            header = cells
            continue
        if len(cells) != len(header):
            raise ValueError(f"{path}:{lineno}: {len(cells)} cells, expected {len(header)}")
        rows.append(dict(zip(header, cells)))
    return rows


def split_list(cell: str) -> list[str]:
    """Split a ``;``-separated cell, dropping empty items."""
    return [item.strip() for item in cell.split(";") if item.strip()]


def join_names(names: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


# ---------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------


def load_demo_kg(table_dir: Path = TABLE_DIR) -> DemoKG:
    """Read all tables and return the validated demo KG."""
    kg = DemoKG()

    def table(name: str) -> list[dict[str, str]]:
        return read_table(name, table_dir)

    for row in table("continents"):
        kg.add_entity(row["id"], row["label"], split_list(row["aliases"]), ["continent"])
    for row in table("languages"):
        kg.add_entity(
            row["id"], row["label"], split_list(row["aliases"]), ["language"], row["description"]
        )
    for row in table("currencies"):
        kg.add_entity(
            row["id"], row["label"], split_list(row["aliases"]), ["currency"], row["description"]
        )
    for name, etype in [("occupations", "occupation"), ("industries", "industry")]:
        for row in table(name):
            kg.add_entity(row["id"], row["label"], split_list(row["aliases"]), [etype])
    for row in table("awards"):
        kg.add_entity(
            row["id"], row["label"], split_list(row["aliases"]), ["award"], row["description"]
        )

    capital_ids: set[str] = set()
    for row in table("countries"):
        cid = row["id"]
        kg.add_entity(
            cid, row["label"], split_list(row["aliases"]), ["country"], row["description"]
        )
        for capital in split_list(row["capital"]):
            kg.add(capital, "capital_of", cid)
            kg.add(cid, "has_capital", capital)
            capital_ids.add(capital)
        kg.add_all(cid, "continent", split_list(row["continent"]))
        kg.add_all(cid, "official_language", split_list(row["official_languages"]))
        kg.add_all(cid, "currency", split_list(row["currency"]))
    for row in table("borders"):
        kg.add(row["country_a"], "shares_border_with", row["country_b"])
        kg.add(row["country_b"], "shares_border_with", row["country_a"])

    for row in table("regions"):
        rid = row["id"]
        kg.add_entity(rid, row["label"], split_list(row["aliases"]), ["region", row["kind"]])
        kg.add(rid, "located_in", row["country"])
        for capital in split_list(row["capital"]):
            kg.add(capital, "capital_of", rid)
            kg.add(rid, "has_capital", capital)
    for row in table("cities"):
        types = ["city", "capital"] if row["id"] in capital_ids else ["city"]
        kg.add_entity(row["id"], row["label"], split_list(row["aliases"]), types)
        kg.add_all(row["id"], "located_in", split_list(row["located_in"]))

    for row in table("waters"):
        kg.add_entity(
            row["id"], row["label"], split_list(row["aliases"]), ["body_of_water", row["kind"]]
        )
        kg.add_all(row["id"], "located_in", split_list(row["located_in"]))
    for row in table("rivers"):
        kg.add_entity(row["id"], row["label"], split_list(row["aliases"]), ["river"])
        kg.add_all(row["id"], "flows_through", split_list(row["flows_through"]))
        kg.add_all(row["id"], "flows_into", split_list(row["flows_into"]))
    for row in table("mountains"):
        kg.add_entity(row["id"], row["label"], split_list(row["aliases"]), ["mountain"])
        kg.add_all(row["id"], "located_in", split_list(row["located_in"]))

    for row in table("organisations"):
        oid, kind = row["id"], row["kind"]
        kg.add_entity(
            oid,
            row["label"],
            split_list(row["aliases"]),
            ["organisation", kind],
            row["description"],
        )
        place_relation = "located_in" if kind == "university" else "headquartered_in"
        kg.add_all(oid, place_relation, split_list(row["headquarters"]))
        kg.add_all(oid, "country", split_list(row["country"]))
        kg.add_all(oid, "founded_by", split_list(row["founders"]))
        kg.add_all(oid, "industry", split_list(row["industry"]))
        kg.add_all(oid, "parent_organization", split_list(row["parent"]))
    for row in table("memberships"):
        for member in split_list(row["members"]):
            kg.add(member, "member_of", row["organisation"])

    for row in table("people"):
        pid = row["id"]
        occupations = split_list(row["occupations"])
        kg.add_entity(
            pid,
            row["label"],
            split_list(row["aliases"]),
            ["person", *occupations],
            row["description"],
        )
        kg.add_all(pid, "occupation", occupations)
        kg.add_all(pid, "citizen_of", split_list(row["citizenship"]))
        kg.add_all(pid, "born_in", split_list(row["born_in"]))
        kg.add_all(pid, "died_in", split_list(row["died_in"]))
        kg.add_all(pid, "educated_at", split_list(row["educated_at"]))
        kg.add_all(pid, "award_received", split_list(row["awards"]))

    work_kinds: dict[str, str] = {}
    for row in table("works"):
        wid = row["id"]
        work_kinds[wid] = row["kind"]
        kind_type = row["kind"].replace(" ", "_")
        kg.add_entity(wid, row["label"], split_list(row["aliases"]), ["creative_work", kind_type])
        kg.add_all(wid, "original_language", split_list(row["language"]))
        for creator in split_list(row["creators"]):
            kg.add(wid, "created_by", creator)
            kg.add(creator, "notable_work", wid)

    for entity in kg.entities.values():
        if not entity.description:
            entity.description = describe(kg, entity, work_kinds)
    kg.validate()
    return kg


def describe(kg: DemoKG, entity: Entity, work_kinds: dict[str, str]) -> str:
    """Generate a short description from the entity's own triples."""
    eid, types = entity.id, entity.types

    def names(relation: str) -> list[str]:
        return [kg.display(t) for t in kg.tails(eid, relation)]

    if "country" in types:
        continents = names("continent")
        if len(continents) > 1:
            return f"transcontinental country in {join_names(continents)}"
        return f"country in {join_names(continents)}"
    if "city" in types:
        places = kg.tails(eid, "located_in")
        countries = [p for p in places if "country" in kg.entities[p].types]
        regions = [p for p in places if "region" in kg.entities[p].types]
        capital_of = kg.tails(eid, "capital_of")
        national = [c for c in capital_of if c in countries]
        if national:
            return f"capital of {join_names([kg.display(c) for c in national])}"
        if regions:  # "city in Texas, United States"
            where = ", ".join(kg.entities[p].label for p in regions + countries)
        else:  # "city in the Netherlands"
            where = join_names([kg.display(p) for p in countries])
        return f"capital of {where}" if capital_of else f"city in {where}"
    if "region" in types:
        country = kg.display(kg.tails(eid, "located_in")[0])
        kind = {
            "us_state": "state of",
            "australian_state": "state of",
            "constituent_country": "constituent country of",
        }.get(types[1], "region of")
        return f"{kind} {country}"
    if "currency" in types:
        users = [kg.display(c) for c in kg.heads("currency", eid)]
        return f"currency of {join_names(users)}"
    if "river" in types:
        countries = [
            kg.display(p)
            for p in kg.tails(eid, "flows_through")
            if "country" in kg.entities[p].types
        ]
        return f"river in {join_names(countries)}"
    if "body_of_water" in types:
        where = names("located_in")
        return f"{types[1]} in {join_names(where)}" if where else types[1]
    if "mountain" in types:
        return f"mountain in {join_names(names('located_in'))}"
    if "creative_work" in types:
        creators = [kg.display(c) for c in kg.tails(eid, "created_by")]
        return f"{work_kinds[eid]} by {join_names(creators)}"
    for simple in ("continent", "occupation", "industry"):
        if simple in types:
            return simple
    raise ValueError(f"no description for {eid}")


# ---------------------------------------------------------------------------------
# Splitting and writing
# ---------------------------------------------------------------------------------


def group_key(triple: Triple) -> Triple:
    """Key shared by a triple and its inverse / symmetric twin."""
    head, relation, tail = triple
    if relation in INVERSE:
        return (tail, INVERSE[relation], head)
    if relation in SYMMETRIC:
        first, second = sorted((head, tail))
        return (first, relation, second)
    return triple


def split_triples(
    triples: list[Triple], seed: int = SEED
) -> tuple[list[Triple], list[Triple], list[Triple]]:
    """Seeded ~90/5/5 split; valid/test only use entities and relations kept in train.

    A fact and its inverse (or symmetric twin) always land in the same split.
    """
    groups: dict[Triple, list[Triple]] = defaultdict(list)
    for triple in triples:
        groups[group_key(triple)].append(triple)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)

    entity_count: Counter[str] = Counter()
    relation_count: Counter[str] = Counter()
    for head, relation, tail in triples:
        entity_count.update((head, tail))
        relation_count[relation] += 1

    n_valid = round(VALID_FRACTION * len(triples))
    n_test = round(TEST_FRACTION * len(triples))
    valid: list[Triple] = []
    test: list[Triple] = []
    for key in keys:
        if len(valid) >= n_valid and len(test) >= n_test:
            break
        group = groups[key]
        ents: Counter[str] = Counter()
        rels: Counter[str] = Counter(relation for _, relation, _ in group)
        for head, _, tail in group:
            ents.update((head, tail))
        if any(entity_count[e] - n < 1 for e, n in ents.items()):
            continue
        if any(relation_count[r] - n < 1 for r, n in rels.items()):
            continue
        entity_count.subtract(ents)
        relation_count.subtract(rels)
        (valid if len(valid) < n_valid else test).extend(group)

    held_out = set(valid) | set(test)
    train = [triple for triple in triples if triple not in held_out]
    return sorted(train), sorted(valid), sorted(test)


def write_kg(kg: DemoKG, out_dir: Path, seed: int = SEED) -> dict[str, list[Triple]]:
    """Write triples, entity and relation metadata; return the splits."""
    train, valid, test = split_triples(kg.triples, seed)
    splits = {"train": train, "valid": valid, "test": test}
    train_entities = {e for h, _, t in train for e in (h, t)}
    train_relations = {r for _, r, _ in train}
    for name in ("valid", "test"):
        for head, relation, tail in splits[name]:
            if {head, tail} - train_entities or relation not in train_relations:
                raise AssertionError(
                    f"{name} triple not covered by train: {head} {relation} {tail}"
                )

    out_dir.mkdir(parents=True, exist_ok=True)
    for name, triples in splits.items():
        lines = "".join(f"{h}\t{r}\t{t}\n" for h, r, t in triples)
        (out_dir / f"{name}.txt").write_text(lines, encoding="utf-8")
    with (out_dir / "entities.jsonl").open("w", encoding="utf-8") as handle:
        for ent_id in sorted(kg.entities):
            handle.write(json.dumps(kg.entities[ent_id].to_json(), ensure_ascii=False) + "\n")
    used_relations = {r for _, r, _ in kg.triples}
    with (out_dir / "relations.jsonl").open("w", encoding="utf-8") as handle:
        for rel_id, label in RELATIONS.items():
            if rel_id in used_relations:
                handle.write(json.dumps({"id": rel_id, "label": label}) + "\n")
    return splits


def summary(kg: DemoKG, splits: dict[str, list[Triple]]) -> str:
    """Human-readable statistics."""
    type_counts = Counter(entity.types[0] for entity in kg.entities.values())
    relation_counts = Counter(r for _, r, _ in kg.triples)
    lines = [
        f"entities: {len(kg.entities)} ("
        + ", ".join(f"{t} {n}" for t, n in type_counts.most_common())
        + ")",
        f"relations: {len(relation_counts)}",
        "triples: "
        + ", ".join(f"{name} {len(triples)}" for name, triples in splits.items())
        + f" (total {len(kg.triples)})",
        "per relation: " + ", ".join(f"{r} {n}" for r, n in relation_counts.most_common()),
        "ambiguous names: "
        + "; ".join(f"{n!r} -> {', '.join(ids)}" for n, ids in kg.ambiguous_names().items()),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", type=Path, default=TABLE_DIR, help="input table directory")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="output KG directory")
    parser.add_argument("--seed", type=int, default=SEED, help="split seed")
    args = parser.parse_args(argv)
    kg = load_demo_kg(args.tables)
    splits = write_kg(kg, args.out, args.seed)
    print(f"wrote {args.out}")
    print(summary(kg, splits))


if __name__ == "__main__":
    main()
