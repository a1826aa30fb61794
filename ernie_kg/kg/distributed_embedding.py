"""KG embeddings trained on several processes or machines: PyTorch Lightning DDP through
``pykeen.contrib.lightning``, a checkpoint after every epoch, and exact resume.

PyKEEN does the KG work (model, loss, negative sampler, batch step, evaluation); this
module is the glue, and three choices in it are deliberate:

* Batches. ``SLCWALitModule`` reads rows through an ``IterableDataset`` Lightning cannot
  shard: under DDP every process would run the whole epoch. Here one permutation per
  epoch (from the seed and the epoch, so equal on every rank) is cut into global batches
  of ``batch_size`` rows and each rank takes its slice of each: DDP's averaged gradient
  is that of one ``batch_size`` batch, the one-process SGD with the work split.
  Negatives come from torch's generator seeded by (seed, epoch, rank), so a resumed
  epoch repeats what the interrupted one would have done.
* Launching. Under torchrun, srun or Lightning's variables (``LOCAL_RANK``) every process
  is one rank (Lightning's ``ddp`` strategy). Otherwise the local ranks are started here
  (``python -m ernie_kg.kg.distributed_embedding``, :mod:`ernie_kg.kg.launcher`), not by
  Lightning, whose launcher re-runs ``sys.argv`` (pytest's, a notebook's) and SIGKILLs
  the main process when a rank dies; ``ddp_spawn`` would pickle the KG to each rank and
  cannot run under torchrun. A dead rank stops the others and raises
  :class:`ErnieKGError` naming the last complete epoch, which ``resume=True`` continues.
* Checkpoints. Lightning's writer buffers the whole checkpoint in memory and stages it in
  $TMPDIR, then *copies* it over when that is another file system (a kill mid-copy
  leaves half a file). Here it is written beside the target and renamed over it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ernie_kg.checks import check_number, check_settings
from ernie_kg.errors import ErnieKGError, SettingError
from ernie_kg.io import claim_run_dir, read_json, write_atomic, write_json
from ernie_kg.kg.embeddings import (
    DEFAULT_EMBEDDING_SETTINGS,
    EntityEmbeddings,
    _quiet_loggers,
    _triples_factories,
    check_pykeen_names,
)
from ernie_kg.kg.graph import KnowledgeGraph
from ernie_kg.kg.launcher import exit_reason, run_local_ranks
from ernie_kg.kg.sparse import make_sparse, optimizer_name

#: OUT/checkpoints holds last.ckpt (after every epoch), run.json (the run's settings and
#: KG fingerprint, which a resume must match) and done.json (epochs in last.ckpt).
CHECKPOINTS = "checkpoints"
ACCELERATORS = ("cpu", "gpu", "auto")
INSTALL_HINT = "pip install 'ernie-kg[lightning]'"
_LAST, _RUN, _DONE = "last.ckpt", "run.json", "done.json"
_OUTPUTS = ("metrics.json", "embeddings.json", "entity_vectors.npy", "relation_vectors.npy")
_MODULE = "ernie_kg.kg.distributed_embedding"
#: Tests set "RANK:EPOCH": that rank SIGKILLs itself as the epoch starts (a dying worker).
KILL_HOOK = "_ERNIE_KG_KILL_RANK_AT_EPOCH"


def require_lightning() -> None:
    """Fail with the install line when pytorch-lightning is missing: it is an extra."""
    try:
        import pytorch_lightning  # noqa: F401
    except ImportError:
        raise ErnieKGError("training on several processes (or with checkpoints) needs "
                           f"pytorch-lightning: {INSTALL_HINT}") from None


def launched_externally() -> bool:
    """True under torchrun, srun or a launcher that sets ``LOCAL_RANK``: this process is
    one rank, and the launcher starts the others."""
    if "LOCAL_RANK" in os.environ:
        return True
    from lightning_fabric.plugins.environments import SLURMEnvironment

    return SLURMEnvironment.detect()


def global_rank(devices: int) -> int:
    """This process's rank from the launcher's variables (0 when launched by hand), known
    before Lightning starts: rank 0 alone writes the output directory."""
    for name in ("RANK", "SLURM_PROCID"):
        if name in os.environ:
            return int(os.environ[name])
    return (int(os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK", 0))) * devices
            + int(os.environ.get("LOCAL_RANK", 0)))


def train_entity_embeddings_distributed(
        kg_dir: str | Path, out: str | Path, *, devices: int = 1, num_nodes: int = 1,
        accelerator: str = "cpu", resume: bool = False, evaluate: bool = True,
        progress: bool = True, **settings: Any) -> EntityEmbeddings | None:
    """Train as :func:`~ernie_kg.kg.embeddings.train_entity_embeddings` does (same settings
    and defaults, same table), on ``devices`` x ``num_nodes`` DDP processes, checkpointing
    every epoch into ``out/checkpoints``; save the table and ``metrics.json`` into ``out``.

    Why a directory, not a graph: every rank reads the KG itself. ``resume`` continues
    from the last complete epoch (``epochs`` may grow; other settings must match). Returns
    the table where it was written (rank 0, or this launcher), None on the other ranks."""
    spec = _spec(kg_dir, out, devices, num_nodes, accelerator, resume, evaluate, progress,
                 settings)
    if devices * num_nodes == 1 or launched_externally():
        return _run_rank(spec)
    _supervise(spec)  # then the node of rank 0 reads what that rank wrote
    return EntityEmbeddings.load(out) if int(os.environ.get("NODE_RANK", 0)) == 0 else None


def _spec(kg_dir: str | Path, out: str | Path, devices: int, num_nodes: int,
          accelerator: str, resume: bool, evaluate: bool, progress: bool,
          settings: dict[str, Any]) -> dict[str, Any]:
    """Every check that needs no KG, before any process starts or any file is written."""
    require_lightning()
    unknown = set(settings) - set(DEFAULT_EMBEDDING_SETTINGS)
    if unknown:
        raise TypeError(f"unknown embedding settings: {sorted(unknown)}")
    for name, value in (("devices", devices), ("num_nodes", num_nodes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SettingError(f"{name} must be a whole number >= 1 (processes), not {value!r}")
    if accelerator not in ACCELERATORS:
        raise SettingError(f"accelerator must be one of {', '.join(ACCELERATORS)}, "
                           f"not {accelerator!r}")
    if accelerator == "gpu":
        import torch

        if not torch.cuda.is_available():
            raise SettingError("accelerator 'gpu': torch sees no GPU here (CUDA not "
                               "available); use --accelerator cpu")
    if num_nodes > 1 and not launched_externally() and "MASTER_ADDR" not in os.environ:
        raise SettingError(f"num_nodes={num_nodes}: run the command on every node under "
                           "torchrun or srun, or set MASTER_ADDR, MASTER_PORT and NODE_RANK "
                           "(0 on the main node) on each")
    config = {**DEFAULT_EMBEDDING_SETTINGS, **settings}
    check_number("epochs", config["epochs"], 0)
    check_settings({k: v for k, v in config.items() if k != "epochs"})
    check_pykeen_names(config)
    optimizer_name(config)  # sparse is a bool
    if config["training_loop"].lower() != "slcwa":
        raise SettingError("training_loop must be sLCWA with Lightning (its LCWA data "
                           "path is not sharded across processes here)")
    if config["batch_size"] < devices * num_nodes:
        raise SettingError(f"batch_size={config['batch_size']} is split across "
                           f"{devices * num_nodes} processes: give at least one row each")
    out = Path(out)
    if resume:
        _check_resume(out, config)
    return {"kg_dir": str(kg_dir), "out": str(out), "devices": devices,
            "num_nodes": num_nodes, "accelerator": accelerator, "resume": resume,
            "evaluate": evaluate, "progress": progress, "config": config}


def _check_resume(out: Path, config: dict[str, Any]) -> None:
    checkpoints = out / CHECKPOINTS
    if not (checkpoints / _LAST).is_file():
        raise ErnieKGError(f"{out}: nothing to resume ({CHECKPOINTS}/{_LAST} is missing): "
                           "start without --resume")
    saved = read_json(checkpoints / _RUN, what="the settings of the checkpointed run")
    before = saved.get("config", {}) if isinstance(saved, dict) else {}
    differ = [f"{k}={v!r} (checkpoint: {before.get(k)!r})" for k, v in config.items()
              if k != "epochs" and before.get(k, DEFAULT_EMBEDDING_SETTINGS.get(k)) != v]
    if differ:
        raise SettingError(f"{out}: --resume with other settings than the checkpoint's: "
                           f"{', '.join(differ)}; use the same ones (only epochs may "
                           "change), or start again with --overwrite")


def _mix(*parts: int) -> int:
    """A 63-bit seed from ``parts``: distinct streams for (seed, epoch, rank)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _fingerprint(train: Any) -> str:
    """SHA-256 of the ids and training rows: a resume must see the same KG."""
    digest = hashlib.sha256()
    for mapping in (train.entity_to_id, train.relation_to_id):
        digest.update("\n".join(mapping).encode("utf-8") + b"\0")
    digest.update(train.mapped_triples.numpy().tobytes())
    return digest.hexdigest()


def _threads(processes: int) -> int:
    """CPU threads per process: the cores this process may use, shared out."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // processes)


@functools.cache
def _classes() -> tuple[type, type, type]:
    """The Lightning-derived classes, made on first use: pytorch-lightning is optional."""
    import torch
    from lightning_fabric.plugins import TorchCheckpointIO
    from pykeen.contrib.lightning import SLCWALitModule
    from pykeen.triples.instances import BaseBatchedSLCWAInstances

    class Shards(BaseBatchedSLCWAInstances):
        """This rank's slice of every global batch of one seeded permutation per epoch."""

        def __init__(self, *, seed: int, rank: int, world: int, epoch_of: Any,
                     **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.seed, self.rank, self.world, self.epoch_of = seed, rank, world, epoch_of

        def __len__(self) -> int:
            full, rest = divmod(len(self.mapped_triples), self.batch_size)
            return full + (rest >= self.world)  # a last batch too small to split is left

        def iter_triple_ids(self) -> Any:
            epoch = int(self.epoch_of())
            order = torch.randperm(len(self.mapped_triples), generator=torch.Generator()
                                   .manual_seed(_mix(self.seed, epoch)))
            torch.manual_seed(_mix(self.seed, epoch, self.rank))  # the negative sampler's
            for batch in order.split(self.batch_size):
                if len(batch) >= self.world:
                    yield batch.tensor_split(self.world)[self.rank]

    class LitModule(SLCWALitModule):
        """PyKEEN's sLCWA Lightning module reading :class:`Shards`; no validation loop
        (the filtered evaluation runs once, after training)."""

        def __init__(self, *, seed: int, rank: int, world: int, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.seed, self.rank, self.world = seed, rank, world

        def train_dataloader(self) -> torch.utils.data.DataLoader:
            rows = Shards.from_triples_factory(
                self.dataset.training, batch_size=self.batch_size,
                negative_sampler=self.negative_sampler,
                negative_sampler_kwargs=self.negative_sampler_kwargs,
                seed=self.seed, rank=self.rank, world=self.world,
                epoch_of=lambda: self.current_epoch)
            return torch.utils.data.DataLoader(rows, batch_size=None, sampler=None)

        def val_dataloader(self) -> list:
            return []

    class AtomicCheckpointIO(TorchCheckpointIO):
        """torch.save to a temporary file beside the target, renamed over it."""

        def save_checkpoint(self, checkpoint: dict[str, Any], path: Any,
                            storage_options: Any = None) -> None:
            write_atomic(path, lambda handle: torch.save(checkpoint, handle), binary=True)
            if Path(path).name == _LAST:
                write_json(Path(path).parent / _DONE, {"epochs": checkpoint["epoch"] + 1})

    return LitModule, AtomicCheckpointIO, Shards


def _kill_hook() -> list:
    """The test hook of :data:`KILL_HOOK` as a callback (none when the variable is unset)."""
    if KILL_HOOK not in os.environ:
        return []
    import pytorch_lightning as pl

    rank, epoch = (int(part) for part in os.environ[KILL_HOOK].split(":"))

    class Kill(pl.Callback):
        def on_train_epoch_start(self, trainer: Any, module: Any) -> None:
            if trainer.global_rank == rank and trainer.current_epoch == epoch:
                os.kill(os.getpid(), signal.SIGKILL)

    return [Kill()]


def _run_rank(spec: dict[str, Any]) -> EntityEmbeddings | None:
    """One DDP rank (or the only process): fit, then rank 0 evaluates and writes."""
    import torch
    from pykeen.datasets import EagerDataset

    config, out = spec["config"], Path(spec["out"])
    devices, world = spec["devices"], spec["devices"] * spec["num_nodes"]
    checkpoints, rank = out / CHECKPOINTS, global_rank(devices)
    gpu = spec["accelerator"] == "gpu" or (spec["accelerator"] == "auto"
                                          and torch.cuda.is_available())
    if not gpu:
        torch.set_num_threads(_threads(devices))
    train, valid, test = _triples_factories(KnowledgeGraph.load(spec["kg_dir"]),
                                            config["inverse_triples"])
    fingerprint = _fingerprint(train)
    if spec["resume"]:
        saved = read_json(checkpoints / _RUN, what="the settings of the checkpointed run")
        if saved.get("kg") != fingerprint:
            raise SettingError(f"{spec['kg_dir']}: not the KG the checkpoint in {checkpoints} "
                               "was trained on (ids or training triples differ)")
    if rank == 0:
        claim_run_dir(out, resume=spec["resume"])
        for name in _OUTPUTS:  # the directory reads as finished only when this run ends
            (out / name).unlink(missing_ok=True)
        if not spec["resume"]:
            write_json(checkpoints / _RUN, {"config": config, "kg": fingerprint})
    model_kwargs: dict[str, Any] = {"embedding_dim": config["dim"], "loss": config["loss"],
                                    "random_seed": config["seed"]}
    if config["model"].lower() == "transe":
        model_kwargs["scoring_fct_norm"] = config["scoring_fct_norm"]
        if not config["normalize_entities"]:
            model_kwargs["entity_constrainer"] = None
    sampler: dict[str, Any] = {"num_negs_per_pos": config["num_negs_per_pos"]}
    if config["inverse_triples"]:
        sampler["corruption_scheme"] = ("tail",)
    torch.manual_seed(config["seed"])
    module = _classes()[0](
        dataset=EagerDataset(train, test or train, valid), model=config["model"],
        model_kwargs=model_kwargs, batch_size=config["batch_size"],  # global
        learning_rate=config["learning_rate"], optimizer=optimizer_name(config),
        negative_sampler_kwargs=sampler, seed=config["seed"], rank=rank, world=world)
    if config["sparse"]:
        make_sparse(module.model)
    started = time.perf_counter()
    with warnings.catch_warnings(), _quiet_loggers(
            pykeen=logging.WARNING, torch_max_mem=logging.ERROR,
            pytorch_lightning=logging.WARNING, lightning_fabric=logging.WARNING):
        warnings.filterwarnings("ignore", message=".*(num_workers|does not have many workers|"
                                "pin_memory|memory utilization|max_epochs|LeafSpec|is not empty).*")
        trainer = _trainer(spec, gpu, checkpoints)
        trainer.fit(module, ckpt_path=str(checkpoints / _LAST) if spec["resume"] else None)
        if rank != 0:
            return None
        metrics = {"seconds": 0.0, "train_seconds": time.perf_counter() - started}
        if spec["evaluate"] and test is not None:
            metrics.update(_evaluate(module.model, train, valid, test, spec["progress"]))
    metrics["seconds"] = float(time.perf_counter() - started)
    table = _table(module.model, train, {**config, "processes": world}, metrics)
    table.save(out)
    write_json(out / "metrics.json", {**metrics, "config": table.config})
    return table


def _trainer(spec: dict[str, Any], gpu: bool, checkpoints: Path) -> Any:
    """Lightning's Trainer: DDP (gloo on CPU, nccl on GPU) when there are several
    processes, one ``last.ckpt`` replaced after every epoch, no logger, no validation."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.strategies import DDPStrategy

    world = spec["devices"] * spec["num_nodes"]
    return pl.Trainer(
        accelerator="gpu" if gpu else "cpu", devices=spec["devices"],
        num_nodes=spec["num_nodes"], max_epochs=spec["config"]["epochs"],
        strategy=DDPStrategy(process_group_backend="nccl" if gpu else "gloo")
        if world > 1 else "auto",
        logger=False, enable_model_summary=False, enable_progress_bar=spec["progress"],
        limit_val_batches=0, num_sanity_val_steps=0, use_distributed_sampler=False,
        default_root_dir=checkpoints, plugins=[_classes()[1]()],
        callbacks=[ModelCheckpoint(  # save_top_k=1 named "last": one file, replaced
            dirpath=checkpoints, filename=Path(_LAST).stem, save_top_k=1, every_n_epochs=1,
            enable_version_counter=False, save_on_train_epoch_end=True), *_kill_hook()])


def _evaluate(model: Any, train: Any, valid: Any, test: Any, progress: bool
              ) -> dict[str, float]:
    """Filtered rank-based link prediction, both sides, train and valid filtered: the
    numbers ``pykeen.pipeline`` reports for the one-process path."""
    from pykeen.evaluation import RankBasedEvaluator

    filters = [train.mapped_triples] + ([valid.mapped_triples] if valid is not None else [])
    results = RankBasedEvaluator(filtered=True).evaluate(
        model, test.mapped_triples, additional_filter_triples=filters, batch_size=256,
        use_tqdm=progress)
    return {name: float(results.get_metric(key)) for name, key in (
        ("mrr", "mrr"), ("hits_at_1", "hits@1"), ("hits_at_3", "hits@3"),
        ("hits_at_10", "hits@10"))}


def _table(model: Any, train: Any, config: dict[str, Any], metrics: dict[str, float]
           ) -> EntityEmbeddings:
    """The trained model as :class:`EntityEmbeddings`, laid out as the 1-process path's."""
    id_to_entity = {i: e for e, i in train.entity_to_id.items()}
    relation_ids = [r for r, _ in sorted(train.relation_to_id.items(), key=lambda kv: kv[1])]
    entities = model.entity_representations[0](indices=None).detach().cpu().numpy()
    relations = model.relation_representations[0](indices=None).detach().cpu().numpy()
    if config["inverse_triples"]:  # PyKEEN keeps relation i at row 2i, its inverse at 2i + 1
        relations = relations[0::2]
    return EntityEmbeddings(
        entity_ids=[id_to_entity[i] for i in range(len(id_to_entity))],
        vectors=np.asarray(entities, dtype=np.float32).reshape(len(id_to_entity), -1),
        relation_ids=relation_ids,
        relation_vectors=np.asarray(relations[:len(relation_ids)], dtype=np.float32),
        config=config, metrics=metrics)


def _supervise(spec: dict[str, Any]) -> None:
    """Run this machine's ranks; when one fails, raise saying what is left to resume."""
    devices, out = spec["devices"], Path(spec["out"])
    failed = run_local_ranks([sys.executable, "-m", _MODULE, json.dumps(spec)], devices,
                             {"OMP_NUM_THREADS": str(_threads(devices))})
    if failed is None:
        return
    rank = int(os.environ.get("NODE_RANK", 0)) * devices + failed[0]
    what = f"training process {rank} of {devices * spec['num_nodes']}"
    if failed[1] == 2:  # it printed the user error (a setting, the KG) itself
        raise ErnieKGError(f"{what} stopped on the error above; the others were stopped")
    done, checkpoints = out / CHECKPOINTS / _DONE, out / CHECKPOINTS
    where = (f"the checkpoint after epoch {read_json(done).get('epochs')} is in "
             f"{checkpoints}: continue with --resume"
             if done.is_file() and (checkpoints / _LAST).is_file()
             else "no epoch was finished: start again with --overwrite")
    raise ErnieKGError(f"{what} {exit_reason(failed[1])}; the others were stopped. {out} "
                       f"holds no finished embeddings; {where}")


def _main(argv: list[str]) -> int:
    """A rank started by :func:`_supervise`: a user error is one line and exit code 2."""
    spec = json.loads(argv[0])
    try:
        _run_rank(spec)
    except ErnieKGError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:  # a peer died: gloo / NCCL say so; one line, not a trace
        if not any(word in str(error) for word in ("gloo", "NCCL", "Connection")):
            raise
        print(f"rank {global_rank(spec['devices'])}: lost another process: "
              f"{str(error).splitlines()[0][:200]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
