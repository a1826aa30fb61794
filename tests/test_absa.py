"""ABSA data (Sun et al. 2019): readers, bad input, the five example constructions, the
B variants' fold-back, the SemEval dev split, and the paper's metrics on hand-made cases
whose expected values are worked out by hand in the comments."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from ernie_kg.data.absa import (
    SEMEVAL_LABELS,
    SENTIHOOD_LABELS,
    AbsaGroup,
    AbsaSentence,
    auxiliary_sentence,
    build_examples,
    fold_b_predictions,
    gold_groups,
    read_semeval2014,
    read_sentihood,
    single_classifiers,
    split_semeval2014,
)
from ernie_kg.errors import DataFormatError, SettingError
from ernie_kg.training.absa_metrics import absa_metrics, semeval_metrics, sentihood_metrics

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "absa"


def write_sentihood(path: Path, items: list) -> Path:
    path.write_text(json.dumps(items), encoding="utf-8")
    return path


def opinion(target: str, aspect: str, sentiment: str) -> dict:
    return {"target_entity": target, "aspect": aspect, "sentiment": sentiment}


SEMEVAL_XML = """<?xml version="1.0" encoding="UTF-8"?>
<sentences>
    <sentence id="s1">
        <text>The food was great but the service &amp; prices were not.</text>
        <aspectTerms><aspectTerm term="food" polarity="positive" from="4" to="8"/></aspectTerms>
        <aspectCategories>
            <aspectCategory category="food" polarity="positive"/>
            <aspectCategory category="service" polarity="negative"/>
            <aspectCategory category="anecdotes/miscellaneous" polarity="conflict"/>
        </aspectCategories>
    </sentence>
    <sentence id="s2">
        <text>We went on a Tuesday.</text>
    </sentence>
</sentences>
"""


# --- readers ------------------------------------------------------------------------------

def test_sentihood_keeps_location2_only_when_mentioned_and_ignores_other_aspects(tmp_path):
    path = write_sentihood(tmp_path / "s.json", [
        {"id": 7, "text": "  LOCATION1 is cheap, LOCATION2 is not safe",
         "opinions": [opinion("LOCATION1", "price", "Positive"),
                      opinion("LOCATION2", "safety", "Negative"),
                      opinion("LOCATION1", "shopping", "Positive")]},  # not a paper aspect
        {"id": 8, "text": "LOCATION1 is lovely", "opinions": []},
    ])
    first, second = read_sentihood(path)
    assert first.id == "7" and first.dataset == "sentihood"
    assert len(first.labels) == 8 and len(second.labels) == 4  # 2 targets x 4, 1 target x 4
    assert first.labels["LOCATION1", "price"] == "Positive"
    assert first.labels["LOCATION2", "safety"] == "Negative"
    assert first.labels["LOCATION1", "general"] == "None"
    assert ("LOCATION1", "shopping") not in first.labels
    assert set(second.labels.values()) == {"None"}


@pytest.mark.parametrize("item, words", [
    ({"id": 3, "text": "LOCATION1 and LOCATION3",
      "opinions": [opinion("LOCATION3", "general", "Positive")]},
     ["id 3", "target_entity", "LOCATION3"]),
    ({"id": 4, "text": "LOCATION1", "opinions": [opinion("LOCATION1", "price", "Neutral")]},
     ["id 4", "sentiment", "Neutral"]),
    ({"id": 5, "text": "LOCATION1", "opinions": [opinion("LOCATION2", "price", "Positive")]},
     ["id 5", "target_entity", "does not mention"]),
    ({"id": 6, "text": "no location here", "opinions": []}, ["id 6", "LOCATION1"]),
    ({"id": 9, "text": "LOCATION1", "opinions": [opinion("LOCATION1", "price", "Positive"),
                                                 opinion("LOCATION1", "price", "Negative")]},
     ["id 9", "both Positive and Negative"]),
    ({"text": "LOCATION1", "opinions": []}, ["item 0", "'id'"]),
])
def test_sentihood_bad_items_name_the_file_item_and_field(tmp_path, item, words):
    path = write_sentihood(tmp_path / "bad.json", [item])
    with pytest.raises(DataFormatError) as caught:
        read_sentihood(path)
    assert str(path) in str(caught.value)
    for word in words:
        assert word in str(caught.value)


def test_sentihood_unknown_aspect_is_ignored_not_an_error(tmp_path):
    path = write_sentihood(tmp_path / "s.json", [
        {"id": 1, "text": "LOCATION1", "opinions": [opinion("LOCATION1", "nightlife",
                                                            "Positive")]}])
    (sentence,) = read_sentihood(path)
    assert set(sentence.labels.values()) == {"None"}


def test_sentihood_bad_files(tmp_path):
    with pytest.raises(DataFormatError, match="no such SentiHood file"):
        read_sentihood(tmp_path / "absent.json")
    with pytest.raises(DataFormatError, match="empty list"):
        read_sentihood(write_sentihood(tmp_path / "empty.json", []))
    broken = tmp_path / "broken.json"
    broken.write_text('[\n{"id": 1,\n', encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"broken\.json:3"):
        read_sentihood(broken)
    twice = write_sentihood(tmp_path / "twice.json",
                            [{"id": 1, "text": "LOCATION1", "opinions": []}] * 2)
    with pytest.raises(DataFormatError, match="id 1 repeats"):
        read_sentihood(twice)


def test_semeval_reads_categories_and_keeps_a_sentence_without_any(tmp_path):
    path = tmp_path / "r.xml"
    path.write_text(SEMEVAL_XML, encoding="utf-8")
    first, second = read_semeval2014(path)
    assert first.id == "s1" and first.dataset == "semeval"
    assert first.text == "The food was great but the service & prices were not."
    assert first.labels == {(None, "food"): "positive", (None, "service"): "negative",
                            (None, "price"): "none", (None, "ambience"): "none",
                            (None, "anecdotes/miscellaneous"): "conflict"}
    assert second.labels == {(None, c): "none" for c in
                             ("food", "service", "price", "ambience",
                              "anecdotes/miscellaneous")}


def test_semeval_malformed_xml_names_file_and_line(tmp_path):
    path = tmp_path / "broken.xml"
    path.write_text("<sentences>\n  <sentence id='1'>\n    <text>hi</txt>\n</sentences>\n",
                    encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"broken\.xml:3: malformed XML") as caught:
        read_semeval2014(path)
    assert caught.value.line == 3


@pytest.mark.parametrize("attributes, words", [
    ('category="food" polarity="great"', ["'s9'", "polarity", "great"]),
    ('category="drinks" polarity="positive"', ["'s9'", "category", "drinks"]),
])
def test_semeval_unknown_polarity_or_category_names_file_sentence_and_field(
        tmp_path, attributes, words):
    path = tmp_path / "bad.xml"
    path.write_text(f'<sentences><sentence id="s9"><text>x</text><aspectCategories>'
                    f'<aspectCategory {attributes}/></aspectCategories></sentence></sentences>',
                    encoding="utf-8")
    with pytest.raises(DataFormatError) as caught:
        read_semeval2014(path)
    assert str(path) in str(caught.value)
    for word in words:
        assert word in str(caught.value)


def test_semeval_missing_file_or_text(tmp_path):
    with pytest.raises(DataFormatError, match="no such SemEval-2014 file"):
        read_semeval2014(tmp_path / "absent.xml")
    path = tmp_path / "notext.xml"
    path.write_text('<sentences><sentence id="s1"/></sentences>', encoding="utf-8")
    with pytest.raises(DataFormatError, match="'s1'.*<text>"):
        read_semeval2014(path)


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared ABSA data absent")
def test_real_files_have_the_papers_counts():
    for split, count in (("train", 2977), ("dev", 747), ("test", 1491)):
        sentences = read_sentihood(SHARED / "sentihood" / f"sentihood-{split}.json")
        assert len(sentences) == count
        # LOCATION1 always, LOCATION2 when mentioned: 4 groups per target present
        assert len(gold_groups(sentences)[0]) == 4 * sum(
            1 + ("LOCATION2" in s.text) for s in sentences)
    train = read_semeval2014(SHARED / "semeval2014" / "Restaurants_Train.xml")
    test = read_semeval2014(SHARED / "semeval2014" / "Restaurants_Test_Gold.xml")
    assert (len(train), len(test)) == (3044, 800)
    assert len(gold_groups(test)[0]) == 5 * 800


# --- builders -----------------------------------------------------------------------------

SENTIHOOD_SENTENCE = AbsaSentence(
    "12", "  LOCATION1 is near LOCATION2  ",
    {("LOCATION2", "transit-location"): "Positive", ("LOCATION2", "safety"): "None"},
    "sentihood")
SEMEVAL_SENTENCE = AbsaSentence(
    "r1", "Great food.",
    {(None, "anecdotes/miscellaneous"): "none", (None, "food"): "positive"}, "semeval")


def test_m_settings_and_single_write_the_readmes_sentences():
    text = "location - 1 is near location - 2"
    qa, nli = (build_examples([SENTIHOOD_SENTENCE], s) for s in ("qa_m", "nli_m"))
    assert [(e.text, e.text_pair, e.label) for e in qa] == [
        (text, "what do you think of the transit location of location - 2 ?", "Positive"),
        (text, "what do you think of the safety of location - 2 ?", "None")]
    assert [e.text_pair for e in nli] == ["location - 2 - transit location",
                                          "location - 2 - safety"]
    assert qa[0].group == AbsaGroup("12", "LOCATION2", "transit-location")
    qa, nli = (build_examples([SEMEVAL_SENTENCE], s) for s in ("qa_m", "nli_m"))
    assert [(e.text, e.text_pair) for e in qa] == [
        ("Great food.", "what do you think of the anecdotes of it ?"),
        ("Great food.", "what do you think of the food of it ?")]
    assert [e.text_pair for e in nli] == ["anecdotes", "food"]
    single = build_examples([SENTIHOOD_SENTENCE, SEMEVAL_SENTENCE], "single")
    assert [(e.text_pair, e.classifier, e.label) for e in single] == [
        (None, "LOCATION2:transit-location", "Positive"), (None, "LOCATION2:safety", "None"),
        (None, "anecdotes/miscellaneous", "none"), (None, "food", "positive")]
    assert len(single_classifiers("sentihood")) == 8
    assert single_classifiers("semeval") == ["food", "service", "price", "ambience",
                                             "anecdotes/miscellaneous"]


def test_b_settings_put_the_auxiliary_first_with_one_yes_no_per_label():
    qa = build_examples([SENTIHOOD_SENTENCE], "qa_b")
    assert len(qa) == 2 * 3
    assert [(e.text, e.label) for e in qa[:3]] == [
        ("the polarity of the aspect transit location of location - 2 is None .", "no"),
        ("the polarity of the aspect transit location of location - 2 is Positive .", "yes"),
        ("the polarity of the aspect transit location of location - 2 is Negative .", "no")]
    assert {e.text_pair for e in qa} == {"location - 1 is near location - 2"}
    nli = build_examples([SENTIHOOD_SENTENCE], "nli_b")
    assert [e.text for e in nli[3:]] == ["None - location - 2 - safety",
                                         "Positive - location - 2 - safety",
                                         "Negative - location - 2 - safety"]
    assert [e.label for e in nli[3:]] == ["yes", "no", "no"]
    qa = build_examples([SEMEVAL_SENTENCE], "qa_b")
    assert len(qa) == 2 * 5 and [e.candidate for e in qa[5:]] == list(SEMEVAL_LABELS)
    assert qa[5].text == "the polarity of the aspect food is positive ."
    assert (qa[5].text_pair, qa[5].label) == ("Great food.", "yes")
    nli = build_examples([SEMEVAL_SENTENCE], "nli_b")
    assert nli[4].text == "none - anecdotes" and nli[4].label == "yes"
    assert sum(e.label == "yes" for e in nli) == 2  # one yes per group


def test_bad_settings_are_refused():
    with pytest.raises(SettingError, match="qa_x"):
        build_examples([SEMEVAL_SENTENCE], "qa_x")
    with pytest.raises(SettingError, match="label"):
        auxiliary_sentence(AbsaGroup("1", None, "food"), "qa_b")


def test_b_fold_normalises_yes_probabilities_and_the_highest_wins():
    examples = build_examples([SENTIHOOD_SENTENCE], "nli_b")
    # group 1 yes: None .2, Positive .6, Negative .2 -> sum 1.0 -> .2 .6 .2 (Positive)
    # group 2 yes: .1 .1 .3 -> sum .5 -> .2 .2 .6 (Negative)
    groups, probabilities = fold_b_predictions(examples, [0.2, 0.6, 0.2, 0.1, 0.1, 0.3])
    assert groups == [AbsaGroup("12", "LOCATION2", "transit-location"),
                      AbsaGroup("12", "LOCATION2", "safety")]
    np.testing.assert_allclose(probabilities, [[0.2, 0.6, 0.2], [0.2, 0.2, 0.6]])
    assert [SENTIHOOD_LABELS[i] for i in probabilities.argmax(axis=1)] == ["Positive",
                                                                          "Negative"]
    _, zero = fold_b_predictions(examples[:3], [0.0, 0.0, 0.0])  # all zero: equal shares
    np.testing.assert_allclose(zero, [[1 / 3, 1 / 3, 1 / 3]])
    with pytest.raises(ValueError, match="expected one for each"):
        fold_b_predictions(examples[:2], [0.5, 0.5])


def test_semeval_dev_split_is_stratified_fixed_and_disjoint():
    sentences = [AbsaSentence(str(i), "x", {(None, "food"): label}, "semeval")
                 for i, label in enumerate(["positive"] * 60 + ["negative"] * 30
                                           + ["none"] * 10)]
    train, dev = split_semeval2014(sentences, dev_fraction=0.1, seed=3)
    assert len(train) + len(dev) == 100 and len(dev) == 10
    assert {s.id for s in train}.isdisjoint({s.id for s in dev})
    # 10% of each label set: 6 positive, 3 negative, 1 none
    assert Counter(s.labels[None, "food"] for s in dev) == {"positive": 6, "negative": 3,
                                                             "none": 1}
    assert split_semeval2014(sentences, 0.1, 3) == (train, dev)
    assert split_semeval2014(sentences, 0.1, 4)[1] != dev


# --- metrics -------------------------------------------------------------------------------

def sentihood_case():
    """Three (sentence, target) cases; columns None, Positive, Negative."""
    g, p, t, s = "general", "price", "transit-location", "safety"
    rows = [  # (sentence, target, aspect, gold, probabilities) -> prediction
        ("1", "LOCATION1", g, "Positive", [0.1, 0.6, 0.3]),   # Positive, right
        ("1", "LOCATION1", p, "None", [0.7, 0.2, 0.1]),       # None, right
        ("1", "LOCATION1", t, "Negative", [0.2, 0.5, 0.3]),   # Positive, wrong sentiment
        ("1", "LOCATION1", s, "None", [0.6, 0.3, 0.1]),       # None, right
        ("1", "LOCATION2", g, "None", [0.8, 0.1, 0.1]),       # all four None, right
        ("1", "LOCATION2", p, "None", [0.8, 0.1, 0.1]),
        ("1", "LOCATION2", t, "None", [0.8, 0.1, 0.1]),
        ("1", "LOCATION2", s, "None", [0.8, 0.1, 0.1]),
        ("2", "LOCATION1", g, "Negative", [0.3, 0.2, 0.5]),   # Negative, right
        ("2", "LOCATION1", p, "Positive", [0.6, 0.3, 0.1]),   # None: missed
        ("2", "LOCATION1", t, "None", [0.15, 0.35, 0.5]),     # Negative: false detection
        ("2", "LOCATION1", s, "None", [0.9, 0.05, 0.05]),     # None, right
    ]
    return ([AbsaGroup(*r[:3]) for r in rows], [r[3] for r in rows],
            np.array([r[4] for r in rows]))


def test_sentihood_metrics_by_hand():
    metrics = sentihood_metrics(*sentihood_case())
    # strict: 1/L1 wrong (transit), 1/L2 right, 2/L1 wrong -> 1/3
    assert metrics["aspect_strict_accuracy"] == pytest.approx(1 / 3)
    # macro-F1 over the cases with a gold aspect (1/L2 has none):
    # 1/L1 gold {general, transit}, pred {general, transit}: P 1, R 1
    # 2/L1 gold {general, price}, pred {general, transit}: P 1/2, R 1/2
    # P = R = 3/4 -> F1 3/4
    assert metrics["aspect_macro_f1"] == pytest.approx(0.75)
    # aspect AUC of p(None), y = gold is None:
    # general: y=1 {.8} vs y=0 {.1, .3} -> 1;  price: {.7, .8} vs {.6} -> 1
    # transit: {.8, .15} vs {.2} -> pairs (.8>.2 yes, .15>.2 no) -> 1/2
    # safety: gold all None -> no AUC, left out.  Mean (1 + 1 + .5) / 3 = 5/6
    assert metrics["aspect_auc"] == pytest.approx(5 / 6)
    # sentiment over gold non-None, score = pNeg / (pPos + pNeg):
    # 1/L1 general Positive: .3/.9 = 1/3 -> Positive, right
    # 1/L1 transit Negative: .3/.8 = .375 -> Positive, wrong
    # 2/L1 general Negative: .5/.7 = 5/7 -> Negative, right
    # 2/L1 price Positive: .1/.4 = .25 -> Positive, right      -> accuracy 3/4
    assert metrics["sentiment_accuracy"] == pytest.approx(0.75)
    # sentiment AUC: general has Positive (1/3) and Negative (5/7): 1; price and transit
    # hold one class only (left out); safety has none -> mean 1
    assert metrics["sentiment_auc"] == pytest.approx(1.0)


def test_sentihood_metrics_edge_cases():
    groups, gold, probabilities = sentihood_case()
    # every prediction None: no case has a predicted aspect -> P = R = 0 -> F1 0
    none = np.tile([1.0, 0.0, 0.0], (len(gold), 1))
    assert sentihood_metrics(groups, gold, none)["aspect_macro_f1"] == 0.0
    with pytest.raises(ValueError, match="must match"):
        sentihood_metrics(groups, gold[:-1], probabilities)
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        sentihood_metrics(groups, gold, probabilities[:, :2])


def semeval_case():
    """Four sentences; columns positive, neutral, negative, conflict, none."""
    rows = [  # (sentence, category, gold, probabilities) -> prediction
        ("a", "food", "positive", [0.6, 0.1, 0.1, 0.1, 0.1]),        # positive
        ("a", "service", "negative", [0.1, 0.35, 0.3, 0.05, 0.2]),   # neutral
        ("a", "price", "none", [0, 0, 0, 0, 1]),
        ("a", "ambience", "none", [0, 0, 0, 0, 1]),
        ("a", "anecdotes/miscellaneous", "none", [0.6, 0, 0, 0, 0.4]),  # positive (false)
        ("b", "food", "negative", [0.1, 0.05, 0.3, 0.05, 0.5]),      # none (missed)
        ("b", "service", "none", [0, 0, 0, 0, 1]),
        ("b", "price", "conflict", [0.2, 0.1, 0.1, 0.5, 0.1]),       # conflict
        ("b", "ambience", "neutral", [0.3, 0.25, 0.05, 0.0, 0.4]),   # none (missed)
        ("b", "anecdotes/miscellaneous", "none", [0, 0, 0, 0, 1]),
        ("c", "food", "none", [0.7, 0, 0, 0, 0.3]),  # no gold in c: not counted in P/R
        ("c", "service", "none", [0, 0, 0, 0, 1]),
        ("d", "service", "negative", [0.2, 0.5, 0.15, 0.05, 0.1]),   # neutral
        ("d", "food", "none", [0, 0, 0, 0, 1]),
    ]
    return ([AbsaGroup(r[0], None, r[1]) for r in rows], [r[2] for r in rows],
            np.array([r[3] for r in rows], dtype=float))


def test_semeval_metrics_by_hand():
    metrics = semeval_metrics(*semeval_case())
    # subtask 3 over a, b, d (c has no gold category):
    # a gold {food, service} pred {food, service, anecdotes}: shared 2
    # b gold {food, price, ambience} pred {price}: shared 1
    # d gold {service} pred {service}: shared 1
    # predicted 3+1+1 = 5, gold 2+3+1 = 6, shared 4: P 4/5, R 2/3
    # F1 = 2 (4/5)(2/3) / (4/5 + 2/3) = (16/15) / (22/15) = 8/11
    assert metrics["precision"] == pytest.approx(0.8)
    assert metrics["recall"] == pytest.approx(2 / 3)
    assert metrics["f1"] == pytest.approx(8 / 11)
    # 4-way over the 6 gold non-none rows (a predicted none falls to the best polarity):
    # a food pos ok; a service neutral != negative; b food none -> negative (.3) ok;
    # b price conflict ok; b ambience none -> positive (.3) != neutral; d service neutral
    # != negative -> 3/6
    assert metrics["accuracy_4way"] == pytest.approx(0.5)
    # 3-way drops gold conflict (b price): a food ok, a service neutral (.35) wrong,
    # b food negative ok, b ambience positive wrong, d service neutral wrong -> 2/5
    assert metrics["accuracy_3way"] == pytest.approx(0.4)
    # binary drops gold conflict and neutral: a food pos (.6 vs .1) ok, a service neg
    # (.3 vs .1) ok, b food neg (.3 vs .1) ok, d service pos (.2 vs .15) wrong -> 3/4
    assert metrics["accuracy_binary"] == pytest.approx(0.75)
    assert absa_metrics("semeval", *semeval_case()) == metrics
    assert set(absa_metrics("sentihood", *sentihood_case())) == {
        "aspect_strict_accuracy", "aspect_macro_f1", "aspect_auc", "sentiment_accuracy",
        "sentiment_auc"}


def test_perfect_predictions_score_one_after_the_b_fold():
    sentences = [AbsaSentence("1", "x", {(None, "food"): "negative",
                                         (None, "service"): "none",
                                         (None, "price"): "conflict"}, "semeval"),
                 AbsaSentence("2", "y", {(None, "food"): "neutral",
                                         (None, "service"): "positive",
                                         (None, "price"): "none"}, "semeval")]
    examples = build_examples(sentences, "qa_b")
    yes = [0.9 if e.label == "yes" else 0.05 for e in examples]
    groups, probabilities = fold_b_predictions(examples, yes)
    expected_groups, gold = gold_groups(sentences)
    assert groups == expected_groups
    assert set(semeval_metrics(groups, gold, probabilities).values()) == {1.0}
