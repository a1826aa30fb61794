"""Two FewRel-16 grids side by side (e.g. the code before and after a change), run by run.

    python experiments/compare_fewrel16_runs.py --before runs/fewrel16_before \
        --after runs/fewrel16_after --output results/fewrel16_one_alias_table \
        [--label-before "b635abf" --label-after "HEAD"] \
        [--linking-before OLD.json --linking-after NEW.json]

Reads every ``<setting>-<model>-seed<S>/`` of both ``run_fewrel16.sh`` run directories
(``metrics.json``: dev; ``test_metrics.json``: test, scored by ``ernie-kg evaluate`` with
the model's own linker) and writes OUTPUT.json and OUTPUT.md: per run, dev and test
macro-F1 before and after, the change, the share of test predictions that agree, and
the mean per (setting, model) over the seeds both grids hold; with ``--linking-*``, the
linker's FewRel-16 accuracies (``experiments/linking_eval.py`` outputs) side by side.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
from pathlib import Path
from typing import Any

from ernie_kg.io import read_json, write_atomic, write_json
from ernie_kg.machine import cpu_model

LINKING_METRICS = ("in_kb_accuracy", "prior_only_accuracy", "nil_accuracy",
                   "end_to_end_recall")
RUN = re.compile(r"^(?P<setting>\w+)-(?P<model>\w+)-seed(?P<seed>\d+)$")


def runs(directory: Path) -> dict[tuple[str, str, int], dict[str, Any]]:
    """(setting, model, seed) -> dev metrics, test metrics, of every finished run."""
    found = {}
    for run in sorted(directory.iterdir()):
        match = RUN.match(run.name)
        if match is None or not (run / "test_metrics.json").is_file():
            continue
        key = (match["setting"], match["model"], int(match["seed"]))
        found[key] = {"dev": read_json(run / "metrics.json"),
                      "test": read_json(run / "test_metrics.json")}
    return found


def compare(before: dict, after: dict) -> list[dict[str, Any]]:
    """One row per run both grids hold."""
    rows = []
    for key in sorted(set(before) & set(after)):
        old, new = before[key], after[key]
        predictions = zip(old["test"]["predictions"], new["test"]["predictions"])
        agree = sum(a == b for a, b in predictions) / len(new["test"]["predictions"])
        rows.append({
            "setting": key[0], "model": key[1], "seed": key[2],
            "dev_macro_f1_before": old["dev"]["macro_f1"],
            "dev_macro_f1_after": new["dev"]["macro_f1"],
            "test_macro_f1_before": old["test"]["macro_f1"],
            "test_macro_f1_after": new["test"]["macro_f1"],
            "test_change": new["test"]["macro_f1"] - old["test"]["macro_f1"],
            "test_prediction_agreement": agree,
        })
    return rows


def means(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and standard deviation over seeds of each (setting, model)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["setting"], row["model"]), []).append(row)
    summary = []
    for (setting, model), group in sorted(groups.items()):
        entry: dict[str, Any] = {"setting": setting, "model": model, "seeds": len(group)}
        for name in ("test_macro_f1_before", "test_macro_f1_after", "test_change"):
            values = [r[name] for r in group]
            entry[name] = statistics.mean(values)
            entry[name + "_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        summary.append(entry)
    return summary


def machine() -> dict[str, str]:
    """CPU model and Python version of this run."""
    return {"cpu": cpu_model(), "python": platform.python_version()}


def markdown(result: dict[str, Any]) -> str:
    """The comparison as Markdown tables."""
    lines = [f"# FewRel-16: {result['label_before']} vs {result['label_after']}", "",
             f"Machine: {result['machine']['cpu']}, Python {result['machine']['python']}. "
             "Test macro-F1 is scored by `ernie-kg evaluate` with each model's own linker.",
             "", "| setting | model | seed | dev before | dev after | test before | "
             "test after | change | same prediction |", "|---|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        lines.append(
            f"| {r['setting']} | {r['model']} | {r['seed']} | {100 * r['dev_macro_f1_before']:.2f}"
            f" | {100 * r['dev_macro_f1_after']:.2f} | {100 * r['test_macro_f1_before']:.2f} | "
            f"{100 * r['test_macro_f1_after']:.2f} | {100 * r['test_change']:+.2f} | "
            f"{100 * r['test_prediction_agreement']:.1f}% |")
    lines += ["", "| setting | model | seeds | test before | test after | change |",
              "|---|---|---|---|---|---|"]
    linking = result.get("linking")
    for m in result["means"]:
        lines.append(
            f"| {m['setting']} | {m['model']} | {m['seeds']} | "
            f"{100 * m['test_macro_f1_before']:.2f} ± {100 * m['test_macro_f1_before_std']:.2f}"
            f" | {100 * m['test_macro_f1_after']:.2f} ± {100 * m['test_macro_f1_after_std']:.2f}"
            f" | {100 * m['test_change']:+.2f} ± {100 * m['test_change_std']:.2f} |")
    if linking:
        lines += ["", "Linking (`experiments/linking_eval.py`, 80/20 split of FewRel-16):", "",
                  "| metric | before | after |", "|---|---|---|"]
        lines += [f"| {name} | {old:.4f} | {new:.4f} |" for name, (old, new) in linking.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Parse the arguments, compare, write OUTPUT.json and OUTPUT.md."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--after", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True, help="path without suffix")
    parser.add_argument("--label-before", default="before")
    parser.add_argument("--label-after", default="after")
    parser.add_argument("--linking-before", type=Path)
    parser.add_argument("--linking-after", type=Path)
    args = parser.parse_args()
    rows = compare(runs(args.before), runs(args.after))
    if not rows:
        raise SystemExit(f"no finished run is in both {args.before} and {args.after}")
    result = {"label_before": args.label_before, "label_after": args.label_after,
              "machine": machine(), "runs": rows, "means": means(rows)}
    if args.linking_before and args.linking_after:
        old, new = read_json(args.linking_before), read_json(args.linking_after)
        result["linking"] = {name: (old[name], new[name]) for name in LINKING_METRICS}
    write_json(args.output.with_suffix(".json"), result)
    text = markdown(result)
    write_atomic(args.output.with_suffix(".md"), lambda handle: handle.write(text))
    print(json.dumps(result["means"], indent=1))


if __name__ == "__main__":
    main()
