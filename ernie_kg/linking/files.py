"""Linking a JSONL file: the rule from an input record to its output line, shared by both
engines of ``ernie-kg link`` so their outputs agree byte for byte, and the local engine
(one process, streaming). The Dask engine is :mod:`ernie_kg.linking.cluster`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ernie_kg.errors import DataFormatError
from ernie_kg.io import count_lines, iter_jsonl, write_atomic

__all__ = ["EXPECTED", "link_jsonl", "linked_line", "summary"]

EXPECTED = 'an object with "text" (a string) or "tokens" (a list of strings)'


def linked_line(linker: Any, record: dict, path: Path, number: int) -> tuple[str, int]:
    """One input record linked: its output line (the record plus ``"mentions"``) and its
    mention count; a record with neither text nor tokens names ``path:number``."""
    text, tokens = record.get("text"), record.get("tokens")
    if isinstance(text, str):
        found = linker(text)
    elif isinstance(tokens, list) and all(isinstance(t, str) for t in tokens):
        found = linker.link_tokens(tokens)
    else:
        raise DataFormatError(path, number, f"expected {EXPECTED}")
    record["mentions"] = [m.to_json() for m in found]
    return json.dumps(record, ensure_ascii=False) + "\n", len(found)


def link_jsonl(linker: Any, source: Path, output: Path, progress: bool = True,
               ) -> dict[str, Any]:
    """``--engine local``: every line of ``source`` linked here into ``output``, written
    atomically (a bad line raises, naming it, and leaves no output); returns the counts
    and the linking seconds."""
    from tqdm import tqdm

    total = count_lines([source])
    counts = {"texts": 0, "mentions": 0}
    started = time.perf_counter()

    def write_linked(sink: Any) -> None:
        records = iter_jsonl(source, DataFormatError, EXPECTED)
        for number, record in tqdm(records, total=total, unit="line", desc="link",
                                   disable=not progress):
            line, found = linked_line(linker, record, source, number)
            sink.write(line)
            counts["texts"] += 1
            counts["mentions"] += found

    write_atomic(output, write_linked)
    return {**counts, "link_s": time.perf_counter() - started}


def summary(stats: dict[str, Any]) -> str:
    """The throughput line ``link`` prints (and, from a cluster, its shards and timings)."""
    texts, seconds = stats["texts"], max(stats["link_s"], 1e-9)
    line = (f"{texts} texts, {stats['mentions']} mentions in {seconds:.2f} s "
            f"({texts / seconds:.1f} texts/s)")
    if "shards" in stats:
        line += (f"; {stats['shards']} shards ({stats['resumed']} resumed) on "
                 f"{stats.get('workers', 0)} Dask workers, cluster up in "
                 f"{stats['cluster_start_s']:.2f} s, linkers loaded in "
                 f"{stats['worker_setup_s']:.2f} s")
    return line
