"""The KG store: a KG directory indexed once on disk, memory-mapped after.

Why this layout (measured on synthetic Wikidata-shaped KGs, ``benchmarks/kg_scale.py``):
a KG held as Python objects costs ~3.7 KB per entity (18.6 GB at 1M entities); this
store costs the arrays' bytes, read lazily by the OS page cache:

- entity ids <-> rows: a ``marisa-trie`` (a static, memory-mapped string trie, ~2 bytes
  per id for Wikidata-style ids, microsecond lookups) plus two int32 permutation arrays,
  because the trie numbers keys its own way and rows keep the KG's order (entities.jsonl
  order, then first appearance in the triples);
- triples: one ``(n, 3)`` int32 ``.npy`` array, rows of all splits in split order;
- adjacency: CSR arrays (:mod:`ernie_kg.kg.adjacency`);
- metadata: each entity's JSON record in one byte blob with an int64 offset array, so
  one entity is decoded without touching the others.

The index of ``KG_DIR`` lives in ``KG_DIR/.ernie_kg/index`` (or, when the KG directory
is read-only, under ``ERNIE_KG_CACHE`` / the platform cache directory). It is checked
by the KG files' sizes and modification times, and by their content hash when those
change: a KG file edited after indexing means a rebuilt index (said so on the log).
Builds write a temporary directory and rename it into place under a file lock, so a
crash or Ctrl-C leaves no half index and two processes never build over each other.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from array import array
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import marisa_trie
import numpy as np
from filelock import FileLock

from ernie_kg.errors import EmptyGraphError, KGFormatError, SavedFileError
from ernie_kg.io import read_json, write_json
from ernie_kg.kg.adjacency import Adjacency
from ernie_kg.kg.reading import iter_entities, iter_relations, iter_triples, triple_columns
from ernie_kg.kg.records import SPLITS, Entity, Relation

__all__ = ["INDEX_DIR", "KGStore", "build_store", "index_location", "mapped", "open_store"]

logger = logging.getLogger(__name__)

_FORMAT = "ernie_kg.kg_store"
_VERSION = 1
#: Folder of a KG directory that holds its index.
INDEX_DIR = ".ernie_kg"
_KG_FILES = tuple(f"{split}.txt" for split in SPLITS) + ("entities.jsonl", "relations.jsonl")
_ARRAYS = ("triples", "trie_to_row", "row_to_trie", "record_offsets",
           "out_indptr", "out_pairs", "in_indptr", "in_pairs")


# ---------------------------------------------------------------------- the store
class KGStore:
    """An opened index: ids <-> rows, triples, adjacency and entity records."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        meta_path = self.directory / "meta.json"
        meta = read_json(meta_path, SavedFileError, what=_rebuild_hint(self.directory))
        if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
            raise SavedFileError(meta_path, None, "not a KG index. " + _rebuild_hint(
                self.directory))
        if meta.get("version") != _VERSION:
            raise SavedFileError(meta_path, None, f"KG index version {meta.get('version')} "
                                 f"(this release reads {_VERSION}). " + _rebuild_hint(
                                     self.directory))
        missing = [key for key in ("entities", "relations", "splits") if key not in meta]
        if missing:
            raise SavedFileError(meta_path, None, f"no {', '.join(missing)} field. "
                                 + _rebuild_hint(self.directory))
        self.meta: dict[str, Any] = meta
        _check_sizes(self.directory, meta.get("files", {}))
        arrays = {name: _load_array(self.directory / f"{name}.npy") for name in _ARRAYS}
        self.triple_array: np.ndarray = arrays["triples"]
        self._trie_to_row, self._row_to_trie = arrays["trie_to_row"], arrays["row_to_trie"]
        self._offsets = arrays["record_offsets"]
        self.adjacency = Adjacency(arrays["out_indptr"], arrays["out_pairs"],
                                   arrays["in_indptr"], arrays["in_pairs"])
        self._trie = marisa_trie.Trie()
        try:
            self._trie.mmap(str(self.directory / "entity_ids.marisa"))
        except Exception as problem:  # marisa raises bare RuntimeErrors on bad files
            raise SavedFileError(self.directory / "entity_ids.marisa", None,
                                 f"unreadable ({problem}). " + _rebuild_hint(self.directory)
                                 ) from None
        self._records = np.empty(0, np.uint8)
        if self._offsets[-1]:  # np.memmap refuses an empty file
            self._records = np.memmap(self.directory / "entity_records.bin", dtype=np.uint8,
                                      mode="r").view(np.ndarray)
        self.relations = {r: Relation(r, label) for r, label in meta["relations"]}
        self.relation_ids = list(self.relations)
        self.split_bounds: dict[str, tuple[int, int]] = {
            s: (int(a), int(b)) for s, (a, b) in meta["splits"].items()}

    @property
    def content_hash(self) -> str:
        """SHA-256 of the KG files this index was built from."""
        return str(self.meta.get("content_hash", ""))

    @property
    def entity_count(self) -> int:
        """Number of entities (rows)."""
        return int(self._row_to_trie.shape[0])

    def row(self, entity_id: str) -> int | None:
        """The row of ``entity_id``, None when the KG does not have it."""
        key = self._trie.get(entity_id) if isinstance(entity_id, str) else None
        return None if key is None else int(self._trie_to_row[key])

    def entity_id(self, row: int) -> str:
        """The id of ``row``."""
        return self._trie.restore_key(int(self._row_to_trie[row]))

    def ids(self) -> Iterator[str]:
        """Every entity id in row order."""
        restore = self._trie.restore_key
        for key in self._row_to_trie:
            yield restore(int(key))

    def entity(self, row: int) -> Entity:
        """The entity of ``row`` with its metadata (decoded from its record alone)."""
        start, end = int(self._offsets[row]), int(self._offsets[row + 1])
        if start == end:
            return Entity(self.entity_id(row))
        return Entity.from_json(json.loads(self._records[start:end].tobytes()))

    def names(self, row: int) -> tuple[str, ...]:
        """``entity(row).names`` without building the entity (the alias index's pass)."""
        start, end = int(self._offsets[row]), int(self._offsets[row + 1])
        if start == end:
            return (self.entity_id(row),)
        record = json.loads(self._records[start:end].tobytes())
        return tuple(dict.fromkeys((record["label"], *record.get("aliases", ()))))

    def triples(self, split: str) -> np.ndarray:
        """The ``(n, 3)`` (head, relation, tail) rows of ``split`` (empty when absent)."""
        start, end = self.split_bounds.get(split, (0, 0))
        return self.triple_array[start:end]

    def __repr__(self) -> str:
        return (f"KGStore({self.directory}, {self.entity_count} entities, "
                f"{len(self.relations)} relations, {len(self.triple_array)} triples)")


def _rebuild_hint(directory: Path) -> str:
    return (f"Delete {directory} (or run `ernie-kg kg index --kg KG_DIR --rebuild`) "
            "and it is rebuilt from the KG files.")


def mapped(path: Path) -> np.ndarray:
    """A read-only memory-mapped ``.npy`` as a plain ndarray view (slicing an
    ``np.memmap`` costs microseconds of subclass bookkeeping; a view does not)."""
    return np.load(path, mmap_mode="r", allow_pickle=False).view(np.ndarray)


def _load_array(path: Path) -> np.ndarray:
    try:
        return mapped(path)
    except FileNotFoundError:
        raise SavedFileError(path, None, "missing. " + _rebuild_hint(path.parent)) from None
    except (ValueError, OSError) as problem:
        raise SavedFileError(path, None, f"not a readable array ({problem}). "
                             + _rebuild_hint(path.parent)) from None


def _check_sizes(directory: Path, sizes: dict[str, int]) -> None:
    """Every file of the index has the size it was written with (truncation shows)."""
    for name, size in sizes.items():
        path = directory / name
        if not path.is_file():
            raise SavedFileError(path, None, "missing. " + _rebuild_hint(directory))
        if path.stat().st_size != size:
            raise SavedFileError(path, None, f"{path.stat().st_size} bytes, written with "
                                 f"{size} (truncated or replaced). " + _rebuild_hint(directory))


# ---------------------------------------------------------------------- building
def build_store(kg_dir: str | Path, target: str | Path, progress: bool = False,
                content_hash: str | None = None) -> KGStore:
    """Index ``kg_dir`` into the new directory ``target``, reading each file once
    (``content_hash``: the KG files' hash, when the caller has it)."""
    from tqdm.auto import tqdm

    kg_dir, target = Path(kg_dir), Path(target)
    _check_kg_dir(kg_dir)
    target.mkdir(parents=True)
    total = sum((kg_dir / n).stat().st_size for n in _KG_FILES if (kg_dir / n).exists())
    with tqdm(total=total, unit="B", unit_scale=True, desc=f"indexing {kg_dir.name}",
              disable=not progress, leave=False) as bar:
        # id -> row in order of first sight (dict order is row order)
        entities: dict[str, int] = {}
        relations: dict[str, int] = {}
        offsets = array("q", [0])
        with open(target / "entity_records.bin", "wb") as records:
            for _, entity in iter_entities(kg_dir / "entities.jsonl", bar.update):
                entities[entity.id] = len(entities)
                records.write(json.dumps(entity.to_json(), ensure_ascii=False,
                                         separators=(",", ":")).encode("utf-8"))
                offsets.append(records.tell())
        labels = {}
        for _, relation in iter_relations(kg_dir / "relations.jsonl"):
            relations[relation.id] = len(relations)
            labels[relation.id] = relation.label
        blocks, bounds, start = [], {}, 0
        for split in SPLITS:
            path = kg_dir / f"{split}.txt"
            rows = (_triple_rows(path, entities, relations, bar.update) if path.exists()
                    else np.empty((0, 3), dtype=np.int32))
            blocks.append(rows)
            bounds[split], start = [start, start + len(rows)], start + len(rows)
    if not start:
        shutil.rmtree(target)
        raise EmptyGraphError(f"{kg_dir}: the knowledge graph has no triples")
    triples = np.concatenate(blocks)
    del blocks, rows
    ids = list(entities)
    offsets.extend([offsets[-1]] * (len(ids) + 1 - len(offsets)))  # no record: id only
    del entities
    trie = marisa_trie.Trie(ids)
    row_to_trie = np.fromiter(map(trie.__getitem__, ids), dtype=np.int32, count=len(ids))
    trie_to_row = np.empty_like(row_to_trie)
    trie_to_row[row_to_trie] = np.arange(len(ids), dtype=np.int32)
    del ids
    trie.save(str(target / "entity_ids.marisa"))
    adjacency = Adjacency.from_triples(triples, len(row_to_trie), len(relations))
    arrays = {"triples": triples, "trie_to_row": trie_to_row, "row_to_trie": row_to_trie,
              "record_offsets": np.frombuffer(offsets, dtype=np.int64), **adjacency.arrays()}
    for name, values in arrays.items():
        np.save(target / f"{name}.npy", values, allow_pickle=False)
    files = {p.name: p.stat().st_size for p in sorted(target.iterdir())}
    meta = {"format": _FORMAT, "version": _VERSION, "entities": len(row_to_trie),
            "relations": [[r, labels.get(r, r)] for r in relations],
            "splits": bounds, "files": files,
            "content_hash": content_hash or _content_hash(kg_dir)}
    write_json(target / "meta.json", meta)
    return KGStore(target)


def _triple_rows(path: Path, entities: dict[str, int], relations: dict[str, int],
                 progress: Callable[[int], None]) -> np.ndarray:
    """The ``(n, 3)`` rows of a triple file; ids not in ``entities`` / ``relations``
    are added in order of first sight (a line's head before its tail)."""
    columns = triple_columns(path)
    if columns is None:  # the line loop reads it, or names the bad line
        flat, entity_row, relation_row = array("i"), entities.setdefault, relations.setdefault
        for _, head, relation, tail in iter_triples(path, progress):
            flat.extend((entity_row(head, len(entities)),
                         relation_row(relation, len(relations)),
                         entity_row(tail, len(entities))))
        return np.frombuffer(flat, dtype=np.int32).reshape(-1, 3)
    heads, relation_column, tails = columns
    head_rows, tail_rows = _column_rows(entities, heads, tails)
    (relation_rows,) = _column_rows(relations, relation_column)
    progress(path.stat().st_size)
    return np.stack([head_rows, relation_rows, tail_rows], axis=1).astype(np.int32)


def _column_rows(known: dict[str, int], *columns: Any) -> list[np.ndarray]:
    """Rows of the strings of equal-length pyarrow ``columns``; strings not in
    ``known`` are added to it in order of first sight, reading line by line."""
    import pyarrow as pa
    import pyarrow.compute as pc

    lines, width = len(columns[0]), len(columns)
    # one line's values next to each other, so first sight follows the line order
    interleaved = np.arange(lines * width).reshape(width, lines).T.ravel()
    values = pa.concat_arrays(columns).take(pa.array(interleaved))
    del interleaved
    rows = pc.index_in(values, value_set=pa.array(list(known), values.type))
    new = rows.is_null()
    rows = rows.fill_null(-1).to_numpy().astype(np.int64)
    if pc.any(new).as_py():
        encoded = values.filter(new).dictionary_encode()  # dictionary: first-sight order
        new_rows = np.asarray(encoded.indices.to_numpy(), dtype=np.int64) + len(known)
        rows[new.to_numpy(zero_copy_only=False)] = new_rows
        for text in encoded.dictionary.to_pylist():
            known[text] = len(known)
    return list(rows.reshape(lines, width).T)


def _check_kg_dir(kg_dir: Path) -> None:
    if not kg_dir.is_dir():
        raise KGFormatError(kg_dir, None, "not a directory (expected a KG directory)")
    if not (kg_dir / "train.txt").exists():
        raise KGFormatError(kg_dir / "train.txt", None, "missing: a KG directory needs train.txt")


# ---------------------------------------------------------------------- locating
def cache_root() -> Path:
    """``ERNIE_KG_CACHE`` or the platform's user cache directory for ernie-kg."""
    configured = os.environ.get("ERNIE_KG_CACHE")
    if configured:
        return Path(configured)
    import platformdirs

    return Path(platformdirs.user_cache_dir("ernie-kg"))


def index_location(kg_dir: str | Path) -> Path:
    """Where the index of ``kg_dir`` lives: inside it when writable, else in the cache."""
    kg_dir = Path(kg_dir).resolve()
    inside = kg_dir / INDEX_DIR
    try:
        inside.mkdir(exist_ok=True)
        if os.access(inside, os.W_OK):
            return inside
    except OSError:
        pass
    digest = hashlib.sha256(str(kg_dir).encode("utf-8")).hexdigest()[:16]
    return cache_root() / "kg-index" / f"{kg_dir.name}-{digest}"


def _fingerprint(kg_dir: Path) -> dict[str, list[int]]:
    """What changes when a KG file is edited or replaced (checked before the hash)."""
    found = {}
    for name in _KG_FILES:
        path = kg_dir / name
        if path.exists():
            stat = path.stat()
            found[name] = [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]
    return found


def _content_hash(kg_dir: Path) -> str:
    digest = hashlib.sha256()
    for name in _KG_FILES:
        path = kg_dir / name
        if path.exists():
            digest.update(f"{name}\0".encode())
            with open(path, "rb") as data:
                while chunk := data.read(1 << 22):
                    digest.update(chunk)
            digest.update(b"\0")
    return digest.hexdigest()


def _source(root: Path) -> dict[str, Any]:
    path = root / "source.json"
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}


def _current(root: Path, fingerprint: dict[str, list[int]]) -> bool:
    return (_source(root).get("fingerprint") == fingerprint
            and (root / "index" / "meta.json").is_file())


def open_store(kg_dir: str | Path, progress: bool = False, rebuild: bool = False) -> KGStore:
    """The index of ``kg_dir``, built first when missing, stale or ``rebuild``."""
    kg_dir = Path(kg_dir)
    _check_kg_dir(kg_dir)
    fingerprint = _fingerprint(kg_dir)
    root = index_location(kg_dir)
    if not rebuild:  # a current index inside a read-only KG directory is used too
        for found in dict.fromkeys((kg_dir.resolve() / INDEX_DIR, root)):
            if _current(found, fingerprint):
                return KGStore(found / "index")
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / "build.lock")):
        source = _source(root)
        if not rebuild and _current(root, fingerprint):
            return KGStore(root / "index")  # another process built it meanwhile
        content = _content_hash(kg_dir)
        if not rebuild and source.get("content_hash") == content and (
                root / "index" / "meta.json").is_file():
            write_json(root / "source.json", {**source, "fingerprint": fingerprint})
            return KGStore(root / "index")  # touched, not changed
        if source.get("content_hash") and not rebuild:
            logger.warning("%s: KG files changed since they were indexed; rebuilding the "
                           "index in %s", kg_dir, root)
        for stale in root.glob("index.*"):
            shutil.rmtree(stale, ignore_errors=True)  # an earlier build that was killed
        temporary = root / f"index.tmp-{os.getpid()}"
        try:
            build_store(kg_dir, temporary, progress=progress, content_hash=content)
            if (root / "index").exists():
                retired = root / f"index.old-{os.getpid()}"
                (root / "index").rename(retired)
                shutil.rmtree(retired, ignore_errors=True)
            temporary.rename(root / "index")
        finally:
            shutil.rmtree(temporary, ignore_errors=True)
        write_json(root / "source.json", {"kg_dir": str(kg_dir.resolve()),
                                          "fingerprint": fingerprint, "content_hash": content})
    return KGStore(root / "index")
