"""EntityVocab: KG entity ids <-> rows of an entity table, row 0 = "no entity".

Why one class: the embeddings, the processor, the model's table and pre-training data
all index entities the same way (row = position in the id list + 1, 0 = padding / no
entity); one object, saved once as a JSON list of ids, keeps them from drifting apart.

:class:`MappedEntityVocab` is the same vocabulary read from disk for tables of
Wikidata size: a static ``marisa-trie`` plus two int32 arrays, memory-mapped, as the KG
store keeps its ids. For 5M Wikidata ids a dict vocabulary takes 4.7 s and 740 MB to
load; the mapped one opens in milliseconds and costs only the pages it touches.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import marisa_trie
import numpy as np

from ernie_kg.errors import SavedFileError, UnknownIdError
from ernie_kg.io import read_json, write_atomic, write_json

__all__ = ["NO_ENTITY", "EntityVocab", "MappedEntityVocab"]

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
        if self is other:
            return True
        if not isinstance(other, EntityVocab) or len(self) != len(other):
            return False
        if type(self) is EntityVocab and type(other) is EntityVocab:
            return self._ids == other._ids
        return all(a == b for a, b in zip(self, other))

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


#: Files of a :class:`MappedEntityVocab` in its directory.
TRIE_FILE, ROW_KEYS_FILE, KEY_ROWS_FILE = ("entity_ids.marisa", "entity_row_keys.npy",
                                           "entity_key_rows.npy")


class MappedEntityVocab(EntityVocab):
    """A read-only :class:`EntityVocab` over memory-mapped files (see the module doc).

    The trie numbers its keys its own way, so ``row_keys[row - 1]`` is the trie key of a
    row and ``key_rows[key]`` the row (minus one) of a trie key."""

    def __init__(self, trie: marisa_trie.Trie, row_keys: np.ndarray, key_rows: np.ndarray,
                 directory: Path | None = None) -> None:
        self._trie, self._row_keys, self._key_rows = trie, row_keys, key_rows
        self.directory = directory

    @classmethod
    def write(cls, ids: Iterable[str], directory: str | os.PathLike) -> MappedEntityVocab:
        """Save ``ids`` (row order) into ``directory``'s three files and open them."""
        directory = Path(directory)
        ids = [entity_id if type(entity_id) is str else _plain_id(entity_id)
               for entity_id in ids]
        if not all(ids):
            raise TypeError("entity ids must be non-empty strings, not ''")
        trie = marisa_trie.Trie(ids)
        if len(trie) != len(ids):
            seen: set[str] = set()
            twice = next(i for i in ids if i in seen or seen.add(i))
            raise ValueError(f"entity id {twice!r} occurs twice in the vocabulary")
        row_keys = np.fromiter(map(trie.__getitem__, ids), dtype=np.int32, count=len(ids))
        key_rows = np.empty_like(row_keys)
        key_rows[row_keys] = np.arange(len(ids), dtype=np.int32)
        directory.mkdir(parents=True, exist_ok=True)
        staged = directory / f".{TRIE_FILE}.{os.getpid()}.tmp"
        try:  # marisa writes by path only: stage it, then rename into place
            trie.save(str(staged))
            os.replace(staged, directory / TRIE_FILE)
        finally:
            staged.unlink(missing_ok=True)
        for name, values in ((ROW_KEYS_FILE, row_keys), (KEY_ROWS_FILE, key_rows)):
            write_atomic(directory / name, lambda f, v=values: np.save(f, v), binary=True)
        return cls.open(directory)

    @classmethod
    def open(cls, directory: str | os.PathLike) -> MappedEntityVocab:
        """Map :meth:`write`'s files; a missing or damaged one raises SavedFileError."""
        directory = Path(directory)
        trie = marisa_trie.Trie()
        try:
            trie.mmap(str(directory / TRIE_FILE))
        except Exception as problem:  # marisa raises bare RuntimeErrors on bad files
            raise SavedFileError(directory / TRIE_FILE, None, "missing or unreadable entity "
                                 f"id trie ({problem})") from None
        arrays = []
        for name in (ROW_KEYS_FILE, KEY_ROWS_FILE):
            try:
                arrays.append(np.load(directory / name, mmap_mode="r", allow_pickle=False))
            except (OSError, ValueError) as problem:
                raise SavedFileError(directory / name, None, "missing or unreadable entity "
                                     f"rows ({problem})") from None
        if not len(arrays[0]) == len(arrays[1]) == len(trie):
            raise SavedFileError(directory / ROW_KEYS_FILE, None, f"{len(arrays[0])} rows for "
                                 f"{len(trie)} ids in {TRIE_FILE}: the files do not belong "
                                 "together")
        return cls(trie, arrays[0], arrays[1], directory)

    @property
    def ids(self) -> Sequence[str]:
        """The ids of rows 1, 2, ... as a lazy, read-only sequence."""
        return _MappedIds(self)

    def add(self, entity_id: str) -> int:
        """The row of a known id; a mapped vocabulary cannot grow."""
        row = self.row(entity_id)
        if row == NO_ENTITY:
            raise TypeError(f"cannot add {entity_id!r}: a mapped entity vocabulary is read-only")
        return row

    def row(self, entity_id: str | None) -> int:
        """The row of ``entity_id``; :data:`NO_ENTITY` (0) for None and unknown ids."""
        key = self._trie.get(entity_id) if isinstance(entity_id, str) else None
        return NO_ENTITY if key is None else int(self._key_rows[key]) + 1

    def strict_row(self, entity_id: str) -> int:
        """The row of ``entity_id``; an unknown id raises :class:`UnknownIdError`."""
        row = self.row(entity_id)
        if row == NO_ENTITY:
            raise UnknownIdError(f"entity '{entity_id}' is not in the entity table")
        return row

    def entity_id(self, row: int) -> str | None:
        """The id at ``row``; None for row 0."""
        if row == NO_ENTITY:
            return None
        if not 0 < row <= len(self):
            raise IndexError(f"row {row} is outside the vocabulary (1..{len(self)})")
        return self._trie.restore_key(int(self._row_keys[row - 1]))

    def __len__(self) -> int:
        return len(self._row_keys)

    def __contains__(self, entity_id: object) -> bool:
        return isinstance(entity_id, str) and entity_id in self._trie

    def __iter__(self) -> Iterator[str]:
        restore = self._trie.restore_key
        for start in range(0, len(self), 65_536):
            for key in self._row_keys[start:start + 65_536].tolist():
                yield restore(key)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the ids as a JSON list (row order), as :meth:`EntityVocab.save` does."""
        return write_json(path, list(self), indent=None)

    def __repr__(self) -> str:
        return f"MappedEntityVocab({len(self)} entities)"


def _plain_id(entity_id: object) -> str:
    if not isinstance(entity_id, str):  # numpy's str_ passes, as a plain str
        raise TypeError(f"entity ids must be non-empty strings, not {entity_id!r}")
    return str(entity_id)


class _MappedIds(Sequence):
    """``MappedEntityVocab.ids``: indexable and iterable without a 5M-entry list."""

    def __init__(self, vocab: MappedEntityVocab) -> None:
        self._vocab = vocab

    def __len__(self) -> int:
        return len(self._vocab)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self._vocab.entity_id(index + 1)

    def __iter__(self) -> Iterator[str]:
        return iter(self._vocab)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other))
