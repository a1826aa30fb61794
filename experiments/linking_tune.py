"""Choose linker weights on a dev split carved out of TRAIN (TEST is never looked at).

    python experiments/linking_tune.py --train runs/fewrel16_split/train.json \
        --output results/linking_fewrel16_dev.json

TRAIN is split again 80/20 (stratified, ``--seed``, default 1); the linker is built from
the 80% part exactly as ``linking_eval.py`` builds it and scored on the 20% part's gold
spans for every combination of the grid. The best in-KB accuracy wins, ties going to
the smaller weights; the chosen values are the defaults ``linking_eval.py`` reports with.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

from linking_eval import build_linker, span_metrics

from ernie_kg.data.fewrel import load_fewrel, split_fewrel

GRID = {
    "context_weight": [0.0, 1.0, 2.0, 4.0],
    "coherence_weight": [0.0, 4.0],
    "acronym_similarity": [0.0, 0.9],
    "stem_similarity": [0.0, 0.8],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    fit, dev = split_fewrel(load_fewrel(args.train), (0.8, 0.2), args.seed)
    linker = build_linker(fit)
    rows = []
    for values in itertools.product(*GRID.values()):
        config = dict(zip(GRID, values))
        metrics = span_metrics(linker.replace(**config), fit, dev)
        rows.append({**config, "in_kb_accuracy": metrics["in_kb_accuracy"],
                     "nil_accuracy": metrics["nil_accuracy"]})
        print(json.dumps(rows[-1]), file=sys.stderr)
    best = max(rows, key=lambda r: (r["in_kb_accuracy"], -sum(r[k] for k in GRID)))
    result = {"train": str(args.train), "dev_seed": args.seed, "grid": GRID, "rows": rows,
              "best": best}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    lines = ["# Linker weights on a dev split of FewRel-16 TRAIN", "",
             f"TRAIN `{args.train}` split 80/20 again (seed {args.seed}); gold spans.", "",
             "| " + " | ".join(GRID) + " | in_kb_accuracy | nil_accuracy |",
             "|" + "---:|" * (len(GRID) + 2)]
    for r in rows:
        lines.append("| " + " | ".join(f"{r[k]:g}" for k in GRID)
                     + f" | {r['in_kb_accuracy']:.4f} | {r['nil_accuracy']:.4f} |")
    lines += ["", "Chosen: " + ", ".join(f"{k}={best[k]:g}" for k in GRID), ""]
    args.output.with_suffix(".md").write_text("\n".join(lines), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
