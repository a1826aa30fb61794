"""EntityVocab: KG entity ids <-> rows of an entity table, row 0 = "no entity".

Why one class: the embeddings, the processor, the model's table and pre-training data
all index entities the same way (row = position in the id list + 1, 0 = padding / no
entity); one object, saved once as a JSON list of ids, keeps them from drifting apart.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from ernie_kg.errors import SavedFileError, UnknownIdError
from ernie_kg.io import read_json, write_json

__all__ = ["NO_ENTITY", "EntityVocab"]

#: The row that means "no entity" in every entity tensor and table.
NO_ENTITY = 0


class EntityVocab:
    """Entity ids in row order (row ``r`` is ``ids[r - 1]``); grows with :meth:`add`."""

    def __init__(self, ids: Iterable[str] = ()) -> None:
        self._ids: list[str] = []
        self._rows: dict[str, int] = {}
        for entity_id in ids:
            if entity_id in self._rows:
                raise ValueError(f"entity id {entity_id!r} occurs twice in the vocabulary")
            self.add(entity_id)

    @property
    def ids(self) -> list[str]:
        """The entity ids of rows 1, 2, ... (a copy would cost a 5M-entry list: do not
        mutate it)."""
        return self._ids

    def add(self, entity_id: str) -> int:
        """The row of ``entity_id``, appended at the end when new."""
        row = self._rows.get(entity_id)
        if row is None:
            if not isinstance(entity_id, str) or not entity_id:
                raise TypeError(f"entity ids must be non-empty strings, not {entity_id!r}")
            self._ids.append(entity_id)
            row = self._rows[entity_id] = len(self._ids)
        return row

    def row(self, entity_id: str | None) -> int:
        """The row of ``entity_id``; :data:`NO_ENTITY` (0) for None and unknown ids."""
        return self._rows.get(entity_id, NO_ENTITY) if entity_id is not None else NO_ENTITY

    def __call__(self, entity_id: str | None) -> int:
        """Same as :meth:`row`, so the vocab serves as a ``row_of`` function."""
        return self.row(entity_id)

    def strict_row(self, entity_id: str) -> int:
        """The row of ``entity_id``; an unknown id raises :class:`UnknownIdError`."""
        row = self._rows.get(entity_id)
        if row is None:
            raise UnknownIdError(f"entity '{entity_id}' is not in the entity table")
        return row

    def entity_id(self, row: int) -> str | None:
        """The id at ``row``; None for row 0."""
        if row == NO_ENTITY:
            return None
        if not 0 < row <= len(self._ids):
            raise IndexError(f"row {row} is outside the vocabulary (1..{len(self._ids)})")
        return self._ids[row - 1]

    def __len__(self) -> int:
        """Number of entities (rows 1..len); the table has ``len + 1`` rows."""
        return len(self._ids)

    def __contains__(self, entity_id: object) -> bool:
        return entity_id in self._rows

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EntityVocab) and self._ids == other._ids

    def __repr__(self) -> str:
        return f"EntityVocab({len(self)} entities)"

    @classmethod
    def coerce(cls, value: EntityVocab | Sequence[str]) -> EntityVocab:
        """``value`` itself when it is a vocabulary, else a vocabulary over the id list."""
        return value if isinstance(value, EntityVocab) else cls(value)

    # ------------------------------------------------------------------ storage
    def save(self, path: str | os.PathLike) -> Path:
        """Write the ids as a JSON list (row order), atomically."""
        return write_json(path, self._ids, indent=None)

    @classmethod
    def load(cls, path: str | os.PathLike) -> EntityVocab:
        """Read :meth:`save`'s JSON list; errors name the file."""
        ids = read_json(path, what="no entity vocabulary here")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise SavedFileError(path, None, "expected a JSON list of entity ids")
        try:
            return cls(ids)
        except (TypeError, ValueError) as problem:
            raise SavedFileError(path, None, str(problem)) from None
