"""Reduced-precision inference of a saved relation classifier: bf16 and int8 vs float32.

For one saved ``RelationClassifier`` and one labelled file (FewRel format), in one run:
the features are built once (the linker's entities, as ``ernie-kg evaluate`` does; not
timed), then each precision scores all of them in every round, rounds interleaved (the
order rotates, so load from other processes hits every variant alike). Per precision:
prediction agreement with float32, accuracy and macro-F1 and their change (points), and
the speed-up (float32 time / its time, from per-round medians; also the median of the
per-round ratios). The machine: ``lscpu`` model, the CPU flags that matter (avx512_bf16,
amx, avx512_vnni), torch threads, and the load average before, during and after.

``--bf16-modes`` also times the other bf16 form (of: weights cast to bf16; float32
weights under ``torch.autocast``) as a variant of its own: the measurement behind
``ernie_kg.modeling.precision.BF16_MODE``.

Writes OUTPUT.json and OUTPUT.md (OUTPUT relative to the project root unless absolute;
paths inside them are relative to it too) and prints one JSON line.

    python benchmarks/reduced_precision.py --model runs/fewrel16_v2/open-ernie-seed0/model \\
        --data runs/fewrel16_gate/split/test.json --output results/reduced_precision
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from wait_policy import choose_wait_policy  # noqa: E402

choose_wait_policy()  # before torch loads: PASSIVE unless OMP_WAIT_POLICY says otherwise

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ernie_kg.data.fewrel import read_fewrel  # noqa: E402
from ernie_kg.errors import ErnieKGError  # noqa: E402
from ernie_kg.machine import cpu_flags, cpu_model  # noqa: E402
from ernie_kg.modeling import precision  # noqa: E402
from ernie_kg.paths import PROJECT_ROOT  # noqa: E402
from ernie_kg.pipelines.relation import RelationClassifier  # noqa: E402
from ernie_kg.training.evaluation import predict_logits  # noqa: E402
from ernie_kg.training.metrics import relation_metrics  # noqa: E402

#: The issue's goals (issue 19, part 5): speed-up, agreement, |macro-F1 change| (points).
GOALS = {"bfloat16": (1.5, 0.995, 0.3), "int8": (1.3, 0.99, None)}
FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni", "avx_vnni", "avx512f")


def relative(path: Path) -> str:
    """``path`` relative to the project root when it is inside it."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def packing_engine() -> str:
    """The engine int8 weights are packed for; "none" where torch has no int8 engine."""
    try:
        return precision.int8_packing_engine()
    except ErnieKGError:
        return "none"


def machine() -> dict:
    """lscpu's model name and the flags that decide bf16 and int8 speed."""
    return {"cpu_model": cpu_model(), "flags": cpu_flags(FLAGS),
            "cores_available": len(os.sched_getaffinity(0)),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
            "quantized_engine": torch.backends.quantized.engine,
            "int8_packing_engine": packing_engine(),
            "int8_full_range": precision.int8_full_range()}


def variants(bf16_modes: bool, int8_thresholds: tuple[float, ...] = (),
             ) -> dict[str, tuple[str, str | None, float]]:
    """Variant name -> (dtype, bf16 form, int8 outlier threshold). ``int8-plain`` is int8
    without the outlier decomposition (torch's dynamic quantization alone): its ablation;
    ``int8-tX`` (``--int8-thresholds``) other thresholds, to choose the default on dev."""
    default = precision.INT8_OUTLIER_THRESHOLD
    chosen = {"float32": ("float32", None, default), "bfloat16": ("bfloat16", None, default),
              "int8": ("int8", None, default), "int8-plain": ("int8", None, math.inf)}
    if bf16_modes:  # "bfloat16" is the default form; the other one joins
        chosen.update({f"bfloat16-{mode}": ("bfloat16", mode, default)
                       for mode in precision.BF16_MODES if mode != precision.BF16_MODE})
    chosen.update({f"int8-t{t:g}": ("int8", None, t) for t in int8_thresholds if t != default})
    return chosen


def run(model_dir: Path, data: Path, limit: int | None, repeats: int, batch_size: int,
        bf16_modes: bool, int8_thresholds: tuple[float, ...] = (),
        skip: tuple[str, ...] = ()) -> dict:
    started = time.perf_counter()
    load_before = load_average()
    classifier = RelationClassifier.load(model_dir)
    examples = read_fewrel(data, gold_ids=False)
    if limit is not None and limit < len(examples):  # evenly spaced: every label stays
        examples = [examples[i * len(examples) // limit] for i in range(limit)]
    feature_started = time.perf_counter()
    features = classifier.features(examples)
    feature_seconds = time.perf_counter() - feature_started
    id2label = classifier.label_map.id2label
    gold = [id2label[int(f["labels"])] for f in features]
    models = {}
    chosen = {name: found for name, found in variants(bf16_modes, int8_thresholds).items()
              if name == "float32" or name not in skip}
    for name, (dtype, mode, threshold) in chosen.items():
        model = classifier.model if name == "float32" else \
            type(classifier.model).from_pretrained(model_dir)
        models[name] = precision.reduce_precision(model, dtype, bf16_mode=mode,
                                                  outlier_threshold=threshold)
        predict_logits(models[name], features[:batch_size], batch_size)  # warm-up
    seconds: dict[str, list[float]] = {name: [] for name in models}
    logits: dict[str, np.ndarray] = {}
    loads = []
    names = list(models)
    for round_ in range(repeats):
        order = names[round_ % len(names):] + names[:round_ % len(names)]
        for name in order:
            tick = time.perf_counter()
            logits[name] = predict_logits(models[name], features, batch_size)
            seconds[name].append(time.perf_counter() - tick)
        loads.append(load_average()[0])
    reference = logits["float32"].argmax(-1)
    base = relation_metrics(gold, [id2label[int(i)] for i in reference])
    results = {}
    for name in names:
        predicted = logits[name].argmax(-1)
        metrics = relation_metrics(gold, [id2label[int(i)] for i in predicted])
        median = statistics.median(seconds[name])
        ratios = [f / s for f, s in zip(seconds["float32"], seconds[name])]
        dtype, form, threshold = chosen[name]
        results[name] = {
            "dtype": dtype, "int8_outlier_threshold": None if dtype != "int8" else (
                threshold if math.isfinite(threshold) else "off"),
            "bf16_form": form or (
                precision.BF16_MODE if name == "bfloat16" else None),
            "agreement": float((predicted == reference).mean()),
            "disagreements": int((predicted != reference).sum()),
            "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
            "macro_f1_change_points": 100 * (metrics["macro_f1"] - base["macro_f1"]),
            "accuracy_change_points": 100 * (metrics["accuracy"] - base["accuracy"]),
            "max_abs_logit_change": float(np.abs(logits[name] - logits["float32"]).max()),
            "median_seconds": median, "examples_per_second": len(features) / median,
            "speedup": statistics.median(seconds["float32"]) / median,
            "paired_median_speedup": statistics.median(ratios),
            "seconds": seconds[name],
        }
    return {
        "model": relative(model_dir), "data": relative(data), "examples": len(features),
        "limit": limit, "repeats": repeats, "batch_size": batch_size,
        "entities": classifier.entities, "feature_seconds": feature_seconds,
        "entities_per_example": features.entity_coverage(),
        "machine": machine(), "load_average_before": load_before,
        "load_1min_during": [min(loads), max(loads)], "load_average_after": load_average(),
        "bf16_mode": precision.BF16_MODE, "int8_keep_float": list(precision.INT8_KEEP_FLOAT),
        "results": results, "skipped": list(skip), "seconds": time.perf_counter() - started,
    }


def goal_line(name: str, row: dict) -> str:
    goal = GOALS.get(row["dtype"])
    if goal is None or name != row["dtype"]:
        return ""
    speed, agreement, f1 = goal
    met = row["speedup"] >= speed and row["agreement"] >= agreement and (
        f1 is None or abs(row["macro_f1_change_points"]) <= f1)
    f1_text = f", |macro-F1 change| <= {f1}" if f1 is not None else ""
    return (f"- {name}: goal >= {speed}x, >= {agreement:.1%} agreement{f1_text}: "
            f"**{'met' if met else 'not met'}** ({row['speedup']:.2f}x, "
            f"{row['agreement']:.2%}, {row['macro_f1_change_points']:+.2f} points)")


def write(result: dict, output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    m = result["machine"]
    flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in m["flags"].items())
    rows = [f"| {name} | {r['bf16_form'] or ''} | {r['agreement']:.2%} ({r['disagreements']}) "
            f"| {100 * r['accuracy']:.2f} | {100 * r['macro_f1']:.2f} | "
            f"{r['macro_f1_change_points']:+.2f} | {r['examples_per_second']:.1f} | "
            f"**{r['speedup']:.2f}x** | {r['paired_median_speedup']:.2f}x |"
            for name, r in result["results"].items()]
    busy = result["load_1min_during"][1] > m["cores_available"]
    lines = [
        "# Reduced-precision inference: bf16 and int8 vs float32",
        "",
        f"`python benchmarks/reduced_precision.py --model {result['model']} --data "
        f"{result['data']}" + (f" --limit {result['limit']}" if result["limit"] else "")
        + "` (one run; every precision measured in it, rounds interleaved).",
        "",
        f"- Model: `{result['model']}`, entities from its {result['entities']} "
        f"({result['entities_per_example']:.2f} per example); data: `{result['data']}`, "
        f"{result['examples']} examples, batch size {result['batch_size']}.",
        f"- Machine: {m['cpu_model']} ({flags}), {m['cores_available']} cores, torch "
        f"{m['torch']}, torch threads: {m['torch_threads']}, quantized engine "
        f"{m['quantized_engine']}, int8 weights packed for "
        f"{m['int8_packing_engine']} (8-bit activations: "
        f"{m['int8_full_range']}).",
        f"- Load average (1, 5, 15 min): {result['load_average_before']} before, 1-min "
        f"{result['load_1min_during']} during, {result['load_average_after']} after.",
        f"- {result['repeats']} rounds; speed-up = float32's median time / the variant's; "
        f"paired = median of the per-round ratios. bf16 default form: "
        f"{result['bf16_mode']}; int8 keeps in float32: "
        f"{result['int8_keep_float'] or 'no linear layer'}; int8 takes input features "
        f"above {precision.INT8_OUTLIER_THRESHOLD} in magnitude out of the int8 product "
        "(LLM.int8()'s decomposition), int8-plain is torch's dynamic quantization alone.",
        "",
        "| precision | bf16 form | agreement with float32 (differing) | accuracy | "
        "macro-F1 | change (points) | examples/s | speed-up | paired |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        *[line for name, row in result["results"].items() if (line := goal_line(name, row))],
        "",
    ]
    if result.get("skipped"):
        lines += [f"Not run here (`--skip`): {', '.join(result['skipped'])}.", ""]
    if result["limit"]:
        lines += [f"A sample of {result['examples']} examples (--limit): one differing "
                  f"prediction is {1 / result['examples']:.2%}; a smoke test, not the "
                  "measurement.", ""]
    if busy:
        lines += [f"Caution: the 1-min load reached {result['load_1min_during'][1]} on "
                  f"{m['cores_available']} cores; speeds are from a shared machine.", ""]
    output.with_suffix(".md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="saved classifier directory")
    parser.add_argument("--data", type=Path, required=True, help="labelled FewRel-format file")
    parser.add_argument("--output", type=Path, default=Path("results/reduced_precision"),
                        help="OUTPUT.json and OUTPUT.md (relative: to the project root)")
    parser.add_argument("--limit", type=int, default=None, help="evenly spaced examples")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--bf16-modes", action="store_true",
                        help="also time both bf16 forms (cast, autocast)")
    parser.add_argument("--int8-thresholds", type=float, nargs="*", default=(),
                        help="also int8 with these outlier thresholds (choose on dev)")
    parser.add_argument("--skip", nargs="*", default=(),
                        help="variants left out, e.g. bfloat16 on a CPU without bf16 "
                        "kernels (emulated there: about 8x slower than float32)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    output = args.output if args.output.is_absolute() else PROJECT_ROOT / args.output
    result = run(args.model, args.data, args.limit, args.repeats, args.batch_size,
                 args.bf16_modes, tuple(args.int8_thresholds), tuple(args.skip))
    write(result, output)
    summary = {name: {k: round(r[k], 4) for k in ("agreement", "macro_f1_change_points",
                                                  "speedup")}
               for name, r in result["results"].items()}
    print(json.dumps({"output": relative(output), "examples": result["examples"],
                      "results": summary}), file=sys.stdout, flush=True)


if __name__ == "__main__":
    main()
