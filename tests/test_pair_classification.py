"""Sentence pairs: the processor's segments, ErnieKGForSequenceClassification (with no
entities, exactly BERT's pair classifier on the packaged MiniLM) and PairClassifier."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    AutoModelForSequenceClassification,
    BertForSequenceClassification,
)

from ernie_kg.data.collator import ErnieKGCollator
from ernie_kg.data.examples import PairExample
from ernie_kg.kg import EntityEmbeddings
from ernie_kg.linking import EntityLinker
from ernie_kg.modeling import (
    ErnieKGForRelationClassification,
    ErnieKGForSequenceClassification,
)
from ernie_kg.paths import default_backbone
from ernie_kg.pipelines import PairClassifier, build_pair_classifier
from ernie_kg.processing import ErnieKGProcessor, align_entities
from ernie_kg.processing.templates import longest_first

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REVIEW = "The food was great but the service slow."
QUESTION = "what do you think of the service ?"
BIO = "Marie Curie was born in Warsaw and worked in Paris ."


@pytest.fixture(scope="module")
def linked(tokenizer, entity_ids, kg) -> ErnieKGProcessor:
    return ErnieKGProcessor(tokenizer, entity_ids, EntityLinker.from_kg(kg))


def entities_at(tokenizer, features, entity_ids):
    """(wordpiece, segment id, KG id) of every position that carries an entity."""
    pieces = tokenizer.convert_ids_to_tokens(features["input_ids"])
    return [(t, s, entity_ids[r - 1]) for t, s, r in
            zip(pieces, features["token_type_ids"], features["entity_ids"]) if r]


# ----------------------------------------------------------------------------- processor
def test_pair_segments_are_berts(tokenizer, entity_ids):
    processor = ErnieKGProcessor(tokenizer, entity_ids)
    features = processor(REVIEW, QUESTION)
    reference = tokenizer(REVIEW, QUESTION)
    assert features["input_ids"] == reference["input_ids"]
    assert features["token_type_ids"] == reference["token_type_ids"]
    pieces = tokenizer.convert_ids_to_tokens(features["input_ids"])
    first = len(tokenizer.tokenize(REVIEW))
    assert pieces[0] == "[CLS]" and pieces[first + 1] == "[SEP]" and pieces[-1] == "[SEP]"
    assert features["token_type_ids"] == [0] * (first + 2) + [1] * (len(pieces) - first - 2)
    assert not any(features["entity_ids"])  # no linker: no entities
    batch = processor([REVIEW, "Short."], text_pair=[QUESTION, "Is it?"],
                      return_tensors="pt")
    padded = tokenizer([REVIEW, "Short."], [QUESTION, "Is it?"], padding=True,
                       return_tensors="pt")
    for name in ("input_ids", "token_type_ids", "attention_mask"):
        assert torch.equal(batch[name], padded[name]), name
    assert batch["entity_ids"].shape == batch["input_ids"].shape


def test_entities_of_segment_b_sit_on_their_first_wordpiece(linked, tokenizer, entity_ids):
    features = linked(QUESTION, BIO)
    assert entities_at(tokenizer, features, entity_ids) == [
        ("marie", 1, "marie_curie"), ("warsaw", 1, "warsaw"), ("paris", 1, "paris")]
    # the same rows as aligning on BERT's own pair encoding (offsets relative to text_pair)
    mentions = [(0, 11, "marie_curie"), (24, 30, "warsaw"), (45, 50, "paris")]
    expected = align_entities(tokenizer(QUESTION, BIO), BIO, mentions, entity_ids,
                              sequence_index=1)
    assert features["entity_ids"] == expected
    both = linked(BIO, BIO)  # each segment linked on its own
    assert [s for _, s, _ in entities_at(tokenizer, both, entity_ids)] == [0, 0, 0, 1, 1, 1]
    # given spans per segment, no linker: LUKE's entity_spans / entity_spans_pair
    plain = ErnieKGProcessor(tokenizer, entity_ids)
    given = plain(BIO, BIO, entity_spans=[(45, 50)], entity_ids=["paris"],
                  entity_spans_pair=[(24, 30)], entity_ids_pair=["warsaw"])
    assert entities_at(tokenizer, given, entity_ids) == [("paris", 0, "paris"),
                                                         ("warsaw", 1, "warsaw")]
    with pytest.raises(ValueError, match="without text_pair"):
        plain(BIO, entity_spans_pair=[(0, 5)], entity_ids_pair=["paris"])
    with pytest.raises(ValueError, match="one entry per text"):
        plain([BIO, BIO], text_pair=QUESTION)
    with pytest.raises(ValueError, match="no task spans"):
        ErnieKGProcessor(tokenizer, entity_ids, task="entity_typing")(
            BIO, QUESTION, mention=(0, 11))


@pytest.mark.parametrize("first, second", [(BIO * 4, QUESTION), (QUESTION, BIO * 4),
                                           (BIO * 3, BIO * 3)])
def test_truncation_keeps_both_segments_longest_first(linked, tokenizer, entity_ids, first,
                                                      second):
    for max_length in (8, 13, 24, 41):
        features = linked(first, second, max_length=max_length)
        reference = tokenizer(first, second, truncation="longest_first",
                              max_length=max_length)
        assert features["input_ids"] == reference["input_ids"], max_length
        assert features["token_type_ids"] == reference["token_type_ids"]
        types = features["token_type_ids"]
        assert len(types) == max_length and 0 < types.count(1) < max_length - 2
        untruncated = linked(first, second)
        kept = [(t, s, e) for t, s, e in entities_at(tokenizer, untruncated, entity_ids)]
        found = entities_at(tokenizer, features, entity_ids)
        assert set(found) <= set(kept)  # an entity stays on its wordpiece or goes with it
    assert longest_first(40, 5, 10) == (5, 5) and longest_first(3, 40, 10) == (3, 7)
    with pytest.raises(ValueError, match="too few to keep both segments"):
        linked(first, second, max_length=4)


# ----------------------------------------------------------------------------- model
def test_no_entities_is_berts_pair_classifier(tokenizer, linked, entity_ids):
    """The packaged MiniLM: with no entities ErnieKGForSequenceClassification computes
    BertForSequenceClassification's logits and loss for a text pair (token_type_ids 0/1);
    untrained, its closed gates keep that true with the linker's entities too."""
    path = default_backbone()
    model = ErnieKGForSequenceClassification.from_backbone(
        path, num_knowledge_layers=3, num_entities=len(entity_ids), num_labels=3)
    model.eval()
    reference = BertForSequenceClassification.from_pretrained(path, num_labels=3).eval()
    reference.classifier.load_state_dict(model.classifier.state_dict())
    assert torch.equal(reference.bert.pooler.dense.weight,
                       model.ernie.pooler.dense.weight)  # the backbone's pooler, loaded
    encoded = tokenizer([REVIEW, BIO], [QUESTION, "who was she ?"], padding=True,
                        return_tensors="pt")
    assert encoded["token_type_ids"].any()
    labels = torch.tensor([2, 0])
    with torch.no_grad():
        expected = reference(**encoded, labels=labels)
        off = model(**encoded, labels=labels)
        zeros = model(**encoded, entity_ids=torch.zeros_like(encoded["input_ids"]))
        inputs = linked([REVIEW, BIO], [QUESTION, "who was she ?"], return_tensors="pt")
        assert inputs["entity_ids"].any()
        gated = model(**inputs)
    torch.testing.assert_close(off.logits, expected.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(off.loss, expected.loss, atol=1e-5, rtol=0)
    torch.testing.assert_close(zeros.logits, expected.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(gated.logits, expected.logits, atol=1e-5, rtol=0)
    assert model.config.problem_type == "single_label_classification"


def test_regression_with_one_label_as_bert(tiny_backbone):
    model = ErnieKGForSequenceClassification.from_backbone(tiny_backbone, num_labels=1,
                                                           num_knowledge_layers=1)
    input_ids = torch.randint(1000, 2000, (3, 6))
    targets = torch.tensor([0.5, -1.0, 2.0])
    output = model(input_ids, labels=targets)
    assert model.config.problem_type == "regression"
    expected = torch.nn.functional.mse_loss(output.logits.squeeze(-1), targets)
    torch.testing.assert_close(output.loss, expected)
    batch = ErnieKGCollator()([{"input_ids": [101, 7, 102], "labels": 0.5},
                               {"input_ids": [101, 102], "labels": -1.0}])
    assert batch["labels"].tolist() == [0.5, -1.0]  # scores are not cut to class ids


def test_auto_class_loads_sequence_and_relation_classifiers(tiny_backbone, tmp_path):
    table = EntityEmbeddings.random([f"Q{i}" for i in range(6)], dim=8)
    model = ErnieKGForSequenceClassification.from_backbone(
        tiny_backbone, table, num_knowledge_layers=1, entity_attention_heads=2,
        id2label={0: "no", 1: "yes"}).eval()
    model.save_pretrained(tmp_path / "pair")
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "pair").eval()
    assert type(loaded) is ErnieKGForSequenceClassification
    assert loaded.config.id2label == {0: "no", 1: "yes"}
    input_ids = torch.randint(1000, 2000, (2, 7))
    entity_ids = torch.zeros_like(input_ids)
    entity_ids[0, 2] = 3
    with torch.no_grad():
        assert torch.equal(model(input_ids, entity_ids=entity_ids).logits,
                           loaded(input_ids, entity_ids=entity_ids).logits)
    # relation classifiers, saved before the Auto class moved, still load as themselves
    relation = ErnieKGForRelationClassification.from_backbone(
        tiny_backbone, table, num_knowledge_layers=1, entity_attention_heads=2,
        num_labels=4, rc_classifier="markers")
    relation.save_pretrained(tmp_path / "rc")
    auto = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rc")
    assert type(auto) is ErnieKGForRelationClassification and auto.use_markers
    assert isinstance(auto, ErnieKGForSequenceClassification)


# ----------------------------------------------------------------------------- pipeline
def test_fit_save_load_predict_from_raw_text(demo_knowledge, tmp_path):
    kg, embeddings, aliases = demo_knowledge
    classifier = build_pair_classifier(["negative", "positive"], kg, embeddings, aliases,
                                       seed=0, max_length=48, num_knowledge_layers=2)
    train = [
        PairExample("The food was great .", "what do you think of the food ?", "positive"),
        PairExample("The service was slow .", "what do you think of the service ?",
                    "negative"),
        PairExample("Paris was lovely and the hotel clean .", "the hotel ?", "positive"),
        PairExample("The room in Berlin was dirty .", "the room ?", "negative"),
        PairExample("Great staff .", None, "positive"),
        PairExample("Rude staff .", None, "negative"),
    ]
    metrics = classifier.fit(train, train[:4], tmp_path / "run", epochs=2, batch_size=3,
                             learning_rate=1e-4, progress=False, logging_steps=1)
    assert {"accuracy", "macro_f1", "dev_entities_per_example"} <= set(metrics)
    assert metrics["train_entities_per_example"] > 0  # Paris, Berlin linked
    items = [(REVIEW, QUESTION), ("Great staff .", None), "Rude staff ."]
    before = [classifier.predict_proba(*item) if isinstance(item, tuple) else
              classifier.predict_proba(item) for item in items]
    loaded = PairClassifier.load(tmp_path / "run" / "model")
    assert loaded.labels == ("negative", "positive") and loaded.entities == "linker"
    label, probability = loaded.predict("The food was great but the service slow.",
                                        text_pair="what do you think of the service ?")
    assert label in loaded.labels and 0.5 <= probability <= 1.0
    after = [loaded.predict_proba(*item) if isinstance(item, tuple) else
             loaded.predict_proba(item) for item in items]
    for old, new in zip(before, after):
        assert list(old) == list(new)
        assert list(new.values()) == pytest.approx(list(old.values()), abs=1e-6)
    batch = loaded.predict_batch(items)  # single texts and pairs in one batch
    assert [b[0] for b in batch] == [next(iter(p)) for p in after]
    assert [b[1] for b in batch] == pytest.approx([max(p.values()) for p in after], abs=1e-6)
    auto = AutoModelForSequenceClassification.from_pretrained(tmp_path / "run" / "model")
    assert type(auto) is ErnieKGForSequenceClassification
    with pytest.raises(TypeError, match="text_pair as a str"):
        loaded.predict(REVIEW, text_pair=["not", "a", "str"])
