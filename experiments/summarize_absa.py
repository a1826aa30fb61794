"""Summarise the ABSA grid beside the paper's BERT-base figures: mean ± std table, JSON, plot.

    python experiments/summarize_absa.py --runs runs/absa --output results/absa

Reads ``RUNS/<dataset>-<setting>[-features|-post|-placebo]-seed<S>/metrics.json``
(experiments/absa.py; ``-features``: experiments/absa_features.py; ``-post``: fine-tuned
from a post-trained backbone; ``-placebo``: from experiments/placebo_backbone.py's) and
writes ``OUTPUT.md``, ``OUTPUT.json`` and ``OUTPUT.png``: every contract metric of every
setting, mean ± std over seeds in points, the paper's figure beside it (Sun, Huang and Qiu
2019, Tables 3 and 4, as the data README lists them), the seed-paired feature-based,
post-training and placebo comparisons, minutes per run and the machines. Runs recorded
in an earlier ``OUTPUT.json`` whose directories are gone (a new checkout) are kept as
measured (``--fresh`` drops them). Paths in the outputs are relative to the project root.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from absa_pairs import (  # noqa: E402  experiments/absa_pairs.py: the seed-paired tables
    HEADLINE,
    cell,
    feature_gap,
    feature_gap_markdown,
    placebo_markdown,
    post_training_gain,
    post_training_markdown,
    stats,
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
RUN_NAME = re.compile(r"^(?P<dataset>sentihood|semeval)-(?P<setting>single|qa_m|nli_m|qa_b|"
                      r"nli_b)(?P<variant>-features|-post|-placebo)?-seed(?P<seed>\d+)$")
#: A run's mode, by its name's variant: plain fine-tuning, frozen features
#: (experiments/absa_features.py), fine-tuning from a post-trained backbone or from its
#: placebo (experiments/placebo_backbone.py).
MODES = {None: "fine-tuned", "-features": "feature-based", "-post": "post-trained",
         "-placebo": "placebo"}
SETTINGS = ("single", "qa_m", "nli_m", "qa_b", "nli_b")
NAMES = {"single": "BERT-single", "qa_m": "BERT-pair-QA-M", "nli_m": "BERT-pair-NLI-M",
         "qa_b": "BERT-pair-QA-B", "nli_b": "BERT-pair-NLI-B"}
METRICS = {"sentihood": ("aspect_strict_accuracy", "aspect_macro_f1", "aspect_auc",
                         "sentiment_accuracy", "sentiment_auc"),
           "semeval": ("precision", "recall", "f1", "accuracy_4way", "accuracy_3way",
                       "accuracy_binary")}
HEADERS = {"aspect_strict_accuracy": "asp acc", "aspect_macro_f1": "asp F1",
           "aspect_auc": "asp AUC", "sentiment_accuracy": "sent acc",
           "sentiment_auc": "sent AUC", "precision": "P", "recall": "R", "f1": "F1",
           "accuracy_4way": "4-way", "accuracy_3way": "3-way", "accuracy_binary": "binary"}
TITLES = {"sentihood": "SentiHood (aspect: strict accuracy, macro-F1, AUC; sentiment: "
                       "accuracy, AUC)",
          "semeval": "SemEval-2014 restaurants (subtask 3: P, R, F1; subtask 4: accuracy "
                     "4-way, 3-way, binary)"}
#: The settings a run's recipe is told by (a mix of values is named in the summary).
RECIPE = ("backbone", "knowledge", "epochs", "learning_rate", "batch_size", "max_length",
          "limit", "eval_limit")
#: The paper's best BERT-base figures the issue measures the best pair setting against.
TARGETS = {"sentihood": {"aspect_macro_f1": 86.4, "sentiment_accuracy": 93.6},
           "semeval": {"f1": 92.18, "accuracy_4way": 85.9}}
#: Under the claims table: what the last two columns say, and what was tried.
WHY_THE_GAPS = (
    "Why the gaps to the paper: its figures come from BERT-base (12 layers, 768 wide, "
    "110M parameters, pre-trained with MLM); ours from the packaged all-MiniLM-L6-v2 (6 "
    "layers, 384 wide, 22M parameters, distilled and then trained for sentence "
    "embeddings, no MLM head). The last column is the same backbone's `single` against "
    "the paper's `single`: where it trails by as much as the pair setting does or more, "
    "the shortfall is the backbone's, not the pair construction's. No larger BERT-family "
    "backbone installs offline here (PyPI's microsoft-minilm-l12-h384-uncased and "
    "biobert-pytorch ship no weights: they download from the model hub at run time), so "
    "the gap is not measured at BERT-base size; any Hugging Face BERT path can be given "
    "as the backbone where a hub is reachable.")
#: The paper's BERT-base (12 x 768) figures, in points, in METRICS order.
PAPER = {
    "sentihood": {"single": (73.7, 81.0, 96.4, 85.5, 84.2),
                  "qa_m": (79.4, 86.4, 97.0, 93.6, 96.4),
                  "nli_m": (78.3, 87.0, 97.5, 92.1, 96.5),
                  "qa_b": (79.2, 87.9, 97.1, 93.3, 97.0),
                  "nli_b": (79.8, 87.5, 96.6, 92.8, 96.9)},
    "semeval": {"single": (92.78, 89.07, 90.89, 83.7, 86.9, 93.3),
                "qa_m": (92.87, 90.24, 91.54, 85.2, 89.3, 95.4),
                "nli_m": (93.15, 90.24, 91.67, 85.1, 88.7, 94.4),
                "qa_b": (93.04, 89.95, 91.47, 85.9, 89.9, 95.6),
                "nli_b": (93.57, 90.83, 92.18, 84.6, 88.7, 95.1)},
}


def relative(path: str | Path) -> str:
    """``path`` relative to the project root when absolute (results name no machine's
    directories)."""
    return os.path.relpath(path, PROJECT_ROOT) if Path(path).is_absolute() else str(path)


def recorded(output: Path) -> list[dict[str, Any]]:
    """The run records of the summary already at ``OUTPUT.json`` (none when absent). Run
    directories do not outlive a checkout; their records do, so a grid built over several
    sessions keeps every run it measured."""
    path = output.with_suffix(".json")
    if not path.is_file():
        return []
    try:
        runs = json.loads(path.read_text(encoding="utf-8"))["runs"]
    except (ValueError, KeyError, TypeError) as error:
        raise SystemExit(f"{relative(path)}: not a summary of this script ({error}); move "
                         "it away or pass --fresh") from None
    return [r for r in runs if RUN_NAME.match(Path(r["run"]).name)]


def merged(fresh: list[dict[str, Any]], earlier: list[dict[str, Any]]
           ) -> tuple[list[dict[str, Any]], list[str]]:
    """``fresh`` plus the ``earlier`` records whose run is not among them (a run
    directory always wins over its old record), and the names of those kept."""
    names = {Path(r["run"]).name for r in fresh}
    kept = [r for r in earlier if Path(r["run"]).name not in names]
    records = sorted(fresh + kept, key=lambda r: Path(r["run"]).name)
    return records, sorted(Path(r["run"]).name for r in kept)


def collect(runs: Path) -> list[dict[str, Any]]:
    """One record per finished run: test metrics (points), dev score, minutes, machine."""
    records: list[dict[str, Any]] = []
    if not runs.is_dir():
        return records
    for directory in sorted(p for p in runs.iterdir() if p.is_dir()):
        match = RUN_NAME.match(directory.name)
        path = directory / "metrics.json"
        if not match or not path.is_file():
            continue
        metrics = json.loads(path.read_text(encoding="utf-8"))
        dataset = match["dataset"]
        timings, machine = metrics.get("timings", {}), metrics.get("machine", {})
        records.append({
            "run": relative(directory), "dataset": dataset, "setting": match["setting"],
            "seed": int(match["seed"]),
            "mode": MODES[match["variant"]],
            "test": {k: _points(metrics.get(k)) for k in METRICS[dataset]},
            "dev_absa_score": _points(metrics.get("dev", {}).get("absa_score")),
            "minutes": timings.get("minutes"),
            "train_examples_per_second": timings.get("train_examples_per_second"),
            "machine": {k: machine.get(k) for k in ("platform", "cpu", "torch_threads")},
            "load_average": machine.get("load_average"),
            "recipe": {k: metrics.get("settings", {}).get(k) for k in RECIPE},
        })
    return records


def _points(value: float | None) -> float | None:
    return None if value is None or value != value else 100 * value  # NaN: not reported


def aggregate(records: list[dict[str, Any]]) -> dict[str, Any]:
    """``{dataset: {setting: {"seeds", "test": {metric: stats}, "paper", "minutes",
    ...}}}`` in the paper's order."""
    grouped: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for record in records:
        if record["mode"] == "fine-tuned":
            grouped[record["dataset"], record["setting"]].append(record)
    table: dict[str, Any] = {}
    for dataset in METRICS:
        for setting in SETTINGS:
            runs = grouped.get((dataset, setting))
            if not runs:
                continue
            table.setdefault(dataset, {})[setting] = {
                "seeds": sorted(r["seed"] for r in runs),
                "test": {m: stats([r["test"][m] for r in runs]) for m in METRICS[dataset]},
                "paper": dict(zip(METRICS[dataset], PAPER[dataset][setting])),
                "dev_absa_score": stats([r["dev_absa_score"] for r in runs]),
                "dev_by_seed": {r["seed"]: r["dev_absa_score"] for r in runs
                                if r["dev_absa_score"] is not None},
                "minutes": stats([r["minutes"] for r in runs]),
                "train_examples_per_second": stats([r["train_examples_per_second"]
                                                     for r in runs]),
            }
    return table


def dev_ranking(pairs: dict[str, Any]) -> tuple[list[int], dict[str, float]]:
    """The seeds every pair setting has a dev score for, and each setting's mean dev
    score over them (none in common: over its own seeds). Why: a setting run on 1 seed
    would otherwise be ranked by that seed's dev score against the others' means over
    3, and seeds differ by more than settings do."""
    common = sorted(set.intersection(*(set(row["dev_by_seed"]) for row in pairs.values())))
    scores = {setting: statistics.mean(row["dev_by_seed"][seed] for seed in common)
              if common else row["dev_absa_score"]["mean"] for setting, row in pairs.items()}
    return common, scores


def claims(table: dict[str, Any]) -> dict[str, Any]:
    """Per dataset: the best pair setting *on dev* (mean dev score over the seeds every
    pair setting has, :func:`dev_ranking`), its headline test metrics (over all
    its seeds) against ``single`` (difference, and whether it exceeds both stds) and
    against the paper's BERT-base figures (:data:`TARGETS`); single against the paper's
    single (:data:`PAPER`), which tells the backbone's share of the gap from the pair
    construction's."""
    found: dict[str, Any] = {}
    for dataset, settings in table.items():
        pairs = {s: row for s, row in settings.items()
                 if s != "single" and row["dev_absa_score"]["mean"] is not None}
        if not pairs:
            continue
        compared, dev_scores = dev_ranking(pairs)
        best = max(dev_scores, key=dev_scores.get)
        row, single = pairs[best], settings.get("single")
        entry: dict[str, Any] = {"best_pair_on_dev": best, "seeds": row["seeds"],
                                 "dev_seeds_compared": compared, "dev_scores": dev_scores,
                                 "metrics": {}}
        for metric in HEADLINE[dataset]:
            pair_stats = row["test"][metric]
            item = {"best_pair": pair_stats, "paper": TARGETS[dataset][metric],
                    "gap_to_paper": pair_stats["mean"] - TARGETS[dataset][metric]}
            if single is not None:
                single_stats = single["test"][metric]
                gain = pair_stats["mean"] - single_stats["mean"]
                spread = max(pair_stats["std"] or 0.0, single_stats["std"] or 0.0)
                both = min(pair_stats["n"], single_stats["n"])
                paper_single = single["paper"][metric]
                item.update({"single": single_stats, "gain_over_single": gain,
                             "beats_single_by_more_than_std": (gain > spread) if both > 1
                             else None, "paper_single": paper_single,
                             "single_gap_to_paper": single_stats["mean"] - paper_single})
            entry["metrics"][metric] = item
        found[dataset] = entry
    return found


def _seeds(seeds: list[int]) -> str:
    return f"{len(seeds)} seed" + ("s" if len(seeds) != 1 else "")


def _dev_line(dataset: str, entry: dict[str, Any]) -> str:
    """The dev scores the pick was made on, best first."""
    seeds = entry["dev_seeds_compared"]
    on = f"seed{'s' if len(seeds) != 1 else ''} {', '.join(map(str, seeds))}" if seeds \
        else "each setting's own seeds (none in common)"
    ranked = sorted(entry["dev_scores"].items(), key=lambda item: -item[1])
    return f"- {dataset}, mean dev score on {on}: " + ", ".join(
        f"{NAMES[setting]} {score:.2f}" for setting, score in ranked)


def claims_markdown(found: dict[str, Any]) -> list[str]:
    """The issue's two checks, one line per headline metric."""
    lines = ["## The paper's claims on this backbone", "",
             "Best pair setting chosen on dev: mean dev score over the seeds every pair "
             "setting has (a setting run on fewer seeds is ranked on those seeds only); "
             "test points, mean ± std over all the chosen setting's seeds.", "",
             *[_dev_line(dataset, entry) for dataset, entry in found.items()], "",
             "| dataset | best pair (dev) | metric | best pair | single | gain | > std | "
             "paper (BERT-base) | gap | single - paper's single |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for dataset, entry in found.items():
        for metric, item in entry["metrics"].items():
            single = item.get("single")
            beats = item.get("beats_single_by_more_than_std")
            lines.append(
                f"| {dataset} | {NAMES[entry['best_pair_on_dev']]} ({_seeds(entry['seeds'])}) "
                f"| {HEADERS[metric]} | {cell(item['best_pair'])} | "
                + (f"{cell(single)} | {item['gain_over_single']:+.2f} | "
                   f"{'1 seed' if beats is None else 'yes' if beats else 'no'} | "
                   if single else "– | – | – | ")
                + f"{item['paper']:g} | {item['gap_to_paper']:+.2f} | "
                + (f"{item['single_gap_to_paper']:+.2f} ({item['paper_single']:g}) |"
                   if single else "– |"))
    return [*lines, "", WHY_THE_GAPS, ""]


def recipe(records: list[dict[str, Any]]) -> str:
    """The settings of the runs, each key with every value seen (more than one is named)."""
    parts = []
    for key in RECIPE:
        values = sorted({json.dumps(r["recipe"].get(key)) for r in records})
        parts.append(f"{key}={' / '.join(values)}" + (" (DIFFERS)" if len(values) > 1 else ""))
    return ", ".join(parts)


def _cell(stats: dict[str, Any], paper: float) -> str:
    written = f"{paper:g}" if paper % 1 else f"{paper:.1f}"  # as the paper prints it
    if stats["mean"] is None:
        return f"– ({written})"
    spread = f" ± {stats['std']:.1f}" if stats["n"] > 1 else ""  # one seed: no std
    return f"{stats['mean']:.1f}{spread} ({written})"


def markdown(summary: dict[str, Any], name: str) -> str:
    lines = ["# Aspect-based sentiment as sentence pairs (Sun et al. 2019) on the packaged "
             "MiniLM", "",
             "Test metrics in points, mean ± std over seeds, the paper's BERT-base (12 "
             "layers, 768 wide) figure in brackets. Runs: `experiments/run_absa.sh` into "
             + ", ".join(f"`{d}`" for d in sorted({str(Path(r["run"]).parent)
                                                  for r in summary["runs"]}))
             + "; epoch chosen on dev (mean of the two headline metrics), never on test.", ""]
    for dataset, settings in summary["table"].items():
        metrics = METRICS[dataset]
        lines += [f"## {TITLES[dataset]}", "",
                  "| setting | seeds | " + " | ".join(HEADERS[m] for m in metrics)
                  + " | minutes/run | train ex/s |",
                  "|---|---|" + "---|" * len(metrics) + "---|---|"]
        for setting, row in settings.items():
            minutes, speed = row["minutes"]["mean"], row["train_examples_per_second"]["mean"]
            lines.append(
                f"| {NAMES[setting]} | {len(row['seeds'])} | "
                + " | ".join(_cell(row["test"][m], row["paper"][m]) for m in metrics)
                + f" | {'–' if minutes is None else f'{minutes:.1f}'}"
                + f" | {'–' if speed is None else f'{speed:.0f}'} |")
        lines += ["", f"Recipe (`experiments/absa.py`): {summary['recipe'][dataset]}.", ""]
    lines += claims_markdown(summary["claims"])
    lines += feature_gap_markdown(summary["feature_gap"], NAMES, HEADERS)
    lines += post_training_markdown(summary["post_training"], NAMES, HEADERS)
    lines += placebo_markdown(summary.get("placebo", {}), NAMES, HEADERS)
    if summary["recorded_only"]:
        lines += [f"Runs not under `{summary['runs_dir']}` (another run directory, or one "
                  f"gone with its checkout), read from the earlier `{name}.json` as measured: "
                  f"{', '.join(summary['recorded_only'])}.", ""]
    lines += ["Machines: " + "; ".join(
        f"{m['cpu']}, {m['platform']}, {m['torch_threads']} torch threads ({n} runs)"
        for m, n in summary["machines"]) + f". Load average (1 min) during the runs: "
        f"{summary['load']}.", "", f"Plot: `{name}.png` (headline metrics, mean ± std over "
        "seeds; the paper's BERT-base as black marks).", ""]
    return "\n".join(lines)


def plot(summary: dict[str, Any], path: Path) -> None:
    """Per dataset, the two headline metrics of every setting beside the paper's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    datasets = list(summary["table"])
    fig, axes = plt.subplots(1, max(len(datasets), 1), figsize=(6 * max(len(datasets), 1), 4),
                             squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        settings = list(summary["table"][dataset])
        x = np.arange(len(settings))
        for n, metric in enumerate(HEADLINE[dataset]):
            rows = [summary["table"][dataset][s] for s in settings]
            means = [r["test"][metric]["mean"] or 0.0 for r in rows]
            stds = [r["test"][metric]["std"] or 0.0 for r in rows]
            offset = (n - 0.5) * 0.38
            ax.bar(x + offset, means, 0.36, yerr=stds, capsize=3, label=HEADERS[metric])
            ax.scatter(x + offset, [r["paper"][metric] for r in rows], marker="_", s=300,
                       color="black", zorder=3,
                       label="paper (BERT-base)" if n == 0 else None)
        ax.set_xticks(x)
        ax.set_xticklabels([NAMES[s].replace("BERT-", "") for s in settings], fontsize=8)
        lowest = min([50.0, *(r["test"][m]["mean"] for r in summary["table"][dataset].values()
                              for m in HEADLINE[dataset] if r["test"][m]["mean"] is not None)])
        ax.set_ylim(50 if lowest >= 50 else max(0.0, lowest - 5), 100)  # smoke runs show
        ax.set_ylabel("test (points)")
        ax.set_title(TITLES[dataset].split(" (")[0])
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=Path, default=Path("runs/absa"))
    p.add_argument("--output", type=Path, default=Path("results/absa"))
    p.add_argument("--fresh", action="store_true",
                   help="ignore the runs recorded in OUTPUT.json (a new recipe)")
    p.add_argument("--list-recorded", action="store_true",
                   help="print the run names OUTPUT.json records, one per line, and stop "
                        "(experiments/run_absa.sh skips them)")
    args = p.parse_args(argv)
    earlier = [] if args.fresh else recorded(args.output)
    if args.list_recorded:
        print("\n".join(sorted(Path(r["run"]).name for r in earlier)))
        return {}
    records, recorded_only = merged(collect(args.runs), earlier)
    if not records:
        raise SystemExit(f"{relative(args.runs)}: no finished runs, and none recorded in "
                         f"{relative(args.output.with_suffix('.json'))} (run "
                         "experiments/run_absa.sh)")
    machines: dict[str, int] = defaultdict(int)
    for record in records:
        machines[json.dumps(record["machine"], sort_keys=True)] += 1
    loads = [r["load_average"][0] for r in records if r["load_average"]]
    summary = {
        "runs_dir": relative(args.runs), "table": (table := aggregate(records)),
        "claims": claims(table), "feature_gap": feature_gap(records),
        "post_training": post_training_gain(records),
        "placebo": post_training_gain(records, "placebo"), "recorded_only": recorded_only,
        "machines": [(json.loads(m), n) for m, n in machines.items()],
        "load": f"{min(loads):.1f}-{max(loads):.1f}" if loads else "not recorded",
        "recipe": {dataset: recipe(found) for dataset in METRICS
                   if (found := [r for r in records
                                          if r["dataset"] == dataset
                                          and r["mode"] == "fine-tuned"])},
        "paper": PAPER, "runs": records,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    base = args.output
    base.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n",
                                         encoding="utf-8")
    base.with_suffix(".md").write_text(markdown(summary, base.name), encoding="utf-8")
    plot(summary, base.with_suffix(".png"))
    print(markdown(summary, base.name))
    return summary


if __name__ == "__main__":
    main()
