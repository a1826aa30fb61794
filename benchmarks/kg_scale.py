"""KG scale: `kg index`, `link` and `KnowledgeGraph.load` on synthetic Wikidata-shaped KGs.

For each size (entities) it generates a KG directory (``benchmarks/synthetic_kg.py``:
~4.8 facts per entity, 300 relations, half the entities with an alias, 3,000 sentences
with gold links), then runs the CLI as a user would, each command in its own process
under ``/usr/bin/time -v`` (wall time, peak RSS):

- ``ernie-kg kg index --kg DIR`` (store + alias index, from scratch);
- ``ernie-kg link`` on the 3,000 sentences with the index present: process wall time and
  peak RSS, time to the first link (wall time minus the linking loop), links per second
  (mentions / loop seconds, timed on the sentences repeated 10 times: one pass takes
  half a second), gold links found (span and entity exact);
- ``KnowledgeGraph.load`` (time and peak RSS of a process that only loads);
- with ``--cold-link SIZE``: ``link`` at that size with no index yet (it builds one).

Writes results/kg_scale.json, .md and .png (each figure against size, log-log). Sizes
already in the JSON are kept unless run again.

    python benchmarks/kg_scale.py --sizes 100000 500000 1000000 2000000 5000000 \\
        --work /tmp/kg-scale --cold-link 2000000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from synthetic_kg import generate  # noqa: E402

from ernie_kg.machine import cpu_model  # noqa: E402

CLI = [sys.executable, "-m", "ernie_kg"]
_LOOP = re.compile(r"(\d+)\s+texts,\s+(\d+)\s+mentions\s+in\s+([\d.]+)\s+s")  # rich may wrap


def _timed(command: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (GB) and stderr of ``command`` under /usr/bin/time -v."""
    started = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True,
                          env={**os.environ, "TQDM_DISABLE": "1", **(env or {})})
    wall = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    return wall, int(rss.group(1)) / 1024**2, done.stderr


def _gold(output: Path) -> float:
    found = total = 0
    for line in output.open(encoding="utf-8"):
        record = json.loads(line)
        linked = {(m["start"], m["end"], m["entity_id"]) for m in record["mentions"]}
        for start, end, entity_id in record["gold"]:
            total += 1
            found += (start, end, entity_id) in linked
    return found / max(total, 1)


def _link(kg_dir: Path, throughput: bool = True) -> dict:
    output = kg_dir / "linked.jsonl"
    wall, rss, err = _timed([*CLI, "link", "--kg", str(kg_dir), "--input",
                             str(kg_dir / "sentences.jsonl"), "--output", str(output)])
    texts, mentions, seconds = _LOOP.search(err).groups()
    seconds = float(seconds)
    result = {"wall_s": round(wall, 2), "peak_rss_gb": round(rss, 3),
              "time_to_first_link_s": round(wall - seconds, 2),
              "loop_links_per_s": round(int(mentions) / seconds, 1), "texts": int(texts),
              "gold_found": round(_gold(output), 4)}
    if throughput:  # the 3,000 sentences link in ~0.5 s: too short to time, so x10
        repeated = kg_dir / "sentences_x10.jsonl"
        repeated.write_text((kg_dir / "sentences.jsonl").read_text(encoding="utf-8") * 10,
                            encoding="utf-8")
        _, _, err = _timed([*CLI, "link", "--kg", str(kg_dir), "--input", str(repeated),
                            "--output", str(kg_dir / "linked_x10.jsonl")])
        _, mentions, seconds = _LOOP.search(err).groups()
        result["links_per_s"] = round(int(mentions) / float(seconds), 1)
    return result


def measure(size: int, work: Path, cold_link: bool) -> dict:
    kg_dir = work / f"kg-{size}"
    if not (kg_dir / "sentences.jsonl").exists():
        started = time.perf_counter()
        shape = generate(kg_dir, size)
        print(f"{size}: generated in {time.perf_counter() - started:.0f} s", flush=True)
    else:
        shape = {"entities": size}
    shape["facts"] = sum(1 for _ in open(kg_dir / "train.txt", "rb"))
    result: dict = {"entities": size, "facts": shape["facts"],
                    "kg_bytes": sum(p.stat().st_size for p in kg_dir.glob("*.*")
                                    if not p.name.startswith(("linked", "sentences_x"))
                                    )}
    shutil.rmtree(kg_dir / ".ernie_kg", ignore_errors=True)
    if cold_link:
        result["link_cold"] = _link(kg_dir, throughput=False)
        print(f"{size}: cold link {result['link_cold']}", flush=True)
        shutil.rmtree(kg_dir / ".ernie_kg", ignore_errors=True)
    wall, rss, _ = _timed([*CLI, "kg", "index", "--kg", str(kg_dir)])
    result["index"] = {"wall_s": round(wall, 1), "peak_rss_gb": round(rss, 3),
                       "index_bytes": sum(p.stat().st_size for p in
                                          (kg_dir / ".ernie_kg").rglob("*") if p.is_file())}
    print(f"{size}: index {result['index']}", flush=True)
    result["link"] = _link(kg_dir)
    print(f"{size}: link {result['link']}", flush=True)
    load = ("import sys, time; t = time.perf_counter(); from ernie_kg.kg import KnowledgeGraph;"
            f" kg = KnowledgeGraph.load({str(kg_dir)!r}); kg.neighbors('Q0');"
            " print(f'LOADED {time.perf_counter() - t:.3f}')")
    wall, rss, err = _timed([sys.executable, "-c", load])
    result["kg_load"] = {"wall_s": round(wall, 2), "peak_rss_gb": round(rss, 3)}
    return result


def _markdown(results: dict) -> str:
    rows = [results["runs"][k] for k in sorted(results["runs"], key=int)]
    lines = ["# KG scale: synthetic Wikidata-shaped KGs", "",
             f"Machine: {results['machine']}. Each command is its own process "
             "(`/usr/bin/time -v`: wall time, peak RSS). `link`: the 3,000 sentences, index "
             "present, process start to exit. Links/s: the linking loop over the sentences "
             "repeated 10 times (one pass takes half a second: too short to time). Gold = the "
             "3,000 sentences' 6,000 gold links found with exact span and entity.", "",
             "| entities | facts | `kg index` s | index GB RSS | `link` s | link GB RSS | "
             "to first link s | links/s | gold found | `KnowledgeGraph.load` s | load GB RSS |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        i, link, load = r["index"], r["link"], r["kg_load"]
        lines.append(f"| {r['entities']:,} | {r['facts']:,} | {i['wall_s']} | {i['peak_rss_gb']}"
                     f" | {link['wall_s']} | {link['peak_rss_gb']} | "
                     f"{link['time_to_first_link_s']} | {link['links_per_s']:,.0f} | "
                     f"{link['gold_found']} | {load['wall_s']} | {load['peak_rss_gb']} |")
    base = results["runs"].get("100000")
    if base:
        lines += ["", "Links per second relative to 100k entities: " + ", ".join(
            f"{int(k):,}: {r['link']['links_per_s'] / base['link']['links_per_s']:.2f}x"
            for k, r in sorted(results["runs"].items(), key=lambda kv: int(kv[0])))]
    lines += ["", "`kg index` seconds per million entities: " + ", ".join(
        f"{r['entities']:,}: {r['index']['wall_s'] / r['entities'] * 1e6:.0f}" for r in rows)
        + "; peak RSS per million entities (GB): " + ", ".join(
        f"{r['entities']:,}: {r['index']['peak_rss_gb'] / r['entities'] * 1e6:.2f}"
        for r in rows)]
    cold = [(k, r["link_cold"]) for k, r in results["runs"].items() if "link_cold" in r]
    for k, c in cold:
        lines += ["", f"`link` at {int(k):,} entities with no index yet (it builds one): "
                  f"{c['wall_s']} s, {c['peak_rss_gb']} GB peak RSS, gold {c['gold_found']}."]
    return "\n".join(lines + _companions()) + "\n"


#: Other benchmarks at the same scale, shown below the KG table (their own reports,
#: one level down): vector import, nearest entities, checkpoints, TransE and linking
#: on several processes.
COMPANIONS = ("import_scale", "faiss_scale", "entity_table_scale", "transe_distributed",
              "link_cluster")


def _companions() -> list[str]:
    lines: list[str] = []
    for name in COMPANIONS:
        path = ROOT / "results" / f"{name}.md"
        if path.is_file():
            body = path.read_text(encoding="utf-8").strip().splitlines()
            title = body[0].lstrip("# ") if body and body[0].startswith("# ") else name
            lines += ["", f"## {title}", "", f"(`results/{name}.md`)", *[
                "#" + line if line.startswith("#") else line for line in body[1:]]]
    return lines


def _plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [results["runs"][k] for k in sorted(results["runs"], key=int)]
    sizes = [r["entities"] for r in runs]
    figure, (times, memory) = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, pick in (("kg index", lambda r: r["index"]["wall_s"]),
                        ("link (3,000 sentences, index present)", lambda r: r["link"]["wall_s"]),
                        ("KnowledgeGraph.load", lambda r: r["kg_load"]["wall_s"])):
        times.plot(sizes, [pick(r) for r in runs], marker="o", label=label)
    for label, pick in (("kg index", lambda r: r["index"]["peak_rss_gb"]),
                        ("link", lambda r: r["link"]["peak_rss_gb"]),
                        ("KnowledgeGraph.load", lambda r: r["kg_load"]["peak_rss_gb"])):
        memory.plot(sizes, [pick(r) for r in runs], marker="o", label=label)
    linear = [sizes[0], sizes[-1]]
    for axis, first in ((times, runs[0]["index"]["wall_s"]),
                        (memory, runs[0]["index"]["peak_rss_gb"])):
        axis.plot(linear, [first, first * sizes[-1] / sizes[0]], "k:", label="linear in size")
        axis.set(xscale="log", yscale="log", xlabel="entities")
        axis.legend(fontsize=8)
    times.set(ylabel="wall seconds", title="time")
    memory.set(ylabel="peak RSS (GB)", title="memory")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 500_000, 1_000_000])
    parser.add_argument("--work", type=Path, default=Path("/tmp/kg-scale"))
    parser.add_argument("--cold-link", type=int, nargs="*", default=[])
    parser.add_argument("--results", type=Path, default=ROOT / "results")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite the .md and .png from the JSON")
    args = parser.parse_args()
    path = args.results / "kg_scale.json"
    results = json.loads(path.read_text()) if path.exists() else {"runs": {}}
    if args.report_only:
        (args.results / "kg_scale.md").write_text(_markdown(results))
        _plot(results, args.results / "kg_scale.png")
        return
    cpu = cpu_model()
    results["machine"] = f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"
    for size in args.sizes:
        results["runs"][str(size)] = measure(size, args.work, size in args.cold_link)
        path.write_text(json.dumps(results, indent=1))
        (args.results / "kg_scale.md").write_text(_markdown(results))
        _plot(results, args.results / "kg_scale.png")


if __name__ == "__main__":
    main()
