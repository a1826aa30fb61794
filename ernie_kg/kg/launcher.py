"""Start the local ranks of a DDP job as child processes and watch them.

Why not Lightning's own launcher: it re-runs ``sys.argv`` (pytest's, a notebook's) and,
when a rank dies, SIGKILLs the main process, so the user gets exit code 137 and no
message. Here the parent is no rank: it waits, and when one rank fails it stops the
others and returns which one failed and how, for the caller to explain.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence


def free_port() -> int:
    """A TCP port free on this machine now: the rendezvous port of a one-machine job."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def exit_reason(code: int) -> str:
    """``code`` of :attr:`subprocess.Popen.returncode` in words."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def run_local_ranks(command: Sequence[str], processes: int, env: Mapping[str, str] | None = None,
                    poll: float = 0.2, settle: float = 1.0) -> tuple[int, int] | None:
    """Run ``processes`` copies of ``command`` with ``LOCAL_RANK`` 0.. set (the rest of
    the rendezvous, MASTER_ADDR / MASTER_PORT / NODE_RANK, defaults to this machine);
    None when all exit 0, else ``(local rank, return code)`` of the failure to blame.

    One dead rank makes its peers fail too (their collectives lose a connection), so the
    others get ``settle`` seconds to show their state and a rank killed by a signal is
    blamed before one that exited with an error. Ctrl-C stops every rank too."""
    base = {**os.environ, **(env or {})}
    base.setdefault("MASTER_ADDR", "127.0.0.1")
    base.setdefault("MASTER_PORT", str(free_port()))
    base.setdefault("NODE_RANK", "0")
    workers: list[subprocess.Popen] = []
    failed: list[tuple[int, int]] = []
    try:
        for local_rank in range(processes):
            workers.append(subprocess.Popen(list(command),
                                            env={**base, "LOCAL_RANK": str(local_rank)}))
        while not failed:
            time.sleep(poll)
            if all(worker.poll() == 0 for worker in workers):
                return None
            failed = [(i, w.returncode) for i, w in enumerate(workers) if w.returncode]
        time.sleep(settle)
        failed = [(i, code) for i, w in enumerate(workers) if (code := w.poll())]
    finally:
        stop(workers)
    return min(failed, key=lambda found: found[1] > 0)


def stop(workers: Sequence[subprocess.Popen], grace: float = 10.0) -> None:
    """Terminate the workers still running; SIGKILL after ``grace`` seconds, since a rank
    blocked in a collective may not get to handle SIGTERM."""
    for worker in workers:
        if worker.poll() is None:
            worker.terminate()
    deadline = time.monotonic() + grace
    for worker in workers:
        try:
            worker.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
