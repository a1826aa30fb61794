"""ernie_kg.memory: with the thresholds set, a step's largest buffer is reused instead of
mapped and page-faulted in again; the user's own choice is left alone. Each case runs in
a fresh interpreter: the setting is process-wide and cannot be undone."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc"
    or tuple(map(int, platform.libc_ver()[1].split(".")[:2])) < (2, 33),
    reason="glibc >= 2.33 only (mallinfo2)")

# A training step in small: activations of 6 MB (a [944, 1536] float32 intermediate) kept
# for the backward pass and a 48 MB gradient (MiniLM's word embeddings), all freed at the
# end; 5 steps after 3 warm-up steps (the heap grows to the step's size once, and how
# soon varies run to run). Per step, the bytes malloc holds in mmapped chunks while the
# gradient is alive, less those after the step (glibc's mallinfo2 ``hblkhd``): the
# gradient's own mapping, or 0 where it came from the heap; and the minor page faults.
SCRIPT = """
import ctypes, ctypes.util, json, resource, sys, torch
from ernie_kg.memory import keep_freed_memory, freed_memory_kept
applied = keep_freed_memory() if sys.argv[1] == "set" else False
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks",
                "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
libc.mallinfo2.restype = MallInfo2
def step():
    held = [torch.zeros(1_500_000) for _ in range(4)]
    gradient = torch.zeros(12_000_000)
    mapped = libc.mallinfo2().hblkhd
    held.append(torch.zeros(1_500_000))
    del gradient, held
    return mapped - libc.mallinfo2().hblkhd
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
mapped = [step() for _ in range(5)]
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"applied": applied, "kept": freed_memory_kept(), "faults": faults,
                  "gradient_mapped": mapped}))
"""


def run(mode: str, **env: str) -> dict:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    environment.pop("ERNIE_KG_DEFAULT_MALLOC", None)
    completed = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True,
                               text=True, env={**environment, **env}, check=True)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_the_largest_buffer_is_reused_instead_of_faulted_in_again():
    default, kept = run("default"), run("set")
    assert not default["kept"] and kept["applied"] and kept["kept"]
    # glibc's defaults map the 48 MB gradient afresh on every step (its dynamic mmap
    # threshold stops at 32 MiB) and unmap it on free; kept, it comes from the heap
    assert all(size >= 48_000_000 for size in default["gradient_mapped"])
    assert kept["gradient_mapped"] == [0] * 5
    # so default faults the gradient's pages in on every step. Kept, the heap's pages are
    # reused: usually no fault at all, but whether the kernel left them in place is its
    # own business (CI once counted three gradients' pages in five steps), so the count
    # is bounded by default's only
    gradient_pages = 48_000_000 // 4096
    assert default["faults"] >= 4 * gradient_pages
    assert kept["faults"] < default["faults"]


def test_the_users_own_choice_is_left_alone():
    assert run("set", ERNIE_KG_DEFAULT_MALLOC="1")["applied"] is False
    assert run("set", MALLOC_TRIM_THRESHOLD_="1000000")["applied"] is False
