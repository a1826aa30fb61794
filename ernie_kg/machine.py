"""The machine a measurement ran on: CPU model and kernel flags, as ``lscpu`` names them.

Speed ratios differ by CPU kind (AVX2, AVX-512, AVX512_BF16, AMX), so every benchmark and
experiment records these beside its figures; this is their one reader (``lscpu``, else
``/proc/cpuinfo``, else the ``platform`` module).
"""

from __future__ import annotations

import platform
import subprocess
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

__all__ = ["cpu_flags", "cpu_model", "lscpu"]


@lru_cache(maxsize=1)
def lscpu() -> dict[str, str]:
    """``lscpu``'s fields (``{"Model name": ..., "Flags": ...}``); empty without it."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10,
                             check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return {key.strip(): value.strip() for key, _, value in
            (line.partition(":") for line in out.splitlines()) if value.strip()}


def _cpuinfo(field: str) -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(field):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_model() -> str:
    """The CPU's model name ("AMD EPYC", "Intel(R) Xeon(R) ..."; the platform module rarely
    knows it)."""
    return (lscpu().get("Model name") or _cpuinfo("model name") or platform.processor()
            or platform.machine() or "unknown CPU")


def cpu_flags(names: Iterable[str]) -> dict[str, bool]:
    """Which of the kernel flags ``names`` (``"avx512_bf16"``, ``"amx_tile"``...) the CPU
    has."""
    present = set((lscpu().get("Flags") or _cpuinfo("flags")).split())
    return {name: name in present for name in names}
