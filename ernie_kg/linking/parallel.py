"""Linking on several processes: the caller plus forked workers that it feeds by pipe.

Linking is mostly Python past spaCy's tokenizer and matcher, so one process uses one core.
``EntityLinker.pipe(texts, n_process=2)`` links on the calling process and on
``n_process - 1`` worker processes forked from the linker (they inherit its alias table,
matcher, KG and caches; nothing is pickled but texts and results). Texts go out in
chunks: a chunk goes to a worker with fewer than two chunks in flight, else the caller
links it itself, so no core idles and the work balances itself. The hand-off is a plain
``multiprocessing`` pipe polled by the caller between its own chunks, with no helper
threads: a feeder thread would have to win the GIL from the caller's own linking, and
the workers would starve. Results come back in input order. The workers live as long as
the linker (or until :meth:`LinkerPool.close`) and see it as it was when they started.
Where ``fork`` is unavailable the linker stays on one process.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
from collections import deque
from collections.abc import Iterable, Iterator
from itertools import islice
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from ernie_kg.linking.mentions import LinkedMention, new_linked_mention

if TYPE_CHECKING:  # the linker owns its pool: a type-only import keeps the cycle out
    from ernie_kg.linking.linker import EntityLinker

__all__ = ["LinkerPool", "can_fork", "usable_cpus"]

#: ``(start, end, entity_id, score, candidates)``: a LinkedMention without its text
Packed = tuple[int, int, str | None, float, tuple]
#: Texts per chunk: small enough to balance the cores, large enough that a hand-off
#: (~0.1 ms) stays a few percent of the chunk's linking time.
CHUNK = 64
_IN_FLIGHT = 2  # chunks queued per worker: one being linked, one waiting
TAIL_CHUNK = 8  # the smallest chunk, at the very end of the input


def can_fork() -> bool:
    """Whether worker processes can be started by ``fork`` here."""
    return "fork" in multiprocessing.get_all_start_methods()


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity set, where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _pack(linker: EntityLinker, texts: list[str]) -> list[list[Packed]]:
    return [[(m.start, m.end, m.entity_id, m.score, m.candidates) for m in found]
            for found in linker._pipe_here(texts, len(texts))]


def _serve(linker: EntityLinker, conn: Connection) -> None:
    """A worker: link each chunk received until ``None`` arrives."""
    while (texts := conn.recv()) is not None:
        try:
            conn.send(_pack(linker, texts))
        except Exception as error:  # handed to the caller, who re-raises it
            conn.send(error)


class _Worker:
    def __init__(self, linker: EntityLinker, context: Any) -> None:
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(linker, child), daemon=True)
        self.process.start()
        child.close()
        self.queued: deque[int] = deque()  # chunk numbers sent, oldest first

    def receive(self) -> tuple[int, list[list[Packed]]]:
        try:
            result = self.conn.recv()
        except EOFError:
            raise RuntimeError(
                f"linker worker process {self.process.pid} died "
                f"(exit code {self.process.exitcode})") from None
        if isinstance(result, Exception):
            raise result
        return self.queued.popleft(), result


class _Chunker:
    """The input in chunks of :data:`CHUNK` texts, read a few chunks ahead so that the
    end of the input is seen coming: the last texts go out in smaller chunks, so the
    caller does not sit idle while a worker links its last two full chunks. (FewRel-16's
    1,920 test sentences on 2 cores, best of 15 interleaved calls: 25.4 against 26.7 µs a
    sentence; a noisy machine, and one of three such comparisons showed no gain.)"""

    def __init__(self, texts: Iterable[str], processes: int) -> None:
        self._texts = iter(texts)
        self._ahead: deque[str] = deque()
        self._window = CHUNK * (_IN_FLIGHT + 1) * processes
        self._processes = processes
        self._exhausted = False

    def next(self) -> list[str]:
        while not self._exhausted and len(self._ahead) < self._window:
            block = list(islice(self._texts, CHUNK))
            self._exhausted = len(block) < CHUNK
            self._ahead.extend(block)
        size = CHUNK
        if self._exhausted:  # shrink as the rest shrinks, down to TAIL_CHUNK
            size = min(CHUNK, max(TAIL_CHUNK, len(self._ahead) // (2 * self._processes)))
        ahead = self._ahead
        return [ahead.popleft() for _ in range(min(size, len(ahead)))]


class LinkerPool:
    """The calling process plus ``processes - 1`` forked workers, each with ``linker``."""

    def __init__(self, linker: EntityLinker, processes: int) -> None:
        if not can_fork():
            raise RuntimeError("process pools need the 'fork' start method")
        if processes < 2:
            raise ValueError(f"a pool needs processes >= 2, got {processes}")
        self.processes = processes
        self.linker = linker
        context = multiprocessing.get_context("fork")
        # frozen objects are skipped by the workers' garbage collector, so the linker's
        # memory pages stay shared instead of being copied on first collection
        gc.freeze()
        try:
            self._workers = [_Worker(linker, context) for _ in range(processes - 1)]
        finally:
            gc.unfreeze()

    def pipe(self, texts: Iterable[str], batch_size: int = 256) -> Iterator[list[LinkedMention]]:
        """Linked mentions of every text, in input order (``batch_size`` is the NER
        batch size of the caller's own chunks; the hand-off unit is :data:`CHUNK`)."""
        chunks: dict[int, list[str]] = {}
        done: dict[int, list] = {}
        next_out = 0
        upcoming = _Chunker(texts, self.processes)

        def collect(block: bool) -> None:
            for worker in self._workers:
                while worker.queued and (block or worker.conn.poll()):
                    number, packed = worker.receive()
                    done[number] = [
                        [new_linked_mention((s, e, text[s:e], entity, score,
                                             candidates, None, None))
                         for s, e, entity, score, candidates in found]
                        for text, found in zip(chunks.pop(number), packed)]

        number = 0
        try:
            while chunk := upcoming.next():
                idle = min(self._workers, key=lambda w: len(w.queued))
                if len(idle.queued) < _IN_FLIGHT:
                    idle.conn.send(chunk)
                    idle.queued.append(number)
                    chunks[number] = chunk
                else:  # every worker is busy: link here instead of waiting
                    done[number] = list(self.linker._pipe_here(chunk, batch_size))
                number += 1
                collect(block=False)
                while next_out in done:
                    yield from done.pop(next_out)
                    next_out += 1
            collect(block=True)
            while next_out in done:
                yield from done.pop(next_out)
                next_out += 1
        finally:  # abandoned or failed: read what is still queued, for the next call
            for worker in self._workers:
                while worker.queued:
                    worker.queued.popleft()
                    try:
                        worker.conn.recv()
                    except (EOFError, OSError):
                        break

    def close(self) -> None:
        """Stop the workers: ask them to exit, terminate those still alive after 5 s."""
        for worker in self._workers:
            try:
                worker.conn.send(None)
                worker.conn.close()
            except OSError:  # already gone
                pass
            worker.process.join(timeout=5)
            if worker.process.is_alive():
                worker.process.terminate()
        self._workers = []

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # at interpreter shutdown the pipes may be half gone
            pass

    def __repr__(self) -> str:
        return f"LinkerPool({self.processes} processes)"
