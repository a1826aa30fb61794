"""Does knowledge-aware pre-training help? MiniLM + fusion layers, with and without dEA
pre-training on FewRel-16's training sentences, then fine-tuned on FewRel-16.

    python experiments/pretrain_dea.py --split-dir runs/fewrel16/split \
        --output-dir runs/pretrain_dea [--steps 600] [--batch-size 16] [--seeds 0 1 2]

The defaults are the recorded recipe: 600 steps of 16 sequences (about 1.2 passes over
the corpus), chosen on dev among 150, 600 and 1200 steps (mean dev macro-F1 over the
three fine-tuning seeds; results/pretrain_dea*.md).

1. Knowledge: the open setting of experiments/relation_classification.py (training
   facts + CoDEx-M, the same TransE table, shared through the content-hash cache).
2. Corpus: every training sentence (+ the bundled demo corpus), linked with the KG's
   linker (no gold ids), prepared as in ``ernie-kg pretrain prepare``. FewRel sentences
   have no neighbours, so next-sentence prediction is off (MLM with whole-word
   masking + dEA only).
3. Pre-training: ``ernie_kg.training.pretrain`` from the packaged MiniLM, with its
   defaults: the missing MLM head starts as the identity path with the corpus' unigram
   prior (``ernie_kg.modeling.mlm_head``), the first ``head_warmup_steps`` train only
   the heads, knowledge modules and gates, then the backbone joins at its own, lower
   rate (``ernie_kg.training.pretrain_schedule``).
4. Fine-tuning, per seed: ERNIE-KG from the pre-trained weights, its knowledge gates
   closed again (``shut_knowledge_gates``: it starts at the post-trained backbone's
   outputs and opens them as far as FewRel's entities help), vs ERNIE-KG from the plain
   backbone (same seeds, data, settings); dev and test scored by the model's own linker.

Finished runs (metrics.json) are skipped and a killed fine-tuning run resumes from its
last checkpoint, so the experiment can be built over several sessions.

Writes results/pretrain_dea.{json,md} and results/pretrain_dea_curve.png (dEA accuracy
against the in-batch chance rate over pre-training).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from relation_classification import BACKGROUND_HOPS, FINETUNE, TRANSE  # noqa: E402

from ernie_kg.data.features import LabelMap  # noqa: E402
from ernie_kg.data.fewrel import (
    load_fewrel,  # noqa: E402
    read_fewrel,  # noqa: E402
)
from ernie_kg.data.knowledge import relation_knowledge  # noqa: E402
from ernie_kg.data.pretraining import prepare_pretraining_data  # noqa: E402
from ernie_kg.io import write_json  # noqa: E402
from ernie_kg.linking import EntityLinker  # noqa: E402
from ernie_kg.modeling import (  # noqa: E402
    ErnieKGForPreTraining,
    ErnieKGForRelationClassification,
)
from ernie_kg.modeling.configuration import DEFAULT_KNOWLEDGE_GATE  # noqa: E402
from ernie_kg.modeling.entity_modules import shut_knowledge_gates  # noqa: E402
from ernie_kg.paths import PROJECT_ROOT, default_backbone, kg_data_dir  # noqa: E402
from ernie_kg.pipelines.relation import (  # noqa: E402
    DEFAULT_MODEL_SETTINGS,
    build_relation_classifier,
    train_relation_classifier,
)
from ernie_kg.training.gate_rate import finetune_started  # noqa: E402
from ernie_kg.training.pretrain import PretrainingSettings, pretrain  # noqa: E402

DEFAULTS = PretrainingSettings()
#: What a run records of its gate rate: the rate kept, each candidate's dev score and the
#: bootstrap share (runs from before that rule have none).
GATE_CHOICE = ("gate_learning_rate", "gate_learning_rate_dev", "gate_learning_rate_confidence")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--split-dir", type=Path, default=PROJECT_ROOT / "runs/fewrel16/split")
    p.add_argument("--output-dir", type=Path, default=PROJECT_ROOT / "runs/pretrain_dea")
    p.add_argument("--results", type=Path, default=PROJECT_ROOT / "results")
    p.add_argument("--codex-dir", type=Path,
                   default=PROJECT_ROOT.parent / "shared/data/codex/codex-m")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--learning-rate", type=float, default=DEFAULTS.learning_rate,
                   help="the backbone's peak rate")
    p.add_argument("--head-learning-rate", type=float, default=DEFAULTS.head_learning_rate,
                   help="the heads' and knowledge modules' peak rate")
    p.add_argument("--head-warmup-steps", type=int, default=DEFAULTS.head_warmup_steps,
                   help="first steps with the backbone frozen")
    p.add_argument("--max-length", type=int, default=96)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=float, default=FINETUNE["epochs"])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--arms", nargs="+", choices=("pretrained", "backbone"),
                   default=["pretrained", "backbone"],
                   help="fine-tuning arms to run now (the report needs both)")
    p.add_argument("--keep-gates-open", dest="shut_gates", action="store_false",
                   help="fine-tune with the gates as pre-training left them (default: "
                        "closed again, modeling.entity_modules.shut_knowledge_gates)")
    p.add_argument("--reuse-runs", type=Path, default=PROJECT_ROOT / "runs/fewrel16",
                   help="take the no-pre-training arm from this FewRel-16 grid's "
                        "open-ernie-seed<S> runs when their recipe is the same ('none': "
                        "always train it here)")
    return p.parse_args()


def corpus_file(train_data: dict, out: Path) -> Path:
    """The training sentences (+ the demo corpus) as JSONL, one sentence a document."""
    texts = [" ".join(item["tokens"]) for items in train_data.values() for item in items]
    demo = json.loads((kg_data_dir() / "demo_corpus" / "train.json").read_text())
    texts += [" ".join(item["tokens"]) for items in demo.values() for item in items]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return out


def grid_run(args: argparse.Namespace, seed: int) -> dict | None:
    """The grid's open ERNIE-KG run of ``seed`` (experiments/run_fewrel16.sh) when it is
    this arm exactly: same split, KG, TransE table, fine-tuning recipe and seed."""
    if str(args.reuse_runs) == "none":
        return None
    run = args.reuse_runs / f"open-ernie-seed{seed}"
    if not (run / "metrics.json").exists() or not (run / "test_metrics.json").exists():
        return None
    dev = json.loads((run / "metrics.json").read_text())
    test = json.loads((run / "test_metrics.json").read_text())
    s = dev.get("settings", {})
    same = (Path(s.get("train", "")).resolve() == (args.split_dir / "train.json").resolve()
            and s.get("transe") == TRANSE and s.get("background_hops") == BACKGROUND_HOPS
            and s.get("epochs") == args.epochs and s.get("seed") == seed
            and s.get("learning_rate") == FINETUNE["learning_rate"]
            and s.get("knowledge_learning_rate") == FINETUNE["knowledge_learning_rate"]
            and s.get("batch_size") == FINETUNE["batch_size"]
            and s.get("max_length") == FINETUNE["max_length"]
            and s.get("train_entities") == "both"
            and s.get("rc_classifier") == DEFAULT_MODEL_SETTINGS["rc_classifier"]
            and s.get("kg_extra") == [] and not s.get("entity_dropout")
            and s.get("knowledge_gate", "none") == DEFAULT_KNOWLEDGE_GATE
            and s.get("gate_learning_rate") == FINETUNE["gate_learning_rate"]
            and not s.get("hide_sole_facts"))
    if not same:
        print(f"{run}: another recipe, trained here instead")
        return None
    metrics = {k: dev.get(k) for k in ("accuracy", "macro_f1", "micro_f1", *GATE_CHOICE)}
    metrics.update({f"test_{k}": test[k] for k in ("accuracy", "macro_f1", "micro_f1")})
    metrics["source"] = str(run)
    return metrics


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    out = args.output_dir
    train_data = load_fewrel(args.split_dir / "train.json")
    dev_data = load_fewrel(args.split_dir / "dev.json")
    test_path = args.split_dir / "test.json"
    train, dev = read_fewrel(train_data), read_fewrel(dev_data)
    test = read_fewrel(load_fewrel(test_path)) if test_path.exists() else None

    kg, embeddings, aliases = relation_knowledge(
        [train_data], args.codex_dir, cache_dir=PROJECT_ROOT / "cache" / "kg",
        hops=BACKGROUND_HOPS, **TRANSE)  # the open KG of relation_classification.py
    backbone = default_backbone()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(backbone)

    # ---- pre-training (skipped when its output exists)
    pretrained = out / "pretrained"
    if not (pretrained / "pretraining_settings.json").exists():  # written last
        data_dir = out / "pretrain-data"
        if not (data_dir / "manifest.json").exists():
            linker = EntityLinker.from_kg(kg, embeddings, aliases=aliases)
            prepare_pretraining_data(corpus_file(train_data, out / "corpus.jsonl"), linker,
                                     tokenizer, data_dir, max_length=args.max_length)
        torch.manual_seed(0)
        model = ErnieKGForPreTraining.from_backbone(backbone, embeddings)
        settings = PretrainingSettings(max_steps=args.steps, batch_size=args.batch_size,
                                       learning_rate=args.learning_rate,
                                       head_learning_rate=args.head_learning_rate,
                                       head_warmup_steps=args.head_warmup_steps, nsp=False,
                                       save_steps=100)
        pretrain(data_dir, model, pretrained, tokenizer, settings)
    curve = [json.loads(line) for line in (pretrained / "log.jsonl").read_text().splitlines()]

    # ---- fine-tuning with and without the pre-training, same seeds
    labels = LabelMap.from_examples(train)
    runs: dict[str, list[dict]] = {"pretrained": [], "backbone": []}
    for seed in args.seeds:
        for name in [n for n in runs if n in args.arms]:
            run_dir = out / f"{name}-seed{seed}"
            metrics_path = run_dir / "metrics.json"
            if metrics_path.exists():
                runs[name].append(json.loads(metrics_path.read_text()))
                continue
            reused = grid_run(args, seed) if name == "backbone" else None
            if reused is not None:
                runs[name].append(reused)
                continue
            classifier = build_relation_classifier(labels, kg, embeddings, aliases, seed=seed,
                                                   max_length=FINETUNE["max_length"])
            if name == "pretrained":
                torch.manual_seed(seed)
                classifier.model = ErnieKGForRelationClassification.from_pretrained(
                    pretrained, id2label=labels.id2label,
                    rc_classifier=DEFAULT_MODEL_SETTINGS["rc_classifier"])
                if args.shut_gates:
                    shut_knowledge_gates(classifier.model)
            metrics = train_relation_classifier(
                classifier, train, dev, run_dir, epochs=args.epochs,
                learning_rate=FINETUNE["learning_rate"],
                knowledge_learning_rate=FINETUNE["knowledge_learning_rate"],
                gate_learning_rate=FINETUNE["gate_learning_rate"],
                batch_size=FINETUNE["batch_size"], seed=seed,
                resume_from_checkpoint=True if finetune_started(run_dir / "checkpoints") else None)
            if test is not None:
                scored = classifier.evaluate(test)
                metrics.update({f"test_{k}": scored[k]
                                for k in ("accuracy", "macro_f1", "micro_f1")})
            shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
            write_json(metrics_path, metrics)
            runs[name].append(metrics)
    if set(args.arms) == set(runs):
        report(args, curve, runs, time.perf_counter() - started)


def report(args: argparse.Namespace, curve: list[dict], runs: dict, seconds: float) -> None:
    def mean_std(values: list[float]) -> str:
        if len(values) == 1:
            return f"{100 * values[0]:.2f}"
        return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f}"

    done = json.loads((args.output_dir / "pretrained" / "pretraining_settings.json").read_text())
    tail = curve[-max(1, len(curve) // 10):]
    summary = {
        "pretraining": done,
        "dea_accuracy_first": curve[0].get("dea_accuracy"),
        "dea_accuracy_last10pct": statistics.mean(r["dea_accuracy"] for r in tail
                                                  if "dea_accuracy" in r),
        "dea_chance_last10pct": statistics.mean(r["dea_chance"] for r in tail
                                                if "dea_chance" in r),
        "mlm_loss_first": curve[0]["mlm_loss"], "mlm_loss_last": curve[-1]["mlm_loss"],
        "seeds": args.seeds,
        "runs": {name: [{k: m.get(k) for k in ("accuracy", "macro_f1", "micro_f1",
                                               "test_accuracy", "test_macro_f1",
                                               "test_micro_f1", *GATE_CHOICE)} for m in ms]
                 for name, ms in runs.items()},
        "seconds": seconds,
        "machine": {"platform": platform.platform(), "threads": torch.get_num_threads()},
    }
    args.results.mkdir(parents=True, exist_ok=True)
    write_json(args.results / "pretrain_dea.json", summary)
    shutil.copy(args.output_dir / "pretrained" / "loss.png",
                args.results / "pretrain_dea_curve.png")
    rows = []
    for key in ("macro_f1", "test_macro_f1", "accuracy", "test_accuracy"):
        values = {n: [m[key] for m in ms if m.get(key) is not None] for n, ms in runs.items()}
        if all(values.values()):
            rows.append(f"| {key} | {mean_std(values['backbone'])} | "
                        f"{mean_std(values['pretrained'])} |")
    (args.results / "pretrain_dea.md").write_text(
        "# Knowledge-aware pre-training (dEA) before FewRel-16 fine-tuning\n\n"
        f"`python experiments/pretrain_dea.py` ({done['max_steps']} pre-training steps, "
        f"batch {done['batch_size']}, lr {done['learning_rate']} (backbone) / "
        f"{done.get('head_learning_rate', done['learning_rate'])} (heads, knowledge) / "
        f"{done.get('gate_learning_rate', done['learning_rate'])} (gates), "
        f"{done.get('head_warmup_steps', 0)} head warm-up steps, whole-word MLM + dEA, no "
        f"NSP; fine-tuned with the gates "
        f"{'closed again' if args.shut_gates else 'as pre-training left them'}, opening at "
        f"the rate `gate_learning_rate={FINETUNE['gate_learning_rate']}` gives "
        "(ernie_kg.training.gate_rate); "
        f"fine-tuning seeds {args.seeds}; this invocation {seconds / 60:.0f} min (runs "
        "finished earlier are read, not trained again) on "
        f"{platform.platform()}, {torch.get_num_threads()} threads).\n\n"
        f"dEA accuracy over the last 10% of steps: "
        f"{summary['dea_accuracy_last10pct']:.3f} (in-batch chance "
        f"{summary['dea_chance_last10pct']:.3f}; first step {summary['dea_accuracy_first']:.3f})."
        f" MLM loss {summary['mlm_loss_first']:.2f} -> {summary['mlm_loss_last']:.2f}.\n\n"
        + ("The no-pre-training arm is the FewRel-16 grid's open ERNIE-KG run of each seed "
           "(same split, KG, recipe and seed): "
           + ", ".join(_shown(m["source"]) for m in runs["backbone"] if m.get("source"))
           + ".\n\n"
           if any(m.get("source") for m in runs["backbone"]) else "")
        + "| metric (%) | ERNIE-KG from MiniLM | ERNIE-KG after dEA pre-training |\n"
        "|---|---|---|\n" + "\n".join(rows) + "\n\n"
        + "| seed | dev macro-F1, from MiniLM | after pre-training | dev gain | test "
        "macro-F1, from MiniLM | after pre-training | test gain (points) | gate rate kept "
        "(from MiniLM / after pre-training) |\n|---|---|---|---|---|---|---|---|\n"
        + "".join(f"| {seed} | {100 * b['macro_f1']:.2f} | {100 * p['macro_f1']:.2f} "
                  f"| {100 * (p['macro_f1'] - b['macro_f1']):+.2f} "
                  f"| {100 * b['test_macro_f1']:.2f} | {100 * p['test_macro_f1']:.2f}"
                  f" | {100 * (p['test_macro_f1'] - b['test_macro_f1']):+.2f} "
                  f"| {_gate_choice(b)} / {_gate_choice(p)} |\n"
                  for seed, b, p in zip(args.seeds, runs["backbone"], runs["pretrained"])
                  if b.get("test_macro_f1") is not None
                  and p.get("test_macro_f1") is not None)
        + "\n"
        "![dEA curve](pretrain_dea_curve.png)\n"
    )
    print(json.dumps(summary["runs"]))


def _shown(path: str) -> str:
    """``path`` relative to the project when it is inside it."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(PROJECT_ROOT)) if resolved.is_relative_to(PROJECT_ROOT) \
        else path


def _gate_choice(metrics: dict) -> str:
    """``5e-4 (1e-2 ahead on 12% of dev resamples)``, or the rate alone."""
    rate = metrics.get("gate_learning_rate")
    if rate is None:
        return "–"
    shares = metrics.get("gate_learning_rate_confidence") or {}
    return f"{rate:g}" + "".join(f" ({tag} ahead on {100 * share:.0f}% of dev resamples)"
                                 for tag, share in shares.items())


if __name__ == "__main__":
    main()
