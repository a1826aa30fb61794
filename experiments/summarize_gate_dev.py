"""The knowledge gate on FewRel-16's dev split: which fusion recipe to make the default.

Reads the dev metrics of ``relation_classification.py`` runs named
``<setting>-ernie-gate<GATE>-ed<DROPOUT>-seed<S>`` under ``--runs``, and, for the gate
"none" (the paper's fusion) and the baseline, the dev numbers of earlier grids in
``results/fewrel16_summary.json`` (dropout 0) and ``results/fewrel16_entity_dropout_summary.json``
(dropout 0.3): the same split, recipe and code path. Only dev is read: test numbers are
not looked at when a recipe is chosen. Writes ``--output``.json and .md.

    python experiments/summarize_gate_dev.py --runs runs/g17 --output results/fewrel16_gate_dev
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EARLIER = {0.0: ROOT / "results" / "fewrel16_summary.json",
           0.3: ROOT / "results" / "fewrel16_entity_dropout_summary.json"}
RUN_NAME = re.compile(r"(open|closed)-ernie-gate(\w+)-ed([\d.]+)-seed(\d+)$")


def collect(runs: Path) -> list[dict]:
    """One row per run: setting, model, gate, dropout, seed, dev and dev (linker) macro-F1."""
    rows = []
    for metrics in sorted(runs.glob("*/metrics.json")):
        match = RUN_NAME.match(metrics.parent.name)
        if not match:
            continue
        values = json.loads(metrics.read_text())
        setting, gate, dropout, seed = match.groups()
        rows.append({"setting": setting, "model": "ernie", "gate": gate,
                     "entity_dropout": float(dropout), "seed": int(seed),
                     "dev_macro_f1": values["macro_f1"],
                     "dev_linker_macro_f1": values.get("dev_linker_macro_f1"),
                     "source": "this grid"})
    for dropout, path in EARLIER.items():
        for run in json.loads(path.read_text())["runs"]:
            if run["model"] == "baseline" and dropout:
                continue  # the same baseline runs are in both files
            rows.append({
                "setting": run["setting"], "model": run["model"],
                "gate": "none" if run["model"] == "ernie" else "-",
                "entity_dropout": dropout if run["model"] == "ernie" else 0.0,
                "seed": run["seed"], "dev_macro_f1": run["dev"]["macro_f1"],
                "dev_linker_macro_f1": (run.get("dev_linker") or {}).get("macro_f1"),
                "source": path.name})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    rows = collect(args.runs)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["setting"], row["model"], row["gate"], row["entity_dropout"])].append(row)
    baseline = {r["seed"]: r["dev_macro_f1"] for r in rows
                if r["model"] == "baseline" and r["setting"] == "open"}
    lines = [
        "# FewRel-16 dev: the knowledge gate and entity dropout (recipe choice, dev only)", "",
        "Split seed 0 (70/10/20), packaged MiniLM, the experiment's defaults otherwise "
        "(2 epochs, lr 5e-5, knowledge lr 5e-4, entity_start classifier). Dev macro-F1 in "
        "points, with the dataset's entity ids for the task spans (`dev`) and with the "
        "linker's only (`dev, linker`: what inference sees). `gate none` is the paper's "
        "fusion; its runs and the baseline's come from earlier grids (same split and "
        "code path). Test numbers are not read here.", "",
        "| setting | model | gate | entity dropout | seeds | dev | dev, linker | "
        "per seed (dev, linker) | minus baseline per seed (dev, linker) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key in sorted(groups, key=lambda k: (k[0], k[1] != "baseline", k[2], k[3])):
        group = sorted(groups[key], key=lambda r: r["seed"])
        dev = [100 * r["dev_macro_f1"] for r in group]
        linker = [100 * r["dev_linker_macro_f1"] for r in group
                  if r["dev_linker_macro_f1"] is not None]
        per_seed = ", ".join(f"s{r['seed']} {100 * _seen(r):.2f}" for r in group)
        gains = ", ".join(f"s{r['seed']} {100 * (_seen(r) - baseline[r['seed']]):+.2f}"
                          for r in group if r["model"] == "ernie" and r["seed"] in baseline)
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {len(group)} | "
                     f"{_mean(dev)} | {_mean(linker) if linker else '-'} | {per_seed} | "
                     f"{gains or '-'} |")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps({"runs": rows}, indent=1) + "\n")
    args.output.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _seen(row: dict) -> float:
    """Dev macro-F1 with the linker's entities where measured (what inference sees)."""
    linker = row["dev_linker_macro_f1"]
    return linker if linker is not None else row["dev_macro_f1"]


def _mean(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.2f}" if values else "-"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


if __name__ == "__main__":
    main()
