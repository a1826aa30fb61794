"""TransE on CoDEx-S with the default settings of `ernie-kg kg embed`.

Runs the CLI exactly as a user would, times the whole command (wall clock), and writes
results/transe_codex_s.{json,md}. The published CoDEx-S TransE figures are
MRR 0.354 and Hits@10 0.634 (Safavi & Koutra, 2020).

    python benchmarks/transe_codex_s.py [--codex-dir ../shared/data/codex/codex-s]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ernie_kg.machine import cpu_model

ROOT = Path(__file__).resolve().parent.parent
PUBLISHED = {"mrr": 0.354, "hits_at_10": 0.634}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--codex-dir", type=Path, default=ROOT.parent / "shared/data/codex/codex-s")
    parser.add_argument("--results", type=Path, default=ROOT / "results")
    args = parser.parse_args()
    if not (args.codex_dir / "train.txt").exists():
        sys.exit(f"CoDEx-S not found at {args.codex_dir} (pass --codex-dir)")

    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "ernie_kg", "kg", "embed",
                   "--triples-dir", str(args.codex_dir), "--out", out]
        load_before = os.getloadavg()
        started = time.perf_counter()
        subprocess.run(command, check=True, env=_environment())
        wall = time.perf_counter() - started
        metrics = json.loads((Path(out) / "metrics.json").read_text())

    record = {
        "dataset": "CoDEx-S (test, filtered, both sides)",
        "command": "ernie-kg kg embed --triples-dir codex-s --out OUT (defaults)",
        "mrr": metrics["mrr"],
        "hits_at_1": metrics["hits_at_1"],
        "hits_at_3": metrics["hits_at_3"],
        "hits_at_10": metrics["hits_at_10"],
        "train_and_eval_seconds": metrics["seconds"],
        "wall_seconds": wall,
        "published": PUBLISHED,
        "mrr_vs_published": metrics["mrr"] / PUBLISHED["mrr"],
        "config": metrics["config"],
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "torch_threads": _torch_threads(), "cpu": cpu_model(),
                    "omp_wait_policy": _environment()["OMP_WAIT_POLICY"],
                    "load_average_before": load_before, "load_average_after": os.getloadavg()},
    }
    args.results.mkdir(exist_ok=True)
    (args.results / "transe_codex_s.json").write_text(json.dumps(record, indent=2) + "\n")
    (args.results / "transe_codex_s.md").write_text(_markdown(record))
    print(json.dumps({k: record[k] for k in ("mrr", "hits_at_10", "wall_seconds")}))


def _environment() -> dict[str, str]:
    """OpenMP threads sleep instead of spinning while they wait: on a shared 2-core
    machine a spinning thread waits for a descheduled partner and every op slows
    several-fold (see results/fusion_overhead.md). Set OMP_WAIT_POLICY to override."""
    return {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _markdown(r: dict) -> str:
    c = r["config"]
    return (
        "# TransE on CoDEx-S (PyKEEN, `ernie-kg kg embed` defaults)\n\n"
        "| | MRR | Hits@1 | Hits@3 | Hits@10 | wall time |\n|---|---|---|---|---|---|\n"
        f"| ernie-kg | {r['mrr']:.3f} | {r['hits_at_1']:.3f} | {r['hits_at_3']:.3f} | "
        f"{r['hits_at_10']:.3f} | {r['wall_seconds']:.0f} s |\n"
        f"| CoDEx paper | {PUBLISHED['mrr']:.3f} | | | {PUBLISHED['hits_at_10']:.3f} | |\n\n"
        f"Settings: {c['model']}, dim {c['dim']}, {c['epochs']} epochs, "
        f"{c['training_loop']} with {c['loss']} loss over {c['num_negs_per_pos']} corrupted "
        f"tails per positive, reciprocal relations: {c['inverse_triples']}, "
        f"L{c['scoring_fct_norm']} distance, "
        f"Adam lr {c['learning_rate']}, batch {c['batch_size']}, seed {c['seed']}.\n\n"
        f"Machine: {r['machine']['cpu']}, {r['machine']['platform']}, "
        f"{r['machine']['cpus']} CPUs, torch threads {r['machine']['torch_threads']}, "
        f"OMP_WAIT_POLICY={r['machine']['omp_wait_policy']}; "
        f"1/5/15-min load before {_load(r['machine']['load_average_before'])}, after "
        f"{_load(r['machine']['load_average_after'])} (other jobs shared the CPU). "
        "Test metrics are filtered with train and valid triples, both sides, "
        "PyKEEN's RankBasedEvaluator (realistic ranks).\n"
    )


def _load(values) -> str:
    return "/".join(f"{v:.1f}" for v in values)


if __name__ == "__main__":
    main()
