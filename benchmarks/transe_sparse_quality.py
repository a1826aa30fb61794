"""Sparse embeddings + SparseAdam (``kg embed --sparse``) against dense Adam: quality and
cost.

1. Quality: filtered test MRR / Hits@10 (both sides, train and valid filtered) of the
   default settings (DEFAULT_EMBEDDING_SETTINGS: TransE, dim 128, 25 epochs, lr 5e-3,
   batch 512, 64 negatives, reciprocal relations) with ``sparse`` False and True, through
   ``train_entity_embeddings`` (PyKEEN's pipeline; the Lightning path trains the same
   model with the same optimiser), on Nations (seeds 0-2) and CoDEx-S (``--codex-seeds``).
2. Cost at 5M entities: step time and peak RSS of the production Lightning module with
   ``sparse=True`` (dim 100 and 128, 1 process, synthetic KG), measured by
   benchmarks/transe_distributed.py's own child process; the dense rows are read from
   results/transe_distributed.json (measured there, same machine).

    .venv/bin/python benchmarks/transe_sparse_quality.py [--codex-dir DIR] [--codex-seeds 0 1]

Writes results/transe_sparse_quality.{json,md}.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STEPS = 40


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--codex-dir", type=Path, default=ROOT.parent / "shared/data/codex/codex-s")
    parser.add_argument("--codex-seeds", type=int, nargs="*", default=[0])
    parser.add_argument("--nations-seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--results", type=Path, default=ROOT / "results")
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see results/fusion_overhead.md
    distributed = _load_distributed_benchmark()
    record: dict = {"machine": distributed._machine(), "load_average_before": os.getloadavg()}
    started = time.perf_counter()
    record["quality"] = {"Nations": _quality(_nations(), args.nations_seeds)}
    if args.codex_seeds:
        from ernie_kg.kg import KnowledgeGraph

        record["quality"]["CoDEx-S"] = _quality(KnowledgeGraph.load(args.codex_dir),
                                                args.codex_seeds)
    if not args.skip_scale:
        with tempfile.TemporaryDirectory() as work:
            record["scale"] = [distributed._steps(Path(work), entities=5_000_000, dim=dim,
                                                  processes=1, steps=STEPS, sparse=True)
                               for dim in (100, 128)]
        dense = json.loads((args.results / "transe_distributed.json").read_text())
        record["dense_from_transe_distributed"] = [
            s for s in dense["steps"] if s["entities"] == 5_000_000 and not s["sparse"]]
    record["load_average_after"] = os.getloadavg()
    record["benchmark_seconds"] = time.perf_counter() - started
    args.results.mkdir(exist_ok=True)
    (args.results / "transe_sparse_quality.json").write_text(json.dumps(record, indent=2) + "\n")
    (args.results / "transe_sparse_quality.md").write_text(_markdown(record))
    print(_markdown(record))


def _load_distributed_benchmark():
    spec = importlib.util.spec_from_file_location(
        "transe_distributed", ROOT / "benchmarks" / "transe_distributed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _nations():
    from pykeen.datasets import Nations

    from ernie_kg.kg import KnowledgeGraph

    dataset = Nations()

    def rows(factory):
        return [tuple(t) for t in factory.triples]

    return KnowledgeGraph.from_triples(rows(dataset.training), rows(dataset.validation),
                                       rows(dataset.testing))


def _quality(kg, seeds: list[int]) -> dict:
    """Dense and sparse runs with the default settings, one per seed, alternating."""
    from ernie_kg.kg import train_entity_embeddings

    runs: dict[str, list[dict]] = {"dense": [], "sparse": []}
    for seed in seeds:
        for name in runs:
            table = train_entity_embeddings(kg, seed=seed, progress=False,
                                            sparse=name == "sparse")
            runs[name].append({"seed": seed, **table.metrics})
            print(name, seed, {k: round(v, 4) for k, v in table.metrics.items()}, flush=True)
    summary = {name: {key: statistics.mean(run[key] for run in found)
                      for key in ("mrr", "hits_at_10", "seconds")}
               for name, found in runs.items()}
    return {"runs": runs, "mean": summary,
            "mrr_sparse_minus_dense": summary["sparse"]["mrr"] - summary["dense"]["mrr"]}


def _markdown(r: dict) -> str:
    m = r["machine"]
    load = "/".join(f"{v:.1f}" for v in r["load_average_before"])
    after = "/".join(f"{v:.1f}" for v in r["load_average_after"])
    lines = [
        "# Sparse embeddings + SparseAdam (`kg embed --sparse`) against dense Adam", "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, shared with other "
        f"jobs (1/5/15-min load before {load}, after {after}); torch {m['torch']}.", "",
        "## Quality (default settings: TransE, dim 128, 25 epochs, Adam/SparseAdam lr 5e-3, "
        "batch 512, 64 negatives, reciprocal relations; filtered test metrics, both sides)", "",
        "| dataset | seed | dense MRR | sparse MRR | dense Hits@10 | sparse Hits@10 | "
        "dense s | sparse s |", "|---|---|---|---|---|---|---|---|"]
    for name, q in r["quality"].items():
        for dense, sparse in zip(q["runs"]["dense"], q["runs"]["sparse"]):
            lines.append(
                f"| {name} | {dense['seed']} | {dense['mrr']:.4f} | {sparse['mrr']:.4f} | "
                f"{dense['hits_at_10']:.4f} | {sparse['hits_at_10']:.4f} | "
                f"{dense['seconds']:.0f} | {sparse['seconds']:.0f} |")
        d, s = q["mean"]["dense"], q["mean"]["sparse"]
        lines.append(f"| {name} | mean | {d['mrr']:.4f} | {s['mrr']:.4f} | "
                     f"{d['hits_at_10']:.4f} | {s['hits_at_10']:.4f} | {d['seconds']:.0f} | "
                     f"{s['seconds']:.0f} |")
    lines += ["", "MRR sparse - dense (mean over seeds): " + ", ".join(
        f"{name} {q['mrr_sparse_minus_dense']:+.4f}" for name, q in r["quality"].items()), ""]
    if "scale" in r:
        rows = 2 * 24_000_000 // 512
        lines += [
            "## Cost at 5M entities (synthetic KG, 1 process, batch 512, 64 negatives; "
            "median step after the first 2)", "",
            "| entities x dim | optimizer | steps | step s | peak RSS GB | projected epoch "
            "of 24M facts (48M rows, 93,750 steps) h | source |", "|---|---|---|---|---|---|---|"]
        for s in [*r["dense_from_transe_distributed"], *r["scale"]]:
            if "step_seconds" not in s:
                lines.append(f"| {s['entities']:,} x {s['dim']} | | | {s['failed']} | | | |")
                continue
            source = ("results/transe_distributed.json (earlier run)"
                      if s["optimizer"] == "Adam" else "this run")
            lines.append(f"| {s['entities']:,} x {s['dim']} | {s['optimizer']} | {s['steps']} "
                         f"| {s['step_seconds']:.3f} | {s['peak_rss_gb_per_rank'][0]:.2f} | "
                         f"{rows * s['step_seconds'] / 3600:.1f} | {source} |")
        lines.append("")
    lines += [f"Benchmark wall time: {r['benchmark_seconds'] / 60:.1f} min.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
