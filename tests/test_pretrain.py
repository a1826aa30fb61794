"""Pre-training: corpus preparation, the collator, the loop, exact resume and DDP.

A tiny random BERT (with the packaged MiniLM's WordPiece vocabulary) and a random entity
table stand in for the real backbone and TransE, so the loop runs in seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F
from transformers import AutoTokenizer, BertConfig, BertForPreTraining, BertModel
from typer.testing import CliRunner

from ernie_kg.cli import app
from ernie_kg.data.masking import IGNORE_INDEX, MaskingVocab
from ernie_kg.data.pretraining import (
    PretrainingShards,
    prepare_pretraining_data,
    read_documents,
    sentence_pairs,
    split_documents,
)
from ernie_kg.data.pretraining_collator import PretrainingCollator
from ernie_kg.errors import DataFormatError, ErnieKGError
from ernie_kg.kg import Entity, EntityEmbeddings, KnowledgeGraph
from ernie_kg.linking import EntityLinker
from ernie_kg.modeling import ErnieKGForPreTraining, ErnieKGForRelationClassification
from ernie_kg.modeling.mlm_head import OUTPUT_GAIN
from ernie_kg.paths import default_backbone, demo_kg_dir, kg_data_dir
from ernie_kg.training.pretrain import PretrainingSettings, global_batches, pretrain
from ernie_kg.training.pretrain_schedule import (
    parameter_role,
    pretraining_optimizer,
    start_mlm_prior,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(default_backbone())


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tokenizer) -> dict[str, Path]:
    """A corpus from the demo corpus' sentences, a KG dir with a random entity table,
    a tiny BERT backbone with the MiniLM tokenizer, and the prepared shards."""
    root = tmp_path_factory.mktemp("pretrain")
    data = json.loads((kg_data_dir() / "demo_corpus" / "train.json").read_text())
    sentences = [" ".join(item["tokens"]) for items in data.values() for item in items[:12]]
    documents = [" ".join(sentences[i:i + 4]) for i in range(0, len(sentences), 4)]
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in documents))

    kg_dir = root / "kg"
    shutil.copytree(demo_kg_dir(), kg_dir)
    kg = KnowledgeGraph.load(kg_dir)
    EntityEmbeddings.random(sorted(kg.entities), dim=8).save(kg_dir / "embeddings")

    backbone = root / "tiny-bert"
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=37,
                        max_position_embeddings=128, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    BertModel(config).save_pretrained(backbone)
    tokenizer.save_pretrained(backbone)

    shards = root / "shards"
    linker = EntityLinker.from_kg(kg)
    prepare_pretraining_data(corpus, linker, tokenizer, shards, max_length=64, seed=0,
                             shard_size=16, progress=False)
    return {"root": root, "corpus": corpus, "kg": kg_dir, "backbone": backbone,
            "shards": shards}


def test_read_documents_formats_and_errors(tmp_path):
    plain = tmp_path / "corpus.txt"
    plain.write_text("First doc. Two sentences.\n\n\nSecond doc\nspans lines.\n")
    assert list(read_documents(plain)) == ["First doc. Two sentences.",
                                           "Second doc\nspans lines."]
    bad = tmp_path / "corpus.jsonl"
    bad.write_text('{"text": "fine"}\n{"txt": "no text key"}\n')
    with pytest.raises(DataFormatError, match=r"corpus.jsonl:2: .*\"text\""):
        list(read_documents(bad))


def test_sentences_words_and_linked_mentions():
    kg = KnowledgeGraph.load(demo_kg_dir())
    linker = EntityLinker.from_kg(kg)
    (doc,) = split_documents(["Paris is the capital of France. The Seine flows through Paris."],
                             linker)
    assert [s.text for s in doc] == ["Paris is the capital of France.",
                                     "The Seine flows through Paris."]
    first = doc[0]
    assert [first.text[a:b] for a, b in first.words][:3] == ["Paris", "is", "the"]
    assert {(first.text[s:e], eid) for s, e, eid in first.mentions} >= {("Paris", "paris"),
                                                                         ("France", "france")}


def test_nsp_pairs_half_random_and_deterministic():
    from ernie_kg.data.pretraining import Sentence

    documents = [[Sentence(f"d{d}s{s}", (), ()) for s in range(6)] for d in range(400)]
    pairs = list(sentence_pairs(documents, seed=3))
    assert pairs == list(sentence_pairs(documents, seed=3))
    random_share = np.mean([label for _, _, label in pairs])
    assert 0.46 < random_share < 0.54  # BERT's 50/50, last sentences included
    for first, second, label in pairs:
        d1, s1 = first.text[1:].split("s")
        d2, s2 = second.text[1:].split("s")
        if label == 0:
            assert (d1, int(s1) + 1) == (d2, int(s2))
        else:
            assert d1 != d2


def test_prepared_shards(workspace, tokenizer):
    data = PretrainingShards(workspace["shards"])
    manifest = data.manifest
    assert len(data) == manifest["num_instances"] > 16  # more than one shard
    assert len(manifest["shards"]) >= 2
    assert manifest["aligned_entities"] > len(data)  # the demo sentences are full of entities
    kg = KnowledgeGraph.load(workspace["kg"])
    assert set(data.entity_vocab) <= set(kg.entities)
    for index in range(len(data)):
        item = data[index]
        tokens = tokenizer.convert_ids_to_tokens(item["input_ids"].tolist())
        assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and len(tokens) <= 64
        for position in np.flatnonzero(item["entity_ids"]):
            assert not tokens[position].startswith("##")  # first wordpiece of a word
            assert item["mention_ids"][position] >= 0  # inside a linked mention
            if position > 0:  # and it is the mention's first piece
                assert item["mention_ids"][position - 1] != item["mention_ids"][position]
        for position, token in enumerate(tokens):
            if token.startswith("##"):  # a continuation piece belongs to the previous word
                assert item["word_ids"][position] == item["word_ids"][position - 1] >= 0


def test_prepare_is_deterministic(workspace, tokenizer, tmp_path):
    kg = KnowledgeGraph.load(workspace["kg"])
    prepare_pretraining_data(workspace["corpus"], EntityLinker.from_kg(kg), tokenizer, tmp_path,
                             max_length=64, seed=0, shard_size=16, progress=False)
    for shard in sorted(workspace["shards"].glob("*.safetensors")):
        assert (tmp_path / shard.name).read_bytes() == shard.read_bytes()


def test_collator_masks_whole_words_and_is_batch_independent(workspace, tokenizer):
    data = PretrainingShards(workspace["shards"])
    rows = np.arange(len(data.entity_vocab) + 1)
    collator = PretrainingCollator(MaskingVocab.from_tokenizer(tokenizer), rows,
                                   pad_token_id=tokenizer.pad_token_id, mlm_probability=0.3)
    items = [data[i] for i in range(8)]
    batch = collator(items)
    alone = collator(items[3:4])
    width = len(items[3]["input_ids"])
    assert torch.equal(batch["labels"][3, :width], alone["labels"][0])
    masked = batch["labels"] != IGNORE_INDEX
    assert masked.any()
    for n, item in enumerate(items):
        words = torch.as_tensor(item["word_ids"])
        length = len(words)
        for word in words[words >= 0].unique():
            states = masked[n, :length][words == word]
            assert states.all() or not states.any()  # a word is masked whole or not at all
        aligned = torch.as_tensor(item["entity_ids"]) > 0
        labels = batch["entity_labels"][n, :length]
        assert torch.equal(labels > 0, aligned)  # every alignment is a dEA target


def test_global_batches_resume_midway():
    full = [b for _, b in zip(range(7), global_batches(10, 4, seed=1))]
    resumed = [b for _, b in zip(range(3), global_batches(10, 4, seed=1, start_step=4))]
    assert resumed == full[4:]
    epoch0 = [i for batch in full[:2] for _, i in batch]
    assert len(set(epoch0)) == 8  # no repeats within an epoch
    with pytest.raises(ErnieKGError, match="fewer than one global batch"):
        next(global_batches(3, 4, seed=0))


def _run(workspace, output: Path, max_steps: int, extra: list[str] = ()) -> list[dict]:
    result = CliRunner().invoke(app, [
        "pretrain", "run", "--data", str(workspace["shards"]), "--kg", str(workspace["kg"]),
        "--output", str(output), "--backbone", str(workspace["backbone"]),
        "--max-steps", str(max_steps), "--batch-size", "4", "--save-steps", "3",
        "--learning-rate", "1e-3", "--num-knowledge-layers", "1", *extra,
    ])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return [json.loads(line) for line in (output / "log.jsonl").read_text().splitlines()]


def test_pretrain_run_logs_saves_and_resumes_exactly(workspace):
    torch.set_num_threads(1)
    full_dir = workspace["root"] / "run-full"
    warmup = ["--head-warmup-steps", "4"]  # the resumed run crosses the warm-up's end
    full = _run(workspace, full_dir, 6, warmup)
    assert [r["learning_rate"] > 0 for r in full] == [False] * 4 + [True] * 2
    assert [r["step"] for r in full] == list(range(1, 7))
    for record in full:
        assert {"mlm_loss", "nsp_loss", "dea_loss", "dea_accuracy", "dea_chance"} <= set(record)
        assert 0 < record["dea_chance"] < 1
    assert (full_dir / "loss.png").stat().st_size > 0
    assert (full_dir / "checkpoints" / "checkpoint-3" / "optimizer.pt").is_file()

    # the state a kill after step 3 leaves behind: the checkpoint and the first log lines
    resumed_dir = workspace["root"] / "run-resumed"
    shutil.copytree(full_dir / "checkpoints" / "checkpoint-3",
                    resumed_dir / "checkpoints" / "checkpoint-3")
    (resumed_dir / "log.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in full[:5]))  # two lines past the checkpoint
    resumed = _run(workspace, resumed_dir, 6, warmup)
    assert [r["step"] for r in resumed] == list(range(1, 7))
    for a, b in zip(full[3:], resumed[3:]):
        for key in ("mlm_loss", "nsp_loss", "dea_loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6)

    model = ErnieKGForPreTraining.from_pretrained(full_dir)
    assert model.config.num_entities == len(KnowledgeGraph.load(workspace["kg"]).entities)
    classifier = ErnieKGForRelationClassification.from_pretrained(full_dir, num_labels=3)
    assert classifier.classifier.out_features == 3


def test_pretrain_without_nsp_and_resume_guard(workspace):
    output = workspace["root"] / "run-no-nsp"
    records = _run(workspace, output, 3, ["--no-nsp", "--gradient-accumulation-steps", "2"])
    assert all("nsp_loss" not in r and "mlm_loss" in r for r in records)
    (output / "pretraining_settings.json").unlink()
    shutil.copytree(workspace["root"] / "run-full" / "checkpoints" / "checkpoint-3",
                    output / "checkpoints" / "checkpoint-3")
    result = CliRunner().invoke(app, [  # that checkpoint was made with NSP on
        "pretrain", "run", "--data", str(workspace["shards"]), "--kg", str(workspace["kg"]),
        "--output", str(output), "--backbone", str(workspace["backbone"]), "--max-steps", "6",
        "--batch-size", "4", "--save-steps", "3", "--learning-rate", "1e-3",
        "--num-knowledge-layers", "1", "--no-nsp", "--gradient-accumulation-steps", "2"])
    assert result.exit_code != 0
    assert "cannot resume with other settings" in str(result.exception)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed missing")
def test_two_processes_match_one(workspace):
    """torchrun with 2 CPU processes (gloo) = 1 process over the same global batch."""
    single = _run(workspace, workspace["root"] / "ddp-1", 3,
                  ["--save-steps", "100", "--head-warmup-steps", "1"])
    output = workspace["root"] / "ddp-2"
    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        f"--master_port={port}", "-m", "ernie_kg", "pretrain", "run",
        "--data", str(workspace["shards"]), "--kg", str(workspace["kg"]),
        "--output", str(output), "--backbone", str(workspace["backbone"]),
        "--max-steps", "3", "--batch-size", "4", "--save-steps", "100",
        "--learning-rate", "1e-3", "--num-knowledge-layers", "1", "--head-warmup-steps", "1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    finished = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300,
                              cwd=ROOT)
    assert finished.returncode == 0, finished.stderr[-3000:]
    double = [json.loads(line) for line in (output / "log.jsonl").read_text().splitlines()]
    assert len(double) == len(single) == 3
    for a, b in zip(single, double):
        for key in ("mlm_loss", "nsp_loss", "dea_loss", "dea_accuracy"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5)


def test_chinese_whole_word_masking_uses_jieba_words(tmp_path, tokenizer):
    """Chinese wordpieces are single characters; jieba's words group them for WWM."""
    pytest.importorskip("jieba")
    kg = KnowledgeGraph.from_triples([("beijing", "capital_of", "china")],
                                     entities=[Entity("beijing", "北京"), Entity("china", "中国")])
    corpus = tmp_path / "zh.txt"
    corpus.write_text("北京是中国的首都。清华大学在北京。\n\n中国有很多人口。长城在中国北方。\n")
    linker = EntityLinker.from_kg(kg, lang="zh")
    prepare_pretraining_data(corpus, linker, tokenizer, tmp_path / "shards", max_length=64,
                             lang="zh", progress=False)
    data = PretrainingShards(tmp_path / "shards")
    item = next(data[i] for i in range(len(data)) if data[i]["next_sentence_label"] == 0
                and "北" in tokenizer.decode(data[i]["input_ids"]))
    tokens = tokenizer.convert_ids_to_tokens(item["input_ids"].tolist())
    first = tokens.index("北")
    assert tokens[first + 1] == "京"
    assert item["word_ids"][first] == item["word_ids"][first + 1] >= 0  # one jieba word
    assert item["word_ids"][first - 1] != item["word_ids"][first] or first == 1
    assert data.entity_vocab and item["entity_ids"][first] > 0  # 北京 linked on its first char
    assert item["entity_ids"][first + 1] == 0
    collator = PretrainingCollator(MaskingVocab.from_tokenizer(tokenizer),
                                   np.arange(len(data.entity_vocab) + 1),
                                   pad_token_id=tokenizer.pad_token_id, mlm_probability=0.5)
    for epoch in range(20):  # across many draws, 北 and 京 are always masked together
        labels = collator([{**item, "epoch": epoch}])["labels"][0]
        assert bool(labels[first] != IGNORE_INDEX) == bool(labels[first + 1] != IGNORE_INDEX)


def test_pretraining_with_a_kg_that_misses_the_data_is_refused(workspace):
    other = workspace["root"] / "other-kg"
    shutil.copytree(workspace["kg"], other, ignore=shutil.ignore_patterns("embeddings",
                                                                          ".ernie_kg"))
    EntityEmbeddings.random(["Q1", "Q2"], dim=8).save(other / "embeddings")
    output = workspace["root"] / "run-other-kg"
    result = CliRunner().invoke(app, [
        "pretrain", "run", "--data", str(workspace["shards"]), "--kg", str(other),
        "--output", str(output), "--backbone", str(workspace["backbone"]), "--max-steps", "2",
        "--batch-size", "4", "--num-knowledge-layers", "1"])
    assert result.exit_code != 0
    assert "none of its" in str(result.exception) and "--kg" in str(result.exception)
    assert not (output / "log.jsonl").exists()


def _masked_batch(workspace, tokenizer):
    data = PretrainingShards(workspace["shards"])
    rows = np.arange(len(data.entity_vocab) + 1)
    collator = PretrainingCollator(MaskingVocab.from_tokenizer(tokenizer), rows,
                                   pad_token_id=tokenizer.pad_token_id, dea=False)
    batch = collator([data[i] for i in range(len(data))])
    return data, {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids",
                                        "labels")}


def test_missing_mlm_head_starts_as_identity_path_with_unigram_prior(workspace, tokenizer):
    """The tiny backbone has no MLM head: the transform passes the state on (GELU in its
    linear range, LayerNorm at OUTPUT_GAIN), and the data's token counts give the bias;
    the first MLM loss is far below a random head's."""
    torch.set_num_threads(1)
    model = ErnieKGForPreTraining.from_backbone(workspace["backbone"]).eval()
    transform = model.cls.predictions.transform
    states = torch.randn(5, model.config.hidden_size) * 2
    expected = OUTPUT_GAIN * F.layer_norm(states, states.shape[-1:], eps=1e-12)
    torch.testing.assert_close(transform(states), expected, atol=1e-3, rtol=1e-3)
    data, batch = _masked_batch(workspace, tokenizer)
    special = MaskingVocab.from_tokenizer(tokenizer).special_ids
    assert start_mlm_prior(model, data, len(tokenizer), special)
    assert not start_mlm_prior(model, data, len(tokenizer), special)  # a trained bias stays
    bias = model.cls.predictions.bias
    assert torch.equal(model.cls.predictions.decoder.bias, bias)  # tied: the logits see it
    assert bias[tokenizer.convert_tokens_to_ids("the")] > bias[tokenizer.cls_token_id]
    with torch.no_grad():
        ours = float(model(**batch).mlm_loss)
        model.cls.predictions.transform.apply(model._init_weights)  # a random head
        model.cls.predictions.bias.zero_()
        random_head = float(model(**batch).mlm_loss)
    assert random_head > 0.95 * np.log(len(tokenizer))
    assert ours < random_head - 3


def test_a_backbone_with_an_mlm_head_keeps_it(workspace, tmp_path):
    torch.manual_seed(1)
    with_head = BertForPreTraining(BertConfig.from_pretrained(workspace["backbone"]))
    with_head.save_pretrained(tmp_path)
    model = ErnieKGForPreTraining.from_backbone(str(tmp_path))
    ours = model.cls.predictions.transform.state_dict()
    for name, value in with_head.cls.predictions.transform.state_dict().items():
        assert torch.equal(ours[name], value)


def test_head_warmup_freezes_the_backbone_then_trains_it(workspace, tokenizer):
    """Backbone weights unchanged through ``head_warmup_steps``, changed one step later;
    heads, knowledge modules and gates learn from the first step, the gates at
    fine-tuning's gate rate."""
    torch.set_num_threads(1)
    embeddings = EntityEmbeddings.load(workspace["kg"] / "embeddings")
    finals = {}
    for steps in (2, 3):
        torch.manual_seed(0)
        model = ErnieKGForPreTraining.from_backbone(workspace["backbone"], embeddings,
                                                    num_knowledge_layers=1)
        initial = {n: p.detach().clone() for n, p in model.named_parameters()}
        settings = PretrainingSettings(max_steps=steps, head_warmup_steps=2, batch_size=4,
                                       learning_rate=1e-3, save_steps=100, progress=False)
        gates = [g for g in pretraining_optimizer(model, settings).param_groups
                 if g["role"] == "gate"]
        assert [g["lr"] for g in gates] == [PretrainingSettings().gate_learning_rate]
        assert gates[0]["weight_decay"] == 0.0 and gates[0]["params"]
        history = pretrain(workspace["shards"], model, workspace["root"] / f"warmup-{steps}",
                           tokenizer, settings, resume=False)["history"]
        assert history[0]["gate_learning_rate"] > history[0]["head_learning_rate"] > 0
        assert history[-1]["gate_opening"] != 0
        finals[steps] = {n: (initial[n], p.detach()) for n, p in model.named_parameters()}
    roles = {n: parameter_role(n) for n in finals[2]}
    assert {"backbone", "head", "knowledge", "gate"} <= set(roles.values())
    for name, (before, after) in finals[2].items():
        if roles[name] == "backbone":
            assert torch.equal(before, after), name
        elif "entity_gate.scale" in name or name.startswith("cls.predictions.transform"):
            assert not torch.equal(before, after), name
    encoder = [n for n, role in roles.items() if role == "backbone" and ".layer." in n]
    assert encoder and all(not torch.equal(*finals[3][n]) for n in encoder)
