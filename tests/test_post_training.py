"""Domain post-training (issue 18, part 3): masked LM only on a plain-text corpus, saved
as a BERT backbone that every fine-tuning loader accepts.

The real packaged MiniLM (it ships without an MLM head) on a tiny review corpus written
to tmp_path, a handful of steps each: seconds. Nothing is mocked.
"""

from __future__ import annotations

import inspect
import itertools
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer, BertForPreTraining
from typer.testing import CliRunner

from ernie_kg.cli import app, main
from ernie_kg.cli_pretrain import post_train_command
from ernie_kg.data.masking import IGNORE_INDEX, MaskingVocab
from ernie_kg.data.pretraining import PretrainingShards, prepare_pretraining_data
from ernie_kg.data.pretraining_collator import PretrainingCollator
from ernie_kg.errors import DataFormatError, ErnieKGError, SettingError
from ernie_kg.kg import KnowledgeGraph
from ernie_kg.linking import EntityLinker
from ernie_kg.modeling import (
    ErnieKGForPreTraining,
    ErnieKGForRelationClassification,
    ErnieKGModel,
)
from ernie_kg.paths import default_backbone, demo_kg_dir
from ernie_kg.training.post_training import (
    POST_TRAINING_DEFAULTS,
    post_train,
    post_training_model,
    post_training_settings,
    save_backbone,
)
from ernie_kg.training.pretrain import pretrain
from ernie_kg.training.pretrain_schedule import parameter_role, start_mlm_prior

FOODS = ("pasta", "sushi", "tiramisu", "pizza", "curry", "ramen")
QUALITIES = ("delicious", "bland", "overpriced", "fresh", "salty")
SERVICE = ("the waiter was friendly", "service was slow", "the staff ignored us",
           "we were seated quickly")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: 1 thread


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(default_backbone())


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """30 review lines, one text per line, no end punctuation (as ABSA sentences)."""
    lines = [f"The {food} was {quality} and {service}" for (food, quality), service
             in zip(itertools.product(FOODS, QUALITIES), itertools.cycle(SERVICE))]
    path = tmp_path_factory.mktemp("corpus") / "reviews.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def data(corpus, tokenizer, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("post-data")
    prepare_pretraining_data(corpus, None, tokenizer, out, max_length=32, progress=False,
                             mlm_only=True)
    return out


def _settings(**overrides):
    """Post-training settings for ``pretrain()`` itself, which saves what it trained."""
    values = {"batch_size": 8, "save_steps": 100, "progress": False, "interpolation": 1.0,
              **overrides}
    return post_training_settings(**values)


def test_segments_keep_every_word_and_cut_at_word_boundaries(tokenizer, tmp_path):
    long_line = " ".join(["unbelievably tasty tiramisu and friendly waiters"] * 12)
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in
                          ["location1 is a nice area", "location2 is expensive", long_line]))
    manifest = prepare_pretraining_data(corpus, None, tokenizer, tmp_path / "d",
                                        max_length=16, progress=False, mlm_only=True)
    assert manifest["instances"] == "segments" and manifest["documents"] == 3
    assert manifest["entity_vocab"] == [] and manifest["aligned_entities"] == 0
    data = PretrainingShards(tmp_path / "d")
    items = [data[i] for i in range(len(data))]
    decoded = [tokenizer.decode(item["input_ids"][1:-1]) for item in items[:2]]
    assert decoded == ["location1 is a nice area", "location2 is expensive"]  # not run together
    pieces = items[2:]
    assert len(pieces) > 1 and all(len(item["input_ids"]) <= 16 for item in pieces)
    ids = [int(i) for item in pieces for i in item["input_ids"][1:-1]]
    assert ids == tokenizer(long_line, add_special_tokens=False)["input_ids"]  # all kept
    for before, after in zip(pieces, pieces[1:]):  # no word split between two segments
        assert before["word_ids"][-2] != after["word_ids"][1]
    assert all(item["next_sentence_label"] == 0 and not item["entity_ids"].any()
               for item in items)


def test_saved_backbone_loads_everywhere_with_the_trained_weights(data, tokenizer, tmp_path):
    torch.manual_seed(0)
    model = post_training_model()
    out = tmp_path / "post-trained"
    pretrain(data, model, out, tokenizer, _settings(max_steps=3, head_warmup_steps=1,
                                                    learning_rate=1e-4),
             resume=False, save_model=save_backbone)
    model.eval()
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "bert" and config["architectures"] == ["BertForPreTraining"]
    trained = model.state_dict()

    auto, info = AutoModel.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"]
    for name, value in auto.state_dict().items():
        assert torch.equal(value, trained[f"ernie.{name}"]), name
    batch = tokenizer(["The sushi was fresh and service was slow"], return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(auto(**batch).last_hidden_state,
                                   model.ernie(**batch).last_hidden_state, rtol=0, atol=1e-6)
    full = BertForPreTraining.from_pretrained(out)
    for name, value in full.cls.state_dict().items():
        assert torch.equal(value, trained[f"cls.{name}"]), name
    assert AutoTokenizer.from_pretrained(out).get_vocab() == tokenizer.get_vocab()

    # every fine-tuning command builds through from_backbone (finetune --backbone, the
    # experiments' --backbone / --post-trained)
    for built in (ErnieKGModel.from_backbone(out),
                  ErnieKGForRelationClassification.from_backbone(out, num_labels=2).ernie):
        state = built.state_dict()  # (its knowledge layers hold fresh entity modules)
        shared = [n for n in trained if n.startswith("ernie.") and n[6:] in state
                  and "entity_embeddings" not in n]
        assert len(shared) == len(auto.state_dict())  # every BERT weight, taken as trained
        assert all(torch.equal(state[n[6:]], trained[n]) for n in shared)
    again = ErnieKGForPreTraining.from_backbone(out)  # post-training can be continued
    for name, value in again.cls.predictions.state_dict().items():
        assert torch.equal(value, trained[f"cls.predictions.{name}"]), name


def test_head_warmup_holds_the_encoder_bit_identical_then_trains_it(data, tokenizer,
                                                                     tmp_path):
    finals = {}
    for steps in (2, 3):
        torch.manual_seed(0)
        model = post_training_model()
        initial = {n: p.detach().clone() for n, p in model.named_parameters()}
        history = pretrain(data, model, tmp_path / f"warmup-{steps}", tokenizer,
                           _settings(max_steps=steps, head_warmup_steps=2,
                                     learning_rate=1e-3), resume=False)["history"]
        assert [r["learning_rate"] > 0 for r in history] == [False, False, True][:steps]
        finals[steps] = {n: (initial[n], p.detach()) for n, p in model.named_parameters()}
    for name, (before, after) in finals[2].items():
        if parameter_role(name) == "backbone":  # embeddings (the tied decoder), encoder, pooler
            assert torch.equal(before, after), name
        elif name.startswith("cls.predictions."):
            assert not torch.equal(before, after), name  # the head learned meanwhile
    encoder = [n for n in finals[3] if n.startswith("ernie.encoder.layer.")]
    assert encoder and all(not torch.equal(*finals[3][n]) for n in encoder)


@pytest.mark.parametrize("freeze", [False, True])
def test_frozen_word_embeddings_stay_as_loaded_unseen_tokens_move_otherwise(
        freeze, data, tokenizer, tmp_path, corpus):
    """The tied decoder's softmax reaches every vocabulary row: without the setting, rows
    of tokens the corpus never contains move too; with it no row moves, the encoder does."""
    torch.manual_seed(0)
    model = post_training_model()
    embeddings = model.get_input_embeddings().weight
    before = embeddings.detach().clone()
    layer = model.ernie.encoder.layer[0].output.dense.weight.detach().clone()
    pretrain(data, model, tmp_path / "run", tokenizer,
             _settings(max_steps=3, head_warmup_steps=1, learning_rate=1e-4,
                       freeze_word_embeddings=freeze), resume=False)
    assert model.cls.predictions.decoder.weight is embeddings  # still tied
    seen = sorted({i for line in corpus.read_text().splitlines()
                   for i in tokenizer(line)["input_ids"]})
    unseen = torch.ones(len(before), dtype=torch.bool)
    unseen[seen] = False
    moved = (embeddings.detach() != before).any(dim=1)
    assert not torch.equal(model.ernie.encoder.layer[0].output.dense.weight, layer)
    if freeze:
        assert not moved.any()
    else:
        assert moved[unseen].float().mean() > 0.99


def test_held_bottom_layers_stay_as_loaded_the_layers_above_train(data, tokenizer, tmp_path):
    torch.manual_seed(0)
    model = post_training_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    pretrain(data, model, tmp_path / "run", tokenizer,
             _settings(max_steps=3, head_warmup_steps=1, learning_rate=1e-4,
                       held_bottom_layers=2), resume=False)
    held = ("ernie.embeddings.", "ernie.encoder.layer.0.", "ernie.encoder.layer.1.")
    for name, parameter in model.named_parameters():
        if name.startswith(held):
            assert torch.equal(parameter, before[name]), name
        elif name.startswith("ernie.encoder.layer.") and name.endswith(".weight"):
            assert not torch.equal(parameter, before[name]), name
    with pytest.raises(SettingError, match="held_bottom_layers"):
        post_training_settings(held_bottom_layers=-1)
    with pytest.raises(SettingError, match="held_bottom_layers=7: the model has no "
                                           "ernie.encoder.layer.6"):  # MiniLM has 6
        pretrain(data, post_training_model(), tmp_path / "too-many", tokenizer,
                 _settings(max_steps=1, held_bottom_layers=7), resume=False)


def _mlm_loss(model, batch) -> float:
    model.eval()
    with torch.no_grad():
        return float(model(**batch).mlm_loss)


def test_mlm_loss_on_the_corpus_goes_down(data, tokenizer, tmp_path):
    """Loss on one fixed masking of every instance: at the start (identity-path head and
    the corpus' unigram bias, as the loop starts it) and after 20 steps."""
    shards = PretrainingShards(data)
    vocab = MaskingVocab.from_tokenizer(tokenizer)
    collator = PretrainingCollator(vocab, np.zeros(1, dtype=np.int64), tokenizer.pad_token_id,
                                   dea=False, seed=12345)
    full = collator([{**shards[i], "epoch": 0} for i in range(len(shards))])
    batch = {k: full[k] for k in ("input_ids", "attention_mask", "token_type_ids", "labels")}
    assert int((batch["labels"] != IGNORE_INDEX).sum()) >= 40
    torch.manual_seed(0)
    model = post_training_model()
    assert start_mlm_prior(model, shards, len(tokenizer), vocab.special_ids)
    before = _mlm_loss(model, batch)
    history = pretrain(data, model, tmp_path / "run", tokenizer,
                       _settings(max_steps=20, head_warmup_steps=5, learning_rate=1e-4),
                       resume=False)["history"]
    after = _mlm_loss(model, batch)
    print(f"MLM loss on the corpus: {before:.3f} -> {after:.3f} "
          f"(logged: {history[0]['mlm_loss']:.3f} -> {history[-1]['mlm_loss']:.3f})")
    assert after < before - 1.0
    assert np.mean([r["mlm_loss"] for r in history[-5:]]) < history[0]["mlm_loss"]


def _post_train(corpus: Path, output: Path, steps: int = 4, *extra: str) -> list[dict]:
    result = CliRunner().invoke(app, [
        "pretrain", "post-train", "--corpus", str(corpus), "--output", str(output),
        "--max-steps", str(steps), "--batch-size", "8", "--save-steps", "2",
        "--head-warmup-steps", "1", "--max-length", "32", *extra])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return [json.loads(line) for line in (output / "log.jsonl").read_text().splitlines()]


def test_post_train_command_resumes_exactly_after_a_kill(corpus, tmp_path):
    full_dir = tmp_path / "full"
    full = _post_train(corpus, full_dir)
    assert [r["step"] for r in full] == [1, 2, 3, 4]
    assert all("nsp_loss" not in r and "dea_loss" not in r for r in full)
    assert (full_dir / "checkpoints" / "checkpoint-2").is_dir()
    resumed_dir = tmp_path / "resumed"  # what a kill after step 3 leaves behind
    shutil.copytree(full_dir / "data", resumed_dir / "data")
    shutil.copytree(full_dir / "checkpoints" / "checkpoint-2",
                    resumed_dir / "checkpoints" / "checkpoint-2")
    (resumed_dir / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in full[:3]))
    resumed = _post_train(corpus, resumed_dir)
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    for a, b in zip(full[2:], resumed[2:]):
        assert a["mlm_loss"] == pytest.approx(b["mlm_loss"], rel=1e-5, abs=1e-6)
    first, second = (load_file(str(d / "model.safetensors")) for d in (full_dir, resumed_dir))
    assert first.keys() == second.keys()
    for name in first:
        torch.testing.assert_close(first[name], second[name], rtol=1e-5, atol=1e-6)


def test_interpolation_saves_the_encoder_part_of_the_way_back(corpus, tmp_path,
                                                              experiment_script):
    """The same run (same seed), saved with --interpolation 0.5 and 1: the encoder of
    the first is the midpoint of the loaded MiniLM and the second; the MLM head is the
    trained one in both; the setting is recorded with the backbone."""
    for weight in ("1", "0.5"):
        _post_train(corpus, tmp_path / weight, 4, "--interpolation", weight,
                    "--learning-rate", "1e-3")
    trained, half = (load_file(str(tmp_path / w / "model.safetensors")) for w in ("1", "0.5"))
    loaded = {f"bert.{k}": v for k, v in AutoModel.from_pretrained(default_backbone())
              .state_dict().items()}
    encoder = [k for k in trained if k in loaded and k.startswith("bert.encoder.")]
    assert encoder and all(not torch.equal(trained[k], loaded[k]) for k in encoder)
    for name in trained:
        expected = (trained[name] + loaded[name]) / 2 if name in loaded else trained[name]
        torch.testing.assert_close(half[name], expected, rtol=1e-5, atol=1e-6)
    recorded = json.loads((tmp_path / "0.5" / "pretraining_settings.json").read_text())
    assert recorded["interpolation"] == 0.5
    # experiments/placebo_backbone.py moves a saved backbone the same way after the fact
    placebo = tmp_path / "placebo"
    experiment_script("placebo_backbone").main(["--post-trained", str(tmp_path / "1"),
                                                "--weight", "0.5", "--output", str(placebo)])
    moved = load_file(str(placebo / "model.safetensors"))
    assert moved.keys() == half.keys()
    for name in half:
        torch.testing.assert_close(moved[name], half[name], rtol=1e-5, atol=1e-6)
    assert AutoTokenizer.from_pretrained(placebo).vocab == AutoTokenizer.from_pretrained(
        default_backbone()).vocab
    assert json.loads((placebo / "pretraining_settings.json").read_text()) == recorded
    with pytest.raises(SettingError, match="interpolation"):
        post_training_settings(interpolation=1.5)


@pytest.mark.parametrize("content", ["", "\n  \n\n"])
def test_an_empty_corpus_is_a_clear_error_naming_the_file(tmp_path, content, monkeypatch,
                                                          capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text(content)
    for command in (["pretrain", "post-train", "--corpus", str(empty), "--output",
                     str(tmp_path / "out")],
                    ["pretrain", "prepare", "--corpus", str(empty), "--out",
                     str(tmp_path / "out")]):
        result = CliRunner().invoke(app, command)
        assert isinstance(result.exception, DataFormatError), result.output
        assert str(empty) in str(result.exception) and "empty" in str(result.exception)
        assert not (tmp_path / "out").exists()  # refused before anything was written
    monkeypatch.setattr(sys, "argv", ["ernie-kg", "pretrain", "post-train", "--corpus",
                                      str(empty), "--output", str(tmp_path / "out")])
    with pytest.raises(SystemExit) as stopped:
        main()
    assert stopped.value.code == 2
    printed = capsys.readouterr()
    shown = printed.out + printed.err
    assert "Traceback" not in shown and shown.count("\n") <= 3  # one message, wrapped
    assert "error:" in shown and str(empty) in "".join(shown.split())


def test_a_missing_corpus_and_mismatched_options_are_refused(data, tmp_path):
    with pytest.raises(DataFormatError, match="no-such.txt: corpus file not found"):
        post_train(tmp_path / "no-such.txt", tmp_path / "out")
    with pytest.raises(SettingError, match="masked LM only"):
        post_training_settings(nsp=True)
    run = ["pretrain", "run", "--data", str(data), "--output", str(tmp_path / "run")]
    result = CliRunner().invoke(app, [*run, "--nsp"])
    assert isinstance(result.exception, ErnieKGError) and "--nsp need --kg" in \
        str(result.exception)
    result = CliRunner().invoke(app, [*run, "--kg", str(demo_kg_dir()), "--interpolation",
                                      "0.5"])
    assert isinstance(result.exception, ErnieKGError)
    assert "--interpolation is for domain post-training" in str(result.exception)
    result = CliRunner().invoke(app, [*run, "--kg", str(demo_kg_dir())])
    assert "prepared without --kg" in str(result.exception)
    assert not (tmp_path / "run").exists() and not (tmp_path / "out").exists()


def test_data_prepared_with_a_kg_post_trains_on_its_text(tokenizer, tmp_path):
    """Knowledge-aware pre-training data (pairs, linked entities) also serves masked LM
    only: the entities are ignored, the model without an entity table is not asked."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("Paris is the capital of France. The Seine flows through Paris. "
                      "France borders Germany.\n\nBerlin is in Germany. It is large. "
                      "Vienna is in Austria.\n")
    linker = EntityLinker.from_kg(KnowledgeGraph.load(demo_kg_dir()))
    manifest = prepare_pretraining_data(corpus, linker, tokenizer, tmp_path / "d",
                                        max_length=32, progress=False)
    assert manifest["instances"] == "pairs" and manifest["aligned_entities"] > 0
    history = pretrain(tmp_path / "d", post_training_model(), tmp_path / "out", tokenizer,
                       _settings(max_steps=1, batch_size=2, head_warmup_steps=0),
                       resume=False, save_model=save_backbone)["history"]
    assert history[0]["mlm_loss"] > 0 and "dea_loss" not in history[0]
    assert json.loads((tmp_path / "out" / "config.json").read_text())["model_type"] == "bert"


def test_post_training_defaults_are_one_recipe_in_the_api_and_both_commands(data, tmp_path):
    """post_training_settings(), `post-train` and `pretrain run` without --kg all post-train
    with POST_TRAINING_DEFAULTS (word embeddings held, saved a quarter of the way)."""
    settings = post_training_settings()
    assert {k: getattr(settings, k) for k in POST_TRAINING_DEFAULTS} == POST_TRAINING_DEFAULTS
    options = inspect.signature(post_train_command).parameters
    assert {k: options[k].default for k in POST_TRAINING_DEFAULTS} == POST_TRAINING_DEFAULTS
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["pretrain", "run", "--data", str(data), "--output",
                                      str(out), "--max-steps", "2", "--batch-size", "8",
                                      "--head-warmup-steps", "1"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    recorded = json.loads((out / "pretraining_settings.json").read_text())
    assert {k: recorded[k] for k in POST_TRAINING_DEFAULTS} == POST_TRAINING_DEFAULTS
