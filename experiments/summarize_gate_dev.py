"""The knowledge gate on FewRel-16's dev split: which fusion recipe to make the default.

Reads the dev metrics and settings of the ERNIE-KG ``relation_classification.py`` runs
under each ``--runs`` directory (gate, gate learning rate, entity dropout, hiding of
sole-fact entities, share of the training facts in the KG; runs from before the gate had
a learning rate of its own trained it at the knowledge learning rate; whether the gate
reads ``entity_links``), and, for the gate
"none" (the paper's fusion) and the baseline, the dev numbers of earlier grids in
``results/fewrel16_paper_fusion_summary.json`` (dropout 0) and
``results/fewrel16_entity_dropout_summary.json`` (dropout 0.3): the same split, recipe
and code path. Only dev is read: test numbers are not looked at when a recipe is chosen.
Writes ``--output``.json and .md; the runs recorded in an earlier ``--output``.json are
kept (run directories do not outlive a checkout), fresh runs of the same name win.

    python experiments/summarize_gate_dev.py --runs runs/g17 runs/g17b runs/g17c \
        --output results/fewrel16_gate_dev
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EARLIER = {0.0: ROOT / "results" / "fewrel16_paper_fusion_summary.json",
           0.3: ROOT / "results" / "fewrel16_entity_dropout_summary.json"}
SPLIT = "split/train.json"  # every run of the comparison trains on split seed 0's file


def collect(runs: list[Path]) -> list[dict]:
    """One row per run: setting, model, gate, gate lr, dropout, hiding, seed, dev and dev
    (linker) macro-F1."""
    rows = []
    for metrics in sorted(m for directory in runs for m in directory.glob("*/metrics.json")):
        values = json.loads(metrics.read_text())
        s = values["settings"]
        if s["model"] != "ernie" or not s["train"].endswith(SPLIT):
            continue
        rows.append({"setting": s["kg_setting"], "model": "ernie",
                     "gate": s.get("knowledge_gate", "none"),
                     "gate_lr": s.get("gate_learning_rate", s["knowledge_learning_rate"]),
                     "entity_dropout": s["entity_dropout"], "hide": s["hide_sole_facts"],
                     "fact_share": s.get("train_fact_share", 1.0),
                     "links": s.get("knowledge_links", False), "seed": s["seed"],
                     "dev_macro_f1": values["macro_f1"],
                     "dev_linker_macro_f1": values.get("dev_linker_macro_f1"),
                     "source": metrics.parent.parent.name})
    for dropout, path in EARLIER.items():
        for run in json.loads(path.read_text())["runs"]:
            if run["model"] == "baseline" and dropout:
                continue  # the same baseline runs are in both files
            rows.append({
                "setting": run["setting"], "model": run["model"],
                "gate": "none" if run["model"] == "ernie" else "-", "gate_lr": None,
                "hide": False, "entity_dropout": dropout if run["model"] == "ernie" else 0.0,
                "fact_share": 1.0, "links": False,
                "seed": run["seed"], "dev_macro_f1": run["dev"]["macro_f1"],
                "dev_linker_macro_f1": (run.get("dev_linker") or {}).get("macro_f1"),
                "source": path.name})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=Path, nargs="+", required=True)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    rows = collect(args.runs)
    rows += recorded(args.output.with_suffix(".json"), rows)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["setting"], row["model"], row["gate"], row["gate_lr"] or "-",
                 row["entity_dropout"], "on" if row["hide"] else "off",
                 row["fact_share"], "on" if row.get("links") else "off")].append(row)
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
        "| setting | model | gate | gate lr | entity dropout | hide sole-fact entities "
        "| share of training facts in the KG | gate reads entity links | seeds | dev "
        "| dev, linker | per seed (dev, linker) | minus baseline per seed (dev, linker) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key in sorted(groups, key=lambda k: (k[0], k[1] != "baseline", k[2], str(k[3]),
                                             k[4], k[5], -k[6], k[7])):
        group = sorted(groups[key], key=lambda r: r["seed"])
        dev = [100 * r["dev_macro_f1"] for r in group]
        linker = [100 * r["dev_linker_macro_f1"] for r in group
                  if r["dev_linker_macro_f1"] is not None]
        per_seed = ", ".join(f"s{r['seed']} {100 * _seen(r):.2f}" for r in group)
        gains = ", ".join(f"s{r['seed']} {100 * (_seen(r) - baseline[r['seed']]):+.2f}"
                          for r in group if r["model"] == "ernie" and r["seed"] in baseline)
        lines.append(f"| {' | '.join(str(k) for k in key)} | {len(group)} | "
                     f"{_mean(dev)} | {_mean(linker) if linker else '-'} | {per_seed} | "
                     f"{gains or '-'} |")
    lines += ["", choice(groups, baseline)]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps({"runs": rows}, indent=1) + "\n")
    args.output.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def choice(groups: dict[tuple, list[dict]], baseline: dict[int, float]) -> str:
    """The rule the default follows: on the open KG (the one users have), the best mean
    dev macro-F1 (linker) among the ERNIE-KG recipes run on 3 seeds that are at or above
    the baseline on every seed; the closed KG is reported, not used to choose."""
    passing = {key: group for key, group in groups.items()
               if key[0] == "open" and key[1] == "ernie" and len(group) >= 3
               and all(_seen(r) >= baseline.get(r["seed"], 1.0) for r in group)}
    if not passing:
        return "Choice: no recipe is at or above the baseline on every seed of the open KG."
    best = max(passing, key=lambda k: statistics.mean(_seen(r) for r in passing[k]))
    return ("Choice, by this rule (the best open-KG dev macro-F1, "
            "linker, among the recipes run on 3 seeds that are at or above the baseline on "
            f"every seed; the closed KG is reported, not used to choose): gate {best[2]}, "
            f"gate lr {best[3]} (the knowledge modules' rate), entity dropout {best[4]}, "
            f"hiding sole-fact entities {best[5]}, training facts in the KG {best[6]:g}, "
            f"entity links read by the gate {best[7]}.")


def recorded(path: Path, fresh: list[dict]) -> list[dict]:
    """The run rows of an earlier output (not the earlier grids' rows, read afresh), less
    those a fresh run of the same directory and seed replaces."""
    if not path.exists():
        return []
    names = {p.name for p in EARLIER.values()}
    seen = {(r["source"], r["setting"], r["seed"], r["gate"], str(r["gate_lr"]),
             r["entity_dropout"], r["hide"], r["fact_share"], r.get("links", False))
            for r in fresh}
    return [r for r in json.loads(path.read_text())["runs"] if r["source"] not in names
            and (r["source"], r["setting"], r["seed"], r["gate"], str(r["gate_lr"]),
                 r["entity_dropout"], r["hide"], r["fact_share"], r.get("links", False))
            not in seen]


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
