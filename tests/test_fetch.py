"""Dataset fetching: checksum-checked download (file:// URLs stand in for the network),
offline copying with --from-dir, and fast, clear failures."""

from __future__ import annotations

import hashlib
import time

import pytest
from typer.testing import CliRunner

from ernie_kg.cli import app
from ernie_kg.data.fetch import DATASETS, FetchError, fetch


@pytest.fixture
def published(tmp_path):
    """Two 'official' files served from a file:// URL, with their MD5s."""
    server = tmp_path / "server"
    server.mkdir()
    files = {}
    for name, body in (("train_wiki.json", b'{"P1": []}'), ("pid2name.json", b"{}")):
        (server / name).write_bytes(body)
        files[name] = ((server / name).as_uri(), hashlib.md5(body).hexdigest())
    return server, files


def test_download_checks_and_keeps_good_files(tmp_path, published):
    _, files = published
    dest = tmp_path / "dest"
    paths = fetch("fewrel", dest, files=files, progress=lambda _: None)
    assert sorted(p.name for p in paths) == sorted(files)
    assert not list(dest.glob("*.part"))
    lines = []
    fetch("fewrel", dest, files=files, progress=lines.append)  # second call: nothing to do
    assert all("present, checksum ok" in line for line in lines)


def test_checksum_mismatch_keeps_nothing(tmp_path, published):
    server, files = published
    (server / "pid2name.json").write_bytes(b'{"tampered": 1}')
    with pytest.raises(FetchError, match="pid2name.json: checksum mismatch"):
        fetch("fewrel", tmp_path / "dest", files=files, progress=lambda _: None)
    assert not (tmp_path / "dest" / "pid2name.json").exists()
    assert not list((tmp_path / "dest").glob("*.part"))


def test_offline_fails_fast_and_names_from_dir(tmp_path):
    files = {"train_wiki.json": ("http://127.0.0.1:9/train_wiki.json", "0" * 32)}
    started = time.perf_counter()
    with pytest.raises(FetchError, match="--from-dir"):
        fetch("fewrel", tmp_path, files=files, timeout=2, progress=lambda _: None)
    assert time.perf_counter() - started < 5


def test_from_dir_copies_with_the_same_check(tmp_path, published):
    server, files = published
    paths = fetch("fewrel", tmp_path / "dest", from_dir=server, files=files,
                  progress=lambda _: None)
    assert [p.read_bytes() for p in paths] == [(server / n).read_bytes() for n in files]
    with pytest.raises(FetchError, match="not found"):
        fetch("fewrel", tmp_path / "other", from_dir=tmp_path / "empty", files=files,
              progress=lambda _: None)


def test_cli_names_unknown_datasets_and_official_files():
    assert set(DATASETS["fewrel"]) == {"train_wiki.json", "val_wiki.json", "pid2name.json"}
    result = CliRunner().invoke(app, ["data", "fetch", "nope", "--dest", "x"])
    assert result.exit_code != 0
    assert "unknown dataset 'nope'" in str(result.exception)
