"""Feature-based ABSA: the frozen encoder's last four layers, concatenated, under a small
classifier; the BERT paper's feature-based recipe (section 5.3) against fine-tuning.

    python experiments/absa_features.py --dataset sentihood|semeval --setting nli_m \
        --seed S --output-dir OUT [--post-trained DIR] [--pooling cls|mean]

Same splits and examples as ``experiments/absa.py`` (SemEval's dev: the same held-out 10%),
same metrics, same ``OUT/metrics.json`` keys, so a fine-tuned run of the same dataset,
setting and seed compares key for key (``summarize_absa.py`` pairs them: runs named
``<dataset>-<setting>-features-seed<S>``). The encoder (the packaged MiniLM, or
``--post-trained``) never trains: each pair's [CLS] state (``--pooling mean``: the mean
over the sequence) of each of the last four layers is concatenated (4 x 384 = 1536 wide),
computed once per dataset and setting and cached under ``--feature-cache``. On top: a
one-hidden-layer MLP (256 units, GELU, dropout 0.1) on standardised features, AdamW (lr
1e-3, weight decay 0.01, batch 64) for ``--epochs`` epochs, the epoch with the best dev
``absa_score`` kept (as absa.py chooses its epoch); the seed draws the MLP's start and
the batch order. Nothing is chosen on test.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ernie_kg.data.absa import B_LABELS, build_examples, labels_for
from ernie_kg.io import write_json
from ernie_kg.paths import PROJECT_ROOT
from ernie_kg.pipelines.pair import PairClassifier
from ernie_kg.training.finetuning import set_threads

sys.path.insert(0, str(Path(__file__).resolve().parent))
import absa  # noqa: E402  experiments/absa.py: splits, scoring, settings (one home each)

LAYERS = (-1, -2, -3, -4)
HIDDEN, DROPOUT, LEARNING_RATE, WEIGHT_DECAY, BATCH = 256, 0.1, 1e-3, 0.01, 64


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", choices=tuple(absa.KEYS), required=True)
    p.add_argument("--setting", choices=("qa_m", "nli_m", "qa_b", "nli_b"), required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output-dir", type=Path, required=True)
    p.add_argument("--post-trained", type=Path, default=None)
    p.add_argument("--pooling", choices=("cls", "mean"), default="cls")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--data-dir", type=Path, default=absa.DATA_DIR)
    p.add_argument("--feature-cache", type=Path,
                   default=PROJECT_ROOT / "runs" / "absa_features" / "cache")
    p.add_argument("--limit", type=int, default=None, help="first N training sentences")
    p.add_argument("--eval-limit", type=int, default=None, help="first N dev/test sentences")
    p.add_argument("--threads", type=int, default=None)
    return p.parse_args(argv)


def encode(encoder: PairClassifier, examples: list, pooling: str, max_length: int
           ) -> np.ndarray:
    """``[len(examples), 4 * hidden]`` frozen features, computed in length order (short
    batches pad little) and returned in the examples' order."""
    order = sorted(range(len(examples)),
                   key=lambda i: len(examples[i].text) + len(examples[i].text_pair or ""))
    features = encoder.extract_features(
        [examples[i].text for i in order], text_pairs=[examples[i].text_pair for i in order],
        layers=LAYERS, combine="concat", level="sentence", sentence_pooling=pooling,
        batch_size=128, entities="none", max_length=max_length)
    out = np.empty_like(features)
    out[order] = features
    return out


def cached_features(args: argparse.Namespace, examples: dict[str, list]) -> dict[str, Any]:
    """Each split's features, from the cache when this encoder, setting, pooling and data
    were encoded before (the encoder is frozen: every seed reads the same features)."""
    backbone = absa._relative(args.post_trained) or "MiniLM-L6-H384"
    key = "-".join([args.dataset, args.setting, args.pooling, backbone.replace("/", "_"),
                    str(args.limit), str(args.eval_limit)])
    path = args.feature_cache / f"{key}.npz"
    if path.is_file():
        found = np.load(path)
        return {"features": {split: found[split] for split in examples}, "seconds": 0.0,
                "cached": True}
    started = time.perf_counter()
    labels = B_LABELS if args.setting.endswith("_b") else labels_for(args.dataset)
    kg, table = absa.knowledge(argparse.Namespace(knowledge=False))
    encoder = PairClassifier.build(list(labels), kg, table, knowledge=False,
                                   backbone=str(args.post_trained) if args.post_trained
                                   else None, seed=0)
    encoder.model.eval()
    max_length = absa.MAX_LENGTH[args.dataset]
    features = {split: encode(encoder, found, args.pooling, max_length)
                for split, found in examples.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npz")
    np.savez(partial, **features)
    partial.replace(path)  # atomic: a killed run leaves no half-written cache
    return {"features": features, "seconds": time.perf_counter() - started, "cached": False}


def train_head(args: argparse.Namespace, features: dict[str, np.ndarray],
               examples: dict[str, list], labels: tuple[str, ...]) -> dict[str, Any]:
    """The MLP on standardised features; the best dev epoch's dev and test probabilities."""
    torch.manual_seed(args.seed)
    mean = features["train"].mean(0)
    std = features["train"].std(0) + 1e-6
    x = {s: torch.from_numpy((f - mean) / std).float() for s, f in features.items()}
    index = {label: i for i, label in enumerate(labels)}
    y = torch.tensor([index[e.label] for e in examples["train"]])
    head = nn.Sequential(nn.Linear(x["train"].shape[1], HIDDEN), nn.GELU(),
                         nn.Dropout(DROPOUT), nn.Linear(HIDDEN, len(labels)))
    optimizer = torch.optim.AdamW(head.parameters(), lr=LEARNING_RATE,
                                  weight_decay=WEIGHT_DECAY)
    best: dict[str, Any] = {"score": -1.0}
    history = []
    for epoch in range(1, args.epochs + 1):
        head.train()
        for batch in torch.randperm(len(y)).split(BATCH):
            loss = nn.functional.cross_entropy(head(x["train"][batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        head.eval()
        with torch.no_grad():
            probabilities = {s: torch.softmax(head(x[s]), -1).double().numpy()
                             for s in ("dev", "test")}
        dev = absa.absa_scores(args.dataset, examples["dev"], probabilities["dev"])
        history.append({"epoch": epoch, "loss": loss.item(), "dev_absa_score":
                        dev["absa_score"]})
        if dev["absa_score"] > best["score"]:
            best = {"score": dev["absa_score"], "epoch": epoch, "dev": dev,
                    "test": absa.absa_scores(args.dataset, examples["test"],
                                             probabilities["test"])}
    return {**best, "history": history}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    set_threads(args.threads)
    started = time.perf_counter()
    sentences = dict(zip(("train", "dev", "test"),
                         absa.load_splits(args.dataset, args.data_dir)))
    sentences["train"] = sentences["train"][:args.limit]
    for split in ("dev", "test"):
        sentences[split] = sentences[split][:args.eval_limit]
    examples = {split: build_examples(s, args.setting) for split, s in sentences.items()}
    labels = B_LABELS if args.setting.endswith("_b") else labels_for(args.dataset)
    encoded = cached_features(args, examples)
    head_started = time.perf_counter()
    fitted = train_head(args, encoded["features"], examples, labels)
    metrics = {
        **{key: fitted["test"][key] for key in absa.KEYS[args.dataset]},
        "test_absa_score": fitted["test"]["absa_score"], "dev": fitted["dev"],
        "kept_epoch": fitted["epoch"], "history": fitted["history"],
        "timings": {"feature_seconds": encoded["seconds"], "features_cached":
                    encoded["cached"], "head_seconds": time.perf_counter() - head_started,
                    "minutes": (time.perf_counter() - started) / 60},
        "settings": {"dataset": args.dataset, "setting": args.setting, "seed": args.seed,
                     "mode": "feature-based", "layers": list(LAYERS), "combine": "concat",
                     "pooling": args.pooling, "backbone": absa._relative(args.post_trained)
                     or "MiniLM-L6-H384", "head": {"hidden": HIDDEN, "dropout": DROPOUT,
                     "learning_rate": LEARNING_RATE, "weight_decay": WEIGHT_DECAY,
                     "batch_size": BATCH, "epochs": args.epochs},
                     "limit": args.limit, "eval_limit": args.eval_limit,
                     "examples": {s: len(e) for s, e in examples.items()}},
        "machine": absa.machine(),
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    write_json(args.output_dir / "metrics.json", metrics)
    print(json.dumps({k: metrics[k] for k in absa.KEYS[args.dataset]}
                     | {"kept_epoch": fitted["epoch"]}))
    return metrics


if __name__ == "__main__":
    main()
