"""Fine-tuning throughput: ``ernie_kg.training.finetuning`` (HF Trainer) vs a hand-written loop.

Both train the same ``ErnieKGForRelationClassification`` (packaged MiniLM, a random
entity table) from the same initial weights on the same batches, in the same order
(sequential sampler, the demo corpus encoded with entities = "both"): fused AdamW, linear
schedule with warm-up, gradient clipping at 1.0. The hand loop is the minimum a user
would write. Each round runs both, alternating which goes first, so load from other
processes hits both alike; the first step of every run is a warm-up and is not timed.
The issue's bar: Trainer sequences/s >= 0.95x the hand loop's (median over rounds).

    python benchmarks/finetune_throughput.py [--steps 30] [--rounds 3] [--threads 2]

Prints one JSON line and writes ``results/finetune_throughput.{json,md}``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from transformers import AutoTokenizer, TrainerCallback, get_linear_schedule_with_warmup

from ernie_kg.data.collator import ErnieKGCollator
from ernie_kg.data.features import LabelMap, relation_features
from ernie_kg.data.fewrel import read_fewrel
from ernie_kg.kg import EntityEmbeddings, KnowledgeGraph
from ernie_kg.linking.linker import EntityLinker
from ernie_kg.modeling import ErnieKGForRelationClassification
from ernie_kg.paths import PROJECT_ROOT, default_backbone, kg_data_dir
from ernie_kg.processing.processor import ErnieKGProcessor
from ernie_kg.training.finetuning import finetune

LR, WARMUP, BATCH = 5e-5, 0.1, 32


class _StepTimer(TrainerCallback):
    """Wall time of steps 2..N (step 1 warms up)."""

    def __init__(self) -> None:
        self.start = None
        self.end = None
        self.steps = 0

    def on_step_end(self, args, state, control, **kwargs):
        self.steps += 1
        if self.steps == 1:
            self.start = time.perf_counter()
        self.end = time.perf_counter()


def hand_loop(model, features, steps: int) -> float:
    """Seconds of steps 2..``steps`` of a minimal PyTorch loop."""
    model.train()
    decay = [p for n, p in model.named_parameters() if p.requires_grad
             and not any(k in n for k in ("bias", "LayerNorm"))]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad
                and any(k in n for k in ("bias", "LayerNorm"))]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=LR, fused=True)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(WARMUP * steps), steps)
    loader = DataLoader(features, batch_size=BATCH, shuffle=False, collate_fn=ErnieKGCollator())
    start = None
    for step, batch in enumerate(loader):
        if step == steps:
            break
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if step == 0:
            start = time.perf_counter()
    return time.perf_counter() - start


def trainer_loop(model, features, steps: int) -> float:
    timer = _StepTimer()
    with tempfile.TemporaryDirectory() as out:
        finetune(model, features, output_dir=out, max_steps=steps, batch_size=BATCH,
                 learning_rate=LR, warmup_ratio=WARMUP, train_sampling_strategy="sequential",
                 save_strategy="no", logging_strategy="no", progress=False,
                 callbacks=[timer])
    return timer.end - timer.start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--output", type=Path, default=PROJECT_ROOT / "results" / "finetune_throughput")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    corpus = kg_data_dir() / "demo_corpus"
    kg = KnowledgeGraph.load(kg_data_dir() / "demo")
    embeddings = EntityEmbeddings.random(list(kg.entities), dim=100)
    examples = read_fewrel(corpus / "train.json")
    labels = LabelMap.from_examples(examples)
    backbone = default_backbone()
    processor = ErnieKGProcessor(AutoTokenizer.from_pretrained(backbone), embeddings,
                                 linker=EntityLinker.from_kg(kg, embeddings),
                                 task="relation_classification")
    features = relation_features(examples, processor, labels, "both")
    features = [features[i] for i in torch.randperm(len(features),
                                                    generator=torch.Generator().manual_seed(0))]
    torch.manual_seed(0)
    initial = ErnieKGForRelationClassification.from_backbone(backbone, embeddings,
                                                              id2label=labels.id2label)
    timed = {"trainer": [], "hand": []}
    for round_ in range(args.rounds):
        order = ("trainer", "hand") if round_ % 2 == 0 else ("hand", "trainer")
        for name in order:
            model = copy.deepcopy(initial)
            run = trainer_loop if name == "trainer" else hand_loop
            seconds = run(model, features, args.steps)
            timed[name].append(BATCH * (args.steps - 1) / seconds)
    result = {
        "trainer_sequences_per_second": statistics.median(timed["trainer"]),
        "hand_sequences_per_second": statistics.median(timed["hand"]),
        "rounds": timed, "steps": args.steps, "batch_size": BATCH,
        "threads": torch.get_num_threads(), "load_average": os.getloadavg(),
    }
    result["ratio"] = result["trainer_sequences_per_second"] / result["hand_sequences_per_second"]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.output.with_suffix(".md").write_text(
        "# Fine-tuning throughput: Trainer (`ernie_kg.training.finetuning`) vs hand loop\n\n"
        f"MiniLM-L6 ERNIE-KG, batch {BATCH}, {args.steps} steps x {args.rounds} rounds, "
        f"{result['threads']} threads, load {result['load_average'][0]:.1f}.\n\n"
        "| loop | sequences/s (median) |\n|---|---|\n"
        f"| Trainer | {result['trainer_sequences_per_second']:.2f} |\n"
        f"| hand-written | {result['hand_sequences_per_second']:.2f} |\n"
        f"| ratio | {result['ratio']:.3f} (bar: >= 0.95) |\n"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
