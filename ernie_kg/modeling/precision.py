"""Reduced-precision inference: a float32 ERNIE-KG model run in bfloat16 or int8.

Why here and not in each classifier: every saved classifier, the evaluation loop and the
feature extractor call the same model, so the precision is a property of the model
object, set once (:func:`reduce_precision`, applied by
:meth:`~ernie_kg.pipelines.base.SavedTextModel.to_dtype`) and the same for every path.

* ``bfloat16`` has two forms. ``"cast"``: every weight is cast to bf16 and the whole
  forward runs in bf16 (LayerNorm and attention's softmax accumulate in float32 inside
  their CPU kernels). ``"autocast"``: the weights stay float32 and the forward runs under
  ``torch.autocast``, which casts the inputs of matrix products (and their weights, on
  every call) to bf16 and keeps LayerNorm, softmax and the loss in float32; its logits
  are float32.
  :data:`BF16_MODE` (cast) is the faster with the same predictions, measured on this
  project's CPU (see its comment).
* ``int8``: ``torch.ao.quantization.quantize_dynamic`` replaces every ``nn.Linear`` by
  an int8 one: the backbone's attention and feed-forward layers, the entity stream's
  attention, ``W_e`` (``entity_intermediate``) and output projections, the gates'
  ``trust`` layers, the pooler and the classifier. Weights are quantized once, per
  output channel (``per_channel_dynamic_qconfig``: on FewRel-16 it agreed with float32
  as often as per-tensor or more, at the same speed); activations per batch, per tensor,
  over the full 8 bits where the CPU has VNNI (:func:`int8_full_range`; torch's module
  keeps 7: agreement with float32 on FewRel-16 fell from 98.1% to 95.9% on 640 test
  examples, from 98.8% to 97.8% on 320 dev examples); input features beyond
  :data:`INT8_OUTLIER_THRESHOLD` in a call are multiplied in float32 instead
  (:class:`Int8DynamicLinear`, LLM.int8()'s decomposition). Attention's query, key and
  value run as one int8 product (:class:`SharedInputProjection`). Where the CPU has AMX tiles
  and torch's default ``x86`` engine is set, the weights are packed for oneDNN
  (:func:`int8_packing_engine`): the engine matters only when packing, and ``x86``
  packs for fbgemm, which leaves AMX unused.
  Everything that is not an ``nn.Linear`` stays float32: embeddings, LayerNorms, the
  attention products and softmax, the fused GELU with the entities added
  (``layers._fuse`` gets the quantized layers' float32 outputs), the gates' tanh/sigmoid.
  :data:`INT8_KEEP_FLOAT` can keep named linear layers in float32; none needs to be
  kept to run. Dynamic quantization has CPU kernels only (fbgemm / x86 / onednn /
  qnnpack); torch 2.13 marks ``torch.ao.quantization`` deprecated in favour of torchao,
  so its warnings are silenced here.
* The entity table stays float32 in every mode: a frozen table is a memory map of the
  saved vectors, shared through the page cache, and casting it would copy all of it. A
  batch's rows are cast at the model boundary (``ErnieKGModel.forward`` casts the
  looked-up rows to the embedding output's dtype), so only ``[N, entity_dim]`` moves.

Logits come back in the model's dtype; the inference loops return float32 numpy arrays.
"""

from __future__ import annotations

import functools
import math
import warnings
import weakref
from typing import Any

import torch
from torch import nn
from torch.ao.nn.quantized import dynamic as quantized_dynamic

from ernie_kg.errors import ErnieKGError, SettingError

__all__ = ["BF16_MODE", "BF16_MODES", "DTYPES", "INT8_KEEP_FLOAT",
           "INT8_OUTLIER_THRESHOLD", "FullRangeDynamicLinear", "Int8DynamicLinear",
           "ProjectionSlice", "SharedInputProjection",
           "check_dtype", "int8_engine", "int8_full_range", "int8_packing_engine",
           "reduce_precision"]

#: The inference precisions a saved model takes (``float32``: the model as trained).
DTYPES = ("float32", "bfloat16", "int8")
#: The two ways to run bfloat16 (see the module docstring).
BF16_MODES = ("cast", "autocast")
#: The bfloat16 form used by ``dtype="bfloat16"``: the faster, with the same predictions.
#: Measured on AMD EPYC (lscpu flags avx512_bf16 and avx512_vnni, no AMX), torch 2.13, 1
#: thread, 1-min load 3.4-3.9 (other jobs on the 2 cores), runs/fewrel16_v2/open-ernie-
#: seed0/model (MiniLM 6 x 384) on evenly spaced FewRel-16 dev examples, interleaved
#: rounds, median times: batch 64 (320 examples, 7 rounds): cast 257.7 ex/s, autocast
#: 255.8, float32 89.4 (2.88x / 2.86x; paired autocast/cast time 1.006, a tie); batch 1
#: (64 examples, 5 rounds, one-call ``predict``): cast 98.1 ex/s, autocast 80.2, float32
#: 53.9 (1.82x / 1.49x; autocast casts every weight again on every call). Both agreed with
#: float32 on every prediction. Cast also halves the weights' memory. Rerun:
#: ``benchmarks/reduced_precision.py --bf16-modes``.
BF16_MODE = "cast"
#: Name fragments of the ``nn.Linear`` layers int8 leaves in float32: none. Every layer
#: runs correctly in int8. The FFN's W_t reads LayerNorm outputs with one outlier channel
#: (up to 28 against a median channel maximum of 1.9, FewRel-16 MiniLM model), but keeping
#: it in float32 only moved agreement from 98.1% to 99.2% on test and from 98.8% to 98.4%
#: on dev (noise, 1-2 examples) and made int8 about 1.6x slower, so it is quantized too.
INT8_KEEP_FLOAT: tuple[str, ...] = ()
#: Input features whose magnitude exceeds this in a call skip int8 (LLM.int8()'s 6.0; see
#: :class:`Int8DynamicLinear`); ``math.inf``: plain dynamic quantization. Chosen on
#: FewRel-16 dev (960 examples, runs/fewrel16_v2/open-ernie-seed0, AMD EPYC with AVX2 and
#: no VNNI, so 7-bit activations): agreement with float32 96.35% plain, 99.27% at 3, 4
#: and 6, 99.06% at 8, 98.33% at 12; 6 is the fastest of the best. Test (1920, the same
#: machine): 99.11% against 97.81% plain, 1.35x float32 against 1.56x.
INT8_OUTLIER_THRESHOLD = 6.0


def check_dtype(dtype: str) -> str:
    """``dtype`` if it is one of :data:`DTYPES` (and, for int8, a quantized engine is
    there), else a :class:`~ernie_kg.errors.SettingError` naming the allowed values:
    checked before a model is loaded, so a typo costs no load."""
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise SettingError(f"dtype {dtype!r} is not one of: {', '.join(DTYPES)}")
    if dtype == "int8":
        int8_engine()
    return dtype


def int8_engine() -> str:
    """The quantized engine int8 inference will use; an error when torch has none (a
    build without FBGEMM/oneDNN/QNNPACK, or ``torch.backends.quantized.engine='none'``)."""
    engines = [e for e in torch.backends.quantized.supported_engines if e != "none"]
    engine = torch.backends.quantized.engine
    if not engines or engine not in engines:
        raise ErnieKGError(
            f"dtype 'int8' needs a quantized engine (fbgemm, x86, onednn or qnnpack); this "
            f"torch build offers {engines or 'none'} and the current engine is {engine!r}. "
            "Use dtype 'bfloat16' or 'float32', or a torch build with quantized kernels")
    return engine


def int8_packing_engine() -> str:
    """The engine int8 weights are packed for: ``onednn`` on a CPU with AMX tiles while
    the engine is torch's default ``x86``, else :func:`int8_engine`.

    Why: a packed weight keeps its engine's kernel whatever engine is set later, and
    ``x86`` packs for fbgemm, whose kernels use VNNI but not AMX. On an Intel Xeon with
    AMX (2 threads, torch 2.13) a ``[2560, 384] x [384, 1536]`` dynamic int8 product took
    1.1 ms packed for oneDNN, 2.9 ms for fbgemm (float32: 7.9 ms); the FewRel-16 model's
    int8 inference ran at 0.99x float32 packed for fbgemm and at 1.15-1.25x packed for
    oneDNN, in runs of results/reduced_precision_intel.md's command (1.35-1.40x once
    query, key and value were one product, :class:`SharedInputProjection`).
    An engine the user chose (anything but ``x86``) is kept."""
    engine = int8_engine()
    if engine == "x86" and _cpu_supports("_is_amx_tile_supported") and \
            "onednn" in torch.backends.quantized.supported_engines:
        return "onednn"
    return engine


def _cpu_supports(*checks: str) -> bool:
    """Whether any of torch's ``torch.cpu._is_*_supported`` checks holds (False where this
    torch lacks them)."""
    cpu = getattr(torch, "cpu", None)
    return any(getattr(cpu, check, lambda: False)() for check in checks)


def int8_full_range() -> bool:
    """Whether int8 activations may use all 8 bits: on x86 engines with VNNI (or AMX).

    Why: without VNNI, fbgemm multiplies u8 x s8 pairs into int16 (``vpmaddubsw``), which
    saturates unless activations keep 7 bits, so torch's dynamic ``Linear`` always passes
    ``reduce_range=True``. VNNI (``vpdpbusd``) accumulates in int32 and cannot saturate;
    there the 8th bit halves the activations' rounding error for free."""
    vnni = _cpu_supports("_is_vnni_supported", "_is_amx_tile_supported")
    return vnni and torch.backends.quantized.engine in ("x86", "fbgemm", "onednn")


class Int8DynamicLinear(quantized_dynamic.Linear):
    """torch's dynamic int8 ``Linear`` with LLM.int8()'s decomposition of outlier features.

    Why: activations are quantized per call with one scale for the whole tensor, so one
    input feature far larger than the rest (BERT's LayerNorm outputs have a few: up to 28
    against a median channel maximum of 1.9 in the FewRel-16 MiniLM model) stretches the
    scale and leaves the other features a few levels each. As in LLM.int8() (Dettmers et
    al., 2022), the features whose magnitude exceeds :data:`INT8_OUTLIER_THRESHOLD` in this
    call are taken out of the int8 product and multiplied in float32 with their weight
    columns (dequantized once, cached); a call with none costs one min/max pass.

    The features beyond the threshold are the same few from call to call, so the previous
    call's set is tried first (:meth:`_split`): checking that this call has exactly those
    costs one min/max pass over the masked input, where finding them costs three. The
    result is the same either way, whatever came before."""

    reduce_range = True
    outlier_threshold = INT8_OUTLIER_THRESHOLD

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ W.T + b``, outlier features in float32, the rest in int8."""
        outliers, inliers = self._split(x)
        y = torch.ops.quantized.linear_dynamic(inliers, self._packed_params._packed_params,
                                               reduce_range=self.reduce_range)
        if outliers is not None:  # in place: one pass over the output, not two
            flat = y.view(-1, y.shape[-1])
            flat.addmm_(x.reshape(-1, x.shape[-1]).index_select(-1, outliers),
                        self._weight_columns(outliers).T)
        return y.to(x.dtype)

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(this call's outlier features or None, ``x`` with them zeroed); the previous
        call's outliers are tried first."""
        flat = x.detach().reshape(-1, x.shape[-1])
        guess = self.__dict__.get("_last_outliers")
        if guess is not None and flat.numel():
            beyond = flat.index_select(-1, guess).abs().amax(0) > self.outlier_threshold
            if bool(beyond.all()):  # each guessed feature is an outlier now; any other?
                inliers = x.index_fill(-1, guess, 0.0)
                if self._within_threshold(inliers.detach()):
                    return guess, inliers
        outliers = self._outlier_features(flat)
        self.__dict__["_last_outliers"] = outliers
        return outliers, (x if outliers is None else x.index_fill(-1, outliers, 0.0))

    def _outlier_features(self, flat: torch.Tensor) -> torch.Tensor | None:
        """Indices of the input features beyond the threshold in this call, or None. One
        fast whole-tensor min/max first (most calls stop there); per-feature max and min
        only when something exceeds it (``amax``/``amin`` over rows: ``aminmax`` over a
        dimension is about 30x slower on CPU)."""
        if not flat.numel() or self.outlier_threshold == math.inf:
            return None
        if self._within_threshold(flat):
            return None
        beyond = (flat.amax(0) > self.outlier_threshold) | \
            (flat.amin(0) < -self.outlier_threshold)
        return torch.nonzero(beyond).flatten()

    def _within_threshold(self, values: torch.Tensor) -> bool:
        """Whether no value's magnitude exceeds the threshold: one min/max pass."""
        low, high = torch.aminmax(values)
        return max(-float(low), float(high)) <= self.outlier_threshold

    def _weight_columns(self, features: torch.Tensor) -> torch.Tensor:
        """The float weight columns ``W[:, features]`` ``[out, k]``, from a cache filled by
        dequantizing the int8 weight on a miss (outlier features recur from call to call)."""
        cache: dict[int, torch.Tensor] = self.__dict__.setdefault("_float_columns", {})
        wanted = features.tolist()
        if any(i not in cache for i in wanted):
            weight = self._packed_params._weight_bias()[0].dequantize()
            cache.update({i: weight[:, i].clone() for i in wanted if i not in cache})
        return torch.stack([cache[i] for i in wanted], dim=1)


class FullRangeDynamicLinear(Int8DynamicLinear):
    """:class:`Int8DynamicLinear` with 8-bit activations (:func:`int8_full_range`)."""

    reduce_range = False


def reduce_precision(model: nn.Module, dtype: str, bf16_mode: str | None = None,
                     outlier_threshold: float = INT8_OUTLIER_THRESHOLD) -> nn.Module:
    """``model`` (float32, eval mode) for inference in ``dtype``, changed in place and
    returned. ``bf16_mode`` (``"cast"`` or ``"autocast"``, default :data:`BF16_MODE`) and
    ``outlier_threshold`` (int8) are for the benchmark that chose the defaults."""
    dtype = check_dtype(dtype)
    model.eval()
    if dtype == "float32":
        return model
    device = _device(model)
    if dtype == "int8":
        if device.type != "cpu":
            raise ErnieKGError(f"dtype 'int8' (dynamic quantization) runs on the CPU only; "
                               f"the model is on {device}: move it with .to('cpu') first, "
                               "or use dtype 'bfloat16'")
        return _quantize_linear(model, outlier_threshold)
    mode = BF16_MODE if bf16_mode is None else bf16_mode
    if mode not in BF16_MODES:
        raise SettingError(f"bf16_mode {mode!r} is not one of: {', '.join(BF16_MODES)}")
    if mode == "autocast":
        for module in {id(m): m for m in (model, getattr(model, "base_model", model))}.values():
            _autocast_forward(module, device.type)
        return model
    table = _entity_table(model)
    for module in model.modules():
        if module is not table:
            for tensor in [*module.parameters(recurse=False),
                           *module.buffers(recurse=False)]:
                if tensor.is_floating_point():
                    tensor.data = tensor.data.to(torch.bfloat16)
    return model


def _device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


def _entity_table(model: nn.Module) -> nn.Module | None:
    """The model's entity table module (kept in float32), if it has one."""
    base = getattr(model, "base_model", model)
    return getattr(base, "entity_embeddings", None)


def _autocast_forward(module: nn.Module, device_type: str) -> None:
    """Run ``module``'s forward under bf16 autocast (the classifier and its base model,
    which the feature extractor calls directly); an instance attribute, so the class and
    other models are untouched."""
    forward = module.forward

    @functools.wraps(forward)
    def autocast_forward(*args: Any, **kwargs: Any) -> Any:
        with torch.autocast(device_type, dtype=torch.bfloat16):
            return forward(*args, **kwargs)

    module.forward = autocast_forward


def _version(x: torch.Tensor) -> int | None:
    """``x``'s in-place version counter; None for an inference-mode tensor, which has none
    (nothing in a forward pass writes into a layer's input between two layers' calls)."""
    return None if x.is_inference() else x._version


class SharedInputProjection(nn.Module):
    """Attention's query, key and value projections as one ``[3H, H]`` product, for int8.

    Why: each int8 call quantizes its input and launches its own product; the three read
    one tensor, so one call does the work of three (on an Intel Xeon with AMX, 2 threads,
    a ``[3200, 384]`` input: 1.4 ms against 3 x 1.07 ms). Weights are quantized per output
    channel and activations per call, so the fused product is the three products. The
    output is kept for the other :class:`ProjectionSlice` calls on the same input (same
    tensor, same version) and let go once each slice has taken its part.
    """

    def __init__(self, projections: list[nn.Linear]) -> None:
        super().__init__()
        self.fused = nn.Linear(projections[0].in_features,
                               sum(p.out_features for p in projections))
        with torch.no_grad():
            self.fused.weight.copy_(torch.cat([p.weight for p in projections]))
            self.fused.bias.copy_(torch.cat([p.bias for p in projections]))
        self.parts = len(projections)
        self._kept: tuple[Any, Any, torch.Tensor, set[int]] | None = None

    def forward(self, x: torch.Tensor, part: int | None = None) -> torch.Tensor:
        """All projections of ``x``, ``[..., 3H]``; ``part`` names the slice taking it."""
        kept = self._kept
        if kept is None or kept[0]() is not x or kept[1] != _version(x) or part in kept[3]:
            kept = (weakref.ref(x), _version(x), self.fused(x), set())
        if part is not None:
            kept[3].add(part)
        self._kept = None if len(kept[3]) == self.parts else kept
        return kept[2]


class ProjectionSlice(nn.Module):
    """One of the projections :class:`SharedInputProjection` computes together."""

    def __init__(self, shared: SharedInputProjection, part: int, width: int) -> None:
        super().__init__()
        self.__dict__["shared"] = shared  # registered once, on the attention module
        self.part, self.width = part, width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """This projection of ``x``: its columns of the shared product."""
        start = self.part * self.width
        return self.shared(x, self.part)[..., start:start + self.width]


def _share_attention_inputs(model: nn.Module) -> None:
    """Replace each attention's float ``query``, ``key`` and ``value`` (one input, one
    size, none kept in float32) by slices of one :class:`SharedInputProjection`."""
    for name, module in list(model.named_modules()):
        parts = [getattr(module, part, None) for part in ("query", "key", "value")]
        if not all(type(p) is nn.Linear and p.bias is not None for p in parts) \
                or len({(p.in_features, p.out_features) for p in parts}) != 1 \
                or any(k in f"{name}.{part}" for k in INT8_KEEP_FLOAT
                       for part in ("query", "key", "value")):
            continue
        shared = SharedInputProjection(parts)
        module.query_key_value = shared
        width = parts[0].out_features
        for i, part in enumerate(("query", "key", "value")):
            setattr(module, part, ProjectionSlice(shared, i, width))


def _quantize_linear(model: nn.Module, outlier_threshold: float) -> nn.Module:
    """Dynamic int8 for every ``nn.Linear`` not named in :data:`INT8_KEEP_FLOAT`, in place
    (``inplace=True``: a copy of the model would copy a memory-mapped entity table);
    attention's query, key and value as one product (:class:`SharedInputProjection`)."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    _share_attention_inputs(model)
    spec = {name: per_channel_dynamic_qconfig for name, module in model.named_modules()
            if type(module) is nn.Linear and not any(k in name for k in INT8_KEEP_FLOAT)}
    target = FullRangeDynamicLinear if int8_full_range() else Int8DynamicLinear
    engine = torch.backends.quantized.engine
    try:
        torch.backends.quantized.engine = int8_packing_engine()
        with warnings.catch_warnings():  # torch.ao's deprecation notices, on every call
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", message=".*quantize_per_(tensor|channel).*")
            quantize_dynamic(model, spec, dtype=torch.qint8, mapping={nn.Linear: target},
                             inplace=True)
    finally:
        torch.backends.quantized.engine = engine  # the process's setting, as it was
    for module in model.modules():
        if isinstance(module, Int8DynamicLinear):
            module.outlier_threshold = outlier_threshold
    return model
