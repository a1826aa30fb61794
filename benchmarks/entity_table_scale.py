"""Checkpoints that do not grow with the KG: a classifier over a 5M x 100 entity table.

Writes a Wikidata-sized table (5M ids ``Q0..``, 100-dim float32, 2 GB) as a saved
``EntityEmbeddings`` directory, then, each step in a fresh process (peak RSS from
``VmHWM``, the process's own high-water mark):

- ``text-only``: the same relation classifier (packaged MiniLM, the same knowledge layers)
  with no entity table: built, saved, loaded, one forward pass of a batch.
- ``with table``: the classifier on the 5M table: built, saved (the table is referred to),
  loaded (the table found and mapped), one forward pass with entities spread over the
  whole table; and three training steps (frozen table) in one more process.
- ``with table, moved``: the table's file touched, so loading hashes it again (the slow
  path a copied table takes once).
- ``include_entity_table=True``: the self-contained copy (what every checkpoint cost
  before this change), for its size and time.

Ratios come from one run; absolute figures name the machine. Usage:
``python benchmarks/entity_table_scale.py --work /tmp/table-scale [--entities 5000000]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ernie_kg.machine import cpu_model

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"


def machine() -> str:
    """CPU model and core count."""
    return f"{cpu_model()}, {os.cpu_count()} cores"


def write_table(directory: Path, entities: int, dim: int) -> float:
    """A random table of ``entities`` x ``dim`` saved as ``EntityEmbeddings`` would be."""
    import numpy as np

    from ernie_kg.kg.embeddings import saved_content_hash, write_table_meta
    from ernie_kg.kg.vocab import MappedEntityVocab

    started = time.perf_counter()
    directory.mkdir(parents=True, exist_ok=True)
    matrix = np.lib.format.open_memmap(directory / "entity_vectors.npy", mode="w+",
                                       dtype=np.float32, shape=(entities, dim))
    generator = np.random.default_rng(0)
    for start in range(0, entities, 500_000):
        block = generator.standard_normal((min(500_000, entities - start), dim),
                                          dtype=np.float32)
        matrix[start:start + len(block)] = block / np.linalg.norm(block, axis=1,
                                                                  keepdims=True)
    matrix.flush()
    del matrix
    vocab = MappedEntityVocab.write([f"Q{i}" for i in range(entities)], directory)
    write_table_meta(directory, vocab, saved_content_hash(vocab, directory /
                                                          "entity_vectors.npy"),
                     {"model": "random", "dim": dim}, {})
    return time.perf_counter() - started


# ---------------------------------------------------------------------- child steps
def _peak_gb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1e6
    return float("nan")


def _batch(entities: int, seed: int = 0):
    import torch

    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1000, 20000, (8, 64), generator=generator)
    entity_ids = torch.zeros_like(input_ids)
    if entities:
        spread = torch.randint(1, entities + 1, (8, 4), generator=generator)
        entity_ids[:, 5:9] = spread  # mentions all over the table
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
            "entity_ids": entity_ids, "marker_positions": torch.tensor([[1, 5]] * 8)}


def child(step: str, table: str | None, out: str) -> dict:
    """One measured step in this (fresh) process."""
    import torch

    from ernie_kg.kg.embeddings import EntityEmbeddings
    from ernie_kg.modeling import ErnieKGForRelationClassification
    from ernie_kg.paths import default_backbone

    torch.set_num_threads(2)
    result: dict = {"step": step}
    labels = {"id2label": {0: "a", 1: "b"}, "rc_classifier": "markers"}
    if step == "build":
        started = time.perf_counter()
        embeddings = EntityEmbeddings.load(table) if table else None
        model = ErnieKGForRelationClassification.from_backbone(default_backbone(),
                                                               embeddings, **labels)
        result["build_s"] = time.perf_counter() - started
        started = time.perf_counter()
        model.save_pretrained(out)
        result["save_s"] = time.perf_counter() - started
    elif step == "self-contained":
        model = ErnieKGForRelationClassification.from_backbone(
            default_backbone(), EntityEmbeddings.load(table), **labels)
        started = time.perf_counter()
        model.save_pretrained(out, include_entity_table=True)
        result["save_s"] = time.perf_counter() - started
    elif step in ("load", "train"):
        started = time.perf_counter()
        model = ErnieKGForRelationClassification.from_pretrained(out)
        result["load_s"] = time.perf_counter() - started
        entities = model.config.num_entities
        if step == "load":
            model.eval()
            with torch.no_grad():
                started = time.perf_counter()
                model(**_batch(entities))
                result["forward_s"] = time.perf_counter() - started
        else:
            model.train()
            optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                          lr=1e-5)
            started = time.perf_counter()
            for seed in range(3):
                loss = model(**_batch(entities, seed), labels=torch.zeros(8, dtype=torch.long)
                             ).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
            result["train_3_steps_s"] = time.perf_counter() - started
    result["peak_rss_gb"] = _peak_gb()
    return result


def run_child(step: str, table: Path | None, out: Path) -> dict:
    command = [sys.executable, __file__, "--child", step, "--out", str(out)]
    if table is not None:
        command += ["--table", str(table)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        raise SystemExit(f"{step} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - started
    return result


def directory_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ---------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/table-scale"))
    parser.add_argument("--entities", type=int, default=5_000_000)
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--child")
    parser.add_argument("--table")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.table, args.out)))
        return
    work = args.work
    table = work / f"table-{args.entities}"
    if not (table / "embeddings.json").is_file():
        shutil.rmtree(table, ignore_errors=True)
        print(f"writing a {args.entities} x {args.dim} table ...", flush=True)
        print(f"  {write_table(table, args.entities, args.dim):.1f} s", flush=True)
    rows = {}
    for name, source in (("text-only", None), ("with table", table)):
        out = work / f"model-{name.replace(' ', '-')}"
        shutil.rmtree(out, ignore_errors=True)
        built = run_child("build", source, out)
        loaded = run_child("load", source, out)
        trained = run_child("train", source, out)
        rows[name] = {"checkpoint_bytes": directory_bytes(out), **{
            f"build_{k}": v for k, v in built.items() if k != "step"}, **{
            f"load_{k}": v for k, v in loaded.items() if k != "step"}, **{
            f"train_{k}": v for k, v in trained.items() if k != "step"}}
        print(name, json.dumps(rows[name]), flush=True)
    os.utime(table / "entity_vectors.npy")  # as a copied table: hashed again on load
    moved = run_child("load", table, work / "model-with-table")
    rows["with table, moved"] = {f"load_{k}": v for k, v in moved.items() if k != "step"}
    contained = work / "model-self-contained"
    shutil.rmtree(contained, ignore_errors=True)
    saved = run_child("self-contained", table, contained)
    rows["include_entity_table=True"] = {"checkpoint_bytes": directory_bytes(contained),
                                         "save_s": saved["save_s"]}
    shutil.rmtree(contained, ignore_errors=True)
    report(rows, args.entities, args.dim)


def report(rows: dict, entities: int, dim: int) -> None:
    text, table = rows["text-only"], rows["with table"]
    summary = {
        "checkpoint_size_ratio": table["checkpoint_bytes"] / text["checkpoint_bytes"],
        "load_s": table["load_load_s"],
        "load_s_after_the_table_changed_on_disk": rows["with table, moved"]["load_load_s"],
        "loaded_rss_gb_above_text_only": table["load_peak_rss_gb"] - text["load_peak_rss_gb"],
        "training_rss_gb_above_text_only":
            table["train_peak_rss_gb"] - text["train_peak_rss_gb"],
        "self_contained_checkpoint_gb": rows["include_entity_table=True"]["checkpoint_bytes"]
        / 1e9,
    }
    data = {"machine": machine(), "python": platform.python_version(), "entities": entities,
            "dim": dim, "rows": rows, "summary": summary}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "entity_table_scale.json").write_text(json.dumps(data, indent=2) + "\n")
    lines = [
        f"# A classifier over a {entities:,} x {dim} entity table", "",
        f"Machine: {data['machine']}, Python {data['python']}. Each step is a fresh process "
        "(peak RSS = VmHWM). Model: relation classifier on the packaged MiniLM-L6-H384, "
        "the default knowledge layers; `text-only` is the same classifier without an entity "
        "table. Command: `python benchmarks/entity_table_scale.py`.", "",
        "| model | checkpoint MB | save s | load s | forward s | RSS after load+forward GB "
        "| first 3 training steps s | RSS training GB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in ("text-only", "with table"):
        row = rows[name]
        lines.append(
            f"| {name} | {row['checkpoint_bytes'] / 1e6:.1f} | {row['build_save_s']:.2f} | "
            f"{row['load_load_s']:.2f} | {row['load_forward_s']:.2f} | "
            f"{row['load_peak_rss_gb']:.3f} | {row['train_train_3_steps_s']:.2f} | "
            f"{row['train_peak_rss_gb']:.3f} |")
    moved = rows["with table, moved"]
    contained = rows["include_entity_table=True"]
    lines += [
        "",
        f"- Checkpoint size, with the table / text-only: **{summary['checkpoint_size_ratio']:.4f}**"
        " (target: within 5%).",
        f"- Load with the table: **{summary['load_s']:.2f} s** (target: at most 10 s); "
        f"after the table's file changed on disk (mtime), so it is hashed again: "
        f"{moved['load_load_s']:.2f} s.",
        f"- RSS of the loaded classifier above the text-only one: "
        f"**{summary['loaded_rss_gb_above_text_only']:.3f} GB** (target: at most 1 GB); "
        f"in training: {summary['training_rss_gb_above_text_only']:.3f} GB.",
        f"- `include_entity_table=True` (a self-contained copy, what every checkpoint cost "
        f"before): {contained['checkpoint_bytes'] / 1e9:.2f} GB, saved in "
        f"{contained['save_s']:.1f} s.",
        "- The forward and training times differ by the knowledge layers' work (the "
        "text-only model skips them), not by the table lookup; the first steps include "
        "warm-up. Timings are from a machine shared with other jobs: noisy.",
    ]
    (RESULTS / "entity_table_scale.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
