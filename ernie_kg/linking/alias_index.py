"""The alias index: the alias table of a KG directory, built once next to its KG index
and memory-mapped after.

What :class:`~ernie_kg.linking.aliases.AliasTable` holds in dicts (a few hundred bytes
per name, 18 GB for a Wikidata-sized KG) is here flat arrays behind ``marisa-trie``
string tries: normalised key -> (entity row, count) pairs in CSR form, the same for the
cased key, and loose / stem / acronym keys -> normalised keys. Each KG name counts once
(as :meth:`AliasTable.from_kg`), plus the rows of ``KG_DIR/aliases.json`` when present
(corpus counts). The mention patterns (:mod:`ernie_kg.linking.patterns`) are built in
the same pass (:mod:`ernie_kg.linking.alias_build`). Lookups answer exactly as the
table would, with entity ids decoded from rows only for the candidates returned.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import marisa_trie
import numpy as np
import spacy
from filelock import FileLock
from spacy.language import Language

from ernie_kg.errors import SavedFileError
from ernie_kg.io import read_json, write_json
from ernie_kg.kg.store import KGStore, mapped
from ernie_kg.linking.alias_build import FORMAT, KINDS, LOOKUPS, VERSION, build_alias_index
from ernie_kg.linking.aliases import ALIASES_FILE, AliasTable
from ernie_kg.linking.normalize import (
    acronym_query,
    acronyms,
    cased_key,
    loose_key,
    normalize,
    stem_key,
)
from ernie_kg.linking.patterns import AliasPatterns

__all__ = ["REFERENCE_FILE", "AliasIndex", "open_alias_index"]

#: What a saved linker over an alias index writes instead of ``aliases.json``.
REFERENCE_FILE = "alias_index.json"
REFERENCE_FORMAT = "ernie_kg.alias_index_reference"

logger = logging.getLogger(__name__)

_FOLDER = "aliases"


class _Csr:
    """Rows of ``(value, count)`` per trie key id, memory-mapped."""

    def __init__(self, indptr: np.ndarray, values: np.ndarray, counts: np.ndarray | None):
        self.indptr, self.values, self.counts = indptr, values, counts

    def row(self, key_id: int) -> tuple[np.ndarray, np.ndarray | None]:
        start, end = int(self.indptr[key_id]), int(self.indptr[key_id + 1])
        counts = None if self.counts is None else self.counts[start:end]
        return self.values[start:end], counts

class AliasIndex:
    """The alias table of a KG store, read-only and memory-mapped (see module doc)."""

    def __init__(self, store: KGStore, directory: str | Path, kg_dir: str | Path,
                 case_smoothing: float = 5.0) -> None:
        self.store = store
        self.directory = Path(directory)
        self.kg_dir = Path(kg_dir).resolve()
        self.case_smoothing = float(case_smoothing)
        meta = read_json(self.directory / "meta.json", SavedFileError,
                         what="no alias index here")
        if not isinstance(meta, dict) or meta.get("format") != FORMAT \
                or meta.get("version") != VERSION:
            raise SavedFileError(self.directory / "meta.json", None,
                                 f"not an alias index of this release (delete {self.directory}"
                                 " and it is rebuilt)")
        if (meta.get("entities"), meta.get("kg_content_hash")) != (
                store.entity_count, store.content_hash):
            raise SavedFileError(self.directory / "meta.json", None,
                                 f"built for another KG index than {store.directory} "
                                 f"(delete {self.directory} and it is rebuilt)")
        self.meta = meta
        self._tries = {}
        try:
            for name in KINDS:
                trie = marisa_trie.Trie()
                trie.mmap(str(self.directory / f"{name}.marisa"))
                self._tries[name] = trie
            self._by_key = self._load("keys", counts=True)
            self._by_cased = self._load("cased", counts=True)
            self._lookups = {name: self._load(name, counts=False) for name in LOOKUPS}
            self._totals = mapped(self.directory / "entity_totals.npy")
        except Exception as problem:  # marisa raises bare RuntimeErrors on bad files
            raise SavedFileError(self.directory, None, f"unreadable alias index ({problem}); "
                                 f"delete {self.directory} and it is rebuilt") from None
        self._keys = self._tries["keys"]
        self._patterns: dict[str, AliasPatterns] = {}

    def _load(self, name: str, counts: bool) -> _Csr:
        load = lambda part: mapped(self.directory / f"{name}_{part}.npy")  # noqa: E731
        return _Csr(load("indptr"), load("values"), load("counts") if counts else None)

    # ------------------------------------------------------------------ lookup
    def _counts(self, csr: _Csr, trie: marisa_trie.Trie, key: str) -> dict[int, float]:
        key_id = trie.get(key)
        if key_id is None:
            return {}
        rows, counts = csr.row(key_id)
        return dict(zip(rows.tolist(), counts.tolist()))

    def key_candidates(self, key: str, cased: str | None = None) -> list[tuple[str, float]]:
        """As :meth:`AliasTable.key_candidates`."""
        counts = self._counts(self._by_key, self._keys, key)
        if not counts:
            return []
        total = sum(counts.values())
        exact = (self._counts(self._by_cased, self._tries["cased"], cased)
                 if cased is not None else None)
        smoothing = self.case_smoothing
        if exact and smoothing > 0:
            denominator = sum(exact.values()) + smoothing
            priors = {r: (exact.get(r, 0.0) + smoothing * c / total) / denominator
                      for r, c in counts.items()}
        elif exact:
            exact_total = sum(exact.values())
            priors = {r: exact.get(r, 0.0) / exact_total for r in counts}
        else:
            priors = {r: c / total for r, c in counts.items()}
        entity_id, totals = self.store.entity_id, self._totals
        ranked = sorted(((entity_id(r), p, float(totals[r])) for r, p in priors.items()),
                        key=lambda item: (-item[1], -item[2], item[0]))
        return [(e, p) for e, p, _ in ranked]

    def candidates(self, surface: str) -> list[tuple[str, float]]:
        """As :meth:`AliasTable.candidates`."""
        return self.key_candidates(normalize(surface), cased_key(surface))

    def _keys_of(self, name: str, lookup: str) -> list[str]:
        key_id = self._tries[name].get(lookup)
        if key_id is None:
            return []
        restore = self._keys.restore_key
        return sorted(restore(int(k)) for k in self._lookups[name].row(key_id)[0])

    def loose_keys(self, surface: str) -> list[str]:
        """As :meth:`AliasTable.loose_keys`."""
        return self._keys_of("loose", loose_key(surface))

    def stem_keys(self, surface: str) -> list[str]:
        """As :meth:`AliasTable.stem_keys`."""
        stem = stem_key(surface)
        return self._keys_of("stem", stem) if stem else []

    def acronym_keys(self, surface: str) -> list[str]:
        """As :meth:`AliasTable.acronym_keys`."""
        query = acronym_query(surface)
        if query is not None:
            return self._keys_of("acronym", query)
        return sorted(a for a in acronyms(surface) if a in self._keys)

    def counts(self, key: str) -> dict[str, float]:
        """Raw entity counts of a normalised key."""
        entity_id = self.store.entity_id
        return {entity_id(r): c for r, c in self._counts(self._by_key, self._keys, key).items()}

    def entity_count(self, entity_id: str) -> float:
        """How often ``entity_id`` was named, over all its surfaces."""
        row = self.store.row(entity_id)
        return 0.0 if row is None else float(self._totals[row])

    def __contains__(self, surface: object) -> bool:
        return isinstance(surface, str) and normalize(surface) in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def __bool__(self) -> bool:
        return True

    def keys(self) -> Iterator[str]:
        """The normalised keys (trie order)."""
        return self._keys.iterkeys()

    def alias_patterns(self, nlp: Language) -> AliasPatterns:
        """The mention patterns for ``nlp``'s language, built with the index."""
        lang = nlp.lang
        if lang not in self._patterns:
            folder = self.directory / f"patterns-{lang}"
            if not folder.is_dir():
                raise SavedFileError(folder, None, f"no alias patterns for language {lang!r} "
                                     "(build them with open_alias_index(..., lang=...))")
            self._patterns[lang] = AliasPatterns.load(folder, self._keys.restore_key)
        return self._patterns[lang]

    def reference(self) -> dict[str, str]:
        """What a saved linker writes instead of the table: where the KG is and its hash."""
        return {"format": REFERENCE_FORMAT, "kg_dir": str(self.kg_dir),
                "kg_content_hash": self.store.content_hash}

    @classmethod
    def from_reference(cls, path: Path, store: KGStore | None = None,
                       lang: str = "en") -> AliasIndex:
        """Reopen the index a saved linker refers to (``path``: its reference file);
        a missing or changed KG raises :class:`SavedFileError` naming it."""
        from ernie_kg.errors import KGFormatError
        from ernie_kg.kg.store import open_store

        reference = read_json(path, SavedFileError, what="no alias index reference here")
        if not isinstance(reference, dict) or reference.get("format") != REFERENCE_FORMAT:
            raise SavedFileError(path, None, "not an alias index reference")
        for field in ("kg_dir", "kg_content_hash"):
            if not isinstance(reference.get(field), str):
                raise SavedFileError(path, None, f"field {field!r} missing or not a string")
        kg_dir = Path(reference["kg_dir"])
        if store is None or store.content_hash != reference["kg_content_hash"]:
            try:
                store = open_store(kg_dir)
            except KGFormatError as problem:
                raise SavedFileError(path, None, f"the linker's KG is unreadable: {problem}"
                                     ) from None
        if store.content_hash != reference["kg_content_hash"]:
            raise SavedFileError(path, None, f"the KG files in {kg_dir} changed since this "
                                 "linker was saved; link with the KG it was saved with, or "
                                 "build the linker again from the KG directory")
        return open_alias_index(store, kg_dir, lang)

    def __repr__(self) -> str:
        return f"AliasIndex({len(self)} keys, {self.store.entity_count} entities)"

def _extra_fingerprint(kg_dir: Path) -> list[int] | None:
    path = kg_dir / ALIASES_FILE
    if not path.exists():
        return None
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def open_alias_index(store: KGStore, kg_dir: str | Path, lang: str = "en",
                     progress: bool = False, workers: int = 1) -> AliasIndex:
    """The alias index of ``kg_dir`` (whose KG index is ``store``), built on first use
    (in ``workers`` processes, see :func:`build_alias_index`) and rebuilt when
    ``KG_DIR/aliases.json``, the KG index or spaCy's tokenizer changes."""
    kg_dir = Path(kg_dir)
    folder = store.directory / _FOLDER
    expected = {"extra": _extra_fingerprint(kg_dir), "lang": lang, "version": VERSION,
                "kg_content_hash": store.content_hash, "entities": store.entity_count,
                "spacy": spacy.__version__}

    def current() -> bool:
        try:
            return json.loads((folder / "source.json").read_text()) == expected
        except (OSError, ValueError):
            return False

    if not current():
        with FileLock(str(store.directory / "aliases.lock")):
            if not current():
                for stale in store.directory.glob(f"{_FOLDER}.tmp-*"):
                    shutil.rmtree(stale, ignore_errors=True)
                temporary = store.directory / f"{_FOLDER}.tmp-{os.getpid()}"
                try:
                    extra = (AliasTable.load(kg_dir / ALIASES_FILE)
                             if expected["extra"] is not None else None)
                    build_alias_index(store, temporary, extra, lang, progress, workers)
                    write_json(temporary / "source.json", expected)
                    if folder.exists():
                        retired = store.directory / f"{_FOLDER}.old-{os.getpid()}"
                        folder.rename(retired)
                        shutil.rmtree(retired, ignore_errors=True)
                    temporary.rename(folder)
                finally:
                    shutil.rmtree(temporary, ignore_errors=True)
    return AliasIndex(store, folder, kg_dir)
