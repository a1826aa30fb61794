"""TransE beyond one process: 1 vs 2 DDP processes, one epoch of a 24M-fact KG projected,
and the peak RSS of a 5M-entity table trained with Adam.

Three parts, in one run so the ratios share the machine's load:

1. Throughput on CoDEx-S through the CLI exactly as a user runs it
   (``ernie-kg kg embed --lightning`` and ``--devices 2``, default settings, 3 epochs):
   training rows per second (a row is a triple or its inverse: the default trains
   reciprocal relations, so an epoch is twice the facts).
2. Step time against the table's size: 8 to 40 batches (default settings: batch 512,
   64 negatives, dim 128, Adam) of the same Lightning module on synthetic KGs of 15k, 1M
   and 5M entities, 1 and 2 processes (2 only where two copies of the table fit in RAM),
   each in a fresh process so ``ru_maxrss`` is that run's peak. (A few hundred batches
   at 5M would take an hour here: 8 show the step time, and the peak comes at step 2.)
   The per-step cost grows with the whole table, not the batch: PyKEEN's
   ``nn.Embedding`` is dense, so every step writes a full-table gradient and Adam
   updates every row (and DDP all-reduces the full gradient). A straight line through
   the 15k and 1M points projects 5M.
3. The same at 5M entities with ``sparse=True`` embeddings and ``SparseAdam``: the fix
   this points at, shipped as ``kg embed --sparse`` (benchmarks/transe_sparse_quality.py
   checks its quality and measures it at dim 100 and 128).

    .venv/bin/python benchmarks/transe_distributed.py [--codex-dir ../shared/data/codex/codex-s]

Writes results/transe_distributed.{json,md}; takes about 10 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ernie_kg.machine import cpu_model

ROOT = Path(__file__).resolve().parent.parent
FACTS = 24_000_000  # the KG the projection is for; rows = 2 x facts (reciprocal relations)
BATCH, NEGATIVES, WARMUP = 512, 64, 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--codex-dir", type=Path, default=ROOT.parent / "shared/data/codex/codex-s")
    parser.add_argument("--results", type=Path, default=ROOT / "results")
    parser.add_argument("--child", type=str, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return _child(json.loads(args.child))
    record: dict = {"machine": _machine(), "load_average_before": os.getloadavg()}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        record["codex_s"] = _codex(args.codex_dir, Path(work))
        record["steps"] = [_steps(Path(work), **case) for case in (
            {"entities": 15_000, "dim": 128, "processes": 1, "steps": 40},
            {"entities": 15_000, "dim": 128, "processes": 2, "steps": 40},
            {"entities": 1_000_000, "dim": 128, "processes": 1, "steps": 12},
            {"entities": 1_000_000, "dim": 128, "processes": 2, "steps": 12},
            {"entities": 5_000_000, "dim": 100, "processes": 1, "steps": 8},
            {"entities": 5_000_000, "dim": 128, "processes": 1, "steps": 8},
            {"entities": 5_000_000, "dim": 128, "processes": 1, "steps": 40, "sparse": True},
        )]
    record["projection"] = _projection(record["steps"])
    record["load_average_after"] = os.getloadavg()
    record["benchmark_seconds"] = time.perf_counter() - started
    args.results.mkdir(exist_ok=True)
    (args.results / "transe_distributed.json").write_text(json.dumps(record, indent=2) + "\n")
    (args.results / "transe_distributed.md").write_text(_markdown(record))
    print(_markdown(record))


# ------------------------------------------------------------------ part 1: the CLI
def _codex(codex_dir: Path, work: Path, epochs: int = 3) -> dict:
    """1 and 2 processes on CoDEx-S through the CLI; rows/s from ``train_seconds``."""
    if not (codex_dir / "train.txt").exists():
        sys.exit(f"CoDEx-S not found at {codex_dir} (pass --codex-dir)")
    runs = {}
    for processes in (1, 2):
        out = work / f"codex-{processes}"
        command = [sys.executable, "-m", "ernie_kg", "kg", "embed", "--triples-dir",
                   str(codex_dir), "--out", str(out), "--epochs", str(epochs),
                   "--lightning", "--devices", str(processes)]
        began = time.perf_counter()
        subprocess.run(command, check=True, env=_environment(), stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        metrics = json.loads((out / "metrics.json").read_text())
        facts = sum(1 for line in open(codex_dir / "train.txt", encoding="utf-8") if line.strip())
        runs[processes] = {
            "wall_seconds": time.perf_counter() - began,
            "train_seconds": metrics["train_seconds"],
            "rows_per_second": 2 * facts * epochs / metrics["train_seconds"],
            "mrr": metrics["mrr"], "hits_at_10": metrics["hits_at_10"]}
    return {"epochs": epochs, "train_facts": facts, "rows_per_epoch": 2 * facts,
            "command": "ernie-kg kg embed --triples-dir codex-s --out OUT --epochs 3 "
                       "--lightning [--devices 2]",
            "one_process": runs[1], "two_processes": runs[2],
            "speedup": runs[2]["rows_per_second"] / runs[1]["rows_per_second"]}


# --------------------------------------------------------- parts 2 and 3: the table
def _steps(work: Path, entities: int, dim: int, processes: int, steps: int,
           sparse: bool = False) -> dict:
    """``steps`` batches of the Lightning module in fresh processes; per-rank JSON back.
    Skipped when the machine's free memory cannot hold ~6.5 tables per process (weights,
    gradient, Adam's two moments and its two full-size temporaries) and 2 GB more."""
    from ernie_kg.kg.launcher import run_local_ranks

    spec = {"entities": entities, "dim": dim, "processes": processes, "sparse": sparse,
            "steps": steps, "out": str(work / f"steps-{entities}-{dim}-{processes}")}
    table_gb = entities * dim * 4 / 1e9
    if processes * (6.5 * table_gb + 1) + 1 > _available_gb():
        return {**spec, "out": None, "failed": f"skipped: {_available_gb():.1f} GB free"}
    command = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    failed = run_local_ranks(command, processes, _environment())
    if failed is not None:
        return {**spec, "failed": f"rank {failed[0]} exit {failed[1]}", "out": None}
    ranks = [json.loads(Path(f"{spec['out']}.{rank}.json").read_text())
             for rank in range(processes)]
    step = float(np.median([r["step_seconds"] for r in ranks]))
    return {**{k: v for k, v in spec.items() if k != "out"},
            "step_seconds": step, "rows_per_second": BATCH / step,
            "peak_rss_gb_per_rank": [r["peak_rss_gb"] for r in ranks],
            "rss_before_model_gb": ranks[0]["rss_before_model_gb"],
            "rss_model_gb": ranks[0]["rss_model_gb"],
            "triples": ranks[0]["triples"], "table_gb": table_gb,
            "arithmetic_gb": 3 * table_gb, "optimizer": ranks[0]["optimizer"]}


def _child(spec: dict) -> None:
    """One rank of :func:`_steps`: synthetic triples, the production LitModule, a
    Trainer stopped after ``steps`` batches; writes its step time and peak RSS."""
    import pytorch_lightning as pl
    import torch
    from pykeen.datasets import EagerDataset
    from pykeen.triples import CoreTriplesFactory
    from pytorch_lightning.strategies import DDPStrategy

    from ernie_kg.kg import distributed_embedding as ddp
    from ernie_kg.kg.embeddings import DEFAULT_EMBEDDING_SETTINGS as D
    from ernie_kg.kg.sparse import make_sparse, optimizer_name

    world, rank = spec["processes"], int(os.environ.get("LOCAL_RANK", 0))
    torch.set_num_threads(ddp._threads(world))
    entities, relations = spec["entities"], 1000
    triples = min(4 * entities, 5_000_000)  # rows enough for the steps, cheap to make
    generator = np.random.default_rng(0)  # the same KG on every rank
    mapped = torch.as_tensor(np.stack([generator.integers(0, entities, triples),
                                       generator.integers(0, relations, triples),
                                       generator.integers(0, entities, triples)], axis=1))
    train = CoreTriplesFactory.create(mapped, num_entities=entities, num_relations=relations,
                                      create_inverse_triples=True)
    before_model = _rss_gb()
    optimizer = optimizer_name({"sparse": spec["sparse"]})
    module = ddp._classes()[0](
        dataset=EagerDataset(train, train.clone_and_exchange_triples(mapped[:8])),
        model="TransE", model_kwargs={"embedding_dim": spec["dim"], "loss": D["loss"],
                                      "scoring_fct_norm": D["scoring_fct_norm"],
                                      "entity_constrainer": None, "random_seed": 0},
        batch_size=BATCH, learning_rate=D["learning_rate"], optimizer=optimizer,
        negative_sampler_kwargs={"num_negs_per_pos": NEGATIVES, "corruption_scheme": ("tail",)},
        seed=0, rank=rank, world=world)
    if spec["sparse"]:  # as kg embed --sparse does
        make_sparse(module.model)
    model_rss = _rss_gb()
    ticks: list[float] = []

    class Clock(pl.Callback):
        def on_train_batch_end(self, *args) -> None:
            ticks.append(time.perf_counter())

    trainer = pl.Trainer(
        accelerator="cpu", devices=world, max_steps=spec["steps"], logger=False,
        strategy=DDPStrategy(process_group_backend="gloo") if world > 1 else "auto",
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, num_sanity_val_steps=0, use_distributed_sampler=False,
        callbacks=[Clock()])
    trainer.fit(module)
    Path(f"{spec['out']}.{rank}.json").write_text(json.dumps({
        "step_seconds": float(np.median(np.diff(ticks[WARMUP:]))),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9,
        "rss_before_model_gb": before_model, "rss_model_gb": model_rss,
        "triples": triples, "optimizer": optimizer}))


def _available_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024 / 1e9
    return float("inf")


def _rss_gb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / 1e9
    return float("nan")


# ------------------------------------------------------------------ projection
def _projection(steps: list[dict]) -> dict:
    """One epoch of FACTS facts (2 x FACTS rows, BATCH rows a step): measured at 5M
    entities for 1 process; for 2, the line through the 15k and 1M step times."""
    by = {(s["entities"], s["dim"], s["processes"], s["sparse"]): s for s in steps
          if "step_seconds" in s}
    rows = 2 * FACTS
    result = {"facts": FACTS, "rows": rows, "steps_per_epoch": rows // BATCH,
              "entities": 5_000_000, "dim": 128}
    for processes in (1, 2):
        small, large = by.get((15_000, 128, processes, False)), by.get(
            (1_000_000, 128, processes, False))
        if small and large:
            slope = (large["step_seconds"] - small["step_seconds"]) / (1_000_000 - 15_000)
            step = small["step_seconds"] + slope * (5_000_000 - 15_000)
            result[f"step_seconds_line_{processes}"] = step
            result[f"epoch_hours_line_{processes}"] = rows // BATCH * step / 3600
    measured = by.get((5_000_000, 128, 1, False))
    if measured:
        result["epoch_hours_measured_1"] = rows // BATCH * measured["step_seconds"] / 3600
    sparse = by.get((5_000_000, 128, 1, True))
    if sparse:
        result["epoch_hours_sparse_adam_1"] = rows // BATCH * sparse["step_seconds"] / 3600
    return result


# ------------------------------------------------------------------ machine, output
def _environment() -> dict[str, str]:
    """OpenMP threads sleep while they wait (a spinning thread on a shared 2-core machine
    waits for a descheduled partner; see results/fusion_overhead.md)."""
    return {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}


def _machine() -> dict:
    model = cpu_model()
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    import pytorch_lightning
    import torch

    return {"cpu": model, "cores": len(os.sched_getaffinity(0)), "ram_gib": round(memory, 1),
            "torch": torch.__version__, "pytorch_lightning": pytorch_lightning.__version__}


def _markdown(r: dict) -> str:
    m, c, p = r["machine"], r["codex_s"], r["projection"]
    one, two = c["one_process"], c["two_processes"]
    lines = [
        "# TransE beyond one process (PyTorch Lightning DDP through pykeen.contrib.lightning)",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM; torch {m['torch']}, "
        f"pytorch-lightning {m['pytorch_lightning']}; 1/5/15-min load before "
        f"{_load(r['load_average_before'])}, after {_load(r['load_average_after'])} (the "
        "machine was shared: compare the ratios, measured in one run, more than the "
        "absolute numbers). A row is a fact or its inverse: the defaults train reciprocal "
        "relations, so an epoch has twice as many rows as the KG has facts.",
        "",
        f"## CoDEx-S through the CLI ({c['train_facts']} facts, {c['rows_per_epoch']} rows "
        f"an epoch, default settings, {c['epochs']} epochs)",
        "",
        "| processes | train s | rows/s | MRR | Hits@10 |", "|---|---|---|---|---|",
        f"| 1 | {one['train_seconds']:.1f} | {one['rows_per_second']:.0f} | {one['mrr']:.3f} "
        f"| {one['hits_at_10']:.3f} |",
        f"| 2 (DDP, gloo) | {two['train_seconds']:.1f} | {two['rows_per_second']:.0f} | "
        f"{two['mrr']:.3f} | {two['hits_at_10']:.3f} |",
        "",
        f"2 processes / 1 process: **{c['speedup']:.2f}x** rows/s (same global batch of 512, "
        "so the same SGD; 3 epochs are too few for a final MRR).",
        "",
        f"## Step time and peak RSS against the table (batches of {BATCH}, {NEGATIVES} "
        f"negatives, dim as given; median step after the first {WARMUP})",
        "",
        "| entities x dim | processes | optimizer | steps | step s | rows/s | peak RSS GB "
        "/ rank | before model GB | training's own GB (x table) | 3 x table GB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in r["steps"]:
        if "step_seconds" not in s:
            lines.append(f"| {s['entities']:,} x {s['dim']} | {s['processes']} | | | "
                         f"{s['failed']} | | | | | |")
            continue
        own = s["peak_rss_gb_per_rank"][0] - s["rss_before_model_gb"]
        lines.append(
            f"| {s['entities']:,} x {s['dim']} | {s['processes']} | {s['optimizer']} | "
            f"{s['steps']} | {s['step_seconds']:.3f} | {s['rows_per_second']:.0f} | "
            f"{' / '.join(f'{g:.2f}' for g in s['peak_rss_gb_per_rank'])} | "
            f"{s['rss_before_model_gb']:.2f} | {own:.2f} ({own / s['table_gb']:.1f}) | "
            f"{s['arithmetic_gb']:.2f} |")
    lines += [
        "",
        f"## One epoch of a {FACTS / 1e6:.0f}M-fact KG ({p['rows'] / 1e6:.0f}M rows with "
        f"inverses, {p['steps_per_epoch']:,} steps of {BATCH}), 5M entities x dim 128",
        "",
    ]
    lines.append(f"- compute-bound floor, at CoDEx-S's rows/s (a table small enough not to "
                 f"matter): 1 process **{p['rows'] / one['rows_per_second'] / 3600:.1f} h**, "
                 f"2 processes {p['rows'] / two['rows_per_second'] / 3600:.1f} h")
    for key, label in (("epoch_hours_measured_1", "1 process, step time measured at 5M"),
                       ("epoch_hours_line_1", "1 process, 15k-1M line projected to 5M"),
                       ("epoch_hours_line_2", "2 processes, 15k-1M line projected to 5M"),
                       ("epoch_hours_sparse_adam_1", "1 process, sparse embeddings + "
                                                     "SparseAdam (measured at 5M)")):
        if key in p:
            lines.append(f"- {label}: **{p[key]:.1f} h**")
    dense = {(s["dim"], s["optimizer"]): s for s in r["steps"]
             if s["entities"] == 5_000_000 and "step_seconds" in s}
    if (128, "Adam") in dense and (128, "SparseAdam") in dense:
        adam, sparse = dense[(128, "Adam")], dense[(128, "SparseAdam")]
        lines += ["", "Why: PyKEEN's `nn.Embedding` is dense, so each step makes a gradient "
                  "the size of the whole table and Adam then reads and writes every row of "
                  "weights, m and v, however few rows the batch touched. The step time grows "
                  "with the table, and DDP all-reduces that whole gradient every step (1M "
                  "entities: 2 processes are slower than 1). Peak memory is about 6 tables "
                  "above the baseline, not 3: weights, m and v, plus the dense gradient and "
                  "two full-size temporaries of torch's CPU Adam (sqrt(v), then its division "
                  "by the bias correction). The fix, shipped since as `kg embed --sparse` "
                  "(lazy Adam, another optimiser; its quality and cost are in "
                  "results/transe_sparse_quality.md): sparse embeddings with `SparseAdam`, "
                  f"{adam['step_seconds'] / sparse['step_seconds']:.0f}x faster a step and "
                  f"{sparse['peak_rss_gb_per_rank'][0]:.1f} GB instead of "
                  f"{adam['peak_rss_gb_per_rank'][0]:.1f} GB at 5M x 128. On 2 cores, 2 "
                  "processes gain nothing even on a small table: one process already runs "
                  "its ops on both cores, and DDP adds an all-reduce a step; the processes "
                  "pay where each has its own cores, machine or GPU."]
    lines += ["", f"Benchmark wall time: {r['benchmark_seconds'] / 60:.1f} min.", ""]
    return "\n".join(lines)


def _load(values) -> str:
    return "/".join(f"{v:.1f}" for v in values)


if __name__ == "__main__":
    main()
