"""Page faults and time per step with glibc's default malloc thresholds and with
``ernie_kg.memory.keep_freed_memory``: ERNIE-KG and the text-only model, MiniLM size.

Why: PyTorch has no caching allocator on the CPU, so the largest buffers of every step
can be mapped and page-faulted in again on every step (``ernie_kg/memory.py`` says why).
Page faults are counted, not timed, so they hold on a loaded machine; the CPU time of the
process (``time.process_time``) is reported beside the wall time for the same reason.
Each setting runs in its own interpreter (the setting is process-wide), the two models
interleaved on ``peer_throughput.py``'s batches (real FewRel-16 sentences, the linker's
entities), train step and inference.

    python benchmarks/memory_allocator.py [--steps 12] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

MODELS = ("ernie", "text")
TASKS = ("train_step", "inference")
SETTINGS = ("glibc defaults", "keep_freed_memory")


def measure(setting: str, steps: int, threads: int) -> dict:
    """In this interpreter: per-step minor faults, CPU and wall ms of each model and task."""
    import torch
    from cpu_bench import fewrel16_batches
    from peer_throughput import Runner, add_luke_inputs, build_models

    from ernie_kg.memory import keep_freed_memory

    torch.set_num_threads(threads)
    applied = keep_freed_memory() if setting == SETTINGS[1] else False
    batches, stats = fewrel16_batches(3, 16)
    for batch in batches:
        add_luke_inputs(batch)
    models = build_models("minilm", stats["num_labels"], max(500_000, stats["kg_entities"]),
                          False)
    runner = Runner({name: models[name] for name in MODELS})
    result: dict = {"applied": applied}
    for task in TASKS:
        run = getattr(runner, task)
        for name in MODELS:  # warm-up
            for batch in batches:
                run(f"{name}/fp32", batch)
        totals = {name: [0, 0.0, 0.0] for name in MODELS}
        for index in range(steps):
            for name in MODELS if index % 2 == 0 else MODELS[::-1]:
                faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                cpu, wall = time.process_time(), time.perf_counter()
                run(f"{name}/fp32", batches[index % len(batches)])
                totals[name][1] += time.process_time() - cpu
                totals[name][2] += time.perf_counter() - wall
                totals[name][0] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        result[task] = {name: {"faults_per_step": round(f / steps),
                               "cpu_ms_per_step": round(1000 * c / steps, 1),
                               "wall_ms_per_step": round(1000 * w / steps, 1)}
                        for name, (f, c, w) in totals.items()}
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return result


def markdown(result: dict) -> str:
    lines = ["# glibc's malloc thresholds: page faults and time per step (MiniLM size)", "",
             f"`{result['command']}` (each setting in its own interpreter; the two models "
             f"interleaved, {result['steps']} steps each, batches of 16 FewRel-16 test "
             f"sentences).", "", f"- Machine: {result['machine']}; 1-min load {result['load']} "
             f"(fault counts do not depend on it; times do).", "",
             "| setting | task | model | minor faults / step | CPU ms / step | wall ms / step |",
             "|---|---|---|---|---|---|"]
    for setting in SETTINGS:
        for task in TASKS:
            for name in MODELS:
                row = result["settings"][setting][task][name]
                lines.append(f"| {setting} | {task} | {name} | {row['faults_per_step']} | "
                             f"{row['cpu_ms_per_step']} | {row['wall_ms_per_step']} |")
    lines += ["", "| setting | ERNIE-KG / text CPU time, train step | same, inference | peak RSS "
              "MB |", "|---|---|---|---|"]
    for setting in SETTINGS:
        ratios = result["ratios"][setting]
        lines.append(f"| {setting} | {ratios['train_step']} | {ratios['inference']} | "
                     f"{result['settings'][setting]['peak_rss_mb']} |")
    saved = result["cpu_time_saved"]
    lines += ["", f"CPU time of a train step with the thresholds set, against glibc's "
              f"defaults: ERNIE-KG {saved['ernie']:+.1%}, text {saved['text']:+.1%}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--output", type=Path,
                   default=Path(__file__).resolve().parents[1] / "results" / "memory_allocator")
    p.add_argument("--measure", choices=SETTINGS, help=argparse.SUPPRESS)  # the child's part
    args = p.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure, args.steps, args.threads)))
        return
    import torch
    from cpu_bench import machine_info, machine_line

    torch.set_num_threads(args.threads)  # the children's, for the machine line
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
                                "ERNIE_KG_DEFAULT_MALLOC")}
    settings = {}
    for setting in SETTINGS:
        child = subprocess.run([sys.executable, __file__, "--measure", setting, "--steps",
                                str(args.steps), "--threads", str(args.threads)],
                               capture_output=True, text=True, env=environment, check=True)
        settings[setting] = json.loads(child.stdout.strip().splitlines()[-1])
    result = {
        "benchmark": "memory_allocator", "steps": args.steps, "threads": args.threads,
        "command": " ".join(["python benchmarks/memory_allocator.py", *(argv or sys.argv[1:])]),
        "machine": machine_line(machine_info()), "load": round(os.getloadavg()[0], 2),
        "settings": settings,
        "ratios": {s: {t: round(settings[s][t]["ernie"]["cpu_ms_per_step"]
                                / settings[s][t]["text"]["cpu_ms_per_step"], 3)
                       for t in TASKS} for s in SETTINGS},
        "cpu_time_saved": {m: round(settings[SETTINGS[1]]["train_step"][m]["cpu_ms_per_step"]
                                    / settings[SETTINGS[0]]["train_step"][m]["cpu_ms_per_step"]
                                    - 1, 4) for m in MODELS},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.output.with_suffix(".md").write_text(markdown(result))
    print(json.dumps({"ratios": result["ratios"], "cpu_time_saved": result["cpu_time_saved"]}))


if __name__ == "__main__":
    main()
