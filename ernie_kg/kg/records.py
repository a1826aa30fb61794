"""What a KG is made of: entities (with names and metadata), relations and triples."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SPLITS", "Entity", "Relation", "Triple"]

Triple = tuple[str, str, str]
#: The triple files of a KG directory, in the order rows are numbered.
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

    @classmethod
    def from_json(cls, record: dict) -> Entity:
        """The inverse of :meth:`to_json` (the record is trusted: validate on reading)."""
        return cls(record["id"], record.get("label", ""), tuple(record.get("aliases", ())),
                   tuple(record.get("types", ())), record.get("description", ""))


@dataclass(frozen=True)
class Relation:
    """A KG relation; ``label`` defaults to the id."""

    id: str
    label: str = ""

    def __post_init__(self) -> None:
        if not self.label:
            object.__setattr__(self, "label", self.id)
