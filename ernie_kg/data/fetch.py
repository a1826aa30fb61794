"""Download public datasets (FewRel 1.0) with a checksum check, or copy them offline.

Why here and not in each script: an experiment should start from verified files. The
checksums are the MD5s of the files at FewRel's official location (the ones MindNLP's
FewRel loader also pins; ``pid2name.json`` matches the copy in ../shared/data/fewrel).
Without a network the download fails within ``timeout`` seconds with a message naming the
``--from-dir`` alternative: fetch the files elsewhere, bring them over, and copy them in
with the same check.
"""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import BinaryIO

from ernie_kg.errors import ErnieKGError
from ernie_kg.io import write_atomic

__all__ = ["DATASETS", "FetchError", "fetch"]

_FEWREL = "https://raw.githubusercontent.com/thunlp/FewRel/master/data/"
#: dataset -> file name -> (official URL, MD5 of the official file)
DATASETS: dict[str, dict[str, tuple[str, str]]] = {
    "fewrel": {
        "train_wiki.json": (_FEWREL + "train_wiki.json", "5e663e9c3f1bfbdb2de72696e9504fd7"),
        "val_wiki.json": (_FEWREL + "val_wiki.json", "3f25573428c0332cb64b367a275ab0c7"),
        "pid2name.json": (_FEWREL + "pid2name.json", "0fe4c5a197c83668d1c7ef255cba5474"),
    },
}


class FetchError(ErnieKGError):
    """A dataset could not be fetched or failed its checksum; the message says what to do."""


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as source:
        for block in iter(lambda: source.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _copy_checked(source: BinaryIO, out: BinaryIO, expected: str, origin: str) -> None:
    """Stream ``source`` into ``out`` while hashing it; a wrong MD5 raises (inside
    :func:`~ernie_kg.io.write_atomic`, so the half-written file is dropped, not kept)."""
    digest = hashlib.md5(usedforsecurity=False)
    for block in iter(lambda: source.read(1 << 20), b""):
        digest.update(block)
        out.write(block)
    actual = digest.hexdigest()
    if actual != expected:
        raise FetchError(f"{origin}: checksum mismatch (MD5 {actual}, expected {expected}); "
                         "the file was not kept")


def fetch(
    dataset: str,
    dest: str | Path,
    from_dir: str | Path | None = None,
    timeout: float = 10.0,
    files: Mapping[str, tuple[str, str]] | None = None,
    progress: Callable[[str], None] = print,
) -> list[Path]:
    """Put every file of ``dataset`` into ``dest``, checked against its MD5.

    Files already in ``dest`` with the right checksum are kept. ``from_dir`` copies the
    files from a local directory instead of downloading. ``files`` overrides the file
    list (``name -> (url, md5)``). Returns the paths in ``dest``.
    """
    if files is None:
        if dataset not in DATASETS:
            raise FetchError(f"unknown dataset {dataset!r}; known: {sorted(DATASETS)}")
        files = DATASETS[dataset]
    dest = Path(dest)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as problem:  # a file in the way, no permission
        raise ErnieKGError(f"{dest}: cannot make the destination directory "
                           f"({problem.strerror or problem})") from None
    written = []
    for name, (url, md5) in files.items():
        target = dest / name
        if target.exists() and _md5(target) == md5:
            progress(f"{target}: present, checksum ok")
            written.append(target)
            continue
        if from_dir is not None:
            source = Path(from_dir) / name
            if not source.is_file():
                raise FetchError(f"{source}: not found (--from-dir must hold {sorted(files)})")
            write_atomic(target, partial(_copy_file, source, md5), binary=True)
        else:
            write_atomic(target, partial(_download, url, md5, timeout, dataset), binary=True)
        progress(f"{target}: {'copied' if from_dir else 'downloaded'}, checksum ok")
        written.append(target)
    return written


def _copy_file(source: Path, expected: str, out: BinaryIO) -> None:
    with open(source, "rb") as data:
        _copy_checked(data, out, expected, str(source))


def _download(url: str, expected: str, timeout: float, dataset: str, out: BinaryIO) -> None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            _copy_checked(response, out, expected, url)
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise FetchError(
            f"cannot download {url} ({reason}); no network? Download the files on a "
            f"machine that has one and run `ernie-kg data fetch {dataset} --from-dir DIR "
            "--dest DEST` here (the same checksums are checked)"
        ) from None
