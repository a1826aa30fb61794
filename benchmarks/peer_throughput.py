"""Speed against the peers: ERNIE-KG vs LUKE vs a text-only BERT, same size, same batches.

Why: users choose between this package, LUKE (in transformers) and a plain BERT, while
``fusion_overhead.py`` compares us only with ourselves. At each size (``minilm``: the
packaged MiniLM's config, 6 x 384; ``base``: BERT-base, 12 x 768), random weights:

* ``ernie``: ``ErnieKGForRelationClassification`` configured as ``from_backbone`` does
  (default token gate, half the layers knowledge layers, the recipe's ``entity_start``
  head), a frozen table of ``--num-entities`` x 100 (LUKE's vocabulary size, 500k);
* ``luke``: ``LukeForEntityPairClassification``, same depth/width/heads/FFN and word
  vocabulary, an entity vocabulary as large as our table, LUKE's default entity size
  (256, not matched to our 100), head and tail spans as its 2 entities; its table is
  frozen like ours (``--luke-train-entity-table``: a dense AdamW update of every row);
* ``text``: ``BertForSequenceClassification`` of the same size.

Batches: real FewRel-16 test sentences with the linker's entities
(``cpu_bench.fewrel16_batches``). Inference: forward under ``inference_mode`` (eval);
train step: forward + cross-entropy + backward + fused AdamW. Each in fp32 and bf16
(autocast around forward and loss; a bf16 variant whose kernel is missing is reported
and left out). The six variants run interleaved on each batch, times are per-batch
medians over rounds (``cpu_bench``). FLOPs: ``FlopCounterMode`` over one fp32 forward
and one forward + backward (the optimizer's elementwise work counts 0), per sequence.
The last stdout line is the contract JSON (``CONTRACT``: MiniLM, fp32). ``--profile M``
instead writes model M's top ops by self CPU time to ``<output>_profile_<M>.txt``.

    python benchmarks/peer_throughput.py [--sizes minilm base] [--rounds 10] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import os
import sys
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
    relative,
    timed,
    top_ops,
)
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402
from transformers import (  # noqa: E402
    BertConfig,
    BertForSequenceClassification,
    LukeConfig,
    LukeForEntityPairClassification,
)

from ernie_kg.kg import EntityEmbeddings  # noqa: E402
from ernie_kg.memory import keep_freed_memory  # noqa: E402
from ernie_kg.modeling import ErnieKGConfig, ErnieKGForRelationClassification  # noqa: E402
from ernie_kg.paths import PROJECT_ROOT, default_backbone  # noqa: E402

SIZES = {"minilm": {}, "base": {"hidden_size": 768, "num_hidden_layers": 12,
                                "num_attention_heads": 12, "intermediate_size": 3072}}
MODELS = ("ernie", "luke", "text")
DTYPES = {"fp32": None, "bf16": torch.bfloat16}
TASKS = ("inference", "train_step")
MAX_MENTION = 30  # LukeTokenizer's max_mention_length: entity_position_ids are padded to it
ENTITY_DIM = 100
CONTRACT = ("ernie_vs_text_inference", "ernie_vs_text_train", "ernie_vs_luke_inference",
            "ernie_vs_luke_train", "flop_bound_inference", "flop_bound_train",
            "bf16_inference_speedup")


def add_luke_inputs(batch: dict) -> None:
    """LUKE's entity inputs: head and tail as 2 entities, positions = their wordpieces,
    ids = the linked table row at the mention start (row 1 where none was linked)."""
    spans = batch["spans"]
    positions = torch.full((len(spans), 2, MAX_MENTION), -1, dtype=torch.long)
    for row, pair in enumerate(spans.tolist()):
        for slot, (start, end) in enumerate(pair):
            end = min(end, start + MAX_MENTION)
            positions[row, slot, :end - start] = torch.arange(start, end)
    rows = batch["entity_ids"].gather(1, spans[:, :, 0])
    batch["luke"] = {"entity_ids": torch.where(rows > 0, rows, 1),
                     "entity_attention_mask": torch.ones_like(rows),
                     "entity_token_type_ids": torch.zeros_like(rows),
                     "entity_position_ids": positions}


def model_inputs(name: str, batch: dict, labels: bool) -> dict:
    """The part of the shared batch that model ``name`` reads (LUKE: its entity inputs)."""
    keys = ["input_ids", "attention_mask", "token_type_ids", *(["labels"] if labels else []),
            *(["entity_ids", "marker_positions"] if name == "ernie" else [])]
    inputs = {k: batch[k] for k in keys}
    return {**inputs, **batch["luke"]} if name == "luke" else inputs


def size_config(size: str) -> BertConfig:
    """The packaged MiniLM's config, resized to ``size``."""
    config = BertConfig.from_pretrained(default_backbone())
    config.update(SIZES[size])
    return config


def relation_model_settings() -> dict:
    """The relation classifier's model defaults (imported here: the pipelines need
    spaCy, which ``gpu_step.py``'s machine lacks; it gets them from the prepared file)."""
    from ernie_kg.pipelines.relation import DEFAULT_MODEL_SETTINGS

    return dict(DEFAULT_MODEL_SETTINGS)


def build_models(size: str, num_labels: int, rows: int, train_luke_table: bool,
                 config: BertConfig | None = None, model_settings: dict | None = None) -> dict:
    """The three models of one size (random weights, seed 0); ``config`` and
    ``model_settings`` replace the packaged backbone's and the pipeline's."""
    config = copy.deepcopy(config) if config is not None else size_config(size)
    config.num_labels = num_labels
    settings = model_settings if model_settings is not None else relation_model_settings()
    torch.manual_seed(0)
    ernie = ErnieKGForRelationClassification(ErnieKGConfig.from_backbone_config(
        config, num_labels=num_labels, entity_dim=ENTITY_DIM, num_entities=0, **settings))
    ernie.base_model.set_entity_embeddings(
        EntityEmbeddings.random([f"E{i}" for i in range(rows)], dim=ENTITY_DIM))
    shared = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
              "intermediate_size", "max_position_embeddings", "type_vocab_size", "pad_token_id")
    luke = LukeForEntityPairClassification(LukeConfig(
        **{k: getattr(config, k) for k in shared}, entity_vocab_size=rows + 1,
        num_labels=num_labels))
    luke.luke.entity_embeddings.entity_embeddings.weight.requires_grad_(train_luke_table)
    text = BertForSequenceClassification(copy.deepcopy(config))
    return {"ernie": ernie, "luke": luke, "text": text}


class Runner:
    """Inference and train step of each (model, dtype) variant, e.g. ``"ernie/bf16"``."""

    def __init__(self, models: dict) -> None:
        self.models = models
        self.optimizers = {name: torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=1e-5, fused=True)
            for name, model in models.items()}

    @staticmethod
    def _autocast(dtype: str):
        if DTYPES[dtype] is None:
            return contextlib.nullcontext()
        return torch.autocast("cpu", dtype=DTYPES[dtype])

    def inference(self, variant: str, batch: dict) -> tuple[float, float]:
        name, dtype = variant.split("/")
        model, inputs = self.models[name].eval(), model_inputs(name, batch, labels=False)

        def step() -> None:
            with torch.inference_mode(), self._autocast(dtype):
                model(**inputs)
        return timed(step)

    def train_step(self, variant: str, batch: dict) -> tuple[float, float]:
        name, dtype = variant.split("/")
        model, inputs = self.models[name].train(), model_inputs(name, batch, labels=True)
        optimizer = self.optimizers[name]

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            with self._autocast(dtype):
                loss = model(**inputs).loss
            loss.backward()
            optimizer.step()
        return timed(step)

    def flops_per_sequence(self, name: str, batches: list[dict]) -> dict[str, float]:
        """FLOPs of one fp32 forward (eval) and one forward + backward, per sequence."""
        model, total = self.models[name], dict.fromkeys(TASKS, 0)
        for batch in batches:
            with FlopCounterMode(display=False) as counter, torch.no_grad():
                model.eval()(**model_inputs(name, batch, labels=False))
            total["inference"] += counter.get_total_flops()
            with FlopCounterMode(display=False) as counter:
                model.train()(**model_inputs(name, batch, labels=True)).loss.backward()
            total["train_step"] += counter.get_total_flops()
            model.zero_grad(set_to_none=True)
        sequences = sum(len(b["input_ids"]) for b in batches)
        return {task: flops / sequences for task, flops in total.items()}


def probe(runner: Runner, variants: list[str], batch: dict) -> tuple[dict, list[str]]:
    """One call of every variant and task (a warm-up); bf16 variants that fail are
    skipped with the error noted, fp32 failures are bugs and raise."""
    skip: dict[str, set[str]] = {task: set() for task in TASKS}
    notes = []
    for task in TASKS:
        for variant in variants:
            try:
                getattr(runner, task)(variant, batch)
            except (RuntimeError, NotImplementedError) as error:
                if variant.endswith("/fp32"):
                    raise
                skip[task].add(variant)
                notes.append(f"{variant} {task} not measured, bf16 kernel missing: "
                             f"{type(error).__name__}: {str(error).splitlines()[0][:200]}")
    return skip, notes


def measure_size(size: str, batches: list[dict], stats: dict, args) -> dict:
    """Times, FLOPs and ratios of the three models at one size."""
    rows = max(args.num_entities, stats["kg_entities"])
    runner = Runner(build_models(size, stats["num_labels"], rows, args.luke_train_entity_table))
    variants = [f"{m}/{d}" for d in args.dtypes for m in MODELS]
    skip, notes = probe(runner, variants, batches[0])
    timing = interleaved_rounds(variants, batches, {t: getattr(runner, t) for t in TASKS},
                                args.rounds, args.warmup, args.max_seconds, skip)
    wall = timing["wall"]
    ms = {t: {v: round(median_ms(times), 2) for v, times in wall[t].items()} for t in TASKS}
    flops = {m: runner.flops_per_sequence(m, batches) for m in MODELS}
    config = runner.models["ernie"].config

    def ratio(task: str, a: str, b: str) -> float | None:
        return round(ms[task][a] / ms[task][b], 4) if a in ms[task] and b in ms[task] else None

    def pairs(dtype: str):
        """(contract-style key, task, ERNIE-KG variant, peer variant)."""
        for peer in ("text", "luke"):
            for task in TASKS:
                key = f"ernie_vs_{peer}_{task.split('_')[0]}"
                yield key, task, f"ernie/{dtype}", f"{peer}/{dtype}"

    result = {
        "config": {
            "layers": config.num_hidden_layers, "hidden": config.hidden_size,
            "heads": config.num_attention_heads, "intermediate": config.intermediate_size,
            "ernie_layer_types": config.layer_types, "ernie_gate": config.knowledge_gate,
            "ernie_classifier": config.rc_classifier, "entity_table_rows": rows,
            "ernie_entity_dim": ENTITY_DIM,
            "luke_entity_emb_size": runner.models["luke"].config.entity_emb_size,
            "luke_entity_table": "trained" if args.luke_train_entity_table else "frozen",
            "parameters": {m: sum(p.numel() for p in model.parameters())
                           for m, model in runner.models.items()}},
        "ms_per_batch": ms,
        "sequences_per_second": {t: {v: round(1000 * args.batch_size / x, 2)
                                     for v, x in ms[t].items()} for t in TASKS},
        "gflops_per_sequence": {t: {m: round(flops[m][t] / 1e9, 4) for m in MODELS}
                                for t in TASKS},
        "ratios": {d: {k: ratio(t, a, b) for k, t, a, b in pairs(d)} for d in args.dtypes},
        "paired_median_ratios": {d: {k: paired_ratio(wall[t][a], wall[t][b])
                                     for k, t, a, b in pairs(d) if {a, b} <= set(wall[t])}
                                 for d in args.dtypes},
        "flop_bound": {t: round(flops["ernie"][t] / flops["text"][t], 4) for t in TASKS},
        "bf16_speedup": {t: {m: ratio(t, f"{m}/fp32", f"{m}/bf16") for m in MODELS}
                         for t in TASKS} if "bf16" in args.dtypes else {},
        "not_measured": notes,
        "rounds_measured": timing["rounds"], "seconds": timing["seconds"],
        "load_1min_during": [round(min(timing["loads"]), 2), round(max(timing["loads"]), 2)],
    }
    del runner
    gc.collect()
    return result


def contract(result: dict) -> dict:
    """The issue's contract numbers: MiniLM (else the first size), fp32."""
    size = result["sizes"][result["contract_size"]]
    fp32, bound = size["ratios"]["fp32"], size["flop_bound"]
    return {**{key: fp32[key] for key in CONTRACT[:4]},
            "flop_bound_inference": bound["inference"], "flop_bound_train": bound["train_step"],
            "bf16_inference_speedup": size["bf16_speedup"].get("inference", {}).get("ernie")}


def plot(result: dict, path: Path) -> None:
    """Sequences/s per model, grouped by task and dtype, one panel per size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = list(result["sizes"])
    figure, axes = plt.subplots(1, len(sizes), figsize=(6 * len(sizes), 4), squeeze=False)
    for axis, size in zip(axes[0], sizes):
        speed = result["sizes"][size]["sequences_per_second"]
        groups = [(t, d) for t in TASKS for d in result["dtypes"]]
        for offset, model in enumerate(MODELS):
            values = [speed[t].get(f"{model}/{d}", 0.0) for t, d in groups]
            axis.bar([i + 0.27 * (offset - 1) for i in range(len(groups))], values, 0.27,
                     label=model)
        axis.set_xticks(range(len(groups)), [f"{t.replace('_', ' ')}\n{d}" for t, d in groups])
        axis.set_ylabel("sequences / s")
        axis.set_title(f"{size}: batch {result['batches']['batch_size']}, "
                       f"{result['machine']['cpu_model']}")
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def markdown(result: dict) -> str:
    """The run's report: setup, per-size tables, ratios, FLOP bounds, cautions."""
    machine, batches = result["machine"], result["batches"]
    lines = [
        "# Peer throughput: ERNIE-KG vs LUKE vs text-only BERT (CPU)", "",
        f"`{result['command']}` (one run, all variants interleaved).", "",
        f"- Machine: {machine_line(machine)}; 1-min load {machine['load_average_before'][0]} "
        f"before, {machine['load_average_after'][0]} after.",
        f"- Batches: {batches['num_batches']} x {batches['batch_size']} {batches['source']}; "
        f"wordpieces median/p10/p90 {batches['wordpieces_median_p10_p90']}, mean padded "
        f"length {batches['mean_padded_length']}, {batches['linked_entities_per_sequence']}"
        " linked entities per sequence (ERNIE-KG); LUKE gets head and tail.",
        "- Ratios are ERNIE-KG time / peer time (below 1: ERNIE-KG faster); FLOP bound = "
        "ERNIE-KG FLOPs / text-only FLOPs.", "",
    ]
    for size, data in result["sizes"].items():
        config = data["config"]
        lines += [
            f"## {size}: {config['layers']} x {config['hidden']} ({config['heads']} heads, "
            f"FFN {config['intermediate']})", "",
            f"ERNIE-KG layers {config['ernie_layer_types']}, gate "
            f"{config['ernie_gate']}, classifier {config['ernie_classifier']}; "
            f"entity table {config['entity_table_rows']} rows (ERNIE-KG dim "
            f"{config['ernie_entity_dim']}, frozen; LUKE dim {config['luke_entity_emb_size']}"
            f" = LUKE's default, {config['luke_entity_table']}); parameters "
            f"{config['parameters']}. {data['rounds_measured']} rounds, {data['seconds']} s, "
            f"1-min load {data['load_1min_during'][0]}-{data['load_1min_during'][1]}.", "",
            "| model | dtype | inference seq/s | train seq/s | inference GFLOP/seq | "
            "train GFLOP/seq |", "|---|---|---|---|---|---|",
        ]
        speed, gflops = data["sequences_per_second"], data["gflops_per_sequence"]
        lines += [f"| {m} | {d} | {speed['inference'].get(f'{m}/{d}', '-')} | "
                  f"{speed['train_step'].get(f'{m}/{d}', '-')} | {gflops['inference'][m]} | "
                  f"{gflops['train_step'][m]} |" for d in result["dtypes"] for m in MODELS]
        lines += ["", "| ratio | " + " | ".join(result["dtypes"]) + " | paired median (fp32) |",
                  "|---|" + "---|" * (len(result["dtypes"]) + 1)]
        for key in data["ratios"][result["dtypes"][0]]:
            lines.append(f"| {key} | " + " | ".join(str(data["ratios"][d][key])
                                                   for d in result["dtypes"])
                         + f" | {data['paired_median_ratios'].get('fp32', {}).get(key, '-')} |")
        bound = data["flop_bound"]
        lines += ["", f"FLOP bound: inference {bound['inference']}, train step "
                      f"{bound['train_step']}."]
        if data["bf16_speedup"]:
            lines.append(f"bf16 speed-up (fp32 time / bf16 time): {data['bf16_speedup']}.")
        lines += [f"- {note}" for note in data["not_measured"]] + [""]
    lines += [f"Contract ({result['contract_size']}, fp32): `{json.dumps(result['contract'])}`",
              "", f"![throughput]({Path(result['files']['png']).name})", ""]
    if not (machine["cpu_flags"]["avx512_bf16"] or machine["cpu_flags"]["amx_bf16"]):
        lines.append("This CPU has no native bf16 (avx512_bf16/amx_bf16): bf16 runs through "
                     "conversions and says little about bf16 on a CPU that has it.")
    if max(d["load_1min_during"][1] for d in result["sizes"].values()) > \
            machine["cores_available"]:
        lines.append("Caution: the load exceeded the cores; other work shared the CPU, so "
                     "ratios drift toward ratios of op counts. Compare with an idle run.")
    return "\n".join(lines) + "\n"


def profile(args, batches: list[dict], stats: dict) -> dict:
    """Top ops by self CPU time over a few inference and train steps of one model."""
    size, variant = args.sizes[0], f"{args.profile}/{args.dtypes[0]}"
    rows = max(args.num_entities, stats["kg_entities"])
    runner = Runner(build_models(size, stats["num_labels"], rows, args.luke_train_entity_table))
    path = args.output.with_name(f"{args.output.name}_profile_{args.profile}.txt")
    sections = [f"# torch.profiler: {variant} at {size}, {args.profile_steps} steps per task, "
                f"batch {args.batch_size}; {machine_line(machine_info())}; 1-min load "
                f"{load_average()[0]}"]
    for task in TASKS:
        measure = getattr(runner, task)
        table = top_ops(lambda i: measure(variant, batches[i % len(batches)]),  # noqa: B023
                        args.profile_steps, args.profile_rows)
        sections += [f"\n## {task}\n", table]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(sections) + "\n")
    return {"profile": relative(path), "model": variant, "size": size}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    p.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=list(DTYPES))
    p.add_argument("--rounds", type=int, help="measured rounds (default 10; --quick 2)")
    p.add_argument("--warmup", type=int, help="unmeasured rounds after the probe (1; quick 0)")
    p.add_argument("--batches", type=int, help="batches per round (default 3; --quick 1)")
    p.add_argument("--batch-size", type=int, help="sequences per batch (16; --quick 4)")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--num-entities", type=int, help="entity table rows, ours and LUKE's "
                   "(LUKE's 500000; --quick 20000; at least the FewRel-16 KG's)")
    p.add_argument("--luke-train-entity-table", action="store_true",
                   help="train LUKE's entity table (dense AdamW on every row)")
    p.add_argument("--max-seconds", type=float, default=900.0,
                   help="per size: start no round after this long (at least 3 measured)")
    p.add_argument("--output", type=Path, default=PROJECT_ROOT / "results" / "peer_throughput")
    p.add_argument("--quick", action="store_true", help="tiny smoke run")
    p.add_argument("--profile", choices=MODELS, help="profile it (first size, dtype) instead")
    p.add_argument("--profile-steps", type=int, default=5)
    p.add_argument("--profile-rows", type=int, default=30)
    args = p.parse_args(argv)
    for name, full, quick in (("rounds", 10, 2), ("warmup", 1, 0), ("batches", 3, 1),
                              ("batch_size", 16, 4), ("num_entities", 500_000, 20_000)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    if args.rounds < 1 or args.batches < 1 or args.batch_size < 1:
        p.error("--rounds, --batches and --batch-size must be at least 1")
    if not args.profile and "fp32" not in args.dtypes:
        p.error("--dtypes must include fp32: the contract line is measured in fp32")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as the package's trainer does (ernie_kg.memory); all three models
    load_before = load_average()
    batches, stats = fewrel16_batches(args.batches, args.batch_size)
    for batch in batches:
        add_luke_inputs(batch)
    if args.profile:
        result = profile(args, batches, stats)
        print(json.dumps(result), flush=True)
        return result
    sizes = {size: measure_size(size, batches, stats, args) for size in args.sizes}
    output = args.output
    command = " ".join(["python benchmarks/peer_throughput.py", *(argv or sys.argv[1:])])
    result = {
        "benchmark": "peer_throughput", "command": command, "dtypes": args.dtypes,
        "contract_size": "minilm" if "minilm" in sizes else args.sizes[0],
        "batches": stats, "sizes": sizes,
        "machine": {**machine_info(), "load_average_before": load_before,
                    "load_average_after": load_average()},
        "files": {ext: relative(output.with_suffix(f".{ext}")) for ext in ("json", "md", "png")},
    }
    result["contract"] = contract(result)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    output.with_suffix(".md").write_text(markdown(result))
    plot(result, output.with_suffix(".png"))
    print(json.dumps(result["contract"]), flush=True)
    return result


if __name__ == "__main__":
    main()
