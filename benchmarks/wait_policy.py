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


#: The first call's choice: OpenMP reads the variable once, when torch loads it.
_chosen: str | None = None


def choose_wait_policy() -> str:
    """Set (or, for ``default``, clear) ``OMP_WAIT_POLICY``; returns the policy as named.
    Call before torch is imported. A later call (a benchmark importing another one)
    returns the first choice and leaves the variable as it is: changing it then would
    not change OpenMP, only what ``cpu_bench.machine_info`` records."""
    global _chosen
    if _chosen is None:
        named = os.environ.get("OMP_WAIT_POLICY", BENCHMARK_DEFAULT)
        if named.lower() == "default":
            os.environ.pop("OMP_WAIT_POLICY", None)
            _chosen = "default"
        else:
            os.environ["OMP_WAIT_POLICY"] = named
            _chosen = named
    return _chosen
