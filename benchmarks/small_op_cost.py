"""What one small op of ERNIE-KG's entity stream costs where the model runs it: right
after a token-size matrix product, against the same op run hot (back to back).

Why: on Intel Xeon the fusion overhead is several times its FLOP share
(results/peer_throughput_intel.md: ERNIE-KG/text 1.06-1.07x at MiniLM size against a
FLOP bound of 1.005), and the profile puts the extra time in the entity stream's small
ops, not in its arithmetic. This separates an op's own cost (hot: its weights, the
dispatcher's data and code in cache) from what running after a large op adds (most
likely the caches the large product evicted; no hardware counters are read), per op and
for chains of k ops (a cost paid once per group of small ops, or once per op). Shapes
are the MiniLM entity stream's on FewRel-16 batches of 16 (41 entities, 944 token rows).
``--flush-mb`` also times each op after streaming that many megabytes of other data
through the caches (what a forward's other layers do between two calls of an op), and
small products whose weights span 6 KB to 2.4 MB: whether the added cost follows how far
the op's code and data fell, and its weights' bytes. Two steps of the entity stream run
both as ATen ops and as the native kernels that replaced them (``ernie_kg.modeling.native``):
what one loop pays against several ops.
Run it on each CPU kind to compare.

    python benchmarks/small_op_cost.py --output results/small_op_cost_intel
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from wait_policy import choose_wait_policy  # noqa: E402

choose_wait_policy()  # before torch loads: PASSIVE unless OMP_WAIT_POLICY says otherwise

import torch  # noqa: E402
from cpu_bench import load_average, machine_info, machine_line, timed  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from ernie_kg.memory import keep_freed_memory  # noqa: E402
from ernie_kg.modeling.native import entity_kernels  # noqa: E402

ENTITIES, TOKENS, HIDDEN, INTERMEDIATE, ENTITY_DIM = 41, 944, 384, 1536, 100
#: Output widths of the [41, 100] x [100, out] products of the weight-size rows.
WEIGHT_OUTPUTS = (16, 300, 1536, 6144)


def small_ops(chains: tuple[int, ...]) -> dict[str, Callable[[], object]]:
    """The entity stream's ops at MiniLM size, and chains of k element-wise adds."""
    g = torch.Generator().manual_seed(0)
    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g)
    e, fused = rand(ENTITIES, ENTITY_DIM), rand(ENTITIES, INTERMEDIATE)
    rows = rand(ENTITIES, INTERMEDIATE)
    w_e, b_e = rand(INTERMEDIATE, ENTITY_DIM), rand(INTERMEDIATE)
    w_out, b_out = rand(ENTITY_DIM, INTERMEDIATE), rand(ENTITY_DIM)
    w_qkv, b_qkv = rand(3 * ENTITY_DIM, ENTITY_DIM), rand(3 * ENTITY_DIM)
    norm = torch.nn.LayerNorm(ENTITY_DIM)
    ops: dict[str, Callable[[], object]] = {
        f"W_e: [{ENTITIES}, {ENTITY_DIM}] x [{ENTITY_DIM}, {INTERMEDIATE}]":
            lambda: F.linear(e, w_e, b_e),
        f"entity output: [{ENTITIES}, {INTERMEDIATE}] x [{INTERMEDIATE}, {ENTITY_DIM}]":
            lambda: F.linear(fused, w_out, b_out),
        f"entity q/k/v: [{ENTITIES}, {ENTITY_DIM}] x [{ENTITY_DIM}, {3 * ENTITY_DIM}]":
            lambda: F.linear(e, w_qkv, b_qkv),
        f"GELU [{ENTITIES}, {INTERMEDIATE}]": lambda: F.gelu(rows),
        f"LayerNorm [{ENTITIES}, {ENTITY_DIM}]": lambda: norm(e),
        "view (no kernel)": lambda: rows.view(-1),
    }
    ops.update(entity_steps(rand))
    for k in chains:
        def chain(k: int = k) -> None:
            out = rows
            for _ in range(k):
                out = out + fused
        ops[f"{k} add{'s' if k > 1 else ''} [{ENTITIES}, {INTERMEDIATE}] in a row"] = chain
    return ops


def entity_steps(rand: Callable[..., torch.Tensor]) -> dict[str, Callable[[], object]]:
    """Two steps of the entity stream as the ATen ops the modules ran and as the native
    kernels that replaced them (:mod:`ernie_kg.modeling.native`; ATen rows only where the
    kernels are not built): residual + LayerNorm, and attention within each of 16
    sequences' entities (4 heads of 25)."""
    e, update, qkv = rand(ENTITIES, ENTITY_DIM), rand(ENTITIES, ENTITY_DIM), rand(ENTITIES, 300)
    norm, heads = torch.nn.LayerNorm(ENTITY_DIM).requires_grad_(False), 4
    counts = torch.tensor([3, 2, 4, 1, 3, 2, 5, 2, 3, 2, 3, 1, 3, 2, 3, 2])  # 41 entities
    batch_index = torch.repeat_interleave(torch.arange(len(counts)), counts)
    bias = torch.zeros(1, ENTITIES, ENTITIES).masked_fill_(
        (batch_index[:, None] != batch_index[None, :])[None], torch.finfo(torch.float32).min)

    def attend() -> torch.Tensor:
        query, key, value = qkv.view(ENTITIES, 3, heads, -1).permute(1, 2, 0, 3).unbind(0)
        scores = torch.baddbmm(bias, query, key.transpose(1, 2), alpha=25 ** -0.5)
        return torch.bmm(scores.softmax(-1), value).transpose(0, 1).reshape(ENTITIES, -1)

    residual = f"residual + LayerNorm [{ENTITIES}, {ENTITY_DIM}]"
    attention = f"attention within 16 sequences ({ENTITIES} entities, {heads} heads)"
    steps = {f"{residual}, ATen (add, layer_norm)": lambda: norm(e + update),
             f"{attention}, ATen (baddbmm, softmax, bmm)": attend}
    kernels = entity_kernels()
    if kernels is not None:
        steps[f"{residual}, native kernel"] = lambda: kernels.residual_layer_norm(
            e, update, norm.weight, norm.bias, norm.eps, 0.0, None)
        steps[f"{attention}, native kernel"] = lambda: kernels.attention_core(
            qkv, batch_index, heads, 0.0, None)
    return steps


def weight_sizes() -> dict[str, Callable[[], object]]:
    """[41, 100] x [100, out] products (:data:`WEIGHT_OUTPUTS`): one op, weights of 6 KB
    to 2.4 MB."""
    g = torch.Generator().manual_seed(2)
    e = torch.randn(ENTITIES, ENTITY_DIM, generator=g)
    ops = {}
    for out in WEIGHT_OUTPUTS:
        w, b = torch.randn(out, ENTITY_DIM, generator=g), torch.randn(out, generator=g)
        ops[f"[{ENTITIES}, {ENTITY_DIM}] x [{ENTITY_DIM}, {out}] ({4 * w.numel() // 1024} KB "
            "weights)"] = lambda w=w, b=b: F.linear(e, w, b)
    return ops


def flush(megabytes: int) -> Callable[[], object]:
    """Stream ``megabytes`` of other data through the caches (an in-place add over them)."""
    buffer = torch.zeros(megabytes * 2**20 // 4)
    return lambda: buffer.add_(1.0)


def large_op() -> Callable[[], object]:
    """The token stream's W_t product at the same batch: what runs before the small ops."""
    g = torch.Generator().manual_seed(1)
    tokens = torch.randn(TOKENS, HIDDEN, generator=g)
    w_t = torch.randn(INTERMEDIATE, HIDDEN, generator=g)
    return lambda: F.linear(tokens, w_t)


def op_cost(op: Callable[[], object], before: Callable[[], object], repeats: int
            ) -> dict[str, float]:
    """Median microseconds of ``op`` hot and right after ``before``, the two measured in
    alternation so that load hits both alike."""
    hot, after = [], []
    for index in range(repeats + 10):  # the first 10: warm-up
        op()
        start = time.perf_counter()
        op()
        hot_seconds = time.perf_counter() - start
        before()
        start = time.perf_counter()
        op()
        after_seconds = time.perf_counter() - start
        if index >= 10:
            hot.append(hot_seconds)
            after.append(after_seconds)
    hot_us, after_us = 1e6 * statistics.median(hot), 1e6 * statistics.median(after)
    return {"hot_us": round(hot_us, 1), "after_large_us": round(after_us, 1),
            "added_us": round(after_us - hot_us, 1)}


def measure(threads: tuple[int, ...], repeats: int, chains: tuple[int, ...],
            flush_mb: tuple[int, ...] = ()) -> dict:
    """``costs[threads][op]`` for every thread count, the large op's own time and, at the
    most threads, ``flush_costs[megabytes][op]`` (the ops and :func:`weight_sizes`)."""
    costs, large_ms = {}, {}
    before = large_op()
    for count in threads:
        torch.set_num_threads(count)
        large_ms[count] = round(1e3 * statistics.median(
            timed(before)[0] for _ in range(max(5, repeats // 10))), 2)
        costs[count] = {name: op_cost(op, before, repeats)
                        for name, op in small_ops(chains).items()}
    torch.set_num_threads(max(threads))
    ops = {**small_ops(chains[:1]), **weight_sizes()}
    flush_costs = {}
    for megabytes in flush_mb:
        stream = flush(megabytes)  # one buffer per size, shared by the ops
        flush_costs[megabytes] = {name: op_cost(op, stream, repeats)
                                  for name, op in ops.items()}
    return {"costs": costs, "large_op_ms": large_ms, "flush_costs": flush_costs}


def markdown(summary: dict) -> str:
    lines = ["# What a small entity-stream op costs after a token-size product", "",
             f"`{summary['command']}`", "",
             f"- Machine: {machine_line(summary['machine'])}; 1-min load "
             f"{summary['load_before'][0]} before, {summary['load_after'][0]} after.",
             f"- Large op: the token stream's W_t product, [{TOKENS}, {HIDDEN}] x "
             f"[{HIDDEN}, {INTERMEDIATE}]: " + ", ".join(
                 f"{ms} ms at {t} thread{'s' if int(t) > 1 else ''}"
                 for t, ms in summary["large_op_ms"].items()) + ".",
             f"- Medians of {summary['repeats']} alternating measurements; hot: the op run "
             "again right after itself; after large: right after the large op; added: the "
             "difference (what the op pays for running where the model runs it).", ""]
    for threads, costs in summary["costs"].items():
        lines += [f"## {threads} thread{'s' if int(threads) > 1 else ''}", "",
                  "| op | hot us | after large us | added us |", "|---|---|---|---|"]
        lines += [f"| {name} | {c['hot_us']} | {c['after_large_us']} | {c['added_us']} |"
                  for name, c in costs.items()]
        lines.append("")
    if summary["flush_costs"]:
        sizes = list(summary["flush_costs"])
        first = summary["flush_costs"][sizes[0]]
        lines += [f"## After streaming other data through the caches ({max(summary['costs'])} "
                  "threads)", "", "Added us: the op right after an in-place add over that "
                  "many MB, against the op hot.", "",
                  "| op | hot us | " + " | ".join(f"after {mb} MB" for mb in sizes) + " |",
                  "|---|---|" + "---|" * len(sizes)]
        for name, cost in first.items():
            added = [f"+{summary['flush_costs'][mb][name]['added_us']}" for mb in sizes]
            lines.append(f"| {name} | {cost['hot_us']} | " + " | ".join(added) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=400)
    p.add_argument("--chains", type=int, nargs="+", default=[1, 2, 5, 10])
    p.add_argument("--flush-mb", type=int, nargs="*", default=[],
                   help="also time the ops after streaming this many MB (e.g. 4 16 64 256)")
    p.add_argument("--output", type=Path, default=Path("results/small_op_cost"))
    args = p.parse_args(argv)
    if args.repeats < 1 or min(args.threads) < 1 or min(args.flush_mb, default=1) < 1:
        p.error("--repeats, --threads and --flush-mb must be at least 1")
    keep_freed_memory()
    torch.set_num_threads(max(args.threads))
    machine, load_before = machine_info(), load_average()
    with torch.inference_mode():  # as the model runs at inference: no autograd records
        measured = measure(tuple(args.threads), args.repeats, tuple(args.chains),
                           tuple(args.flush_mb))
    summary = {"command": "python benchmarks/small_op_cost.py " + " ".join(argv or sys.argv[1:]),
               "machine": machine, "repeats": args.repeats, **measured,
               "load_before": load_before, "load_after": load_average()}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    args.output.with_suffix(".md").write_text(markdown(summary))
    added = {t: {name: c["added_us"] for name, c in costs.items()}
             for t, costs in summary["costs"].items()}
    print(json.dumps({"added_us": added}))
    return summary


if __name__ == "__main__":
    main()
