"""Shared machinery of the CPU model benchmarks (``fusion_overhead.py``, ``peer_throughput.py``).

Why one module: ratios between models only compare across scripts and CPU kinds when
they are measured the same way: variants interleaved on the same batches (order
rotating by round and batch), per-batch medians over rounds, the load recorded, and the
CPU named with the flags that decide which kernels torch runs (AVX-512 BF16, AMX).

The scripts set ``OMP_WAIT_POLICY=PASSIVE`` before torch loads (``wait_policy.py``). The
CPU is often shared with other work: with a spinning policy a thread that reaches a
barrier burns the core its descheduled partner needs, and every parallel op costs a time
slice (2-3x slower steps here). PASSIVE threads sleep instead, and every parallel region
pays a wake-up. On an idle machine measure with ``OMP_WAIT_POLICY=default`` (OpenMP's
own, what a user's process has) or ``ACTIVE``; the policy is recorded with the machine.
"""

from __future__ import annotations

import os
import platform
import random
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ernie_kg.machine import cpu_flags as kernel_flags
from ernie_kg.machine import cpu_model
from ernie_kg.memory import freed_memory_kept
from ernie_kg.modeling.native import entity_kernels
from ernie_kg.paths import PROJECT_ROOT

#: CPU flags that decide the fp32/bf16/int8 kernels oneDNN and torch pick.
KERNEL_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16",
                "amx_int8")
FEWREL16 = PROJECT_ROOT.parent / "shared" / "data" / "fewrel" / "fewrel16.json"

Measure = Callable[[str, dict], tuple[float, float]]


# ---------------------------------------------------------------- the machine
def cpu_flags() -> dict[str, bool]:
    """Which of :data:`KERNEL_FLAGS` the CPU has."""
    return kernel_flags(KERNEL_FLAGS)


def flag_text(flags: dict[str, bool]) -> str:
    """``"avx512_bf16, amx_tile"``-style list of the flags present."""
    present = [flag for flag, on in flags.items() if on]
    return ", ".join(present) if present else "no AVX2/AVX-512/AMX flags"


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine_info() -> dict:
    """The CPU (model, kernel flags, torch's dispatch level), cores, threads, versions."""
    return {
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_flags(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_count": os.cpu_count(),
        "cores_available": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
        "malloc_thresholds_set": freed_memory_kept(),  # ernie_kg.memory
        "entity_kernels": entity_kernels() is not None,  # ernie_kg.modeling.native
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def machine_line(machine: dict) -> str:
    """One Markdown-ready phrase naming the CPU, its kernel flags, cores and threads."""
    return (f"{machine['cpu_model']} ({flag_text(machine['cpu_flags'])}; torch dispatch "
            f"{machine['torch_cpu_capability']}), {machine['cores_available']} cores, torch "
            f"{machine['torch']} with {machine['torch_threads']} threads "
            f"(OMP_WAIT_POLICY={machine['omp_wait_policy']})"
            + (", glibc malloc thresholds set (ernie_kg.memory)"
               if machine.get("malloc_thresholds_set") else "")
            + {True: ", the entity stream's native kernels built (ernie_kg.modeling.native)",
               False: ", the entity stream's native kernels not built: its ATen ops",
               None: ""}[machine.get("entity_kernels")])


def relative(path: Path) -> str:
    """``path`` relative to the project root, as results record paths."""
    return os.path.relpath(Path(path).resolve(), PROJECT_ROOT)


# ---------------------------------------------------------------- timing
def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, process CPU seconds of all threads) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def interleaved_rounds(variants: Sequence[str], batches: Sequence[dict],
                       measures: dict[str, Measure], rounds: int, warmup: int,
                       max_seconds: float, skip: dict[str, set[str]] | None = None) -> dict:
    """Run every task of ``measures`` for every variant on every batch, round after round.

    On each batch the variants run back to back, the first one rotating by round and by
    batch (A B C, then B C A, ...), so load from other processes hits all alike. No round
    starts after ``max_seconds`` once 3 are measured. ``skip[task]`` names variants that
    cannot run that task. Returns ``wall[task][variant][batch]`` (one time per measured
    round), ``cpu_seconds[task][variant]``, the 1-min ``loads`` after each round,
    ``rounds`` measured and ``seconds`` in all.
    """
    skip = skip or {}
    variants = list(variants)
    wall = {task: {v: [[] for _ in batches] for v in variants if v not in skip.get(task, ())}
            for task in measures}
    cpu_seconds = {task: dict.fromkeys(wall[task], 0.0) for task in measures}
    loads: list[float] = []
    measured, started = 0, time.perf_counter()
    for round_index in range(warmup + rounds):
        if measured >= 3 and time.perf_counter() - started > max_seconds:
            break  # a busy machine: stop early rather than run for ever
        for batch_index, batch in enumerate(batches):
            shift = (round_index + batch_index) % len(variants)
            for task, measure in measures.items():
                for variant in variants[shift:] + variants[:shift]:
                    if variant not in wall[task]:
                        continue
                    seconds, cpu = measure(variant, batch)
                    if round_index >= warmup:
                        wall[task][variant][batch_index].append(seconds)
                        cpu_seconds[task][variant] += cpu
        if round_index >= warmup:
            measured += 1
            loads.append(os.getloadavg()[0])
    return {"wall": wall, "cpu_seconds": cpu_seconds, "loads": loads, "rounds": measured,
            "seconds": round(time.perf_counter() - started, 1)}


def top_ops(step: Callable[[int], object], steps: int, rows: int = 30) -> str:
    """``torch.profiler`` table of the ops with the most self CPU time over ``steps``
    calls of ``step(i)`` (after one unprofiled warm-up call): where the time goes."""
    from torch.profiler import ProfilerActivity, profile

    step(0)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for index in range(steps):
            step(index)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def median_ms(times: list[list[float]]) -> float:
    """Mean over the batches of each batch's median time over rounds, in ms."""
    return 1000 * statistics.fmean(statistics.median(t) for t in times)


def paired_ratio(numerator: list[list[float]], denominator: list[list[float]]) -> float:
    """Median over (round, batch) of the ratio of two back-to-back runs."""
    return round(statistics.median(a / b for xs, ys in zip(numerator, denominator)
                                   for a, b in zip(xs, ys)), 4)


# ---------------------------------------------------------------- FewRel-16 batches
def _end(ids: list[int], marker: int, start: int) -> int:
    """Position of the end marker (the [SEP] when truncation cut it off)."""
    return ids.index(marker, start) if marker in ids[start:] else len(ids) - 1


def fewrel16_batches(count: int, batch_size: int, seed: int = 0, path: Path = FEWREL16,
                     backbone: str | None = None) -> tuple[list[dict], dict]:
    """``count`` batches of real FewRel-16 test sentences, encoded as the relation
    classifier encodes them, and their statistics.

    Why real sentences: the fusion cost grows with the number of linked entities and
    the padding with the spread of lengths, so both come from the data. The split is
    ``run_fewrel16.sh``'s (70/10/20, seed 0); the KG and alias table come from the
    training part (the open setting, without its CoDEx background, whose entities have
    no names to link), the linker (default settings, random entity vectors) finds the
    entities of sentences drawn at random from the test part, as at inference; each
    batch is padded to its longest sequence (``ErnieKGCollator``). Besides the model
    inputs (``entity_ids``: table rows 1..``kg_entities``) each batch holds ``spans``
    ``[B, 2, 2]``: the head's and tail's wordpieces (start, end exclusive).
    """
    from ernie_kg.data.collator import ErnieKGCollator
    from ernie_kg.data.features import LabelMap, task_features
    from ernie_kg.data.fewrel import read_fewrel, split_fewrel
    from ernie_kg.data.knowledge import fewrel_knowledge
    from ernie_kg.kg import EntityEmbeddings
    from ernie_kg.paths import default_backbone
    from ernie_kg.pipelines.base import build_processor

    train, _, test = split_fewrel(path, (0.7, 0.1, 0.2), seed=0)
    kg, aliases = fewrel_knowledge([train])
    table = EntityEmbeddings.random(list(kg.entities), dim=100, seed=0)
    processor = build_processor(backbone or default_backbone(), "relation_classification",
                                kg, table, aliases)
    labels = LabelMap.from_examples(read_fewrel(train))
    examples = read_fewrel(test)
    random.Random(seed).shuffle(examples)
    needed = count * batch_size
    examples = (examples * (needed // len(examples) + 1))[:needed]
    features = task_features(examples, processor, labels, "linker").features
    tokenizer = processor.tokenizer
    ends = [tokenizer.convert_tokens_to_ids(processor.markers[k]) for k in ("head_end",
                                                                              "tail_end")]
    for feature in features:
        ids = feature["input_ids"]
        feature["spans"] = [[start + 1, _end(ids, marker, start + 1)]
                            for start, marker in zip(feature["marker_positions"], ends)]
    collate = ErnieKGCollator(tokenizer.pad_token_id)
    batches = [collate(features[i:i + batch_size]) for i in range(0, needed, batch_size)]
    lengths = sorted(len(f["input_ids"]) for f in features)
    stats = {
        "source": f"{path.name}: test part of the 70/10/20 split (seed 0), drawn with "
                  f"seed {seed}",
        "num_labels": len(labels),
        "kg_entities": len(kg.entities),
        "batch_size": batch_size,
        "num_batches": len(batches),
        "wordpieces_median_p10_p90": [lengths[len(lengths) // 2], lengths[len(lengths) // 10],
                                      lengths[len(lengths) * 9 // 10]],
        "mean_length": round(statistics.fmean(lengths), 1),
        "mean_padded_length": round(statistics.fmean(b["input_ids"].shape[1]
                                                     for b in batches), 1),
        "linked_entities_per_sequence": round(statistics.fmean(
            sum(1 for r in f["entity_ids"] if r) for f in features), 3),
    }
    return batches, stats
