"""Domain post-training recipes tried on dev: each probe's recipe, MLM loss and its
fine-tuned run's dev and test scores, beside plain fine-tuning of the same seed.

    python experiments/summarize_post_probes.py \\
        --probe runs/absa_probe/semeval-nli_m-post-seed0 --output results/absa_post_probes

Why a table of its own: ``results/absa.md`` compares the post-training recipe that
``run_absa.sh`` used with plain fine-tuning; choosing that recipe needs the recipes side
by side on dev (never on test), with what post-training did to the MLM loss. Each
``--probe`` is a run of ``experiments/absa.py --post-trained DIR``; its recipe is read
from ``DIR/pretraining_settings.json`` and its loss from ``DIR/log.jsonl``. The plain runs
(and the post-trained runs of the recipe in ``results/absa.md``, whose backbone
directories may be gone) are read from ``--summary`` (``results/absa.json``), as
measured. Earlier probes recorded in ``OUTPUT.json`` are kept.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from summarize_absa import HEADERS, METRICS, NAMES, relative  # noqa: E402

RECIPE = ("max_steps", "batch_size", "learning_rate", "head_learning_rate",
          "head_warmup_steps", "freeze_word_embeddings", "held_bottom_layers",
          "interpolation")


def _mlm_loss(log: Path) -> dict[str, float] | None:
    """Mean MLM loss over the first and the last 10% of the logged steps."""
    if not log.is_file():
        return None
    losses = [json.loads(line)["mlm_loss"] for line in log.read_text().splitlines()
              if line.strip() and "mlm_loss" in line]
    if not losses:
        return None
    tenth = max(1, len(losses) // 10)
    return {"first": sum(losses[:tenth]) / tenth, "last": sum(losses[-tenth:]) / tenth}


def probe_record(run: Path) -> dict[str, Any]:
    """One probe: its fine-tuned run's scores (points) and its backbone's recipe."""
    path = run / "metrics.json"
    if not path.is_file():
        raise SystemExit(f"{path}: missing (has the run finished?)")
    metrics = json.loads(path.read_text(encoding="utf-8"))
    settings = metrics["settings"]
    backbone = Path(settings["backbone"])
    recipe_path = backbone / "pretraining_settings.json"
    if not recipe_path.is_file():
        raise SystemExit(f"{recipe_path}: missing: {run} was not fine-tuned from a "
                         "post-trained backbone")
    # backbones post-trained before the setting existed trained their word embeddings
    recipe = {"freeze_word_embeddings": False, "held_bottom_layers": 0, "interpolation": 1.0,
              **json.loads(recipe_path.read_text(encoding="utf-8"))}
    dataset = settings["dataset"]
    return {"run": relative(run), "dataset": dataset, "setting": settings["setting"],
            "seed": settings["seed"], "backbone": relative(backbone),
            "recipe": {k: recipe[k] for k in RECIPE},
            "mlm_loss": _mlm_loss(backbone / "log.jsonl"),
            "dev_absa_score": 100 * metrics["dev"]["absa_score"],
            "test": {k: 100 * metrics[k] for k in METRICS[dataset]}}


def reference_runs(summary: Path, probes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs of ``summary`` (fine-tuned or post-trained) of the probes' dataset,
    setting and seed."""
    keys = {(p["dataset"], p["setting"], p["seed"]) for p in probes}
    runs = json.loads(summary.read_text(encoding="utf-8"))["runs"]
    return [r for r in runs if (r["dataset"], r["setting"], r["seed"]) in keys
            and r["mode"] in ("fine-tuned", "post-trained")]


def earlier_defaults(references: list[dict[str, Any]], recorded: list[dict[str, Any]],
                     probes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The plain runs of ``references``, plus the post-trained runs of the earlier default
    recipe: those the summary holds when it ran with it, else as recorded in OUTPUT.json
    (the summary's post-trained runs are now the present default's, probes here)."""
    probed = {p["run"] for p in probes}
    kept = [r for r in references if r["mode"] == "fine-tuned" or r["run"] not in probed]
    names = {r["run"] for r in kept}
    return kept + [r for r in recorded if r["mode"] == "post-trained" and r["run"] not in names
                   and r["run"] not in probed]


def markdown(probes: list[dict[str, Any]], references: list[dict[str, Any]],
             summary: Path, notes: list[str] = ()) -> str:
    lines = ["# Domain post-training recipes on dev", "",
             "Each recipe post-trains the packaged MiniLM on the benchmark's training "
             "sentences (`ernie-kg pretrain post-train`, whole-word MLM), then fine-tunes "
             "as `experiments/absa.py` does; the recipe is chosen by the dev score (mean "
             "of the two headline metrics), never on test. `plain`: no post-training, read "
             f"from `{relative(summary)}` as measured; `earlier default`: "
             "`pretrain post-train`'s defaults before this table chose the present ones "
             "(1000 steps, everything trained, saved as trained), as recorded when it ran.",
             ""]
    lines += [f"- {note}" for note in notes] + ([""] if notes else [])
    for dataset in sorted({p["dataset"] for p in probes}):
        metrics = METRICS[dataset]
        lines += [f"## {dataset}", "", "| setting | seed | backbone | steps | lr | head "
                  "warm-up | held as loaded | interpolation | MLM loss first -> last 10% | "
                  "dev score | "
                  + " | ".join(f"test {HEADERS[m]}" for m in metrics) + " |",
                  "|---|---|---|---|---|---|---|---|---|---|" + "---|" * len(metrics)]
        rows = [(r, "plain" if r["mode"] == "fine-tuned" else "earlier default", None)
                for r in references if r["dataset"] == dataset]
        rows += [(p, p["backbone"], p) for p in probes if p["dataset"] == dataset]
        for record, label, probe in rows:
            recipe = probe["recipe"] if probe else {}
            loss = probe and probe["mlm_loss"]
            lines.append(
                f"| {NAMES[record['setting']]} | {record['seed']} | {label} | "
                f"{recipe.get('max_steps', '–')} | {recipe.get('learning_rate', '–')} | "
                f"{recipe.get('head_warmup_steps', '–')} | {_held(recipe)} | "
                f"{recipe.get('interpolation', 1.0) if recipe else '–'} | "
                + (f"{loss['first']:.2f} -> {loss['last']:.2f}" if loss else "–")
                + f" | {record['dev_absa_score']:.2f} | "
                + " | ".join(f"{record['test'][m]:.2f}" for m in metrics) + " |")
        lines.append("")
    return "\n".join(lines)


def _held(recipe: dict[str, Any]) -> str:
    """What post-training held as loaded (probes recorded before these settings held
    nothing)."""
    if not recipe:
        return "–"
    layers = recipe.get("held_bottom_layers", 0)
    if layers:
        return f"embeddings, layers 0-{layers - 1}"
    return "word embeddings" if recipe.get("freeze_word_embeddings", False) else "nothing"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--probe", type=Path, action="append", default=[],
                   help="a fine-tuned run from a post-trained backbone (repeatable)")
    p.add_argument("--summary", type=Path, default=Path("results/absa.json"))
    p.add_argument("--output", type=Path, default=Path("results/absa_post_probes"))
    p.add_argument("--note", action="append", default=[],
                   help="a line for the report (repeatable; kept with OUTPUT.json)")
    args = p.parse_args(argv)
    fresh = [probe_record(run) for run in args.probe]
    earlier_path = args.output.with_suffix(".json")
    recorded = json.loads(earlier_path.read_text()) if earlier_path.is_file() else {}
    earlier = recorded.get("probes", [])
    notes = args.note or recorded.get("notes", [])
    names = {p["run"] for p in fresh}
    probes = sorted(fresh + [p for p in earlier if p["run"] not in names],
                    key=lambda p: (p["dataset"], p["run"]))
    if not probes:
        raise SystemExit("no probes: pass --probe RUN (or keep OUTPUT.json)")
    references = earlier_defaults(reference_runs(args.summary, probes),
                                  recorded.get("references", []), probes)
    result = {"summary": relative(args.summary), "probes": probes, "references": references,
              "notes": notes}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    earlier_path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    args.output.with_suffix(".md").write_text(markdown(probes, references, args.summary, notes),
                                              encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
