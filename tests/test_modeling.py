"""The fusion encoder and its heads on tiny random BERT configs (plus one real MiniLM check)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    BertConfig,
    BertModel,
)
from transformers.activations import GELUActivation
from transformers.masking_utils import create_bidirectional_mask

from ernie_kg.errors import SavedFileError
from ernie_kg.kg.embeddings import EntityEmbeddings
from ernie_kg.modeling import (
    ENTITY_IDS_FILE,
    ErnieKGAggregatorLayer,
    ErnieKGConfig,
    ErnieKGForEntityTyping,
    ErnieKGForPreTraining,
    ErnieKGForRelationClassification,
    ErnieKGModel,
    default_layer_types,
    entity_modules,
    native,
)
from ernie_kg.modeling.entity_layout import EntityLayout
from ernie_kg.modeling.entity_modules import knowledge_role, shut_knowledge_gates
from ernie_kg.modeling.entity_table import TABLE_DIR, MappedEntityTable
from ernie_kg.modeling.layers import _fuse, _FusedGelu
from ernie_kg.modeling.random_streams import entity_dropout, entity_generator

VOCAB, HIDDEN, LAYERS, ENTITY_DIM, NUM_ENTITIES = 99, 32, 4, 8, 20


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors gain nothing from threads, and on a busy machine a second thread
    turns every op into a wait for the scheduler."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def backbone_dir(tmp_path_factory) -> str:
    """A tiny random BERT checkpoint on disk, the way from_backbone meets real ones."""
    torch.manual_seed(0)
    config = BertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                        num_attention_heads=4, intermediate_size=37,
                        max_position_embeddings=64)
    path = tmp_path_factory.mktemp("tiny_bert")
    BertModel(config).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def backbone(backbone_dir) -> BertModel:
    return BertModel.from_pretrained(backbone_dir).eval()


@pytest.fixture(scope="module")
def table() -> EntityEmbeddings:
    return EntityEmbeddings.random([f"Q{i}" for i in range(NUM_ENTITIES)], dim=ENTITY_DIM)


def build(cls, backbone_dir, table, knowledge_layers=2, **overrides):
    """The paper's fusion unless a gate is named: the fusion's mechanics are tested at
    full strength (an untrained gated model is its backbone)."""
    torch.manual_seed(1)
    overrides.setdefault("knowledge_gate", "none")
    return cls.from_backbone(backbone_dir, table, num_knowledge_layers=knowledge_layers,
                             entity_attention_heads=2, **overrides)


def batch(seed: int = 0, size: int = 3, length: int = 12) -> dict[str, torch.Tensor]:
    """Random tokens; rows 0 and 2 carry entities (>= 2 each), row 1 none; row 2 padded."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, VOCAB, (size, length), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[2, 9:] = 0
    entity_ids = torch.zeros_like(input_ids)
    entity_ids[0, [1, 4, 7]] = torch.tensor([3, 5, 3])
    entity_ids[2, [2, 3]] = torch.tensor([1, NUM_ENTITIES])
    return {"input_ids": input_ids, "attention_mask": attention_mask, "entity_ids": entity_ids}


# ----------------------------------------------------------------------------- config
def test_default_layer_types_follow_ernie():
    assert default_layer_types(12, 6) == ["sim"] * 5 + ["mix"] + ["norm"] * 6
    assert default_layer_types(6, 3) == ["sim", "sim", "mix", "norm", "norm", "norm"]
    assert default_layer_types(4, 4) == ["norm"] * 4
    assert default_layer_types(4, 0) == ["sim"] * 4
    assert ErnieKGConfig().layer_types == default_layer_types(12, 6)


def test_config_explicit_layout_and_validation(tmp_path):
    config = ErnieKGConfig(num_hidden_layers=3, layer_types=["sim", "mix", "norm"])
    assert config.num_knowledge_layers == 1
    config.save_pretrained(tmp_path)
    assert ErnieKGConfig.from_pretrained(tmp_path).layer_types == ["sim", "mix", "norm"]
    with pytest.raises(Exception, match="layer_types"):
        ErnieKGConfig(num_hidden_layers=2, layer_types=["sim", "bogus"])
    with pytest.raises(Exception, match="entity_attention_heads"):
        ErnieKGConfig(entity_dim=10, entity_attention_heads=4)
    with pytest.raises(Exception, match="rc_classifier"):
        ErnieKGConfig(rc_classifier="mean")


def test_from_backbone_builds_no_unused_modules(backbone_dir, table):
    model = build(ErnieKGModel, backbone_dir, table, knowledge_layers=2)
    assert model.config.layer_types == ["sim", "mix", "norm", "norm"]
    mix, top = model.encoder.layer[1], model.encoder.layer[3]
    assert isinstance(mix, ErnieKGAggregatorLayer) and mix.entity_attention is None
    assert top.entity_output is None  # nothing would read the top layer's entity output
    assert model.encoder.layer[2].entity_output is not None
    assert model.config.entity_table_sha256 == table.content_hash()
    assert model.entity_ids == table.entity_ids and model.entity_row("Q4") == 5
    every_row = model.entity_embeddings(torch.arange(len(table) + 1))
    assert torch.equal(every_row, torch.from_numpy(table.padded_table()))
    assert not [n for n, _ in model.named_parameters() if "entity_embeddings" in n]  # frozen


# ----------------------------------------------------------------------------- knowledge off
@pytest.mark.parametrize("knowledge_layers", [0, 1, 2, 4])
def test_knowledge_off_is_the_backbone(backbone_dir, backbone, table, knowledge_layers):
    model = build(ErnieKGModel, backbone_dir, table, knowledge_layers).eval()
    inputs = batch()
    with torch.no_grad():
        expected = backbone(inputs["input_ids"], inputs["attention_mask"],
                            output_hidden_states=True)
        off = model(inputs["input_ids"], inputs["attention_mask"], output_hidden_states=True)
        zeros = model(inputs["input_ids"], inputs["attention_mask"],
                      entity_ids=torch.zeros_like(inputs["entity_ids"]))
    assert torch.equal(off.last_hidden_state, expected.last_hidden_state)
    assert torch.equal(off.pooler_output, expected.pooler_output)
    assert all(torch.equal(a, b) for a, b in zip(off.hidden_states, expected.hidden_states,
                                                 strict=True))
    assert torch.equal(zeros.last_hidden_state, expected.last_hidden_state)
    assert off.entity_last_hidden_state is None


@pytest.mark.parametrize("gate", ["layer", "token"])
def test_a_closed_gate_makes_the_untrained_fused_model_the_backbone(backbone_dir, backbone,
                                                                    table, gate):
    model = build(ErnieKGForRelationClassification, backbone_dir, table, num_labels=5,
                  knowledge_gate=gate, rc_classifier="entity_start").eval()
    inputs = batch()
    inputs["marker_positions"] = torch.tensor([[1, 4], [2, 6], [0, 3]])
    with torch.no_grad():
        expected = backbone(inputs["input_ids"], inputs["attention_mask"]).last_hidden_state
        fused = model.ernie(inputs["input_ids"], inputs["attention_mask"],
                            entity_ids=inputs["entity_ids"])
    assert torch.equal(fused.last_hidden_state, expected)  # entities present, none reach
    assert fused.entity_last_hidden_state is not None  # ... though the entity stream runs
    model.train()  # one step opens the gate, and then the entities count
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    model(**inputs, labels=torch.tensor([0, 1, 2])).loss.backward()
    gates = [layer.entity_gate for layer in model.ernie.encoder.layer
             if getattr(layer, "entity_gate", None) is not None]
    assert len(gates) == 3 and all(g.scale.grad is not None for g in gates)
    assert any(g.scale.grad != 0 for g in gates)
    optimizer.step()
    model.eval()
    with torch.no_grad():
        opened = model.ernie(inputs["input_ids"], inputs["attention_mask"],
                             entity_ids=inputs["entity_ids"]).last_hidden_state
        text_only = model.ernie(inputs["input_ids"], inputs["attention_mask"]).last_hidden_state
    assert not torch.equal(opened[0], text_only[0])  # row 0 has entities
    assert torch.equal(opened[1], text_only[1])  # row 1 has none: nothing changes


def test_the_papers_fusion_has_no_gate_and_is_what_old_configs_mean(backbone_dir, backbone,
                                                                     table):
    assert ErnieKGConfig().knowledge_gate == "none"
    model = build(ErnieKGModel, backbone_dir, table, knowledge_gate="none").eval()
    assert all(getattr(layer, "entity_gate", None) is None for layer in model.encoder.layer)
    inputs = batch()
    with torch.no_grad():
        expected = backbone(inputs["input_ids"], inputs["attention_mask"]).last_hidden_state
        fused = model(**inputs).last_hidden_state
    assert not torch.equal(fused[0], expected[0])  # full strength from the first step
    with pytest.raises(Exception, match="knowledge_gate"):
        ErnieKGConfig(knowledge_gate="sometimes")


def test_entities_change_only_their_sequences_above_the_t_encoder(backbone_dir, table):
    model = build(ErnieKGModel, backbone_dir, table, knowledge_layers=2).eval()
    inputs = batch()
    with torch.no_grad():
        off = model(inputs["input_ids"], inputs["attention_mask"], output_hidden_states=True)
        on = model(**inputs, output_hidden_states=True)
    first_knowledge_layer = 1  # layer 1 is "mix": hidden_states[0..1] precede it
    for i in range(first_knowledge_layer + 1):
        assert torch.equal(on.hidden_states[i], off.hidden_states[i])
    assert torch.equal(on.last_hidden_state[1], off.last_hidden_state[1])  # no entities
    for row in (0, 2):
        assert not torch.allclose(on.last_hidden_state[row], off.last_hidden_state[row])
    assert on.entity_last_hidden_state.shape == (3, 12, ENTITY_DIM)
    assert len(on.entity_hidden_states) == 3  # mix + 2 norm layers
    aligned = inputs["entity_ids"] > 0
    assert torch.all(on.entity_last_hidden_state[~aligned] == 0)
    assert torch.all(on.entity_last_hidden_state[aligned].abs().sum(-1) > 0)


def _dense_reference(model: ErnieKGModel, input_ids, attention_mask, entity_ids):
    """ERNIE's own formulation: a position-aligned [B, L, d] entity stream, masked."""
    embeddings = model.embeddings(input_ids=input_ids)
    mask = create_bidirectional_mask(config=model.config, inputs_embeds=embeddings,
                                     attention_mask=attention_mask)
    ent_mask = (entity_ids > 0).to(embeddings.dtype)[..., None]
    key_bias = (1 - ent_mask[..., 0])[:, None, None, :] * torch.finfo(embeddings.dtype).min
    entities = model.entity_embeddings(entity_ids)
    hidden = embeddings
    batch_size, length = input_ids.shape
    for layer in model.encoder.layer:
        if not isinstance(layer, ErnieKGAggregatorLayer):
            hidden = layer(hidden, mask)
            continue
        attention = layer.attention(hidden, mask)[0]
        attn = layer.entity_attention
        if attn is not None:
            def heads(x, attn=attn):
                return x.view(batch_size, length, attn.num_heads, attn.head_dim).transpose(1, 2)
            q, k, v = (heads(x) for x in attn.qkv(entities).chunk(3, dim=-1))
            scores = q @ k.transpose(-1, -2) / attn.head_dim ** 0.5 + key_bias
            context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch_size, length, -1)
            entities = attn.LayerNorm(entities + attn.dense(context))
        entities = entities * ent_mask
        pre = layer.intermediate.dense(attention) + ent_mask * layer.entity_intermediate(entities)
        fused = layer.intermediate.intermediate_act_fn(pre)
        hidden = layer.output(fused, attention)
        if layer.entity_output is not None:
            entities = layer.entity_output(fused, entities)
    return hidden


@pytest.fixture(params=["native kernels", "ATen ops over all entities",
                        "ATen ops packed per sequence"])
def attention_path(request, monkeypatch) -> Iterator[str]:
    """The entity stream in the compiled kernels (CPU float32, :mod:`ernie_kg.modeling.native`)
    or as ATen ops: attention over the batch's N entities (small batches) or on the packed
    per-sequence slots (beyond ``DENSE_ATTENTION_MAX_ENTITIES``). All must be ERNIE's."""
    if request.param == "native kernels":
        if native.entity_kernels() is None:
            pytest.skip("the entity stream's kernels are not built here")
        yield request.param
        return
    if request.param == "ATen ops packed per sequence":
        monkeypatch.setattr(entity_modules, "DENSE_ATTENTION_MAX_ENTITIES", 0)
    with native.entity_kernels_off():
        yield request.param


@pytest.mark.parametrize("knowledge_layers", [2, 4])
def test_packed_entity_stream_equals_dense_masked_formulation(backbone_dir, table,
                                                              knowledge_layers,
                                                              attention_path):
    model = build(ErnieKGModel, backbone_dir, table, knowledge_layers).eval()
    inputs = batch(seed=3)
    with torch.no_grad():
        ours = model(**inputs).last_hidden_state
        reference = _dense_reference(model, **inputs)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


def test_packed_entity_stream_gradients_equal_dense_masked_formulation(backbone_dir, table,
                                                                       attention_path):
    """Training backpropagates through the per-head packing (written through a permuted
    view) and the shared bias exactly as through ERNIE's dense masked stream."""
    model = build(ErnieKGModel, backbone_dir, table, 2, hidden_dropout_prob=0.0,
                  attention_probs_dropout_prob=0.0).train()
    inputs = batch(seed=5)
    projection = torch.randn(3, 12, HIDDEN, generator=torch.Generator().manual_seed(0))
    gradients = []
    for forward in (lambda: model(**inputs).last_hidden_state,
                    lambda: _dense_reference(model, **inputs)):
        model.zero_grad(set_to_none=True)
        (forward() * projection).sum().backward()  # a LayerNorm's output keeps pow(2).sum()
        gradients.append({n: p.grad.clone() for n, p in model.named_parameters()
                          if "entity_attention" in n and p.grad is not None})
    ours, reference = gradients
    assert set(ours) == set(reference) and any("qkv" in n for n in ours)
    for name in ours:
        torch.testing.assert_close(ours[name], reference[name], atol=1e-5, rtol=1e-4)
    assert any(g.abs().sum() > 0 for n, g in ours.items() if "qkv" in n)


@pytest.mark.parametrize("gate, links", [("none", False), ("layer", False), ("token", False),
                                         ("token", True)])
def test_native_entity_stream_gives_the_aten_ops_outputs_and_gradients(
        backbone_dir, table, monkeypatch, gate, links):
    """The compiled kernels (attention core, residual + LayerNorm, gate and fused rows)
    compute what the modules' ATen ops compute, forward and backward, for every gate."""
    if native.entity_kernels() is None:
        pytest.skip("the entity stream's kernels are not built here")
    model = build(ErnieKGModel, backbone_dir, table, 2, knowledge_gate=gate,
                  knowledge_links=links, hidden_dropout_prob=0.0,
                  attention_probs_dropout_prob=0.0).double().train()  # float64: exact
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("entity_gate.scale"):
                parameter.fill_(0.7)  # open: the gate's factor matters
    inputs = batch(seed=7)
    if links:
        inputs["entity_links"] = (inputs["entity_ids"] % 2).long()
    calls: Counter = Counter()

    class Counting:  # the kernels, counting the calls the model makes
        def __getattr__(self, name):
            calls[name] += 1
            return getattr(kernels, name)

    kernels = native.entity_kernels()
    projection = torch.randn(3, 12, HIDDEN, dtype=torch.float64,
                             generator=torch.Generator().manual_seed(0))
    results = []
    for engine in ("native", "aten"):
        monkeypatch.setattr(native, "_loaded", [Counting() if engine == "native" else None])
        cpu = torch.device("cpu")
        assert (native.use_entity_kernels(cpu, torch.float64) is None) == (engine == "aten")
        model.zero_grad(set_to_none=True)
        output = model(**inputs, output_hidden_states=True)
        hidden = output.last_hidden_state
        assert output.entity_last_hidden_state.dtype == torch.float64  # the kernels' dtype
        (hidden * projection).sum().backward()  # not pow(2): a LayerNorm's output keeps it
        results.append((hidden.detach(), {n: p.grad for n, p in model.named_parameters()
                                          if p.grad is not None}))
    (ours, our_grads), (reference, reference_grads) = results
    # a mix and two norm layers: 2 entity attentions, 3 fusions (each with its layer's
    # entity output but the topmost's)
    assert calls == {"entity_attention": 2, "entity_fusion": 3}
    torch.testing.assert_close(ours, reference, atol=1e-10, rtol=1e-10)
    assert set(our_grads) == set(reference_grads)
    knowledge = [n for n in our_grads if knowledge_role(n) is not None]
    assert any("entity_attention.qkv" in n for n in knowledge)
    assert (gate == "none") == all("entity_gate" not in n for n in knowledge)
    for name, gradient in our_grads.items():
        torch.testing.assert_close(gradient, reference_grads[name], atol=1e-9, rtol=1e-9)
    assert all(our_grads[n].abs().max() > 1e-4 for n in knowledge)


def test_an_adapted_w_t_keeps_its_own_forward_beside_the_kernels(backbone_dir, table):
    """The fusion call computes W_t w + b_t itself, so it runs only where W_t is a plain
    linear: an adapter-like subclass (here: doubling its output) is still called, and
    the model gives the ATen path's output."""
    if native.entity_kernels() is None:
        pytest.skip("the entity stream's kernels are not built here")

    class Doubled(torch.nn.Linear):
        def forward(self, tokens):
            return 2 * super().forward(tokens)

    model = build(ErnieKGModel, backbone_dir, table, 2).eval()
    for layer in model.encoder.layer:
        if isinstance(layer, ErnieKGAggregatorLayer):
            plain = layer.intermediate.dense
            layer.intermediate.dense = Doubled(plain.in_features, plain.out_features)
            layer.intermediate.dense.load_state_dict(plain.state_dict())
    inputs = batch(seed=3)
    with torch.no_grad():
        ours = model(**inputs).last_hidden_state
        with native.entity_kernels_off():
            reference = model(**inputs).last_hidden_state
        for layer in model.encoder.layer:  # and the doubling matters
            if isinstance(layer, ErnieKGAggregatorLayer):
                layer.intermediate.dense.__class__ = torch.nn.Linear
        plain = model(**inputs).last_hidden_state
    torch.testing.assert_close(ours, reference)
    assert (ours - plain).abs().max() > 1e-3


def test_entity_attention_inference_path_equals_sdpa(backbone_dir, table):
    """Without dropout, entity attention runs as batched matmuls; it must equal what
    training computes with scaled_dot_product_attention (padding slots masked alike)."""
    model = build(ErnieKGModel, backbone_dir, table, 2).eval()
    attention = next(layer.entity_attention for layer in model.encoder.layer
                     if getattr(layer, "entity_attention", None) is not None)
    entity_ids = torch.tensor([[0, 3, 0, 5, 7, 0], [2, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]])
    layout = EntityLayout.from_entity_ids(entity_ids, torch.float32)
    generator = torch.Generator().manual_seed(0)
    shape = (3, attention.num_heads, layout.num_slots, attention.head_dim)
    query, key, value = (torch.randn(shape, generator=generator) for _ in range(3))
    ours = attention._attend(query, key, value, layout)
    reference = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=layout.key_bias)
    real = (layout.batch_index, slice(None), layout.slot_index)  # the slots unpack reads
    torch.testing.assert_close(ours[real], reference[real], atol=1e-6, rtol=1e-5)
    assert not torch.allclose(ours[real], value[real])  # it attended, not copied


def test_fused_gelu_matches_autograd_index_ops():
    """The custom fusion backward equals autograd's on the generic path, grid and rows."""
    generator = torch.Generator().manual_seed(0)
    pre = torch.randn(10, 6, dtype=torch.float64, generator=generator, requires_grad=True)
    knowledge = torch.randn(3, 6, dtype=torch.float64, generator=generator, requires_grad=True)
    index = torch.tensor([1, 4, 8])
    assert torch.autograd.gradcheck(
        lambda p, k: _FusedGelu.apply(p, k, index, "none"), (pre, knowledge)
    )
    weights = torch.randn(10, 6, dtype=torch.float64, generator=generator)
    row_weights = torch.randn(3, 6, dtype=torch.float64, generator=generator)
    results = []
    for activation in (GELUActivation(), lambda x: torch.nn.functional.gelu(x)):  # fast, generic
        hidden, fused = _fuse(activation, pre, knowledge, index)
        loss = (hidden * weights).sum() + (fused * row_weights).sum()
        results.append((hidden, fused, *torch.autograd.grad(loss, (pre, knowledge))))
    for fast, generic in zip(*results, strict=True):
        torch.testing.assert_close(fast, generic)
    plain = torch.nn.functional.gelu(pre.detach())
    no_entity = torch.ones(10, dtype=torch.bool)
    no_entity[index] = False
    assert torch.equal(results[0][0][no_entity], plain[no_entity])  # GELU(W_t w + b_t) exactly


@pytest.mark.parametrize("gate", ["none", "scalar", "per row"])
def test_inference_fusion_equals_the_training_fusion(gate):
    """Without autograd the fusion runs as plain ops with the gate folded into the add;
    it must give the autograd function's values (and leave ``pre`` untouched)."""
    generator = torch.Generator().manual_seed(3)
    pre = torch.randn(10, 6, generator=generator)
    knowledge = torch.randn(3, 6, generator=generator)
    factor = {"none": None, "scalar": torch.tensor(0.3),
              "per row": torch.rand(3, 1, generator=generator)}[gate]
    index = torch.tensor([1, 4, 8])
    original = pre.clone()
    with torch.no_grad():
        hidden, fused = _fuse(GELUActivation(), pre, knowledge, index, factor)
    assert torch.equal(pre, original)
    trained = [t.detach() for t in _fuse(GELUActivation(), pre.requires_grad_(),
                                         knowledge.requires_grad_(), index, factor)]
    torch.testing.assert_close(hidden, trained[0], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(fused, trained[1], atol=1e-6, rtol=1e-6)
    if factor is not None:  # the gate changed the aligned rows
        plain = _fuse(GELUActivation(), pre.detach(), knowledge.detach(), index)[1]
        assert not torch.allclose(fused, plain)


def test_other_activations_take_the_generic_fusion(tmp_path, table):
    """A backbone whose FFN is not exact GELU (here ReLU) fuses through autograd's ops."""
    torch.manual_seed(0)
    config = BertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=3,
                        num_attention_heads=4, intermediate_size=37, hidden_act="relu",
                        max_position_embeddings=64)
    BertModel(config).save_pretrained(tmp_path)
    model = build(ErnieKGModel, str(tmp_path), table, knowledge_layers=2).eval()
    inputs = batch(seed=5)
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).last_hidden_state,
                                   _dense_reference(model, **inputs), atol=1e-5, rtol=1e-5)


def test_bad_entity_ids_raise(backbone_dir, table):
    model = build(ErnieKGModel, backbone_dir, table)
    inputs = batch()
    with pytest.raises(ValueError, match="num_entities"):
        model(inputs["input_ids"], entity_ids=inputs["entity_ids"] + NUM_ENTITIES)
    with pytest.raises(ValueError, match=r"got values in \[-1, "):
        model(inputs["input_ids"], entity_ids=inputs["entity_ids"] - 1)
    with pytest.raises(ValueError, match="shape"):
        model(inputs["input_ids"], entity_ids=inputs["entity_ids"][:, :5])


# ----------------------------------------------------------------------------- heads
def _labels(cls, size=3, num_labels=5):
    if cls is ErnieKGForEntityTyping:
        return (torch.rand(size, num_labels, generator=torch.Generator().manual_seed(0)) > 0.6
                ).float()
    return torch.tensor([0, 3, 1])[:size]


@pytest.mark.parametrize("cls,mode,markers", [
    (ErnieKGForRelationClassification, "cls", None),
    (ErnieKGForRelationClassification, "markers", [[1, 4], [2, 6], [0, 3]]),
    (ErnieKGForRelationClassification, "entity_start", [[1, 4], [2, 6], [0, 3]]),
    (ErnieKGForEntityTyping, "cls", None),
    (ErnieKGForEntityTyping, "markers", [[1], [2], [3]]),
])
def test_classifier_heads_shapes_loss_and_gradients(backbone_dir, table, cls, mode, markers):
    field = "rc_classifier" if cls is ErnieKGForRelationClassification else "typing_classifier"
    model = build(cls, backbone_dir, table, num_labels=5, **{field: mode}).train()
    assert (model.ernie.pooler is None) == (mode != "cls")
    inputs = batch()
    if markers is not None:
        inputs["marker_positions"] = torch.tensor(markers)
    out = model(**inputs, labels=_labels(cls), output_hidden_states=True)
    assert out.logits.shape == (3, 5) and out.loss.ndim == 0
    assert len(out.hidden_states) == LAYERS + 1 and len(out.entity_hidden_states) == 3
    out.loss.backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert unused == []
    assert not [n for n in model.state_dict() if 'entity_embeddings' in n]  # frozen: mapped
    # W_e learns (the top layer's FFN cannot reach [CLS], so only below it in "cls" mode)
    for layer in model.ernie.encoder.layer[1:-1]:
        assert layer.entity_intermediate.weight.grad.abs().sum() > 0
    assert model.ernie.encoder.layer[2].entity_attention.qkv.weight.grad.abs().sum() > 0
    assert model.ernie.encoder.layer[1].entity_output.dense.weight.grad.abs().sum() > 0


def test_entity_start_reads_the_wordpiece_after_each_marker(backbone_dir, table):
    torch.manual_seed(0)
    model = build(ErnieKGForRelationClassification, backbone_dir, table, num_labels=5,
                  rc_classifier="entity_start").eval()
    inputs = batch()
    inputs["marker_positions"] = torch.tensor([[1, 4], [2, 6], [0, 3]])
    out = model(**inputs, output_hidden_states=True)
    last = out.hidden_states[-1]
    rows = torch.arange(3)[:, None]
    expected = model.classifier(last[rows, inputs["marker_positions"] + 1].reshape(3, -1))
    torch.testing.assert_close(out.logits, expected)


def test_marker_classifier_requires_positions(backbone_dir, table):
    model = build(ErnieKGForRelationClassification, backbone_dir, table, num_labels=5,
                  rc_classifier="markers")
    with pytest.raises(ValueError, match="marker_positions"):
        model(**batch())


def test_typing_threshold_decides(backbone_dir, table):
    model = build(ErnieKGForEntityTyping, backbone_dir, table, num_labels=3,
                  typing_threshold=0.7)
    logits = torch.tensor([[0.0, 0.9, 2.0]])  # probabilities 0.5, 0.71, 0.88
    assert model.predict(logits).tolist() == [[False, True, True]]


def test_unfrozen_entity_table_gets_gradient_on_used_rows(backbone_dir, table):
    model = build(ErnieKGForRelationClassification, backbone_dir, table, num_labels=5,
                  freeze_entity_table=False)
    inputs = batch()
    model(**inputs, labels=_labels(ErnieKGForRelationClassification)).loss.backward()
    grad = model.ernie.entity_embeddings.weight.grad
    used = torch.unique(inputs["entity_ids"][inputs["entity_ids"] > 0])
    assert grad[used].abs().sum(-1).gt(0).all()
    assert grad[0].abs().sum() == 0 and grad[2].abs().sum() == 0


def test_pretraining_head_losses_and_dea_candidates(backbone_dir, table):
    model = build(ErnieKGForPreTraining, backbone_dir, table).train()
    inputs = batch()
    labels = torch.full_like(inputs["input_ids"], -100)
    labels[:, 2] = inputs["input_ids"][:, 2]
    entity_labels = torch.where(inputs["entity_ids"] > 0, inputs["entity_ids"], -100)
    noisy = inputs["entity_ids"].clone()
    noisy[0, 4] = 0  # one alignment masked away by dEA
    out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                entity_ids=noisy, labels=labels, next_sentence_label=torch.tensor([0, 1, 0]),
                entity_labels=entity_labels)
    assert out.prediction_logits.shape == (3, VOCAB)  # the labelled positions only
    assert out.seq_relationship_logits.shape == (3, 2)
    assert out.entity_candidates.tolist() == [1, 3, 5, NUM_ENTITIES]
    assert out.entity_logits.shape == (5, 4)  # every labelled token, masked one included
    torch.testing.assert_close(out.loss, out.mlm_loss + out.nsp_loss + out.dea_loss)
    out.loss.backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert unused == []
    assert model.cls.predictions.decoder.weight is model.ernie.embeddings.word_embeddings.weight


def test_masked_lm_loss_over_labelled_positions_equals_the_full_projection(backbone_dir,
                                                                           table):
    """Projecting only the labelled tokens gives BERT's loss over every position (with
    -100 ignored), and each labelled row is that position's full-vocabulary logits."""
    model = build(ErnieKGForPreTraining, backbone_dir, table).eval()
    inputs = batch()
    labels = torch.full_like(inputs["input_ids"], -100)
    labels[0, 1], labels[1, 3], labels[2, 1], labels[2, 5] = 7, 9, 11, 13
    with torch.no_grad():
        full = model(**inputs).prediction_logits
        sparse = model(**inputs, labels=labels)
    assert full.shape == (3, 12, VOCAB) and sparse.prediction_logits.shape == (4, VOCAB)
    torch.testing.assert_close(sparse.prediction_logits, full[labels != -100])
    expected = torch.nn.functional.cross_entropy(full.view(-1, VOCAB), labels.view(-1),
                                                 ignore_index=-100)
    torch.testing.assert_close(sparse.mlm_loss, expected)


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_gradient_checkpointing_gives_the_same_gradients(backbone_dir, table, dropout):
    """With dropout too: the recomputed layers draw the same masks, the entity stream's
    included (its generators are seeded from the global state checkpointing restores)."""
    model = build(ErnieKGForRelationClassification, backbone_dir, table, num_labels=5,
                  hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout).train()
    with torch.no_grad():  # W_e large enough that the entity stream's masks show
        for name, parameter in model.named_parameters():
            if name.endswith("entity_intermediate.weight"):
                parameter.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(5))
    inputs, labels = batch(), _labels(ErnieKGForRelationClassification)
    projection = torch.randn(3, 12, HIDDEN, generator=torch.Generator().manual_seed(0))

    def gradients() -> dict[str, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        torch.manual_seed(11)
        output = model(**inputs, labels=labels, output_hidden_states=True)
        # the untrained head's loss barely reads the states: project them as well
        (output.loss + (output.hidden_states[-1] * projection).sum()).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = gradients()
    model.activation_checkpointing_enable()
    assert all(layer.gradient_checkpointing for layer in model.ernie.encoder.layer)
    checkpointed = gradients()
    assert set(checkpointed) == set(plain)
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad)


# ----------------------------------------------------------------------------- persistence
@pytest.mark.parametrize("cls", [ErnieKGModel, ErnieKGForRelationClassification,
                                 ErnieKGForEntityTyping, ErnieKGForPreTraining])
def test_save_and_load_give_identical_outputs(backbone_dir, table, tmp_path, cls):
    extra = {} if cls in (ErnieKGModel, ErnieKGForPreTraining) else {"num_labels": 5}
    model = build(cls, backbone_dir, table, **extra).eval()
    model.save_pretrained(tmp_path)
    assert not (tmp_path / ENTITY_IDS_FILE).exists()  # a table built in memory is copied:
    assert EntityEmbeddings.load(tmp_path / TABLE_DIR).entity_ids == table.entity_ids
    loaded = cls.from_pretrained(tmp_path).eval()
    inputs = batch()
    with torch.no_grad():
        before, after = model(**inputs), loaded(**inputs)
    key = "last_hidden_state" if cls is ErnieKGModel else (
        "prediction_logits" if cls is ErnieKGForPreTraining else "logits")
    assert torch.equal(before[key], after[key])
    assert loaded.entity_ids == table.entity_ids
    assert isinstance(loaded.base_model.entity_embeddings, MappedEntityTable)  # not a weight


def test_auto_classes_and_table_hash_check(backbone_dir, table, tmp_path):
    assert isinstance(AutoConfig.for_model("ernie_kg"), ErnieKGConfig)
    build(ErnieKGForRelationClassification, backbone_dir, table, num_labels=5,
          id2label={i: f"P{i}" for i in range(5)}).save_pretrained(tmp_path / "rc")
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rc")
    assert isinstance(loaded, ErnieKGForRelationClassification)
    assert loaded.config.id2label[3] == "P3" and loaded.config.label2id["P3"] == 3
    base = AutoModel.from_pretrained(tmp_path / "rc")
    assert isinstance(base, ErnieKGModel) and base.entity_row("Q0") == 1

    vectors = tmp_path / "rc" / TABLE_DIR / "entity_vectors.npy"
    np.save(vectors, table.vectors[::-1])  # the same size, other contents
    with pytest.raises(SavedFileError, match="does not match the sha256"):
        ErnieKGForRelationClassification.from_pretrained(tmp_path / "rc")


def test_model_without_kg_ids_has_random_rows(backbone_dir):
    model = ErnieKGModel.from_backbone(backbone_dir, num_knowledge_layers=1, num_entities=7,
                                       entity_dim=ENTITY_DIM, entity_attention_heads=2)
    assert model.entity_embeddings.weight.shape == (8, ENTITY_DIM)
    assert torch.all(model.entity_embeddings.weight[0] == 0) and model.entity_ids is None
    out = model(torch.tensor([[5, 6, 7]]), entity_ids=torch.tensor([[0, 7, 0]]))
    assert out.entity_last_hidden_state.shape == (1, 3, ENTITY_DIM)


# ----------------------------------------------------------------------------- Trainer
class _ListDataset(torch.utils.data.Dataset):
    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, index):
        return self.rows[index]


@pytest.mark.parametrize("cls", [ErnieKGForRelationClassification, ErnieKGForEntityTyping])
def test_trainer_runs_a_few_steps(backbone_dir, table, tmp_path, cls):
    from transformers import Trainer, TrainingArguments

    model = build(cls, backbone_dir, table, num_labels=5)
    inputs, labels = batch(size=3), _labels(cls)
    rows = [{"input_ids": inputs["input_ids"][i], "attention_mask": inputs["attention_mask"][i],
             "entity_ids": inputs["entity_ids"][i], "labels": labels[i],
             "marker_positions": torch.tensor([1, 4])[: 2 if cls is not ErnieKGForEntityTyping
                                                     else 1]}
            for i in range(3)] * 2
    before = model.classifier.weight.detach().clone()
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=2,
                             learning_rate=1e-3, report_to=[], save_strategy="no",
                             logging_strategy="no", disable_tqdm=True, use_cpu=True)
    result = Trainer(model=model, args=args, train_dataset=_ListDataset(rows)).train()
    assert result.global_step == 3 and torch.isfinite(torch.tensor(result.training_loss))
    assert not torch.equal(before, model.classifier.weight)
    assert isinstance(model.ernie.entity_embeddings, MappedEntityTable)  # frozen: no weight


# ----------------------------------------------------------------------------- real MiniLM
def test_minilm_knowledge_off_matches_hf_automodel():
    from transformers import AutoTokenizer

    from ernie_kg.paths import default_backbone

    path = default_backbone()
    tokenizer = AutoTokenizer.from_pretrained(path)
    encoded = tokenizer(["Paris is the capital of France.", "Berlin lies on the Spree."],
                        padding=True, return_tensors="pt")
    reference = AutoModel.from_pretrained(path).eval()
    model = ErnieKGModel.from_backbone(path, num_knowledge_layers=3, num_entities=4,
                                       knowledge_gate="none").eval()
    gated = ErnieKGModel.from_backbone(path, num_knowledge_layers=3, num_entities=4).eval()
    entity_ids = torch.zeros_like(encoded["input_ids"])
    entity_ids[0, 1], entity_ids[0, 6] = 1, 2
    with torch.no_grad():
        expected = reference(**encoded).last_hidden_state
        off = model(**encoded).last_hidden_state
        on = model(**encoded, entity_ids=entity_ids).last_hidden_state
        gated_on = gated(**encoded, entity_ids=entity_ids).last_hidden_state
    torch.testing.assert_close(off, expected, atol=1e-5, rtol=0)
    assert model.config.layer_types == ["sim", "sim", "mix", "norm", "norm", "norm"]
    assert torch.equal(on[1], off[1]) and not torch.allclose(on[0], off[0])
    torch.testing.assert_close(gated_on, expected, atol=1e-5, rtol=0)  # starts as MiniLM


def test_entity_dropout_only_acts_in_training(backbone_dir, table):
    no_dropout = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    model = build(ErnieKGModel, backbone_dir, table, entity_dropout=0.999, **no_dropout)
    inputs = batch()
    with_entities = model.eval()(**inputs).last_hidden_state
    without = model(inputs["input_ids"], attention_mask=inputs["attention_mask"])
    assert not torch.allclose(with_entities, without.last_hidden_state)  # eval keeps them
    torch.manual_seed(0)
    dropped = model.train()(**inputs).last_hidden_state  # (nearly) every entity dropped
    torch.testing.assert_close(dropped, without.last_hidden_state)
    with pytest.raises(Exception, match="entity_dropout"):  # HF wraps config errors
        ErnieKGConfig(entity_dropout=1.0)


def test_shutting_the_gates_makes_a_model_its_backbone_again(backbone_dir, table):
    model = build(ErnieKGModel, backbone_dir, table, knowledge_gate="token").eval()
    inputs = batch()
    with torch.no_grad():
        text_only = model(inputs["input_ids"], attention_mask=inputs["attention_mask"])
        for name, parameter in model.named_parameters():
            if name.endswith("entity_gate.scale"):
                parameter.fill_(1.0)  # as pre-training leaves them: open
        opened = model(**inputs).last_hidden_state
        assert not torch.allclose(opened, text_only.last_hidden_state)
        assert shut_knowledge_gates(model) == 3  # the mix layer and two norm layers
        torch.testing.assert_close(model(**inputs).last_hidden_state,
                                   text_only.last_hidden_state)


def test_a_shut_gate_trains_step_for_step_as_its_text_only_twin(backbone_dir, table,
                                                                attention_path):
    """Same seed, same batches: with the gates held shut, the model fed entities and the
    one fed none stay equal through training with dropout on (the entity modules draw
    their dropout from a stream of their own, :mod:`ernie_kg.modeling.random_streams`)."""
    inputs, labels = batch(), torch.tensor([0, 3, 1])
    twins = []
    for entity_ids in (inputs["entity_ids"], None):
        model = build(ErnieKGForRelationClassification, backbone_dir, table, num_labels=5,
                      knowledge_gate="token", rc_classifier="cls", entity_dropout=0.3).train()
        trained = [p for n, p in model.named_parameters() if not n.endswith("gate.scale")]
        optimizer = torch.optim.SGD(trained, lr=0.5)
        torch.manual_seed(5)
        for _ in range(3):
            model(inputs["input_ids"], attention_mask=inputs["attention_mask"],
                  entity_ids=entity_ids, labels=labels).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        twins.append(model)
    fed, text_only = (dict(m.named_parameters()) for m in twins)
    backbone = [n for n in fed if knowledge_role(n) is None]
    assert len(backbone) > 20
    for name in backbone:
        torch.testing.assert_close(fed[name], text_only[name], atol=1e-6, rtol=0)
    assert not torch.equal(fed["classifier.weight"], build(
        ErnieKGForRelationClassification, backbone_dir, table, num_labels=5,
        knowledge_gate="token", rc_classifier="cls").classifier.weight)


@pytest.mark.parametrize("gate_lr", [None, 1e-2])
def test_the_gates_openings_train_at_their_rate_without_weight_decay(backbone_dir, table,
                                                                    tmp_path, gate_lr):
    from ernie_kg.training.finetuning import ErnieKGTrainer, training_arguments

    model = build(ErnieKGForRelationClassification, backbone_dir, table, num_labels=5,
                  knowledge_gate="token", rc_classifier="entity_start")
    args = training_arguments(tmp_path, learning_rate=5e-5, weight_decay=0.01,
                              use_cpu=True, progress=False, eval_strategy="no",
                              load_best_model_at_end=False)
    optimizer = ErnieKGTrainer(model=model, args=args, knowledge_learning_rate=5e-4,
                               gate_learning_rate=gate_lr).create_optimizer()
    rate = {id(p): (group["lr"], group["weight_decay"])
            for group in optimizer.param_groups for p in group["params"]}
    named = dict(model.named_parameters())
    scales = [n for n in named if n.endswith("entity_gate.scale")]
    expected = (gate_lr or 5e-4, 0.0)  # default: the knowledge rate
    assert len(scales) == 3 and all(rate[id(named[n])] == expected for n in scales)
    trust = next(n for n in named if "entity_gate.trust.weight" in n)
    assert rate[id(named[trust])] == (5e-4, 0.01)  # the trust is a knowledge module
    assert rate[id(named["ernie.embeddings.word_embeddings.weight"])] == (5e-5, 0.01)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(named)


def test_new_models_get_the_recipes_gate_and_an_explicit_choice_wins(backbone_dir, table):
    from ernie_kg.modeling.configuration import DEFAULT_KNOWLEDGE_GATE

    assert ErnieKGModel.from_backbone(backbone_dir, table).config.knowledge_gate \
        == DEFAULT_KNOWLEDGE_GATE == "token"
    assert ErnieKGModel.from_backbone(backbone_dir, table,
                                      knowledge_gate="layer").config.knowledge_gate == "layer"


def test_a_gate_that_reads_entity_links_starts_closed_and_then_tells_them_apart(
        backbone_dir, backbone, table):
    with pytest.raises(Exception, match="knowledge_links"):
        ErnieKGConfig(knowledge_gate="layer", knowledge_links=True)
    model = build(ErnieKGForRelationClassification, backbone_dir, table, num_labels=5,
                  knowledge_gate="token", knowledge_links=True,
                  rc_classifier="entity_start").eval()
    inputs = batch()
    linked = (inputs["entity_ids"] > 0).long()
    with torch.no_grad():
        expected = backbone(inputs["input_ids"], inputs["attention_mask"]).last_hidden_state
        closed = model.ernie(inputs["input_ids"], inputs["attention_mask"],
                             entity_ids=inputs["entity_ids"], entity_links=linked)
    assert torch.equal(closed.last_hidden_state, expected)  # closed: links change nothing
    for layer in model.ernie.encoder.layer:  # an opened gate that trusts linked entities
        if getattr(layer, "entity_gate", None) is not None:
            layer.entity_gate.scale.data.fill_(1.0)
            layer.entity_gate.trust.weight.data[0, -1] = 5.0

    def encode(links):
        with torch.no_grad():
            return model.ernie(inputs["input_ids"], inputs["attention_mask"],
                               entity_ids=inputs["entity_ids"],
                               entity_links=links).last_hidden_state

    unlinked = torch.zeros_like(linked)
    assert torch.equal(encode(None), encode(unlinked))  # None reads as "no fact"
    assert not torch.equal(encode(linked)[0], encode(unlinked)[0])
    assert torch.equal(encode(linked)[1], encode(unlinked)[1])  # row 1 has no entity
    with pytest.raises(ValueError, match="entity_links has shape"):
        encode(linked[:, :5])


def test_entity_stream_draws_leave_the_global_generator_as_it_was():
    """The entity stream's masks come from generators seeded by the global state, which
    they read and do not advance; a site draws the same mask from the same state (and
    another site another mask)."""
    torch.manual_seed(0)
    before = torch.get_rng_state()
    ones, cpu = torch.ones(50, 8), torch.device("cpu")
    dropped = entity_dropout(ones, 0.25, entity_generator(cpu, salt=3))
    assert torch.equal(torch.get_rng_state(), before)
    kept = dropped != 0
    assert 0.5 < kept.float().mean() < 0.95
    torch.testing.assert_close(dropped[kept], torch.full_like(dropped[kept], 1 / 0.75))
    assert torch.equal(entity_dropout(ones, 0.25, entity_generator(cpu, salt=3)), dropped)
    assert not torch.equal(entity_dropout(ones, 0.25, entity_generator(cpu, salt=4)), dropped)
    assert torch.equal(torch.get_rng_state(), before)
