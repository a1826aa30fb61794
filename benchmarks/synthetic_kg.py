"""Synthetic KG directories with the shape of ERNIE's Wikidata KG, plus gold-linked text.

Shape (ERNIE: 5,040,986 entities, 24,267,796 facts): 2-3 word names drawn from a
Zipfian vocabulary of 60,000 pseudo-words, unique labels, one alias (2 words, never
another entity's label) for half of the entities, about 4.8 facts per entity over 300
relations, with skewed (power-law) entity and relation frequencies. The 3,000 sentences
each name the head and tail of one fact (by label, or by alias 30% of the time) inside
lowercase English filler, with gold ``[start, end, entity_id]`` spans.

    python benchmarks/synthetic_kg.py --entities 100000 --out /tmp/kg-100k
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

_SYLLABLES = [c + v for c in "bcdfghjklmnprstvz" for v in "aeiou"] + [
    c + v + "n" for c in "bdkmrstv" for v in "aeiou"]
_FILLERS = [
    ("in the archive , ", " was recorded together with ", " ."),
    ("according to the survey , ", " is linked to ", " ."),
    ("", " appears next to ", " in the old report ."),
    ("the article says that ", " and ", " were connected for years ."),
    ("we read about ", " before reading about ", " ."),
]


def _vocabulary(rng: np.random.Generator, size: int) -> np.ndarray:
    words: dict[str, None] = {}
    while len(words) < size:
        length = rng.integers(2, 4)
        word = "".join(rng.choice(_SYLLABLES, size=length))
        words.setdefault(word.capitalize(), None)
    return np.array(list(words), dtype=object)


def _zipf(rng: np.random.Generator, n: int, size: int, exponent: float = 1.0,
          offset: float = 1.0) -> np.ndarray:
    """``size`` draws from ranks 0..n-1 with P(rank) ~ 1 / (rank + offset) ** exponent."""
    weights = 1.0 / (np.arange(n) + offset) ** exponent
    cumulative = np.cumsum(weights)
    return np.searchsorted(cumulative, rng.random(size) * cumulative[-1]).astype(np.int64)


def _names(rng: np.random.Generator, vocabulary: np.ndarray, count: int,
           taken: set[str], words: tuple[int, int]) -> list[str]:
    """``count`` names not in ``taken`` (added to it), of ``words`` [low, high] words."""
    names: list[str | None] = [None] * count
    pending = np.arange(count)
    while pending.size:
        lengths = rng.integers(words[0], words[1] + 1, size=pending.size)
        picks = _zipf(rng, len(vocabulary), (pending.size, words[1]))
        still = []
        for index, length, row in zip(pending.tolist(), lengths.tolist(), picks):
            name = " ".join(vocabulary[row[:length]])
            if name in taken:
                still.append(index)
            else:
                taken.add(name)
                names[index] = name
        pending = np.asarray(still, dtype=np.int64)
    return names  # type: ignore[return-value]


def generate(out: Path, entities: int, sentences: int = 3000, seed: int = 0,
             facts_per_entity: float = 4.8, relations: int = 300) -> dict:
    """Write ``out/{train.txt,entities.jsonl,relations.jsonl,sentences.jsonl}``."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    vocabulary = _vocabulary(rng, 60_000)
    taken: set[str] = set()
    labels = _names(rng, vocabulary, entities, taken, (2, 3))
    has_alias = rng.random(entities) < 0.5
    alias_rows = np.flatnonzero(has_alias)
    alias_names = _names(rng, vocabulary, len(alias_rows), set(taken), (2, 2))
    del taken
    aliases = dict(zip(alias_rows.tolist(), alias_names))
    with open(out / "entities.jsonl", "w", encoding="utf-8") as sink:
        for row, label in enumerate(labels):
            record = {"id": f"Q{row}", "label": label}
            if row in aliases:
                record["aliases"] = [aliases[row]]
            sink.write(json.dumps(record, ensure_ascii=False) + "\n")
    with open(out / "relations.jsonl", "w", encoding="utf-8") as sink:
        for r in range(relations):
            sink.write(json.dumps({"id": f"P{r}", "label": f"relation {r}"}) + "\n")
    facts = int(entities * facts_per_entity)
    popularity = rng.permutation(entities)  # which entity holds which popularity rank
    chunk = 2_000_000
    sample_heads, sample_tails, sample_relations = [], [], []
    with open(out / "train.txt", "w", encoding="utf-8") as sink:
        for start in range(0, facts, chunk):
            size = min(chunk, facts - start)
            heads = popularity[_zipf(rng, entities, size, 0.8, 10.0)]
            tails = popularity[_zipf(rng, entities, size, 0.8, 10.0)]
            kinds = _zipf(rng, relations, size, 1.1, 2.0)
            sink.write("".join(f"Q{h}\tP{r}\tQ{t}\n"
                               for h, r, t in zip(heads.tolist(), kinds.tolist(),
                                                  tails.tolist())))
            if start == 0:
                keep = heads != tails
                sample_heads, sample_tails = heads[keep], tails[keep]
                sample_relations = kinds[keep]
    picks = rng.choice(len(sample_heads), size=sentences, replace=False)
    with open(out / "sentences.jsonl", "w", encoding="utf-8") as sink:
        for number, pick in enumerate(picks.tolist()):
            head, tail = int(sample_heads[pick]), int(sample_tails[pick])
            before, middle, after = _FILLERS[number % len(_FILLERS)]
            text, gold = before, []
            for entity, tail_text in ((head, middle), (tail, after)):
                use_alias = entity in aliases and rng.random() < 0.3
                name = aliases[entity] if use_alias else labels[entity]
                gold.append([len(text), len(text) + len(name), f"Q{entity}"])
                text += name + tail_text
            record = {"text": text, "gold": gold, "relation": f"P{sample_relations[pick]}"}
            sink.write(json.dumps(record, ensure_ascii=False) + "\n")
    return {"entities": entities, "facts": facts, "relations": relations,
            "aliases": len(aliases), "sentences": sentences}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entities", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sentences", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(json.dumps(generate(args.out, args.entities, args.sentences, args.seed)))


if __name__ == "__main__":
    main()
