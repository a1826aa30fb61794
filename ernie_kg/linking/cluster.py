"""Linking a corpus on a Dask cluster: sharded input, one linker per worker, ordered atomic
output, resume after a crash.

Why Dask and not Ray (``benchmarks/cluster_engines.py``, ``results/cluster_engines.md``:
the same sharded linking of 200,000 sentences over a 1M-entity KG on both, 6 runs each,
AMD EPYC 2 cores, shared): a local 2-worker cluster starts in 1.2-2.4 s (Ray 2.7-8.4 s)
and idles in 3 processes of 137 MB (Ray 9 processes, 680-720 MB: GCS, raylet, pre-started
workers); the install is 29 MB from 2.5 MB of wheels (Ray 231 MB from a 79 MB wheel),
which every CI run pays; import 0.4-0.8 s either way; loading the linker on both workers
5.4-8.7 s (Ray 4.9-11.0 s); linking throughput the same within the noise (median 7,796
sentences/s against Ray's 8,030), since the workers' linking is the cost. Ray shuts down
faster (1.3-1.7 s against 2.1-4.2 s), which matters less than its start.

Design: the input JSONL is cut into shards of ``shard_lines`` lines (byte ranges found
by one scan of the file); each worker process loads the linker once (the KG and alias
index memory-mapped, so workers on one machine share their pages through the page cache)
and writes ``OUTPUT.shards/part-NNNNN.jsonl`` atomically; the driver records each
finished shard in ``OUTPUT.shards/done.jsonl`` (size and sha256). Rerunning the same
command skips the recorded shards whose part is intact, unless the input (size, mtime),
the KG (content hash) or the settings changed. At the end the parts are concatenated in
order into OUTPUT atomically: the same bytes as ``--engine local``. A worker that dies is
replaced by its nanny and its shard rerun (Dask's ``allowed-failures``, 3); past that,
the run stops with an error naming the shard, and the finished shards wait for a rerun.
Every shard must come back with all its lines linked before OUTPUT is written, so a
lost shard never leaves a short file. A bad input line stops the run naming the file's
first bad line, whatever order the shards finish in (the workers' tasks:
:mod:`ernie_kg.linking.cluster_worker`). Input, KG and output must be on a filesystem the
workers share.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ernie_kg.errors import DataFormatError, ErnieKGError, SettingError
from ernie_kg.io import (
    check_writable,
    read_json,
    write_atomic,
)
from ernie_kg.linking.cluster_worker import link_shard, load_on_worker

__all__ = ["ENGINES", "ClusterLinker", "LinkerSpec", "cluster_linker", "shard_ranges"]

ENGINES = ("local", "dask")
CONNECT_TIMEOUT_S = 5.0
_FORMAT = "ernie_kg.link_shards"
_BLOCK = 1 << 24  # bytes read at a time by the shard scan


@dataclass(frozen=True)
class LinkerSpec:
    """How each worker builds its linker: paths (absolute, seen by every worker) and
    settings, so a worker needs nothing pickled but this."""

    kg_dir: str
    embeddings: str | None = None
    linker_dir: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    #: What the paths held when the driver looked (KG, table and linker contents): part
    #: of the workers' cache key and of a resume's identity, so a KG rebuilt at the same
    #: path is neither linked with a worker's old linker nor mixed with old shards.
    contents: str = ""

    @classmethod
    def of(cls, kg_dir: str | os.PathLike, embeddings: str | os.PathLike | None = None,
           linker_dir: str | os.PathLike | None = None, **settings: Any) -> LinkerSpec:
        """A spec with the paths made absolute."""
        def absolute(path: Any) -> str | None:
            return None if path is None else str(Path(path).resolve())
        return cls(absolute(kg_dir), absolute(embeddings), absolute(linker_dir), settings)

    @property
    def key(self) -> str:
        """A short hash of the spec: the workers' cache key."""
        text = json.dumps(asdict(self), sort_keys=True, default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def build(self, progress: bool = False, workers: int = 1) -> Any:
        """The linker (``workers``: processes for a first build of the alias index)."""
        from ernie_kg.kg import EntityEmbeddings
        from ernie_kg.linking.linker import EntityLinker

        table = EntityEmbeddings.load(self.embeddings) if self.embeddings else None
        return EntityLinker.from_kg_dir(self.kg_dir, table, self.linker_dir,
                                        progress=progress, workers=workers, **self.settings)


def _contents(spec: LinkerSpec, linker: Any) -> str:
    """A hash of what the spec's paths hold now (see :attr:`LinkerSpec.contents`)."""
    store = linker.kg.store if linker.kg is not None else None
    parts = [store.content_hash if store is not None else ""]
    if linker.embeddings is not None:  # the driver's linker has the table loaded already
        parts.append(linker.embeddings.content_hash())
    if spec.linker_dir:
        parts += [f"{p.relative_to(spec.linker_dir)}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
                  for p in sorted(Path(spec.linker_dir).rglob("*")) if p.is_file()]
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()[:16]


# ---------------------------------------------------------------------- driver side
def shard_ranges(path: str | os.PathLike, lines: int) -> list[tuple[int, int, int, int]]:
    """``(first byte, end byte, first line, line count)`` of each run of ``lines`` lines
    of ``path``, from one pass counting newlines a block at a time."""
    cuts, seen, base = [0], 0, 0
    with open(path, "rb") as source:
        while block := source.read(_BLOCK):
            ends = np.flatnonzero(np.frombuffer(block, np.uint8) == 10)
            first = (lines - 1 - seen % lines) % lines
            cuts.extend((base + ends[first::lines] + 1).tolist())
            seen += len(ends)
            base += len(block)
            tail = block[-1:]
    total = seen + (1 if base and tail != b"\n" else 0)
    if cuts[-1] != base:
        cuts.append(base)
    return [(cuts[n], cuts[n + 1], n * lines + 1, min(lines, total - n * lines))
            for n in range(len(cuts) - 1)]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class ClusterLinker:
    """Links JSONL files on a Dask cluster: the one at ``address`` (a scheduler address),
    else a local one of ``workers`` processes (default: the usable cores)."""

    spec: LinkerSpec
    address: str | None = None
    workers: int | None = None
    shard_lines: int = 10_000
    connect_timeout: float = CONNECT_TIMEOUT_S
    say: Callable[[str], None] = field(default=lambda line: print(line, file=sys.stderr))

    def link_file(self, source: str | os.PathLike, output: str | os.PathLike,
                  progress: bool = True) -> dict[str, Any]:
        """Link every line of ``source`` into ``output`` (resuming an earlier run of the
        same command); returns counts and timings."""
        from ernie_kg.linking.alias_build import default_workers

        given = Path(source)  # errors name the input as the user gave it
        source, output = given.resolve(), Path(output).resolve()
        if not source.is_file():
            raise DataFormatError(given, None, "missing: no such input file")
        check_writable(output)
        stat = source.stat()
        stats: dict[str, Any] = {"cluster_start_s": 0.0, "worker_setup_s": 0.0}
        with self._client(stats) as client:  # first: a bad --address fails in seconds
            # here first: the index is built once, the settings checked, the KG hashed
            linker = self.spec.build(progress=progress, workers=default_workers())
            ranges = shard_ranges(source, self.shard_lines)
            self.spec = replace(self.spec, contents=_contents(self.spec, linker))
            identity = {"format": _FORMAT,
                        "input": [str(source), stat.st_size, stat.st_mtime_ns],
                        "kg_content_hash": linker.kg.store.content_hash if linker.kg else None,
                        "linker": asdict(self.spec), "shard_lines": self.shard_lines,
                        "shards": len(ranges)}
            del linker
            folder = output.with_name(output.name + ".shards")
            done = self._finished(folder, identity, ranges)
            todo = [n for n in range(len(ranges)) if n not in done]
            stats.update(shards=len(ranges), resumed=len(done))
            started = time.perf_counter()
            if todo:
                self._load(client)
                stats["worker_setup_s"] = round(time.perf_counter() - started, 2)
                started = time.perf_counter()
                self._run(client, (given, source), folder, ranges, todo, done, progress)
        if [source.stat().st_size, source.stat().st_mtime_ns] != identity["input"][1:]:
            raise ErnieKGError(f"{given} changed while it was being linked: rerun")
        missing = [n for n in range(len(ranges)) if n not in done]
        if missing:  # never a short output
            raise ErnieKGError(f"{given}: shard {missing[0]} was not linked; rerun to resume")
        parts = [folder / f"part-{n:05d}.jsonl" for n in range(len(ranges))]

        def concatenate(sink: Any) -> None:
            for part in parts:
                with open(part, "rb") as handle:
                    shutil.copyfileobj(handle, sink, _BLOCK)

        write_atomic(output, concatenate, binary=True)
        shutil.rmtree(folder, ignore_errors=True)
        stats.update(texts=sum(r["texts"] for r in done.values()),
                     mentions=sum(r["mentions"] for r in done.values()),
                     link_s=round(time.perf_counter() - started, 3))
        return stats

    def _finished(self, folder: Path, identity: dict, ranges: list) -> dict[int, dict]:
        """The shards an earlier run of this command finished (parts intact), after
        clearing a folder left by another input or other settings."""
        run_file, journal = folder / "run.json", folder / "done.jsonl"
        if folder.exists():
            earlier = read_json(run_file) if run_file.is_file() else None
            if earlier != identity:
                self.say(f"{folder}: from another input or other settings; starting afresh")
                shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if not run_file.is_file():
            write_atomic(run_file, lambda sink: sink.write(json.dumps(identity) + "\n"))
        done: dict[int, dict] = {}
        if journal.is_file():
            text = journal.read_text(encoding="utf-8")
            if text and not text.endswith("\n"):  # cut short: the next record gets a line
                with open(journal, "a", encoding="utf-8") as handle:
                    handle.write("\n")
            for line in text.splitlines():
                try:
                    record = json.loads(line)
                    number = int(record["shard"])
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by a crash: that shard is linked again
                part = folder / f"part-{number:05d}.jsonl"
                if (number < len(ranges) and part.is_file()
                        and part.stat().st_size == record["bytes"]
                        and _sha256(part) == record["sha256"]):
                    done[number] = record
        if done:
            self.say(f"resuming: {len(done)} of {len(ranges)} shards already linked in "
                     f"{folder}")
        return done

    @contextmanager
    def _client(self, stats: dict) -> Iterator[Any]:
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise SettingError("--engine dask needs Dask: pip install distributed (the "
                               "'cluster' extra of ernie-kg)") from None
        started = time.perf_counter()
        if self.address:
            try:
                client = Client(self.address, timeout=self.connect_timeout)
            except (OSError, TimeoutError, ValueError) as problem:
                raise ErnieKGError(
                    f"--address {self.address}: no Dask scheduler answered within "
                    f"{self.connect_timeout:g} s ({problem}); start one (dask scheduler; "
                    "dask worker ADDRESS --nthreads 1 on each machine) or leave --address "
                    "out for a local cluster") from None
            cluster = None
        else:
            from ernie_kg.linking.parallel import usable_cpus

            cluster = LocalCluster(n_workers=self.workers or usable_cpus(),
                                   threads_per_worker=1, processes=True,
                                   dashboard_address=None, silence_logs=logging.ERROR)
            client = Client(cluster)
        stats["cluster_start_s"] = round(time.perf_counter() - started, 2)
        stats["workers"] = len(client.scheduler_info()["workers"])
        try:
            yield client
        finally:
            client.close()
            if cluster is not None:
                cluster.close()

    def _load(self, client: Any) -> None:
        """Load the linker on every worker now, once: errors surface before any shard."""
        workers = list(client.scheduler_info()["workers"])
        if not workers:
            raise ErnieKGError(f"the Dask cluster at {self.address} has no workers")
        token = uuid.uuid4().hex[:8]
        loads = [client.submit(load_on_worker, self.spec, workers=[worker], pure=False,
                               allow_other_workers=False, key=f"ernie-kg-load-{token}-{n}")
                 for n, worker in enumerate(workers)]
        failed = [(w, e) for w, e in zip(workers, client.gather(loads)) if e]
        if failed:
            worker, error = failed[0]
            raise ErnieKGError(f"worker {worker} could not load the linker ({error}); the "
                               "KG, the input and the output must be on a filesystem "
                               "every worker sees, at the same paths")

    def _run(self, client: Any, paths: tuple[Path, Path], folder: Path, ranges: list,
             todo: list[int], done: dict[int, dict], progress: bool) -> None:
        from distributed import as_completed
        from tqdm import tqdm

        token, source = uuid.uuid4().hex[:8], paths[1]
        futures = {}
        for number in todo:
            first_byte, end_byte, first_line, lines = ranges[number]
            future = client.submit(
                link_shard, self.spec, str(source), first_byte, end_byte, first_line,
                lines, str(folder / f"part-{number:05d}.jsonl"), pure=False,
                key=f"ernie-kg-link-{token}-{number:05d}")
            futures[future] = number
        bar = tqdm(total=sum(ranges[n][3] for n in todo), unit="line", desc="link",
                   disable=not progress)
        first_bad: tuple[int, DataFormatError] | None = None
        try:
            with open(folder / "done.jsonl", "a", encoding="utf-8") as journal:
                for future in as_completed(futures):
                    number = futures[future]
                    if first_bad is not None and number > first_bad[0]:
                        continue
                    try:
                        result = self._result(future, paths, ranges[number])
                    except DataFormatError as error:
                        # Shards finish in any order: report the first bad line of the
                        # file, so stop the later shards and wait for the earlier ones.
                        first_bad = (number, error)
                        client.cancel([f for f, n in futures.items() if n > number])
                        continue
                    done[number] = {"shard": number, **result}
                    journal.write(json.dumps(done[number]) + "\n")
                    journal.flush()
                    bar.update(ranges[number][3])
            if first_bad is not None:
                raise first_bad[1]
        finally:
            bar.close()
            try:  # a failed run leaves no shards running behind it
                client.cancel(list(futures))
            except Exception:  # the cluster itself may be gone
                pass

    def _result(self, future: Any, paths: tuple[Path, Path], shard: tuple) -> dict[str, Any]:
        from concurrent.futures import CancelledError

        from distributed import KilledWorker

        where = f"{paths[0]}: the shard of lines {shard[2]}-{shard[2] + shard[3] - 1}"
        try:
            result = future.result()
        except KilledWorker as problem:
            raise ErnieKGError(
                f"{where} failed: the workers that ran it died ({problem}); the finished "
                "shards are kept: rerun the same command to resume") from None
        except (OSError, TimeoutError, CancelledError) as problem:  # the scheduler went
            raise ErnieKGError(f"{where}: lost the Dask cluster ({problem}); the finished "
                               "shards are kept: rerun the same command to resume") from None
        if "error" in result:
            path, line, message = result["error"]
            if path is None:
                raise ErnieKGError(f"{where}: {message}")
            raise DataFormatError(paths[0] if path == str(paths[1]) else path, line, message)
        return result


def cluster_linker(engine: str, spec: Callable[[], LinkerSpec], address: str | None,
                   workers: int | None, shard_lines: int | None = None,
                   say: Callable[[str], None] = print) -> ClusterLinker | None:
    """The CLI's ``--engine/--address/--workers``: ``None`` for the local engine (where a
    cluster option is an error, not ignored), else a :class:`ClusterLinker`."""
    if engine not in ENGINES:
        raise SettingError(f"--engine {engine!r} is not one of: {', '.join(ENGINES)}")
    if engine == "local":
        given = [name for name, value in (("--address", address), ("--workers", workers),
                                          ("--shard-lines", shard_lines)) if value]
        if given:
            raise SettingError(f"{', '.join(given)} need{'s' if len(given) == 1 else ''} "
                               "--engine dask")
        return None
    if address and workers:
        raise SettingError("--workers sizes a local cluster; with --address the cluster's "
                           "own workers link (start them with dask worker)")
    return ClusterLinker(spec(), address, workers, shard_lines or 10_000, say=say)
