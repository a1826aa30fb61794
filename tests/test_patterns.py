"""Alias patterns find exactly what spaCy's PhraseMatcher (the oracle, built here the
way the linker used to build it) finds: longest match first, no overlaps."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from spacy.matcher import PhraseMatcher

from ernie_kg.kg import KnowledgeGraph
from ernie_kg.linking import EntityLinker
from ernie_kg.linking.patterns import AliasPatterns
from ernie_kg.paths import demo_kg_dir


@pytest.fixture(scope="module")
def detector():
    return EntityLinker.from_kg(KnowledgeGraph.load(demo_kg_dir())).detector


@pytest.fixture(scope="module")
def oracle(detector):
    """The PhraseMatcher over the same aliases, with the old filters applied up front."""
    nlp, aliases = detector.nlp, detector.aliases
    matcher = PhraseMatcher(nlp.vocab, attr="NORM")
    key_of = {}
    for key in aliases.keys():
        if len(key.replace(" ", "")) < 2:
            continue
        docs = [d for d in nlp.tokenizer.pipe(aliases.surfaces(key))
                if len(d) and not all(t.is_stop or t.is_punct for t in d)]
        if docs:
            key_of[nlp.vocab.strings.add(key)] = key
            matcher.add(key, docs)

    def spans(doc):
        matches = sorted(matcher(doc), key=lambda m: (m[1] - m[2], m[1]))
        taken, found = set(), []
        for match_id, start, end in matches:
            if taken & set(range(start, end)):
                continue
            taken |= set(range(start, end))
            found.append((doc[start].idx, doc[end - 1].idx + len(doc[end - 1]),
                          key_of[match_id], start, end, "alias"))
        return sorted(found)

    return spans


@pytest.fixture(scope="module")
def words(detector) -> list[str]:
    found = sorted({w for key in detector.aliases.keys() for w in key.split()})
    return found[:300] + ["the", "of", ",", ".", "Aug.", "don't", "U.S.", "é", "\n", "  "]


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_patterns_find_what_the_phrase_matcher_finds(detector, oracle, words, data):
    tokens = data.draw(st.lists(st.sampled_from(words), max_size=40))
    case = data.draw(st.sampled_from([str.lower, str.upper, str.title, str]))
    doc = detector.make_doc(case(" ".join(tokens)))
    assert detector.spans(doc) == oracle(doc)


def test_stop_words_and_short_aliases_follow_the_settings(detector):
    keys = ["the", "x", "the beatles"]
    patterns = AliasPatterns.build(detector.nlp, [(i, k, k) for i, k in enumerate(keys)],
                                   keys.__getitem__)
    doc = detector.make_doc("x saw the beatles and the band")
    assert [m[2] for m in patterns.spans(doc)] == ["the beatles"]
    assert [m[2] for m in patterns.spans(doc, skip_stop_words=False, min_chars=1)] == [
        "x", "the beatles", "the"]


def test_saved_patterns_memory_map_to_the_same_matches(detector, tmp_path):
    patterns = detector.patterns
    patterns.save(tmp_path)
    loaded = AliasPatterns.load(tmp_path, patterns.key)
    doc = detector.make_doc("Paris and Berlin are capitals of France and Germany.")
    assert loaded.spans(doc) == patterns.spans(doc) != []
