"""The entity linker on the bundled demo KG: mentions, disambiguation, NIL, given spans,
pre-tokenized input, storage, bad input, the spaCy component and the ``link`` CLI."""

from __future__ import annotations

import json
import time

import pytest
import spacy
from spacy.tokens import Doc
from typer.testing import CliRunner

from ernie_kg.cli import app
from ernie_kg.errors import DataFormatError, SpanError
from ernie_kg.kg import KnowledgeGraph
from ernie_kg.linking import AliasTable, ContextModel, EntityLinker, LinkedMention
from ernie_kg.paths import demo_kg_dir


@pytest.fixture(scope="module")
def kg() -> KnowledgeGraph:
    return KnowledgeGraph.load(demo_kg_dir())


@pytest.fixture(scope="module")
def linker(kg) -> EntityLinker:
    return EntityLinker.from_kg(kg)


def ids(mentions: list[LinkedMention]) -> list[tuple[str, str | None]]:
    return [(m.text, m.entity_id) for m in mentions]


# ----------------------------------------------------------------------------- raw text
def test_mentions_have_ids_and_half_open_offsets(linker):
    text = "Marie Curie was born in Warsaw, the capital of Poland."
    found = linker(text)
    assert ids(found) == [("Marie Curie", "marie_curie"), ("Warsaw", "warsaw"),
                          ("Poland", "poland")]
    for mention in found:
        assert text[mention.start:mention.end] == mention.text
        assert mention.candidates[0][0] == mention.entity_id
        # the linker builds them without the named tuple's __new__: all fields are there
        assert mention == LinkedMention(*mention[:6]) and mention.token_start is None
    assert (found[0].start, found[0].end) == (0, 11)


def test_longest_alias_wins(linker):
    found = linker("She moved to New York City last year.")
    assert ids(found) == [("New York City", "new_york_city")]


@pytest.mark.parametrize("text,surface,coherent,prior", [
    ("Atlanta is the capital of Georgia.", "Georgia", "georgia_us_state", "georgia"),
    ("Cambridge is in England.", "Cambridge", "cambridge", "cambridge_massachusetts"),
    ("The Amazon flows through Brazil.", "Amazon", "river_amazon", "amazon"),
])
def test_coherence_beats_the_prior(linker, text, surface, coherent, prior):
    full = dict(ids(linker(text)))
    prior_only = dict(ids(linker.replace(coherence_weight=0.0)(text)))
    assert full[surface] == coherent
    assert prior_only[surface] == prior


def test_nil_threshold(linker):
    text = "Atlanta is the capital of Georgia."
    strict = dict(ids(linker.replace(nil_threshold=0.999)(text)))
    assert strict == {"Atlanta": "atlanta", "Georgia": None}  # ambiguous: below 0.999
    nil = [m for m in linker.replace(nil_threshold=0.999)(text) if m.is_nil][0]
    assert nil.candidates and nil.score < 0.999
    assert dict(ids(linker.replace(nil_threshold=0.0)(text)))["Georgia"] == "georgia_us_state"


def test_pipe_matches_single_calls(linker):
    texts = ["Paris is in France.", "", "Jeff Bezos founded Amazon.", "nothing here"]
    assert list(linker.pipe(texts, batch_size=2)) == [linker(t) for t in texts]


# ----------------------------------------------------------------------------- given input
def test_pre_tokenized_input(linker):
    tokens = ["Marie", "Curie", "was", "born", "in", "Warsaw", "."]
    found = linker.link_tokens(tokens)
    assert [(m.token_start, m.token_end, m.entity_id) for m in found] == [
        (0, 2, "marie_curie"), (5, 6, "warsaw")]
    joined = " ".join(tokens)
    assert all(joined[m.start:m.end] == m.text for m in found)
    with pytest.raises(TypeError, match="tokens"):
        linker.link_tokens("Marie Curie")


def test_link_spans_disambiguates_together(linker):
    text = "Atlanta is the capital of Georgia."
    head, tail = linker.link_spans(text, [(0, 7), (26, 33)])
    assert (head.entity_id, tail.entity_id) == ("atlanta", "georgia_us_state")
    assert (tail.start, tail.end, tail.text) == (26, 33, "Georgia")
    # a span that is no alias is NIL, not an error
    assert linker.link_spans(text, [(11, 14)])[0].entity_id is None
    tokens = text[:-1].split() + ["."]
    linked = linker.link_token_spans(tokens, [(0, 1), (5, 6)])
    assert [(m.token_start, m.entity_id) for m in linked] == [(0, "atlanta"),
                                                            (5, "georgia_us_state")]


def test_save_and_load(linker, kg, tmp_path):
    tuned = linker.replace(nil_threshold=0.4, coherence_weight=2.0)
    tuned.save(tmp_path / "linker")
    loaded = EntityLinker.load(tmp_path / "linker", kg=kg)
    assert loaded.config == tuned.config
    text = "Atlanta is the capital of Georgia. Tesla was founded by Elon Musk."
    assert loaded(text) == tuned(text)
    assert len(loaded.aliases) == len(linker.aliases)


# ----------------------------------------------------------------------------- back-offs
@pytest.fixture(scope="module")
def corpus_linker() -> EntityLinker:
    """Aliases and context profiles from a few annotated sentences (FewRel style)."""
    aliases = AliasTable()
    for surface, entity_id, count in [
        ("World Trade Organization", "wto", 2), ("linguistic", "linguistics", 1),
        ("Major General", "mg_au", 2), ("Major General", "mg_us", 3),
        ("Australian Army", "au_army", 1), ("United States Army", "us_army", 1),
    ]:
        aliases.add(surface, entity_id, count)
    context = ContextModel()
    context.add_text(["mg_au"], "a senior officer of the Australian Army in Sydney")
    context.add_text(["mg_au"], "commanded Australian troops in New Guinea")
    context.add_text(["mg_us"], "a United States Army officer born in Ohio")
    return EntityLinker(aliases, None, context=context, fuzzy=False)


def test_back_offs_for_given_spans(corpus_linker):
    text = "The WTO and Linguistics."
    wto, linguistics = corpus_linker.link_spans(text, [(4, 7), (12, 23)])
    assert (wto.entity_id, wto.candidates[0][1]) == ("wto", 0.9)  # acronym match quality
    assert linguistics.entity_id == "linguistics"  # a root match ("linguist")
    assert corpus_linker.replace(acronym_similarity=0.0).link_spans(text, [(4, 7)])[0].is_nil


def test_context_profiles_break_prior_ties(corpus_linker):
    text = "Major General Blake served in Sydney with Australian troops."
    with_context = corpus_linker.link_spans(text, [(0, 13)])[0]
    prior_only = corpus_linker.replace(context_weight=0.0).link_spans(text, [(0, 13)])[0]
    assert (with_context.entity_id, prior_only.entity_id) == ("mg_au", "mg_us")
    raw = {m.text: m.entity_id for m in corpus_linker(text)}  # the doc path agrees
    assert raw["Major General"] == "mg_au"
    context = corpus_linker.context
    assert context.similarity("mg_au", text) > context.similarity("mg_us", text) >= 0.0


def test_context_query_takes_any_iterable_of_hashes(corpus_linker):
    """A list with repeats (or 0 for "no word") scores like the set of its words."""
    from ernie_kg.linking.context import ContextQuery

    context = corpus_linker.context
    doc = context.nlp.make_doc("served in Sydney with Australian troops")
    words = [t.norm for t in doc]
    as_set = context.query(doc)
    as_list = ContextQuery(context, words + words + [0], doc.vocab.strings)
    assert as_list.norm() == pytest.approx(as_set.norm())
    candidates = [("mg_au",), ("mg_us",)]
    assert as_list.similarities(candidates) == pytest.approx(as_set.similarities(candidates))
    assert as_set.similarities(candidates)[0] > 0


def test_disambiguator_sees_candidate_lists_changed_in_place(kg):
    from ernie_kg.linking import Disambiguator

    ranker = Disambiguator(kg)
    paris, france = [("paris", 0.5, 1.0), ("france", 0.5, 1.0)], [("france", 1.0, 1.0)]
    first = ranker.rank([paris, france])[0]
    paris[1] = ("france", 0.1, 1.0)  # the same list object, other priors
    paris[0] = ("paris", 0.9, 1.0)
    assert ranker.rank([paris, france])[0] != first
    assert ranker.rank([paris, france]) == Disambiguator(kg).rank([paris, france])


def test_context_model_is_saved_with_the_linker(corpus_linker, tmp_path):
    corpus_linker.save(tmp_path)
    loaded = EntityLinker.load(tmp_path)
    assert isinstance(loaded.context, ContextModel) and len(loaded.context) == 2
    text = "Major General Blake served in Sydney with Australian troops."
    assert loaded.link_spans(text, [(0, 13)]) == corpus_linker.link_spans(text, [(0, 13)])


def test_pipe_on_worker_processes(linker):
    texts = ["Atlanta is the capital of Georgia.", "", "Paris is in France."] * 5
    local = linker.replace()  # its own pool, closed below
    try:
        assert list(local.pipe(texts, batch_size=4, n_process=2)) == [linker(t) for t in texts]
    finally:
        local.close()


def test_pipe_shares_chunks_between_caller_and_worker(linker, monkeypatch):
    from ernie_kg.linking import parallel

    monkeypatch.setattr(parallel, "CHUNK", 2)  # 15 chunks: the caller links some itself
    texts = ["Atlanta is the capital of Georgia.", "Paris is in France.", "Nothing."] * 10
    expected = [linker(t) for t in texts]
    local = linker.replace()
    try:
        assert list(local.pipe(texts, n_process=2)) == expected
        abandoned = local.pipe(texts, n_process=2)
        next(abandoned)
        abandoned.close()  # chunks still queued must not leak into the next call
        assert list(local.pipe(texts[::-1], n_process=2)) == expected[::-1]
    finally:
        local.close()


def test_pool_chunks_shrink_at_the_end_of_the_input():
    from ernie_kg.linking.parallel import CHUNK, TAIL_CHUNK, _Chunker

    texts = [str(n) for n in range(20 * CHUNK + 3)]
    chunker = _Chunker(iter(texts), processes=2)
    sizes, seen = [], []
    while chunk := chunker.next():
        sizes.append(len(chunk))
        seen += chunk
    assert seen == texts  # every text once, in order
    assert sizes[0] == CHUNK and max(sizes) == CHUNK
    assert sizes[-3:-1] == [TAIL_CHUNK, TAIL_CHUNK]  # the last ones are small
    assert sizes == sorted(sizes, reverse=True)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("text", ["", " ", "\n\t  \r\n"])
def test_empty_and_whitespace_text(linker, text):
    assert linker(text) == []
    assert linker.link_tokens([]) == []


def test_emoji_and_mixed_scripts(linker):
    text = "🇫🇷 Paris 東京 Москва, café 😀 France and Zürich… 🚀Berlin"
    found = linker(text)
    assert ("Paris", "paris") in ids(found) and ("France", "france") in ids(found)
    for mention in found:
        assert text[mention.start:mention.end] == mention.text


def test_long_text(linker):
    sentence = "Marie Curie was born in Warsaw and Georgia borders Russia. "
    text = (sentence * (100_000 // len(sentence) + 1))[:100_000]
    started = time.perf_counter()
    found = linker(text)
    assert time.perf_counter() - started < 30
    assert len(found) > 4 * (100_000 // len(sentence))
    assert all(text[m.start:m.end] == m.text for m in found[-10:])
    assert found[-1].end <= len(text)


@pytest.mark.parametrize("spans,message", [
    ([(0, 99)], "out of range"),
    ([(-1, 3)], "out of range"),
    ([(5, 2)], "reversed"),
    ([(3, 3)], "empty"),
    ([(0, "4")], "integers"),
    ([(1,)], "pair"),
    ("0,4", "list"),
])
def test_bad_spans_raise_span_error(linker, spans, message):
    with pytest.raises(SpanError, match=message) as error:
        linker.link_spans("Paris is nice.", spans)
    assert isinstance(error.value, ValueError)
    if not isinstance(spans, str):
        assert "span 0" in str(error.value)


def test_bad_token_spans_name_the_unit(linker):
    with pytest.raises(SpanError, match="token"):
        linker.link_token_spans(["Paris"], [(0, 2)])


def test_non_string_text_is_a_type_error(linker):
    with pytest.raises(TypeError):
        linker(None)  # type: ignore[arg-type]


def test_empty_alias_table_links_nothing(kg):
    empty = EntityLinker(AliasTable(), kg)
    assert empty("Paris is the capital of France.") == []
    assert empty.link_spans("Paris", [(0, 5)])[0].entity_id is None
    assert EntityLinker(AliasTable(), None, fuzzy=True).link_spans("Paris", [(0, 5)])[0].is_nil


# ----------------------------------------------------------------------------- spaCy
def test_spacy_component_writes_kb_ids_and_extension():
    nlp = spacy.blank("en")
    nlp.add_pipe("ernie_kg_linker", config={"kg_dir": str(demo_kg_dir()), "label": "",
                                            "settings": {"nil_threshold": 0.3}})
    doc = nlp("Atlanta is the capital of Georgia.")
    assert [(e.text, e.kb_id_, e.label_) for e in doc.ents] == [
        ("Atlanta", "atlanta", "city"), ("Georgia", "georgia_us_state", "region")]
    assert [m.entity_id for m in doc._.linked_mentions] == ["atlanta", "georgia_us_state"]
    docs = list(nlp.pipe(["Paris is in France.", ""]))
    assert [e.kb_id_ for e in docs[0].ents] == ["paris", "france"]
    assert docs[1]._.linked_mentions == [] and not docs[1].ents


def test_spacy_component_mentions_survive_serialisation():
    """``doc.to_bytes`` (and so ``nlp.pipe(n_process=...)``, DocBin) sends user data
    through msgpack; the mentions still come back as LinkedMentions."""
    nlp = spacy.blank("en")
    nlp.add_pipe("ernie_kg_linker", config={"kg_dir": str(demo_kg_dir())})
    doc = nlp("Atlanta is the capital of Georgia.")
    copy = Doc(nlp.vocab).from_bytes(doc.to_bytes())
    assert copy._.linked_mentions == doc._.linked_mentions
    assert all(isinstance(m, LinkedMention) and isinstance(m.candidates, tuple)
               for m in copy._.linked_mentions)
    assert [e.kb_id_ for e in copy.ents] == ["atlanta", "georgia_us_state"]
    copy._.linked_mentions.pop()  # the stored list itself: edits stick
    assert [m.entity_id for m in copy._.linked_mentions] == ["atlanta"]


def test_detector_takes_ner_spans_as_an_array(linker):
    import numpy as np

    doc = linker.detector.make_doc("Atlanta is the capital of Georgia.")
    as_list = linker.detector.spans(doc, [(15, 22)])
    assert linker.detector.spans(doc, np.array([[15, 22]])) == as_list
    assert ("ner" in {m[5] for m in as_list}) and len(as_list) == 3


def test_spacy_component_keeps_other_entities():
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns([{"label": "DATE", "pattern": "1867"},
                        {"label": "GPE", "pattern": "Warsaw"}])
    nlp.add_pipe("ernie_kg_linker", config={"kg_dir": str(demo_kg_dir())})
    doc = nlp("Marie Curie was born in Warsaw in 1867.")
    assert [(e.text, e.label_, e.kb_id_) for e in doc.ents] == [
        ("Marie Curie", "ENTITY", "marie_curie"), ("Warsaw", "GPE", "warsaw"),
        ("1867", "DATE", "")]


def test_spacy_component_needs_a_kg():
    with pytest.raises(Exception, match="kg_dir"):
        spacy.blank("en").add_pipe("ernie_kg_linker")


# ----------------------------------------------------------------------------- CLI
def test_cli_link_writes_mentions(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text(
        json.dumps({"id": 1, "text": "Marie Curie was born in Warsaw."}) + "\n\n"
        + json.dumps({"tokens": ["Georgia", "borders", "Russia", "."]}) + "\n",
        encoding="utf-8",
    )
    target = tmp_path / "out" / "linked.jsonl"
    result = CliRunner().invoke(app, ["link", "--kg", str(demo_kg_dir()), "--input",
                                      str(source), "--output", str(target)])
    assert result.exit_code == 0, result.output
    assert "texts/s" in result.output
    records = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    assert records[0]["id"] == 1
    assert [(m["start"], m["end"], m["entity_id"]) for m in records[0]["mentions"]] == [
        (0, 11, "marie_curie"), (24, 30, "warsaw")]
    assert [(m["token_start"], m["entity_id"]) for m in records[1]["mentions"]] == [
        (0, "georgia"), (2, "russia")]


@pytest.mark.parametrize("line,message", [
    ("{not json", "invalid JSON"),
    ('{"txt": "Paris"}', '"text"'),
    ('{"tokens": ["a", 3]}', '"tokens"'),
    ('["Paris"]', '"text"'),
])
def test_cli_link_names_the_bad_line(tmp_path, line, message):
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "Paris"}\n' + line + "\n", encoding="utf-8")
    target = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["link", "--kg", str(demo_kg_dir()), "--input",
                                      str(source), "--output", str(target)])
    assert result.exit_code != 0
    assert isinstance(result.exception, DataFormatError)
    assert f"{source}:2" in str(result.exception) and message in str(result.exception)
    assert not target.exists() and not (tmp_path / "out.jsonl.tmp").exists()


def test_load_ignores_unknown_saved_settings(tmp_path):
    kg = KnowledgeGraph.load(demo_kg_dir())
    EntityLinker.from_kg(kg).save(tmp_path)
    config = json.loads((tmp_path / "linker.json").read_text())
    (tmp_path / "linker.json").write_text(json.dumps({**config, "retired_setting": 1}))
    with pytest.warns(UserWarning, match="retired_setting"):
        linker = EntityLinker.load(tmp_path, kg=kg)
    assert [m.entity_id for m in linker("Paris is in France.")] == ["paris", "france"]


def test_linking_eval_contract(tmp_path):
    """experiments/linking_eval.py --train --test --output on the demo corpus."""
    import importlib.util
    import json

    from ernie_kg.paths import PROJECT_ROOT, kg_data_dir

    spec = importlib.util.spec_from_file_location(
        "linking_eval", PROJECT_ROOT / "experiments" / "linking_eval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    corpus = kg_data_dir() / "demo_corpus"
    out = tmp_path / "linking.json"
    assert module.main(["--train", str(corpus / "train.json"), "--test",
                        str(corpus / "test.json"), "--output", str(out), "--repeats", "1",
                        "--processes", "2"]) == 0
    result = json.loads(out.read_text())
    for key in ("in_kb_accuracy", "prior_only_accuracy", "nil_accuracy", "end_to_end_recall"):
        assert 0.0 <= result[key] <= 1.0
    assert result["sentences_per_second"] > 0 and result["spacy_tokenize_sentences_per_second"] > 0
    assert result["speed_ratio"] == pytest.approx(
        result["sentences_per_second"] / result["spacy_tokenize_sentences_per_second"])
    assert set(result["sentences_per_second_by_processes"]) == {"1", "2"}
    assert result["in_kb_accuracy"] > 0.8  # demo test mentions are mostly known names
    assert out.with_suffix(".md").read_text().startswith("# Entity linking")
