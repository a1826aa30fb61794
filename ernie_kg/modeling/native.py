"""The entity stream's native CPU kernels (``native_entity_stream.cpp``), built on first use.

Why: on a CPU the entity stream's small steps (the attention core over a sequence's few
entities, residual + dropout + LayerNorm, the knowledge gate and the fused rows) are each
several ATen ops run between the token stream's large products, and each op pays to bring
its code and data back into the caches first; on an Intel Xeon that made ERNIE-KG's
fusion overhead several times its arithmetic (results/small_op_cost_intel_flush.md). One
loop per step pays it once (``benchmarks/small_op_cost.py`` times two steps both ways,
``benchmarks/entity_stream_cost.py --engine native|aten`` the model).

The kernels are compiled with ``torch.utils.cpp_extension`` the first time a model runs on
a CPU (about 25 s on a 2-core machine, once per machine and source version; cached under
``TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``). They run for float32
and float64 CPU tensors outside autocast, tracing and dispatch modes; everywhere else
(GPU, bfloat16, ``torch.compile``, a FLOP counter) the modules run their ATen ops, to the
same values up to float rounding. Without a C++ compiler, or with
``ERNIE_KG_PURE_PYTHON=1`` (:mod:`ernie_kg.pure_python`, the compiled linker's switch
too), everything runs the ATen ops.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode

from ernie_kg.pure_python import pure_python_requested

__all__ = ["entity_kernels", "entity_kernels_off", "use_entity_kernels"]

SOURCE = Path(__file__).with_name("native_entity_stream.cpp")
_KERNEL_DTYPES = (torch.float32, torch.float64)
_logger = logging.getLogger(__name__)
_loaded: list[ModuleType | None] = []  # empty until the first attempt
_switched_off = [0]  # entity_kernels_off() depth


@contextlib.contextmanager
def _ninja_on_path() -> Iterator[None]:
    """torch's extension builder runs ``ninja`` from PATH; the ``ninja`` wheel (a
    dependency) puts it beside the interpreter, which is not on PATH when a virtual
    environment's python runs unactivated."""
    path = os.environ.get("PATH", "")
    if shutil.which("ninja") is None:
        try:
            import ninja

            os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR, path])
        except ImportError:
            pass
    try:
        yield
    finally:
        os.environ["PATH"] = path


def _build() -> ModuleType | None:
    if pure_python_requested():
        return None
    try:
        from torch.utils.cpp_extension import load

        _logger.info("compiling the entity stream's CPU kernels (once per machine)")
        with _ninja_on_path():
            return load(name="ernie_kg_entity_stream", sources=[str(SOURCE)],
                        extra_cflags=["-O3", "-fopenmp"], extra_ldflags=["-fopenmp"],
                        verbose=False)
    except Exception as error:  # no compiler, no ninja, an unwritable cache
        warnings.warn(f"ernie-kg: the entity stream's CPU kernels could not be built "
                      f"({type(error).__name__}: {error}); running its ATen ops instead",
                      stacklevel=3)
        return None


def entity_kernels() -> ModuleType | None:
    """The compiled kernels (built on the first call), or None where they cannot be."""
    if not _loaded:
        _loaded.append(_build())
    return _loaded[0]


@contextlib.contextmanager
def entity_kernels_off() -> Iterator[None]:
    """Inside, the entity stream runs its ATen ops: to compare the two, or to profile the
    entity modules one by one (``benchmarks/entity_stream_cost.py --engine aten``)."""
    _switched_off[0] += 1
    try:
        yield
    finally:
        _switched_off[0] -= 1


def use_entity_kernels(device: torch.device, dtype: torch.dtype) -> ModuleType | None:
    """The kernels if the entity stream of a forward pass on ``device`` in ``dtype`` should
    run them (:class:`.EntityLayout` asks once per pass): a float32 or float64 CPU pass, no
    CPU autocast, no ``torch.compile`` tracing, no dispatch mode (a FLOP counter sees the
    ATen ops, whose count the benchmarks report)."""
    if _switched_off[0] or device.type != "cpu" or dtype not in _KERNEL_DTYPES:
        return None
    if torch.is_autocast_enabled("cpu") or torch.compiler.is_compiling():
        return None
    if _get_current_dispatch_mode() is not None:
        return None
    return entity_kernels()
