"""Aspect-based sentiment data (Sun, Huang and Qiu, NAACL 2019): SentiHood and SemEval-2014
Task 4 restaurants read into one sentence type, the paper's five example constructions,
the fold-back of the yes/no variants, and a held-out dev split of SemEval train.

Why one module: readers, builders and the fold-back share the label layouts, and the
metrics (:mod:`ernie_kg.training.absa_metrics`) need the same groups to score. Every
(sentence, target, aspect) is one :class:`AbsaGroup`; predictions are folded back onto it.

The paper's setting (its public code, ``generate/data_utils_sentihood.py``): SentiHood
keeps LOCATION1 always and LOCATION2 only when the text mentions it, with the 4 aspects
``general``, ``price``, ``transit-location``, ``safety``; opinions on other aspects are
ignored. SemEval-2014 has no target and the 5 categories.

Where this differs from the paper's code (the data README is followed):

* SentiHood QA-B: the code writes ``... of location - 1 - is LABEL .`` (a stray ``-``);
  the README, and this module, ``... of location - 1 is LABEL .``.
* The sentence: the code lowercases it and splits it with NLTK; here LOCATION1/2 are
  written ``location - 1``/``location - 2`` (as in the auxiliary sentences) and runs of
  whitespace collapsed; case and word splitting are left to the tokenizer.
* SemEval text is read with an XML parser, so entities such as ``&quot;`` are unescaped
  (the code cut the raw lines; no ``<text>`` in the shipped files holds one).

Bad input raises :class:`DataFormatError` naming the file, the item (its id) and the field.
"""

from __future__ import annotations

import random
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ernie_kg.errors import DataFormatError, SettingError
from ernie_kg.io import read_json

__all__ = [
    "B_LABELS", "SEMEVAL_CATEGORIES", "SEMEVAL_LABELS", "SENTIHOOD_ASPECTS",
    "SENTIHOOD_LABELS", "SENTIHOOD_TARGETS", "SETTINGS", "AbsaExample", "AbsaGroup",
    "AbsaSentence", "auxiliary_sentence", "build_examples", "fold_b_predictions",
    "gold_groups", "labels_for", "paper_text", "read_semeval2014", "read_sentihood",
    "single_classifiers", "split_semeval2014",
]

SENTIHOOD = "sentihood"
SEMEVAL = "semeval"
SENTIHOOD_TARGETS = ("LOCATION1", "LOCATION2")
SENTIHOOD_ASPECTS = ("general", "price", "transit-location", "safety")
SENTIHOOD_LABELS = ("None", "Positive", "Negative")  # probability columns, paper's order
SEMEVAL_CATEGORIES = ("food", "service", "price", "ambience", "anecdotes/miscellaneous")
SEMEVAL_LABELS = ("positive", "neutral", "negative", "conflict", "none")  # paper's order
SETTINGS = ("single", "qa_m", "nli_m", "qa_b", "nli_b")
B_LABELS = ("no", "yes")  # the B variants' binary classes; column 1 is the yes-probability
_SENTIHOOD_SENTIMENTS = ("Positive", "Negative")  # what an opinion may say
_SEMEVAL_POLARITIES = SEMEVAL_LABELS[:-1]


class AbsaGroup(NamedTuple):
    """One (sentence, target, aspect): the unit the paper labels and scores.
    ``target`` is None for SemEval (no target)."""

    sentence_id: str
    target: str | None
    aspect: str


@dataclass
class AbsaSentence:
    """A sentence and the label of each (target, aspect) of the paper's setting: every
    target it counts times every aspect, ``"None"`` / ``"none"`` where no opinion is given."""

    id: str
    text: str
    labels: dict[tuple[str | None, str], str] = field(default_factory=dict)
    dataset: str = SENTIHOOD  # "sentihood" | "semeval"

    def groups(self) -> list[AbsaGroup]:
        """This sentence's (sentence, target, aspect) groups, in label order."""
        return [AbsaGroup(self.id, target, aspect) for target, aspect in self.labels]


@dataclass(frozen=True)
class AbsaExample:
    """One classifier input: ``text`` (and ``text_pair``), its ``label`` (a dataset label;
    ``"yes"``/``"no"`` in the B variants) and the ``group`` it answers for. The first three
    fields are those of :class:`ernie_kg.data.examples.PairExample`, the processor's input.

    ``candidate`` is the label a B-variant example asks about; ``classifier`` names the
    ``single`` setting's per-target-aspect classifier (``"LOCATION1:general"``, ``"food"``).
    """

    text: str
    text_pair: str | None
    label: str
    group: AbsaGroup
    candidate: str | None = None
    classifier: str | None = None


def labels_for(dataset: str) -> tuple[str, ...]:
    """The labels of ``dataset`` in probability-column order (the paper's)."""
    if dataset == SENTIHOOD:
        return SENTIHOOD_LABELS
    if dataset == SEMEVAL:
        return SEMEVAL_LABELS
    raise SettingError(f"dataset must be 'sentihood' or 'semeval', got {dataset!r}")


def single_classifiers(dataset: str) -> list[str]:
    """Names of the ``single`` setting's classifiers: 8 for SentiHood, 5 for SemEval."""
    labels_for(dataset)
    if dataset == SENTIHOOD:
        return [f"{t}:{a}" for t in SENTIHOOD_TARGETS for a in SENTIHOOD_ASPECTS]
    return list(SEMEVAL_CATEGORIES)


# --- readers -----------------------------------------------------------------------------

def read_sentihood(path: str | Path) -> list[AbsaSentence]:
    """SentiHood JSON: a list of ``{"id", "text", "opinions": [{"target_entity", "aspect",
    "sentiment"}]}``. Opinions on aspects outside the 4 are ignored (as the paper does); an
    unknown target or sentiment, a text without LOCATION1, an opinion on a LOCATION2 the
    text does not mention, a repeated id or two sentiments for one (target, aspect) raise
    :class:`DataFormatError`."""
    path = Path(path)
    items = read_json(path, DataFormatError, "no such SentiHood file")
    if not isinstance(items, list):
        raise DataFormatError(path, None, "expected a JSON list of items")
    sentences, seen = [], set()
    for index, item in enumerate(items):
        sentence = _sentihood_item(path, index, item)
        if sentence.id in seen:
            raise DataFormatError(path, None, f"item {index}: id {sentence.id} repeats")
        seen.add(sentence.id)
        sentences.append(sentence)
    if not sentences:
        raise DataFormatError(path, None, "no items: the file holds an empty list")
    return sentences


def _sentihood_item(path: Path, index: int, item: Any) -> AbsaSentence:
    where = f"item {index}"
    if not isinstance(item, Mapping):
        raise DataFormatError(path, None, f"{where}: expected an object")
    if not isinstance(item.get("id"), (int, str)) or isinstance(item.get("id"), bool):
        raise DataFormatError(path, None, f"{where}: field 'id' must be a number or string")
    where = f"item {index} (id {item['id']})"
    text, opinions = item.get("text"), item.get("opinions")
    if not isinstance(text, str):
        raise DataFormatError(path, None, f"{where}: field 'text' must be a string")
    if not isinstance(opinions, list):
        raise DataFormatError(path, None, f"{where}: field 'opinions' must be a list")
    if SENTIHOOD_TARGETS[0] not in text:
        raise DataFormatError(path, None, f"{where}: field 'text' does not mention LOCATION1")
    targets = [t for t in SENTIHOOD_TARGETS if t in text]
    labels = {(t, a): "None" for t in targets for a in SENTIHOOD_ASPECTS}
    for number, opinion in enumerate(opinions):
        spot = f"{where}, opinion {number}"
        if not isinstance(opinion, Mapping):
            raise DataFormatError(path, None, f"{spot}: expected an object")
        values = {}
        for name, allowed in (("target_entity", SENTIHOOD_TARGETS), ("aspect", None),
                              ("sentiment", _SENTIHOOD_SENTIMENTS)):
            value = opinion.get(name)
            if not isinstance(value, str) or (allowed and value not in allowed):
                wanted = f"one of {', '.join(allowed)}" if allowed else "a string"
                raise DataFormatError(path, None,
                                      f"{spot}: field {name!r} is {value!r}, expected {wanted}")
            values[name] = value
        target, aspect, sentiment = values["target_entity"], values["aspect"], values["sentiment"]
        if target not in targets:
            raise DataFormatError(path, None, f"{spot}: field 'target_entity' is {target}, "
                                  "which the text does not mention")
        if aspect not in SENTIHOOD_ASPECTS:
            continue  # the paper's setting: other aspects are ignored
        if labels[target, aspect] not in ("None", sentiment):
            raise DataFormatError(path, None, f"{spot}: field 'sentiment': {target} {aspect} "
                                  f"is both {labels[target, aspect]} and {sentiment}")
        labels[target, aspect] = sentiment
    return AbsaSentence(str(item["id"]), text, labels, SENTIHOOD)


def read_semeval2014(path: str | Path) -> list[AbsaSentence]:
    """SemEval-2014 Task 4 XML: ``<sentence id>`` with ``<text>`` and ``<aspectCategories>``.

    A sentence without categories is kept with all 5 categories ``none`` (the paper's code
    does the same). Malformed XML raises :class:`DataFormatError` naming the file and line;
    an unknown category or polarity, a missing id or text, a repeated id or one category
    given twice with different polarities name the file, the sentence id and the field.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, None, "missing: no such SemEval-2014 file")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as error:
        line, column = error.position
        reason = str(error).rsplit(": line ", 1)[0]  # the position is given apart
        raise DataFormatError(path, line, f"malformed XML at column {column + 1}: {reason}",
                              ) from None
    sentences, seen = [], set()
    for index, node in enumerate(root.iter("sentence")):
        sentence = _semeval_sentence(path, index, node)
        if sentence.id in seen:
            raise DataFormatError(path, None, f"sentence {index}: id {sentence.id!r} repeats")
        seen.add(sentence.id)
        sentences.append(sentence)
    if not sentences:
        raise DataFormatError(path, None, "no <sentence> elements")
    return sentences


def _semeval_sentence(path: Path, index: int, node: ET.Element) -> AbsaSentence:
    sentence_id = node.get("id")
    if not sentence_id:
        raise DataFormatError(path, None, f"sentence {index}: attribute 'id' is missing")
    where = f"sentence {sentence_id!r}"
    text_node = node.find("text")
    if text_node is None or text_node.text is None:
        raise DataFormatError(path, None, f"{where}: element <text> is missing or empty")
    labels: dict[tuple[str | None, str], str] = {(None, c): "none" for c in SEMEVAL_CATEGORIES}
    for category_node in node.iterfind("aspectCategories/aspectCategory"):
        category, polarity = category_node.get("category"), category_node.get("polarity")
        if category not in SEMEVAL_CATEGORIES:
            raise DataFormatError(path, None, f"{where}: field 'category' is {category!r}, "
                                  f"expected one of {', '.join(SEMEVAL_CATEGORIES)}")
        if polarity not in _SEMEVAL_POLARITIES:
            raise DataFormatError(path, None, f"{where}: field 'polarity' of {category} is "
                                  f"{polarity!r}, expected one of "
                                  f"{', '.join(_SEMEVAL_POLARITIES)}")
        if labels[None, category] not in ("none", polarity):
            raise DataFormatError(path, None, f"{where}: field 'polarity': {category} is both "
                                  f"{labels[None, category]} and {polarity}")
        labels[None, category] = polarity
    return AbsaSentence(sentence_id, text_node.text, labels, SEMEVAL)


def split_semeval2014(sentences: Sequence[AbsaSentence], dev_fraction: float = 0.1,
                      seed: int = 0) -> tuple[list[AbsaSentence], list[AbsaSentence]]:
    """``(train, dev)``: a dev split held out of SemEval train, which has none.

    Stratified by each sentence's full label set ((category, polarity) pairs): sentences
    are shuffled with ``random.Random(seed)``, stably sorted by label set, and every
    ``1/dev_fraction``-th goes to dev, so even rare label sets keep their share. Both parts
    keep file order; the same seed always gives the same split.
    """
    if not 0 < dev_fraction < 1:
        raise SettingError(f"dev_fraction must be in (0, 1), got {dev_fraction}")
    order = list(range(len(sentences)))
    random.Random(seed).shuffle(order)
    order.sort(key=lambda i: sorted((a, v) for (_, a), v in sentences[i].labels.items()))
    dev = {i for rank, i in enumerate(order)
           if int((rank + 1) * dev_fraction) > int(rank * dev_fraction)}
    return ([s for i, s in enumerate(sentences) if i not in dev],
            [s for i, s in enumerate(sentences) if i in dev])


# --- the paper's examples ------------------------------------------------------------------

_LOCATION = re.compile(r"LOCATION([12])")


def paper_text(sentence: AbsaSentence) -> str:
    """The sentence as the examples hold it: whitespace runs collapsed, SentiHood's
    LOCATION1/2 written ``location - 1``/``location - 2`` as in the auxiliary sentences."""
    text = " ".join(sentence.text.split())
    return _LOCATION.sub(r"location - \1", text) if sentence.dataset == SENTIHOOD else text


def _written(group: AbsaGroup) -> tuple[str, str | None]:
    """(aspect, target) as the paper's auxiliary sentences write them."""
    aspect = {"transit-location": "transit location",
              "anecdotes/miscellaneous": "anecdotes"}.get(group.aspect, group.aspect)
    target = None if group.target is None else f"location - {group.target[-1]}"
    return aspect, target


def auxiliary_sentence(group: AbsaGroup, setting: str, label: str | None = None) -> str:
    """The auxiliary sentence of ``setting`` for ``group`` (the data README's wording);
    the B variants need the ``label`` asked about."""
    if setting not in SETTINGS[1:]:
        raise SettingError(f"setting must be one of {', '.join(SETTINGS[1:])} for an "
                           f"auxiliary sentence, got {setting!r}")
    if setting in ("qa_b", "nli_b") and label is None:
        raise SettingError(f"setting {setting} needs the label asked about")
    aspect, target = _written(group)
    if target is None:
        return {"qa_m": f"what do you think of the {aspect} of it ?", "nli_m": aspect,
                "qa_b": f"the polarity of the aspect {aspect} is {label} .",
                "nli_b": f"{label} - {aspect}"}[setting]
    return {"qa_m": f"what do you think of the {aspect} of {target} ?",
            "nli_m": f"{target} - {aspect}",
            "qa_b": f"the polarity of the aspect {aspect} of {target} is {label} .",
            "nli_b": f"{label} - {target} - {aspect}"}[setting]


def build_examples(sentences: Sequence[AbsaSentence], setting: str) -> list[AbsaExample]:
    """The paper's examples of ``setting`` for every group, in sentence, target, aspect
    order. ``single``: the sentence alone, tagged with its classifier; ``qa_m``/``nli_m``:
    ``text`` = sentence, ``text_pair`` = auxiliary; ``qa_b``/``nli_b``: one yes/no example
    per label (in :func:`labels_for` order), ``text`` = auxiliary, ``text_pair`` = sentence.
    """
    if setting not in SETTINGS:
        raise SettingError(f"setting must be one of {', '.join(SETTINGS)}, got {setting!r}")
    examples = []
    for sentence in sentences:
        text = paper_text(sentence)
        for group in sentence.groups():
            gold = sentence.labels[group.target, group.aspect]
            if setting == "single":
                name = group.aspect if group.target is None else f"{group.target}:{group.aspect}"
                examples.append(AbsaExample(text, None, gold, group, classifier=name))
            elif setting in ("qa_m", "nli_m"):
                examples.append(AbsaExample(text, auxiliary_sentence(group, setting), gold,
                                            group))
            else:
                examples += [AbsaExample(auxiliary_sentence(group, setting, label), text,
                                         B_LABELS[label == gold], group, candidate=label)
                             for label in labels_for(sentence.dataset)]
    return examples


def gold_groups(sentences: Sequence[AbsaSentence]) -> tuple[list[AbsaGroup], list[str]]:
    """Every group and its gold label, in :func:`build_examples` order: what the metrics
    score against (the B variants' examples hold yes/no, not the labels)."""
    groups = [group for sentence in sentences for group in sentence.groups()]
    gold = [sentence.labels[t, a] for sentence in sentences for (t, a) in sentence.labels]
    return groups, gold


def fold_b_predictions(examples: Sequence[AbsaExample], yes_probabilities: Sequence[float],
                       ) -> tuple[list[AbsaGroup], np.ndarray]:
    """B-variant yes-probabilities folded back to one row of label probabilities per group
    (the paper's fold: each group's yes-probabilities divided by their sum; the highest
    wins, ties to the first label; all zero gives equal shares). Groups keep first-seen
    order; columns follow :func:`labels_for`."""
    if len(examples) != len(yes_probabilities):
        raise ValueError(f"{len(examples)} examples but {len(yes_probabilities)} "
                         "yes-probabilities")
    rows: dict[AbsaGroup, dict[str, float]] = {}
    for example, probability in zip(examples, yes_probabilities):
        if example.candidate is None:
            raise ValueError(f"example of {example.group} is not a B-variant example")
        rows.setdefault(example.group, {})[example.candidate] = float(probability)
    groups = list(rows)
    folded = []
    for group in groups:
        labels = labels_for(SEMEVAL if group.target is None else SENTIHOOD)
        if set(rows[group]) != set(labels):
            raise ValueError(f"group {group} has yes-probabilities for "
                             f"{sorted(rows[group])}, expected one for each of {labels}")
        scores = np.array([rows[group][label] for label in labels], dtype=np.float64)
        total = scores.sum()
        folded.append(scores / total if total > 0 else np.full(len(labels), 1 / len(labels)))
    return groups, np.array(folded)
