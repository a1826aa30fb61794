"""A model's entity table when it comes from a saved table: referred to, not copied.

Why: ERNIE keeps its TransE table frozen. Copying it into every checkpoint costs 2 GB at
Wikidata's 5M x 100 floats, and as much RAM in every process that loads the model. So a
frozen table stays the :class:`~ernie_kg.kg.EntityEmbeddings` directory it came from:
the model holds it memory-mapped (:class:`MappedEntityTable`: the OS page cache shares
it between processes, a batch reads only the rows it looks up), and a checkpoint holds a
reference in ``config.entity_table``: the path (relative to the checkpoint, and
absolute), the content hash, the row count, and the vector file's size and mtime.
Loading looks for the table at the ``entity_embeddings=`` argument, the relative path,
the absolute path and under ``ERNIE_KG_CACHE``; a table whose size or mtime changed is
hashed again (as the KG store checks its files), and a missing or different table is an
error naming it. A table trained during fine-tuning is saved as the rows that changed
(:data:`DELTA_FILE`); ``include_entity_table=True`` writes a self-contained copy
(:data:`TABLE_DIR`), only the rows the model can use when the caller names them.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ernie_kg.errors import ErnieKGError, SavedFileError
from ernie_kg.io import read_json, write_json
from ernie_kg.kg.embeddings import EntityEmbeddings
from ernie_kg.kg.store import cache_root

__all__ = ["DELTA_FILE", "TABLE_DIR", "MappedEntityTable", "apply_delta", "find_table",
           "rebase_reference", "restore_trained_table", "save_delta", "table_copy",
           "table_reference"]

#: A self-contained copy of the table inside a checkpoint (``include_entity_table``).
TABLE_DIR = "entity_table"
#: The rows of a fine-tuned table that differ from the table it was built on.
DELTA_FILE = "entity_table_delta.safetensors"
_VECTORS, _META = "entity_vectors.npy", "embeddings.json"
_CACHE_DEPTH = 3  # ERNIE_KG_CACHE/<any>/<any>/embeddings.json
_MAX_META_BYTES = 16 << 20  # larger embeddings.json files (an id list inside) are skipped


class MappedEntityTable(nn.Module):
    """A frozen table ``[num_entities, dim]`` looked up by model row (row ``r`` is
    ``vectors[r - 1]``; row 0, "no entity", is zero). The vectors are a plain tensor
    attribute shared with the source's memory map: no parameter, nothing in
    ``state_dict``, and no buffer either, since DDP broadcasts buffers (into a read-only
    map, or 2 GB a step); ``.to()`` / ``.half()`` still move it (:meth:`_apply`)."""

    def __init__(self, embeddings: EntityEmbeddings | None, dim: int) -> None:
        super().__init__()
        self.embeddings = embeddings
        vectors = torch.zeros(0, dim)
        if embeddings is not None:
            with warnings.catch_warnings():  # a read-only map: the buffer is never written
                warnings.filterwarnings("ignore", message=".*not writable.*")
                vectors = torch.from_numpy(np.asarray(embeddings.vectors))
        self.vectors = vectors

    def _apply(self, fn: Any, recurse: bool = True) -> MappedEntityTable:
        """``.to()``, ``.cuda()``, ``.half()``: applied to the vectors as to a buffer."""
        self.vectors = fn(self.vectors)
        return super()._apply(fn, recurse)

    @property
    def num_entities(self) -> int:
        """Rows besides row 0."""
        return int(self.vectors.shape[0])

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        """The vectors of model rows ``rows`` (any shape), zero for row 0."""
        present = (rows > 0).unsqueeze(-1)
        picked = F.embedding((rows - 1).clamp_min(0), self.vectors)
        return picked * present.to(picked.dtype)

    def extra_repr(self) -> str:
        """Size and source, in ``print(model)``."""
        where = self.embeddings.directory if self.embeddings is not None else None
        return f"{self.num_entities} x {self.vectors.shape[1]}, from {where or 'memory'}"


# ---------------------------------------------------------------------- saving
def table_reference(embeddings: EntityEmbeddings, save_directory: Path) -> dict[str, Any]:
    """``config.entity_table`` for a table saved at ``embeddings.directory``."""
    directory = Path(embeddings.directory).resolve()
    stat = (directory / _VECTORS).stat()
    return {"path": os.path.relpath(directory, Path(save_directory).resolve()),
            "absolute": str(directory), "sha256": embeddings.content_hash(),
            "entities": len(embeddings), "dim": embeddings.dim,
            "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "delta": None}


def table_copy(embeddings: EntityEmbeddings, directory: Path,
               keep_entities: Iterable[str] | None = None) -> EntityEmbeddings:
    """Save ``embeddings`` at ``directory``, only the rows of ``keep_entities`` when
    they are fewer (rows keep their order), and return the saved table."""
    if keep_entities is not None:
        vocab = embeddings.vocab
        rows = np.unique(np.fromiter((vocab.row(e) for e in keep_entities), dtype=np.int64))
        rows = rows[rows > 0]
        if len(rows) < len(embeddings):
            embeddings = EntityEmbeddings(
                [vocab.entity_id(int(r)) for r in rows], np.asarray(embeddings.vectors[rows - 1]),
                config={**embeddings.config, "rows_of": embeddings.content_hash()},
                metrics=embeddings.metrics)
    embeddings.save(directory)
    return EntityEmbeddings.load(directory, verify=False)


def save_delta(weight: torch.Tensor, source: EntityEmbeddings, path: Path) -> int:
    """Write the rows of a trained table ``weight`` ``[N + 1, dim]`` that differ from
    ``source`` (compared in blocks: no second copy of the table); returns their count."""
    from safetensors.torch import save_file

    trained = weight.detach()[1:].float().cpu()
    changed = []
    for start in range(0, len(source), 1 << 16):
        block = torch.from_numpy(np.asarray(source.vectors[start:start + (1 << 16)]))
        differs = (trained[start:start + len(block)] != block).any(dim=1)
        changed.append(torch.nonzero(differs).flatten() + start)
    rows = torch.cat(changed) if changed else torch.zeros(0, dtype=torch.int64)
    save_file({"rows": rows.contiguous(), "vectors": trained[rows].contiguous()}, str(path))
    return int(len(rows))


def apply_delta(source: EntityEmbeddings, path: Path) -> torch.Tensor:
    """The trained table ``[N + 1, dim]`` (zero row 0): ``source`` with the saved rows."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        delta = load_file(str(path))
        rows, vectors = delta["rows"], delta["vectors"]
    except (OSError, SafetensorError, KeyError) as problem:
        raise SavedFileError(path, None, f"unreadable changed rows of the entity table "
                             f"({problem})") from None
    if rows.numel() and (int(rows.max()) >= len(source) or int(rows.min()) < 0):
        raise SavedFileError(path, None, f"rows beyond the {len(source)} of the entity table")
    table = torch.zeros(len(source) + 1, source.dim)
    table[1:] = torch.from_numpy(np.array(source.vectors, dtype=np.float32))
    table[rows + 1] = vectors.float()
    return table


def rebase_reference(checkpoint: Path) -> None:
    """After a saved checkpoint was moved (a trainer's staging directory renamed into
    place): make ``config.entity_table``'s relative path start from where it is now."""
    config_path = Path(checkpoint) / "config.json"
    config = read_json(config_path) if config_path.is_file() else None
    reference = config.get("entity_table") if isinstance(config, dict) else None
    if isinstance(reference, dict) and reference.get("absolute"):
        reference["path"] = os.path.relpath(reference["absolute"], Path(checkpoint).resolve())
        write_json(config_path, config)


# ---------------------------------------------------------------------- loading
def find_table(reference: dict[str, Any], checkpoint: Path | None,
               given: EntityEmbeddings | str | os.PathLike | None = None) -> EntityEmbeddings:
    """The table ``reference`` names: ``given`` (a table or its directory), else the
    path relative to ``checkpoint``, the absolute path, or a match under
    ``ERNIE_KG_CACHE``. A table with other contents is an error naming it, as is none."""
    expected = str(reference.get("sha256", ""))
    if isinstance(given, EntityEmbeddings):
        if given.content_hash() != expected:
            raise ErnieKGError(f"entity_embeddings= holds another table (sha256 "
                               f"{given.content_hash()[:12]}...) than the model was built on "
                               f"({expected[:12]}..., {reference.get('absolute')})")
        return given
    places = [Path(given)] if given is not None else []
    if given is None and checkpoint is not None:
        places.append(checkpoint / str(reference.get("path", "")))
    if given is None:
        places.append(Path(str(reference.get("absolute", ""))))
    places = list(dict.fromkeys(place.resolve() for place in places))
    refused: SavedFileError | None = None
    for place in places:  # a place holding another table does not hide the next one
        if (place / _META).is_file():
            try:
                return _open_checked(place, reference)
            except SavedFileError as problem:
                refused = refused or problem
    if given is None:
        found = _search_cache(expected)
        if found is not None:
            return _open_checked(found, reference)
    if refused is not None:
        raise refused
    looked = ", ".join(str(p) for p in places) + ("" if given else f", {cache_root()}")
    raise SavedFileError(places[0] if places else Path("."), None, (
        f"missing: the entity table this model refers to ({reference.get('entities')} x "
        f"{reference.get('dim')}, sha256 {expected[:12]}...); looked in {looked}. Pass "
        "entity_embeddings=DIR, put the table back, or save the model with "
        "include_entity_table=True"))


def restore_trained_table(base: nn.Module, checkpoint: Path) -> None:
    """Put back the trainable table of ``checkpoint`` (its changed rows, or its copy) into
    the base model ``base``, as the checkpoint's config.json says (see
    ``ErnieKGPreTrainedModel.restore_entity_table``)."""
    config_path = checkpoint / "config.json"
    if isinstance(base.entity_embeddings, MappedEntityTable) or not config_path.is_file():
        return  # a frozen table never changes
    reference = read_json(config_path).get("entity_table")
    if not isinstance(reference, dict):
        return  # the table was in the weights, and came back with them
    source = base._entity_source
    if source is None or source.content_hash() != reference.get("sha256"):
        source = find_table(reference, checkpoint)
    delta = checkpoint / reference["delta"] if reference.get("delta") else None
    keep = base._entity_source  # a copy inside the checkpoint must not become the source
    base.attach_entity_table(source, delta)
    if delta is None and keep is not None:
        base._entity_source = keep


def _open_checked(directory: Path, reference: dict[str, Any]) -> EntityEmbeddings:
    """Open a table; hash it again only when its vector file changed since the save."""
    meta = read_json(directory / _META, SavedFileError, what="not a saved entity table")
    expected = reference.get("sha256")
    found = meta.get("sha256") if isinstance(meta, dict) else None
    if found != expected:
        raise SavedFileError(directory / _META, None, f"another entity table (sha256 "
                             f"{str(found)[:12]}...) than the model was built on "
                             f"({str(expected)[:12]}...)")
    try:
        stat = (directory / _VECTORS).stat()
        unchanged = (stat.st_size, stat.st_mtime_ns) == (reference.get("size"),
                                                          reference.get("mtime_ns"))
    except OSError:
        unchanged = False  # EntityEmbeddings.load names the missing file
    return EntityEmbeddings.load(directory, verify=not unchanged)


def _search_cache(sha256: str) -> Path | None:
    root = cache_root()
    if not sha256 or not root.is_dir():
        return None
    for depth in range(1, _CACHE_DEPTH + 1):
        for meta in sorted(root.glob("/".join(["*"] * depth) + "/" + _META)):
            try:
                if meta.stat().st_size > _MAX_META_BYTES:
                    continue
                if read_json(meta).get("sha256") == sha256:
                    return meta.parent
            except (OSError, ValueError, AttributeError, ErnieKGError):
                continue
    return None
