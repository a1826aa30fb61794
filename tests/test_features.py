"""Feature-based use: extract_features on the models (the real packaged MiniLM, checked
against Hugging Face's hidden states) and on saved classifiers (their own processor and
linker)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from ernie_kg.errors import ErnieKGError
from ernie_kg.modeling import ErnieKGForSequenceClassification, ErnieKGModel
from ernie_kg.paths import default_backbone
from ernie_kg.pipelines import (
    PairClassifier,
    build_pair_classifier,
    build_relation_classifier,
    extract_features,
)
from ernie_kg.processing import ErnieKGProcessor

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MULTI = "Tokenization is unbelievably hard in Zürich."  # token ##ization, un ##bel ...
TEXTS = ["Paris is the capital of France.", "Hi", MULTI,
         "The EU rejects German call to boycott British lamb .", "Berlin lies on the Spree."]
ATOL = 1e-5


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(default_backbone())


@pytest.fixture(scope="module")
def processor(tokenizer) -> ErnieKGProcessor:
    return ErnieKGProcessor(tokenizer, [], max_length=64)


@pytest.fixture(scope="module")
def model() -> ErnieKGModel:
    """The packaged MiniLM as ERNIE-KG, text only (no entities)."""
    return ErnieKGModel.from_backbone(default_backbone()).eval()


@pytest.fixture(scope="module")
def reference(tokenizer):
    """Hugging Face's hidden states of each text (and of a pair), one text at a time."""
    hf = AutoModel.from_pretrained(default_backbone()).eval()

    def states(text: str, pair: str | None = None) -> tuple[torch.Tensor, ...]:
        with torch.no_grad():
            encoded = tokenizer(text, pair, return_tensors="pt")
            return tuple(h[0] for h in hf(**encoded, output_hidden_states=True).hidden_states)

    return states


# ----------------------------------------------------------------------------- layers
def test_concat_of_last_four_layers_is_hf_hidden_states(model, processor, reference):
    features = extract_features(model, processor, TEXTS, batch_size=2)
    assert len(features) == len(TEXTS)
    for text, got in zip(TEXTS, features):
        hidden = reference(text)
        expected = torch.cat([hidden[i] for i in (-1, -2, -3, -4)], -1).numpy()
        assert got.shape == expected.shape == (len(hidden[0]), 4 * 384)
        np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0)
    embeddings = extract_features(model, processor, TEXTS[:1], layers=(0,))[0]
    np.testing.assert_allclose(embeddings, reference(TEXTS[0])[0].numpy(), atol=ATOL, rtol=0)


def test_a_head_gives_its_encoders_features(model, processor):
    head = ErnieKGForSequenceClassification.from_backbone(default_backbone(), num_labels=2)
    head.train()
    got = extract_features(head, processor, TEXTS[:2], level="sentence")
    assert head.training  # its mode is given back
    np.testing.assert_allclose(
        got, extract_features(model, processor, TEXTS[:2], level="sentence"), atol=ATOL)


def test_sum_and_mean_combine_the_chosen_layers(model, processor):
    layers = (-1, -2, 3)
    single = [extract_features(model, processor, TEXTS, layers=(n,)) for n in layers]
    concat = extract_features(model, processor, TEXTS, layers=layers)
    total = extract_features(model, processor, TEXTS, layers=layers, combine="sum")
    mean = extract_features(model, processor, TEXTS, layers=layers, combine="mean")
    for k in range(len(TEXTS)):
        parts = [s[k] for s in single]
        np.testing.assert_allclose(concat[k], np.concatenate(parts, -1), atol=ATOL)
        np.testing.assert_allclose(total[k], sum(parts), atol=ATOL)
        np.testing.assert_allclose(mean[k], total[k] / 3, atol=ATOL)
        assert total[k].shape == (len(parts[0]), 384)
    # -1 and 6 are the same layer (6 layers; 0 = embeddings)
    np.testing.assert_allclose(extract_features(model, processor, TEXTS, layers=(6,))[0],
                               single[0][0], atol=ATOL)


# ----------------------------------------------------------------------------- levels
def test_token_rows_and_offsets_are_the_tokenizers(model, processor, tokenizer):
    features, offsets = extract_features(model, processor, TEXTS, return_offsets=True)
    for text, rows, spans in zip(TEXTS, features, offsets):
        encoded = tokenizer(text, return_offsets_mapping=True)
        assert len(rows) == len(encoded["input_ids"]) == len(spans)  # [CLS] ... [SEP]
        assert spans.tolist() == [list(s) for s in encoded["offset_mapping"]]


def test_words_take_their_first_wordpiece(model, processor, tokenizer):
    tokens = extract_features(model, processor, [MULTI])[0]
    words = MULTI.split()
    word_ids = tokenizer(words, is_split_into_words=True).word_ids()
    assert word_ids[1:3] == [0, 0]  # "Tokenization": two wordpieces
    first = [word_ids.index(w) for w in range(len(words))]
    assert first == [1, 3, 4, 9, 10, 11]
    by_word = extract_features(model, processor, [MULTI], level="word")[0]
    assert by_word.shape == (len(words), 4 * 384)
    np.testing.assert_array_equal(by_word, tokens[first])
    mean = extract_features(model, processor, [MULTI], level="word", word_pooling="mean")[0]
    for w in range(len(words)):
        rows = [k for k, i in enumerate(word_ids) if i == w]
        np.testing.assert_allclose(mean[w], tokens[rows].mean(0), atol=1e-6)
    split = extract_features(model, processor, words=[words, ["Hi"]], level="word")
    np.testing.assert_allclose(split[0], by_word, atol=ATOL)  # " ".join(words) is MULTI
    assert split[1].shape == (1, 4 * 384)
    assert extract_features(model, processor, ["", "  "], level="word")[1].shape == (0, 1536)


def test_sentences_keep_their_order_across_batches(model, processor):
    shuffled = [TEXTS[i] for i in (3, 1, 4, 0, 2)]
    together = extract_features(model, processor, shuffled, level="sentence", batch_size=2)
    assert together.shape == (5, 4 * 384)
    alone = np.stack([extract_features(model, processor, t, level="sentence")[0]
                      for t in shuffled])
    np.testing.assert_allclose(together, alone, atol=ATOL, rtol=0)
    tokens = extract_features(model, processor, shuffled, batch_size=2)
    np.testing.assert_array_equal(together, np.stack([t[0] for t in tokens]))  # [CLS]
    mean = extract_features(model, processor, shuffled, level="sentence",
                            sentence_pooling="mean", layers=(-1,))
    last = extract_features(model, processor, shuffled, layers=(-1,))
    np.testing.assert_allclose(mean, np.stack([t.mean(0) for t in last]), atol=1e-6)


def test_text_pairs(model, processor, reference, tokenizer):
    texts, pairs = TEXTS[:3], ["what about the capital ?", "hello", "is it ?"]
    sentences = extract_features(model, processor, texts, level="sentence",
                                 text_pairs=pairs, batch_size=2)
    expected = [torch.cat([reference(t, p)[i] for i in (-1, -2, -3, -4)], -1)[0]
                for t, p in zip(texts, pairs)]
    np.testing.assert_allclose(sentences, torch.stack(expected).numpy(), atol=ATOL, rtol=0)
    tokens, offsets = extract_features(model, processor, texts, text_pairs=pairs,
                                       return_offsets=True)
    encoded = tokenizer(texts[0], pairs[0], return_offsets_mapping=True)
    assert len(tokens[0]) == len(encoded["input_ids"])
    assert offsets[0].tolist() == [list(s) for s in encoded["offset_mapping"]]


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize(("settings", "error", "match"), [
    ({"layers": (7,)}, IndexError, "out of range: the model has 6 layers"),
    ({"layers": (-8,)}, IndexError, "6 layers"),
    ({"layers": ()}, ValueError, "non-empty"),
    ({"combine": "max"}, ValueError, "combine='max'"),
    ({"level": "document"}, ValueError, "level='document'"),
    ({"word_pooling": "last", "level": "word"}, ValueError, "word_pooling"),
    ({"sentence_pooling": "max"}, ValueError, "sentence_pooling"),
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"text_pairs": ["one"]}, ValueError, "one text per text"),
    ({"text_pairs": ["a", "b"], "level": "word"}, ValueError, "single texts"),
    ({"return_offsets": True, "level": "sentence"}, ValueError, "level='token'"),
    ({"entities": "some"}, ErnieKGError, "entities='some'"),
])
def test_bad_arguments_say_what_is_wrong(model, processor, settings, error, match):
    with pytest.raises(error, match=match):
        extract_features(model, processor, ["a text", "another"], **settings)


def test_bad_inputs_say_what_is_wrong(model, processor):
    with pytest.raises(ValueError, match="no texts"):
        extract_features(model, processor, [])
    with pytest.raises(ValueError, match="not both"):
        extract_features(model, processor, ["a b"], words=[["a", "b"]])
    with pytest.raises(ValueError, match="not neither"):
        extract_features(model, processor)
    with pytest.raises(TypeError, match="words="):
        extract_features(model, processor, [["a", "b"]])
    with pytest.raises(ErnieKGError, match="words 3-5 of 6 were truncated"):
        extract_features(model, processor, ["one two three four five six"], level="word",
                         max_length=5)
    short = extract_features(model, processor, ["one two three four five six"], max_length=5)
    assert short[0].shape[0] == 5


# ----------------------------------------------------------------------------- classifiers
@pytest.fixture(scope="module")
def pair_classifier(demo_knowledge, tiny_backbone) -> PairClassifier:
    """Untrained, entities fused at full strength (no gate), so they change the states."""
    kg, embeddings, aliases = demo_knowledge
    return build_pair_classifier(["negative", "positive"], kg, embeddings, aliases,
                                 backbone=tiny_backbone, max_length=48,
                                 num_knowledge_layers=2, knowledge_gate="none")


LINKED = ["Paris was lovely and the hotel clean .", "The room in Berlin was dirty ."]
TINY = {"layers": (-1, -2, 0)}  # the tiny backbone has two layers


@pytest.mark.parametrize("level", ["token", "word", "sentence"])
def test_a_classifier_uses_its_processor_and_linker(pair_classifier, level):
    model, processor = pair_classifier.model, pair_classifier.processor
    got = pair_classifier.extract_features(LINKED, level=level, batch_size=1, **TINY)
    expected = extract_features(model, processor, LINKED, level=level, entities="linker",
                                **TINY)
    for mine, theirs in zip(got, expected):
        np.testing.assert_allclose(mine, theirs, atol=ATOL, rtol=0)
    if level == "token":  # the linked entities reach the model, on their wordpieces
        text_only = extract_features(model, processor, LINKED, entities="none", **TINY)
        rows = processor(LINKED)["entity_ids"]
        for mine, plain, row in zip(got, text_only, rows):
            change = np.abs(mine - plain).max(1)
            assert any(row) and all(change[np.flatnonzero(row)] > 1e-3)
            assert change.max() == change[np.flatnonzero(row)].max()


def test_saved_and_text_only_classifiers(pair_classifier, demo_knowledge, tiny_backbone,
                                         tmp_path):
    pair_classifier.save(tmp_path / "pair")
    loaded = PairClassifier.load(tmp_path / "pair")
    np.testing.assert_allclose(loaded.extract_features(LINKED, level="sentence", **TINY),
                               pair_classifier.extract_features(LINKED, level="sentence",
                                                                **TINY),
                               atol=ATOL, rtol=0)
    kg, embeddings, aliases = demo_knowledge
    baseline = build_relation_classifier(["a", "b"], kg, embeddings, aliases,
                                         backbone=tiny_backbone, knowledge=False,
                                         knowledge_gate="none")
    assert baseline.entities == "none" and baseline.processor.task is not None
    got = baseline.extract_features(LINKED, level="word", **TINY)  # no head/tail needed
    expected = extract_features(baseline.model, baseline.processor, LINKED, level="word",
                                entities="none", **TINY)
    for text, mine, theirs in zip(LINKED, got, expected):
        np.testing.assert_array_equal(mine, theirs)
        assert mine.shape == (len(text.split()), 3 * 32)
    with pytest.raises(IndexError, match="the model has 2 layers"):
        baseline.extract_features(LINKED)  # the default last four: too many here
