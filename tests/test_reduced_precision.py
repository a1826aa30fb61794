"""Reduced-precision inference (bfloat16, int8) of the saved classifiers and the CLI.

A tiny relation classifier (the random 2-layer BERT of tests/test_finetune.py on the
demo corpus and KG) is trained until its predictions have margins and its knowledge gates
are open, saved, and read back in each precision: the predictions must agree with
float32's, through the knowledge path (entities fused by the fused GELU, gated) and the
memory-mapped entity table.
The packaged MiniLM checks that real-size features survive each precision.
"""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ernie_kg.cli import app
from ernie_kg.data.examples import PairExample, TypingExample
from ernie_kg.data.features import LabelMap
from ernie_kg.data.fewrel import read_fewrel
from ernie_kg.errors import ErnieKGError, SettingError
from ernie_kg.modeling import precision as precision_module
from ernie_kg.modeling.entity_modules import GATE_PARAMETERS
from ernie_kg.modeling.entity_table import MappedEntityTable
from ernie_kg.modeling.precision import (
    DTYPES,
    INT8_OUTLIER_THRESHOLD,
    FullRangeDynamicLinear,
    Int8DynamicLinear,
    SharedInputProjection,
    check_dtype,
    int8_full_range,
    int8_packing_engine,
    reduce_precision,
)
from ernie_kg.paths import PROJECT_ROOT, kg_data_dir
from ernie_kg.pipelines.entity_typing import EntityTyper, build_entity_typer
from ernie_kg.pipelines.pair import PairClassifier, build_pair_classifier
from ernie_kg.pipelines.relation import RelationClassifier, build_relation_classifier

CORPUS = kg_data_dir() / "demo_corpus"
#: Enough training for margins (median top-2 gap 3.1) and open gates (fast knowledge rate).
TRAINING = {"epochs": 4, "batch_size": 8, "learning_rate": 3e-3, "seed": 0,
            "knowledge_learning_rate": 1e-2, "logging_steps": 10, "progress": False}
#: Least share of the 300 demo test predictions equal to float32's (measured: 1.0 for
#: bf16 and int8).
MIN_AGREEMENT = 0.98

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def saved(tiny_backbone, demo_knowledge, tmp_path_factory):
    """A trained tiny relation classifier, saved: its directory."""
    train = read_fewrel(CORPUS / "train.json")[::2]
    kg, embeddings, aliases = demo_knowledge
    classifier = build_relation_classifier(LabelMap.from_examples(train), kg, embeddings,
                                           aliases, backbone=tiny_backbone, seed=0)
    out = tmp_path_factory.mktemp("precision")
    classifier.fit(train, None, out, **TRAINING)
    return out / "model"


@pytest.fixture(scope="module")
def test_examples():
    return read_fewrel(CORPUS / "test.json", gold_ids=False)


@pytest.fixture(scope="module")
def float32_logits(saved, test_examples):
    return RelationClassifier.load(saved)._logits(test_examples)


def _agreement(logits: np.ndarray, reference: np.ndarray) -> float:
    return float((logits.argmax(-1) == reference.argmax(-1)).mean())


def test_the_knowledge_path_matters_in_float32(saved, test_examples, float32_logits):
    text_only = RelationClassifier.load(saved, entities="none")._logits(test_examples)
    assert _agreement(text_only, float32_logits) < 0.98  # else the checks see no KG (0.953)
    gates = RelationClassifier.load(saved).model.base_model.encoder.layer
    assert all(abs(layer.entity_gate.scale.item()) > 0.1 for layer in gates)


@pytest.mark.parametrize("dtype", ["bfloat16", "int8"])
def test_predictions_agree_with_float32(saved, test_examples, float32_logits, dtype):
    classifier = RelationClassifier.load(saved, dtype=dtype)
    assert classifier.dtype == dtype
    logits = classifier._logits(test_examples)
    assert logits.dtype == np.float32 and logits.shape == float32_logits.shape
    assert _agreement(logits, float32_logits) >= MIN_AGREEMENT
    scale = float(np.abs(float32_logits).max())
    assert not np.array_equal(logits, float32_logits)  # it did run in another precision
    assert float(np.abs(logits - float32_logits).max()) < 0.1 * scale
    label, probability = classifier.predict("Paris is the capital of France .", "Paris",
                                            "France")
    assert label in classifier.labels and 0 < probability <= 1
    metrics = classifier.evaluate(test_examples[:40])
    assert 0 <= metrics["macro_f1"] <= 1


@pytest.mark.parametrize("mode", ["cast", "autocast"])
def test_both_bf16_forms_agree_and_keep_the_mapped_table(saved, test_examples,
                                                         float32_logits, mode):
    classifier = RelationClassifier.load(saved)
    table = classifier.model.base_model.entity_embeddings
    assert isinstance(table, MappedEntityTable)
    source = table.vectors.data_ptr()
    reduce_precision(classifier.model, "bfloat16", bf16_mode=mode)
    assert table.vectors.dtype == torch.float32 and table.vectors.data_ptr() == source
    weights = classifier.model.base_model.encoder.layer[-1].entity_intermediate.weight
    assert weights.dtype == (torch.bfloat16 if mode == "cast" else torch.float32)
    logits = classifier._logits(test_examples)
    assert _agreement(logits, float32_logits) >= MIN_AGREEMENT


def test_int8_quantizes_every_linear_layer_and_keeps_the_rest(saved):
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    model = RelationClassifier.load(saved, dtype="int8").model
    named = [m for n, m in model.named_modules() if n.endswith((
        "query_key_value.fused", "intermediate.dense", "entity_intermediate", "trust", "qkv",
        "classifier"))]
    assert len(named) == 10  # 2 layers x (q/k/v, W_t, W_e, trust), 1 qkv, the classifier
    assert all(isinstance(m, DynamicQuantizedLinear) for m in named)
    assert not any(type(m) is torch.nn.Linear for m in model.modules())
    assert model.base_model.embeddings.word_embeddings.weight.dtype == torch.float32
    assert isinstance(model.base_model.entity_embeddings, MappedEntityTable)


def test_int8_attention_projections_as_one_product_equal_three(saved, test_examples,
                                                                monkeypatch):
    """query, key and value as one int8 product (one quantized input, one call) give the
    three products' logits; the product runs once per input, again once it changes."""
    fused = RelationClassifier.load(saved, dtype="int8")
    shared = [m for m in fused.model.modules() if isinstance(m, SharedInputProjection)]
    assert len(shared) == 2  # one per backbone layer
    monkeypatch.setattr(precision_module, "_share_attention_inputs", lambda model: None)
    separate = RelationClassifier.load(saved, dtype="int8")
    assert not any(isinstance(m, SharedInputProjection) for m in separate.model.modules())
    np.testing.assert_allclose(fused._logits(test_examples), separate._logits(test_examples),
                               rtol=1e-5, atol=1e-5)
    calls = []
    projection = shared[0]
    projection.fused.register_forward_hook(lambda *args: calls.append(1))
    x = torch.randn(4, projection.fused.in_features)
    attention = [m for m in fused.model.modules() if hasattr(m, "query_key_value")][0]
    parts = [attention.query(x), attention.key(x), attention.value(x)]
    assert len(calls) == 1 and projection._kept is None  # let go once all three took theirs
    torch.testing.assert_close(torch.cat(parts, -1), projection(x))
    assert len(calls) == 2
    attention.key(x)  # the kept output
    assert len(calls) == 2
    x.mul_(2)  # written in place: computed again
    attention.value(x)
    assert len(calls) == 3
    attention.value(x)  # a part taken twice: another input's turn, a new call
    assert len(calls) == 4


def test_int8_activations_take_8_bits_only_where_vnni_cannot_saturate(monkeypatch):
    if torch.backends.quantized.engine not in ("x86", "fbgemm", "onednn"):
        pytest.skip("the 7-bit rule is fbgemm's and oneDNN's")
    real_vnni = int8_full_range()
    torch.manual_seed(0)
    x = torch.randn(64, 256)
    errors = {}
    for vnni in (True, False):
        monkeypatch.setattr(torch.cpu, "_is_vnni_supported", lambda vnni=vnni: vnni)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
        assert int8_full_range() is vnni
        torch.manual_seed(1)
        model = torch.nn.Sequential(torch.nn.Linear(256, 64))
        expected = model(x).detach()
        reduce_precision(model, "int8")
        assert (type(model[0]) is FullRangeDynamicLinear) is vnni
        assert isinstance(model[0], Int8DynamicLinear)
        errors[vnni] = float((model(x) - expected).abs().mean())
    if not real_vnni:  # 8 bits without VNNI saturate (int16 pairs): what the rule prevents
        assert errors[True] > 2 * errors[False]
    else:
        assert errors[True] < 0.75 * errors[False]  # the 8th bit: about half the error


def test_int8_takes_outlier_features_out_of_the_int8_product():
    """One input feature 30x the others (as BERT's LayerNorm outputs have) stretches the
    per-tensor activation scale; LLM.int8()'s decomposition multiplies it in float32."""
    torch.manual_seed(0)
    x = torch.randn(64, 256)
    x[:, 7] *= 30  # one outlier feature, up to about 100
    errors, models = {}, {}
    for threshold in (math.inf, INT8_OUTLIER_THRESHOLD):
        torch.manual_seed(1)
        model = torch.nn.Sequential(torch.nn.Linear(256, 64))
        expected = model(x).detach()
        models[threshold] = reduce_precision(model, "int8", outlier_threshold=threshold)
        errors[threshold] = float((model(x) - expected).abs().mean())
    assert errors[INT8_OUTLIER_THRESHOLD] < 0.2 * errors[math.inf]
    calm = x.clamp(-3, 3)  # no feature above the threshold: exactly the plain int8 product
    assert torch.equal(models[math.inf](calm), models[INT8_OUTLIER_THRESHOLD](calm))


def test_int8_outlier_split_does_not_depend_on_the_calls_before():
    """The previous call's outlier set is only a guess: a module that has seen other
    inputs gives what a fresh one gives, when the set stays, grows, shrinks or empties."""
    torch.manual_seed(0)
    base = torch.randn(48, 128)
    inputs = []
    for scaled in ([7], [7], [7, 40], [40], [], [7]):
        x = base.clone()
        x[:, scaled] *= 30
        inputs.append(x)
    torch.manual_seed(1)
    used = reduce_precision(torch.nn.Sequential(torch.nn.Linear(128, 32)), "int8")
    for x in inputs:
        torch.manual_seed(1)
        fresh = reduce_precision(torch.nn.Sequential(torch.nn.Linear(128, 32)), "int8")
        assert torch.equal(used(x), fresh(x))
    assert used[0]._last_outliers.tolist() == [7]


def test_every_saved_classifier_takes_a_dtype(tiny_backbone, demo_knowledge, tmp_path):
    kg, embeddings, aliases = demo_knowledge
    typer = build_entity_typer(["city", "country"], kg, embeddings, aliases,
                               backbone=tiny_backbone)
    typer.save(tmp_path / "typer")
    pair = build_pair_classifier(["no", "yes"], kg, embeddings, aliases, backbone=tiny_backbone)
    pair.save(tmp_path / "pair")
    mention = [TypingExample("Paris is in France .", (0, 5))]
    items = [PairExample("Paris is lovely .", "the city ?")]
    typing32 = EntityTyper.load(tmp_path / "typer").probabilities(mention)
    pair32 = PairClassifier.load(tmp_path / "pair")._logits(items)
    for dtype in ("bfloat16", "int8"):
        reduced = EntityTyper.load(tmp_path / "typer", dtype=dtype).probabilities(mention)
        assert np.abs(reduced - typing32).max() < 0.05
        logits = PairClassifier.load(tmp_path / "pair", dtype=dtype)._logits(items)
        assert logits.dtype == np.float32 and np.abs(logits - pair32).max() < 0.1
    features = pair.extract_features(["Paris is in France ."], layers=(-1,), level="sentence")
    assert pair.to_dtype("bfloat16") is pair and pair.dtype == "bfloat16"
    reduced = pair.extract_features(["Paris is in France ."], layers=(-1,), level="sentence")
    assert reduced.dtype == np.float32
    assert np.corrcoef(features[0], reduced[0])[0, 1] > 0.99


# ---------------------------------------------------------------------- bad input
def test_an_unknown_dtype_names_the_allowed_values(tmp_path):
    for bad in ("float16", "fp32", "", None):
        with pytest.raises(SettingError, match="float32, bfloat16, int8"):
            RelationClassifier.load(tmp_path / "no_model", dtype=bad)  # before any reading
    assert check_dtype("int8") == "int8"


def test_int8_without_a_quantized_engine_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(torch._C, "_supported_qengines", lambda: [])
    with pytest.raises(ErnieKGError, match="int8.*quantized engine.*bfloat16"):
        RelationClassifier.load(tmp_path / "no_model", dtype="int8")


def test_int8_off_the_cpu_is_a_clear_error():
    model = torch.nn.Sequential(torch.nn.Linear(4, 2, device="meta"))
    with pytest.raises(ErnieKGError, match="CPU only.*meta"):
        reduce_precision(model, "int8")
    with pytest.raises(SettingError, match="bf16_mode"):
        reduce_precision(torch.nn.Linear(2, 2), "bfloat16", bf16_mode="half")


def test_a_reduced_model_is_for_inference_only(saved, tmp_path):
    classifier = RelationClassifier.load(saved, dtype="bfloat16")
    assert classifier.to_dtype("bfloat16") is classifier  # the same dtype: nothing to do
    for action in (lambda: classifier.to_dtype("float32"),
                   lambda: classifier.to_dtype("int8"),
                   lambda: classifier.save(tmp_path / "copy"),
                   lambda: classifier.fit([], None, tmp_path / "run")):
        with pytest.raises(ErnieKGError, match="runs in bfloat16.*load the float32 model"):
            action()
    assert not (tmp_path / "copy").exists()


# ---------------------------------------------------------------------- CLI
def test_cli_evaluate_records_the_dtype(saved, tmp_path):
    target = tmp_path / "m.json"
    result = CliRunner().invoke(app, ["evaluate", "--model", str(saved), "--data",
                                      str(CORPUS / "test.json"), "--output", str(target),
                                      "--dtype", "int8"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(target.read_text())
    assert metrics["dtype"] == "int8" and metrics["num_examples"] == 300
    assert 0 <= metrics["macro_f1"] <= 1
    bad = CliRunner().invoke(app, ["evaluate", "--model", str(saved), "--data",
                                   str(CORPUS / "test.json"), "--dtype", "half"])
    assert bad.exit_code == 2 and "float32, bfloat16, int8" in bad.output


def test_the_cli_offers_exactly_the_api_dtypes():
    result = CliRunner().invoke(app, ["evaluate", "--help"], terminal_width=200)
    assert all(dtype in result.output for dtype in DTYPES)


# ---------------------------------------------------------------------- MiniLM
def test_packaged_minilm_features_survive_each_precision(demo_knowledge):
    kg, embeddings, aliases = demo_knowledge
    texts = [line.text for line in read_fewrel(CORPUS / "test.json", gold_ids=False)[:24]]
    states = {}
    for dtype in DTYPES:
        classifier = build_pair_classifier(["a", "b"], kg, embeddings, aliases, seed=0)
        with torch.no_grad():  # entities at full strength through the real-size path
            for name, parameter in classifier.model.named_parameters():
                if any(gate in name for gate in GATE_PARAMETERS):
                    parameter.fill_(1.0)
        classifier.to_dtype(dtype)
        states[dtype] = np.stack(classifier.extract_features(
            texts, layers=(-1,), level="sentence", sentence_pooling="mean"))
    unit = {d: s / np.linalg.norm(s, axis=1, keepdims=True) for d, s in states.items()}
    for dtype, least in (("bfloat16", 0.999), ("int8", 0.95)):  # measured: 0.9999, 0.966
        similarity = unit[dtype] @ unit["float32"].T
        assert np.diag(similarity).min() > least, dtype
        # each sentence is still nearest to its own float32 state (others: median 0.28)
        assert (similarity.argmax(1) == np.arange(len(texts))).all(), dtype


def test_the_benchmark_reports_every_variant_and_its_skips(saved, tmp_path):
    path = PROJECT_ROOT / "benchmarks" / "reduced_precision.py"
    spec = importlib.util.spec_from_file_location("reduced_precision_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    output = tmp_path / "rp"
    module.main(["--model", str(saved), "--data", str(CORPUS / "test.json"), "--limit", "40",
                 "--repeats", "1", "--batch-size", "16", "--skip", "bfloat16",
                 "--int8-thresholds", "3", "--output", str(output)])
    result = json.loads(output.with_suffix(".json").read_text())
    assert list(result["results"]) == ["float32", "int8", "int8-plain", "int8-t3"]
    assert result["skipped"] == ["bfloat16"] and result["examples"] == 40
    rows = result["results"]
    assert rows["int8-plain"]["int8_outlier_threshold"] == "off"
    assert rows["int8"]["int8_outlier_threshold"] == INT8_OUTLIER_THRESHOLD
    assert rows["float32"]["agreement"] == 1.0 and rows["int8"]["agreement"] >= 0.9
    text = output.with_suffix(".md").read_text()
    assert "Not run here (`--skip`): bfloat16." in text and "| int8-t3 |" in text


def test_int8_packs_for_onednn_on_amx_and_leaves_the_engine_as_it_was(monkeypatch):
    """AMX: weights packed for oneDNN under torch's default engine, not for an engine the
    user chose; either way the process's engine is what it was, and the product right."""
    engines = torch.backends.quantized.supported_engines
    if not {"x86", "fbgemm", "onednn"} <= set(engines):
        pytest.skip("needs torch's x86 engines")
    import torch.ao.quantization as quantization

    monkeypatch.setattr(torch.backends.quantized, "engine", "x86")
    packed_under = []
    quantize_dynamic = quantization.quantize_dynamic

    def recording(*args, **kwargs):
        packed_under.append(torch.backends.quantized.engine)
        return quantize_dynamic(*args, **kwargs)

    monkeypatch.setattr(quantization, "quantize_dynamic", recording)
    torch.manual_seed(0)
    x = torch.randn(32, 64)
    for amx in (True, False):
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda amx=amx: amx)
        assert int8_packing_engine() == ("onednn" if amx else "x86")
        torch.manual_seed(1)
        model = torch.nn.Sequential(torch.nn.Linear(64, 16))
        expected = model(x).detach()
        reduce_precision(model, "int8")
        assert packed_under[-1] == ("onednn" if amx else "x86")
        assert torch.backends.quantized.engine == "x86"
        assert float((model(x) - expected).abs().max()) < 0.05 * float(expected.abs().max())
    monkeypatch.setattr(torch.backends.quantized, "engine", "fbgemm")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert int8_packing_engine() == "fbgemm"
