"""First-wordpiece alignment with the packaged MiniLM fast tokenizer: examples for every
case, and hypothesis properties over random texts and spans."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from ernie_kg.errors import SpanError
from ernie_kg.kg.embeddings import EntityEmbeddings
from ernie_kg.linking import LinkedMention
from ernie_kg.paths import default_backbone
from ernie_kg.processing import (
    EntitySpan,
    align_batch,
    align_entities,
    resolve_overlaps,
    row_lookup,
)


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(default_backbone())


def aligned(tokenizer, text, mentions, **kwargs):
    """(token, row) pairs of the positions that carry an entity."""
    encoding = tokenizer(text, **kwargs)
    rows = align_entities(encoding, text, mentions, {"curie": 7, "warsaw": 9})
    assert len(rows) == len(encoding["input_ids"])
    return [(t, r) for t, r in zip(encoding.tokens(), rows) if r]


# ----------------------------------------------------------------------------- examples
def test_only_the_first_wordpiece_carries_the_entity(tokenizer):
    text = "Marie Curie was born in Warsaw."
    encoding = tokenizer(text)
    rows = align_entities(encoding, text, [(0, 11, "curie"), (24, 30, "warsaw")],
                          {"curie": 7, "warsaw": 9})
    assert encoding.tokens()[:5] == ["[CLS]", "marie", "cu", "##rie", "was"]
    assert rows == [0, 7, 0, 0, 0, 0, 0, 9, 0, 0]  # specials and later pieces get 0


def test_mention_inside_a_word_and_leading_space(tokenizer):
    text = "the Curies' home"
    # "Curie" starts a word but ends inside it; " home" starts with a space
    assert aligned(tokenizer, text, [(4, 9, 3), (11, 16, 4)]) == [("cu", 3), ("home", 4)]


def test_unknown_ids_and_nil_mentions_get_no_entity(tokenizer):
    text = "Marie Curie was born in Warsaw."
    nil = LinkedMention(24, 30, "Warsaw", None, 0.1)
    found = LinkedMention(0, 11, "Marie Curie", "curie", 1.0)
    assert aligned(tokenizer, text, [found, nil, (16, 20, "nobody")]) == [("marie", 7)]


def test_row_sources(tokenizer):
    table = EntityEmbeddings.random(["a", "b"], dim=4)
    assert row_lookup(table)("b") == 2 and row_lookup(table)("z") == 0
    assert row_lookup(["a", "b"])("a") == 1
    assert row_lookup({"a": 5})("a") == 5
    assert row_lookup(lambda e: {"a": 3}[e])("q") == 0  # KeyError: no row
    with pytest.raises(ValueError, match="row"):
        row_lookup({"a": -1})("a")
    with pytest.raises(TypeError):
        row_lookup(3)  # type: ignore[arg-type]


def test_overlaps_resolved_longest_then_leftmost_in_any_order():
    spans = [EntitySpan(0, 5, 1), EntitySpan(0, 13, 2), EntitySpan(10, 20, 3),
             EntitySpan(14, 18, 4), EntitySpan(16, 19, 5), EntitySpan(30, 33, 6),
             EntitySpan(29, 32, 7)]
    kept = resolve_overlaps(spans)
    assert [s.row for s in kept] == [2, 4, 7]  # 0-13, then 14-18, then 29-32 (leftmost)
    assert [s.row for s in resolve_overlaps(spans[::-1])] == [2, 4, 7]


def test_overlapping_mentions_one_kept(tokenizer):
    text = "New York City is big."
    assert aligned(tokenizer, text, [(0, 8, 1), (0, 13, 2), (4, 13, 3)]) == [("new", 2)]


def test_two_mentions_on_one_wordpiece(tokenizer):
    # "ab" is one wordpiece: only the longer of two mentions inside it keeps its entity
    assert aligned(tokenizer, "xx abc yy", [(3, 4, 1), (4, 6, 2)]) == [("abc", 2)]


def test_right_truncation_drops_cut_entities(tokenizer):
    text = "Marie Curie was born in Warsaw."
    mentions = [(0, 11, "curie"), (24, 30, "warsaw")]
    assert aligned(tokenizer, text, mentions, truncation=True, max_length=4) == [
        ("marie", 7)]  # [CLS] marie cu [SEP]: Curie's first piece is in, Warsaw is cut
    assert aligned(tokenizer, text, mentions, truncation=True, max_length=9) == [
        ("marie", 7), ("warsaw", 9)]


def test_left_truncation_drops_entities_whose_first_piece_is_cut(tokenizer):
    left = AutoTokenizer.from_pretrained(default_backbone(), truncation_side="left")
    text = "Warsaw and Marie Curie"
    encoding = left(text, truncation=True, max_length=4)
    assert encoding.tokens() == ["[CLS]", "cu", "##rie", "[SEP]"]
    # "Warsaw" and "Marie Curie" lost their first pieces; "Curie" starts at "cu"
    assert align_entities(encoding, text, [(0, 6, 1), (11, 22, 2)]) == [0, 0, 0, 0]
    assert align_entities(encoding, text, [(0, 6, 1), (17, 22, 3)]) == [0, 3, 0, 0]


def test_added_marker_tokens(tokenizer):
    marked = AutoTokenizer.from_pretrained(default_backbone())
    marked.add_tokens(["<hd>", "</hd>"], special_tokens=True)
    text = "<hd> Paris </hd> is in France"
    encoding = marked(text)
    rows = align_entities(encoding, text, [(5, 10, 1), (23, 29, 2)])
    assert encoding.tokens() == ["[CLS]", "<hd>", "paris", "</hd>", "is", "in", "france",
                                 "[SEP]"]
    assert rows == [0, 0, 1, 0, 0, 0, 2, 0]
    # a mention covering the marker starts at the marker token
    assert align_entities(encoding, text, [(0, 10, 5)]) == [0, 5, 0, 0, 0, 0, 0, 0]


def test_pre_tokenized_input(tokenizer):
    words = ["Marie", "Curie", "was", "born", "in", "Warsaw", "."]
    encoding = tokenizer(words, is_split_into_words=True)
    rows = align_entities(encoding, words, [(0, 11, 1), (24, 30, 2)])  # on " ".join(words)
    assert [t for t, r in zip(encoding.tokens(), rows) if r] == ["marie", "warsaw"]


def test_batches_with_padding_and_pairs(tokenizer):
    texts = ["Paris is nice.", "Marie Curie was born in Warsaw."]
    encoding = tokenizer(texts, padding=True)
    rows = align_batch(encoding, texts, [[(0, 5, "p")], [(24, 30, "w")]], {"p": 1, "w": 2})
    assert [len(r) for r in rows] == [len(encoding["input_ids"][0])] * 2
    assert rows[0] == [0, 1] + [0] * (len(rows[0]) - 2)
    assert encoding.tokens(1)[rows[1].index(2)] == "warsaw"
    pair = tokenizer("Paris is nice.", "Warsaw too.")
    assert align_entities(pair, "Warsaw too.", [(0, 6, 4)], sequence_index=1).index(4) == 6
    with pytest.raises(ValueError, match="mention lists"):
        align_batch(encoding, texts, [[]])


def test_bad_input(tokenizer):
    encoding = tokenizer("Paris")
    with pytest.raises(SpanError, match="out of range"):
        align_entities(encoding, "Paris", [(0, 9, 1)])
    with pytest.raises(SpanError, match="reversed"):
        align_entities(encoding, "Paris", [(4, 1, 1)])
    with pytest.raises(SpanError, match="mention 0"):
        align_entities(encoding, "Paris", ["bogus"])
    with pytest.raises(TypeError, match="entity_rows"):
        align_entities(encoding, "Paris", [(0, 5, "paris")])
    with pytest.raises(TypeError, match="fast"):
        align_entities({"input_ids": [1]}, "Paris", [])
    empty = tokenizer("")
    assert align_entities(empty, "", []) == [0, 0]


# ----------------------------------------------------------------------------- properties
ALPHABET = "abcdeXYZ  ,.-'éüß東京😀\u200b\u0301\t"
texts = st.text(alphabet=ALPHABET, max_size=60)


@st.composite
def text_and_spans(draw):
    text = draw(texts)
    spans = []
    if text:
        for row in range(1, draw(st.integers(0, 8)) + 1):
            start = draw(st.integers(0, len(text) - 1))
            end = draw(st.integers(start + 1, len(text)))
            spans.append((start, end, row))  # distinct rows: one row, one mention
    return text, spans


def first_pieces(offsets, text, start, end):
    """Tokens that may be a span's first wordpiece: the one holding its first non-space
    char, else (that char made no token) the first token starting inside the span."""
    anchor = start
    while anchor < end and text[anchor].isspace():
        anchor += 1
    holding = [i for i, o in enumerate(offsets) if o and o[0] <= anchor < o[1]]
    if holding:
        return {holding[0]}
    after = [i for i, o in enumerate(offsets) if o and anchor <= o[0] < end]
    return {after[0]} if after else set()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=text_and_spans(), max_length=st.integers(2, 24))
def test_alignment_properties(tokenizer, data, max_length):
    text, spans = data
    full = tokenizer(text)
    rows = align_entities(full, text, spans)
    offsets = [o if s == 0 and o[1] > o[0] else None
               for o, s in zip(full["offset_mapping"] if "offset_mapping" in full
                               else full.encodings[0].offsets, full.encodings[0].sequence_ids)]
    by_row = {row: (start, end) for start, end, row in spans}
    aligned_rows = [r for r in rows if r]
    assert len(aligned_rows) == len(set(aligned_rows))  # no entity aligned twice
    kept = {s.row for s in resolve_overlaps([EntitySpan(*s) for s in spans])}
    for position, row in enumerate(rows):
        if row:
            assert row in kept  # overlapping losers never appear
            assert position in first_pieces(offsets, text, *by_row[row])
    # truncation keeps exactly the alignments whose wordpiece survives
    cut = tokenizer(text, truncation=True, max_length=max_length)
    cut_rows = align_entities(cut, text, spans)
    kept_content = len(cut["input_ids"]) - 2
    assert cut_rows[1:-1] == rows[1:1 + kept_content]
    assert cut_rows[0] == cut_rows[-1] == 0


@settings(max_examples=60, deadline=None)
@given(words=st.lists(st.text(alphabet="abcXY,é東", min_size=1, max_size=6), max_size=8),
       picks=st.lists(st.tuples(st.integers(0, 7), st.integers(1, 3)), max_size=4))
def test_pre_tokenized_matches_raw_text(tokenizer, words, picks):
    joined = " ".join(words)
    spans = []
    bounds = []
    position = 0
    for word in words:
        bounds.append((position, position + len(word)))
        position += len(word) + 1
    for row, (first, width) in enumerate(picks, start=1):
        if first < len(words):
            last = min(len(words), first + width) - 1
            spans.append((bounds[first][0], bounds[last][1], row))
    split_rows = align_entities(tokenizer(words, is_split_into_words=True), words, spans)
    raw_rows = align_entities(tokenizer(joined), joined, spans)
    assert split_rows == raw_rows
