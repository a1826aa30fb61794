"""The alias index: the alias table of a KG directory, built once next to its KG index
and memory-mapped after.

What :class:`~ernie_kg.linking.aliases.AliasTable` holds in dicts (a few hundred bytes
per name, 18 GB for a Wikidata-sized KG) is here flat arrays behind ``marisa-trie``
string tries: normalised key -> (entity row, count) pairs in CSR form, the same for the
cased key, and loose / stem / acronym keys -> normalised keys. Each KG name counts once
(as :meth:`AliasTable.from_kg`), plus the rows of ``KG_DIR/aliases.json`` when present
(corpus counts). The mention patterns (:mod:`ernie_kg.linking.patterns`) are built in
the same pass. Lookups answer exactly as the table would, with entity ids decoded from
rows only for the candidates returned.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from array import array
from collections.abc import Iterator
from pathlib import Path

import marisa_trie
import numpy as np
from filelock import FileLock
from spacy.language import Language

from ernie_kg.errors import SavedFileError
from ernie_kg.io import read_json, write_json
from ernie_kg.kg.store import KGStore, mapped
from ernie_kg.linking.aliases import ALIASES_FILE, AliasTable
from ernie_kg.linking.normalize import (
    acronym_query,
    acronyms,
    cased_key,
    loose_key,
    normalize,
    stem_key,
)
from ernie_kg.linking.patterns import AliasPatterns, PatternBuilder, detection_nlp

__all__ = ["REFERENCE_FILE", "AliasIndex", "open_alias_index"]

#: What a saved linker over an alias index writes instead of ``aliases.json``.
REFERENCE_FILE = "alias_index.json"
REFERENCE_FORMAT = "ernie_kg.alias_index_reference"

logger = logging.getLogger(__name__)

_FORMAT = "ernie_kg.alias_index"
_VERSION = 2
_FOLDER = "aliases"
_TRIES = ("keys", "cased", "loose", "stem", "acronym")


class _Csr:
    """Rows of ``(value, count)`` per trie key id, memory-mapped."""

    def __init__(self, indptr: np.ndarray, values: np.ndarray, counts: np.ndarray | None):
        self.indptr, self.values, self.counts = indptr, values, counts

    def row(self, key_id: int) -> tuple[np.ndarray, np.ndarray | None]:
        start, end = int(self.indptr[key_id]), int(self.indptr[key_id + 1])
        counts = None if self.counts is None else self.counts[start:end]
        return self.values[start:end], counts


def _csr(key_ids: np.ndarray, values: np.ndarray, weights: np.ndarray | None,
         key_count: int, value_count: int) -> dict[str, np.ndarray]:
    """Group ``(key id, value)`` pairs (summing ``weights``, or de-duplicating)."""
    combined = key_ids.astype(np.int64) * max(value_count, 1) + values.astype(np.int64)
    if weights is None:
        unique = np.unique(combined)
        sums = None
    else:
        unique, inverse = np.unique(combined, return_inverse=True)
        sums = np.bincount(inverse, weights=weights, minlength=len(unique)).astype(np.float32)
    keys, kept = np.divmod(unique, max(value_count, 1))
    indptr = np.zeros(key_count + 1, dtype=np.int64)
    np.cumsum(np.bincount(keys, minlength=key_count), out=indptr[1:])
    arrays = {"indptr": indptr, "values": kept.astype(np.int32)}
    if sums is not None:
        arrays["counts"] = sums
    return arrays


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
        if not isinstance(meta, dict) or meta.get("format") != _FORMAT \
                or meta.get("version") != _VERSION:
            raise SavedFileError(self.directory / "meta.json", None,
                                 f"not an alias index of this release (delete {self.directory}"
                                 " and it is rebuilt)")
        self.meta = meta
        self._tries = {}
        for name in _TRIES:
            trie = marisa_trie.Trie()
            trie.mmap(str(self.directory / f"{name}.marisa"))
            self._tries[name] = trie
        self._keys = self._tries["keys"]
        self._by_key = self._load("keys", counts=True)
        self._by_cased = self._load("cased", counts=True)
        self._lookups = {name: self._load(name, counts=False)
                         for name in ("loose", "stem", "acronym")}
        self._totals = mapped(self.directory / "entity_totals.npy")
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


# ---------------------------------------------------------------------- building
class _Ids:
    """Strings numbered in order of first sight (provisional ids until the trie's)."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}

    def __call__(self, text: str) -> int:
        found = self.ids.get(text)
        if found is None:
            found = self.ids[text] = len(self.ids)
        return found

    def trie(self) -> tuple[marisa_trie.Trie, np.ndarray]:
        """The trie of the strings and provisional id -> trie id; forgets the strings."""
        trie = marisa_trie.Trie(self.ids)
        renumber = np.fromiter((trie[text] for text in self.ids), dtype=np.int64,
                               count=len(self.ids))
        self.ids = {}
        return trie, renumber


def build_alias_index(store: KGStore, target: Path, extra: AliasTable | None = None,
                      lang: str = "en", progress: bool = False) -> None:
    """Write the alias index of ``store`` (+ ``extra`` counts) into the new ``target``.

    One pass over the names; each distinct string is held once (as a dict key) until
    its trie is built, everything else goes into flat arrays (repeats are dropped
    there, not tracked in Python sets)."""
    from tqdm.auto import tqdm

    target.mkdir(parents=True)
    keys, cased = _Ids(), _Ids()
    key_of, cased_of, rows, weights = array("q"), array("q"), array("i"), array("d")
    derived = {name: (_Ids(), array("q"), array("q")) for name in ("loose", "stem", "acronym")}
    patterns = PatternBuilder(detection_nlp(lang))

    def add(surface: str, row: int, count: float) -> None:
        key = normalize(surface)
        if not key:
            return
        key_id = keys(key)
        key_of.append(key_id)
        cased_of.append(cased(cased_key(surface)))
        rows.append(row)
        weights.append(count)
        patterns.add(key_id, key, surface)
        loose = loose_key(surface)
        if loose:
            lookups = [("loose", loose), ("stem", stem_key(surface))]
            lookups += [("acronym", acronym) for acronym in acronyms(surface)]
            for name, value in lookups:
                ids, lookup_ids, targets = derived[name]
                lookup_ids.append(ids(value))
                targets.append(key_id)

    for row in tqdm(range(store.entity_count), desc="alias index", unit="entity",
                    disable=not progress, leave=False, mininterval=5):
        for name in store.names(row):
            add(name, row, 1.0)
    unknown = 0
    if extra is not None:
        for surface, entity_id, count in extra.to_json()["aliases"]:
            row = store.row(entity_id)
            if row is None:
                unknown += 1
                continue
            add(surface, row, float(count))
    if unknown:
        logger.warning("%s: %d alias rows name entities the KG does not have; left out",
                       ALIASES_FILE, unknown)
    entities = store.entity_count
    key_trie, key_map = keys.trie()
    cased_trie, cased_map = cased.trie()
    row_array = np.frombuffer(rows, dtype=np.int32)
    weight_array = np.frombuffer(weights, dtype=np.float64)
    tries = {"keys": key_trie, "cased": cased_trie}
    arrays = {
        "keys": _csr(key_map[np.frombuffer(key_of, dtype=np.int64)], row_array, weight_array,
                     len(key_trie), entities),
        "cased": _csr(cased_map[np.frombuffer(cased_of, dtype=np.int64)], row_array,
                      weight_array, len(cased_trie), entities),
    }
    for name, (ids, lookup_ids, targets) in derived.items():
        trie, lookup_map = ids.trie()
        tries[name] = trie
        arrays[name] = _csr(lookup_map[np.frombuffer(lookup_ids, dtype=np.int64)],
                            key_map[np.frombuffer(targets, dtype=np.int64)], None, len(trie),
                            len(key_trie))
    for name, trie in tries.items():
        trie.save(str(target / f"{name}.marisa"))
        for part, values in arrays[name].items():
            np.save(target / f"{name}_{part}.npy", values, allow_pickle=False)
    totals = np.bincount(row_array, weights=weight_array, minlength=entities)
    np.save(target / "entity_totals.npy", totals.astype(np.float32), allow_pickle=False)
    finished = patterns.finish(key_trie.restore_key, key_map)
    (target / f"patterns-{lang}").mkdir()
    finished.save(target / f"patterns-{lang}")
    write_json(target / "meta.json", {"format": _FORMAT, "version": _VERSION,
                                      "keys": len(key_trie), "patterns": {lang: len(finished)}})


def _extra_fingerprint(kg_dir: Path) -> list[int] | None:
    path = kg_dir / ALIASES_FILE
    if not path.exists():
        return None
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def open_alias_index(store: KGStore, kg_dir: str | Path, lang: str = "en",
                     progress: bool = False) -> AliasIndex:
    """The alias index of ``kg_dir`` (whose KG index is ``store``), built on first use
    and rebuilt when ``KG_DIR/aliases.json`` changes."""
    kg_dir = Path(kg_dir)
    folder = store.directory / _FOLDER
    expected = {"extra": _extra_fingerprint(kg_dir), "lang": lang, "version": _VERSION}

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
                    build_alias_index(store, temporary, extra, lang, progress)
                    write_json(temporary / "source.json", expected)
                    if folder.exists():
                        retired = store.directory / f"{_FOLDER}.old-{os.getpid()}"
                        folder.rename(retired)
                        shutil.rmtree(retired, ignore_errors=True)
                    temporary.rename(folder)
                finally:
                    shutil.rmtree(temporary, ignore_errors=True)
    return AliasIndex(store, folder, kg_dir)
