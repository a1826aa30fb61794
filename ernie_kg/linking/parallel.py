"""Linking on several processes: a persistent pool of forked workers.

Linking is pure Python past spaCy's tokenizer and matcher, so one process uses one core.
``EntityLinker.pipe(texts, n_process=2)`` hands batches of texts to worker processes
forked from the linker (they inherit its alias table, matcher, KG and caches, nothing is
pickled but texts and results) and yields the results in input order. The pool lives as
long as the linker (or until :meth:`LinkerPool.close`); it sees the linker as it was
when the pool started. Where ``fork`` is unavailable the linker stays on one process.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ernie_kg.linking.linker import EntityLinker, LinkedMention

__all__ = ["LinkerPool", "can_fork", "usable_cpus"]

_LINKERS: dict[int, EntityLinker] = {}  # read by forked workers
#: ``(start, end, entity_id, score, candidates)``: a LinkedMention without its text
Packed = tuple[int, int, str | None, float, tuple]


def can_fork() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


def usable_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _link_batch(token: int, texts: list[str]) -> list[list[Packed]]:
    linker = _LINKERS[token]
    return [[(m.start, m.end, m.entity_id, m.score, m.candidates) for m in found]
            for found in linker.pipe(texts, batch_size=len(texts))]


def _started(token: int) -> int:
    return os.getpid() if token in _LINKERS else -1


class LinkerPool:
    """``processes`` forked workers, each holding a copy of ``linker``."""

    def __init__(self, linker: EntityLinker, processes: int) -> None:
        if not can_fork():
            raise RuntimeError("process pools need the 'fork' start method")
        self.processes = processes
        self._token = id(self)
        _LINKERS[self._token] = linker
        self._executor = ProcessPoolExecutor(processes,
                                             mp_context=multiprocessing.get_context("fork"))
        # fork every worker now, while the linker is registered and built; frozen
        # objects are skipped by the workers' garbage collector, so their memory pages
        # stay shared instead of being copied on first collection
        gc.freeze()
        try:
            list(self._executor.map(_started, [self._token] * processes))
        finally:
            gc.unfreeze()

    def pipe(self, texts: Iterable[str], batch_size: int = 256) -> Iterator[list[LinkedMention]]:
        """Linked mentions of every text, in input order."""
        from ernie_kg.linking.linker import LinkedMention

        pending: deque[tuple[list[str], Future]] = deque()
        window = 2 * self.processes

        def results(batch: list[str], future: Future) -> Iterator[list[LinkedMention]]:
            for text, packed in zip(batch, future.result()):
                yield [LinkedMention(s, e, text[s:e], entity, score, candidates)
                       for s, e, entity, score, candidates in packed]

        batch: list[str] = []
        for text in texts:
            batch.append(text)
            if len(batch) >= batch_size:
                pending.append((batch, self._executor.submit(_link_batch, self._token, batch)))
                batch = []
                if len(pending) >= window:
                    yield from results(*pending.popleft())
        if batch:
            pending.append((batch, self._executor.submit(_link_batch, self._token, batch)))
        while pending:
            yield from results(*pending.popleft())

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        _LINKERS.pop(self._token, None)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # at interpreter shutdown the executor may be half gone
            pass

    def __repr__(self) -> str:
        return f"LinkerPool({self.processes} processes)"
