"""Fine-tuning, evaluation, one-call inference and the CLI on the bundled demo corpus.

A tiny random BERT (saved with the real MiniLM tokenizer, so the processor's markers and
offsets are real) keeps every training step in milliseconds; the data and the KG are the
project's own (kg_data/demo, kg_data/demo_corpus), never ../shared.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from transformers import TrainerCallback
from typer.testing import CliRunner

from ernie_kg.cli import app
from ernie_kg.data.collator import ErnieKGCollator
from ernie_kg.data.examples import RelationExample
from ernie_kg.data.features import LabelMap, UnknownLabelError, relation_features
from ernie_kg.data.fewrel import read_fewrel
from ernie_kg.data.knowledge import (
    fewrel_knowledge,
    hide_sole_fact_entities,
    neighbourhood,
)
from ernie_kg.errors import SpanError
from ernie_kg.kg import KnowledgeGraph
from ernie_kg.kg.cache import cached_entity_embeddings
from ernie_kg.paths import kg_data_dir
from ernie_kg.pipelines.relation import (
    RelationClassifier,
    build_relation_classifier,
    find_span,
    predict,
    train_relation_classifier,
)
from ernie_kg.training.evaluation import evaluate_relations
from ernie_kg.training.finetuning import finetune

CORPUS = kg_data_dir() / "demo_corpus"
FAST = {"batch_size": 8, "eval_batch_size": 32, "logging_steps": 1, "progress": False,
        "learning_rate": 1e-3}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def corpus() -> dict[str, list[RelationExample]]:
    """Every relation of the demo corpus, a few examples each (train 8, dev/test 3)."""
    picked = {}
    for split, per_label in (("train", 8), ("dev", 3), ("test", 3)):
        examples = read_fewrel(CORPUS / f"{split}.json")
        counts: dict[str, int] = {}
        chosen = []
        for example in examples:
            if counts.get(example.label, 0) < per_label:
                counts[example.label] = counts.get(example.label, 0) + 1
                chosen.append(example)
        picked[split] = chosen
    return picked


@pytest.fixture(scope="module")
def knowledge(demo_knowledge):
    return demo_knowledge


def _classifier(tiny_backbone, corpus, knowledge, knowledge_on=True) -> RelationClassifier:
    kg, embeddings, aliases = knowledge
    return build_relation_classifier(LabelMap.from_examples(corpus["train"]), kg, embeddings,
                                     aliases, knowledge=knowledge_on, backbone=tiny_backbone)


@pytest.fixture(scope="module")
def trained(tiny_backbone, corpus, knowledge, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    classifier = _classifier(tiny_backbone, corpus, knowledge)
    metrics = train_relation_classifier(
        classifier, corpus["train"], corpus["dev"], out, log_path=out / "log.jsonl",
        epochs=2, seed=0, save_total_limit=2, **FAST,
    )
    return classifier, metrics, out, corpus["dev"]


# ---------------------------------------------------------------------- features
def test_features_entity_sources(tiny_backbone, corpus, knowledge):
    classifier = _classifier(tiny_backbone, corpus, knowledge)
    examples = corpus["train"][:16]
    labels = LabelMap.from_examples(corpus["train"])
    by_source = {s: relation_features(examples, classifier.processor, labels, s)
                 for s in ("gold", "linker", "both", "none")}
    rows = {s: [[r for r in f["entity_ids"] if r] for f in d] for s, d in by_source.items()}
    embeddings = knowledge[1]
    for example, gold in zip(examples, rows["gold"]):  # gold: exactly head and tail
        assert sorted(gold) == sorted({embeddings.row(example.head_id),
                                       embeddings.row(example.tail_id)})
    assert all(not r for r in rows["none"])
    for gold, both in zip(rows["gold"], rows["both"]):  # both: gold ids win, more may join
        assert set(gold) <= set(both)
    assert sum(map(len, rows["linker"])) > 0
    feature = by_source["both"][0]
    assert feature["labels"] == labels.encode(examples[0].label)
    assert len(feature["input_ids"]) == len(feature["entity_ids"])
    assert len(feature["marker_positions"]) == 2
    with pytest.raises(UnknownLabelError, match="not in the model"):
        labels.encode("no_such_relation")


def test_collator_pads_dynamically():
    batch = ErnieKGCollator(pad_token_id=0)([
        {"input_ids": [101, 7, 102], "attention_mask": [1, 1, 1], "entity_ids": [0, 5, 0],
         "marker_positions": [1, 1], "labels": 2, "length": 3},
        {"input_ids": [101, 102], "attention_mask": [1, 1], "entity_ids": [0, 0],
         "marker_positions": [0, 1], "labels": 0, "length": 2},
    ])
    assert batch["input_ids"].tolist() == [[101, 7, 102], [101, 102, 0]]
    assert batch["entity_ids"].tolist() == [[0, 5, 0], [0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].dtype == torch.long and "length" not in batch
    multi = ErnieKGCollator()([{"input_ids": [1], "labels": [1, 0]},
                               {"input_ids": [1, 2], "labels": [0, 1]}])
    assert multi["labels"].dtype == torch.float32


# ---------------------------------------------------------------------- training
def test_training_lowers_loss_and_reports_metrics(trained):
    classifier, metrics, out, _ = trained
    for key in ("accuracy", "macro_f1", "micro_f1", "per_label_f1", "dev_linker_macro_f1"):
        assert key in metrics
    assert set(metrics["per_label_f1"]) <= set(classifier.labels)
    assert metrics["kg_entity_coverage"] == classifier.kg_coverage == 1.0
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) >= 4 and all(math.isfinite(x) for x in losses)
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < first, losses
    assert any("eval_macro_f1" in r for r in records)
    assert metrics["best_checkpoint"] is not None


def test_saved_model_predicts_from_raw_text(trained):
    classifier, metrics, out, _ = trained
    loaded = RelationClassifier.load(out / "model")
    assert loaded.labels == classifier.labels and loaded.entities == "linker"
    label, probability = loaded.predict("Paris is the capital of France .", head="Paris",
                                        tail="France")
    assert label in loaded.labels and 0.0 <= probability <= 1.0
    text = "Berlin lies in Germany ."
    spans = loaded.predict(text, head=(0, 6), tail=(15, 22))
    assert spans == loaded.predict(text, head="Berlin", tail="Germany")
    assert spans == predict(loaded.model, loaded.processor, text, "Berlin", "Germany")
    probabilities = loaded.predict_proba(text, "Berlin", "Germany")
    assert abs(sum(probabilities.values()) - 1) < 1e-4
    with pytest.raises(SpanError, match="does not occur"):
        loaded.predict(text, head="Tokyo", tail="Germany")
    # the saved model gives the trained model's dev scores (linker entities)
    again = loaded.evaluate(trained[3])
    assert again["macro_f1"] == pytest.approx(metrics["dev_linker_macro_f1"])


def test_a_classifier_whose_gate_reads_entity_links_trains_and_reloads(
        tiny_backbone, corpus, knowledge, tmp_path):
    kg, embeddings, aliases = knowledge
    classifier = build_relation_classifier(
        LabelMap.from_examples(corpus["train"]), kg, embeddings, aliases,
        backbone=tiny_backbone, knowledge_gate="token", knowledge_links=True)
    features = relation_features(corpus["train"], classifier.processor, classifier.label_map,
                                 "both")
    flags = [f for feature in features for r, f in zip(feature["entity_ids"],
                                                       feature["entity_links"]) if r]
    assert flags and all(flags)  # the demo KG holds every training pair's fact
    metrics = train_relation_classifier(classifier, corpus["train"], corpus["dev"], tmp_path,
                                        epochs=1, seed=0, **FAST)
    loaded = RelationClassifier.load(tmp_path / "model")
    assert loaded.model.config.knowledge_links and loaded.processor.entity_links
    assert loaded.evaluate(corpus["dev"])["macro_f1"] == pytest.approx(
        metrics["dev_linker_macro_f1"])


def test_resume_from_checkpoint(tiny_backbone, corpus, knowledge, tmp_path):
    labels = LabelMap.from_examples(corpus["train"])
    classifier = _classifier(tiny_backbone, corpus, knowledge)
    features = relation_features(corpus["train"], classifier.processor, labels, "gold")
    first = finetune(classifier.model, features, output_dir=tmp_path, epochs=1, seed=0, **FAST)
    steps = first.trainer.state.global_step
    assert list(tmp_path.glob("checkpoint-*"))
    resumed_model = _classifier(tiny_backbone, corpus, knowledge).model
    counter = _StepCounter()
    second = finetune(resumed_model, features, output_dir=tmp_path, epochs=2, seed=0,
                      resume_from_checkpoint=True, callbacks=[counter], **FAST)
    assert second.trainer.state.global_step == 2 * steps
    assert counter.steps == steps  # only the second epoch ran

    # killed while writing a later checkpoint: resume takes the newest complete one
    complete = sorted(tmp_path.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    cut = tmp_path / f"checkpoint-{3 * steps}"
    cut.mkdir()
    (cut / "config.json").write_text("{}")
    (cut / "model.safetensors.tmp").write_bytes(b"half")
    third = finetune(_classifier(tiny_backbone, corpus, knowledge).model, features,
                     output_dir=tmp_path, epochs=2, seed=0, resume_from_checkpoint=True,
                     **FAST)
    assert third.trainer.state.global_step == 2 * steps  # from the complete checkpoint
    assert (tmp_path / f"incomplete-{cut.name}" / "config.json").exists()  # kept aside
    assert complete[-1].exists()


def test_resume_with_only_incomplete_checkpoints_says_so(tmp_path):
    from ernie_kg.errors import ErnieKGError
    from ernie_kg.training.checkpoints import resumable_finetune_checkpoint

    with pytest.raises(ErnieKGError, match="cannot resume, no checkpoint"):
        resumable_finetune_checkpoint(tmp_path)
    (tmp_path / "checkpoint-5").mkdir()
    with pytest.raises(ErnieKGError, match=r"only incomplete checkpoints \(checkpoint-5"):
        resumable_finetune_checkpoint(tmp_path)


class _StepCounter(TrainerCallback):
    def __init__(self) -> None:
        self.steps = 0

    def on_step_end(self, args, state, control, **kwargs):
        self.steps += 1


def test_baseline_gets_no_entities(tiny_backbone, corpus, knowledge):
    classifier = _classifier(tiny_backbone, corpus, knowledge, knowledge_on=False)
    assert classifier.entities == "none"
    features = classifier.features(corpus["dev"])
    assert all(not any(f["entity_ids"]) for f in features)
    metrics = evaluate_relations(classifier.model, features)
    assert 0.0 <= metrics["macro_f1"] <= 1.0


def test_with_its_gates_held_shut_ernie_kg_fine_tunes_as_its_baseline(tiny_backbone, corpus,
                                                                     knowledge, tmp_path):
    """Same seed, same data: ERNIE-KG (linked entities, gates opened at a negligible rate)
    and the baseline end fine-tuning with the same weights, so a gap between them at the
    recipe's gate rate is what the entities did, not dropout or initialisation luck."""
    from ernie_kg.modeling.entity_modules import knowledge_role

    weights, scores = [], []
    for knowledge_on in (True, False):
        classifier = _classifier(tiny_backbone, corpus, knowledge, knowledge_on=knowledge_on)
        metrics = train_relation_classifier(
            classifier, corpus["train"], corpus["dev"], tmp_path / str(knowledge_on),
            epochs=2, seed=3, gate_learning_rate=1e-12,
            knowledge_learning_rate=5e-4 if knowledge_on else None, **FAST)
        weights.append(dict(classifier.model.named_parameters()))
        scores.append(metrics["macro_f1"])
    fed, text_only = weights
    assert any(f["entity_ids"] for f in _classifier(tiny_backbone, corpus, knowledge)
               .features(corpus["train"]))  # the fed twin really saw entities
    assert scores[0] == scores[1]
    for name in (n for n in fed if knowledge_role(n) is None):
        torch.testing.assert_close(fed[name], text_only[name], atol=1e-6, rtol=0)


# ---------------------------------------------------------------------- knowledge
def test_fewrel_knowledge_and_cache(tmp_path):
    kg, aliases = fewrel_knowledge([CORPUS / "dev.json"], kg_data_dir() / "demo")
    background = KnowledgeGraph.load(kg_data_dir() / "demo")
    assert len(kg.train) >= len(background.triples)
    assert kg.entity("france").label == background.entity("france").label
    assert aliases.candidates("France")[0][0] == "france"
    chain = KnowledgeGraph.from_triples([("a", "r", "b"), ("b", "r", "c"), ("c", "r", "d")])
    assert neighbourhood(chain, {"a"}, 1).train == [("a", "r", "b")]
    assert len(neighbourhood(chain, {"a"}, 2).train) == 2
    assert neighbourhood(chain, {"zzz"}, 1) is None
    small = KnowledgeGraph.from_triples(kg.train[:60])
    settings = {"dim": 8, "epochs": 1, "batch_size": 64, "num_negs_per_pos": 4}
    first = cached_entity_embeddings(small, tmp_path, progress=False, **settings)
    second = cached_entity_embeddings(small, tmp_path, progress=False, **settings)
    assert first.content_hash() == second.content_hash()
    assert len(list(tmp_path.iterdir())) == 1


def test_hide_sole_fact_entities(tiny_backbone, corpus, knowledge):
    kg = KnowledgeGraph.from_triples([("a", "r", "b"), ("b", "r", "c"), ("d", "s", "c")])
    examples = [
        RelationExample("A met B.", (0, 1), (6, 7), "r", "a", "b"),  # a: only this fact
        RelationExample("B met C.", (0, 1), (6, 7), "r", "b", "c"),  # both have others
        RelationExample("A met D.", (0, 1), (6, 7), "t", "a", "d"),  # not a KG fact
    ]
    hidden, shares = hide_sole_fact_entities(examples, kg)
    assert [(e.head_id, e.tail_id) for e in hidden] == [(0, "b"), ("b", "c"), ("a", "d")]
    assert shares == {"heads_hidden": 1 / 3, "tails_hidden": 0.0}
    # a hidden (0) head gets no entity, even from the linker that knows its name
    example = corpus["train"][0]
    classifier = _classifier(tiny_backbone, corpus, knowledge)
    row = knowledge[1].row(example.head_id)
    plain, masked = relation_features(
        [example, dataclasses.replace(example, head_id=0)], classifier.processor,
        entities="both")
    assert row in plain["entity_ids"] and row not in masked["entity_ids"]


# ---------------------------------------------------------------------- CLI
def test_cli_evaluate_writes_metrics(trained, tmp_path):
    out = trained[2]
    target = tmp_path / "m.json"
    result = CliRunner().invoke(app, ["evaluate", "--model", str(out / "model"), "--data",
                                      str(CORPUS / "test.json"), "--output", str(target)])
    assert result.exit_code == 0, result.output
    metrics = json.loads(target.read_text())
    for key in ("accuracy", "macro_f1", "micro_f1", "per_label_f1"):
        assert key in metrics
    assert metrics["num_examples"] == 300 and metrics["entities"] == "linker"


def test_find_span():
    assert find_span("a Bob b Bob", "Bob") == (2, 5)
    assert find_span("abc", (0, 2)) == (0, 2)
    with pytest.raises(SpanError):
        find_span("abc", (2, 9))


# ---------------------------------------------------------------------- experiment
def test_experiment_contract(tiny_backbone, tmp_path):
    """experiments/relation_classification.py writes metrics.json, model/ and log.jsonl."""
    import importlib.util

    from ernie_kg.paths import PROJECT_ROOT

    spec = importlib.util.spec_from_file_location(
        "relation_classification", PROJECT_ROOT / "experiments" / "relation_classification.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "run"
    metrics = module.main([
        "--train", str(CORPUS / "dev.json"), "--kg-setting", "closed", "--model", "ernie",
        "--seed", "1", "--output-dir", str(out), "--epochs", "1",
        "--kg-extra", str(CORPUS / "test.json"), "--codex-dir", str(kg_data_dir() / "demo"),
        "--kg-epochs", "1", "--kg-dim", "8", "--cache-dir", str(tmp_path / "cache"),
        "--backbone", tiny_backbone, "--batch-size", "16", "--no-progress",
    ])
    saved = json.loads((out / "metrics.json").read_text())
    for key in ("accuracy", "macro_f1", "micro_f1"):
        assert 0.0 <= saved[key] <= 1.0 and saved[key] == metrics[key]
    assert saved["settings"]["kg_setting"] == "closed"
    assert (out / "model" / "config.json").exists() and not (out / "checkpoints").exists()
    events = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert events[0]["event"] == "start" and events[-1]["event"] == "end"
    loaded = RelationClassifier.load(out / "model")
    label, _ = loaded.predict("Paris is the capital of France .", "Paris", "France")
    assert label in loaded.labels and len(loaded.labels) == 12
