"""Import scale: `ernie-kg kg import-embeddings` on a synthetic Wikidata-shaped KG.

Writes an export in OpenKE's layout (ERNIE's ``kg_embed/``: ``entity2id.txt`` +
``entity2vec.vec``, 100-dim) and in PyTorch-BigGraph's (``embeddings_all_0.v1.h5`` +
``entity_names_all_0.json``) holding 95% of the KG's entities in shuffled rows plus 10%
rows that are not in the KG, then imports each with ``/usr/bin/time -v`` (wall time, peak
RSS) and checks a sample of rows against the source. The KG comes from
``benchmarks/kg_scale.py`` (``/tmp/kg-scale/kg-N``, indexed once). Results:
``results/import_scale.{json,md}``.

    python benchmarks/import_scale.py --size 5000000
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
DIM = 100


def _machine() -> str:
    return f"{cpu_model()}, {os.cpu_count()} cores"


def _source_rows(size: int, seed: int = 0) -> list[str]:
    """Names of the export's rows: 95% of the KG's ids (Q0..), shuffled, then 10% others."""
    kept = np.random.default_rng(seed).permutation(size)[: int(size * 0.95)]
    return [f"Q{i}" for i in kept] + [f"X{i}" for i in range(size // 10)]


def _vectors(count: int, start: int) -> np.ndarray:
    """Rows ``start..start + count`` of the export (a formula, so a sample can be checked)."""
    rows = np.arange(start, start + count, dtype=np.float32)[:, None]
    return (np.sin(rows * np.arange(1, DIM + 1, dtype=np.float32)[None, :] * 0.001)
            ).astype(np.float32)


def write_openke(directory: Path, names: list[str]) -> None:
    import pyarrow as pa
    from pyarrow import csv

    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "entity2id.txt", "w") as ids:
        ids.write(f"{len(names)}\n")
        ids.writelines(f"{name}\t{row}\n" for row, name in enumerate(names))
    options = csv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")
    with open(directory / "entity2vec.vec", "wb") as out:
        for start in range(0, len(names), 200_000):
            block = _vectors(min(200_000, len(names) - start), start)
            table = pa.table({f"v{d}": block[:, d] for d in range(DIM)})
            csv.write_csv(table, out, write_options=options)


def write_pbg(directory: Path, names: list[str]) -> None:
    import h5py

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "checkpoint_version.txt").write_text("1\n")
    with open(directory / "entity_names_all_0.json", "w") as out:
        json.dump(names, out)
    with h5py.File(directory / "embeddings_all_0.v1.h5", "w") as handle:
        table = handle.create_dataset("embeddings", (len(names), DIM), dtype="float32")
        for start in range(0, len(names), 200_000):
            count = min(200_000, len(names) - start)
            table[start:start + count] = _vectors(count, start)


def run_import(kg: Path, fmt: str, source: Path, out: Path) -> dict:
    command = ["/usr/bin/time", "-v", str(ROOT / ".venv/bin/ernie-kg"), "kg",
               "import-embeddings", "--format", fmt, "--source", str(source), "--kg", str(kg),
               "--out", str(out), "--overwrite"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        sys.exit(f"{fmt} import failed:\n{done.stderr[-3000:]}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)[1])
    return {"seconds": seconds, "peak_rss_gb": rss / 2**20,
            "report": {**json.loads((out / "import_report.json").read_text()),
                       "source": f"<--work>/{source.name}"}}  # no machine paths in results


def check(out: Path, names: list[str], size: int, samples: int = 1000) -> float:
    """Share of sampled export rows (of KG entities) whose imported vector is that row."""
    sys.path.insert(0, str(ROOT))
    from ernie_kg.kg import EntityEmbeddings

    table = EntityEmbeddings.load(out, verify=False)
    generator = np.random.default_rng(1)
    right = 0
    rows = generator.integers(0, int(size * 0.95), samples)
    for source_row in rows:
        expected = _vectors(1, int(source_row))[0]
        right += bool(np.allclose(table.vector(names[source_row]), expected, atol=1e-6))
    return right / len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/import-scale"))
    parser.add_argument("--kg-root", type=Path, default=Path("/tmp/kg-scale"))
    parser.add_argument("--formats", nargs="+", default=["openke", "pbg"])
    parser.add_argument("--results", type=Path, default=ROOT / "results")
    args = parser.parse_args()
    kg = args.kg_root / f"kg-{args.size}"
    if not kg.is_dir():
        sys.exit(f"{kg}: run benchmarks/kg_scale.py --sizes {args.size} first")
    names = _source_rows(args.size)
    results = {"machine": _machine(), "size": args.size, "dim": DIM,
               "source_rows": len(names), "formats": {}}
    table_gb = args.size * DIM * 4 / 2**30
    results["output_table_gb"] = table_gb
    for fmt in args.formats:
        source = args.work / f"{fmt}-{args.size}"
        if not source.is_dir():
            started = time.perf_counter()
            (write_openke if fmt == "openke" else write_pbg)(source, names)
            print(f"wrote {source} in {time.perf_counter() - started:.0f} s", flush=True)
        size_gb = sum(p.stat().st_size for p in source.iterdir()) / 2**30
        measured = run_import(kg, fmt, source, args.work / f"out-{fmt}-{args.size}")
        measured["source_gb"] = size_gb
        measured["sample_correct"] = check(args.work / f"out-{fmt}-{args.size}", names,
                                           args.size)
        results["formats"][fmt] = measured
        print(fmt, json.dumps({k: v for k, v in measured.items() if k != "report"}),
              flush=True)
    args.results.mkdir(exist_ok=True)
    (args.results / "import_scale.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [f"# Importing entity vectors: {args.size:,} KG entities x {DIM} dims", "",
             f"Machine: {results['machine']}. Output table: {table_gb:.2f} GB (float32). "
             f"Export: {len(names):,} rows (95% of the KG's entities, shuffled, + 10% not "
             "in the KG). `benchmarks/import_scale.py`.", "",
             "| format | export size | wall time | peak RSS | RSS / table | covered | "
             "not in KG | sampled rows right |", "|---|---|---|---|---|---|---|---|"]
    for fmt, m in results["formats"].items():
        r = m["report"]
        lines.append(f"| {fmt} | {m['source_gb']:.2f} GB | {m['seconds']:.0f} s | "
                     f"{m['peak_rss_gb']:.2f} GB | {m['peak_rss_gb'] / table_gb:.2f} | "
                     f"{r['coverage']:.1%} | {r['not_in_kg']:,} | {m['sample_correct']:.3f} |")
    (args.results / "import_scale.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
