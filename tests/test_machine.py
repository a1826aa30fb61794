"""ernie_kg.machine: the one reader of the CPU's model name and kernel flags."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

from ernie_kg.machine import cpu_flags, cpu_model


def test_cpu_model_names_the_cpu():
    name = cpu_model()
    assert isinstance(name, str) and name.strip() == name and name
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file() and "model name" in cpuinfo.read_text():
        words = cpuinfo.read_text().split("model name", 1)[1].split(":", 1)[1].split()
        assert words[0] in name  # the vendor's own first word ("AMD", "Intel(R)")


@pytest.mark.skipif(platform.machine() != "x86_64", reason="x86 flag names")
def test_cpu_flags_answer_for_each_name_asked():
    found = cpu_flags(["fpu", "sse2", "no_such_flag"])
    assert found == {"fpu": True, "sse2": True, "no_such_flag": False}
