"""Seed-paired comparisons of the ABSA grid against plain fine-tuning: feature-based use
(``experiments/absa_features.py``), domain post-training (``--post-trained``) and its
placebo (``experiments/placebo_backbone.py``).

Both ask the same question of runs that share a dataset, a setting and a seed: how far
is the variant from plain fine-tuning on that seed? One home for the pairing
(:func:`paired`); each comparison names its sign and its columns.
"""

from __future__ import annotations

import statistics
from typing import Any

#: The two metrics the issue compares per dataset.
HEADLINE = {"sentihood": ("aspect_macro_f1", "sentiment_accuracy"),
            "semeval": ("f1", "accuracy_4way")}
#: How far below plain fine-tuning a post-trained run may fall on any seed (points).
POST_TRAINING_TOLERANCE = 0.3


def stats(values: list[float | None]) -> dict[str, Any]:
    """Mean, sample std (0.0 for one value) and count of the values that are not None."""
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "std": None, "n": 0}
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std, "n": len(values)}


def paired(records: list[dict[str, Any]], mode: str) -> dict[str, dict[str, Any]]:
    """Per ``dataset/setting`` with runs of ``mode``: its seeds, the seeds that also have a
    plain fine-tuned run, and per headline metric the values of both, seed by seed."""
    runs = {(r["dataset"], r["setting"], r["mode"], r["seed"]): r for r in records}
    found: dict[str, dict[str, Any]] = {}
    for dataset, setting in sorted({(d, s) for d, s, m, _ in runs if m == mode}):
        seeds = sorted(seed for d, s, m, seed in runs if (d, s, m) == (dataset, setting, mode))
        both = [seed for seed in seeds if (dataset, setting, "fine-tuned", seed) in runs]
        found[f"{dataset}/{setting}"] = {
            "dataset": dataset, "setting": setting, "seeds": seeds, "paired_seeds": both,
            "values": {metric: {
                "variant": [runs[dataset, setting, mode, s]["test"][metric] for s in seeds],
                "variant_paired": [runs[dataset, setting, mode, s]["test"][metric]
                                   for s in both],
                "plain": [runs[dataset, setting, "fine-tuned", s]["test"][metric]
                          for s in both]}
                for metric in HEADLINE[dataset]}}
    return found


def feature_gap(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Feature-based runs: their headline metrics over all their seeds, and fine-tuned
    minus feature-based over the seeds that have both (the BERT paper's comparison: 0.3
    F1 on NER, BERT-base)."""
    found = paired(records, "feature-based")
    for entry in found.values():
        entry["metrics"] = {metric: {
            "feature_based": stats(v["variant"]), "fine_tuned": stats(v["plain"]),
            "gap": stats([p - f for p, f in zip(v["plain"], v["variant_paired"])])}
            for metric, v in entry.pop("values").items()}
    return found


def post_training_gain(records: list[dict[str, Any]], mode: str = "post-trained"
                       ) -> dict[str, Any]:
    """Post-trained runs (or ``mode``'s: the placebo's) against plain fine-tuning on the
    same seeds: the mean gain, the worst seed's gain, and whether no seed falls more than
    :data:`POST_TRAINING_TOLERANCE` below the plain run."""
    found = paired(records, mode)
    for entry in found.values():
        metrics = {}
        for metric, v in entry.pop("values").items():
            gains = [p - f for p, f in zip(v["variant_paired"], v["plain"])]
            metrics[metric] = {
                "variant": stats(v["variant_paired"]), "plain": stats(v["plain"]),
                "gain": stats(gains), "seed_gains": gains,
                "worst_seed_gain": min(gains) if gains else None,
                "never_more_than_tolerance_below": (min(gains) >= -POST_TRAINING_TOLERANCE)
                if gains else None}
        entry["metrics"] = metrics
    return found


def cell(values: dict[str, Any], signed: bool = False) -> str:
    """``mean`` (signed if asked) ``± std`` in points, the std only over several seeds."""
    if values["mean"] is None:
        return "–"
    mean = f"{values['mean']:+.2f}" if signed else f"{values['mean']:.2f}"
    return mean + (f" ± {values['std']:.2f}" if values["n"] > 1 else "")


def feature_gap_markdown(found: dict[str, Any], names: dict[str, str],
                         headers: dict[str, str]) -> list[str]:
    if not found:
        return []
    lines = ["## Feature-based vs fine-tuned", "",
             "Frozen encoder, last four layers concatenated, a small classifier on top "
             "(`experiments/absa_features.py`): test points, mean ± std over its seeds; "
             "against fine-tuning on the same splits, over the seeds that have both "
             "(gap = fine-tuned − feature-based; BERT-base on NER in the BERT paper: 0.3 "
             "F1).", "",
             "| dataset | setting | metric | feature-based (seeds) | fine-tuned (same seeds) "
             "| gap |", "|---|---|---|---|---|---|"]
    for entry in found.values():
        for metric, item in entry["metrics"].items():
            lines.append(
                f"| {entry['dataset']} | {names[entry['setting']]} | {headers[metric]} | "
                f"{cell(item['feature_based'])} ({len(entry['seeds'])}) | "
                f"{cell(item['fine_tuned'])} ({len(entry['paired_seeds'])}) | "
                f"{cell(item['gap'], signed=True)} |")
    return [*lines, ""]


def _gain_rows(found: dict[str, Any], names: dict[str, str], headers: dict[str, str]
               ) -> list[str]:
    """One row per dataset, setting and headline metric: the variant, plain, the gain."""
    rows = []
    for entry in found.values():
        for metric, item in entry["metrics"].items():
            ok = item["never_more_than_tolerance_below"]
            per_seed = " / ".join(f"{g:+.2f}" for g in item["seed_gains"]) or "–"
            rows.append(
                f"| {entry['dataset']} | {names[entry['setting']]} | {headers[metric]} | "
                f"{len(entry['paired_seeds'])} | {cell(item['variant'])} | "
                f"{cell(item['plain'])} | {cell(item['gain'], signed=True)} | {per_seed} | "
                f"{'–' if ok is None else 'yes' if ok else 'no'} |")
    return rows


def placebo_markdown(found: dict[str, Any], names: dict[str, str],
                     headers: dict[str, str]) -> list[str]:
    """The noise floor of the post-training bar: the same comparison for a backbone that
    post-training moved by almost nothing."""
    if not found:
        return []
    return ["## Placebo post-training: the noise floor of the bar", "",
            "The same fine-tuning from a placebo backbone: MiniLM moved 1% of the way to "
            "the fully post-trained weights (`experiments/placebo_backbone.py --weight 0.04`"
            " of the backbone above, saved a quarter of the way), against plain fine-tuning "
            "on the same seeds. Any gain here is what fine-tuning does with a backbone that "
            "changed by almost nothing: the resolution of the per-seed bar.", "",
            "| dataset | setting | metric | seeds | placebo | plain | gain | gain per seed "
            f"| none below −{POST_TRAINING_TOLERANCE} |",
            "|---|---|---|---|---|---|---|---|---|", *_gain_rows(found, names, headers), ""]


def post_training_markdown(found: dict[str, Any], names: dict[str, str],
                           headers: dict[str, str]) -> list[str]:
    if not found:
        return []
    lines = ["## Domain post-training", "",
             "Task-adaptive post-training (`experiments/absa_corpus.py`: the training "
             "sentences only; `ernie-kg pretrain post-train` with its defaults: whole-word "
             "masked LM, 1000 steps, the word embeddings held, the backbone saved a quarter "
             "of the way from MiniLM to the post-trained weights; the recipes tried: "
             "`absa_post_probes.md`), then the same fine-tuning (`--post-trained`), against "
             "plain fine-tuning on the same seeds. Gain = post-trained − plain; the bar: no "
             f"seed more than {POST_TRAINING_TOLERANCE} below.", "",
             "| dataset | setting | metric | seeds | post-trained | plain | gain | gain per "
             f"seed | none below −{POST_TRAINING_TOLERANCE} |",
             "|---|---|---|---|---|---|---|---|---|", *_gain_rows(found, names, headers)]
    return [*lines, ""]
