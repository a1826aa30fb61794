"""The alias table: surface form -> candidate entities with a prior P(entity | surface).

Counts come from the KG's names (each label/alias counts once: :meth:`AliasTable.from_kg`)
and, optionally, from annotated corpora such as FewRel, whose head/tail mentions carry
their entity ids (:func:`ernie_kg.data.fewrel.fewrel_aliases`). A table is built once,
finished, and handed to the linker as it is. Keys
are normalised with :func:`~ernie_kg.linking.normalize.normalize`, identically at build
and lookup time. Counts per exact (cased) surface are kept too: when the caller's casing
was seen, it sharpens the prior ("General" vs "general"), smoothed towards the
case-folded prior so unseen casings fall back to it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ernie_kg.errors import SavedFileError
from ernie_kg.io import read_json, write_json
from ernie_kg.kg.graph import KnowledgeGraph
from ernie_kg.linking.normalize import (
    acronym_query,
    acronyms,
    cased_key,
    loose_key,
    normalize,
    stem_key,
    surface_keys,
)

__all__ = ["ALIASES_FILE", "AliasTable"]

#: File name of an alias table stored next to a KG (``KG_DIR/aliases.json``).
ALIASES_FILE = "aliases.json"
_FORMAT = "ernie_kg.aliases"


class AliasTable:
    """Surface forms with entity counts; :meth:`candidates` turns them into priors."""

    def __init__(self, case_smoothing: float = 5.0) -> None:
        if case_smoothing < 0:
            raise ValueError(f"case_smoothing must be >= 0, not {case_smoothing}")
        self.case_smoothing = float(case_smoothing)
        self._raw: dict[str, dict[str, float]] = {}  # surface as given -> entity -> count
        self._by_key: dict[str, dict[str, float]] = {}  # normalised key -> entity -> count
        self._by_cased: dict[str, dict[str, float]] = {}
        self._by_loose: dict[str, set[str]] = {}  # loose key -> normalised keys
        self._by_stem: dict[str, set[str]] = {}  # stem key -> normalised keys
        self._by_acronym: dict[str, set[str]] = {}  # acronym of a name -> normalised keys
        self._entity_totals: dict[str, float] = {}  # entity -> count over all surfaces
        self._surfaces: dict[str, list[str]] = {}  # normalised key -> surfaces as given
        self._cache: dict[str, list[tuple[str, float]]] = {}

    # ------------------------------------------------------------------ building
    @classmethod
    def from_kg(cls, kg: KnowledgeGraph, case_smoothing: float = 5.0) -> AliasTable:
        """One count for every name (label and aliases) of every KG entity."""
        table = cls(case_smoothing)
        for entity in kg.entities.values():
            for name in entity.names:
                table.add(name, entity.id)
        return table

    def add(self, surface: str, entity_id: str, count: float = 1.0) -> None:
        """Add ``count`` observations of ``surface`` naming ``entity_id``."""
        if not isinstance(surface, str) or not isinstance(entity_id, str) or not entity_id:
            raise TypeError("surface and entity_id must be strings (entity_id non-empty)")
        if count <= 0:
            raise ValueError(f"count must be positive, not {count} (surface {surface!r})")
        keys = surface_keys(surface)
        if keys is None:
            return  # nothing to match: whitespace only
        key = keys.key
        self._cache.clear()
        for table, k in ((self._raw, surface), (self._by_key, key), (self._by_cased, keys.cased)):
            counts = table.setdefault(k, {})
            counts[entity_id] = counts.get(entity_id, 0.0) + float(count)
        surfaces = self._surfaces.setdefault(key, [])
        if surface not in surfaces:
            surfaces.append(surface)
        if keys.loose:
            self._by_loose.setdefault(keys.loose, set()).add(key)
            self._by_stem.setdefault(keys.stem, set()).add(key)
            for acronym in keys.acronyms:
                self._by_acronym.setdefault(acronym, set()).add(key)
        self._entity_totals[entity_id] = self._entity_totals.get(entity_id, 0.0) + count

    def update(self, other: AliasTable) -> AliasTable:
        """Add every count of ``other``; returns self."""
        for surface, counts in other._raw.items():
            for entity_id, count in counts.items():
                self.add(surface, entity_id, count)
        return self

    # ------------------------------------------------------------------ lookup
    def candidates(self, surface: str) -> list[tuple[str, float]]:
        """Entities ``surface`` may name, with P(entity | surface), best first."""
        cached = self._cache.get(surface)
        if cached is not None:
            return cached
        result = self.key_candidates(normalize(surface), cased_key(surface))
        if len(self._cache) > 200_000:
            self._cache.clear()
        self._cache[surface] = result
        return result

    def key_candidates(self, key: str, cased: str | None = None) -> list[tuple[str, float]]:
        """Candidates of a normalised key; ``cased`` (a :func:`cased_key`) sharpens them."""
        counts = self._by_key.get(key)
        if not counts:
            return []
        total = sum(counts.values())
        exact = self._by_cased.get(cased) if cased is not None else None
        if exact and self.case_smoothing > 0:
            exact_total = sum(exact.values())
            denominator = exact_total + self.case_smoothing
            priors = {
                e: (exact.get(e, 0.0) + self.case_smoothing * c / total) / denominator
                for e, c in counts.items()
            }
        elif exact:
            exact_total = sum(exact.values())
            priors = {e: exact.get(e, 0.0) / exact_total for e in counts}
        else:
            priors = {e: c / total for e, c in counts.items()}
        totals = self._entity_totals  # ties: the entity named more often overall first
        return sorted(priors.items(), key=lambda item: (-item[1], -totals[item[0]], item[0]))

    def loose_keys(self, surface: str) -> list[str]:
        """Normalised keys sharing ``surface``'s punctuation-free form."""
        return sorted(self._by_loose.get(loose_key(surface), ()))

    def stem_keys(self, surface: str) -> list[str]:
        """Normalised keys sharing ``surface``'s root form (:func:`stem_key`)."""
        stem = stem_key(surface)
        return sorted(self._by_stem.get(stem, ())) if stem else []

    def acronym_keys(self, surface: str) -> list[str]:
        """Keys an acronym stands for ("WTO" -> "world trade organization"), or the keys
        that are acronyms of a name ("World Trade Organization" -> "wto")."""
        query = acronym_query(surface)
        if query is not None:
            return sorted(self._by_acronym.get(query, ()))
        return sorted(a for a in acronyms(surface) if a in self._by_key)

    def entity_count(self, entity_id: str) -> float:
        """How often ``entity_id`` was named, over all its surfaces."""
        return self._entity_totals.get(entity_id, 0.0)

    def __contains__(self, surface: object) -> bool:
        return isinstance(surface, str) and normalize(surface) in self._by_key

    def __len__(self) -> int:
        """Number of distinct normalised keys."""
        return len(self._by_key)

    def __bool__(self) -> bool:
        return True  # an empty table is still a table

    def keys(self) -> Iterator[str]:
        """The normalised keys."""
        return iter(self._by_key)

    def surfaces(self, key: str) -> list[str]:
        """The surfaces (as added) behind a normalised key."""
        return list(self._surfaces.get(key, ()))

    def counts(self, key: str) -> dict[str, float]:
        """Raw entity counts of a normalised key."""
        return dict(self._by_key.get(key, {}))

    def entity_ids(self) -> set[str]:
        """Every entity with at least one alias."""
        return {e for counts in self._by_key.values() for e in counts}

    def __repr__(self) -> str:
        return f"AliasTable({len(self)} keys, {len(self.entity_ids())} entities)"

    # ------------------------------------------------------------------ storage
    def to_json(self) -> dict[str, Any]:
        """The table as the JSON object :meth:`save` writes."""
        rows = [[s, e, c] for s, counts in self._raw.items() for e, c in counts.items()]
        return {"format": _FORMAT, "version": 1, "case_smoothing": self.case_smoothing,
                "aliases": rows}

    def save(self, path: str | Path) -> Path:
        """Write JSON (a directory gets ``aliases.json``); :meth:`load` reads it back."""
        path = Path(path)
        if path.is_dir():
            path = path / ALIASES_FILE
        return write_json(path, self.to_json(), indent=None)

    @classmethod
    def load(cls, path: str | Path) -> AliasTable:
        """Read :meth:`save`'s JSON; a KG directory's ``aliases.json`` when given a folder."""
        path = Path(path)
        if path.is_dir():
            path = path / ALIASES_FILE
        payload = read_json(path, what="no alias table here")
        if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
            raise SavedFileError(path, None, f"not an alias table (expected format {_FORMAT!r})")
        table = cls(float(payload.get("case_smoothing", 5.0)))
        for number, row in enumerate(payload.get("aliases", []), start=1):
            if (not isinstance(row, list) or len(row) != 3 or not isinstance(row[0], str)
                    or not isinstance(row[1], str) or not isinstance(row[2], (int, float))
                    or row[2] <= 0):
                raise SavedFileError(
                    path, None, f"alias row {number}: expected [surface, entity_id, count > 0]"
                )
            table.add(row[0], row[1], row[2])
        return table
