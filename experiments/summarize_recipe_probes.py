"""Fine-tuning recipes (epochs, learning rate) of the ABSA settings tried on dev, beside
the recorded recipe's run of the same dataset, setting and seed.

    python experiments/summarize_recipe_probes.py \\
        --probe runs/absa_recipe/semeval-nli_m-ep5-seed0 --output results/absa_recipe_probes

Why: ``results/absa.md``'s recipe (3 epochs at 5e-5) was set, not chosen, and a 6-layer
384-wide backbone may want more steps or a larger rate than the paper's BERT-base. Each
``--probe`` is a run of ``experiments/absa.py`` with ``--epochs`` / ``--lr``; the table
shows its dev score (mean of the two headline metrics, what ``absa.py`` keeps the best
epoch by) after every epoch, the kept epoch's, and the recorded recipe's dev score of the
same seed (``--summary``, ``results/absa.json``, as measured). Test scores are shown for
completeness; a recipe is chosen on dev. Earlier probes recorded in ``OUTPUT.json`` are
kept.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from summarize_absa import HEADERS, METRICS, NAMES, merged, relative  # noqa: E402


def probe_record(run: Path) -> dict[str, Any]:
    """One probe: its recipe, dev score per epoch and kept, test headline metrics (points)."""
    path = run / "metrics.json"
    if not path.is_file():
        raise SystemExit(f"{path}: missing (has the run finished?)")
    metrics = json.loads(path.read_text(encoding="utf-8"))
    settings = metrics["settings"]
    log = run / "log.jsonl"  # none for ``single``: one log per classifier, no joint score
    per_epoch = [json.loads(line) for line in
                 (log.read_text(encoding="utf-8").splitlines() if log.is_file() else [])
                 if "eval_absa_score" in line]
    dataset = settings["dataset"]
    return {"run": relative(run), "dataset": dataset, "setting": settings["setting"],
            "seed": settings["seed"], "epochs": settings["epochs"],
            "learning_rate": settings["learning_rate"],
            "dev_by_epoch": [100 * e["eval_absa_score"] for e in per_epoch],
            "dev_absa_score": 100 * metrics["dev"]["absa_score"],
            "test": {k: 100 * metrics[k] for k in METRICS[dataset]}}


def recorded_recipe_run(summary: dict[str, Any], probe: dict[str, Any]
                        ) -> dict[str, Any] | None:
    """The recorded recipe's plain fine-tuned run of the probe's dataset, setting, seed."""
    for run in summary["runs"]:
        if (run["mode"] == "fine-tuned" and run["dataset"] == probe["dataset"]
                and run["setting"] == probe["setting"] and run["seed"] == probe["seed"]):
            return run
    return None


def markdown(probes: list[dict[str, Any]], summary: dict[str, Any], summary_path: Path,
             notes: list[str]) -> str:
    lines = ["# Fine-tuning recipes on dev (ABSA)", "",
             "Each probe is `experiments/absa.py` with another number of epochs or "
             "learning rate (everything else the recorded recipe: batch 24, linear decay, "
             "the epoch kept by the dev score, the mean of the two headline metrics); "
             "`recorded` is the recorded recipe's run of the same seed, read from "
             f"`{relative(summary_path)}` as measured. A recipe is chosen on dev; test is "
             "shown, not used.", ""]
    lines += [f"- {note}" for note in notes] + ([""] if notes else [])
    for dataset in sorted({p["dataset"] for p in probes}):
        metrics = METRICS[dataset]
        lines += [f"## {dataset}", "",
                  "| setting | seed | recipe | dev score after each epoch | dev score kept "
                  "| dev change | " + " | ".join(f"test {HEADERS[m]}" for m in metrics) + " |",
                  "|---|---|---|---|---|---|" + "---|" * len(metrics)]
        shown: set[str] = set()
        for probe in [p for p in probes if p["dataset"] == dataset]:
            reference = recorded_recipe_run(summary, probe)
            if reference is not None and reference["run"] not in shown:
                shown.add(reference["run"])
                recipe = reference.get("recipe", {})
                lines.append(
                    f"| {NAMES[probe['setting']]} | {probe['seed']} | recorded: "
                    f"{recipe.get('epochs', '?'):g} epochs, lr {recipe.get('learning_rate', '?')}"
                    f" | – | {reference['dev_absa_score']:.2f} | – | "
                    + " | ".join(f"{reference['test'][m]:.2f}" for m in metrics) + " |")
            change = ("–" if reference is None
                      else f"{probe['dev_absa_score'] - reference['dev_absa_score']:+.2f}")
            epochs = (" / ".join(f"{score:.2f}" for score in probe["dev_by_epoch"])
                      or "– (one classifier per aspect)")
            lines.append(
                f"| {NAMES[probe['setting']]} | {probe['seed']} | {probe['epochs']:g} epochs, "
                f"lr {probe['learning_rate']} | {epochs} | {probe['dev_absa_score']:.2f} | "
                f"{change} | " + " | ".join(f"{probe['test'][m]:.2f}" for m in metrics) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--probe", type=Path, action="append", default=[],
                   help="a finished experiments/absa.py run (repeatable)")
    p.add_argument("--summary", type=Path, default=Path("results/absa.json"))
    p.add_argument("--output", type=Path, default=Path("results/absa_recipe_probes"))
    p.add_argument("--note", action="append", default=[],
                   help="a line for the report (repeatable; kept with OUTPUT.json)")
    args = p.parse_args(argv)
    earlier_path = args.output.with_suffix(".json")
    recorded = json.loads(earlier_path.read_text()) if earlier_path.is_file() else {}
    fresh = [probe_record(run) for run in args.probe]
    probes, _ = merged(fresh, recorded.get("probes", []))  # a fresh run wins over its record
    probes.sort(key=lambda p: (p["dataset"], p["setting"], p["seed"], p["run"]))
    if not probes:
        raise SystemExit("no probes: pass --probe RUN (or keep OUTPUT.json)")
    summary = json.loads(args.summary.read_text(encoding="utf-8"))
    notes = args.note or recorded.get("notes", [])
    result = {"summary": relative(args.summary), "probes": probes, "notes": notes}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    earlier_path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    args.output.with_suffix(".md").write_text(
        markdown(probes, summary, args.summary, notes), encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
