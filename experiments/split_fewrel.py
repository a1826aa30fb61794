"""Split a FewRel-format file into train/dev/test, stratified by relation, fixed seed.

    python experiments/split_fewrel.py --data ../shared/data/fewrel/fewrel16.json \
        --output-dir runs/fewrel16/split [--fractions 0.7 0.1 0.2] [--seed 0]

Uses :func:`ernie_kg.linking.split_fewrel` (each relation shuffled with its own seeded
generator, cut by largest remainder), so the same seed always gives the same files.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ernie_kg.data.fewrel import split_fewrel

NAMES = ("train", "dev", "test")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--output-dir", type=Path, required=True)
    p.add_argument("--fractions", type=float, nargs=3, default=(0.7, 0.1, 0.2))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    parts = split_fewrel(args.data, args.fractions, seed=args.seed)
    for name, part in zip(NAMES, parts):
        path = args.output_dir / f"{name}.json"
        path.write_text(json.dumps(part, ensure_ascii=False), encoding="utf-8")
        print(f"{path}: {sum(len(v) for v in part.values())} instances, {len(part)} relations")
    provenance = {"source": str(args.data), "fractions": list(args.fractions), "seed": args.seed}
    (args.output_dir / "split.json").write_text(json.dumps(provenance, indent=2) + "\n")


if __name__ == "__main__":
    main()
