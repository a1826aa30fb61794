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
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")

# A training step in small: activations of 6 MB (a [944, 1536] float32 intermediate) kept
# for the backward pass and a 48 MB gradient (MiniLM's word embeddings), all freed at the
# end; 5 steps after 3 warm-up steps (the heap grows to the step's size once, and how
# soon varies run to run), counting the minor page faults.
SCRIPT = """
import json, resource, sys, torch
from ernie_kg.memory import keep_freed_memory, freed_memory_kept
applied = keep_freed_memory() if sys.argv[1] == "set" else False
def step():
    held = [torch.zeros(1_500_000) for _ in range(4)]
    gradient = torch.zeros(12_000_000)
    held.append(torch.zeros(1_500_000))
    del gradient, held
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"applied": applied, "kept": freed_memory_kept(), "faults": faults}))
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
    gradient_pages = 48_000_000 // 4096
    # glibc's defaults map and fault the gradient in again on every one of the 5 steps;
    # kept, the heap's blocks are reused (at most a late one-time growth of the heap,
    # seen here once in a few runs: exactly one gradient's pages)
    assert default["faults"] >= 4 * gradient_pages
    assert kept["faults"] <= 2 * gradient_pages


def test_the_users_own_choice_is_left_alone():
    assert run("set", ERNIE_KG_DEFAULT_MALLOC="1")["applied"] is False
    assert run("set", MALLOC_TRIM_THRESHOLD_="1000000")["applied"] is False
