"""Build the demo relation-classification corpus (FewRel format) from the demo KG.

Writes ``kg_data/demo_corpus/{train,dev,test}.json``, each a JSON object
``{relation_id: [instance, ...]}`` with FewRel instances::

    {"tokens": [...], "h": [name, entity_id, [[token indices]]],
     "t": [name, entity_id, [[token indices]]]}

Entity ids and relation ids are those of the demo KG (``kg_data/demo``).  Sentences come
from hand-written examples and from templates over true KG facts: several wordings per
relation (some with the tail before the head), distractor entities drawn from other true
facts, and roughly a third *neutral* wordings shared by every relation (``"{h} ( {t} )"``)
that only the KG can disambiguate.  Facts are split between train/dev/test, so no
``(h, r, t)`` fact occurs in two splits.  Standard library only, seeded::

    python kg_data/build_demo_corpus.py
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
OUT_DIR = HERE / "demo_corpus"
SEED = 2024
SPLITS = ("train", "dev", "test")
SENTENCES_PER_RELATION = {"train": 125, "dev": 25, "test": 25}
FACT_FRACTIONS = {"dev": 0.15, "test": 0.15}
NEUTRAL_PROB = 0.33  # chance to pick a neutral template when the fact allows one
ALIAS_PROB = 0.2  # chance to mention the head/tail by an alias instead of the label
ALIAS_TYPES = {"country", "city", "region", "person", "organisation", "river"}

# Words (with inner hyphens/apostrophes/dots), dotted acronyms ("U.S."), initials ("J."),
# a few abbreviations ("Inc.", "Jr.", "No."); every other punctuation mark is a token.
TOKEN_RE = re.compile(
    r"(?:[A-Za-z]\.){2,}"
    r"|(?:Inc|Jr|Co|Ltd|Corp|No|St|Mr|Mrs|Dr)\.(?!\w)"
    r"|[A-Z]\.(?=\s)"
    r"|\w+(?:[-'.]\w+)*"
    r"|[^\w\s]"
)
SLOT_RE = re.compile(r"^\{(?P<ent>[ht])(?:(?P<dir>[:<])(?P<rel>\w+))?(?P<indef>\|a)?\}$")
CONDITION_RE = re.compile(r"^\[(?P<cond>[^\]]+)\]\s*")

CORPUS_RELATIONS = [
    "capital_of",
    "located_in",
    "shares_border_with",
    "official_language",
    "currency",
    "flows_through",
    "citizen_of",
    "born_in",
    "died_in",
    "headquartered_in",
    "notable_work",
    "member_of",
]

# Neutral wordings, shared by all relations: the text does not say which relation holds.
NEUTRAL_TEMPLATES = [
    "{h} ( {t} )",
    "{h} , {t} .",
    "{h} – {t}",
    "{t} : {h}",
    "{h} and {t} are both mentioned in the article .",
    "The entry on {h} links to {t} .",
    "See also : {h} ; {t} .",
    "{h} / {t}",
    "In the index , {h} appears next to {t} .",
    "Keywords : {t} , {h} .",
]

# Relation-specific wordings.  Slots: {h} / {t} are the head / tail mentions;
# {h:rel} is another entity x with (h, rel, x) and {t<rel} one with (x, rel, t) -- the
# distractors; "|a" prefixes an indefinite article.  {verb}, {verb_pp} and {kind|a}
# describe the work in notable_work.  A leading [cond] restricts a template:
# [h:type] / [t:type] need that entity type, [unique] / [multi] a tail country with
# one / several capitals.
TEMPLATES: dict[str, list[str]] = {
    "capital_of": [
        "[unique] {h} is the capital of {t} .",
        "[unique] {h} is the capital city of {t} .",
        "[unique] The capital of {t} is {h} .",
        "[unique] {h} serves as the capital of {t} .",
        "[unique] {h} , the capital of {t} , lies on {h<flows_through} .",
        "[unique] {t} , whose capital is {h} , borders {t:shares_border_with} .",
        "[unique] {t} , a country in {t:continent} , has {h} as its capital .",
        "[unique] {h} , the capital of {t} , is home to {h<headquartered_in} .",
        "[multi] {h} is one of the capitals of {t} .",
        "[multi] {t} has several capitals , one of which is {h} .",
        "[multi] {h} , one of the capitals of {t} , lies in {t:continent} .",
    ],
    "located_in": [
        "{h} is a city in {t} .",
        "{h} is located in {t} .",
        "{h} lies in {t} .",
        "The city of {h} is in {t} .",
        "{t} is home to the city of {h} .",
        "{h} , a city in {t} , lies on {h<flows_through} .",
        "{h} , in {t} , is home to {h<headquartered_in} .",
        "{h} , in {t} , is where {h<born_in} was born .",
    ],
    "shares_border_with": [
        "{h} shares a border with {t} .",
        "{h} borders {t} .",
        "{h} and {t} share a land border .",
        "{t} is one of the neighbouring countries of {h} .",
        "{h} , whose capital is {h:has_capital} , borders {t} .",
        "Travellers can cross by land from {h} into {t} .",
        "{h} is bordered by {t} .",
    ],
    "official_language": [
        "{t} is an official language of {h} .",
        "An official language of {h} is {t} .",
        "In {h} , {t} is an official language .",
        "{h} recognises {t} as an official language .",
        "{t} has official status in {h} .",
        "{h} , whose capital is {h:has_capital} , uses {t} as an official language .",
        "Under the law of {h} , {t} is an official language .",
        "{t} is an official language of both {h} and {t<official_language} .",
    ],
    "currency": [
        "The currency of {h} is {t} .",
        "{h} uses {t} as its currency .",
        "{t} is the official currency of {h} .",
        "In {h} , prices are given in {t} .",
        "{t} is the currency used in {h} .",
        "{h} , a country in {h:continent} , has {t} as its currency .",
        "{t} is used both in {h} and in {t<currency} .",
        "Visitors to {h} pay with {t} .",
    ],
    "flows_through": [
        "{h} flows through {t} .",
        "{h} runs through {t} .",
        "{h} passes through {t} .",
        "{t} is crossed by {h} .",
        "{h} , which empties into {h:flows_into} , flows through {t} .",
        "On its way to {h:flows_into} , {h} flows through {t} .",
        "[t:city] {t} lies on {h} .",
        "[t:country] {h} is one of the rivers of {t} .",
    ],
    "citizen_of": [
        "{h} , a citizen of {t} , is known as {h:occupation|a} .",
        "Citizenship of {h} : {t} .",
        "Among the well-known citizens of {t} is {h} .",
        "{t} counts {h} among its famous citizens .",
        "{h} ( citizenship : {t} ) is known as {h:occupation|a} .",
        "{h} is listed as a citizen of {t} .",
        "Records list {h} as a national of {t} .",
    ],
    "born_in": [
        "{h} was born in {t} .",
        "{t} is the birthplace of {h} .",
        "{h} , {h:occupation|a} , was born in {t} .",
        "Born in {t} , {h} became {h:occupation|a} .",
        "{h} was born in the city of {t} , in {t:located_in} .",
        "The {h:occupation} {h} is a native of {t} .",
        "{t} , where {h} was born , lies in {t:located_in} .",
        "{h} , who died in {h:died_in} , was born in {t} .",
    ],
    "died_in": [
        "{h} died in {t} .",
        "{t} is where {h} died .",
        "{h} , {h:occupation|a} , died in {t} .",
        "{h} passed away in {t} .",
        "{t} is the place of death of {h} .",
        "The {h:occupation} {h} died in the city of {t} , in {t:located_in} .",
        "{h} , who was born in {h:born_in} , died in {t} .",
    ],
    "headquartered_in": [
        "{h} is headquartered in {t} .",
        "{h} has its headquarters in {t} .",
        "The headquarters of {h} are in {t} .",
        "{t} is home to the headquarters of {h} .",
        "{h} , whose founders include {h:founded_by} , is based in {t} .",
        "{h} is based in {t} , in {t:located_in} .",
        "Based in {t} , {h} is active in {h:industry} .",
        "[h:company] {h} is a company based in {t} .",
        "[h:international_organisation] {t} hosts the headquarters of {h} .",
    ],
    "notable_work": [
        "{t} is {kind|a} by {h} .",
        "{h} {verb} {t} .",
        "{t} was {verb_pp} by {h} .",
        "One of the best-known works of {h} is {t} .",
        "{h} , {h:occupation|a} , is remembered for {t} .",
        "Born in {h:born_in} , {h} later {verb} {t} .",
        "{t} is among the most famous works of {h} .",
        "{t} , {kind|a} in {t:original_language} , was {verb_pp} by {h} .",
    ],
    "member_of": [
        "{h} is a member of {t} .",
        "[h:country] {h} is a member state of {t} .",
        "{t} counts {h} among its members .",
        "{h} belongs to {t} .",
        "{h} , whose capital is {h:has_capital} , is a member of {t} .",
        "{t} , headquartered in {t:headquartered_in} , includes {h} .",
        "{h} participates in {t} as a full member .",
        "Among the members of {t} is {h} .",
    ],
}

# Work kind (second entity type) -> (past tense, past participle).
WORK_VERBS = {
    "painting": ("painted", "painted"),
    "mural_painting": ("painted", "painted"),
    "opera": ("composed", "composed"),
    "ballet": ("composed", "composed"),
    "symphony": ("composed", "composed"),
    "set_of_violin_concertos": ("composed", "composed"),
    "film": ("directed", "directed"),
    "animated_film": ("directed", "directed"),
    "operating_system_kernel": ("created", "created"),
    "programming_language": ("created", "created"),
}
DEFAULT_WORK_VERBS = ("wrote", "written")


def load_kg_builder() -> ModuleType:
    """Import the sibling ``build_demo_kg.py`` (works without package installation)."""
    path = HERE / "build_demo_kg.py"
    spec = importlib.util.spec_from_file_location("build_demo_kg", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def tokenize(text: str) -> list[str]:
    """Whitespace/punctuation tokenisation; punctuation marks are separate tokens."""
    return TOKEN_RE.findall(text)


def indefinite(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


# ---------------------------------------------------------------------------------
# Facts and splits
# ---------------------------------------------------------------------------------


def collect_facts(kg) -> dict[str, list[tuple[str, str]]]:
    """(head, tail) pairs per corpus relation, filtered to sensible sentence subjects."""
    facts: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for head, relation, tail in sorted(kg.triples):
        if relation not in CORPUS_RELATIONS:
            continue
        head_types = set(kg.entities[head].types)
        tail_types = set(kg.entities[tail].types)
        if relation == "located_in" and (
            "city" not in head_types
            or not tail_types & {"country", "region"}
            or kg.has(head, "capital_of", tail)
        ):
            continue  # non-capital cities only; capitals belong to capital_of
        if relation == "flows_through" and "lake" in tail_types:
            continue
        if relation == "member_of" and "person" in head_types:
            continue
        facts[relation].append((head, tail))
    return facts


def fact_group(relation: str, head: str, tail: str) -> tuple[str, str, str]:
    """Both directions of a symmetric fact form one group (one split)."""
    if relation == "shares_border_with":
        head, tail = sorted((head, tail))
    return (relation, head, tail)


def split_facts(
    facts: dict[str, list[tuple[str, str]]], rng: random.Random
) -> dict[tuple[str, str, str], str]:
    """Assign every fact to train/dev/test (~70/15/15 per relation)."""
    assignment: dict[tuple[str, str, str], str] = {}
    for relation in CORPUS_RELATIONS:
        groups = sorted({fact_group(relation, h, t) for h, t in facts[relation]})
        rng.shuffle(groups)
        n_test = max(1, round(FACT_FRACTIONS["test"] * len(groups)))
        n_dev = max(1, round(FACT_FRACTIONS["dev"] * len(groups)))
        for index, group in enumerate(groups):
            split = "test" if index < n_test else "dev" if index < n_test + n_dev else "train"
            assignment[group] = split
        for head, tail in facts[relation]:
            assignment[(relation, head, tail)] = assignment[fact_group(relation, head, tail)]
    return assignment


# ---------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------


class Renderer:
    """Turns templates and hand-written sentences into FewRel instances."""

    def __init__(self, kg, rng: random.Random) -> None:
        self.kg = kg
        self.rng = rng
        self.relations_between: dict[tuple[str, str], set[str]] = defaultdict(set)
        for head, relation, tail in kg.triples:
            if relation in CORPUS_RELATIONS:
                self.relations_between[(head, tail)].add(relation)
                self.relations_between[(tail, head)].add(relation)

    def neutral_allowed(self, relation: str, head: str, tail: str) -> bool:
        """True when no other corpus relation links the pair (capital_of implies
        located_in, so that pair is labelled with the more specific capital_of)."""
        others = self.relations_between[(head, tail)] - {relation}
        if relation == "capital_of":
            others.discard("located_in")
        return not others

    def _mention(self, ent_id: str):
        entity = self.kg.entities[ent_id]
        if ALIAS_TYPES & set(entity.types) and self.rng.random() < ALIAS_PROB:
            aliases = [a for a in entity.alias_names if len(a.text) >= 2 and not a.former]
            if aliases:
                return self.rng.choice(aliases)
        return entity.name

    def _condition_holds(self, condition: str, head: str, tail: str) -> bool:
        if condition in ("unique", "multi"):
            n_capitals = len(self.kg.tails(tail, "has_capital"))
            return (n_capitals == 1) if condition == "unique" else (n_capitals > 1)
        role, _, etype = condition.partition(":")
        ent_id = head if role == "h" else tail
        return etype in self.kg.entities[ent_id].types

    def _distractor(self, ent_id: str, direction: str, relation: str, used: set[str]):
        if direction == ":":
            candidates = self.kg.tails(ent_id, relation)
        else:
            candidates = self.kg.heads(relation, ent_id)
        if relation == "has_capital" and len(candidates) > 1:
            return None  # "whose capital is X" would be misleading
        candidates = sorted(set(candidates) - used)
        return self.rng.choice(candidates) if candidates else None

    def render(self, template: str, relation: str, head: str, tail: str) -> dict | None:
        """Fill ``template`` for the fact; ``None`` when a slot or condition fails."""
        match = CONDITION_RE.match(template)
        if match:
            if not self._condition_holds(match["cond"], head, tail):
                return None
            template = template[match.end() :]
        kg = self.kg
        tokens: list[str] = []
        mentions: dict[str, tuple[str, list[int]]] = {}
        template_positions: set[int] = set()
        used = {head, tail}
        work_kind = kg.entities[tail].types[1] if relation == "notable_work" else ""
        verb, verb_pp = WORK_VERBS.get(work_kind, DEFAULT_WORK_VERBS)
        for piece in template.split():
            if piece in ("{verb}", "{verb_pp}"):
                tokens.append(verb if piece == "{verb}" else verb_pp)
                continue
            if piece == "{kind|a}":
                kind_words = work_kind.split("_")
                tokens.extend([indefinite(kind_words[0]), *kind_words])
                continue
            slot = SLOT_RE.match(piece)
            if slot is None:
                template_positions.update(range(len(tokens), len(tokens) + len(tokenize(piece))))
                tokens.extend(tokenize(piece))
                continue
            ent_id = head if slot["ent"] == "h" else tail
            if slot["rel"] is None:
                name = self._mention(ent_id)
                if name.article:
                    template_positions.add(len(tokens))
                    tokens.append(name.article)
                start = len(tokens)
                tokens.extend(tokenize(name.text))
                mentions[slot["ent"]] = (name.text, list(range(start, len(tokens))))
                continue
            other = self._distractor(ent_id, slot["dir"], slot["rel"], used)
            if other is None:
                return None
            used.add(other)
            name = kg.entities[other].name
            if slot["indef"]:
                tokens.append(indefinite(name.text))
            elif name.article:
                template_positions.add(len(tokens))
                tokens.append(name.article)
            tokens.extend(tokenize(name.text))
        if 0 in template_positions and tokens[0][:1].islower():
            tokens[0] = tokens[0][:1].upper() + tokens[0][1:]
        instance = make_instance(tokens, head, mentions["h"], tail, mentions["t"])
        instance["_distractors"] = len(used) - 2
        return instance

    def hand_written(self, head: str, head_name: str, tail: str, tail_name: str, text: str):
        """Instance for a hand-written sentence; mentions must be entity names."""
        for ent_id, name in ((head, head_name), (tail, tail_name)):
            if name not in {n.text for n in self.kg.entities[ent_id].names()}:
                raise ValueError(f"{name!r} is not a name of {ent_id}")
        tokens = tokenize(text)
        head_span = find_span(tokens, tokenize(head_name), set())
        tail_span = find_span(tokens, tokenize(tail_name), set(head_span))
        return make_instance(tokens, head, (head_name, head_span), tail, (tail_name, tail_span))


def find_span(tokens: list[str], needle: list[str], avoid: set[int]) -> list[int]:
    """Indices of the first occurrence of ``needle`` not overlapping ``avoid``."""
    for start in range(len(tokens) - len(needle) + 1):
        span = list(range(start, start + len(needle)))
        if tokens[start : start + len(needle)] == needle and not avoid & set(span):
            return span
    raise ValueError(f"mention {' '.join(needle)!r} not found in {' '.join(tokens)!r}")


def make_instance(tokens, head, head_mention, tail, tail_mention) -> dict:
    return {
        "tokens": tokens,
        "h": [head_mention[0], head, [head_mention[1]]],
        "t": [tail_mention[0], tail, [tail_mention[1]]],
    }


# ---------------------------------------------------------------------------------
# Corpus generation
# ---------------------------------------------------------------------------------


class FactState:
    """Templates still unused for one fact, and its sentences so far."""

    def __init__(self, relation: str, head: str, tail: str, neutral: bool) -> None:
        self.relation, self.head, self.tail = relation, head, tail
        self.specific = list(TEMPLATES[relation])
        self.neutral = list(NEUTRAL_TEMPLATES) if neutral else []
        self.instances: list[dict] = []
        self.exhausted = False


def generate_one(state: FactState, renderer: Renderer, rng: random.Random, seen: set) -> bool:
    """Add one new templated sentence to ``state``; False once templates run out."""
    while state.specific or state.neutral:
        use_neutral = bool(state.neutral) and (not state.specific or rng.random() < NEUTRAL_PROB)
        pool = state.neutral if use_neutral else state.specific
        template = pool.pop(rng.randrange(len(pool)))
        instance = renderer.render(template, state.relation, state.head, state.tail)
        if instance is None:
            continue
        key = (tuple(instance["tokens"]), state.head, state.tail)
        if key in seen:
            continue
        seen.add(key)
        instance["_neutral"] = use_neutral
        state.instances.append(instance)
        return True
    state.exhausted = True
    return False


def build_corpus(
    kg, hand_written: list[dict[str, str]], seed: int = SEED
) -> dict[str, dict[str, list[dict]]]:
    """Return ``{split: {relation: [instance, ...]}}``.

    ``hand_written`` rows (``tables/hand_written_sentences.tsv``) have the keys
    relation, head, head_mention, tail, tail_mention and text.
    """
    rng = random.Random(seed)
    renderer = Renderer(kg, rng)
    facts = collect_facts(kg)
    assignment = split_facts(facts, rng)

    hand: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for row in hand_written:
        relation, head, tail = row["relation"], row["head"], row["tail"]
        if not kg.has(head, relation, tail) or (relation, head, tail) not in assignment:
            raise ValueError(f"hand-written sentence for unknown fact {head} {relation} {tail}")
        instance = renderer.hand_written(
            head, row["head_mention"], tail, row["tail_mention"], row["text"]
        )
        instance["_neutral"] = False
        hand[(relation, head, tail)].append(instance)

    corpus: dict[str, dict[str, list[dict]]] = {split: {} for split in SPLITS}
    for relation in CORPUS_RELATIONS:
        for split in SPLITS:
            states = [
                FactState(relation, h, t, renderer.neutral_allowed(relation, h, t))
                for h, t in facts[relation]
                if assignment[(relation, h, t)] == split
            ]
            rng.shuffle(states)
            seen: set = set()
            for state in states:
                state.instances.extend(hand[(relation, state.head, state.tail)])
                seen.update((tuple(i["tokens"]), state.head, state.tail) for i in state.instances)
            quota = SENTENCES_PER_RELATION[split]
            total = sum(len(s.instances) for s in states)
            level = 0
            while total < quota and not all(s.exhausted for s in states):
                for state in states:  # round-robin keeps facts balanced
                    if total >= quota:
                        break
                    if len(state.instances) <= level and generate_one(state, renderer, rng, seen):
                        total += 1
                level += 1
            instances = [i for s in states for i in s.instances]
            rng.shuffle(instances)
            corpus[split][relation] = instances
    return corpus


def check_corpus(kg, corpus: dict[str, dict[str, list[dict]]]) -> None:
    """Validate mentions, ids and the fact-disjointness of the splits."""
    fact_split: dict[tuple[str, str, str], str] = {}
    for split, by_relation in corpus.items():
        for relation, instances in by_relation.items():
            for inst in instances:
                tokens = inst["tokens"]
                spans = []
                for key in ("h", "t"):
                    name, ent_id, positions = inst[key]
                    (span,) = positions
                    if [tokens[i] for i in span] != tokenize(name):
                        raise AssertionError(f"bad span for {name!r} in {' '.join(tokens)!r}")
                    if name not in {n.text for n in kg.entities[ent_id].names()}:
                        raise AssertionError(f"{name!r} is not a name of {ent_id}")
                    spans.append(set(span))
                if spans[0] & spans[1]:
                    raise AssertionError(f"overlapping mentions in {' '.join(tokens)!r}")
                head, tail = inst["h"][1], inst["t"][1]
                if not kg.has(head, relation, tail):
                    raise AssertionError(f"not a KG fact: {head} {relation} {tail}")
                fact = fact_group(relation, head, tail)
                if fact_split.setdefault(fact, split) != split:
                    raise AssertionError(f"fact {fact} in two splits")


def write_corpus(corpus: dict[str, dict[str, list[dict]]], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for split, by_relation in corpus.items():
        clean = {
            relation: [{k: v for k, v in inst.items() if not k.startswith("_")} for inst in insts]
            for relation, insts in by_relation.items()
        }
        text = json.dumps(clean, ensure_ascii=False, separators=(",", ":"))
        (out_dir / f"{split}.json").write_text(text + "\n", encoding="utf-8")


def summary(corpus: dict[str, dict[str, list[dict]]]) -> str:
    lines = []
    for split, by_relation in corpus.items():
        sizes = Counter({r: len(insts) for r, insts in by_relation.items()})
        total = sum(sizes.values())
        instances = [i for insts in by_relation.values() for i in insts]
        neutral = sum(i["_neutral"] for i in instances) / max(total, 1)
        distractor = sum(i.get("_distractors", 1) > 0 for i in instances) / max(total, 1)
        lines.append(
            f"{split}: {total} sentences, {neutral:.0%} neutral, "
            f"{distractor:.0%} with distractor entities; "
            + ", ".join(f"{r} {n}" for r, n in sizes.items())
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="output directory")
    parser.add_argument("--seed", type=int, default=SEED, help="random seed")
    args = parser.parse_args(argv)
    builder = load_kg_builder()
    kg = builder.load_demo_kg()
    hand_written = builder.read_table("hand_written_sentences")
    corpus = build_corpus(kg, hand_written, args.seed)
    check_corpus(kg, corpus)
    write_corpus(corpus, args.out)
    print(f"wrote {args.out}")
    print(summary(corpus))


if __name__ == "__main__":
    main()
