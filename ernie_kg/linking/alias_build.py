"""Building the alias index (:mod:`ernie_kg.linking.alias_index`) of a KG store.

One pass over every entity's names files each under its normalised, cased, loose, stem
and acronym keys and tokenizes it into mention patterns. The pass runs in parts of
entity rows, in turn or in spawned worker processes; each part numbers its strings
locally (a dict, each string held once) and keeps everything else in flat arrays.
Merging builds one ``marisa-trie`` per kind from the parts' distinct strings and
renumbers every part's local ids to the trie's, so the index is the same however the
pass was split.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from array import array
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import marisa_trie
import numpy as np
from spacy.language import Language

from ernie_kg.io import write_json
from ernie_kg.kg.store import KGStore
from ernie_kg.linking.aliases import ALIASES_FILE, AliasTable
from ernie_kg.linking.normalize import surface_keys
from ernie_kg.linking.patterns import PatternBuilder, combine_patterns, detection_nlp

__all__ = ["FORMAT", "KINDS", "LOOKUPS", "PART_ROWS", "VERSION", "build_alias_index",
           "default_workers"]

logger = logging.getLogger(__name__)

FORMAT = "ernie_kg.alias_index"
VERSION = 3  # 3: keys ignore invisible format characters
LOOKUPS = ("loose", "stem", "acronym")  # back-off key -> normalised keys
KINDS = ("keys", "cased", *LOOKUPS)  # one trie each
#: Entity rows per task of the alias pass (a KG with fewer is read in-process).
PART_ROWS = 250_000
_NLP: dict[str, Language] = {}  # this process's tokenizer per language


class _Part:
    """The names of some entity rows, keyed: each distinct string numbered in order of
    first sight (a dict key, held once), every pair in flat arrays, the patterns in a
    builder. No per-name Python object survives :meth:`add`."""

    def __init__(self, lang: str) -> None:
        if lang not in _NLP:
            _NLP[lang] = detection_nlp(lang)
        self.strings: dict[str, dict[str, int]] = {kind: {} for kind in KINDS}
        self.key_of, self.cased_of = array("q"), array("q")
        self.rows, self.weights = array("i"), array("d")
        self.lookups = {name: (array("q"), array("q")) for name in LOOKUPS}
        self.patterns = PatternBuilder(_NLP[lang])

    def add(self, surface: str, row: int, count: float) -> None:
        found = surface_keys(surface)
        if found is None:
            return
        strings = self.strings
        keys, cased = strings["keys"], strings["cased"]
        key_id = keys.setdefault(found.key, len(keys))
        self.key_of.append(key_id)
        self.cased_of.append(cased.setdefault(found.cased, len(cased)))
        self.rows.append(row)
        self.weights.append(count)
        self.patterns.add(key_id, found.key, surface)
        if found.loose:
            filed = [("loose", found.loose), ("stem", found.stem)]
            filed += [("acronym", value) for value in found.acronyms]
            for name, value in filed:
                ids = strings[name]
                lookup_ids, targets = self.lookups[name]
                lookup_ids.append(ids.setdefault(value, len(ids)))
                targets.append(key_id)

    def collected(self) -> dict[str, Any]:
        """Strings as lists, pairs as arrays: what a worker process sends back."""
        as_array = partial(np.frombuffer, dtype=np.int64)
        return {
            "strings": {kind: list(ids) for kind, ids in self.strings.items()},
            "key_of": as_array(self.key_of), "cased_of": as_array(self.cased_of),
            "rows": np.frombuffer(self.rows, dtype=np.int32),
            "weights": np.frombuffer(self.weights, dtype=np.float64),
            "lookups": {name: (as_array(ids), as_array(targets))
                        for name, (ids, targets) in self.lookups.items()},
            "patterns": self.patterns.arrays()}


def _collect_rows(directory: str, start: int, end: int, lang: str) -> dict[str, Any]:
    """The part of entity rows ``[start, end)`` of the KG index in ``directory`` (runs
    in a worker process; opening the index there is a memory map)."""
    store = KGStore(directory)
    part = _Part(lang)
    for row in range(start, end):
        for name in store.names(row):
            part.add(name, row, 1.0)
    return part.collected()


def _collect_extra(store: KGStore, extra: AliasTable, lang: str) -> dict[str, Any]:
    part, unknown = _Part(lang), 0
    for surface, entity_id, count in extra.to_json()["aliases"]:
        row = store.row(entity_id)
        if row is None:
            unknown += 1
            continue
        part.add(surface, row, float(count))
    if unknown:
        logger.warning("%s: %d alias rows name entities the KG does not have; left out",
                       ALIASES_FILE, unknown)
    return part.collected()


def _collect(store: KGStore, lang: str, workers: int, part_rows: int, progress: bool
             ) -> Iterator[dict[str, Any]]:
    """The parts of every entity row, in row order (across ``workers`` processes)."""
    from tqdm.auto import tqdm

    total = store.entity_count
    bounds = [(start, min(start + part_rows, total)) for start in range(0, total, part_rows)]
    with tqdm(total=total, desc="alias index", unit="entity", disable=not progress,
              leave=False) as bar:
        if workers <= 1 or len(bounds) <= 1:
            for start, end in bounds:
                yield _collect_rows(str(store.directory), start, end, lang)
                bar.update(end - start)
            return
        context = multiprocessing.get_context("spawn")  # no fork of a threaded process
        with ProcessPoolExecutor(min(workers, len(bounds)), mp_context=context) as pool:
            directory = str(store.directory)
            for (start, end), part in zip(bounds, pool.map(
                    _collect_rows, *zip(*[(directory, a, b, lang) for a, b in bounds]))):
                yield part
                bar.update(end - start)


def default_workers() -> int:
    """The CPUs this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def build_alias_index(store: KGStore, target: Path, extra: AliasTable | None = None,
                      lang: str = "en", progress: bool = False, workers: int = 1,
                      part_rows: int = PART_ROWS) -> None:
    """Write the alias index of ``store`` (+ ``extra`` counts) into the new ``target``.

    Parts of ``part_rows`` entity rows are keyed in turn, or in ``workers`` spawned
    processes (the pass is Python-bound: on two cores it takes about 0.7x the time;
    spawning re-imports the caller's main module, so a script calls this under
    ``if __name__ == "__main__":``). The parts' strings go into one trie per kind and
    each part's local ids are renumbered to the trie's: the index is the same however
    the pass was split."""
    target.mkdir(parents=True)
    parts = list(_collect(store, lang, workers, part_rows, progress))
    if extra is not None:
        parts.append(_collect_extra(store, extra, lang))
    tries, maps = {}, {}
    for kind in KINDS:  # one trie per kind; each part's local id -> trie id
        # distinct strings only: marisa weighs repeated keys, and the trie must not
        # depend on how the pass was split
        tries[kind] = trie = marisa_trie.Trie(
            {text for part in parts for text in part["strings"][kind]})
        maps[kind] = [np.fromiter(map(trie.__getitem__, part["strings"][kind]),
                                  dtype=np.int64, count=len(part["strings"][kind]))
                      for part in parts]
        for part in parts:
            part["strings"][kind] = None

    def joined(kind: str, field: str) -> np.ndarray:
        return np.concatenate([renumber[part[field]]
                               for part, renumber in zip(parts, maps[kind])])

    entities, key_count = store.entity_count, len(tries["keys"])
    row_array = np.concatenate([part["rows"] for part in parts])
    weight_array = np.concatenate([part["weights"] for part in parts])
    arrays = {kind: _csr(joined(kind, f"{field}_of"), row_array, weight_array,
                         len(tries[kind]), entities)
              for kind, field in (("keys", "key"), ("cased", "cased"))}
    for name in LOOKUPS:
        lookup_ids = np.concatenate([renumber[part["lookups"][name][0]]
                                     for part, renumber in zip(parts, maps[name])])
        targets = np.concatenate([renumber[part["lookups"][name][1]]
                                  for part, renumber in zip(parts, maps["keys"])])
        arrays[name] = _csr(lookup_ids, targets, None, len(tries[name]), key_count)
    for name, trie in tries.items():
        trie.save(str(target / f"{name}.marisa"))
        for field, values in arrays[name].items():
            np.save(target / f"{name}_{field}.npy", values, allow_pickle=False)
    totals = np.bincount(row_array, weights=weight_array, minlength=entities)
    np.save(target / "entity_totals.npy", totals.astype(np.float32), allow_pickle=False)
    finished = combine_patterns([(part["patterns"], renumber)
                                 for part, renumber in zip(parts, maps["keys"])],
                                tries["keys"].restore_key)
    (target / f"patterns-{lang}").mkdir()
    finished.save(target / f"patterns-{lang}")
    write_json(target / "meta.json", {
        "format": FORMAT, "version": VERSION, "keys": key_count,
        "patterns": {lang: len(finished)}, "entities": entities,
        "kg_content_hash": store.content_hash})


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
