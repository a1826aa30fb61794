"""Mentions the linker detects on FewRel-16 and the demo corpus, as JSON: run it with two
versions of the package and compare the files (same mentions, and detection speed).

    python experiments/compare_mentions.py --output runs/mentions_after.json
    python experiments/compare_mentions.py --compare runs/mentions_before.json \
        runs/mentions_after.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _texts(path: Path) -> list[str]:
    from ernie_kg.data.fewrel import instance_text, load_fewrel

    return [instance_text(i)[0] for items in load_fewrel(path).values() for i in items]


def detect(fewrel: Path) -> dict:
    from ernie_kg.data.knowledge import fewrel_knowledge
    from ernie_kg.linking import EntityLinker
    from ernie_kg.paths import demo_kg_dir, kg_data_dir

    result = {}
    corpus = kg_data_dir() / "demo_corpus"
    demo_texts = [t for split in ("train", "dev", "test") for t in _texts(corpus / f"{split}.json")]
    fewrel_texts = _texts(fewrel)
    cases = {
        "demo": (lambda: EntityLinker.from_kg_dir(demo_kg_dir()), demo_texts),
        "fewrel16": (lambda: _fewrel_linker(fewrel_knowledge, EntityLinker, fewrel),
                     fewrel_texts),
    }
    for name, (build, texts) in cases.items():
        started = time.perf_counter()
        linker = build()
        detector = linker.detector
        built = time.perf_counter() - started
        started = time.perf_counter()
        spans = [[list(m[:5]) for m in detector.spans(detector.make_doc(t))] for t in texts]
        result[name] = {"build_seconds": built, "detect_seconds": time.perf_counter() - started,
                        "texts": len(texts), "mentions": spans}
    return result


def _fewrel_linker(fewrel_knowledge, linker_class, path):
    kg, aliases = fewrel_knowledge([path])  # as fine-tuning builds it
    return linker_class.from_kg(kg, aliases=aliases)


def compare(before: dict, after: dict) -> dict:
    report = {}
    for name in before:
        a, b = before[name]["mentions"], after[name]["mentions"]
        same = sum(x == y for x, y in zip(a, b))
        lost = sum(len({tuple(m) for m in x} - {tuple(m) for m in y}) for x, y in zip(a, b))
        gained = sum(len({tuple(m) for m in y} - {tuple(m) for m in x}) for x, y in zip(a, b))
        report[name] = {"texts": len(a), "texts_with_identical_mentions": same,
                        "mentions_before": sum(map(len, a)), "mentions_after": sum(map(len, b)),
                        "lost": lost, "gained": gained,
                        "detect_seconds_before": before[name]["detect_seconds"],
                        "detect_seconds_after": after[name]["detect_seconds"],
                        "build_seconds_before": before[name]["build_seconds"],
                        "build_seconds_after": after[name]["build_seconds"]}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fewrel", type=Path,
                        default=ROOT.parent / "shared/data/fewrel/fewrel16.json")
    parser.add_argument("--output", type=Path)
    parser.add_argument("--compare", type=Path, nargs=2)
    args = parser.parse_args()
    if args.compare:
        before, after = (json.loads(p.read_text()) for p in args.compare)
        print(json.dumps(compare(before, after), indent=1))
        return
    args.output.write_text(json.dumps(detect(args.fewrel)))


if __name__ == "__main__":
    main()
