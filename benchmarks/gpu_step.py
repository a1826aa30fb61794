"""bf16 training step on a GPU: ERNIE-KG vs the text-only BERT vs LUKE, with MFU.

Why two stages: the GPU machine lent to this project has PyTorch and transformers but
no spaCy, PyKEEN or packaged backbone. So the batches (real FewRel-16 test sentences with
the linker's entities, ``cpu_bench.fewrel16_batches``), the model config and the relation
classifier's settings are prepared here, saved as one file, and carried there:

    python benchmarks/gpu_step.py prepare --output .gpu/inputs.pt        # here (CPU)
    python benchmarks/gpu_step.py run --inputs .gpu/inputs.pt --output OUT/gpu_step

The models are ``peer_throughput.py``'s (random weights, same depth, width and entity
table; ``--size base``: BERT-base, 12 x 768). The sequences are sorted by length and cut
into batches of each ``--batch-sizes`` (a length-grouped loader), each batch padded to
its longest sequence. A train step is zero_grad, forward and cross-entropy under bf16
autocast, backward, fused AdamW on fp32 weights; inference is a bf16-autocast forward.
Timed with CUDA events after a warm-up, the three models interleaved on every batch,
medians over rounds. FLOPs: ``FlopCounterMode`` over one forward + backward of every
batch (padding included: the GPU computes it). MFU = FLOPs / step time / the GPU's dense
bf16 peak (H100/H200 SXM datasheet: 989.4 TFLOP/s); an 8192^3 bf16 matmul measured in the
same run is reported beside it. Writes ``<output>.json`` and ``<output>.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from peer_throughput import (  # noqa: E402
    MODELS,
    add_luke_inputs,
    build_models,
    model_inputs,
    relation_model_settings,
    size_config,
)
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402
from transformers import BertConfig  # noqa: E402

#: dense bf16 tensor-core peaks (NVIDIA datasheets, SXM parts), by a word of the GPU's name
PEAK_BF16 = {"H200": 989.4e12, "H100": 989.4e12, "A100": 312e12, "L4": 121e12}
TENSOR_KEYS = ("input_ids", "attention_mask", "token_type_ids", "entity_ids")


def length_grouped(batch: dict, batch_size: int) -> list[dict]:
    """Cut one padded batch into batches of ``batch_size`` sequences of similar length,
    each trimmed to its longest sequence, with LUKE's inputs added."""
    order = batch["attention_mask"].sum(1).argsort()
    groups = []
    for start in range(0, len(order) - batch_size + 1, batch_size):
        rows = order[start:start + batch_size]
        width = int(batch["attention_mask"][rows].sum(1).max())
        group = {k: v[rows] for k, v in batch.items() if isinstance(v, torch.Tensor)}
        for key in TENSOR_KEYS:
            group[key] = group[key][:, :width].contiguous()
        add_luke_inputs(group)
        groups.append(group)
    return groups


def prepare(args: argparse.Namespace) -> None:
    from cpu_bench import fewrel16_batches

    (batch,), stats = fewrel16_batches(1, args.sequences)
    config = size_config(args.size)
    payload = {"size": args.size, "config": config.to_dict(), "stats": stats,
               "model_settings": relation_model_settings(), "num_entities": args.num_entities,
               "batches": {size: length_grouped(batch, size) for size in args.batch_sizes}}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, args.output)
    print(json.dumps({"prepared": str(args.output), "batch_sizes": args.batch_sizes,
                      "padded_lengths": {s: [g["input_ids"].shape[1] for g in b]
                                         for s, b in payload["batches"].items()}}))


def to_device(value, device: torch.device):
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    return value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value


class GpuRunner:
    """bf16 train step and inference of each model, timed with CUDA events."""

    def __init__(self, models: dict, device: torch.device, compile_models: bool) -> None:
        self.device = device.type
        self.models = {name: model.to(device) for name, model in models.items()}
        # torch.compile (inductor) fuses the elementwise work and cuts launches; the
        # uncompiled modules stay for counting FLOPs
        self.run_models = ({name: torch.compile(model) for name, model in self.models.items()}
                           if compile_models else self.models)
        self.optimizers = {name: torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=1e-5, fused=True)
            for name, model in self.models.items()}

    def train_step(self, name: str, batch: dict) -> None:
        model, optimizer = self.run_models[name].train(), self.optimizers[name]
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device, dtype=torch.bfloat16):
            loss = model(**model_inputs(name, batch, labels=True)).loss
        loss.backward()
        optimizer.step()

    def inference(self, name: str, batch: dict) -> None:
        model = self.run_models[name].eval()
        with torch.inference_mode(), torch.autocast(self.device, dtype=torch.bfloat16):
            model(**model_inputs(name, batch, labels=False))

    def timed_ms(self, fn, *args) -> float:
        if self.device != "cuda":  # the CPU smoke check (--device cpu)
            start = time.perf_counter()
            fn(*args)
            return 1000 * (time.perf_counter() - start)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(*args)
        end.record()
        end.synchronize()
        return start.elapsed_time(end)

    def train_flops(self, name: str, batches: list[dict]) -> float:
        model, total = self.models[name].train(), 0
        for batch in batches:
            with FlopCounterMode(display=False) as counter, \
                    torch.autocast(self.device, dtype=torch.bfloat16):
                model(**model_inputs(name, batch, labels=True)).loss.backward()
            total += counter.get_total_flops()
            model.zero_grad(set_to_none=True)
        return total


def matmul_tflops(runner: GpuRunner, size: int = 8192, repeats: int = 10) -> float:
    a = torch.randn(size, size, device=runner.device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=runner.device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    ms = statistics.median(runner.timed_ms(torch.matmul, a, b) for _ in range(repeats))
    return 2 * size ** 3 / (ms / 1000) / 1e12


def measure(runner: GpuRunner, batches: list[dict], rounds: int, deadline: float) -> dict:
    """Median ms of each batch per (task, model), interleaved; rounds stop at deadline."""
    times = {task: {m: [[] for _ in batches] for m in MODELS} for task in ("train", "infer")}
    steps = {"train": runner.train_step, "infer": runner.inference}
    for _ in range(2):  # warm-up: kernels chosen, caches filled
        for batch in batches:
            for name in MODELS:
                runner.train_step(name, batch)
                runner.inference(name, batch)
    done = 0
    for round_index in range(rounds):
        if done >= 3 and time.monotonic() > deadline:
            break
        order = MODELS[round_index % 3:] + MODELS[:round_index % 3]
        for index, batch in enumerate(batches):
            for task, fn in steps.items():
                for name in order:
                    times[task][name][index].append(runner.timed_ms(fn, name, batch))
        done += 1
    return {"rounds": done, "ms": {task: {m: sum(statistics.median(t) for t in per_batch)
                                          for m, per_batch in by_model.items()}
                                   for task, by_model in times.items()}}


def run(args: argparse.Namespace) -> dict:
    started = time.monotonic()
    payload = torch.load(args.inputs, weights_only=False)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu (smoke check)"
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    config = BertConfig.from_dict(payload["config"])
    rows = max(payload["num_entities"], payload["stats"]["kg_entities"])
    runner = GpuRunner(build_models(payload["size"], payload["stats"]["num_labels"], rows,
                                    False, config=config,
                                    model_settings=payload["model_settings"]), device,
                       args.compile)
    matmul = matmul_tflops(runner, 8192 if device.type == "cuda" else 512)
    result = {"benchmark": "gpu_step", "gpu": name, "torch": torch.__version__,
              "peak_bf16_tflops": peak and peak / 1e12,
              "matmul_8192_bf16_tflops": round(matmul, 1), "size": payload["size"],
              "compiled": args.compile,
              "layers": config.num_hidden_layers, "hidden": config.hidden_size,
              "entity_table_rows": rows, "batches": payload["stats"], "by_batch_size": {}}
    budget = args.max_seconds / len(args.batch_sizes or payload["batches"])
    sizes = args.batch_sizes or sorted(payload["batches"])
    for batch_size in sizes:
        batches = payload["batches"][batch_size]
        batches = [to_device(b, device) for b in batches]
        timing = measure(runner, batches, args.rounds, time.monotonic() + budget)
        flops = {m: runner.train_flops(m, batches) for m in MODELS}
        sequences = batch_size * len(batches)
        train, infer = timing["ms"]["train"], timing["ms"]["infer"]
        result["by_batch_size"][batch_size] = {
            "batches": len(batches), "rounds": timing["rounds"],
            "padded_lengths": [b["input_ids"].shape[1] for b in batches],
            "train_ms_per_batch": {m: round(train[m] / len(batches), 3) for m in MODELS},
            "train_sequences_per_second": {m: round(1000 * sequences / train[m], 1)
                                           for m in MODELS},
            "inference_sequences_per_second": {m: round(1000 * sequences / infer[m], 1)
                                               for m in MODELS},
            "train_tflops_achieved": {m: round(flops[m] / (train[m] / 1000) / 1e12, 1)
                                      for m in MODELS},
            "mfu": {m: peak and round(flops[m] / (train[m] / 1000) / peak, 4) for m in MODELS},
            "mfu_vs_measured_matmul": {m: round(flops[m] / (train[m] / 1000) / matmul / 1e12, 4)
                                       for m in MODELS},
            "ernie_vs_text_train": round(train["ernie"] / train["text"], 4),
            "ernie_vs_luke_train": round(train["ernie"] / train["luke"], 4),
            "ernie_vs_text_inference": round(infer["ernie"] / infer["text"], 4),
            "ernie_vs_luke_inference": round(infer["ernie"] / infer["luke"], 4),
            "flop_bound_train": round(flops["ernie"] / flops["text"], 4),
        }
        result["seconds"] = round(time.monotonic() - started, 1)
        write(result, args.output)  # after every size: a cut-off run keeps what it measured
        print(json.dumps({batch_size: result["by_batch_size"][batch_size]}), flush=True)
    if device.type == "cuda":
        result["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
    write(result, args.output)
    return result


def markdown(result: dict) -> str:
    lines = [f"# bf16 training step on a GPU: ERNIE-KG vs text-only BERT vs LUKE "
             f"({result['size']}: {result['layers']} x {result['hidden']})", "",
             f"`python benchmarks/gpu_step.py run{' --compile' if result.get('compiled') else ''}` "
             "(one run, the three models interleaved on "
             "every batch; batches prepared by `gpu_step.py prepare`).", "",
             f"- GPU: {result['gpu']}, torch {result['torch']}; dense bf16 peak "
             f"{result['peak_bf16_tflops']} TFLOP/s (datasheet); 8192^3 bf16 matmul measured "
             f"here: {result['matmul_8192_bf16_tflops']} TFLOP/s.",
             f"- Sequences: {result['batches']['source']}; {result['batches']['mean_length']} "
             f"wordpieces on average, {result['batches']['linked_entities_per_sequence']} linked "
             f"entities per sequence; length-grouped batches. Entity table "
             f"{result['entity_table_rows']} rows (frozen, as LUKE's).", "",
             "| batch | model | train seq/s | inference seq/s | train TFLOP/s | MFU | MFU vs "
             "measured matmul |", "|---|---|---|---|---|---|---|"]
    for size, row in result["by_batch_size"].items():
        for m in MODELS:
            mfu = row["mfu"][m]
            lines.append(f"| {size} | {m} | {row['train_sequences_per_second'][m]} | "
                         f"{row['inference_sequences_per_second'][m]} | "
                         f"{row['train_tflops_achieved'][m]} | "
                         f"{'–' if mfu is None else f'{100 * mfu:.1f}%'} | "
                         f"{100 * row['mfu_vs_measured_matmul'][m]:.1f}% |")
    lines += ["", "| batch | padded lengths | rounds | ERNIE-KG / text train | FLOP bound | "
              "ERNIE-KG / LUKE train | ERNIE-KG / text inference | ERNIE-KG / LUKE inference |",
              "|---|---|---|---|---|---|---|---|"]
    for size, row in result["by_batch_size"].items():
        lines.append(f"| {size} | {row['padded_lengths']} | {row['rounds']} | "
                     f"{row['ernie_vs_text_train']} | {row['flop_bound_train']} | "
                     f"{row['ernie_vs_luke_train']} | {row['ernie_vs_text_inference']} | "
                     f"{row['ernie_vs_luke_inference']} |")
    return "\n".join(lines) + "\n"


def write(result: dict, output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    output.with_suffix(".md").write_text(markdown(result))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="stage", required=True)
    prep = sub.add_parser("prepare", help="batches and configs, here (needs the full install)")
    prep.add_argument("--size", default="base", choices=("minilm", "base"))
    prep.add_argument("--sequences", type=int, default=2048)
    prep.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256, 1024])
    prep.add_argument("--num-entities", type=int, default=500_000)
    prep.add_argument("--output", type=Path, default=Path(".gpu/inputs.pt"))
    go = sub.add_parser("run", help="time the three models on the GPU")
    go.add_argument("--inputs", type=Path, default=Path(".gpu/inputs.pt"))
    go.add_argument("--rounds", type=int, default=10)
    go.add_argument("--max-seconds", type=float, default=240.0,
                    help="for all batch sizes: start no round after their share of it")
    go.add_argument("--output", type=Path, default=Path("results/gpu_step"))
    go.add_argument("--device", default="cuda", help="cpu: a smoke check of the script")
    go.add_argument("--batch-sizes", type=int, nargs="+", help="of the prepared ones (all)")
    go.add_argument("--compile", action="store_true", help="torch.compile every model")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.stage == "prepare":
        prepare(args)
    elif args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_step.py run: no CUDA device here; run `prepare` here and `run` on a GPU")
    else:
        run(args)


if __name__ == "__main__":
    main()
