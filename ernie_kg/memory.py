"""Keep the memory of freed activations in the process, so training does not page-fault.

Why: PyTorch has no caching allocator on the CPU; every tensor comes from ``malloc``.
glibc serves an allocation at or above its mmap threshold with a fresh ``mmap`` and
unmaps it on ``free``, and that threshold follows the largest block freed so far, so the
largest buffers of every step (the ``[tokens, intermediate]`` activations, the
word-embedding gradient) are mapped, page-faulted in and unmapped again on every step.
Measured on the packaged MiniLM's training step
(FewRel-16 batches of 16, one thread, two runs; results/memory_allocator.md): 11,500 to
12,700 minor page faults a step for ERNIE-KG and the text-only model alike; with the
thresholds below, 800 to 2,800, and the step's CPU time 2.6-5.2% lower (peak RSS +3%).
Fixed thresholds keep blocks below 256 MiB in the heap and return free heap to the
system only beyond 512 MiB, as ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``
would.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "freed_memory_kept", "keep_freed_memory"]

MMAP_THRESHOLD = 256 << 20  # bytes: blocks below it come from the heap
TRIM_THRESHOLD = 512 << 20  # bytes: free heap kept before it is given back
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
_OWN_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "ERNIE_KG_DEFAULT_MALLOC")
_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds once per process; True where they are set.

    A no-op (False) off glibc, and where the user chose: ``ERNIE_KG_DEFAULT_MALLOC=1``
    (glibc's defaults) or their own ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``.
    The fine-tuning trainer, the pre-training loop and the command line call it; call it
    yourself before a hand-written training loop.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if any(os.environ.get(name) for name in _OWN_SETTINGS):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _applied = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    except (OSError, AttributeError):
        _applied = False
    return _applied


def freed_memory_kept() -> bool:
    """Whether :func:`keep_freed_memory` has set the thresholds in this process (for
    benchmarks to record; it sets nothing)."""
    return bool(_applied)
