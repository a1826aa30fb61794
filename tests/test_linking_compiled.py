"""The linker's compiled hot path (ernie_kg/linking/_speedups.pyx) against the pure
Python code it stands in for, on the same docs: random texts made of the demo KG's
alias words, plus tokenizer special cases."""

from __future__ import annotations

import shutil

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ernie_kg.kg import KnowledgeGraph
from ernie_kg.linking import EntityLinker
from ernie_kg.linking.compiled import PURE_PYTHON_ENV, speedups
from ernie_kg.linking.context import context_words_python
from ernie_kg.paths import demo_kg_dir

needs_compiled = pytest.mark.skipif(speedups is None, reason="compiled linker not built")


@pytest.fixture(scope="module")
def detector():
    linker = EntityLinker.from_kg(KnowledgeGraph.load(demo_kg_dir()))
    return linker.detector


@pytest.fixture(scope="module")
def words(detector) -> list[str]:
    """Words of the aliases, plus fillers, punctuation and tokenizer special cases."""
    found = sorted({w for key in detector.aliases.keys() for w in key.split()})
    return found[:200] + ["the", "and", ",", ".", "Aug.", "don't", "U.S.", "é", "🙂", "\n"]


def test_compiled_linker_is_built():
    """The install compiles it wherever a C++ compiler exists (as on CI)."""
    import os

    if os.environ.get(PURE_PYTHON_ENV, "") not in ("", "0"):
        pytest.skip(f"{PURE_PYTHON_ENV} is set")
    if shutil.which("c++") is None:
        pytest.skip("no C++ compiler: the linker runs in pure Python")
    assert speedups is not None


@needs_compiled
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_alias_spans_match_python(detector, words, data):
    tokens = data.draw(st.lists(st.sampled_from(words), max_size=40))
    case = data.draw(st.sampled_from([str.lower, str.upper, str.title, str]))
    doc = detector.make_doc(case(" ".join(tokens)))
    patterns = detector.patterns
    for setting in ((True, 2), (False, 1)):
        usable = patterns.usable(*setting)
        expected = patterns.alias_spans_python(doc, usable)
        assert speedups.alias_spans(doc, patterns._table_keys, patterns._table_values,
                                    usable) == expected


@needs_compiled
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_context_words_match_python(detector, words, data):
    doc = detector.make_doc(" ".join(data.draw(st.lists(st.sampled_from(words), max_size=40))))
    skip = data.draw(st.lists(st.tuples(st.integers(-50, 50), st.integers(-50, 50)), max_size=4))
    assert speedups.context_words(doc, skip) == context_words_python(doc, skip)


@needs_compiled
def test_context_words_read_token_norms(detector):
    """A tokenizer exception's own NORM ("Aug." -> "August") counts, as spaCy reads it."""
    doc = detector.make_doc("Aug. 15")
    assert speedups.context_words(doc, []) == context_words_python(doc, [])
    assert doc.vocab.strings["August"] in speedups.context_words(doc, [])


@needs_compiled
def test_none_is_a_type_error(detector):
    with pytest.raises(TypeError):
        speedups.context_words(None, [])
    with pytest.raises(TypeError):
        speedups.alias_spans(None, detector.patterns._table_keys,
                               detector.patterns._table_values, b"")


@needs_compiled
def test_empty_doc(detector):
    doc = detector.make_doc("")
    assert speedups.context_words(doc, [(0, 3)]) == set()
    patterns = detector.patterns
    assert speedups.alias_spans(doc, patterns._table_keys, patterns._table_values,
                                patterns.usable(True, 2)) == []


@needs_compiled
def test_other_spacy_version_falls_back_to_python(monkeypatch):
    """Built against one spaCy's structs, never run against another's."""
    import spacy

    from ernie_kg.linking import compiled

    monkeypatch.setattr(spacy, "__version__", "0.0.1")
    with pytest.warns(UserWarning, match="built for spaCy"):
        assert compiled._load() is None


def test_environment_switches_to_pure_python(monkeypatch):
    from ernie_kg.linking import compiled

    monkeypatch.setenv(PURE_PYTHON_ENV, "1")
    assert compiled._load() is None
