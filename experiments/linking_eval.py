"""Entity-linking evaluation on FewRel-format data.

Contract form (TRAIN and TEST are FewRel-format files):

    python experiments/linking_eval.py --train TRAIN.json --test TEST.json --output OUT.json

or, splitting one file 80/20 by instance (stratified by relation, fixed seed; the split
files go to a temporary directory):

    python experiments/linking_eval.py --data ../shared/data/fewrel/fewrel16.json \
        --split-seed 0 --output results/linking_fewrel16_eval.json

The alias table, the KG and the context profiles come from TRAIN only (head/tail names
and QIDs; the instances' (head, relation, tail) as triples; the words around each
mention). TEST's head/tail mentions are then linked.
OUT.json holds:

- ``in_kb_accuracy``: TEST mentions whose gold QID occurs in TRAIN, linked to the gold
  QID given the gold spans (head and tail disambiguated together);
- ``prior_only_accuracy``: the same with the same candidates but the prior alone
  (``coherence_weight=0``, ``context_weight=0``), the baseline;
- ``nil_accuracy``: mentions whose QID is absent from TRAIN that are left unlinked (NIL);
- ``end_to_end_recall``: in-KB gold mentions found by mention detection on the raw
  sentence (exact span) with the right QID (``end_to_end_recall_all``: over all gold
  mentions);
- ``sentences_per_second``: end-to-end linking (``linker.pipe``) of TEST's sentences and
  ``spacy_tokenize_sentences_per_second``: bare ``spacy.blank("en")`` tokenization of the
  same sentences with ``nlp.pipe``, same run, both warmed up, best of ``--repeats``;
- ``compiled_linker``: whether the linker's compiled hot path ran (set
  ``ERNIE_KG_PURE_PYTHON=1`` to measure the pure-Python linker).

A Markdown table is written next to OUT.json (same name, ``.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import spacy

from ernie_kg.data.fewrel import (
    FewRelData,
    fewrel_context,
    fewrel_mentions,
    instance_text,
    load_fewrel,
    split_fewrel,
)
from ernie_kg.data.knowledge import fewrel_knowledge
from ernie_kg.linking import EntityLinker
from ernie_kg.linking.compiled import PURE_PYTHON_ENV, speedups
from ernie_kg.linking.parallel import usable_cpus
from ernie_kg.machine import cpu_model

#: Linker settings of the reported run (``fuzzy`` is on: spans given by the dataset
#: often differ slightly from every training spelling).
EVAL_CONFIG: dict[str, Any] = {"fuzzy": True}


def build_linker(train: FewRelData, **config: Any) -> EntityLinker:
    """KG and alias table from TRAIN exactly as fine-tuning builds them
    (:func:`~ernie_kg.data.knowledge.fewrel_knowledge`: each KG name once + every
    mention), plus context profiles from TRAIN's sentences."""
    kg, aliases = fewrel_knowledge([train])
    return EntityLinker.from_kg(kg, aliases=aliases, context=fewrel_context(train),
                                **{**EVAL_CONFIG, **config})


def span_metrics(linker: EntityLinker, train: FewRelData, test: FewRelData) -> dict[str, Any]:
    """in-KB accuracy (full and prior-only) and NIL accuracy on gold spans."""
    known = {m.entity_id for m in fewrel_mentions(train)}
    prior_only = linker.replace(coherence_weight=0.0, context_weight=0.0)
    counts = {"in_kb": 0, "in_kb_correct": 0, "prior_correct": 0, "nil": 0, "nil_correct": 0}
    for instances in test.values():
        for instance in instances:
            text, head, tail = instance_text(instance)
            gold = [instance["h"][1], instance["t"][1]]
            full = linker.link_spans(text, [head, tail])
            prior = prior_only.link_spans(text, [head, tail])
            for g, m, p in zip(gold, full, prior):
                if g in known:
                    counts["in_kb"] += 1
                    counts["in_kb_correct"] += m.entity_id == g
                    counts["prior_correct"] += p.entity_id == g
                else:
                    counts["nil"] += 1
                    counts["nil_correct"] += m.entity_id is None
    return {
        "in_kb_accuracy": counts["in_kb_correct"] / max(1, counts["in_kb"]),
        "prior_only_accuracy": counts["prior_correct"] / max(1, counts["in_kb"]),
        "nil_accuracy": counts["nil_correct"] / max(1, counts["nil"]),
        "counts": counts,
    }


def end_to_end_metrics(linker: EntityLinker, train: FewRelData, test: FewRelData) -> dict:
    """Gold mentions found on raw text (exact span) with the right QID."""
    known = {m.entity_id for m in fewrel_mentions(train)}
    sentences, gold = _sentences(test)
    found_in_kb = found_all = spans_found = in_kb = 0
    for linked, mentions in zip(linker.pipe(sentences), gold):
        by_span = {(m.start, m.end): m.entity_id for m in linked}
        for start, end, qid in mentions:
            spans_found += (start, end) in by_span
            hit = by_span.get((start, end)) == qid
            found_all += hit
            if qid in known:
                in_kb += 1
                found_in_kb += hit
    total = sum(len(m) for m in gold)
    return {
        "end_to_end_recall": found_in_kb / max(1, in_kb),
        "end_to_end_recall_all": found_all / max(1, total),
        "mention_detection_recall": spans_found / max(1, total),
    }


def throughput(linker: EntityLinker, sentences: list[str], repeats: int = 5,
               batch_size: int = 256, processes: int = -1) -> dict[str, Any]:
    """Warm sentences/second of ``linker.pipe`` (one process, and ``processes`` worker
    processes: -1 = every usable CPU) and of bare ``spacy.blank`` tokenization
    (interleaved, best of ``repeats``), plus the first, cold pass of each."""
    blank = spacy.blank(linker.config["lang"])
    linker.detector  # build the matcher outside the timing  # noqa: B018
    processes = usable_cpus() if processes < 0 else processes

    def linking(n_process: int) -> float:
        started = time.perf_counter()
        for _ in linker.pipe(sentences, batch_size=batch_size, n_process=n_process):
            pass
        return len(sentences) / (time.perf_counter() - started)

    def tokenizing(n_process: int = 1) -> float:
        started = time.perf_counter()
        for _ in blank.pipe(sentences, batch_size=batch_size, n_process=n_process):
            pass
        return len(sentences) / (time.perf_counter() - started)

    detector = linker.detector
    prior_only = linker.replace(coherence_weight=0.0, context_weight=0.0)

    def stage(name: str) -> float:
        """Where the time goes: the linker's own tokenizer + alias patterns alone, and
        linking with the prior alone (no coherence, no context)."""
        started = time.perf_counter()
        if name == "tokenize_and_match":
            make_doc, spans = detector.nlp.make_doc, detector.spans
            for text in sentences:
                spans(make_doc(text))
        else:
            for _ in prior_only.pipe(sentences, batch_size=batch_size):
                pass
        return len(sentences) / (time.perf_counter() - started)

    counts = sorted({1, processes})
    cold_tokenize = tokenizing()
    cold = {n: linking(n) for n in counts}  # also starts the worker pool
    runs: dict[int, list[float]] = {n: [] for n in counts}
    stages = {"tokenize_and_match": [], "prior_only_linking": []}
    stage("prior_only_linking")  # warm its caches
    tokenize_runs: dict[int, list[float]] = {n: [] for n in counts}
    for _ in range(repeats):
        tokenize_runs[1].append(tokenizing())
        for n in counts:
            runs[n].append(linking(n))
        for name, values in stages.items():
            values.append(stage(name))
    linker.close()
    for n in counts[1:]:  # spaCy's own multi-process pipe, once: it starts new processes
        tokenize_runs[n].append(tokenizing(n))  # per call, which would disturb the rest
    # like for like: each side at its best on these cores (for spaCy's bare tokenizer
    # that is one process: shipping docs between processes costs more than tokenizing)
    tokenize_processes = max(counts, key=lambda n: max(tokenize_runs[n]))
    tokenize = max(tokenize_runs[tokenize_processes])
    tokenize_one = max(tokenize_runs[1])
    best = max(counts, key=lambda n: max(runs[n]))
    return {
        "sentences_per_second": max(runs[best]),
        "spacy_tokenize_sentences_per_second": tokenize,
        "speed_ratio": max(runs[best]) / tokenize,
        "linking_processes": best,
        "tokenize_processes": tokenize_processes,
        "spacy_tokenize_sentences_per_second_by_processes": {
            str(n): max(tokenize_runs[n]) for n in counts},
        "speed_ratio_one_process_each": max(runs[1]) / tokenize_one,
        "sentences_per_second_by_processes": {str(n): max(runs[n]) for n in counts},
        "speed_ratio_by_processes": {str(n): max(runs[n]) / tokenize for n in counts},
        "stage_sentences_per_second": {k: max(v) for k, v in stages.items()},
        "stage_ratio_to_one_process_tokenization": {
            k: max(v) / tokenize_one for k, v in stages.items()},
        "cold_sentences_per_second": cold[best],
        "cold_spacy_tokenize_sentences_per_second": cold_tokenize,
        "sentences": len(sentences),
        "repeats": repeats,
    }


def _sentences(data: FewRelData) -> tuple[list[str], list[list[tuple[int, int, str]]]]:
    sentences, gold = [], []
    for instances in data.values():
        for instance in instances:
            text, head, tail = instance_text(instance)
            sentences.append(text)
            gold.append([(*head, instance["h"][1]), (*tail, instance["t"][1])])
    return sentences, gold


def evaluate(train_path: Path, test_path: Path, repeats: int = 5, processes: int = -1,
             **config: Any) -> dict:
    train, test = load_fewrel(train_path), load_fewrel(test_path)
    started = time.perf_counter()
    linker = build_linker(train, **config)
    linker.detector  # noqa: B018
    if linker.config["fuzzy"]:
        linker.fuzzy_index  # noqa: B018
    build_seconds = time.perf_counter() - started
    result: dict[str, Any] = {}
    result.update(span_metrics(linker, train, test))
    result.update(end_to_end_metrics(linker, train, test))
    result.update(throughput(linker, _sentences(test)[0], repeats, processes=processes))
    result["build_seconds"] = build_seconds
    result["compiled_linker"] = speedups is not None
    result["alias_keys"] = len(linker.aliases)
    result["kg"] = repr(linker.kg)
    result["train"] = str(train_path)
    result["test"] = str(test_path)
    result["config"] = linker.config
    result["machine"] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
        "spacy": spacy.__version__,
        "load_average_1min_at_end": os.getloadavg()[0],
    }
    return result





def markdown(result: dict) -> str:
    c = result["counts"]
    rows = [
        ("in_kb_accuracy", result["in_kb_accuracy"], f"{c['in_kb_correct']}/{c['in_kb']}"),
        ("prior_only_accuracy", result["prior_only_accuracy"],
         f"{c['prior_correct']}/{c['in_kb']}"),
        ("nil_accuracy", result["nil_accuracy"], f"{c['nil_correct']}/{c['nil']}"),
        ("end_to_end_recall (in-KB gold)", result["end_to_end_recall"], ""),
        ("end_to_end_recall_all (all gold)", result["end_to_end_recall_all"], ""),
        ("mention_detection_recall (span only)", result["mention_detection_recall"], ""),
    ]
    m = result["machine"]
    lines = [
        "# Entity linking on FewRel-16 (80/20 stratified split)",
        "",
        f"Train: `{result['train']}`; test: `{result['test']}`. Alias table and KG from "
        f"train only ({result['alias_keys']} alias keys; {result['kg']}).",
        "",
        "| metric | value | count |",
        "|---|---:|---:|",
        *[f"| {name} | {value:.4f} | {count} |" for name, value, count in rows],
        "",
        "| speed (warm, best of repeats) | sentences/s | ratio to tokenization |",
        "|---|---:|---:|",
        *[f"| end-to-end linking, `linker.pipe(n_process={n})` | {v:.0f} | "
          f"{result['speed_ratio_by_processes'][n]:.3f} |"
          for n, v in result["sentences_per_second_by_processes"].items()],
        *[f"| bare `spacy.blank(\"en\")` tokenization, `nlp.pipe(n_process={n})` | "
          f"{v:.0f} | {'1' if v == result['spacy_tokenize_sentences_per_second'] else ''} |"
          for n, v in result["spacy_tokenize_sentences_per_second_by_processes"].items()],
        "",
        "Where the time goes (1 process, same run; ratio to 1-process tokenization):",
        "",
        "| stage | sentences/s | ratio to tokenization |",
        "|---|---:|---:|",
        *[f"| {name.replace('_', ' ')} | {v:.0f} | "
          f"{result['stage_ratio_to_one_process_tokenization'][name]:.3f} |"
          for name, v in result["stage_sentences_per_second"].items()],
        "",
        f"Reported: `sentences_per_second` = {result['sentences_per_second']:.0f} "
        f"({result['linking_processes']} process(es)), `spacy_tokenize_sentences_per_second` "
        f"= {result['spacy_tokenize_sentences_per_second']:.0f} "
        f"({result['tokenize_processes']} process(es)), `speed_ratio` = "
        f"{result['speed_ratio']:.3f} (target >= 0.5); one process each: "
        f"{result['speed_ratio_one_process_each']:.3f}. Cold first pass: linking "
        f"{result['cold_sentences_per_second']:.0f}, tokenization "
        f"{result['cold_spacy_tokenize_sentences_per_second']:.0f} sentences/s.",
        "",
        "Linker hot path: " + (
            "compiled (`ernie_kg/linking/_speedups.pyx`, built by `pip install`)"
            if result["compiled_linker"] else f"pure Python (not built, or {PURE_PYTHON_ENV}=1)")
        + ".",
        "",
        f"Machine: {m.get('cpu_model', 'CPU not recorded')}, {m['platform']}, Python "
        f"{m['python']}, spaCy {m['spacy']}, "
        f"cpu_count={m['cpu_count']}, usable CPUs={m['usable_cpus']}, load average "
        f"{m['load_average_1min_at_end']:.1f} at the end (a shared machine).",
        "",
        "Config: `" + json.dumps(result["config"]) + "`",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=Path)
    parser.add_argument("--test", type=Path)
    parser.add_argument("--data", type=Path, help="one FewRel file to split 80/20 instead")
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--processes", type=int, default=-1,
                        help="linking worker processes for the speed run (-1: all CPUs)")
    parser.add_argument("--no-fuzzy", action="store_true")
    parser.add_argument("--nil-threshold", type=float)
    parser.add_argument("--coherence-weight", type=float)
    parser.add_argument("--context-weight", type=float)
    args = parser.parse_args(argv)
    config: dict[str, Any] = {}
    if args.no_fuzzy:
        config["fuzzy"] = False
    if args.nil_threshold is not None:
        config["nil_threshold"] = args.nil_threshold
    if args.coherence_weight is not None:
        config["coherence_weight"] = args.coherence_weight
    if args.context_weight is not None:
        config["context_weight"] = args.context_weight
    with tempfile.TemporaryDirectory() as scratch:
        if args.data is not None:
            train_part, test_part = split_fewrel(args.data, (0.8, 0.2), args.split_seed)
            train_path, test_path = Path(scratch) / "train.json", Path(scratch) / "test.json"
            train_path.write_text(json.dumps(train_part), encoding="utf-8")
            test_path.write_text(json.dumps(test_part), encoding="utf-8")
        elif args.train is not None and args.test is not None:
            train_path, test_path = args.train, args.test
        else:
            parser.error("give --train and --test, or --data")
        result = evaluate(train_path, test_path, args.repeats, args.processes, **config)
    if args.data is not None:
        result["train"] = f"{args.data} (80% split, seed {args.split_seed})"
        result["test"] = f"{args.data} (20% split, seed {args.split_seed})"
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    args.output.with_suffix(".md").write_text(markdown(result), encoding="utf-8")
    keys = ("in_kb_accuracy", "prior_only_accuracy", "nil_accuracy", "end_to_end_recall",
            "sentences_per_second", "spacy_tokenize_sentences_per_second", "speed_ratio")
    for key in keys:
        print(f"{key}: {result[key]:.4f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
