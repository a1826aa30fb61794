"""Where ERNIE-KG's extra inference time goes inside the model: every layer against the
text-only model's same layer, and each entity-stream module as the model runs it against
the same call run hot (its inputs captured, called back to back) and against a second
call made right after the model's own, inside the forward.

Why: ``small_op_cost.py`` times single ops after a synthetic large product; this times
the model itself, on the peer benchmark's models and FewRel-16 batches, so the fusion
overhead (ERNIE-KG/text over its FLOP bound, ``peer_throughput.py``) is split into what
each part of the entity stream costs where it runs, what the same work costs hot or
just after running there, and what is left outside the entity modules (gathering and
scattering the aligned rows, the entity lookup and layout). Wall time per module comes
from forward hooks (their own cost, a few microseconds a call, is in every row, the text
model's layers included).
Run it on each CPU kind to compare. ``--engine aten`` times the entity modules' ATen
ops one module at a time; with the native kernels (the default, as users run it) W_e, the
knowledge gate and the entity output run inside the layer's fusion call, so their time
is in the "rest of the aggregator layers" row.

    python benchmarks/entity_stream_cost.py --output results/entity_stream_cost_intel
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from wait_policy import choose_wait_policy  # noqa: E402

choose_wait_policy()  # before torch loads: PASSIVE unless OMP_WAIT_POLICY says otherwise

import torch  # noqa: E402
from cpu_bench import (  # noqa: E402
    fewrel16_batches,
    interleaved_rounds,
    load_average,
    machine_info,
    machine_line,
    median_ms,
    paired_ratio,
    timed,
)
from peer_throughput import build_models, model_inputs  # noqa: E402
from torch import nn  # noqa: E402

from ernie_kg.memory import keep_freed_memory  # noqa: E402
from ernie_kg.modeling.layers import ErnieKGAggregatorLayer  # noqa: E402
from ernie_kg.modeling.native import entity_kernels_off  # noqa: E402

#: The entity stream's modules in an aggregator layer, as the layer names them.
ENTITY_MODULES = ("entity_attention", "entity_intermediate", "entity_gate", "entity_output")
ENGINES = {"native": "the native kernels (where built; W_e, the gate and the entity output run "
                     "inside the fusion call, in the rest of the layers)",
           "aten": "its ATen ops, module by module"}


class ModuleClock:
    """Wall seconds of named submodules, summed until :meth:`take` (forward hooks)."""

    def __init__(self, modules: dict[str, nn.Module]) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._started: dict[str, float] = {}
        self._handles = []
        for name, module in modules.items():
            self._handles.append(module.register_forward_pre_hook(self._pre(name)))
            self._handles.append(module.register_forward_hook(self._post(name)))

    def _pre(self, name: str) -> Callable:
        def hook(module: nn.Module, args: tuple) -> None:
            self._started[name] = time.perf_counter()
        return hook

    def _post(self, name: str) -> Callable:
        def hook(module: nn.Module, args: tuple, output: object) -> None:
            self.seconds[name] += time.perf_counter() - self._started[name]
            self.calls[name] += 1
        return hook

    def take(self) -> tuple[dict[str, float], dict[str, int]]:
        """(seconds, calls) per module since the last take; resets both."""
        taken = dict(self.seconds), dict(self.calls)
        self.seconds.clear()
        self.calls.clear()
        return taken

    def remove(self) -> None:
        """Detach the hooks."""
        for handle in self._handles:
            handle.remove()


def timed_modules(model: nn.Module, entity_modules: bool) -> dict[str, nn.Module]:
    """``layer.<i>`` for every encoder layer, and ``layer.<i>.<entity module>`` too."""
    modules = {}
    for index, layer in enumerate(model.base_model.encoder.layer):
        modules[f"layer.{index}"] = layer
        if entity_modules and isinstance(layer, ErnieKGAggregatorLayer):
            for part in ENTITY_MODULES:
                if getattr(layer, part, None) is not None:
                    modules[f"layer.{index}.{part}"] = getattr(layer, part)
    return modules


def captured_calls(model: nn.Module, inputs: dict) -> dict[str, tuple[nn.Module, tuple, dict]]:
    """Each entity module's (module, args, kwargs) as one forward pass calls it."""
    calls, handles = {}, []
    for name, module in timed_modules(model, entity_modules=True).items():
        if name.count(".") == 2:
            def keep(module: nn.Module, args: tuple, kwargs: dict, name: str = name) -> None:
                calls[name] = (module, args, kwargs)
            handles.append(module.register_forward_pre_hook(keep, with_kwargs=True))
    model(**inputs)
    for handle in handles:
        handle.remove()
    return calls


def hot_seconds(call: tuple[nn.Module, tuple, dict], repeats: int) -> float:
    """Median seconds of the call run back to back (after 5 unmeasured)."""
    module, args, kwargs = call
    times = []
    for index in range(repeats + 5):
        start = time.perf_counter()
        module(*args, **kwargs)
        if index >= 5:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def repeated_in_model(model: nn.Module, inputs: list[dict], rounds: int) -> dict[str, float]:
    """Ms per forward of each entity module called once more right after the model's own
    call, inside the forward (mean over batches of the median round): the call where the
    model runs it, with its code and data just used."""
    current: dict[str, float] = defaultdict(float)
    times: dict[str, list[list[float]]] = defaultdict(lambda: [[] for _ in inputs])
    handles = []
    for name, module in timed_modules(model, entity_modules=True).items():
        if name.count(".") == 2:
            def again(module: nn.Module, args: tuple, kwargs: dict, output: object,
                      name: str = name) -> None:
                start = time.perf_counter()
                module.forward(*args, **kwargs)  # not through __call__: no hooks again
                current[name] += time.perf_counter() - start
            handles.append(module.register_forward_hook(again, with_kwargs=True))
    for round_index in range(rounds + 1):  # round 0: warm-up
        for batch_index, batch_input in enumerate(inputs):
            model(**batch_input)
            if round_index:
                for name, seconds in current.items():
                    times[name][batch_index].append(seconds)
            current.clear()
    for handle in handles:
        handle.remove()
    return {name: round(median_ms(per_batch), 4) for name, per_batch in times.items()}


def measure(models: dict[str, nn.Module], batches: list[dict], rounds: int,
            hot_repeats: int) -> dict:
    """Whole forwards (no hooks), per layer and module (hooks), hot calls, repeats in the
    model. Both timed passes alternate the models as the peer benchmark does
    (``cpu_bench.interleaved_rounds``, one warm-up round)."""
    inputs = {name: [model_inputs(name, b, labels=False) for b in batches] for name in models}
    names = list(models)
    slots = [{"index": index} for index in range(len(batches))]

    def forward(name: str, slot: dict) -> tuple[float, float]:
        return timed(lambda: models[name](**inputs[name][slot["index"]]))

    whole = interleaved_rounds(names, slots, {"forward": forward}, rounds, 1,
                               math.inf)["wall"]["forward"]
    clocks = {name: ModuleClock(timed_modules(model, entity_modules=name == "ernie"))
              for name, model in models.items()}
    # every call's module times, warm-up round first: [model][part][batch]
    parts: dict[str, dict[str, list[list[float]]]] = {n: defaultdict(
        lambda: [[] for _ in batches]) for n in names}
    calls: dict[str, dict[str, int]] = {}

    def hooked_forward(name: str, slot: dict) -> tuple[float, float]:
        seconds, cpu = forward(name, slot)
        taken, calls[name] = clocks[name].take()
        for part, part_seconds in {**taken, "forward": seconds}.items():
            parts[name][part][slot["index"]].append(part_seconds)
        return seconds, cpu

    interleaved_rounds(names, slots, {"forward": hooked_forward}, rounds, 1, math.inf)
    for clock in clocks.values():
        clock.remove()
    hot: dict[str, list[float]] = defaultdict(list)
    for batch_input in inputs["ernie"]:
        for part, call in captured_calls(models["ernie"], batch_input).items():
            hot[part].append(hot_seconds(call, hot_repeats))

    return {
        "whole_ms": {n: round(median_ms(whole[n]), 3) for n in names},
        "paired_ratio": paired_ratio(whole["ernie"], whole["text"]),
        "in_model_ms": {n: {p: round(median_ms([b[1:] for b in t]), 4)  # b[0]: warm-up
                            for p, t in parts[n].items()} for n in names},
        "hot_ms": {p: round(1000 * statistics.fmean(t), 4) for p, t in hot.items()},
        "again_in_model_ms": repeated_in_model(models["ernie"], inputs["ernie"], rounds),
        "calls_per_forward": dict(calls["ernie"]),
    }


def breakdown(measured: dict) -> list[dict]:
    """Rows of the overhead (in the run with hooks): the entity modules summed over
    layers, the rest of the aggregator layers beyond the text layers, and what lies
    outside the layers; they add up to the two models' difference in that run."""
    ernie, text = measured["in_model_ms"]["ernie"], measured["in_model_ms"]["text"]
    layers = [p for p in text if p.count(".") == 1]
    layer_extra = sum(ernie[p] - text[p] for p in layers)
    rows = []
    for part in ENTITY_MODULES:
        keys = [k for k in ernie if k.endswith("." + part)]
        if keys:
            in_model = sum(ernie[k] for k in keys)
            hot = sum(measured["hot_ms"][k] for k in keys)
            again = sum(measured["again_in_model_ms"][k] for k in keys)
            rows.append({"part": part, "layers": len(keys), "in_model_ms": round(in_model, 3),
                         "hot_ms": round(hot, 3), "in_model_over_hot": round(in_model / hot, 2),
                         "again_in_model_ms": round(again, 3)})
    modules = sum(r["in_model_ms"] for r in rows)
    rows.append({"part": "rest of the aggregator layers (gather, fused rows, scatter)",
                 "in_model_ms": round(layer_extra - modules, 3)})
    rows.append({"part": "outside the layers (entity lookup, layout, head)",
                 "in_model_ms": round(ernie["forward"] - text["forward"] - layer_extra, 3)})
    return rows


def markdown(summary: dict) -> str:
    m = summary["measured"]
    whole = m["whole_ms"]
    lines = ["# Where ERNIE-KG's extra inference time goes, inside the model", "",
             f"`{summary['command']}`", "",
             f"- Machine: {machine_line(summary['machine'])}; 1-min load "
             f"{summary['load_before'][0]} before, {summary['load_after'][0]} after.",
             f"- Entity stream: {ENGINES[summary['engine']]} (`--engine "
             f"{summary['engine']}`).",
             f"- {summary['size']} size, {summary['batches']} FewRel-16 batches of "
             f"{summary['batch_size']}, {summary['rounds']} alternating rounds; hot: each "
             f"module's captured call run {summary['hot_repeats']} times back to back.",
             f"- Whole forward (no hooks): text {whole['text']} ms, ERNIE-KG "
             f"{whole['ernie']} ms, ratio {whole['ernie'] / whole['text']:.4f} (paired "
             f"{m['paired_ratio']}), +{whole['ernie'] - whole['text']:.3f} ms.",
             f"- With hooks: text {m['in_model_ms']['text']['forward']} ms, ERNIE-KG "
             f"{m['in_model_ms']['ernie']['forward']} ms; the rows below split that run's "
             "difference.",
             "- Again in the model: each entity module's forward called a second time right "
             "after the model's own call, inside the forward (a separate pass; without the "
             "module call's wrapper and hooks, a few microseconds a call).", "",
             "| part | layers | in the model ms | hot ms | in the model / hot | "
             "again in the model ms |",
             "|---|---|---|---|---|---|"]
    for row in summary["breakdown"]:
        lines.append(f"| {row['part']} | {row.get('layers', '')} | {row['in_model_ms']} | "
                     f"{row.get('hot_ms', '')} | {row.get('in_model_over_hot', '')} | "
                     f"{row.get('again_in_model_ms', '')} |")
    lines += ["", "## Per layer (with hooks)", "", "| layer | text ms | ERNIE-KG ms | extra ms |",
              "|---|---|---|---|"]
    text, ernie = m["in_model_ms"]["text"], m["in_model_ms"]["ernie"]
    for part in (p for p in text if p.count(".") == 1):
        lines.append(f"| {part} | {text[part]:.3f} | {ernie[part]:.3f} | "
                     f"{ernie[part] - text[part]:+.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=("minilm", "base"), default="minilm")
    p.add_argument("--batches", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--hot-repeats", type=int, default=200)
    p.add_argument("--entity-rows", type=int, default=500_000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--engine", choices=("native", "aten"), default="native",
                   help="the entity stream's compiled kernels (where built) or its ATen ops")
    p.add_argument("--output", type=Path, default=Path("results/entity_stream_cost"))
    args = p.parse_args(argv)
    if min(args.batches, args.batch_size, args.rounds, args.hot_repeats, args.threads) < 1:
        p.error("--batches, --batch-size, --rounds, --hot-repeats and --threads must be >= 1")
    keep_freed_memory()
    torch.set_num_threads(args.threads)
    batches, stats = fewrel16_batches(args.batches, args.batch_size)
    rows = max(args.entity_rows, stats["kg_entities"])  # every linked entity has a row
    built = build_models(args.size, stats["num_labels"], rows, False)
    models = {name: built[name].eval() for name in ("text", "ernie")}
    machine, load_before = machine_info(), load_average()
    engine = entity_kernels_off() if args.engine == "aten" else contextlib.nullcontext()
    with torch.inference_mode(), engine:
        measured = measure(models, batches, args.rounds, args.hot_repeats)
    summary = {"command": "python benchmarks/entity_stream_cost.py " + " ".join(
                   argv if argv is not None else sys.argv[1:]),
               "machine": machine, "engine": args.engine, "size": args.size,
               "batches": args.batches,
               "batch_size": args.batch_size, "rounds": args.rounds,
               "hot_repeats": args.hot_repeats, "measured": measured,
               "breakdown": breakdown(measured), "load_before": load_before,
               "load_after": load_average()}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    args.output.with_suffix(".md").write_text(markdown(summary))
    print(json.dumps({row["part"]: row["in_model_ms"] for row in summary["breakdown"]}))
    return summary


if __name__ == "__main__":
    main()
