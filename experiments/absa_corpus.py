"""The domain corpus for task-adaptive post-training (Xu et al. 2019, BERT-PT): the distinct
training sentences of an ABSA benchmark, one per line, as the classifiers read them.

    python experiments/absa_corpus.py --dataset semeval --output runs/absa_post/semeval.txt
    ernie-kg pretrain post-train --corpus runs/absa_post/semeval.txt \
        --output runs/absa_post/semeval-backbone
    python experiments/absa.py --dataset semeval --setting nli_m --seed 0 \
        --output-dir runs/absa_post/semeval-nli_m-seed0 \
        --post-trained runs/absa_post/semeval-backbone

Only the training part: SentiHood's train file, SemEval's train file less the 10% that
``experiments/absa.py`` holds out as dev (the same split). The benchmarks repeat a few
sentences across their files (SentiHood: 24 dev and 34 test sentences also occur in
train; SemEval: 1 test sentence); those are left out too, so no dev or test sentence is
ever seen in post-training.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ernie_kg.data.absa import build_examples

sys.path.insert(0, str(Path(__file__).resolve().parent))
import absa  # noqa: E402  experiments/absa.py: the splits (one home)


def corpus_lines(dataset: str, data_dir: Path) -> tuple[list[str], int]:
    """The training sentences in first-seen order, each once, as segment A is written,
    less those also in dev or test; and how many were left out for that."""
    train, dev, test = absa.load_splits(dataset, data_dir)
    held_out = {e.text for e in build_examples([*dev, *test], "qa_m")}
    lines = list(dict.fromkeys(e.text for e in build_examples(train, "qa_m")))
    kept = [line for line in lines if line not in held_out]
    return kept, len(lines) - len(kept)


def main(argv: list[str] | None = None) -> list[str]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", choices=tuple(absa.KEYS), required=True)
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--data-dir", type=Path, default=absa.DATA_DIR)
    args = p.parse_args(argv)
    lines, left_out = corpus_lines(args.dataset, args.data_dir)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    print(f"{args.output}: {len(lines)} training sentences of {args.dataset} "
          f"({left_out} also in dev or test left out)")
    return lines


if __name__ == "__main__":
    main()
