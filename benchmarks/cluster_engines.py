"""Ray or Dask for ``ernie-kg link --engine``? The same sharded linking on each, measured.

Each engine runs in its own process (``--engine ray|dask``; without it, both, alternating
over ``--repeats`` rounds, since a shared machine's load drifts): the import time, the
local-cluster start (2 worker processes, 1 CPU each), the per-worker setup (a linker
loaded from the KG directory once per worker: a Ray actor each, a Dask worker plugin),
linking the input's shards on the 2 workers (each shard written to its own file), the
shutdown, and the resident memory of the cluster's processes: the idle cluster without
the workers' linkers (the engine's own daemons) and the peak of each worker. The install
size is the files each engine's distributions (and the dependencies it alone brings)
put in site-packages, from their ``RECORD`` files.

Needs both engines installed (``pip install ray distributed``).

    python benchmarks/synthetic_kg.py --entities 1000000 --sentences 200000 --out KG
    ernie-kg kg index --kg KG
    python benchmarks/cluster_engines.py --kg KG --input KG/sentences.jsonl \
        --out results/cluster_engines
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path

from ernie_kg.machine import cpu_model

ENGINE_PACKAGES = {  # what `pip install` brought into this venv for each, beyond the rest
    "ray": ["ray", "jsonschema", "jsonschema-specifications", "referencing", "rpds-py",
            "protobuf", "msgpack"],
    "dask": ["dask", "distributed", "tornado", "toolz", "partd", "locket", "zict", "tblib",
             "importlib_metadata", "zipp", "lazy-importer", "msgpack"],
}


def installed_mb(names: list[str]) -> float:
    total = 0
    for name in names:
        try:
            files = metadata.distribution(name).files or []
        except metadata.PackageNotFoundError:
            continue
        for file in files:
            located = Path(file.locate())
            total += located.stat().st_size if located.is_file() else 0
    return round(total / 2**20, 1)


def shard_ranges(path: Path, lines: int) -> list[tuple[int, int, int]]:
    """``(first byte, end byte, first line number)`` of each ``lines``-line shard."""
    ranges, number = [], 1
    with open(path, "rb") as source:
        while True:
            offset = source.tell()
            block = 0
            for _ in range(lines):
                if not source.readline():
                    break
                block += 1
            if not block:
                break
            ranges.append((offset, source.tell(), number))
            number += block
    return ranges


def link_range(linker, path: str, first: int, end: int, out: str) -> int:
    """Link lines ``[first, end)`` bytes of ``path`` into ``out``; returns the texts."""
    texts = 0
    with open(path, "rb") as source, open(out, "w", encoding="utf-8") as sink:
        source.seek(first)
        while source.tell() < end:
            line = source.readline()
            if not line.strip():
                continue
            record = json.loads(line)
            record["mentions"] = [m.to_json() for m in linker(record["text"])]
            sink.write(json.dumps(record, ensure_ascii=False) + "\n")
            texts += 1
    return texts


def load_linker(kg: str):
    from ernie_kg.linking import EntityLinker

    linker = EntityLinker.from_kg_dir(kg)
    linker.detector  # noqa: B018
    return linker


class _Sampler:
    """Peak RSS and PSS (shared pages divided among the processes mapping them) of each
    of the cluster's processes (children of this one), every 0.5 s."""

    def __init__(self) -> None:
        import psutil

        self.me = psutil.Process()
        self.peaks: dict[int, tuple[str, int]] = {}
        self.pss: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> dict[int, tuple[str, int]]:
        now = {}
        for child in self.me.children(recursive=True):
            try:
                info = child.memory_full_info()
                now[child.pid] = (" ".join(child.cmdline())[:120], info.rss)
                self.pss[child.pid] = max(self.pss.get(child.pid, 0), info.pss)
            except Exception:  # gone meanwhile
                pass
        for pid, (name, rss) in now.items():
            if rss > self.peaks.get(pid, ("", 0))[1]:
                self.peaks[pid] = (name, rss)
        return now

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.sample()

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _mb(value: int) -> float:
    return round(value / 2**20, 1)


def run_ray(kg: str, source: Path, ranges, work: Path) -> dict:
    started = time.perf_counter()
    import ray
    result = {"import_s": round(time.perf_counter() - started, 2)}
    with _Sampler() as sampler:
        started = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
        result["cluster_start_s"] = round(time.perf_counter() - started, 2)
        time.sleep(1)
        idle = sampler.sample()
        result["idle_cluster_rss_mb"] = _mb(sum(r for _, r in idle.values()))
        result["idle_processes"] = len(idle)

        @ray.remote(num_cpus=1)
        class Linker:
            def __init__(self, kg: str) -> None:
                self.linker = load_linker(kg)

            def pid(self) -> int:
                return os.getpid()

            def link(self, path: str, first: int, end: int, out: str) -> int:
                return link_range(self.linker, path, first, end, out)

        started = time.perf_counter()
        actors = [Linker.remote(kg) for _ in range(2)]
        pids = ray.get([a.pid.remote() for a in actors])
        result["worker_setup_s"] = round(time.perf_counter() - started, 2)
        started = time.perf_counter()
        pending, queue, texts = {}, list(enumerate(ranges)), 0
        free = [a for a in actors for _ in range(2)]
        while queue or pending:
            while queue and free:
                actor = free.pop()
                number, (first, end, _) = queue.pop(0)
                ref = actor.link.remote(str(source), first, end,
                                        str(work / f"ray-{number:05d}.jsonl"))
                pending[ref] = actor
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                texts += ray.get(ref)
                free.append(pending.pop(ref))
        seconds = time.perf_counter() - started
        result.update(link_s=round(seconds, 2), texts=texts,
                      sentences_per_s=round(texts / seconds, 1))
        result["worker_peak_rss_mb"] = [_mb(sampler.peaks[p][1]) for p in pids
                                        if p in sampler.peaks]
        result["worker_peak_pss_mb"] = [_mb(sampler.pss[p]) for p in pids if p in sampler.pss]
        started = time.perf_counter()
        ray.shutdown()
        result["shutdown_s"] = round(time.perf_counter() - started, 2)
    return result


def run_dask(kg: str, source: Path, ranges, work: Path) -> dict:
    started = time.perf_counter()
    from dask.distributed import Client, LocalCluster, WorkerPlugin, as_completed, get_worker
    result = {"import_s": round(time.perf_counter() - started, 2)}

    class LinkerPlugin(WorkerPlugin):
        name = "ernie-kg-linker"

        def __init__(self, kg: str) -> None:
            self.kg = kg

        def setup(self, worker) -> None:
            self.linker = load_linker(self.kg)

    def link(path: str, first: int, end: int, out: str) -> int:
        linker = get_worker().plugins["ernie-kg-linker"].linker
        return link_range(linker, path, first, end, out)

    with _Sampler() as sampler:
        started = time.perf_counter()
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
        result["cluster_start_s"] = round(time.perf_counter() - started, 2)
        time.sleep(1)
        idle = sampler.sample()
        result["idle_cluster_rss_mb"] = _mb(sum(r for _, r in idle.values()))
        result["idle_processes"] = len(idle)
        started = time.perf_counter()
        client.register_plugin(LinkerPlugin(kg))
        result["worker_setup_s"] = round(time.perf_counter() - started, 2)
        pids = list(client.run(os.getpid).values())
        started = time.perf_counter()
        futures = [client.submit(link, str(source), first, end,
                                 str(work / f"dask-{number:05d}.jsonl"), pure=False)
                   for number, (first, end, _) in enumerate(ranges)]
        texts = sum(f.result() for f in as_completed(futures))
        seconds = time.perf_counter() - started
        result.update(link_s=round(seconds, 2), texts=texts,
                      sentences_per_s=round(texts / seconds, 1))
        result["worker_peak_rss_mb"] = [_mb(sampler.peaks[p][1]) for p in pids
                                        if p in sampler.peaks]
        result["worker_peak_pss_mb"] = [_mb(sampler.pss[p]) for p in pids if p in sampler.pss]
        started = time.perf_counter()
        client.close()
        cluster.close()
        result["shutdown_s"] = round(time.perf_counter() - started, 2)
    return result


def measure(engine: str, kg: str, source: Path, shard_lines: int) -> dict:
    ranges = shard_ranges(source, shard_lines)
    with tempfile.TemporaryDirectory() as work:
        result = (run_ray if engine == "ray" else run_dask)(kg, source, ranges, Path(work))
        parts = sorted(Path(work).glob("*.jsonl"))
        result["output_bytes"] = sum(p.stat().st_size for p in parts)
    result["shards"] = len(ranges)
    result["installed_mb"] = installed_mb(ENGINE_PACKAGES[engine])
    return result


def _markdown(results: dict) -> str:
    rows = [("import (s)", "import_s"), ("local cluster start, 2 workers (s)", "cluster_start_s"),
            ("idle cluster: processes", "idle_processes"),
            ("idle cluster: RSS of its processes (MB)", "idle_cluster_rss_mb"),
            ("per-worker setup: linker loaded on both (s)", "worker_setup_s"),
            ("linking the shards on 2 workers (s)", "link_s"),
            ("sentences/s", "sentences_per_s"), ("peak RSS per worker (MB)", "worker_peak_rss_mb"),
            ("peak PSS per worker (MB)", "worker_peak_pss_mb"),
            ("shutdown (s)", "shutdown_s"), ("installed size (MB)", "installed_mb"),
            ("load average before", "load_before")]
    columns = [(engine, n) for n in range(results["repeats"]) for engine in results["order"]]
    lines = [f"# Ray or Dask for sharded linking ({results['machine']})", "",
             f"{results['texts']:,} sentences of `{results['input']}` in "
             f"{results['shards']} shards of {results['shard_lines']:,} lines, KG "
             f"`{results['kg']}`; each engine in its own process, one after the other, "
             "alternating.", "",
             "| | " + " | ".join(f"{e} #{n + 1}" for e, n in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for label, key in rows:
        lines.append(f"| {label} | " + " | ".join(
            str(results["engines"][e][n].get(key, "")) for e, n in columns) + " |")
    return "\n".join(lines) + "\n"


def machine() -> str:
    return f"{cpu_model()}, {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kg", required=True)
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--shard-lines", type=int, default=10_000)
    parser.add_argument("--engine", choices=["ray", "dask"])
    parser.add_argument("--repeats", type=int, default=2, help="rounds, alternating order")
    parser.add_argument("--out", type=Path, help="write OUT.json and OUT.md")
    args = parser.parse_args()
    if args.engine:
        print(json.dumps(measure(args.engine, args.kg, args.input, args.shard_lines)))
        return
    engines: dict[str, list[dict]] = {"ray": [], "dask": []}
    order = ["ray", "dask"]
    for _ in range(args.repeats):
        for engine in order:
            load = round(os.getloadavg()[0], 2)
            done = subprocess.run([sys.executable, __file__, "--kg", args.kg, "--input",
                                   str(args.input), "--shard-lines", str(args.shard_lines),
                                   "--engine", engine], capture_output=True, text=True)
            if done.returncode:
                print(done.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"{engine} failed")
            engines[engine].append({**json.loads(done.stdout.strip().splitlines()[-1]),
                                    "load_before": load})
            print(engine, engines[engine][-1], flush=True)
        order.reverse()
    first = engines["dask"][0]
    results = {"machine": machine(), "kg": Path(args.kg).name, "input": args.input.name,
               "texts": first["texts"], "shard_lines": args.shard_lines,
               "shards": first["shards"], "repeats": args.repeats, "order": ["ray", "dask"],
               "engines": engines}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(_markdown(results))
    print(_markdown(results))


if __name__ == "__main__":
    main()
