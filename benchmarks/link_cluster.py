"""``ernie-kg link`` on one process and on a local Dask cluster of 1 and 2 workers.

A synthetic Wikidata-shaped KG (``benchmarks/synthetic_kg.py``; 1M entities by default)
and its sentences (each names two entities of a fact), indexed once before the runs.
Each run is the CLI in its own process, one after the other, on the same input:

- ``local``: ``--engine local`` (the default, one process);
- ``dask-1``, ``dask-2``: ``--engine dask --workers N`` (a local cluster started by the
  command, one single-threaded worker process per core).

Each configuration runs ``--rounds`` times, in alternating order (the machine is shared;
the load average before each run is recorded, and ratios use each one's best run).
Reported per run: wall time (process start to exit), the linking time the command prints
(after the linker, or the cluster and its workers' linkers, are ready; for the cluster
it includes concatenating the shards), sentences/s over both, the CPU seconds of all its
processes (``getrusage``: what the work costs, whatever else runs on the machine), the
cluster's start and worker-setup times, and the peak memory of the driver and of each
worker, sampled every 0.5 s from /proc: RSS, split into anonymous pages (the heap: Python
objects, spaCy, torch; not shareable) and file-backed pages (libraries and the KG
index), and the index's own resident pages. The index is memory-mapped, so its pages
sit once in the page cache and every worker maps the same pages; they count in each
worker's RSS without being copied. The outputs must be byte-identical.

    python benchmarks/link_cluster.py --work runs/link-cluster --out results/link_cluster
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from ernie_kg.machine import cpu_model

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
CLI = [sys.executable, "-m", "ernie_kg"]
SUMMARY = re.compile(r"(\d+) texts, (\d+) mentions in ([\d.]+) s")
CLUSTER = re.compile(r"(\d+) shards \((\d+) resumed\) on (\d+) Dask workers, cluster up in "
                     r"([\d.]+) s, linkers loaded in ([\d.]+) s")


def _memory(pid: int) -> dict[str, int]:
    """RSS split into anonymous (heap: not shareable) and file-backed pages, and the
    resident pages of the memory-mapped KG index (``.ernie_kg``), from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = {k: int(v.split()[0]) * 1024 for k, v in
              (line.split(":", 1) for line in status.splitlines() if line.startswith("Rss")
               or line.startswith("VmRSS"))}
    index, inside = 0, False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if not line[0].isupper():  # a mapping's header: address range, perms, ..., path
            inside = "/.ernie_kg/" in line
        elif inside and line.startswith("Rss:"):
            index += int(line.split()[1]) * 1024
    return {"rss": fields["VmRSS"], "anon": fields.get("RssAnon", 0),
            "file": fields.get("RssFile", 0), "index": index}


class Sampler:
    """Peak memory (:func:`_memory`) of a process and of each descendant, every 0.5 s."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.peaks: dict[int, dict] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                processes = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                return
            for process in processes:
                try:
                    memory = _memory(process.pid)
                    times = process.cpu_times()
                    memory["cpu"] = times.user + times.system
                    role = ("worker" if "spawn_main" in " ".join(process.cmdline())
                            else "driver" if process.pid == self.root.pid else "other")
                except (psutil.Error, OSError, KeyError):
                    continue
                peak = self.peaks.setdefault(process.pid, {"role": role})
                for key, value in memory.items():
                    peak[key] = max(peak.get(key, 0), value)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _gb(value: float) -> float:
    return round(value / 2**30, 3)


def run(name: str, kg: Path, source: Path, work: Path, extra: list[str]) -> dict:
    output = work / f"linked-{name}.jsonl"
    output.unlink(missing_ok=True)
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = subprocess.Popen([*CLI, "link", "--kg", str(kg), "--input", str(source),
                                "--output", str(output), *extra], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "COLUMNS": "1000"})
    sampler = Sampler(process.pid)
    _, err = process.communicate()
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    sampler.stop()
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if process.returncode:
        raise SystemExit(f"{name} failed:\n{err[-3000:]}")
    texts, mentions, seconds = SUMMARY.search(err).groups()
    texts, seconds = int(texts), float(seconds)
    result = {"wall_s": round(wall, 1), "link_s": round(seconds, 1), "texts": texts,
              "mentions": int(mentions), "sentences_per_s": round(texts / seconds),
              "sentences_per_s_wall": round(texts / wall), "load_before": round(load, 2),
              "cpu_s": round(cpu, 1), "cpu_ms_per_1k": round(1e6 * cpu / texts, 1)}
    found = CLUSTER.search(err)
    if found:
        shards, _, workers, up, setup = found.groups()
        result.update(shards=int(shards), workers=int(workers), cluster_start_s=float(up),
                      worker_setup_s=float(setup))
    peaks = sampler.peaks.values()
    result["driver_peak_rss_gb"] = _gb(max(p["rss"] for p in peaks if p["role"] == "driver"))
    workers = [p for p in peaks if p["role"] == "worker"]
    for key in ("rss", "anon", "file", "index") if workers else ():
        result[f"worker_peak_{key}_gb"] = [_gb(p[key]) for p in workers]
    if workers:
        result["worker_cpu_s"] = [round(p["cpu"], 1) for p in workers]
    result["sha256"] = hashlib.sha256(output.read_bytes()).hexdigest()
    output.unlink()
    print(name, json.dumps(result), flush=True)
    return {"run": name, **result}


def machine() -> str:
    return f"{cpu_model()}, {len(os.sched_getaffinity(0))} cores"


def markdown(results: dict) -> str:
    lines = [f"# `ernie-kg link`: one process vs a local Dask cluster ({results['machine']})",
             "", f"{results['sentences']:,} synthetic sentences (2 mentions each) over a KG of "
             f"{results['entities']:,} entities; index present ({results['index_gb']} GB "
             f"memory-mapped); shards of {results['shard_lines']:,} lines; each run the "
             f"CLI in its own process, one after the other, {results['rounds']} rounds in "
             "alternating order (a shared machine: the load average before each run is "
             f"listed). Outputs byte-identical: {results['identical']}.", "",
             "| run | wall (s) | linking (s) | sentences/s (linking) | sentences/s (wall) | "
             "CPU s (all processes) | CPU ms / 1k sentences | cluster up (s) | "
             "linkers loaded (s) | driver peak RSS (GB) | worker peak RSS (GB) | "
             "of it anonymous | file-backed | KG index | load before |",
             "|---|" + "---|" * 14]
    for r in results["runs"]:
        lines.append(
            f"| {r['run']} | {r['wall_s']} | {r['link_s']} | {r['sentences_per_s']:,} | "
            f"{r['sentences_per_s_wall']:,} | {r['cpu_s']} | {r['cpu_ms_per_1k']} | "
            f"{r.get('cluster_start_s', '')} | {r.get('worker_setup_s', '')} | "
            f"{r['driver_peak_rss_gb']} | "
            + " | ".join(", ".join(map(str, r.get(f"worker_peak_{key}_gb", [])))
                         for key in ("rss", "anon", "file", "index"))
            + f" | {r['load_before']} |")
    lines += ["", "Ratios of the best run of each (sentences/s over the linking phase; over "
              "the wall time in brackets): " + ", ".join(
                  f"{k} {v['linking']}x ({v['wall']}x)" for k, v in results["ratios"].items())
              + ".", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "link-cluster")
    parser.add_argument("--entities", type=int, default=1_000_000)
    parser.add_argument("--sentences", type=int, default=400_000)
    parser.add_argument("--shard-lines", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2, help="each configuration, "
                        "in alternating order")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "link_cluster")
    args = parser.parse_args()
    from synthetic_kg import generate

    kg = args.work / f"kg-{args.entities}"
    source = kg / "sentences.jsonl"
    if not source.is_file() or sum(1 for _ in open(source, "rb")) != args.sentences:
        generate(kg, args.entities, sentences=args.sentences)
    subprocess.run([*CLI, "kg", "index", "--kg", str(kg)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shards = ["--shard-lines", str(args.shard_lines)]
    configs = {"local": [], "dask-1": ["--engine", "dask", "--workers", "1", *shards],
               "dask-2": ["--engine", "dask", "--workers", "2", *shards]}
    order, runs = list(configs), []
    for _ in range(args.rounds):
        runs += [run(name, kg, source, args.work, configs[name]) for name in order]
        order.reverse()
    best = {name: max((r for r in runs if r["run"] == name),
                      key=lambda r: r["sentences_per_s"]) for name in configs}

    def ratio(a: str, b: str) -> dict:
        return {"linking": round(best[a]["sentences_per_s"] / best[b]["sentences_per_s"], 2),
                "wall": round(best[b]["wall_s"] / best[a]["wall_s"], 2)}

    results = {
        "machine": machine(), "entities": args.entities, "sentences": args.sentences,
        "shard_lines": args.shard_lines, "rounds": args.rounds,
        "index_gb": _gb(sum(p.stat().st_size for p in (kg / ".ernie_kg").rglob("*")
                            if p.is_file())),
        "identical": len({r["sha256"] for r in runs}) == 1,
        "runs": runs,
        "ratios": {"dask-2 / local": ratio("dask-2", "local"),
                   "dask-2 / dask-1": ratio("dask-2", "dask-1"),
                   "dask-1 / local": ratio("dask-1", "local")},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
