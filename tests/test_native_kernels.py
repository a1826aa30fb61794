"""The entity stream's compiled CPU kernels (ernie_kg/modeling/native_entity_stream.cpp):
their gradients against finite differences, their values against the ATen formulas, their
dropout, and where they run. The model-level comparison with the ATen ops is in
test_modeling.py."""

from __future__ import annotations

import shutil

import pytest
import torch
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from ernie_kg.modeling import native
from ernie_kg.pure_python import PURE_PYTHON_ENV, pure_python_requested

kernels = native.entity_kernels()
needs_kernels = pytest.mark.skipif(kernels is None, reason="the kernels are not built here")
DOUBLE = torch.float64


def test_the_kernels_are_built_where_a_compiler_exists():
    """They build on first use wherever a C++ compiler exists (as on CI)."""
    if pure_python_requested():
        pytest.skip(f"{PURE_PYTHON_ENV} is set")
    if shutil.which("c++") is None:
        pytest.skip("no C++ compiler: the entity stream runs its ATen ops")
    assert kernels is not None


def _qkv(rows: int, dim: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rows, 3 * dim, dtype=DOUBLE, generator=generator).requires_grad_()


@needs_kernels
def test_attention_core_is_softmax_attention_within_each_sequence():
    batch_index = torch.tensor([0, 0, 0, 1, 2, 2, 3, 3, 3, 3])
    rows, heads, dim = len(batch_index), 2, 8
    qkv = _qkv(rows, dim)
    query, key, value = qkv.detach().view(rows, 3, heads, dim // heads).permute(1, 2, 0, 3)
    other = batch_index[:, None] != batch_index[None, :]
    scores = (query @ key.transpose(1, 2)) / (dim // heads) ** 0.5
    reference = (scores.masked_fill(other, float("-inf")).softmax(-1) @ value)
    ours = kernels.attention_core(qkv, batch_index, heads, 0.0, None)
    torch.testing.assert_close(ours, reference.transpose(0, 1).reshape(rows, dim))
    assert torch.autograd.gradcheck(
        lambda q: kernels.attention_core(q, batch_index, heads, 0.0, None), (qkv,))


@needs_kernels
def test_dropout_draws_from_the_generator_handed_in_and_backpropagates_through_its_mask():
    batch_index = torch.tensor([0, 0, 1, 1, 1])
    qkv, generator = _qkv(5, 4, seed=1), torch.Generator()

    def attend(q):
        generator.manual_seed(3)
        return kernels.attention_core(q, batch_index, 2, 0.5, generator)

    def normalize(x, y, weight, bias):
        generator.manual_seed(4)
        return kernels.residual_layer_norm(x, y, weight, bias, 1e-5, 0.5, generator)

    torch.manual_seed(0)
    before = torch.get_rng_state()
    first, again = attend(qkv), attend(qkv)
    assert torch.equal(first, again)  # the same draws from the same seed
    assert not torch.allclose(first, kernels.attention_core(qkv, batch_index, 2, 0.0, None))
    assert torch.equal(torch.get_rng_state(), before)  # the global generator untouched
    assert torch.autograd.gradcheck(attend, (qkv,))
    generator_ = torch.Generator().manual_seed(0)
    x, y = (torch.randn(6, 5, dtype=DOUBLE, generator=generator_).requires_grad_()
            for _ in range(2))
    weight, bias = (torch.randn(5, dtype=DOUBLE, generator=generator_).requires_grad_()
                    for _ in range(2))
    dropped = normalize(x, y, weight, bias) - F.layer_norm(x + y, [5], weight, bias, 1e-5)
    assert dropped.abs().amax(1).gt(1e-6).sum() >= 3  # about half of y's entries dropped
    assert torch.autograd.gradcheck(normalize, (x, y, weight, bias))


@needs_kernels
def test_residual_layer_norm_is_layer_norm_of_the_sum():
    generator = torch.Generator().manual_seed(2)
    x, y = (torch.randn(7, 6, dtype=DOUBLE, generator=generator).requires_grad_()
            for _ in range(2))
    weight, bias = (torch.randn(6, dtype=DOUBLE, generator=generator).requires_grad_()
                    for _ in range(2))
    torch.testing.assert_close(kernels.residual_layer_norm(x, y, weight, bias, 1e-5, 0.0, None),
                               F.layer_norm(x + y, [6], weight, bias, 1e-5))
    assert torch.autograd.gradcheck(
        lambda *a: kernels.residual_layer_norm(*a, 1e-5, 0.0, None), (x, y, weight, bias))


@needs_kernels
@pytest.mark.parametrize("gate", ["none", "layer", "token", "token with links"])
def test_fuse_rows_is_the_gated_fusion(gate):
    """act(W_t w + b_t + scatter(gate * knowledge)) over the grid, and its aligned rows;
    the token gate reads the same tokens, so their gradient has both paths."""
    generator = torch.Generator().manual_seed(4)

    def leaf(*shape):
        return torch.randn(*shape, dtype=DOUBLE, generator=generator).requires_grad_()

    index = torch.tensor([1, 4, 5, 9])
    tokens, token_weight, token_bias = leaf(12, 5), leaf(6, 5), leaf(6)
    knowledge, entities = leaf(4, 6), leaf(4, 3)
    links = torch.tensor([[1.0], [0.0], [1.0], [0.0]], dtype=DOUBLE)
    trust_weight, trust_bias = leaf(1, 5 + 3 + (gate == "token with links")), leaf(1)
    scale = torch.tensor(0.4, dtype=DOUBLE, requires_grad=True)
    read_links = links if gate == "token with links" else None

    def fused(tokens, token_weight, token_bias, knowledge, entities=None, trust_weight=None,
              trust_bias=None, scale=None):
        return tuple(kernels.fuse_rows(tokens, token_weight, token_bias, knowledge, index,
                                       entities, read_links, trust_weight, trust_bias, scale,
                                       "none"))

    def factor(tokens, entities=None, trust_weight=None, trust_bias=None, scale=None):
        if scale is None:
            return 1.0
        if trust_weight is None:
            return torch.tanh(scale)
        parts = [tokens[index], entities] + ([read_links] if read_links is not None else [])
        trust = torch.cat(parts, 1) @ trust_weight.t() + trust_bias
        return torch.sigmoid(trust) * 2 * torch.tanh(scale)

    def reference(tokens, token_weight, token_bias, knowledge, **gate_inputs):
        grid = F.linear(tokens, token_weight, token_bias).index_put(
            (index,), knowledge * factor(tokens, **gate_inputs), accumulate=True)
        hidden = F.gelu(grid)
        return hidden, hidden[index]

    inputs = (tokens, token_weight, token_bias, knowledge)
    if gate == "none":
        call, expect = fused, reference
    elif gate == "layer":
        inputs += (scale,)

        def call(*a):
            return fused(*a[:4], scale=a[4])

        def expect(*a):
            return reference(*a[:4], scale=a[4])
    else:
        inputs += (entities, trust_weight, trust_bias, scale)

        def call(*a):
            return fused(*a[:4], *a[4:])

        def expect(*a):
            return reference(*a[:4], entities=a[4], trust_weight=a[5], trust_bias=a[6],
                             scale=a[7])

    for ours, expected in zip(call(*inputs), expect(*inputs), strict=True):
        torch.testing.assert_close(ours, expected)
    assert torch.autograd.gradcheck(call, inputs)


def test_the_kernels_run_only_where_they_compute_what_the_aten_ops_would():
    """A float CPU pass outside autocast and dispatch modes (a FLOP counter counts the
    ATen ops), unless switched off; never in other dtypes."""
    expected, cpu = kernels, torch.device("cpu")  # None where they are not built: nowhere
    assert native.use_entity_kernels(cpu, torch.float32) is expected
    assert native.use_entity_kernels(cpu, DOUBLE) is expected
    assert native.use_entity_kernels(cpu, torch.bfloat16) is None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert native.use_entity_kernels(cpu, torch.float32) is None
    with FlopCounterMode(display=False):
        assert native.use_entity_kernels(cpu, torch.float32) is None
    with native.entity_kernels_off():
        assert native.use_entity_kernels(cpu, torch.float32) is None
    assert native.use_entity_kernels(cpu, torch.float32) is expected


@needs_kernels
def test_a_second_derivative_is_refused_with_the_switch_to_use():
    qkv = _qkv(4, 4)
    out = kernels.attention_core(qkv, torch.tensor([0, 0, 1, 1]), 2, 0.0, None)
    (grad,) = torch.autograd.grad(out.sum(), qkv, create_graph=False)
    assert grad.abs().sum() > 0
    with pytest.raises(RuntimeError, match="entity_kernels_off"):
        torch.autograd.grad(out.sum(), qkv, create_graph=True)


@needs_kernels
def test_large_inputs_split_across_threads_to_the_same_values():
    """Beyond 4 x 32768 elements the loops run in parallel chunks (rows and sequences are
    independent): the values are those of one thread, bit for bit."""
    generator = torch.Generator().manual_seed(6)
    batch_index = torch.arange(400).repeat_interleave(8)  # 400 sequences of 8 entities
    qkv = torch.randn(len(batch_index), 3 * 64, generator=generator)
    tokens, entities = torch.randn(9000, 48, generator=generator), torch.randn(3200, 64)
    # one-hot products are exact whatever the BLAS splits by thread: only the loops vary
    token_weight = torch.eye(48).repeat(11, 1)[:512]
    weight, bias = torch.eye(64).repeat(8, 1), torch.randn(512, generator=generator)
    token_bias = torch.randn(512, generator=generator)
    index = torch.arange(0, 9000, 2)[:3200]
    threads, results = torch.get_num_threads(), []
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            results.append([kernels.attention_core(qkv, batch_index, 4, 0.0, None),
                            *kernels.entity_fusion(tokens, token_weight, token_bias, entities,
                                                   weight, bias, index, None, None, None, None,
                                                   "none", None, None, None, None, 0.0, 0.0,
                                                   None)[:2]])
    finally:
        torch.set_num_threads(threads)
    for one, two in zip(*results, strict=True):
        assert torch.equal(one, two)
