"""Entity embeddings trained with PyKEEN, stored as .npy (memory-mappable) + JSON.

Row convention: tensors fed to the model use row 0 for "no entity", so an entity's
model row is its index in :attr:`EntityEmbeddings.entity_ids` plus one; the table's
:class:`~ernie_kg.kg.vocab.EntityVocab` (:attr:`EntityEmbeddings.vocab`) says which.
"""

from __future__ import annotations

import hashlib
import logging
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from ernie_kg.checks import check_number, check_settings
from ernie_kg.errors import SavedFileError, SettingError, UnknownIdError
from ernie_kg.io import read_json, write_atomic, write_json
from ernie_kg.kg.graph import KnowledgeGraph
from ernie_kg.kg.sparse import make_sparse, optimizer_name
from ernie_kg.kg.vocab import NO_ENTITY, TRIE_FILE, EntityVocab, MappedEntityVocab

#: Settings tuned on CoDEx-S (benchmarks/transe_codex_s.py, results/transe_codex_s.md):
#: reciprocal (inverse) relations so every query is a tail query, softmax cross-entropy
#: over one positive and 64 corrupted tails, L2 distance, unconstrained entity norms.
#: (128 negatives gain little and cost twice the time: over 10 minutes on 2 cores.)
DEFAULT_EMBEDDING_SETTINGS: dict[str, Any] = {
    "model": "TransE",
    "dim": 128,
    "epochs": 25,
    "seed": 0,
    "scoring_fct_norm": 2,
    "training_loop": "sLCWA",
    "loss": "crossentropy",
    "learning_rate": 5e-3,
    "batch_size": 512,
    "inverse_triples": True,
    "num_negs_per_pos": 64,
    "normalize_entities": False,
    #: Sparse tables + SparseAdam (ernie_kg.kg.sparse): the setting for large tables.
    "sparse": False,
}

_VECTORS = "entity_vectors.npy"
_RELATION_VECTORS = "relation_vectors.npy"
_META = "embeddings.json"


@dataclass
class EntityEmbeddings:
    """A float32 entity matrix with its vocabulary (ids <-> rows), relation vectors and
    training config. ``entity_ids`` may be given as a list or an :class:`EntityVocab`."""

    entity_ids: list[str] | EntityVocab
    vectors: np.ndarray
    relation_ids: list[str] = field(default_factory=list)
    relation_vectors: np.ndarray | None = None
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    #: The saved directory these vectors were read from (None: built in memory).
    directory: Path | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.vocab = EntityVocab.coerce(self.entity_ids)  # duplicates raise ValueError
        self.entity_ids = self.vocab.ids
        if self.vectors.ndim != 2 or self.vectors.shape[0] != len(self.vocab):
            raise ValueError(
                f"vectors have shape {self.vectors.shape}, expected "
                f"({len(self.vocab)}, dim): one row per entity id"
            )
        if self.vectors.dtype != np.float32:
            self.vectors = self.vectors.astype(np.float32)
        self._saved_sha256: str | None = None  # of a read-only table mapped from disk

    # ----------------------------------------------------------------- lookup
    @property
    def dim(self) -> int:
        """Length of each entity vector."""
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return len(self.entity_ids)

    def __contains__(self, entity_id: object) -> bool:
        return entity_id in self.vocab

    def coverage(self, entity_ids: Iterable[str]) -> tuple[int, int]:
        """``(with a vector, all)`` of ``entity_ids``: how much of a KG the table covers."""
        covered = total = 0
        vocab = self.vocab
        for entity_id in entity_ids:
            total += 1
            covered += entity_id in vocab
        return covered, total

    def index_of(self, entity_id: str) -> int:
        """Position of ``entity_id`` in :attr:`vectors` (0-based)."""
        return self.row(entity_id) - 1

    def row(self, entity_id: str) -> int:
        """Model row of ``entity_id`` (index + 1: row 0 means "no entity"); an id
        without a vector raises :class:`UnknownIdError`."""
        row = self.vocab.row(entity_id)
        if row == NO_ENTITY:
            raise UnknownIdError(f"entity '{entity_id}' has no embedding")
        return row

    def entity_of_row(self, row: int) -> str | None:
        """Inverse of :meth:`row`; None for row 0."""
        return self.vocab.entity_id(row)

    def vector(self, entity_id: str) -> np.ndarray:
        """The vector of ``entity_id``; an id without one raises :class:`UnknownIdError`."""
        return np.asarray(self.vectors[self.index_of(entity_id)])

    def padded_table(self) -> np.ndarray:
        """``[num_entities + 1, dim]`` float32 with a zero row 0, as the model uses it."""
        table = np.zeros((len(self) + 1, self.dim), dtype=np.float32)
        table[1:] = self.vectors
        return table

    def content_hash(self) -> str:
        """SHA-256 over ids and vectors, so a saved model can check its table. A table
        memory-mapped read-only from disk answers with the hash saved beside it (checked
        by :meth:`load`), not by reading gigabytes again."""
        if self._saved_sha256 is not None and not self.vectors.flags.writeable:
            return self._saved_sha256
        digest = _ids_digest(self.vocab)
        for start in range(0, len(self), 1 << 16):
            block = self.vectors[start:start + (1 << 16)]
            digest.update(np.ascontiguousarray(block, dtype=np.float32).tobytes())
        return digest.hexdigest()

    @classmethod
    def random(cls, entity_ids: Sequence[str], dim: int = 100, seed: int = 0) -> EntityEmbeddings:
        """Unit-norm random vectors: a stand-in table for tests and ablations."""
        generator = np.random.default_rng(seed)
        vectors = generator.standard_normal((len(entity_ids), dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return cls(list(entity_ids), vectors, config={"model": "random", "dim": dim})

    # ----------------------------------------------------------------- storage
    def save(self, directory: str | Path) -> Path:
        """Write ``entity_vectors.npy``, ``relation_vectors.npy``, the id vocabulary
        (:class:`MappedEntityVocab` files) and ``embeddings.json``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        _atomic_save_npy(directory / _VECTORS, np.ascontiguousarray(self.vectors))
        if self.relation_vectors is not None:
            _atomic_save_npy(directory / _RELATION_VECTORS, self.relation_vectors)
        write_table_meta(directory, self.vocab, self.content_hash(), self.config,
                         self.metrics, self.relation_ids)
        return directory

    @classmethod
    def load(cls, directory: str | Path, mmap: bool = True, verify: bool = True
             ) -> EntityEmbeddings:
        """Read a saved table; ``mmap=True`` maps the matrix instead of reading it.

        A missing, truncated or mismatched file raises :class:`SavedFileError` naming it;
        ``verify`` also checks the stored SHA-256 (streamed from the file: ~1 s per GB,
        no copy in memory), so an edited id list or matrix is caught before use."""
        directory = Path(directory)
        meta_path = directory / _META
        meta = read_json(meta_path, what="not a saved embeddings directory")
        ids = meta.get("entity_ids") if isinstance(meta, dict) else None
        if ids == TRIE_FILE:
            ids = MappedEntityVocab.open(directory)
        elif not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise SavedFileError(meta_path, None, f"field 'entity_ids' must be {TRIE_FILE!r} "
                                 "or a list of strings (the KG ids of the matrix rows)")
        vectors = _load_matrix(directory / _VECTORS, mmap, "the entity vectors")
        if vectors.ndim != 2 or len(vectors) != len(ids):
            raise SavedFileError(directory / _VECTORS, None, f"shape {vectors.shape} does "
                                 f"not fit the {len(ids)} entity ids of {_META}")
        relation_path = directory / _RELATION_VECTORS
        relation_vectors = (_load_matrix(relation_path, False, "the relation vectors")
                            if relation_path.exists() else None)
        table = cls(entity_ids=ids, vectors=vectors,
                    relation_ids=list(meta.get("relation_ids", [])),
                    relation_vectors=relation_vectors, config=meta.get("config", {}),
                    metrics=meta.get("metrics", {}), directory=directory)
        expected = meta.get("sha256")
        if verify and expected and saved_content_hash(ids, directory / _VECTORS) != expected:
            raise SavedFileError(directory / _VECTORS, None, f"content does not match the "
                                 f"sha256 in {_META} ({expected[:12]}...): the ids or the "
                                 "vectors were altered or belong to another table")
        table._saved_sha256 = expected if isinstance(expected, str) else None
        return table


def _load_matrix(path: Path, mmap: bool, what: str) -> np.ndarray:
    if not path.is_file():
        raise SavedFileError(path, None, f"missing: {what}")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as problem:
        raise SavedFileError(path, None, f"{what}: unreadable (truncated or not a .npy "
                             f"file?): {problem}") from None


def write_table_meta(directory: Path, vocab: EntityVocab | Sequence[str], sha256: str,
                     config: dict[str, Any], metrics: dict[str, float],
                     relation_ids: Sequence[str] = ()) -> None:
    """Write the id vocabulary's files (unless ``vocab`` is mapped from ``directory``
    already) and ``embeddings.json``: the one writer of a table's metadata."""
    mapped = isinstance(vocab, MappedEntityVocab) and vocab.directory is not None
    if not (mapped and vocab.directory.resolve() == directory.resolve()):
        MappedEntityVocab.write(vocab, directory)
    write_json(directory / _META, {
        "entity_ids": TRIE_FILE, "entity_count": len(vocab), "relation_ids":
        list(relation_ids), "config": config, "metrics": metrics, "sha256": sha256})


def _ids_digest(entity_ids: Iterable[str]) -> Any:
    """A SHA-256 fed ``"\n".join(entity_ids)``, streamed in chunks."""
    digest = hashlib.sha256()
    ids = iter(entity_ids)
    for number, chunk in enumerate(iter(lambda: list(islice(ids, 100_000)), [])):
        digest.update((("\n" if number else "") + "\n".join(chunk)).encode("utf-8"))
    return digest


def saved_content_hash(entity_ids: Iterable[str], path: Path) -> str:
    """:meth:`EntityEmbeddings.content_hash` of a table saved at ``path``, reading the file's
    bytes in chunks (a float32 C-order matrix is exactly the bytes the hash covers)."""
    with open(path, "rb") as data:
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(
            np.lib.format.read_magic(data))
        _, fortran, dtype = read_header(data) if read_header else (None, True, None)
        if fortran or dtype != np.dtype("<f4"):  # another layout: hash the loaded array
            return EntityEmbeddings(entity_ids, np.load(path)).content_hash()
        digest = _ids_digest(entity_ids)
        while chunk := data.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def check_pykeen_names(config: dict[str, Any]) -> None:
    """The model, training loop and loss are names PyKEEN knows: a typo fails at once
    with the choices, not after the KG is read and PyKEEN raises a KeyError."""
    from pykeen.losses import loss_resolver
    from pykeen.models import model_resolver
    from pykeen.training import training_loop_resolver

    for setting, resolver in (("model", model_resolver),
                              ("training_loop", training_loop_resolver),
                              ("loss", loss_resolver)):
        try:
            resolver.lookup(config[setting])
        except (KeyError, ValueError, TypeError):
            choices = ", ".join(sorted(resolver.lookup_dict))
            raise SettingError(f"{setting}={config[setting]!r} is not a PyKEEN "
                               f"{setting.replace('_', ' ')}; one of: {choices}") from None


@contextmanager
def _quiet_loggers(**levels: int) -> Iterator[None]:
    """Raise the named libraries' log levels for a while: PyKEEN's INFO lines ("Creating
    inverse triples", "Evaluation took ...") would break its own progress bars."""
    loggers = {name: logging.getLogger(name) for name in levels}
    before = {name: logger.level for name, logger in loggers.items()}
    for name, logger in loggers.items():
        logger.setLevel(max(levels[name], logger.getEffectiveLevel()))
    try:
        yield
    finally:
        for name, logger in loggers.items():
            logger.setLevel(before[name])


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    write_atomic(path, lambda handle: np.save(handle, array), binary=True)


# ---------------------------------------------------------------------- training
def _triples_factories(kg: KnowledgeGraph, inverse_triples: bool):
    """PyKEEN factories sharing one id map that covers every entity of the graph."""
    from pykeen.triples import TriplesFactory

    entity_to_id = {entity_id: i for i, entity_id in enumerate(sorted(kg.entities))}
    relation_to_id = {relation_id: i for i, relation_id in enumerate(sorted(kg.relations))}

    def factory(triples: Iterable, inverse: bool = False):
        array = np.asarray(list(triples), dtype=str).reshape(-1, 3)
        return TriplesFactory.from_labeled_triples(
            array,
            entity_to_id=entity_to_id,
            relation_to_id=relation_to_id,
            create_inverse_triples=inverse,
        )

    train = factory(kg.splits["train"], inverse=inverse_triples)
    valid = factory(kg.splits["valid"]) if kg.splits.get("valid") else None
    test = factory(kg.splits["test"]) if kg.splits.get("test") else None
    return train, valid, test


def train_entity_embeddings(
    kg: KnowledgeGraph,
    model: str = DEFAULT_EMBEDDING_SETTINGS["model"],
    dim: int = DEFAULT_EMBEDDING_SETTINGS["dim"],
    epochs: int = DEFAULT_EMBEDDING_SETTINGS["epochs"],
    seed: int = DEFAULT_EMBEDDING_SETTINGS["seed"],
    evaluate: bool = True,
    progress: bool = True,
    device: str = "cpu",
    **settings: Any,
) -> EntityEmbeddings:
    """Train KG embeddings with ``pykeen.pipeline`` on ``kg``'s train split.

    When the graph has a test split and ``evaluate`` is true, filtered rank-based
    link prediction metrics (both sides; train and valid triples filtered) land in
    :attr:`EntityEmbeddings.metrics`. ``settings`` overrides the tuned defaults
    (``learning_rate``, ``batch_size``, ``training_loop``, ``loss``, ...).
    """
    from pykeen.pipeline import pipeline

    unknown = set(settings) - set(DEFAULT_EMBEDDING_SETTINGS)
    if unknown:
        raise TypeError(f"unknown embedding settings: {sorted(unknown)}")
    config = {**DEFAULT_EMBEDDING_SETTINGS, **settings, "model": model, "dim": dim,
              "epochs": epochs, "seed": seed}
    check_number("epochs", epochs, 0)  # 0: the untrained model, a reference to rank against
    check_settings({k: v for k, v in config.items() if k != "epochs"})
    check_pykeen_names(config)
    train, valid, test = _triples_factories(kg, config["inverse_triples"])
    model_kwargs: dict[str, Any] = {"embedding_dim": dim}
    if model.lower() == "transe":
        model_kwargs["scoring_fct_norm"] = config["scoring_fct_norm"]
        if not config["normalize_entities"]:
            model_kwargs["entity_constrainer"] = None
    run_evaluation = evaluate and test is not None
    # PyKEEN always evaluates; without a test split it ranks one training triple (cheap).
    testing = test if run_evaluation else _first_triples(train, 1)
    kwargs: dict[str, Any] = {
        "training": train,
        "testing": testing,
        "model": model,
        "model_kwargs": model_kwargs,
        "loss": config["loss"],
        "optimizer": optimizer_name(config),
        "optimizer_kwargs": {"lr": config["learning_rate"]},
        "training_loop": config["training_loop"],
        "training_kwargs": {
            "num_epochs": epochs,
            "batch_size": config["batch_size"],
            "use_tqdm": progress,
            "use_tqdm_batch": False,  # one bar per stage: epochs, not nested batch bars
        },
        "random_seed": seed,
        "device": device,
        "evaluation_kwargs": {"batch_size": 256, "use_tqdm": progress},
    }
    if run_evaluation and valid is not None:
        kwargs["validation"] = valid
    if config["training_loop"].lower() == "slcwa":
        sampler: dict[str, Any] = {"num_negs_per_pos": config["num_negs_per_pos"]}
        if config["inverse_triples"]:  # with reciprocal relations every query is a tail query
            sampler["corruption_scheme"] = ("tail",)
        kwargs["negative_sampler_kwargs"] = sampler
    started = time.perf_counter()
    with warnings.catch_warnings(), _quiet_loggers(pykeen=logging.WARNING,
                                                   torch_max_mem=logging.ERROR):
        warnings.filterwarnings("ignore", message=".*pin_memory.*")
        warnings.filterwarnings("ignore", message=".*memory utilization maximization.*")
        if config["sparse"]:  # PyKEEN builds the model (as pipeline would); we mark it sparse
            from pykeen.models import model_resolver

            kwargs["model"] = make_sparse(model_resolver.make(
                model, triples_factory=train, random_seed=seed, loss=kwargs.pop("loss"),
                **kwargs.pop("model_kwargs")).to(device))
        result = pipeline(**kwargs)
    seconds = time.perf_counter() - started

    trained = result.model
    id_to_entity = {i: e for e, i in train.entity_to_id.items()}
    id_to_relation = {i: r for r, i in train.relation_to_id.items()}
    entity_matrix = trained.entity_representations[0](indices=None).detach().cpu().numpy()
    relation_matrix = trained.relation_representations[0](indices=None).detach().cpu().numpy()
    num_relations = len(id_to_relation)
    if config["inverse_triples"]:  # PyKEEN keeps relation i at row 2i, its inverse at 2i + 1
        relation_matrix = relation_matrix[0::2]
    metrics: dict[str, float] = {"seconds": float(seconds)}
    if run_evaluation:
        metrics.update(
            {
                "mrr": float(result.get_metric("mrr")),
                "hits_at_1": float(result.get_metric("hits@1")),
                "hits_at_3": float(result.get_metric("hits@3")),
                "hits_at_10": float(result.get_metric("hits@10")),
            }
        )
    return EntityEmbeddings(
        entity_ids=[id_to_entity[i] for i in range(len(id_to_entity))],
        vectors=np.asarray(entity_matrix, dtype=np.float32).reshape(len(id_to_entity), -1),
        relation_ids=[id_to_relation[i] for i in range(num_relations)],
        relation_vectors=np.asarray(relation_matrix[:num_relations], dtype=np.float32),
        config=config,
        metrics=metrics,
    )


def _first_triples(factory, count: int):
    return factory.clone_and_exchange_triples(factory.mapped_triples[:count])
