"""The OpenMP wait policy of a CPU benchmark, chosen before torch loads (OpenMP reads it then).

Why a choice: on a shared CPU (these 2-core machines run other work), spinning threads burn
the core a descheduled partner needs, so the benchmarks default to ``PASSIVE`` (threads
sleep at a barrier). On an idle machine that default is not what users run: every
parallel region then pays a thread wake-up, a fixed cost that weighs most on models with
many small matrix products (ERNIE-KG's entity stream; results/peer_throughput.md).
``OMP_WAIT_POLICY=default`` leaves the policy to OpenMP (libgomp: spin a while, then
sleep), as a user's process has it; ``ACTIVE`` / ``PASSIVE`` are passed on.
"""

from __future__ import annotations

import os

#: What the benchmarks use when the environment names no policy.
BENCHMARK_DEFAULT = "PASSIVE"


def choose_wait_policy() -> str:
    """Set (or, for ``default``, clear) ``OMP_WAIT_POLICY``; returns the policy as named.
    Call before torch is imported."""
    named = os.environ.get("OMP_WAIT_POLICY", BENCHMARK_DEFAULT)
    if named.lower() == "default":
        os.environ.pop("OMP_WAIT_POLICY", None)
        return "default"
    os.environ["OMP_WAIT_POLICY"] = named
    return named
