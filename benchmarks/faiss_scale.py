"""faiss at Wikidata scale: `EntityIndex` kinds on a 5M x 100 entity table.

The table is a synthetic mixture of 20,000 Gaussian clusters (KG embeddings cluster by
type; uniform noise would be the worst case for any quantiser), written once as an
`EntityEmbeddings` directory under ``--work``. Stages, each in its own process so peak
RSS is its own (``resource.getrusage``):

- ``build``: ``EntityIndex(kind="ivfpq")`` (the large-table default) on the memory-mapped
  table, then saved; wall time and peak RSS.
- ``query``: the saved index loaded memory-mapped, 1,000 held-out queries (table rows plus
  noise) one at a time: ms per query, recall@10 against exact search (faiss flat over the
  whole table, batched), RSS of the index after the queries.
- ``hnsw``: ``kind="hnsw"`` built on the first ``--hnsw-size`` rows (its 5M build takes
  hours on 2 cores: the time is projected linearly in N log N and marked as projected),
  with its recall@10 at that size.

    python benchmarks/faiss_scale.py --size 5000000
Results: results/faiss_scale.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ernie_kg.machine import cpu_model

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DIM, CLUSTERS, QUERIES, K = 100, 20_000, 1000, 10


def _machine() -> str:
    return f"{cpu_model()}, {os.cpu_count()} cores"


def _rss_gb(field: str = "VmHWM") -> float:
    """Peak (``VmHWM``) or current (``VmRSS``) RSS of this process; not getrusage, whose
    ru_maxrss survives exec and would report the parent's peak."""
    status = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s*(\d+) kB", status)[1]) / 2**20


def make_table(directory: Path, size: int) -> None:
    """Write the synthetic table (chunked: never more than one chunk in memory)."""
    from ernie_kg.kg import EntityEmbeddings

    if (directory / "embeddings.json").is_file():
        return
    generator = np.random.default_rng(0)
    centers = generator.standard_normal((CLUSTERS, DIM)).astype(np.float32)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "entity_vectors.npy"
    table = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(size, DIM))
    for start in range(0, size, 500_000):
        count = min(500_000, size - start)
        assigned = generator.integers(0, CLUSTERS, count)
        table[start:start + count] = centers[assigned] + 0.35 * generator.standard_normal(
            (count, DIM)).astype(np.float32)
    table.flush()
    del table
    ids = [f"Q{i}" for i in range(size)]
    EntityEmbeddings(ids, np.load(path, mmap_mode="r")).save(directory)  # hash + meta


def _queries(table: np.ndarray) -> np.ndarray:
    generator = np.random.default_rng(1)
    rows = np.sort(generator.choice(len(table), QUERIES, replace=False))
    noise = 0.2 * generator.standard_normal((QUERIES, DIM)).astype(np.float32)
    return np.asarray(table[rows], dtype=np.float32) + noise


def _exact(table: np.ndarray, queries: np.ndarray) -> np.ndarray:
    import faiss

    best_d = np.full((len(queries), K), np.inf, dtype=np.float32)
    best_i = np.full((len(queries), K), -1, dtype=np.int64)
    for start in range(0, len(table), 500_000):
        flat = faiss.IndexFlatL2(DIM)
        flat.add(np.ascontiguousarray(table[start:start + 500_000], dtype=np.float32))
        d, i = flat.search(queries, K)
        merged_d = np.concatenate([best_d, d], axis=1)
        merged_i = np.concatenate([best_i, i + start], axis=1)
        order = np.argsort(merged_d, axis=1)[:, :K]
        best_d = np.take_along_axis(merged_d, order, axis=1)
        best_i = np.take_along_axis(merged_i, order, axis=1)
    return best_i


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth)]))


def stage_build(work: Path, kind: str) -> dict:
    from tqdm import tqdm

    from ernie_kg.kg import EntityEmbeddings, EntityIndex

    table = EntityEmbeddings.load(work / "table", verify=False)
    started = time.perf_counter()
    with tqdm(total=len(table), unit=" vectors", unit_scale=True, desc=f"{kind} add") as bar:
        index = EntityIndex(table, kind=kind, progress=bar.update)
    seconds = time.perf_counter() - started
    path = index.save(work / f"{kind}.faiss")
    return {"build_seconds": seconds, "build_peak_rss_gb": _rss_gb(),
            "index_file_gb": path.stat().st_size / 2**30, "kind": index.kind,
            "nlist": int(index.index.nlist)}


def stage_query(work: Path, kind: str, nprobe: int) -> dict:
    from ernie_kg.kg import EntityEmbeddings, EntityIndex

    table = EntityEmbeddings.load(work / "table", verify=False)
    queries = _queries(table.vectors)
    before = _rss_gb("VmRSS")
    index = EntityIndex.load(work / f"{kind}.faiss", table, kind, nprobe=nprobe)
    loaded = _rss_gb("VmRSS")
    found = np.zeros((QUERIES, K), dtype=np.int64)
    started = time.perf_counter()
    for n, query in enumerate(queries):
        found[n] = index.search(query, K)[0][0]
    milliseconds = (time.perf_counter() - started) * 1000 / QUERIES
    rss_after = _rss_gb("VmRSS")
    truth_path = work / "truth.npy"
    if not truth_path.exists():
        np.save(truth_path, _exact(table.vectors, queries))
    return {"ms_per_query": milliseconds, "recall_at_10": _recall(found, np.load(truth_path)),
            "nprobe": nprobe, "rss_before_index_gb": before,
            "index_rss_gb": loaded - before, "rss_after_queries_gb": rss_after,
            "peak_rss_gb": _rss_gb()}


def stage_hnsw(work: Path, size: int) -> dict:
    from ernie_kg.kg import EntityEmbeddings, EntityIndex

    full = EntityEmbeddings.load(work / "table", verify=False)
    part = EntityEmbeddings(full.entity_ids[:size], np.asarray(full.vectors[:size]))
    started = time.perf_counter()
    index = EntityIndex(part, kind="hnsw")
    seconds = time.perf_counter() - started
    index.index.hnsw.efSearch = 128
    queries = _queries(part.vectors)
    started = time.perf_counter()
    found = np.stack([index.search(q, K)[0][0] for q in queries])
    milliseconds = (time.perf_counter() - started) * 1000 / QUERIES
    truth = _exact(part.vectors, queries)
    full_n = len(full)
    projected = seconds * (full_n * np.log(full_n)) / (size * np.log(size))
    return {"size": size, "build_seconds": seconds, "projected_full_build_seconds": projected,
            "recall_at_10": _recall(found, truth), "ms_per_query": milliseconds,
            "peak_rss_gb": _rss_gb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=5_000_000)
    parser.add_argument("--hnsw-size", type=int, default=500_000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/faiss-scale"))
    parser.add_argument("--stage", choices=["all", "build", "query", "hnsw"], default="all")
    parser.add_argument("--nprobe", type=int, default=32)
    parser.add_argument("--results", type=Path, default=ROOT / "results")
    args = parser.parse_args()
    work = args.work / str(args.size)
    if args.stage != "all":
        result = {"build": lambda: stage_build(work, "ivfpq"),
                  "query": lambda: stage_query(work, "ivfpq", args.nprobe),
                  "hnsw": lambda: stage_hnsw(work, args.hnsw_size)}[args.stage]()
        print(json.dumps(result))
        return
    make_table(work / "table", args.size)
    results = {"machine": _machine(), "size": args.size, "dim": DIM,
               "table_gb": args.size * DIM * 4 / 2**30}
    for stage in ("build", "query", "hnsw"):
        done = subprocess.run([sys.executable, __file__, "--size", str(args.size),
                               "--hnsw-size", str(args.hnsw_size), "--work", str(args.work),
                               "--nprobe", str(args.nprobe),
                               "--stage", stage], capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"{stage} failed:\n{done.stderr[-3000:]}")
        results[stage] = json.loads(done.stdout.strip().splitlines()[-1])
        print(stage, results[stage], flush=True)
    args.results.mkdir(exist_ok=True)
    (args.results / "faiss_scale.json").write_text(json.dumps(results, indent=2) + "\n")
    b, q, h = results["build"], results["query"], results["hnsw"]
    lines = [f"# faiss at {args.size:,} entities x {DIM} dims", "",
             f"Machine: {results['machine']}. Table {results['table_gb']:.2f} GB float32, "
             f"memory-mapped; a mixture of {CLUSTERS:,} Gaussian clusters; {QUERIES:,} "
             "queries one at a time (table rows + noise); recall@10 against exact search. "
             "`benchmarks/faiss_scale.py`.", "",
             "| index | build | index file | index RAM (loaded; process after queries) | "
             "ms / query | recall@10 |", "|---|---|---|---|---|---|",
             f"| ivfpq (the large-table default: {b['nlist']:,} lists, PQ {DIM // 4} bytes, "
             f"nprobe {q['nprobe']}, "
             f"exact re-rank of 100) | {b['build_seconds']:.0f} s (peak RSS "
             f"{b['build_peak_rss_gb']:.2f} GB) | {b['index_file_gb']:.2f} GB | "
             f"{q['index_rss_gb']:.2f} GB; {q['rss_after_queries_gb']:.2f} GB | "
             f"{q['ms_per_query']:.2f} | "
             f"{q['recall_at_10']:.3f} |",
             f"| hnsw (M 32, efSearch 128) on the first {h['size']:,} rows | "
             f"{h['build_seconds']:.0f} s measured; {h['projected_full_build_seconds'] / 60:.0f}"
             f" min projected for {args.size:,} | - | peak RSS {h['peak_rss_gb']:.2f} GB | "
             f"{h['ms_per_query']:.2f} | {h['recall_at_10']:.3f} (at {h['size']:,}) |"]
    (args.results / "faiss_scale.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
