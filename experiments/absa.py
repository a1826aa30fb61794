"""Aspect-based sentiment as sentence pairs (Sun, Huang and Qiu, NAACL 2019) on SentiHood
and SemEval-2014 restaurants, the paper's five settings, on the packaged MiniLM.

Contract:

    python experiments/absa.py --dataset sentihood|semeval \
        --setting single|qa_m|nli_m|qa_b|nli_b --seed S --output-dir OUT [--post-trained DIR]

Trains on the benchmark's training data, keeps the epoch with the best dev score (SentiHood:
its dev file; SemEval: 10% of train held out by :func:`split_semeval2014`, split seed 0 for
every run), scores the test file and writes ``OUT/metrics.json``: the test metrics under the
contract keys as fractions (SentiHood ``aspect_strict_accuracy``, ``aspect_macro_f1``,
``aspect_auc``, ``sentiment_accuracy``, ``sentiment_auc``; SemEval ``precision``,
``recall``, ``f1``, ``accuracy_4way``, ``accuracy_3way``, ``accuracy_binary``), the dev
metrics of the kept epoch, timings (``train_examples_per_second`` excludes the per-epoch
dev evaluation, timed apart), token lengths, settings and the machine. Also
``OUT/predictions.json`` (dev and test probabilities per example, in
:func:`build_examples` order), ``OUT/log.jsonl`` and ``OUT/model/`` (a
:class:`PairClassifier`); ``single`` trains one classifier per target-aspect in
``OUT/single/<name>/`` (the same three files each) and drops their models once scored
(about 100 MB each) unless ``--keep-models``. A killed run resumes from its last epoch
checkpoint (as relation_classification.py does); a finished ``single`` classifier is not
retrained.

Settings: ``single`` classifies the sentence alone, one classifier per target-aspect (8 on
SentiHood, 5 on SemEval), their probabilities assembled per group; ``qa_m``/``nli_m`` one
classifier over (sentence, auxiliary); ``qa_b``/``nli_b`` one yes/no classifier over
(auxiliary, sentence), one example per label, the yes-probabilities folded back with
:func:`fold_b_predictions`. The epoch is chosen on ``absa_score``, the mean of the two
headline metrics the issue compares (SentiHood aspect macro-F1 and sentiment accuracy,
SemEval subtask-3 F1 and 4-way accuracy), computed on the whole dev set as the paper's
metrics are, never on test.

Knowledge: these pairs carry no KG ids, so the default is text-only (no entities fed: the
model is then exactly BERT's pair classifier on the backbone), which is what compares with
the paper's BERT. :meth:`SavedTextModel.build` needs a KG and an entity table, so it gets
the bundled demo KG with random vectors and ``knowledge=False``. ``--knowledge`` feeds the
linker's entities over the demo KG with its TransE vectors (the demo's settings, cached).

Recipe: the paper's is BERT-base, lr 2e-5, batch 24, 4 epochs, warm-up 0.1. A 6-layer,
384-wide model takes a larger step (5e-5, the project's MiniLM default for every task) and
3 epochs keep a single/M run within about 30 minutes on 2 cores; batch 24 as the paper's.
None was tuned on test. Speed: batches padded to their own longest pair, length-grouped
training batches (Trainer's ``group_by_length``, the project default), dev and test
predicted in length-sorted batches, and a short ``--max-length``: the 99.9th percentile of
the training pairs of the longest construction (qa_b) rounded up to 16, SentiHood 137 ->
144, SemEval 85 -> 96 (mean lengths 23/36/38 tokens for single/qa_m/qa_b on SentiHood,
19/31/31 on SemEval); each run records its length percentiles and the pairs cut (longest
first, both segments kept). Measured (SemEval qa_m, ``--limit 300 --epochs 1 --threads
1``, AMD EPYC, 2 cores shared with other runs): 34 training examples/s at load 2.5-3 (20 at
load 5), dev 72/s, test 120/s; extrapolated per run at load 2.5-3 (examples/s scaled by
mean length), SemEval / SentiHood minutes: single 15 / 20, nli_m 16 / 24, qa_m 22 / 30,
nli_b 85 / 77, qa_b 109 / 95 (B: 5x / 3x the examples of M, one pass per label).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoTokenizer

from ernie_kg.data.absa import (
    B_LABELS,
    SETTINGS,
    AbsaExample,
    build_examples,
    fold_b_predictions,
    labels_for,
    read_semeval2014,
    read_sentihood,
    single_classifiers,
    split_semeval2014,
)
from ernie_kg.data.features import FeatureDataset, LabelMap
from ernie_kg.io import read_json, write_json
from ernie_kg.machine import cpu_model
from ernie_kg.paths import PROJECT_ROOT, default_backbone
from ernie_kg.pipelines.pair import PairClassifier, train_pair_classifier
from ernie_kg.training.absa_metrics import SEMEVAL_KEYS, SENTIHOOD_KEYS, absa_metrics
from ernie_kg.training.checkpoints import append_log, read_log, truncate_log
from ernie_kg.training.evaluation import predict_logits, softmax
from ernie_kg.training.finetuning import set_threads
from ernie_kg.training.gate_rate import finetune_started

DATA_DIR = Path(os.environ.get("ERNIE_KG_ABSA", PROJECT_ROOT.parent / "shared/data/absa"))
#: Contract keys of each dataset's metrics.json.
KEYS = {"sentihood": SENTIHOOD_KEYS, "semeval": SEMEVAL_KEYS}
#: The two headline metrics whose mean picks the epoch (the ones the issue compares).
HEADLINE = {"sentihood": ("aspect_macro_f1", "sentiment_accuracy"),
            "semeval": ("f1", "accuracy_4way")}
#: 99.9th percentile of the qa_b training pairs, rounded up to 16 (see the docstring).
MAX_LENGTH = {"sentihood": 144, "semeval": 96}
FINETUNE = {"epochs": 3.0, "learning_rate": 5e-5, "knowledge_learning_rate": 5e-4,
            "batch_size": 24, "eval_batch_size": 128}
DEV_FRACTION, SPLIT_SEED = 0.1, 0  # SemEval's dev: the same held-out 10% for every run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", choices=tuple(KEYS), required=True)
    p.add_argument("--setting", choices=SETTINGS, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output-dir", type=Path, required=True)
    p.add_argument("--post-trained", type=Path, default=None,
                   help="backbone directory (BERT format, e.g. from `ernie-kg pretrain`) "
                        "instead of the packaged MiniLM")
    p.add_argument("--knowledge", action="store_true",
                   help="feed the linker's entities over the demo KG (default: text only)")
    p.add_argument("--data-dir", type=Path, default=DATA_DIR)
    p.add_argument("--epochs", type=float, default=FINETUNE["epochs"])
    p.add_argument("--lr", type=float, default=FINETUNE["learning_rate"])
    p.add_argument("--batch-size", type=int, default=FINETUNE["batch_size"])
    p.add_argument("--eval-batch-size", type=int, default=FINETUNE["eval_batch_size"])
    p.add_argument("--max-length", type=int, default=None,
                   help=f"tokens per pair (default: {MAX_LENGTH})")
    p.add_argument("--limit", type=int, default=None,
                   help="only the first N training sentences (smoke tests)")
    p.add_argument("--eval-limit", type=int, default=None,
                   help="only the first N dev and test sentences (smoke tests: the metrics "
                        "then do not compare with the paper's)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    p.add_argument("--cache-dir", type=Path, default=PROJECT_ROOT / "cache" / "kg")
    p.add_argument("--keep-checkpoints", action="store_true")
    p.add_argument("--keep-models", action="store_true",
                   help="keep the single setting's per-classifier models")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------- data
def load_splits(dataset: str, data_dir: Path) -> tuple[list, list, list]:
    """(train, dev, test) sentences: SentiHood's files; SemEval's dev held out of train."""
    if dataset == "sentihood":
        return tuple(read_sentihood(data_dir / "sentihood" / f"sentihood-{split}.json")
                     for split in ("train", "dev", "test"))
    train, dev = split_semeval2014(read_semeval2014(data_dir / "semeval2014" /
                                                    "Restaurants_Train.xml"),
                                   DEV_FRACTION, SPLIT_SEED)
    return train, dev, read_semeval2014(data_dir / "semeval2014" / "Restaurants_Test_Gold.xml")


def length_stats(tokenizer: Any, examples: Sequence[AbsaExample], max_length: int
                 ) -> dict[str, float]:
    """Untruncated token lengths of the pairs ([CLS] a [SEP] b [SEP]): each distinct text
    is tokenized once (a pair's length is its segments' plus the special tokens)."""
    texts = sorted({e.text for e in examples} | {e.text_pair for e in examples} - {None})
    size = dict(zip(texts, (len(ids) for ids in tokenizer(texts, add_special_tokens=False)
                            ["input_ids"])))
    lengths = np.array([size[e.text] + (2 if e.text_pair is None else size[e.text_pair] + 3)
                        for e in examples])
    if not len(lengths):
        return {}
    return {"mean": float(lengths.mean()), "p50": float(np.percentile(lengths, 50)),
            "p99": float(np.percentile(lengths, 99)),
            "p99.9": float(np.percentile(lengths, 99.9)), "max": int(lengths.max()),
            "truncated": int((lengths > max_length).sum()), "max_length": max_length}


def absa_scores(dataset: str, examples: Sequence[AbsaExample], probabilities: np.ndarray
                ) -> dict[str, float]:
    """The paper's metrics of per-example probabilities (B variants folded back onto their
    groups first) and ``absa_score``, the mean of the headline pair (NaN counts 0)."""
    if examples and examples[0].candidate is not None:
        groups, rows = fold_b_predictions(examples, probabilities[:, B_LABELS.index("yes")])
        gold_of = {e.group: e.candidate for e in examples if e.label == "yes"}
        metrics = absa_metrics(dataset, groups, [gold_of[g] for g in groups], rows)
    else:
        metrics = absa_metrics(dataset, [e.group for e in examples],
                               [e.label for e in examples], probabilities)
    headline = [metrics[key] for key in HEADLINE[dataset]]
    metrics["absa_score"] = float(np.mean(np.nan_to_num(headline, nan=0.0)))
    return metrics


class AbsaPairClassifier(PairClassifier):
    """A :class:`PairClassifier` (saved and loaded as one) that picks its epoch on the
    paper's dev metrics instead of the example-level macro-F1."""

    selection_metric = "absa_score"
    dataset = ""
    dev_examples: Sequence[AbsaExample] = ()
    dev_features: FeatureDataset | None = None
    dev_probabilities: np.ndarray | None = None
    #: (absa_score, dev probabilities) of each evaluation this process ran, in order.
    dev_evaluations: list[tuple[float, np.ndarray]]
    resumed = False

    def features(self, examples: Sequence[Any], entities: str | None = None,
                 progress: bool = False) -> FeatureDataset:
        """As PairClassifier's; fit's dev features are kept for :meth:`_compute_metrics`."""
        features = super().features(examples, entities, progress)
        if examples is self.dev_examples:
            self.dev_features = features
        return features

    def _compute_metrics(self) -> Callable:
        """Trainer's eval order is length-grouped, not dev order (``group_by_length``
        covers eval too): each row is put back by its input ids (``include_for_metrics=
        ["inputs"]``); identical inputs have identical logits, so their order is moot."""
        slots: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for index, feature in enumerate(self.dev_features or ()):
            slots[tuple(int(t) for t in feature["input_ids"] if t > 0)].append(index)

        def compute(prediction: Any) -> dict[str, float]:
            logits = prediction.predictions
            logits = logits[0] if isinstance(logits, (tuple, list)) else logits
            free = {key: list(indices) for key, indices in slots.items()}
            order = [free[tuple(int(t) for t in row if t > 0)].pop()
                     for row in np.asarray(prediction.inputs)]
            probabilities = np.empty((len(order), logits.shape[-1]))
            probabilities[order] = softmax(np.asarray(logits, dtype=np.float64))
            metrics = absa_scores(self.dataset, self.dev_examples, probabilities)
            self.dev_evaluations.append((metrics["absa_score"], probabilities))
            return metrics

        return compute

    def _dev_metrics(self, dev: Sequence[AbsaExample], features: FeatureDataset,
                     entities: str) -> dict[str, Any]:
        """The kept epoch's dev probabilities and metrics. Trainer keeps the first best
        score (a strictly greater one replaces it), so without a resume that evaluation's
        rows are the kept model's; after one, earlier epochs ran elsewhere: one more pass."""
        scores = [score for score, _ in self.dev_evaluations]
        if scores and not self.resumed:
            self.dev_probabilities = self.dev_evaluations[scores.index(max(scores))][1]
        else:
            self.dev_probabilities = softmax(predict_logits(self.model, features, 128))
        return {"dev": absa_scores(self.dataset, dev, self.dev_probabilities)}


# ---------------------------------------------------------------------------- training
def knowledge(args: argparse.Namespace) -> tuple[Any, Any]:
    """The demo KG and its entity table: TransE (the demo's settings, cached) with
    ``--knowledge``, else random vectors that never reach the model."""
    from ernie_kg.demo import DEMO_EMBEDDING
    from ernie_kg.kg import EntityEmbeddings, KnowledgeGraph
    from ernie_kg.kg.cache import cached_entity_embeddings
    from ernie_kg.paths import demo_kg_dir

    kg = KnowledgeGraph.load(demo_kg_dir())
    if not args.knowledge:
        return kg, EntityEmbeddings.random(sorted(kg.entities), DEMO_EMBEDDING["dim"])
    return kg, cached_entity_embeddings(kg, args.cache_dir, progress=not args.no_progress,
                                        seed=0, **DEMO_EMBEDDING)


def run_part(directory: Path, labels: Sequence[str], splits: dict[str, list[AbsaExample]],
             args: argparse.Namespace, kg_table: tuple[Any, Any], settings: dict[str, Any],
             ) -> dict[str, Any]:
    """Train one classifier on ``splits["train"]`` (best dev epoch), predict dev and test;
    cached in ``directory/predictions.json`` so a finished part is never redone."""
    cached = directory / "predictions.json"
    if cached.is_file():
        return read_json(cached)
    directory.mkdir(parents=True, exist_ok=True)
    train, dev, test = splits["train"], splits["dev"], splits["test"]
    classifier = AbsaPairClassifier.build(  # as build_pair_classifier, with ABSA selection
        LabelMap(tuple(labels)), *kg_table, knowledge=args.knowledge,
        backbone=str(args.post_trained) if args.post_trained else None, seed=args.seed,
        max_length=settings["max_length"])
    log_path = directory / "log.jsonl"
    checkpoints = directory / "checkpoints"
    resume = finetune_started(checkpoints)
    classifier.dataset, classifier.dev_examples = args.dataset, dev
    classifier.dev_evaluations, classifier.resumed = [], resume
    if not resume:  # killed before its first checkpoint: its step records go, it restarts
        truncate_log(log_path, 0)
    append_log(directory, {"event": "start", "resume": resume, "train_examples": len(train),
                           **settings})
    fitted: dict[str, Any] = {"train_seconds": 0.0, "feature_seconds": 0.0}
    if train:
        fitted = train_pair_classifier(
            classifier, train, dev or None, directory, log_path=log_path,
            resume_from_checkpoint=True if resume else None, progress=not args.no_progress,
            epochs=args.epochs, learning_rate=args.lr, batch_size=args.batch_size,
            eval_batch_size=args.eval_batch_size, seed=args.seed, logging_steps=50,
            knowledge_learning_rate=FINETUNE["knowledge_learning_rate"] if args.knowledge
            else None, include_for_metrics=["inputs"])
    started = time.perf_counter()
    test_probabilities = softmax(predict_logits(classifier.model, classifier.features(test),
                                                args.eval_batch_size))
    test_seconds = time.perf_counter() - started
    dev_probabilities = classifier.dev_probabilities
    if dev and dev_probabilities is None:  # no training examples: the untrained model
        dev_probabilities = softmax(predict_logits(classifier.model, classifier.features(dev),
                                                   args.eval_batch_size))
    result = {
        "labels": list(labels), "resumed": resume, "train_examples": len(train),
        "epochs": args.epochs, "train_seconds": fitted["train_seconds"],
        "dev_eval_seconds": _eval_seconds(directory),
        "feature_seconds": fitted["feature_seconds"], "test_seconds": test_seconds,
        "train_samples_per_second": fitted.get("train_samples_per_second"),
        "dev_probabilities": [] if dev_probabilities is None else dev_probabilities.tolist(),
        "test_probabilities": test_probabilities.tolist(),
    }
    write_json(cached, result, indent=None)
    append_log(directory, {"event": "end", "train_seconds": result["train_seconds"],
                           "test_seconds": test_seconds})
    if not args.keep_checkpoints:
        shutil.rmtree(checkpoints, ignore_errors=True)
    return result


def _eval_seconds(directory: Path) -> float:
    """Seconds of Trainer's dev evaluations since this process's start record."""
    records = read_log(directory)
    starts = [i for i, r in enumerate(records) if r.get("event") == "start"] or [0]
    return sum(r.get("eval_runtime", 0.0) for r in records[starts[-1]:])


def part_name(name: str) -> str:
    """A classifier's name as a directory name (``LOCATION1:general`` -> ``LOCATION1_general``)."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", name)


def machine() -> dict[str, Any]:
    """Where the run ran: platform, CPU, torch threads, load average."""
    return {"platform": platform.platform(), "cpu": cpu_model(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "load_average": os.getloadavg(),
            "python": sys.version.split()[0], "torch": torch.__version__}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    set_threads(args.threads)
    started = time.perf_counter()
    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    load_at_start = os.getloadavg()
    sentences = dict(zip(("train", "dev", "test"), load_splits(args.dataset, args.data_dir)))
    sentences["train"] = sentences["train"][:args.limit]
    for split in ("dev", "test"):
        sentences[split] = sentences[split][:args.eval_limit]
    examples = {split: build_examples(s, args.setting) for split, s in sentences.items()}
    max_length = args.max_length or MAX_LENGTH[args.dataset]
    settings = {
        "dataset": args.dataset, "setting": args.setting, "seed": args.seed,
        "knowledge": args.knowledge, "backbone": _relative(args.post_trained) or
        "MiniLM-L6-H384", "data_dir": _relative(args.data_dir), "epochs": args.epochs,
        "learning_rate": args.lr, "batch_size": args.batch_size, "max_length": max_length,
        "limit": args.limit, "eval_limit": args.eval_limit,
        "dev": "sentihood-dev.json" if args.dataset == "sentihood" else
        f"{DEV_FRACTION:g} of train held out (split seed {SPLIT_SEED})",
        "sentences": {split: len(s) for split, s in sentences.items()},
        "examples": {split: len(e) for split, e in examples.items()},
    }
    kg_table = knowledge(args)
    if args.setting == "single":
        parts = {name: {split: [e for e in found if e.classifier == name]
                        for split, found in examples.items()}
                 for name in single_classifiers(args.dataset)}
        directories = {name: out / "single" / part_name(name) for name in parts}
    else:
        parts, directories = {"pair": examples}, {"pair": out}
    labels = B_LABELS if args.setting in ("qa_b", "nli_b") else labels_for(args.dataset)
    results = {name: run_part(directories[name], labels, parts[name], args, kg_table,
                              settings) for name in parts}

    # ---- assemble: every part's rows, in its examples' order, scored together
    scored: dict[str, dict[str, float]] = {}
    for split in ("dev", "test"):
        rows = [(e, p) for name in parts for e, p in
                zip(parts[name][split], results[name][f"{split}_probabilities"])]
        if rows:
            scored[split] = absa_scores(args.dataset, [e for e, _ in rows],
                                        np.array([p for _, p in rows], dtype=np.float64))
    if args.setting == "single" and not args.keep_models:
        for directory in directories.values():
            shutil.rmtree(directory / "model", ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(str(args.post_trained or default_backbone()))
    total = time.perf_counter() - started
    train_seconds = sum(r["train_seconds"] for r in results.values())
    dev_seconds = sum(r["dev_eval_seconds"] for r in results.values())  # inside training
    test_seconds = sum(r["test_seconds"] for r in results.values())
    trained = sum(r["train_examples"] for r in results.values()) * args.epochs
    metrics: dict[str, Any] = {
        **{key: scored["test"][key] for key in KEYS[args.dataset]},
        "test_absa_score": scored["test"]["absa_score"],
        "dev": scored.get("dev", {}),
        "timings": {
            "total_seconds": total, "minutes": total / 60, "train_seconds": train_seconds,
            "dev_eval_seconds": dev_seconds,
            "feature_seconds": sum(r["feature_seconds"] for r in results.values()),
            "test_seconds": test_seconds,
            "train_examples_per_second": trained / (train_seconds - dev_seconds)
            if train_seconds > dev_seconds else None,
            "test_examples_per_second": len(examples["test"]) / test_seconds
            if test_seconds else None,
            "examples_per_group": len(labels_for(args.dataset))
            if args.setting in ("qa_b", "nli_b") else 1,
            "resumed": any(r["resumed"] for r in results.values()),
        },
        "lengths": {split: length_stats(tokenizer, found, max_length)
                    for split, found in examples.items()},
        "parts": {name: {k: r[k] for k in ("train_examples", "train_seconds",
                                            "train_samples_per_second")}
                  for name, r in results.items()},
        "settings": settings,
        "machine": {**machine(), "load_average_at_start": load_at_start},
    }
    write_json(out / "metrics.json", metrics)
    print(json.dumps({k: metrics[k] for k in KEYS[args.dataset]} |
                     {"minutes": round(total / 60, 2)}))
    return metrics


def _relative(path: Path | None) -> str | None:
    """``path`` relative to the project root (results name no machine's directories)."""
    if path is None:
        return None
    return os.path.relpath(path, PROJECT_ROOT) if Path(path).is_absolute() else str(path)


if __name__ == "__main__":
    main()
