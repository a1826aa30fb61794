"""ErnieKGProcessor: text (+ spans) to model inputs, fed to tiny random ERNIE-KG heads."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from transformers import AutoTokenizer

from ernie_kg.errors import SpanError
from ernie_kg.linking import EntityLinker
from ernie_kg.modeling import (
    ErnieKGConfig,
    ErnieKGForEntityTyping,
    ErnieKGForRelationClassification,
)
from ernie_kg.paths import default_backbone, demo_kg_dir
from ernie_kg.processing import ErnieKGProcessor

TEXT = "Marie Curie was born in Warsaw, the capital of Poland, and worked in Paris."
HEAD, TAIL = (0, 11), (24, 30)


@pytest.fixture(scope="module")
def linker(kg) -> EntityLinker:
    return EntityLinker.from_kg(kg)


@pytest.fixture(scope="module")
def rc(tokenizer, entity_ids, linker) -> ErnieKGProcessor:
    return ErnieKGProcessor(tokenizer, entity_ids, linker, task="relation_classification")


def row_of(entity_ids, entity_id):
    return entity_ids.index(entity_id) + 1


def tokens(tokenizer, ids):
    return tokenizer.convert_ids_to_tokens(ids)


def entities_at(tokenizer, features, entity_ids):
    """(wordpiece, KG id) of every position that carries an entity."""
    return [(t, entity_ids[r - 1]) for t, r in
            zip(tokens(tokenizer, features["input_ids"]), features["entity_ids"]) if r]


# ----------------------------------------------------------------------------- outputs
def test_relation_classification_single(rc, tokenizer, entity_ids):
    features = rc(TEXT, head=HEAD, tail=TAIL)
    assert set(features) == {"input_ids", "token_type_ids", "attention_mask", "entity_ids",
                             "marker_positions"}
    pieces = tokens(tokenizer, features["input_ids"])
    assert pieces[:12] == ["[CLS]", "#", "marie", "cu", "##rie", "#", "was", "born", "in",
                           "$", "warsaw", "$"]
    assert features["marker_positions"] == [1, 9]
    # head and tail plus the other linked mentions, each on its first wordpiece only
    assert entities_at(tokenizer, features, entity_ids) == [
        ("marie", "marie_curie"), ("warsaw", "warsaw"), ("poland", "poland"),
        ("paris", "paris")]
    assert len(features["input_ids"]) == len(features["entity_ids"]) == sum(
        features["attention_mask"])


def test_gold_ids_override_the_linker(rc, tokenizer, entity_ids):
    features = rc(TEXT, head=HEAD, tail=TAIL, head_id="albert_einstein", tail_id="not_in_kg")
    assert entities_at(tokenizer, features, entity_ids)[:2] == [
        ("marie", "albert_einstein"), ("poland", "poland")]  # unknown id: no entity


def test_given_spans_and_ids_skip_the_linker(tokenizer, entity_ids):
    processor = ErnieKGProcessor(tokenizer, entity_ids)  # no linker, no task
    features = processor(TEXT, entity_spans=[(24, 30), (69, 74), (0, 5)],
                         entity_ids=["warsaw", row_of(entity_ids, "paris"), None])
    assert "marker_positions" not in features
    assert entities_at(tokenizer, features, entity_ids) == [("warsaw", "warsaw"),
                                                             ("paris", "paris")]
    with pytest.raises(ValueError, match="linker"):
        processor(TEXT, entity_spans=[(0, 5)])
    assert not any(processor(TEXT)["entity_ids"])  # nothing to link with


def test_batch_pads_every_field(rc, tokenizer, entity_ids):
    texts = [TEXT, "Georgia borders Russia."]
    batch = rc(texts, head=[HEAD, (0, 7)], tail=[TAIL, (16, 22)], return_tensors="pt")
    shape = batch["input_ids"].shape
    assert shape[0] == 2
    for name in ("token_type_ids", "attention_mask", "entity_ids"):
        assert batch[name].shape == shape and batch[name].dtype == torch.long
    assert batch["marker_positions"].shape == (2, 2)
    short = int(batch["attention_mask"][1].sum())
    assert short < shape[1]
    assert batch["input_ids"][1, short:].eq(tokenizer.pad_token_id).all()
    assert batch["entity_ids"][1, short:].eq(0).all()
    marks = tokens(tokenizer, batch["input_ids"][1][batch["marker_positions"][1]].tolist())
    assert marks == ["#", "$"]
    georgia = batch["entity_ids"][1][2].item()
    assert entity_ids[georgia - 1] == "georgia"  # the country, next to Russia
    single = rc(texts[1], head=(0, 7), tail=(16, 22), return_tensors="pt")
    assert torch.equal(single["input_ids"][0], batch["input_ids"][1, :short])


def test_padding_options(rc):
    fixed = rc("Paris is in France.", head=(0, 5), tail=(12, 18), padding="max_length",
               max_length=32)
    assert len(fixed["input_ids"]) == 32 and fixed["entity_ids"][-1] == 0
    ragged = rc(["Paris is in France.", TEXT], head=[(0, 5), HEAD], tail=[(12, 18), TAIL],
                padding=False)
    assert len(ragged["input_ids"][0]) < len(ragged["input_ids"][1])
    with pytest.raises(ValueError, match="padding"):
        rc("Paris", head=(0, 5), tail=(0, 5), padding="sideways")


def test_left_padding_shifts_marker_positions(tokenizer, entity_ids):
    left = AutoTokenizer.from_pretrained(default_backbone(), padding_side="left")
    processor = ErnieKGProcessor(left, entity_ids, task="relation_classification")
    batch = processor(["Paris is in France.", TEXT], head=[(0, 5), HEAD],
                      tail=[(12, 18), TAIL], head_id=["paris", None])
    ids, marks = batch["input_ids"][0], batch["marker_positions"][0]
    assert ids[0] == left.pad_token_id
    assert tokens(left, [ids[m] for m in marks]) == ["#", "$"]


def test_truncation_keeps_the_marked_spans(rc, tokenizer, entity_ids):
    filler = "and then it rained for a long time " * 12
    text = filler + TEXT + " " + filler
    offset = len(filler)
    features = rc(text, head=(offset, offset + 11), tail=(offset + 24, offset + 30),
                  max_length=24)
    assert len(features["input_ids"]) == 24
    pieces = tokens(tokenizer, features["input_ids"])
    assert [pieces[m] for m in features["marker_positions"]] == ["#", "$"]
    found = entities_at(tokenizer, features, entity_ids)
    assert ("marie", "marie_curie") in found and ("warsaw", "warsaw") in found
    # head and tail too far apart for one window: each start marker and its entity stay
    far = TEXT[:11] + " " + filler + TEXT[11:]
    tail_start = far.index("Warsaw")
    features = rc(far, head=HEAD, tail=(tail_start, tail_start + 6), max_length=16)
    pieces = tokens(tokenizer, features["input_ids"])
    assert len(pieces) == 16 and pieces[0] == "[CLS]" and pieces[-1] == "[SEP]"
    assert [pieces[m] for m in features["marker_positions"]] == ["#", "$"]
    assert [t for t, _ in entities_at(tokenizer, features, entity_ids)][:2] == [
        "marie", "warsaw"]
    untruncated = rc(text, head=(offset, offset + 11), tail=(offset + 24, offset + 30),
                     truncation=False)
    assert len(untruncated["input_ids"]) > 100


def test_entity_typing(tokenizer, entity_ids, linker):
    typing = ErnieKGProcessor(tokenizer, entity_ids, linker, task="entity_typing")
    features = typing(["Atlanta is the capital of Georgia.", "Paris"],
                      mention=[(26, 33), (0, 5)], return_tensors="pt")
    assert features["marker_positions"].shape == (2, 1)
    first = features["input_ids"][0]
    assert tokens(tokenizer, [first[features["marker_positions"][0, 0]]]) == ["@"]
    rows = features["entity_ids"][0]
    assert entity_ids[int(rows[features["marker_positions"][0, 0] + 1]) - 1] == (
        "georgia_us_state")


def test_pre_tokenized_input(rc, tokenizer, entity_ids):
    words = TEXT.replace(",", " ,").replace(".", " .").split()
    features = rc(words, head=(0, 2), tail=(5, 6), is_split_into_words=True)
    assert tokens(tokenizer, features["input_ids"])[:6] == ["[CLS]", "#", "marie", "cu",
                                                            "##rie", "#"]
    assert entities_at(tokenizer, features, entity_ids)[:2] == [("marie", "marie_curie"),
                                                                 ("warsaw", "warsaw")]
    with pytest.raises(SpanError, match="token"):
        rc(words, head=(0, 99), tail=(5, 6), is_split_into_words=True)


def test_nested_head_and_tail(rc, tokenizer):
    text = "The University of Paris is old."
    features = rc(text, head=(4, 23), tail=(18, 23))
    pieces = tokens(tokenizer, features["input_ids"])
    assert pieces[1:10] == ["the", "#", "university", "of", "$", "paris", "$", "#", "is"]
    same = rc("Paris", head=(0, 5), tail=(0, 5))
    assert tokens(tokenizer, same["input_ids"]) == ["[CLS]", "#", "$", "paris", "$", "#",
                                                    "[SEP]"]
    assert same["marker_positions"] == [1, 2]


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("kwargs,message", [
    ({"head": (0, 11), "tail": (24, 300)}, "tail .*out of range"),
    ({"head": (11, 0), "tail": TAIL}, "head .*reversed"),
    ({"head": (11, 12), "tail": TAIL}, "head .*whitespace"),
    ({"head": (0, 11)}, "tail span is required"),
    ({"head": (0, 8), "tail": (6, 11)}, "overlap"),
    ({"head": HEAD, "tail": TAIL, "entity_spans": [(0, 99)], "entity_ids": ["x"]},
     r"entity_spans\[0\]"),
    ({"head": HEAD, "tail": TAIL, "entity_spans": [(0, 5)], "entity_ids": ["x", "y"]},
     "as long as"),
])
def test_span_errors_say_which_span(rc, kwargs, message):
    with pytest.raises(SpanError, match=message) as error:
        rc(TEXT, **kwargs)
    assert isinstance(error.value, ValueError)


def test_other_errors(rc, tokenizer, entity_ids):
    with pytest.raises(ValueError, match="text 1"):
        rc([TEXT, TEXT], head=[HEAD, HEAD], tail=[TAIL, (5, 2)])
    with pytest.raises(ValueError, match="one entry per text"):
        rc([TEXT, TEXT], head=[HEAD], tail=[TAIL, TAIL])
    with pytest.raises(ValueError, match="mention was given"):
        rc(TEXT, head=HEAD, tail=TAIL, mention=(0, 5))
    with pytest.raises(ValueError, match="task"):
        ErnieKGProcessor(tokenizer, entity_ids, task="ner")
    with pytest.raises(ValueError, match="marker head_start"):
        ErnieKGProcessor(tokenizer, entity_ids, task="relation_classification",
                         markers={"head_start": "[HD]"})


# ----------------------------------------------------------------------------- model
def tiny(cls, tokenizer, entity_ids, **fields):
    torch.manual_seed(0)
    config = ErnieKGConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=4, intermediate_size=37,
                           max_position_embeddings=128, entity_dim=8, entity_attention_heads=2,
                           num_entities=len(entity_ids), num_knowledge_layers=1,
                           num_labels=3, **fields)
    return cls(config).eval()


@pytest.mark.parametrize("classifier", ["cls", "markers"])
def test_feeds_relation_classification(rc, tokenizer, entity_ids, classifier):
    torch.set_num_threads(1)
    model = tiny(ErnieKGForRelationClassification, tokenizer, entity_ids,
                 rc_classifier=classifier)
    batch = rc([TEXT, "Georgia borders Russia."], head=[HEAD, (0, 7)],
               tail=[TAIL, (16, 22)], return_tensors="pt")
    output = model(**batch, labels=torch.tensor([0, 2]))
    assert output.logits.shape == (2, 3) and torch.isfinite(output.loss)
    single = model(**rc("Georgia borders Russia.", head=(0, 7), tail=(16, 22),
                        return_tensors="pt"))
    assert torch.allclose(single.logits[0], output.logits[1], atol=1e-5)


def test_feeds_entity_typing(tokenizer, entity_ids, linker):
    model = tiny(ErnieKGForEntityTyping, tokenizer, entity_ids, typing_classifier="markers")
    typing = ErnieKGProcessor(tokenizer, entity_ids, linker, task="entity_typing")
    batch = typing(["Atlanta is the capital of Georgia.", "Paris"],
                   mention=[(26, 33), (0, 5)], return_tensors="pt")
    output = model(**batch, labels=torch.tensor([[1.0, 0, 1], [0, 1, 0]]))
    assert output.logits.shape == (2, 3) and torch.isfinite(output.loss)


# ----------------------------------------------------------------------------- storage
def test_save_and_load(rc, kg, tmp_path, entity_ids):
    rc.save_pretrained(tmp_path)
    loaded = ErnieKGProcessor.from_pretrained(tmp_path, kg=str(demo_kg_dir()))
    assert (loaded.task, loaded.max_length, loaded.markers) == (rc.task, rc.max_length,
                                                                 rc.markers)
    assert loaded.linker is not None
    expected = rc(TEXT, head=HEAD, tail=TAIL)
    assert dict(loaded(TEXT, head=HEAD, tail=TAIL)) == dict(expected)
    function_rows = ErnieKGProcessor(rc.tokenizer, lambda e: 1 if e == "paris" else None,
                                     task="entity_typing", max_length=64)
    function_rows.save_pretrained(tmp_path / "typing")
    with pytest.raises(ValueError, match="entity_rows"):
        ErnieKGProcessor.from_pretrained(tmp_path / "typing")
    typed = ErnieKGProcessor.from_pretrained(tmp_path / "typing", entity_rows={"paris": 1})
    assert typed.task == "entity_typing" and typed.max_length == 64 and typed.linker is None
    assert typed("Paris", mention=(0, 5), mention_id="paris")["entity_ids"] == [0, 0, 1, 0, 0]
    copied = pickle.loads(pickle.dumps(typed))  # data loader workers may pickle it
    assert copied("Paris", mention=(0, 5), mention_id="paris") == typed(
        "Paris", mention=(0, 5), mention_id="paris")


def test_entity_links_mark_the_entities_the_kg_connects(tokenizer, entity_ids, kg, linker,
                                                        tmp_path):
    links = ErnieKGProcessor(tokenizer, entity_ids, linker, task="relation_classification",
                             entity_links=True)
    features = links(TEXT, head=HEAD, tail=TAIL)
    # demo KG: Curie born in Warsaw, Warsaw capital of Poland; no fact links Paris to them
    marked = {entity_ids[r - 1]: flag for r, flag in zip(features["entity_ids"],
                                                        features["entity_links"]) if r}
    assert marked == {"marie_curie": 1, "warsaw": 1, "poland": 1, "paris": 0}
    assert not any(f for r, f in zip(features["entity_ids"], features["entity_links"]) if not r)
    pair = links(["Georgia borders Russia.", "Paris is in France."], head=[(0, 7), (0, 5)],
                 tail=[(16, 22), (12, 18)], head_id=["georgia", "paris"],
                 tail_id=["not_in_kg", "france"], return_tensors="pt")
    assert pair["entity_links"].shape == pair["entity_ids"].shape
    assert pair["entity_links"][0].sum() == 0  # one entity: nothing to be linked to
    assert pair["entity_links"][1].sum() == 2  # Paris -country-> France
    gold_only = copy.copy(links)  # as training features with gold ids switch linking off
    gold_only.linker = None
    gold = gold_only(TEXT, head=HEAD, tail=TAIL, head_id="marie_curie", tail_id="warsaw")
    assert [f for r, f in zip(gold["entity_ids"], gold["entity_links"]) if r] == [1, 1]
    links.save_pretrained(tmp_path)
    loaded = ErnieKGProcessor.from_pretrained(tmp_path, kg=str(demo_kg_dir()))
    assert dict(loaded(TEXT, head=HEAD, tail=TAIL)) == dict(features)
    assert "entity_links" not in rc_features(tokenizer, entity_ids, linker)
    with pytest.raises(ValueError, match="entity_links=True needs a linker"):
        ErnieKGProcessor(tokenizer, entity_ids, entity_links=True)


def test_entity_links_need_a_fact_between_two_different_entities():
    from ernie_kg.processing.entities import entity_links

    facts = {"a": {"b"}, "b": {"a"}, "c": set()}
    ids = {1: "a", 2: "b", 3: "c", 4: None}.get
    assert entity_links([0, 1, 0, 3, 2, 4], ids, facts.get) == [0, 1, 0, 0, 1, 0]
    assert entity_links([1, 1, 3], ids, facts.get) == [0, 0, 0]  # the same entity twice
    assert entity_links([], ids, facts.get) == []


def rc_features(tokenizer, entity_ids, linker):
    return ErnieKGProcessor(tokenizer, entity_ids, linker, task="relation_classification")(
        TEXT, head=HEAD, tail=TAIL)


def test_raw_text_is_disambiguated_once(tokenizer, entity_ids, kg):
    """Task spans without ids and the text's other mentions are linked in one pass."""
    linker = EntityLinker.from_kg(kg)
    calls = []
    rank = linker.disambiguator.rank
    linker.disambiguator.rank = lambda *args, **kwargs: calls.append(1) or rank(*args, **kwargs)
    processor = ErnieKGProcessor(tokenizer, entity_ids, linker, task="relation_classification")
    features = processor(TEXT, head=HEAD, tail=TAIL)
    assert len(calls) == 1
    linked = {kg_id for _, kg_id in entities_at(tokenizer, features, entity_ids)}
    assert {"warsaw", "poland", "paris"} <= linked
    calls.clear()
    processor(TEXT, head=HEAD, tail=TAIL, head_id="marie_curie", tail_id="warsaw")
    assert len(calls) == 1  # ids given: only the text's own mentions are linked


def test_explicit_zero_on_a_task_span_means_no_entity(rc, tokenizer, entity_ids):
    features = rc(TEXT, head=HEAD, tail=TAIL, entity_spans=[HEAD], entity_ids=[0],
                  tail_id="warsaw")
    assert [kg_id for _, kg_id in entities_at(tokenizer, features, entity_ids)] == ["warsaw"]
