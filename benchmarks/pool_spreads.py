"""Several ``process_spread.py`` runs pooled per CPU kind and batch size: one verdict each.

Why: one run of five processes moves by up to 0.015 in its median between runs of the same
code on the same idle machine (Intel Xeon, batches of 16: 1.025 to 1.039), as much as the
bar's edge. Pooling every process of the runs of one CPU kind and one benchmark setting
gives the median over all of them beside each run's own, so a verdict rests on 15 processes,
not on which of three runs one quotes. Runs are grouped by CPU model and the arguments
given to ``peer_throughput.py``; the bar is the one ``process_spread.py`` holds each
process to (ratio within ``MARGIN`` of its FLOP bound).

    python benchmarks/pool_spreads.py results/peer_spread_intel_b16_native2*.json \\
        results/peer_spread_amd_b*_native2.json --output results/peer_spread_pooled
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from process_spread import BOUNDED, MARGIN, PROJECT_ROOT  # noqa: E402

PEERS = ("ernie_vs_luke_inference", "ernie_vs_luke_train")


def read_run(path: Path) -> dict:
    """One process_spread result, checked for the fields the pooling reads."""
    try:
        run = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise SystemExit(f"{path}: not a readable process_spread result ({error})") from None
    missing = [key for key in ("summary", "machine", "peer_args") if key not in run]
    if "machine" in run:
        missing += [f"machine.{key}" for key in ("cpu_model", "cpu_flags")
                    if key not in run["machine"]]
    if "summary" in run:
        missing += [f"summary.{key}" for key in (*BOUNDED, *BOUNDED.values(), *PEERS)
                    if key not in run["summary"]]
    if run.get("benchmark") != "process_spread" or missing:
        raise SystemExit(f"{path}: not a process_spread result (benchmark="
                         f"{run.get('benchmark')!r}, missing {missing or 'nothing'})")
    run["path"] = path
    return run


def cpu_kind(machine: dict) -> str:
    """The CPU model with the vector flags it has: one model name ("AMD EPYC") covers
    hosts with and without AVX-512, which must not pool."""
    flags = [flag for flag, present in machine["cpu_flags"].items() if present]
    return f"{machine['cpu_model']} ({', '.join(flags) or 'no listed flags'})"


def group_key(run: dict) -> tuple[str, str]:
    """The CPU kind and the benchmark's arguments: runs pool only where both agree."""
    return cpu_kind(run["machine"]), " ".join(run["peer_args"])


def pool(runs: list[dict]) -> dict:
    """Per bounded ratio: every process's value, their median, the bound (the runs' median
    bound), how many processes and run medians are within the margin; per peer ratio the
    pooled median."""
    row: dict = {"runs": [_relative(run["path"]) for run in runs],
                 "processes": sum(len(run["summary"]["ernie_vs_text_train"]["per_process"])
                                  for run in runs)}
    for key, bound_key in BOUNDED.items():
        values = [v for run in runs for v in run["summary"][key]["per_process"]]
        bound = statistics.median(run["summary"][bound_key]["median"] for run in runs)
        run_medians = [run["summary"][key]["median"] for run in runs]
        pooled = round(statistics.median(values), 4)
        row[key] = {"pooled_median": pooled, "bound": bound, "bar": round(bound + MARGIN, 4),
                    "run_medians": run_medians,
                    "processes_within": sum(v - bound <= MARGIN for v in values),
                    "run_medians_within": sum(m - bound <= MARGIN for m in run_medians),
                    "pooled_median_within": pooled - bound <= MARGIN,
                    "at_most_1_05": pooled <= 1.05}
    for key in PEERS:
        values = [v for run in runs for v in run["summary"][key]["per_process"]]
        row[key] = {"pooled_median": round(statistics.median(values), 4)}
    return row


def _relative(path: Path) -> str:
    """As results record paths; not ``cpu_bench.relative``, which imports torch for a job
    that reads JSON (and would write ``../..`` for a file outside the checkout)."""
    resolved = path.resolve()
    return str(resolved.relative_to(PROJECT_ROOT)) if resolved.is_relative_to(PROJECT_ROOT) \
        else path.name


def markdown(groups: list[dict], command: str) -> str:
    lines = ["# Peer benchmark, runs pooled per CPU kind and setting", "",
             f"`{command}`", "",
             f"Every process of the runs listed, pooled; bar: ERNIE-KG/text within {MARGIN} "
             "of the FLOP bound (issue 19 §3) and at most 1.05x (§5).", "",
             "| CPU | arguments | runs | processes | inference: pooled median (bar) | "
             "within: processes, run medians | train step: pooled median (bar) | "
             "within: processes, run medians | ERNIE-KG/LUKE inference, train |",
             "|---|---|---|---|---|---|---|---|---|"]
    for group in groups:
        cells = [group["cpu"], f"`{group['peer_args']}`", str(len(group["runs"])),
                 str(group["processes"])]
        for key in BOUNDED:
            ratio = group[key]
            mark = "**" if ratio["pooled_median_within"] else ""
            cells += [f"{mark}{ratio['pooled_median']:.4f}{mark} ({ratio['bar']:.4f})",
                      f"{ratio['processes_within']} of {group['processes']}, "
                      f"{ratio['run_medians_within']} of {len(group['runs'])}"]
        cells.append(" / ".join(f"{group[key]['pooled_median']:.2f}" for key in PEERS))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Runs:", ""]
    lines += [f"- {group['cpu']}, `{group['peer_args']}`: "
              + ", ".join(f"`{path}`" for path in group["runs"]) for group in groups]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", type=Path, nargs="+", help="process_spread.py JSON results")
    p.add_argument("--output", type=Path,
                   default=PROJECT_ROOT / "results" / "peer_spread_pooled")
    args = p.parse_args(argv)
    grouped: dict[tuple[str, str], list[dict]] = {}
    for path in args.runs:
        run = read_run(path)
        grouped.setdefault(group_key(run), []).append(run)
    groups = [{"cpu": cpu, "peer_args": peer_args, **pool(runs)}
              for (cpu, peer_args), runs in grouped.items()]
    command = " ".join(["python benchmarks/pool_spreads.py",
                        *(_relative(path) for path in args.runs),
                        "--output", _relative(args.output)])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps(
        {"benchmark": "pool_spreads", "command": command, "groups": groups}, indent=2) + "\n")
    args.output.with_suffix(".md").write_text(markdown(groups, command))
    print(json.dumps([{"cpu": g["cpu"], "peer_args": g["peer_args"],
                       **{key: g[key]["pooled_median"] for key in BOUNDED}} for g in groups]),
          flush=True)
    return groups


if __name__ == "__main__":
    main()
