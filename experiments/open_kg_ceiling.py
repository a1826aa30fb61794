"""How much can the open KG help on FewRel-16? Knowledge coverage of the test split and
the most the baseline could gain from it.

    python experiments/open_kg_ceiling.py --runs runs/fewrel16 \
        --ernie-runs runs/fewrel16 --output results/fewrel16_open_ceiling

In the open setting the KG holds the training split's facts plus CoDEx-M (1 hop around
the FewRel entities, as relation_classification.py builds it). CoDEx entities have no
names, so the linker can only reach entities named in the training mentions. For every
test instance this script records whether its head and tail are in the KG and whether
they are linkable, then asks an oracle question of each baseline run: if ERNIE-KG fixed
*every* baseline error whose head (or tail, or both) it can see, how much would
macro-F1 rise? A gain above that ceiling cannot come from knowledge. It also splits
each ERNIE-KG run's gain over the baseline by what it could see.

Writes OUTPUT.md and OUTPUT.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from sklearn.metrics import f1_score

from ernie_kg.data.fewrel import load_fewrel
from ernie_kg.data.knowledge import fewrel_knowledge
from ernie_kg.paths import PROJECT_ROOT

#: Which of an instance's entities the model must see for an error to count as fixable.
CONDITIONS = {
    "head and tail": lambda head, tail: head and tail,
    "head": lambda head, tail: head,
    "head or tail": lambda head, tail: head or tail,
}


def _predictions(path: Path) -> list[str]:
    predictions = json.loads(path.read_text(encoding="utf-8"))["predictions"]
    return [p["label"] if isinstance(p, dict) else p for p in predictions]


def coverage(split: Path, codex: Path) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Per test instance: gold label and whether head/tail are in the KG / linkable."""
    train = load_fewrel(split / "train.json")
    kg, _ = fewrel_knowledge([train], codex, hops=1)
    named = {i[role][1] for instances in train.values() for i in instances for role in "ht"}
    linkable = {e for e in named if e in kg}
    rows = []
    for label, instances in load_fewrel(split / "test.json").items():
        for instance in instances:
            head, tail = instance["h"][1], instance["t"][1]
            rows.append({"label": label, "head_in_kg": head in kg, "tail_in_kg": tail in kg,
                         "head_linkable": head in linkable, "tail_linkable": tail in linkable})
    shares = {key: sum(r[key] for r in rows) / len(rows)
              for key in ("head_in_kg", "tail_in_kg", "head_linkable", "tail_linkable")}
    return rows, shares


def ceilings(rows: list[dict[str, Any]], predicted: list[str]) -> dict[str, float]:
    """Macro-F1 gain (points) if every error with the condition's entities were fixed."""
    gold = [r["label"] for r in rows]
    base = f1_score(gold, predicted, average="macro")
    gains = {}
    for name, visible in CONDITIONS.items():
        fixed = [r["label"] if visible(r["head_linkable"], r["tail_linkable"]) else p
                 for r, p in zip(rows, predicted)]
        gains[name] = 100 * (f1_score(gold, fixed, average="macro") - base)
    errors = [r for r, p in zip(rows, predicted) if r["label"] != p]
    gains["errors"] = len(errors)
    gains["errors_with_linkable_head"] = sum(r["head_linkable"] for r in errors)
    gains["errors_with_linkable_tail"] = sum(r["tail_linkable"] for r in errors)
    return gains


def gain_by_visibility(rows: list[dict[str, Any]], baseline: list[str], ernie: list[str]
                       ) -> dict[str, int]:
    """Net instances ERNIE-KG gets right that the baseline gets wrong, by what it sees."""
    net: dict[str, int] = {}
    for r, b, e in zip(rows, baseline, ernie):
        seen = ("head and tail" if r["head_linkable"] and r["tail_linkable"] else
                "head only" if r["head_linkable"] else
                "tail only" if r["tail_linkable"] else "neither")
        net[seen] = net.get(seen, 0) + (e == r["label"]) - (b == r["label"])
    return net


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=Path, default=PROJECT_ROOT / "runs" / "fewrel16")
    p.add_argument("--ernie-runs", type=Path, action="append", default=[],
                   help="directories holding open-ernie-seed<S> runs to split by visibility")
    p.add_argument("--codex-dir", type=Path,
                   default=PROJECT_ROOT.parent / "shared/data/codex/codex-m")
    p.add_argument("--output", type=Path, required=True)
    args = p.parse_args(argv)

    rows, shares = coverage(args.runs / "split", args.codex_dir)
    seeds = sorted(int(d.name.rsplit("seed", 1)[1]) for d in args.runs.glob("open-baseline-seed*")
                   if (d / "test_metrics.json").exists())
    baselines = {s: _predictions(args.runs / f"open-baseline-seed{s}" / "test_metrics.json")
                 for s in seeds}
    per_seed = {s: ceilings(rows, baselines[s]) for s in seeds}
    gains: dict[str, dict[str, dict[str, int]]] = {}
    for runs in args.ernie_runs or [args.runs]:
        for s in seeds:
            ernie = runs / f"open-ernie-seed{s}" / "test_metrics.json"
            if ernie.exists():
                gains.setdefault(str(runs), {})[str(s)] = gain_by_visibility(
                    rows, baselines[s], _predictions(ernie))
    result = {"test_instances": len(rows), "coverage": shares,
              "ceiling_per_seed": per_seed,
              "ceiling_mean": {name: statistics.mean(per_seed[s][name] for s in seeds)
                               for name in CONDITIONS} if seeds else {},
              "ernie_net_gain_by_visibility": gains}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.output.with_suffix(".md").write_text(markdown(result, args))
    print(json.dumps(result["ceiling_mean"], indent=2))
    return result


def markdown(result: dict[str, Any], args: argparse.Namespace) -> str:
    c = result["coverage"]
    lines = [
        "# FewRel-16, open KG: what the KG can see of the test split, and the ceiling it sets",
        "",
        f"`python experiments/open_kg_ceiling.py --runs {args.runs}` (test split: "
        f"{result['test_instances']} instances). Open KG: training facts + CoDEx-M (1 hop). "
        "Linkable: in the KG and named by a training mention (CoDEx entities have no names).",
        "",
        "| test instances whose ... | share |",
        "|---|---:|",
        f"| head is in the KG | {c['head_in_kg']:.1%} |",
        f"| head is linkable | {c['head_linkable']:.1%} |",
        f"| tail is in the KG | {c['tail_in_kg']:.1%} |",
        f"| tail is linkable | {c['tail_linkable']:.1%} |",
        "",
        "Oracle ceiling: the baseline's test macro-F1 gain (points) if *every* baseline error "
        "whose named entities are linkable were fixed.",
        "",
        "| seed | errors | with linkable head | with linkable tail | "
        + " | ".join(f"ceiling, {n} seen" for n in CONDITIONS) + " |",
        "|---|---:|---:|---:|" + "---:|" * len(CONDITIONS),
    ]
    for seed, g in result["ceiling_per_seed"].items():
        lines.append(f"| {seed} | {g['errors']} | {g['errors_with_linkable_head']} | "
                     f"{g['errors_with_linkable_tail']} | "
                     + " | ".join(f"+{g[n]:.2f}" for n in CONDITIONS) + " |")
    if result["ceiling_mean"]:
        lines.append("| mean | | | | " + " | ".join(
            f"+{result['ceiling_mean'][n]:.2f}" for n in CONDITIONS) + " |")
    if result["ernie_net_gain_by_visibility"]:
        lines += ["", "ERNIE-KG's net gain over the baseline (instances right minus "
                  "instances lost), by which of head/tail its linker could see:", "",
                  "| runs | seed | head and tail | head only | tail only | neither |",
                  "|---|---|---:|---:|---:|---:|"]
        for runs, by_seed in result["ernie_net_gain_by_visibility"].items():
            for seed, net in by_seed.items():
                lines.append(f"| {runs} | {seed} | " + " | ".join(
                    f"{net.get(k, 0):+d}" for k in
                    ("head and tail", "head only", "tail only", "neither")) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
