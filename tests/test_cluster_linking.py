"""``link --engine dask`` and ``pretrain prepare --engine dask``: the same bytes as one
process, resume after a crash, a worker killed mid-run, bad input.

One local 2-worker Dask cluster serves the module (``--address``); one test starts its
own (no ``--address``, the default). A worker is killed while frozen (SIGSTOP) with a
shard assigned, so the kill always lands mid-run.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ernie_kg.cli import app
from ernie_kg.errors import DataFormatError, ErnieKGError, SettingError
from ernie_kg.linking.cluster import ClusterLinker, LinkerSpec, cluster_linker, shard_ranges
from ernie_kg.paths import demo_kg_dir, kg_data_dir

distributed = pytest.importorskip("distributed")

SHARD = "500"  # lines per shard: 60 shards of the big input


@pytest.fixture(scope="module")
def cluster():
    """A local cluster of 2 single-threaded worker processes, and a client to it."""
    local = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                     dashboard_address=None, silence_logs=logging.ERROR)
    client = distributed.Client(local)
    yield local, client
    client.close()
    local.close()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    """``small``: mixed records (text, tokens, blank lines, a BOM, non-ASCII); ``big``:
    30,000 lines, and its single-process output."""
    root = tmp_path_factory.mktemp("cluster")
    data = json.loads((kg_data_dir() / "demo_corpus" / "train.json").read_text())
    tokens = [item["tokens"] for items in data.values() for item in items]
    lines = []
    for number, words in enumerate(tokens[:400]):
        record = {"id": number, "tokens": words} if number % 3 else {
            "id": number, "text": " ".join(words) + " — café"}
        lines.append(json.dumps(record, ensure_ascii=number % 2 == 0))
        if number % 50 == 7:
            lines.append("   ")
    small = root / "small.jsonl"
    small.write_text("\ufeff" + "\n".join(lines), encoding="utf-8")  # no final newline
    big = root / "big.jsonl"
    texts = [" ".join(words) for words in tokens]
    big.write_text("".join(json.dumps({"text": texts[n % len(texts)]}) + "\n"
                           for n in range(30_000)), encoding="utf-8")
    files = {"root": root, "small": small, "big": big}
    for name in ("small", "big"):
        files[f"{name}_local"] = root / f"{name}-local.jsonl"
        _link(small if name == "small" else big, files[f"{name}_local"])
    return files


def _link(source: Path, target: Path, *extra: str) -> None:
    result = CliRunner().invoke(app, ["link", "--kg", str(demo_kg_dir()), "--input",
                                      str(source), "--output", str(target), *extra])
    assert result.exit_code == 0, result.output + repr(result.exception)


def _address(cluster) -> str:
    return cluster[0].scheduler_address


def _linker(cluster, **options) -> ClusterLinker:
    spec = LinkerSpec.of(demo_kg_dir(), fuzzy=False, use_ner=False)  # as the CLI's
    return ClusterLinker(spec, _address(cluster), shard_lines=int(SHARD),
                         say=lambda _: None, **options)


def test_shard_ranges_cover_every_line(tmp_path):
    path = tmp_path / "lines.txt"
    for text in ("", "a\n", "a\nb\nc\n", "a\n\nb\nc\nd", "a\nb\nc\nd\n"):
        path.write_bytes(text.encode())
        ranges = shard_ranges(path, 2)
        raw = path.read_bytes()
        assert b"".join(raw[a:b] for a, b, _, _ in ranges) == raw
        lines = raw.count(b"\n") + (raw[-1:] not in (b"", b"\n"))
        assert sum(n for *_, n in ranges) == lines
        assert [first for _, _, first, _ in ranges] == [1 + 2 * k for k in range(len(ranges))]


def test_local_cluster_output_is_byte_identical(corpus):
    target = corpus["root"] / "small-dask.jsonl"
    _link(corpus["small"], target, "--engine", "dask", "--workers", "2",
          "--shard-lines", "37")  # no --address: a local cluster of its own
    assert target.read_bytes() == corpus["small_local"].read_bytes()
    assert not target.with_name(target.name + ".shards").exists()


def test_existing_cluster_output_is_byte_identical(cluster, corpus):
    target = corpus["root"] / "big-dask.jsonl"
    stats = _linker(cluster).link_file(corpus["big"], target, progress=False)
    assert stats["shards"] == 60 and stats["texts"] == 30_000 and stats["workers"] == 2
    assert target.read_bytes() == corpus["big_local"].read_bytes()


def _wait_for_shards(journal: Path, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not (journal.is_file() and journal.read_text().count("\n") >= count):
        assert time.monotonic() < deadline, "no shard finished"
        time.sleep(0.005)


def _freeze(pids, sig) -> None:
    for pid in pids:
        os.kill(pid, sig)


def test_resume_after_the_driver_is_killed(cluster, corpus):
    target = corpus["root"] / "resumed.jsonl"
    journal = target.with_name(target.name + ".shards") / "done.jsonl"
    driver = subprocess.Popen(
        [sys.executable, "-m", "ernie_kg", "link", "--kg", str(demo_kg_dir()), "--input",
         str(corpus["big"]), "--output", str(target), "--engine", "dask", "--address",
         _address(cluster), "--shard-lines", SHARD],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers = list(cluster[1].run(os.getpid).values())
    try:
        _wait_for_shards(journal, 2)
        _freeze(workers, signal.SIGSTOP)  # the run cannot finish before the kill
        driver.kill()
        driver.wait()
    finally:
        _freeze(workers, signal.SIGCONT)
    finished = journal.read_text().count("\n")
    assert 2 <= finished < 60 and not target.exists()
    stats = _linker(cluster).link_file(corpus["big"], target, progress=False)
    assert stats["resumed"] == finished  # the shards finished before the kill are kept
    assert target.read_bytes() == corpus["big_local"].read_bytes()


def _kill_a_busy_worker(cluster, journal: Path, run: threading.Thread) -> int:
    """Freeze both workers once a shard is done, SIGKILL one with a shard assigned."""
    local, client = cluster
    pids = client.run(os.getpid)
    _wait_for_shards(journal, 1)
    _freeze(pids.values(), signal.SIGSTOP)
    try:
        busy = [w for w, keys in client.processing().items() if keys]
        assert busy and run.is_alive(), "the run ended before a worker could be killed"
        os.kill(pids[busy[0]], signal.SIGKILL)
    finally:
        _freeze([p for w, p in pids.items() if w != busy[0]], signal.SIGCONT)
    return pids[busy[0]]


def _run_in_thread(linker: ClusterLinker, source: Path, target: Path):
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["stats"] = linker.link_file(source, target, progress=False)
        except Exception as error:
            outcome["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def test_a_killed_worker_is_replaced_and_its_shard_rerun(cluster, corpus):
    target = corpus["root"] / "retried.jsonl"
    journal = target.with_name(target.name + ".shards") / "done.jsonl"
    thread, outcome = _run_in_thread(_linker(cluster), corpus["big"], target)
    killed = _kill_a_busy_worker(cluster, journal, thread)
    thread.join(120)
    assert "error" not in outcome, outcome
    assert target.read_bytes() == corpus["big_local"].read_bytes()
    cluster[1].wait_for_workers(2, timeout=60)  # the nanny started a new process
    assert killed not in cluster[1].run(os.getpid).values()


def test_a_shard_whose_workers_die_fails_cleanly_then_resumes(cluster, corpus):
    scheduler = cluster[0].scheduler
    target = corpus["root"] / "failed.jsonl"
    journal = target.with_name(target.name + ".shards") / "done.jsonl"
    scheduler.allowed_failures = 0  # the first death of a shard's worker is final
    try:
        thread, outcome = _run_in_thread(_linker(cluster), corpus["big"], target)
        _kill_a_busy_worker(cluster, journal, thread)
        thread.join(120)
    finally:
        scheduler.allowed_failures = 3
    error = outcome.get("error")
    assert isinstance(error, ErnieKGError), outcome
    assert f"{corpus['big']}: the shard of lines " in str(error)
    assert "died" in str(error) and "rerun the same command to resume" in str(error)
    assert not target.exists()  # no short output
    cluster[1].wait_for_workers(2, timeout=60)
    stats = _linker(cluster).link_file(corpus["big"], target, progress=False)
    assert 1 <= stats["resumed"] < 60
    assert target.read_bytes() == corpus["big_local"].read_bytes()


def test_a_bad_line_names_the_file_and_line(cluster, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "Paris"}\n' * 5 + '{"tokens": ["a", 3]}\n' + "{}\n" * 3)
    target = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, [
        "link", "--kg", str(demo_kg_dir()), "--input", str(source), "--output",
        str(target), "--engine", "dask", "--address", _address(cluster),
        "--shard-lines", "4"])
    assert isinstance(result.exception, DataFormatError), result.output
    assert f"{source}:6: expected" in str(result.exception)
    assert '"tokens"' in str(result.exception)
    assert not target.exists()


def test_an_address_nobody_listens_on_fails_within_seconds(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "Paris"}\n')
    started = time.monotonic()
    result = CliRunner().invoke(app, [
        "link", "--kg", str(demo_kg_dir()), "--input", str(source), "--output",
        str(tmp_path / "out.jsonl"), "--engine", "dask", "--address", "tcp://127.0.0.1:9"])
    assert time.monotonic() - started < 15
    assert isinstance(result.exception, ErnieKGError)
    assert "--address tcp://127.0.0.1:9: no Dask scheduler answered" in str(result.exception)


def test_cluster_options_need_the_dask_engine():
    with pytest.raises(SettingError, match="--address needs --engine dask"):
        cluster_linker("local", lambda: None, "tcp://host:8786", None)
    with pytest.raises(SettingError, match="--workers sizes a local cluster"):
        cluster_linker("dask", lambda: None, "tcp://host:8786", 2)


def test_prepared_pretraining_data_is_identical(cluster, corpus):
    data = json.loads((kg_data_dir() / "demo_corpus" / "train.json").read_text())
    sentences = [" ".join(item["tokens"]) for items in data.values() for item in items[:8]]
    source = corpus["root"] / "documents.jsonl"
    source.write_text("".join(json.dumps({"text": " ".join(sentences[i:i + 4])}) + "\n"
                              for i in range(0, len(sentences), 4)))
    outs = {}
    for engine in ("local", "dask"):
        outs[engine] = corpus["root"] / f"prepared-{engine}"
        extra = ["--address", _address(cluster)] if engine == "dask" else []
        result = CliRunner().invoke(app, [
            "pretrain", "prepare", "--corpus", str(source), "--kg", str(demo_kg_dir()),
            "--out", str(outs[engine]), "--max-length", "64", "--shard-size", "32",
            "--engine", engine, *extra])
        assert result.exit_code == 0, result.output + repr(result.exception)
    files = sorted(p.name for p in outs["local"].iterdir())
    assert files == sorted(p.name for p in outs["dask"].iterdir())  # no .linking left
    assert len(files) > 2 and "manifest.json" in files
    for name in files:
        assert (outs["local"] / name).read_bytes() == (outs["dask"] / name).read_bytes()


def test_workers_rebuild_their_linker_when_the_kg_changed_at_the_same_path(tmp_path):
    from dataclasses import replace

    from ernie_kg.linking.cluster import LinkerSpec

    spec = LinkerSpec.of(tmp_path / "kg", contents="a")
    assert spec.key != replace(spec, contents="b").key  # workers cache linkers by key
    assert spec.key == LinkerSpec.of(tmp_path / "kg", contents="a").key
