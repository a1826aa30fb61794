"""Bad-input probe of the ``ernie-kg`` command line, as a new user would hit it.

Each :class:`Case` is one mistake (a broken KG file, a bad link input line, an option out
of range, a damaged saved model, a missing network, an import of vectors from elsewhere
that do not fit, ...) run as its own process, ``.venv/bin/ernie-kg ARGS`` from the project
root, in a fresh temporary directory. Some cases interrupt a command: Ctrl-C (SIGINT to
its process group, as a terminal sends it; expected: exit 130, one line saying
"interrupted", no traceback, no partial output) or ``kill -9``, then check what is left
and run the command again. A case that expects ``either`` accepts success or a clear
refusal. The outcome of each case is one of:

- ``ok``: success was expected, the command exited 0 and its checks passed;
- ``clear error``: an error was expected, the command exited non-zero with a message
  and no Python traceback;
- ``raw traceback``: a traceback was shown for a user-caused error, or a command that
  should have succeeded exited non-zero (or crashed on a signal);
- ``silent wrong``: exit 0 where an error was expected, or a check of the result failed
  (a byte-order mark inside an entity id, output that is not UTF-8, a log holding a step
  twice, ...);
- ``lost work``: an earlier run's files were changed, deleted or not moved aside intact;
- ``hang``: no exit before the case's timeout (120 s unless the case says otherwise), or
  more than 10 s spent waiting for a missing network (beyond the same command with
  ``HF_HUB_OFFLINE=1``, so a slow start on a loaded machine does not count);
- ``unclear error``: non-zero exit with no message at all, or a message without what
  the case asks of it (the file and line at fault, the entity, the label, the word
  "interrupted");
- ``setup failed``: the probe could not build the case's input (a probe problem, a
  fixture command that failed, or a command that ended before it could be interrupted;
  the message says which).

Shared inputs are built once per run under ``$SHARED`` (a copy of ``kg_data/demo``, tiny
FewRel files cut from ``kg_data/demo_corpus``, a 1-epoch TransE table, one tiny
fine-tuned model for the saved-model cases, a prepared pre-training corpus); each case
gets its own ``$TMP``. Commands in the results show those two directories as ``$SHARED``
and ``$TMP``.

Run (the whole probe takes 15-18 minutes on 2 CPU cores)::

    .venv/bin/python experiments/reliability_probe.py --out results/
    .venv/bin/python experiments/reliability_probe.py --only link --only kg   # some groups
    .venv/bin/python experiments/reliability_probe.py --case ft-kill-resume --keep
    .venv/bin/python experiments/reliability_probe.py --list

It writes ``reliability.json`` (every case: id, group, command, expected, outcome,
seconds, message, and the last frames of any traceback) and ``reliability.md`` (a
summary count per outcome, then a table) into ``--out``. The probe uses only the
standard library, so any Python 3.10+ can run it.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import datetime
import hashlib
import json
import os
import platform
import random
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ernie_kg.machine import cpu_model

ROOT = Path(__file__).resolve().parents[1]
CLI = ".venv/bin/ernie-kg"
DEMO_KG = ROOT / "kg_data" / "demo"
DEMO_CORPUS = ROOT / "kg_data" / "demo_corpus"
KG_FILES = ("train.txt", "valid.txt", "test.txt", "entities.jsonl", "relations.jsonl")
TRACEBACK = "Traceback (most recent call last)"
OUTCOMES = ("ok", "clear error", "raw traceback", "silent wrong", "lost work", "hang",
            "unclear error", "setup failed")
GROUPS = ("kg", "link", "embed", "import", "finetune", "pretrain", "saved", "network", "data",
          "cli")
DEFAULT_TIMEOUT = 120.0
#: Seconds a command that needs the hub may wait for it before it gives up (README: a 5 s
#: probe), measured against the same command with HF_HUB_OFFLINE=1.
NETWORK_LIMIT = 10.0
BOM = b"\xef\xbb\xbf"
NOTE = "probe-note.txt"  # a setup's remark for the results (e.g. where a run was killed)

#: Environment variables that would hide what a new user sees.
_SCRUBBED = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_ENDPOINT")


class SetupError(Exception):
    """The probe could not prepare a case (its message goes into the results)."""


@dataclass
class Completed:
    """What one command did."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False
    interrupted_at: float | None = None  # seconds after the start when SIGINT was sent


@dataclass
class Case:
    """One user mistake and what the command line should do about it.

    ``argv`` follows ``ernie-kg``; ``{tmp}`` and ``{shared}`` in it stand for the case's
    temporary directory and the shared fixtures. ``env`` entries set to None are unset.
    ``check(tmp, completed)`` returns a problem description or None; a problem counts as
    ``check_outcome`` (a check may return ``(outcome, problem)`` to say another).
    ``interrupt(output so far, seconds)``, when set, is polled while the command runs;
    once it is true the command's process group gets SIGINT, as Ctrl-C sends it (a
    command that ends before that is a ``setup failed``: its input is too small).
    """

    id: str
    group: str
    description: str
    argv: list[str]
    expect: str = "error"  # "error", "ok" or "either" (success, or a clear refusal)
    env: dict[str, str | None] | None = None
    setup: Callable[[Path], None] | None = None
    check: Callable[[Path, Completed], str | tuple[str, str] | None] | None = None
    check_outcome: str = "silent wrong"
    needs: tuple[str, ...] = ()
    timeout: float = DEFAULT_TIMEOUT
    interrupt: Callable[[str, float], bool] | None = None


# --------------------------------------------------------------------------- running
def base_env(overrides: dict[str, str | None] | None = None) -> dict[str, str]:
    """The caller's environment as a new user has it (no offline switches), wide and
    colourless so messages stay on one line, plus ``overrides``."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    env.update(NO_COLOR="1", TERM="dumb", COLUMNS="400", PYTHONUNBUFFERED="1")
    for key, value in (overrides or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def _kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the process group this probe started for ``process`` (it and any workers)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _peek(*files) -> str:
    """What a running command has written to ``files`` so far (read without moving the
    file offset it shares with the command)."""
    return "".join(os.pread(f.fileno(), os.fstat(f.fileno()).st_size, 0)
                   .decode("utf-8", "replace") for f in files)


def execute(argv: list[str], env: dict[str, str], timeout: float,
            interrupt: Callable[[str, float], bool] | None = None,
            sig: int = signal.SIGINT) -> Completed:
    """Run ``argv`` from the project root in its own process group, killed at ``timeout``;
    with ``interrupt`` (see :class:`Case`), ``sig`` goes to the group once it is true."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                   stdout=out, stderr=err, start_new_session=True)
        timed_out, interrupted_at = False, None
        if interrupt is None:
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
        else:
            while process.poll() is None:
                elapsed = time.perf_counter() - started
                if elapsed > timeout:
                    timed_out = True
                    break
                if interrupted_at is None and interrupt(_peek(out, err), elapsed):
                    try:
                        os.killpg(process.pid, sig)  # SIGINT: what Ctrl-C sends
                        interrupted_at = elapsed
                    except ProcessLookupError:
                        pass  # it ended just now
                time.sleep(0.1)
        _kill_group(process)  # a timed-out command, or workers left behind
        process.wait()
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        return Completed(process.returncode, out.read().decode("utf-8", "replace"),
                         err.read().decode("utf-8", "replace"), seconds, timed_out,
                         interrupted_at)


def run_cli(*args: str, timeout: float = 600) -> Completed:
    """A fixture command; raises :class:`SetupError` when it fails."""
    completed = execute([CLI, *args], base_env(), timeout)
    if completed.returncode != 0 or completed.timed_out:
        tail = (completed.stderr or completed.stdout).strip().splitlines()[-5:]
        raise SetupError(f"fixture command failed: ernie-kg {shlex.join(args)}: "
                         + " / ".join(tail))
    return completed


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_MESSAGE_START = re.compile(r"(error|Error):\s")
_PANEL_TOP, _PANEL_BOTTOM, _PANEL_SIDE = "╭", "╰", "│"


def message_of(completed: Completed, limit: int = 160) -> str:
    """The message a user reads: the text of the last Rich error panel, else the last
    non-empty line of stderr (stdout when stderr is empty), trimmed to ``limit``."""
    text = _ANSI.sub("", completed.stderr.strip() or completed.stdout.strip())
    lines = [line.split("\r")[-1].rstrip() for line in text.splitlines()]
    lines = [line for line in lines if line.strip()]
    message = ""
    starts = [i for i, line in enumerate(lines) if _MESSAGE_START.match(line)]
    if starts:  # "error: ..." as the CLI prints it, possibly wrapped over a few lines
        message = " ".join(line.strip() for line in lines[starts[-1]:starts[-1] + 6])
    bottoms = [i for i, line in enumerate(lines) if line.lstrip().startswith(_PANEL_BOTTOM)]
    if bottoms and not message:
        end = bottoms[-1]
        tops = [i for i in range(end) if lines[i].lstrip().startswith(_PANEL_TOP)]
        if tops:
            inner = (line.strip().strip(_PANEL_SIDE).strip() for line in lines[tops[-1] + 1:end])
            message = " ".join(part for part in inner if part)
    if not message:
        readable = [line.strip() for line in lines if re.search(r"\w", line)]
        message = readable[-1] if readable else ""
    message = re.sub(r"\s+", " ", message)
    return message if len(message) <= limit else message[: limit - 3] + "..."


def short_paths(text: str, tmp: Path) -> str:
    """``text`` with the case's and the shared temporary directories as $TMP, $SHARED."""
    text = text.replace(str(tmp), "$TMP").replace(str(FX.root), "$SHARED")
    return text.replace(str(tmp.parent), "$TMP/..")


def traceback_tail(completed: Completed, frames: int = 3) -> str | None:
    """The last ``frames`` frames and the exception line(s) of the last traceback, led by
    the deepest frame in ``ernie_kg/`` when that is not among them (where a fix goes)."""
    text = _ANSI.sub("", completed.stderr + "\n" + completed.stdout)
    start = text.rfind(TRACEBACK)
    if start < 0:
        return None
    lines = text[start:].splitlines()[1:]
    end = next((i + 1 for i, line in enumerate(lines)
                if line.strip() and not line.startswith(" ")), len(lines))
    lines = lines[:end]  # up to the exception line
    starts = [i for i, line in enumerate(lines) if line.startswith("  File ")]
    first = starts[-frames] if len(starts) >= frames else 0
    tail = lines[first:]
    ours = [i for i in starts if "/ernie_kg/" in lines[i]]
    if ours and ours[-1] < first:
        frame_end = next((i for i in starts if i > ours[-1]), first)
        tail = [*lines[ours[-1]:frame_end], "  ...", *tail]
    return "\n".join(tail)


def classify(case: Case, completed: Completed, problem: str | tuple[str, str] | None
             ) -> tuple[str, str | None]:
    """``(outcome, note)`` of one run of ``case`` (see the module docstring)."""
    text = completed.stdout + completed.stderr
    if isinstance(problem, tuple):  # the check said which outcome its problem is
        check_outcome, problem = problem
        case = dataclasses.replace(case, check_outcome=check_outcome)
    if completed.timed_out:
        return "hang", f"no exit after {case.timeout:g} s"
    if problem and case.check_outcome in ("lost work", "hang"):
        return case.check_outcome, problem
    crashed = completed.returncode < 0
    if case.expect == "ok" or (case.expect == "either" and completed.returncode == 0):
        if completed.returncode != 0:
            note = f"killed by signal {-completed.returncode}" if crashed else \
                f"exit {completed.returncode} where success was expected"
            return "raw traceback", note
        if problem:
            return case.check_outcome, problem
        return "ok", None
    if completed.returncode == 0:
        return "silent wrong", problem or "exit 0: the mistake was accepted"
    if crashed:
        return "raw traceback", f"killed by signal {-completed.returncode}"
    if TRACEBACK in text:
        return "raw traceback", problem
    if problem:
        return case.check_outcome, problem
    if not message_of(completed):
        return "unclear error", "non-zero exit with no message"
    return "clear error", None


def shown(argv: Iterable[str], tmp: Path, shared: Path,
          env: dict[str, str | None] | None = None) -> str:
    """A shell command line with the temporary directories shown as $TMP and $SHARED."""
    def one(arg: str) -> str:
        arg = arg.replace(str(tmp), "@TMP@").replace(str(shared), "@SHARED@")
        return shlex.quote(arg).replace("@TMP@", "$TMP").replace("@SHARED@", "$SHARED")

    prefix = []
    for key, value in (env or {}).items():
        prefix.append(f"env -u {key}" if value is None else f"{key}={shlex.quote(value)}")
    return " ".join([*prefix, CLI, *(one(a) for a in argv)])


# --------------------------------------------------------------------------- fixtures
class Fixtures:
    """Inputs shared by many cases, built once (lazily, so ``--only`` builds only what
    its cases need) under :attr:`root`."""

    DEPENDS = {"kg": (), "fewrel": (), "emb": ("kg",), "foreign": (), "stall": (),
               "model": ("kg", "fewrel", "emb"), "ptkg": ("kg", "emb"),
               "ptdata": ("ptkg", "fewrel")}

    def __init__(self) -> None:
        self.root = Path()
        self.built: dict[str, str | None] = {}  # name -> None (built) or the failure
        self.stall_address = "127.0.0.1:9"  # set by the "stall" fixture

    def need(self, name: str) -> None:
        """Build fixture ``name`` (and what it depends on) unless it is there."""
        if name in self.built:
            if self.built[name] is not None:
                raise SetupError(self.built[name])
            return
        try:
            for dependency in self.DEPENDS[name]:
                self.need(dependency)
            started = time.perf_counter()
            getattr(self, f"_build_{name}")()
            print(f"  [fixture {name}: {time.perf_counter() - started:.1f} s]", flush=True)
        except (SetupError, OSError, ValueError) as problem:
            self.built[name] = f"fixture {name!r}: {problem}"
            raise SetupError(self.built[name]) from None
        self.built[name] = None

    def _build_stall(self) -> None:
        """A local server that accepts connections and never answers (a stalled proxy)."""
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        held: list[socket.socket] = []

        def accept_forever() -> None:
            while True:
                connection, _ = server.accept()
                held.append(connection)  # kept open, never read or answered

        threading.Thread(target=accept_forever, daemon=True).start()
        self.stall_address = f"127.0.0.1:{server.getsockname()[1]}"

    def _build_kg(self) -> None:
        copy_kg(self.root / "kg")
        run_cli("kg", "index", "--kg", str(self.root / "kg"), "--workers", "1")

    def _build_fewrel(self) -> None:
        train = json.loads((DEMO_CORPUS / "train.json").read_text(encoding="utf-8"))
        dev = json.loads((DEMO_CORPUS / "dev.json").read_text(encoding="utf-8"))
        relations = ("capital_of", "born_in")
        write_json(self.root / "train.json", {r: train[r][:6] for r in relations})
        write_json(self.root / "dev.json", {r: dev[r][:3] for r in relations})
        write_json(self.root / "kill_train.json", {r: train[r][:12] for r in relations})
        lines = []
        for relation in list(train)[:6]:  # six "documents" of four sentences each
            text = " ".join(" ".join(i["tokens"]) for i in train[relation][:4])
            lines.append(json.dumps({"text": text}))
        (self.root / "corpus.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")

    def _build_emb(self) -> None:
        run_cli("kg", "embed", "--triples-dir", str(self.root / "kg"), "--out",
                str(self.root / "emb"), "--epochs", "1", "--dim", "16")

    def _build_foreign(self) -> None:
        """A KG of Wikidata-style ids that shares no entity with the demo KG, with its
        own saved entity table in ``foreign/embeddings``."""
        foreign = self.root / "foreign"
        foreign.mkdir(parents=True, exist_ok=True)
        triples = [(f"Q{i}", f"P{i % 3}", f"Q{(i * 7 + 3) % 40}") for i in range(1, 60)]
        (foreign / "train.txt").write_text("".join(f"{h}\t{r}\t{t}\n" for h, r, t in triples))
        (foreign / "test.txt").write_text("Q1\tP1\tQ10\nQ2\tP2\tQ17\n")
        run_cli("kg", "embed", "--triples-dir", str(foreign), "--out",
                str(foreign / "embeddings"), "--epochs", "1", "--dim", "16")

    def _build_model(self) -> None:
        run_cli("finetune", "--train", str(self.root / "train.json"), "--dev",
                str(self.root / "dev.json"), "--output-dir", str(self.root / "ft"),
                "--kg", str(self.root / "kg"), "--embeddings", str(self.root / "emb"),
                "--epochs", "1", "--batch-size", "4", "--max-length", "32")

    def _build_ptkg(self) -> None:
        copy_kg(self.root / "ptkg")
        shutil.copytree(self.root / "emb", self.root / "ptkg" / "embeddings")

    def _build_ptdata(self) -> None:
        run_cli("pretrain", "prepare", "--corpus", str(self.root / "corpus.jsonl"), "--kg",
                str(self.root / "ptkg"), "--out", str(self.root / "ptdata"),
                "--max-length", "32")


FX = Fixtures()


def copy_kg(target: Path, source: Path = DEMO_KG) -> Path:
    """The demo KG's files (not its index) in ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    for name in KG_FILES:
        shutil.copyfile(source / name, target / name)
    return target


def write_json(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, ensure_ascii=False), encoding="utf-8")


def demo_entity_ids() -> list[str]:
    """Distinct entity ids of the demo KG (triples and entities.jsonl), sorted."""
    ids = set()
    for name in ("train.txt", "valid.txt", "test.txt"):
        for line in (DEMO_KG / name).read_text(encoding="utf-8").splitlines():
            head, _, tail = line.split("\t")
            ids.update((head, tail))
    for line in (DEMO_KG / "entities.jsonl").read_text(encoding="utf-8").splitlines():
        ids.add(json.loads(line)["id"])
    return sorted(ids)


def clean_entity_count() -> int:
    return len(demo_entity_ids())


# --------------------------------------------------------------------------- setups
def broken_kg(edit: Callable[[Path], None]) -> Callable[[Path], None]:
    """A setup: the demo KG copied to ``$TMP/kg``, then ``edit(kg_dir)``, plus
    ``$TMP/in.jsonl`` (a few sentences to link)."""
    def setup(tmp: Path) -> None:
        edit(copy_kg(tmp / "kg"))
        write_lines(tmp / "in.jsonl", LINK_SENTENCES)
    return setup


def edit_line(name: str, number: int, new: bytes | None = None,
              insert: bytes | None = None) -> Callable[[Path], None]:
    """Replace line ``number`` (1-based) of KG file ``name`` with ``new`` and/or insert
    ``insert`` before it (lines end with a newline)."""
    def edit(kg: Path) -> None:
        lines = (kg / name).read_bytes().splitlines(keepends=True)
        if new is not None:
            lines[number - 1] = new
        if insert is not None:
            lines.insert(number - 1, insert)
        (kg / name).write_bytes(b"".join(lines))
    return edit


def prepend(name: str, data: bytes) -> Callable[[Path], None]:
    def edit(kg: Path) -> None:
        (kg / name).write_bytes(data + (kg / name).read_bytes())
    return edit


def relabel(entity_id: str, label: str, raw_json: str | None = None) -> Callable[[Path], None]:
    """Give ``entity_id`` the ``label`` (or the label's JSON text ``raw_json``, for escapes
    that cannot be written as UTF-8) and no aliases."""
    def edit(kg: Path) -> None:
        out = []
        for line in (kg / "entities.jsonl").read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            if record["id"] == entity_id:
                record["label"], record["aliases"] = "@LABEL@", []
                line = json.dumps(record, ensure_ascii=False).replace(
                    '"@LABEL@"', raw_json or json.dumps(label, ensure_ascii=False))
            out.append(line)
        (kg / "entities.jsonl").write_text("\n".join(out) + "\n", encoding="utf-8")
    return edit


def write_lines(path: Path, lines: Iterable[str | bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join((x if isinstance(x, bytes) else x.encode("utf-8")) + b"\n"
                              for x in lines))


LINK_SENTENCES = [json.dumps({"text": t}) for t in (
    "Paris is the capital of France .",
    "Germany shares a border with France .",
    "A Brief History of Time was written by Stephen Hawking .",
)]


LINK_LINES = 100_000  # lines for the Ctrl-C case: about 8 s of linking on 2 CPU cores
HUGE_LINE = 1_200_000


def link_input(*lines: str | bytes) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        write_lines(tmp / "in.jsonl", lines)
    return setup


def fewrel_variant(edit: Callable[[dict], object] | None = None, raw: bytes | None = None,
                   name: str = "train.json") -> Callable[[Path], None]:
    """A setup writing ``$TMP/train.json``: the shared tiny FewRel file after ``edit``
    (which changes the dict in place), or ``raw`` bytes."""
    def setup(tmp: Path) -> None:
        if raw is not None:
            (tmp / name).write_bytes(raw)
            return
        data = json.loads((FX.root / "train.json").read_text(encoding="utf-8"))
        if edit is not None:
            edit(data)
        write_json(tmp / name, data)
    return setup


def fewrel_bytes(transform: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        (tmp / "train.json").write_bytes(transform((FX.root / "train.json").read_bytes()))
    return setup


def first_instance(data: dict) -> dict:
    return next(iter(data.values()))[0]


def snapshot(directory: Path) -> dict[str, str]:
    """SHA-256 of every file under ``directory``, by relative path."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def earlier_run(source: Callable[[], Path], names: Iterable[str] | None = None,
                target: str = "out") -> Callable[[Path], None]:
    """A setup: ``$TMP/<target>`` holds an earlier run (a copy of ``source()``, or of its
    files ``names`` only); its file hashes go to ``$TMP/earlier.json``."""
    def setup(tmp: Path) -> None:
        origin, destination = source(), tmp / target
        if names is None:
            shutil.copytree(origin, destination)
        else:
            for name in names:
                (destination / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(origin / name, destination / name)
        write_json(tmp / "earlier.json", snapshot(destination))
    return setup


def fake_pretrain_run(tmp: Path) -> None:
    """``$TMP/out`` holding an earlier pre-training run's log and settings."""
    out = tmp / "out"
    write_lines(out / "log.jsonl", [json.dumps({"step": s, "loss": 10.0 - s}) for s in (1, 2)])
    write_json(out / "pretraining_settings.json", {"max_steps": 2})
    write_json(tmp / "earlier.json", snapshot(out))


def copied_model(damage: Callable[[Path], None] | None = None) -> Callable[[Path], None]:
    """A setup: the shared fine-tuned model copied to ``$TMP/model``, then ``damage``."""
    def setup(tmp: Path) -> None:
        shutil.copytree(FX.root / "ft" / "model", tmp / "model")
        if damage is not None:
            damage(tmp / "model")
    return setup


def copied_embeddings(damage: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        shutil.copytree(FX.root / "emb", tmp / "emb")
        damage(tmp / "emb")
    return setup


def delete(name: str) -> Callable[[Path], None]:
    return lambda directory: (directory / name).unlink()


def truncate_half(name: str) -> Callable[[Path], None]:
    def damage(directory: Path) -> None:
        data = (directory / name).read_bytes()
        (directory / name).write_bytes(data[: len(data) // 2])
    return damage


def swap_ids(name: str, key: str | None = None) -> Callable[[Path], None]:
    """Swap the first two entity ids of a JSON list (``key``: of that field of an
    object): same count, same format, different content."""
    def damage(directory: Path) -> None:
        value = json.loads((directory / name).read_text(encoding="utf-8"))
        ids = value[key] if key else value
        ids[0], ids[1] = ids[1], ids[0]
        write_json(directory / name, value)
    return damage


def drop_last_id(name: str) -> Callable[[Path], None]:
    def damage(directory: Path) -> None:
        ids = json.loads((directory / name).read_text(encoding="utf-8"))
        write_json(directory / name, ids[:-1])
    return damage


# --------------------------------------------------------------------------- checks
def read_jsonl_strict(path: Path) -> tuple[list[dict], str | None]:
    """The records of ``path`` and a problem: missing, not UTF-8, not JSON per line."""
    if not path.is_file():
        return [], f"no output file {path.name}"
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as problem:
        return [], f"{path.name} is not valid UTF-8 ({problem})"
    if "\ufeff" in text:
        return [], f"{path.name} contains a byte-order mark"
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as problem:
                return [], f"{path.name}:{number} is not JSON ({problem})"
    return records, None


def linked_ids(record: dict) -> dict[str, str | None]:
    return {m.get("text"): m.get("entity_id") for m in record.get("mentions", [])}


def link_output_ok(lines: int | None = None, expect: dict[str, str] | None = None,
                   name: str = "out.jsonl") -> Callable[[Path, Completed], str | None]:
    """Check: ``$TMP/<name>`` is UTF-8 JSONL (no BOM) with ``lines`` records, and each
    ``mention text -> entity id`` of ``expect`` is linked in some record."""
    def check(tmp: Path, completed: Completed) -> str | None:
        records, problem = read_jsonl_strict(tmp / name)
        if problem:
            return problem
        if lines is not None and len(records) != lines:
            return f"{len(records)} output records, expected {lines}"
        for record in records:
            for key in record:
                if "\ufeff" in key:
                    return f"a byte-order mark inside the key {key!r}"
        found = {}
        for record in records:
            found.update(linked_ids(record))
        for mention, entity in (expect or {}).items():
            if found.get(mention) != entity:
                return (f"{mention!r} linked to {found.get(mention)!r}, expected {entity!r} "
                        f"(linked: {found})")
        return None
    return check


def no_output(name: str) -> Callable[[Path, Completed], str | None]:
    def check(tmp: Path, completed: Completed) -> str | None:
        return f"a partial {name} was left behind" if (tmp / name).exists() else None
    return check


def stats_entities(expected: int) -> Callable[[Path, Completed], str | None]:
    """Check: ``kg stats`` reports ``expected`` entities (a BOM or ``\\r`` kept in an id
    would add entities)."""
    def check(tmp: Path, completed: Completed) -> str | None:
        found = re.search(r"entities\s*\S\s*(\d+)", completed.stdout)
        if not found:
            return "kg stats printed no entity count"
        count = int(found.group(1))
        return None if count == expected else \
            f"{count} entities, expected {expected} (a stray character kept in some ids?)"
    return check


def unchanged(target: str = "out") -> Callable[[Path, Completed], str | None]:
    """Check: the earlier run in ``$TMP/<target>`` is byte for byte as it was."""
    def check(tmp: Path, completed: Completed) -> str | None:
        before = json.loads((tmp / "earlier.json").read_text())
        if not (tmp / target).is_dir():
            return f"the earlier run in {target}/ is gone"
        after = snapshot(tmp / target)
        changed = sorted(n for n in before if after.get(n) != before[n])
        added = sorted(set(after) - set(before))
        if changed:
            return f"earlier files changed or deleted: {', '.join(changed[:5])}"
        if added:
            return f"new files written into the earlier run: {', '.join(added[:5])}"
        return None
    return check


def moved_aside(target: str = "out", new_file: str = "metrics.json"
                ) -> Callable[[Path, Completed], str | None]:
    """Check: the earlier run is intact in ``<target>.old-1`` and ``<target>`` holds a
    new run (``new_file``)."""
    def check(tmp: Path, completed: Completed) -> str | None:
        before = json.loads((tmp / "earlier.json").read_text())
        aside = tmp / f"{target}.old-1"
        if not aside.is_dir():
            return f"no {target}.old-1: the earlier run was not moved aside"
        after = snapshot(aside)
        lost = sorted(n for n in before if after.get(n) != before[n])
        if lost:
            return f"{target}.old-1 lacks or changed: {', '.join(lost[:5])}"
        if not (tmp / target / new_file).is_file():
            return f"no new {new_file} in {target}/"
        return None
    return check


def all_of(*checks: Callable[[Path, Completed], str | None]
           ) -> Callable[[Path, Completed], str | None]:
    def check(tmp: Path, completed: Completed) -> str | None:
        for one in checks:
            problem = one(tmp, completed)
            if problem:
                return problem
        return None
    return check


def every_problem(*checks: Callable[[Path, Completed], str | tuple[str, str] | None]
                  ) -> Callable[[Path, Completed], str | tuple[str, str] | None]:
    """Run every check (not only up to the first problem): their problems joined, as the
    outcome of the first one that named one."""
    def check(tmp: Path, completed: Completed) -> str | tuple[str, str] | None:
        found = [problem for one in checks if (problem := one(tmp, completed))]
        if not found:
            return None
        text = "; ".join(p[1] if isinstance(p, tuple) else p for p in found)
        return (found[0][0], text) if isinstance(found[0], tuple) else text
    return check


def fast(limit: float) -> Callable[[Path, Completed], str | None]:
    def check(tmp: Path, completed: Completed) -> str | None:
        return None if completed.seconds <= limit else \
            f"took {completed.seconds:.1f} s to give up (limit {limit:g} s)"
    return check


def network_wait(argv: list[str], env: dict[str, str | None],
                 limit: float = NETWORK_LIMIT) -> Callable[[Path, Completed], str | None]:
    """Check: the command spent at most ``limit`` seconds on the network before failing,
    i.e. beyond a control run of the same command with HF_HUB_OFFLINE=1 (start-up and
    imports cost the same in both; on a loaded machine they alone can pass 10 s)."""
    def check(tmp: Path, completed: Completed) -> str | None:
        control = execute([CLI, *expand(argv, tmp)],
                          base_env({**expand_env(env, tmp), "HF_HUB_OFFLINE": "1"}),
                          DEFAULT_TIMEOUT)
        waited = completed.seconds - control.seconds
        ended = "killed at the timeout" if completed.timed_out else "failed"
        (tmp / NOTE).write_text(
            f"{ended} after {completed.seconds:.1f} s; the same command with HF_HUB_OFFLINE=1 "
            f"failed after {control.seconds:.1f} s: {waited:.1f} s spent waiting for the "
            "network")
        return None if waited <= limit else \
            f"spent {waited:.1f} s waiting for the network before giving up (about 10 s promised)"
    return check


def files_exist(*names: str) -> Callable[[Path, Completed], str | None]:
    def check(tmp: Path, completed: Completed) -> str | None:
        missing = [n for n in names if not (tmp / n).exists()]
        return f"missing after the run: {', '.join(missing)}" if missing else None
    return check


def dest_has_no(names: Iterable[str], dest: str = "dest"
                ) -> Callable[[Path, Completed], str | None]:
    def check(tmp: Path, completed: Completed) -> str | None:
        kept = [n for n in names if (tmp / dest / n).exists()]
        return f"bad files kept in {dest}/: {', '.join(kept)}" if kept else None
    return check


# --------------------------------------------------------------------------- saved tables
def write_npy(path: Path, rows: list[list[float]]) -> None:
    """A float32 ``.npy`` file holding ``rows`` (numpy's format 1.0, written by hand: the
    probe uses only the standard library)."""
    header = repr({"descr": "<f4", "fortran_order": False, "shape": (len(rows), len(rows[0]))})
    header += " " * (-(10 + len(header) + 1) % 64) + "\n"  # numpy aligns the data to 64
    values = array("f", [value for row in rows for value in row])
    if sys.byteorder == "big":
        values.byteswap()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header))
                     + header.encode("latin-1") + values.tobytes())


def read_npy(path: Path) -> tuple[list[list[float]], str | None]:
    """The rows of a 2-d float ``.npy`` file, and a problem (missing, not ``.npy``,
    truncated, ...)."""
    if not path.is_file():
        return [], f"no {path.name}"
    raw = path.read_bytes()
    if raw[:6] != b"\x93NUMPY" or len(raw) < 12:
        return [], f"{path.name} is not a .npy file"
    size, start = (2, 10) if raw[6] == 1 else (4, 12)
    length = int.from_bytes(raw[8:8 + size], "little")
    try:
        header = ast.literal_eval(raw[start:start + length].decode("latin-1"))
        code = {"<f4": "f", "<f8": "d"}[header["descr"]]
        rows, width = header["shape"]
    except (ValueError, SyntaxError, KeyError, TypeError):
        return [], f"{path.name}: unreadable or unexpected header"
    values = array(code)
    data = raw[start + length:]
    if header.get("fortran_order") or len(data) != rows * width * values.itemsize:
        return [], (f"{path.name}: {len(data)} bytes of data where its header promises "
                    f"{rows * width * values.itemsize} (truncated?)")
    values.frombytes(data)
    if sys.byteorder == "big":
        values.byteswap()
    return [values[i * width:(i + 1) * width].tolist() for i in range(rows)], None


def nearest_check(directory: str = "out", entity: str = "paris", k: int = 5,
                  must_work: bool = True, first: str | None = None
                  ) -> Callable[[Path, Completed], str | tuple[str, str] | None]:
    """Check: ``kg nearest --embeddings $TMP/<directory>`` answers with the ``k`` entities
    nearest ``entity`` by L2 distance, computed here from the saved files (and ``first``
    first, when given). Without ``must_work`` a clear error is fine too; an answer from a
    table that is not whole never is."""
    def check(tmp: Path, completed: Completed) -> str | tuple[str, str] | None:
        table = tmp / directory
        result = execute([CLI, "kg", "nearest", "--embeddings", str(table), "--entity", entity,
                          "--k", str(k)], base_env(), DEFAULT_TIMEOUT)
        command = f"kg nearest --embeddings {directory}"
        if result.timed_out:
            return "hang", f"{command} did not exit"
        if result.returncode != 0:
            if TRACEBACK in result.stdout + result.stderr:
                return "raw traceback", f"{command}: a traceback: {message_of(result)}"
            if must_work:
                return f"{command} failed: {message_of(result)}"
            return None if message_of(result) else \
                ("unclear error", f"{command} failed with no message")
        answer = [line.split("\t") for line in result.stdout.splitlines() if "\t" in line]
        vectors, problem = read_npy(table / "entity_vectors.npy")
        try:
            ids = json.loads((table / "embeddings.json").read_text(encoding="utf-8"))[
                "entity_ids"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            ids, problem = [], problem or f"embeddings.json unreadable ({error})"
        if not problem and len(ids) != len(vectors):
            problem = f"{len(ids)} ids for {len(vectors)} vectors"
        if problem:
            return f"{command} answered from a table that is not whole: {problem}"
        own = vectors[ids.index(entity)]
        distance = {i: sum((a - b) ** 2 for a, b in zip(v, own))
                    for i, v in zip(ids, vectors) if i != entity}
        best = sorted(distance.values())[:k]
        wrong = [i for i, _ in answer if i not in distance or distance[i] > best[-1] * 1.001
                 + 1e-6]
        if len(answer) != len(best) or wrong:
            return (f"{command} gave {[i for i, _ in answer]}, not the {len(best)} nearest "
                    f"by L2 (wrong: {wrong})")
        if first and answer[0][0] != first:
            return f"{command}: the nearest of {entity} is {answer[0][0]}, expected {first}"
        return None
    return check


# --------------------------------------------------------------------------- interrupts
def after(pattern: str, delay: float = 0.0) -> Callable[[str, float], bool]:
    """An interrupt trigger (see :class:`Case`): true ``delay`` seconds after ``pattern``
    (a regular expression) first shows in the command's output. One per run: it keeps
    the time it first saw the pattern."""
    seen: list[float] = []

    def trigger(text: str, seconds: float) -> bool:
        if not seen and re.search(pattern, _ANSI.sub("", text)):
            seen.append(seconds)
        return bool(seen) and seconds - seen[0] >= delay
    return trigger


def interrupted_cleanly(completed: Completed) -> str | tuple[str, str] | None:
    """The problem of a command stopped by SIGINT: a traceback or ``KeyboardInterrupt``
    shown, an exit code other than 130, or not one line saying "interrupted" as its
    last words."""
    text = _ANSI.sub("", completed.stdout + completed.stderr)
    if TRACEBACK in text or "KeyboardInterrupt" in text:
        tail = (traceback_tail(completed, 2) or "").strip().splitlines()
        return "raw traceback", ("a traceback after SIGINT: " + " / ".join(
            line.strip() for line in tail[-4:]))[:600]
    if completed.returncode < 0:
        return "raw traceback", f"killed by signal {-completed.returncode} (SIGINT not handled)"
    if completed.returncode != 130:
        return f"exit {completed.returncode} after SIGINT, expected 130"
    lines = [line for line in re.split(r"[\r\n]", text) if "interrupted" in line.lower()]
    if not lines:
        return "unclear error", "no 'interrupted' message after SIGINT"
    if len(lines) > 1:
        return f"'interrupted' said on {len(lines)} lines"
    if "interrupted" not in message_of(completed).lower():
        return f"more output after the 'interrupted' line: {message_of(completed)}"
    return None


def no_partial_output(folder: str, name: str) -> Callable[[Path, Completed], str | None]:
    """Check: ``$TMP/<folder>`` holds neither ``name`` nor a temporary file of it."""
    def check(tmp: Path, completed: Completed) -> str | None:
        left = sorted(p.name for p in (tmp / folder).iterdir()
                      if p.name == name or p.name.startswith(f".{name}") or
                      p.name.endswith(".tmp"))
        return f"left behind in {folder}/: {', '.join(left)}" if left else None
    return check


def run_first(tmp: Path, argv: list[str], trigger: Callable[[str, float], bool],
              sig: int = signal.SIGINT, limit: float = 300) -> Completed:
    """A setup's first run of ``argv``, sent ``sig`` once ``trigger`` is true; its output
    goes to ``$TMP/first-run.log``, what it did to ``$TMP/first-run.json``."""
    completed = execute([CLI, *expand(argv, tmp)], base_env(), limit, trigger, sig)
    (tmp / "first-run.log").write_text(completed.stdout + completed.stderr, encoding="utf-8")
    write_json(tmp / "first-run.json", dataclasses.asdict(completed))
    if completed.interrupted_at is None:
        ended = f"no signal within {limit:g} s" if completed.timed_out else \
            f"the first run ended (exit {completed.returncode}) after {completed.seconds:.1f} s"
        raise SetupError(f"{ended}, before it could be signalled; see first-run.log")
    return completed


def first_run_interrupted(tmp: Path, completed: Completed) -> str | tuple[str, str] | None:
    """Check: the setup's first run, stopped by SIGINT, ended as
    :func:`interrupted_cleanly` wants."""
    first = Completed(**json.loads((tmp / "first-run.json").read_text()))
    if first.timed_out:
        waited = first.seconds - (first.interrupted_at or 0.0)
        return "hang", f"the first run did not exit within {waited:.0f} s of SIGINT"
    problem = interrupted_cleanly(first)
    if problem is None:
        return None
    outcome, text = problem if isinstance(problem, tuple) else ("silent wrong", problem)
    return outcome, f"the interrupted first run: {text}"


# --------------------------------------------------------------------------- kill -9
FT_BASE = ["finetune", "--kg", "{shared}/kg", "--embeddings", "{shared}/emb",
           "--epochs", "1", "--batch-size", "4", "--max-length", "32"]
FT = [*FT_BASE, "--train", "{shared}/train.json", "--output-dir", "{tmp}/run"]
FT_KILL = ["finetune", "--kg", "{shared}/kg", "--embeddings", "{shared}/emb",
           "--train", "{shared}/kill_train.json", "--output-dir", "{tmp}/run",
           "--epochs", "2", "--batch-size", "2", "--max-length", "32"]


def expand(argv: Iterable[str], tmp: Path) -> list[str]:
    """``argv`` (or env values) with ``{tmp}``, ``{shared}`` and ``{stall}`` filled in."""
    return [a.replace("{tmp}", str(tmp)).replace("{shared}", str(FX.root))
            .replace("{stall}", FX.stall_address) for a in argv]


def expand_env(env: dict[str, str | None] | None, tmp: Path) -> dict[str, str | None]:
    return {k: None if v is None else expand([v], tmp)[0] for k, v in (env or {}).items()}


def _newest_checkpoint(checkpoints: Path) -> int | None:
    steps = [int(p.name.split("-")[1]) for p in checkpoints.glob("checkpoint-*")
             if p.name.split("-")[1].isdigit() and (p / "trainer_state.json").is_file()]
    return max(steps, default=None)


def _logged_steps(log: Path) -> list[int]:
    steps = []
    if log.is_file():
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                steps.append(int(json.loads(line)["step"]))
            except (ValueError, KeyError, TypeError):
                pass  # a line torn by the kill
    return steps


def _past_checkpoint(run: Path) -> bool:
    """A complete ``checkpoint-N`` exists and the log has gone past step N."""
    step = _newest_checkpoint(run / "checkpoints")
    return step is not None and max(_logged_steps(run / "log.jsonl"), default=0) > step


def killed_finetune(tmp: Path, limit: float = 300) -> None:
    """Start the fine-tuning run, wait until a complete ``checkpoint-N`` exists and the
    log has gone past step N, then ``kill -9`` it (its whole process group)."""
    run = tmp / "run"
    with open(tmp / "first-run.log", "wb") as log:
        process = subprocess.Popen([CLI, *expand(FT_KILL, tmp)], cwd=ROOT, env=base_env(),
                                   stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + limit
    try:
        while True:
            if process.poll() is not None:
                raise SetupError(f"the first run ended (exit {process.returncode}) before "
                                 "it could be killed; see first-run.log")
            if time.monotonic() > deadline:
                raise SetupError(f"no checkpoint within {limit:g} s")
            if _past_checkpoint(run):
                break
            time.sleep(0.2)
    finally:
        _kill_group(process)
        process.wait()
    killed = {"checkpoint": _newest_checkpoint(run / "checkpoints"),
              "logged_steps": _logged_steps(run / "log.jsonl")}
    (tmp / "killed.json").write_text(json.dumps(killed))
    (tmp / NOTE).write_text(f"killed with SIGKILL after checkpoint-{killed['checkpoint']}, "
                            f"log at steps {killed['logged_steps']}")


def interrupted_finetune(tmp: Path) -> None:
    """:func:`killed_finetune` with Ctrl-C: SIGINT to the process group at the same point
    (``first-run.json`` keeps how the run ended)."""
    first = run_first(tmp, FT_KILL, lambda text, seconds: _past_checkpoint(tmp / "run"))
    killed = {"checkpoint": _newest_checkpoint(tmp / "run" / "checkpoints"),
              "logged_steps": _logged_steps(tmp / "run" / "log.jsonl")}
    (tmp / "killed.json").write_text(json.dumps(killed))
    (tmp / NOTE).write_text(f"SIGINT after {first.interrupted_at:.1f} s (past a checkpoint); "
                            f"the run exited {first.returncode} after {first.seconds:.1f} s "
                            f"with checkpoint-{killed['checkpoint']}, log at steps "
                            f"{killed['logged_steps']}")


EMBED_KILL = ["kg", "embed", "--triples-dir", "{shared}/kg", "--out", "{tmp}/out",
              "--epochs", "6", "--dim", "16"]  # about 1.2 s an epoch on 2 CPU cores


def killed_embed(tmp: Path) -> None:
    """``kg embed`` killed with SIGKILL (its process group) 2 s into training."""
    first = run_first(tmp, EMBED_KILL, after(r"Training epochs", 2.0), signal.SIGKILL)
    out = tmp / "out"
    held = sorted(str(p.relative_to(out)) for p in out.rglob("*")) if out.exists() else None
    (tmp / NOTE).write_text(f"killed with SIGKILL after {first.interrupted_at:.1f} s; "
                            + (f"out/ then held {held}" if held is not None else "no out/ yet"))


def rerun_after_kill(tmp: Path, completed: Completed) -> str | tuple[str, str] | None:
    """Check: the rerun succeeded and its table answers ``kg nearest`` correctly, or it
    was refused with the --overwrite hint and what the killed run left either answers
    correctly or is refused clearly."""
    if completed.returncode == 0:
        return nearest_check()(tmp, completed)
    if "--overwrite" not in completed.stdout + completed.stderr:
        return "unclear error", "the rerun was refused without the --overwrite hint"
    return nearest_check(must_work=False)(tmp, completed)


def resumed_cleanly(tmp: Path, completed: Completed) -> str | None:
    """Check: the resumed run finished (metrics.json, model/) and log.jsonl holds each
    step once per kind of record (training loss, evaluation, final summary)."""
    run = tmp / "run"
    for name in ("metrics.json", "model/model.safetensors"):
        if not (run / name).is_file():
            return f"no {name} after the resumed run"
    seen: Counter = Counter()
    for line in (run / "log.jsonl").read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            return "log.jsonl holds a torn line"
        kind = ("eval" if any(k.startswith("eval_") for k in record) else
                "summary" if "train_runtime" in record else "train")
        seen[(record.get("step"), kind)] += 1
    twice = sorted(f"{kind} step {step}" for (step, kind), n in seen.items() if n > 1)
    killed = json.loads((tmp / "killed.json").read_text())
    if twice:
        return (f"log.jsonl holds {', '.join(twice)} twice (killed after checkpoint-"
                f"{killed['checkpoint']}, log at steps {killed['logged_steps']})")
    return None


# --------------------------------------------------------------------------- cases
def kg_cases() -> list[Case]:
    link = ["link", "--kg", "{tmp}/kg", "--input", "{tmp}/in.jsonl", "--output",
            "{tmp}/out.jsonl"]
    stats = ["kg", "stats", "--kg", "{tmp}/kg"]
    latin1_train = "café_de_flore\tlocated_in\tparis\n".encode("latin-1")
    latin1_entity = json.dumps({"id": "abuja", "label": "Abujá", "aliases": []},
                               ensure_ascii=False).encode("latin-1") + b"\n"
    entities = clean_entity_count()

    def crlf(kg: Path) -> None:
        (kg / "train.txt").write_bytes((kg / "train.txt").read_bytes().replace(b"\n", b"\r\n"))

    def empty_kg(kg: Path) -> None:
        for name in KG_FILES:
            (kg / name).unlink()
        (kg / "train.txt").write_bytes(b"")

    def not_a_kg(tmp: Path) -> None:
        write_lines(tmp / "notes" / "README.md", ["# my notes", "", "nothing here"])
        (tmp / "notes" / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(64))

    def duplicate_id(kg: Path) -> None:
        first = (kg / "entities.jsonl").read_bytes().splitlines(keepends=True)[2]
        with open(kg / "entities.jsonl", "ab") as out:
            out.write(first)

    return [
        Case("kg-nonutf8-train", "kg", "train.txt line 5 saved as Latin-1 (café)", stats,
             setup=broken_kg(edit_line("train.txt", 5, new=latin1_train))),
        Case("kg-nonutf8-entities", "kg", "entities.jsonl line 3 saved as Latin-1 (Abujá)",
             link, setup=broken_kg(edit_line("entities.jsonl", 3, new=latin1_entity))),
        Case("kg-bom-train", "kg", "UTF-8 byte-order mark opening train.txt (accepted, "
             "dropped: no extra entity)", stats, expect="ok",
             setup=broken_kg(prepend("train.txt", BOM)), check=stats_entities(entities)),
        Case("kg-bom-entities", "kg", "UTF-8 byte-order mark opening entities.jsonl "
             "(accepted; the first entity still links)", link, expect="ok",
             setup=broken_kg(prepend("entities.jsonl", BOM)),
             check=link_output_ok(3, {"A Brief History of Time": "a_brief_history_of_time",
                                      "Paris": "paris"})),
        Case("kg-crlf-train", "kg", "train.txt with Windows line endings (accepted, no \\r "
             "in ids)", stats, expect="ok", setup=broken_kg(crlf),
             check=stats_entities(entities)),
        Case("kg-two-fields", "kg", "a train.txt line with 2 fields", stats,
             setup=broken_kg(edit_line("train.txt", 10, insert=b"paris\tcapital_of\n"))),
        Case("kg-four-fields", "kg", "a train.txt line with 4 fields", stats,
             setup=broken_kg(edit_line("train.txt", 10,
                                       insert=b"paris\tcapital_of\tfrance\t0.9\n"))),
        Case("kg-empty-field", "kg", "a train.txt line with an empty relation", stats,
             setup=broken_kg(edit_line("train.txt", 10, insert=b"paris\t\tfrance\n"))),
        Case("kg-space-separated", "kg", "a train.txt line separated by spaces, not tabs",
             stats, setup=broken_kg(edit_line("train.txt", 10,
                                              insert=b"paris capital_of france\n"))),
        Case("kg-bad-json-entities", "kg", "entities.jsonl line 7 cut off mid-record", link,
             setup=broken_kg(edit_line("entities.jsonl", 7, new=b'{"id": "x", "label": \n'))),
        Case("kg-entity-without-id", "kg", "an entities.jsonl record with no id", link,
             setup=broken_kg(edit_line("entities.jsonl", 4,
                                       insert=b'{"label": "Nowhere", "aliases": []}\n'))),
        Case("kg-duplicate-entity", "kg", "an entity id twice in entities.jsonl", link,
             setup=broken_kg(duplicate_id)),
        Case("kg-missing-train", "kg", "KG directory without train.txt", stats,
             setup=broken_kg(delete("train.txt"))),
        Case("kg-empty", "kg", "KG directory whose train.txt is empty", stats,
             setup=broken_kg(empty_kg)),
        Case("kg-not-a-kg", "kg", "--kg is a directory of notes and photos", [
            "kg", "stats", "--kg", "{tmp}/notes"], setup=not_a_kg),
        Case("kg-file-not-dir", "kg", "--kg points at train.txt instead of its directory", [
            "kg", "stats", "--kg", "{tmp}/kg/train.txt"], setup=broken_kg(lambda kg: None)),
        Case("kg-missing-dir", "kg", "--kg names a directory that does not exist", [
            "link", "--kg", "{tmp}/no-such-kg", "--input", "{tmp}/in.jsonl", "--output",
            "{tmp}/out.jsonl"], setup=link_input(*LINK_SENTENCES)),
        Case("kg-surrogate-label", "kg", 'a label with an unpaired surrogate escape '
             '"\\ud800" (repaired with a warning; output valid UTF-8)', link, expect="ok",
             setup=broken_kg(relabel("paris", "", raw_json='"Par\\ud800is"')),
             check=link_output_ok(3, {"France": "france"})),
        Case("kg-zero-width-label", "kg", "France's label holds a zero-width space "
             "(Fr\\u200bance): 'France' still links", link, expect="ok",
             setup=broken_kg(relabel("france", "Fr\u200bance")),
             check=link_output_ok(3, {"France": "france"})),
        Case("kg-soft-hyphen-label", "kg", "Germany's label holds soft hyphens "
             "(Ger\\u00adman\\u00ady): 'Germany' still links", link, expect="ok",
             setup=broken_kg(relabel("germany", "Ger\u00adman\u00ady")),
             check=link_output_ok(3, {"Germany": "germany"})),
        Case("kg-index-workers-negative", "kg", "kg index --workers -1", [
            "kg", "index", "--kg", "{shared}/kg", "--workers", "-1"], needs=("kg",)),
        Case("kg-nearest-unknown-entity", "kg", "kg nearest for an id not in the table", [
            "kg", "nearest", "--embeddings", "{shared}/emb", "--entity", "Paris"],
             needs=("emb",)),
    ]


def link_cases() -> list[Case]:
    def link(input_name: str = "in.jsonl", output: str = "{tmp}/out.jsonl") -> list[str]:
        return ["link", "--kg", "{shared}/kg", "--input", f"{{tmp}}/{input_name}",
                "--output", output]

    good = LINK_SENTENCES[0]

    def many_lines(tmp: Path) -> None:
        sentences = [*(json.loads(line)["text"] for line in LINK_SENTENCES),
                     "Ludwig van Beethoven was born in Bonn ."]
        write_lines(tmp / "big.jsonl", (json.dumps({"text": f"{sentences[i % 4]} ({i})"})
                                        for i in range(LINK_LINES)))
        (tmp / "out").mkdir()

    def huge_line(tmp: Path) -> None:
        unit = "Paris is the capital of France . "
        write_lines(tmp / "in.jsonl", [json.dumps({"text": (unit * (HUGE_LINE // len(unit)
                                                                    + 1))[:HUGE_LINE]})])

    return [
        Case("link-sigint", "link", f"Ctrl-C (SIGINT to the process group) while link works "
             f"through {LINK_LINES:,} lines: exit 130, one 'interrupted' line, no "
             "traceback, no output or temporary file left",
             link("big.jsonl", "{tmp}/out/out.jsonl"), needs=("kg",), setup=many_lines,
             interrupt=after(r"link:\s*\d+%\|.*?\| *[1-9]\d*/\d+", 0.5),
             check=every_problem(lambda tmp, c: interrupted_cleanly(c),
                                 no_partial_output("out", "out.jsonl"))),
        Case("link-huge-line", "link", f"one line whose text has {HUGE_LINE:,} characters "
             "(spaCy's default max_length is 1,000,000)", link(), expect="ok", needs=("kg",),
             setup=huge_line, check=link_output_ok(1, {"Paris": "paris"})),
        Case("link-missing-input", "link", "--input names a file that does not exist",
             link("nothing.jsonl"), needs=("kg",)),
        Case("link-nonutf8-line", "link", "line 2 of the input saved as Latin-1",
             link(), needs=("kg",),
             setup=link_input(good, '{"text": "Café de Flore is in Paris ."}'.encode(
                 "latin-1"), good), check=no_output("out.jsonl")),
        Case("link-bom-first-line", "link", "byte-order mark before the first line "
             "(accepted; the key stays 'text')", link(), expect="ok", needs=("kg",),
             setup=link_input(BOM + good.encode(), LINK_SENTENCES[1]),
             check=link_output_ok(2, {"Paris": "paris"})),
        Case("link-invalid-json", "link", "line 2 is not JSON (no output file left)",
             link(), needs=("kg",), setup=link_input(good, '{"text": "Paris', good),
             check=no_output("out.jsonl")),
        Case("link-no-text", "link", 'a record with neither "text" nor "tokens"', link(),
             needs=("kg",), setup=link_input(good, '{"sentence": "Paris is nice ."}')),
        Case("link-text-not-string", "link", '"text" is a number', link(), needs=("kg",),
             setup=link_input('{"text": 42}')),
        Case("link-tokens-not-strings", "link", '"tokens" holds numbers', link(),
             needs=("kg",), setup=link_input('{"tokens": ["Paris", 1, 2]}')),
        Case("link-json-array-line", "link", "a line that is a JSON list, not an object",
             link(), needs=("kg",), setup=link_input('["Paris", "France"]')),
        Case("link-empty-file", "link", "an empty input file (an empty output is written)",
             link(), expect="ok", needs=("kg",), setup=link_input(),
             check=link_output_ok(0)),
        Case("link-surrogate-text", "link", 'text with an unpaired surrogate escape '
             '"\\udc80": output written, valid UTF-8 JSONL', link(), expect="ok",
             needs=("kg",), setup=link_input('{"text": "Paris \\udc80 is the capital of '
                                              'France ."}', LINK_SENTENCES[1]),
             check=link_output_ok(2, {"France": "france"})),
        Case("link-zero-width-in-name", "link", 'text "Par\\u200bis is ..." (zero-width '
             'space inside the name): does it link?', link(), expect="ok", needs=("kg",),
             setup=link_input(json.dumps({"text": "Par\u200bis is the capital of France ."},
                                         ensure_ascii=False)),
             check=link_output_ok(1, {"Par\u200bis": "paris"})),
        Case("link-soft-hyphen-in-name", "link", 'text "Ger\\u00admany borders ..." (soft '
             'hyphen inside the name)', link(), expect="ok", needs=("kg",),
             setup=link_input('{"text": "Ger\\u00admany shares a border with France ."}'),
             check=link_output_ok(1, {"Ger\u00admany": "germany"})),
        Case("link-tokens-ok", "link", '{"tokens": [...]} input (control)', link(),
             expect="ok", needs=("kg",),
             setup=link_input('{"tokens": ["Ludwig", "van", "Beethoven", "was", "born", '
                              '"in", "Bonn", "."]}'),
             check=link_output_ok(1, {"Bonn": "bonn"})),
        Case("link-output-dir-missing", "link", "--output in a directory that does not "
             "exist yet (created)", link(output="{tmp}/new/dir/out.jsonl"), expect="ok",
             needs=("kg",), setup=link_input(good),
             check=link_output_ok(1, name="new/dir/out.jsonl")),
        Case("link-output-unwritable", "link", "--output under /proc (not writable)",
             link(output="/proc/ernie-kg-probe/out.jsonl"), needs=("kg",),
             setup=link_input(good)),
        Case("link-output-is-dir", "link", "--output is an existing directory",
             link(output="{tmp}"), needs=("kg",), setup=link_input(good)),
        Case("link-embeddings-missing", "link", "--embeddings names no directory",
             [*link(), "--embeddings", "{tmp}/no-emb"], needs=("kg",),
             setup=link_input(good)),
    ]


def embed_cases() -> list[Case]:
    embed = ["kg", "embed", "--triples-dir", "{shared}/kg", "--out", "{tmp}/out",
             "--epochs", "1", "--dim", "16"]

    def bad(case_id: str, description: str, *option: str) -> Case:
        argv = list(embed)
        for flag, value in zip(option[::2], option[1::2]):
            if flag in argv:
                argv[argv.index(flag) + 1] = value
            else:
                argv += [flag, value]
        return Case(case_id, "embed", description, argv, needs=("kg",),
                    check=lambda tmp, c: "a run directory was written" if
                    (tmp / "out").exists() else None)

    return [
        bad("embed-epochs-0", "--epochs 0", "--epochs", "0"),
        bad("embed-epochs-negative", "--epochs -3", "--epochs", "-3"),
        bad("embed-dim-0", "--dim 0", "--dim", "0"),
        bad("embed-lr-negative", "--lr -0.01", "--lr", "-0.01"),
        bad("embed-lr-nan", "--lr nan", "--lr", "nan"),
        bad("embed-batch-0", "--batch-size 0", "--batch-size", "0"),
        bad("embed-norm-3", "--norm 3", "--norm", "3"),
        bad("embed-model-unknown", "--model TrnasE (a typo)", "--model", "TrnasE"),
        bad("embed-loop-unknown", "--training-loop lcwa2", "--training-loop", "lcwa2"),
        Case("embed-triples-missing", "embed", "--triples-dir does not exist",
             ["kg", "embed", "--triples-dir", "{tmp}/nothing", "--out", "{tmp}/out"]),
        Case("embed-rerun-refused", "embed", "--out over an earlier run without "
             "--overwrite: refused, earlier files kept", embed, needs=("emb",),
             setup=earlier_run(lambda: FX.root / "emb"), check=unchanged(),
             check_outcome="lost work"),
        Case("embed-rerun-overwrite", "embed", "--out over an earlier run with --overwrite: "
             "earlier run moved to out.old-1", [*embed, "--overwrite"], expect="ok",
             needs=("emb",), setup=earlier_run(lambda: FX.root / "emb"),
             check=moved_aside(), check_outcome="lost work"),
        Case("embed-kill-rerun", "embed", "kill -9 two seconds into kg embed training, then "
             "the same command: it succeeds, or refuses with the --overwrite hint; either "
             "way kg nearest on out/ answers correctly or refuses clearly", EMBED_KILL,
             expect="either", needs=("kg",), setup=killed_embed, check=rerun_after_kill),
        Case("embed-out-is-file", "embed", "--out is an existing file (kept)", embed,
             needs=("kg",), setup=lambda tmp: (tmp / "out").write_text("my notes\n"),
             check=lambda tmp, c: None if (tmp / "out").read_text() == "my notes\n"
             else "the file given as --out was changed", check_outcome="lost work"),
    ]


IMPORT_DIM = 8


def source_vectors(ids: Iterable[str], seed: int = 0) -> dict[str, list[float]]:
    """A vector of :data:`IMPORT_DIM` values (4 decimals) for each id, with ``france``
    planted next to ``paris`` (so it is the nearest of ``paris`` in any table made of them)."""
    rng = random.Random(seed)
    vectors = {i: [round(rng.uniform(-1, 1), 4) for _ in range(IMPORT_DIM)] for i in ids}
    if "paris" in vectors and "france" in vectors:
        vectors["france"] = [round(v + 0.001, 4) for v in vectors["paris"]]
    return vectors


def write_openke(directory: Path, vectors: dict[str, list[float]]) -> None:
    """An OpenKE export (ERNIE's ``kg_embed/``): ``entity2id.txt``, ``entity2vec.vec``."""
    names = list(vectors)
    write_lines(directory / "entity2id.txt",
                [str(len(names)), *(f"{name}\t{row}" for row, name in enumerate(names))])
    write_lines(directory / "entity2vec.vec",
                ("\t".join(f"{v:g}" for v in vectors[name]) for name in names))


def write_word2vec(path: Path, vectors: dict[str, list[float]]) -> None:
    dim = len(next(iter(vectors.values())))
    write_lines(path, [f"{len(vectors)} {dim}", *(
        f"{name} {' '.join(f'{v:g}' for v in vector)}" for name, vector in vectors.items())])


def import_report(covered: int, total: int, not_in_kg: int
                  ) -> Callable[[Path, Completed], str | None]:
    """Check: the printed line says ``covered of total KG entities (P%)`` and
    ``not_in_kg`` source rows are not in the KG."""
    def check(tmp: Path, completed: Completed) -> str | None:
        text = re.sub(r"\s+", " ", completed.stdout + completed.stderr)
        found = re.search(r"(\d+) of (\d+) KG entities \(([\d.]+)%\)", text)
        if not found:
            return "no 'N of M KG entities (P%)' line printed"
        shown = (int(found[1]), int(found[2]), float(found[3]))
        if shown != (covered, total, round(100 * covered / total, 1)):
            return (f"printed {found[0]!r}, expected {covered} of {total} "
                    f"({100 * covered / total:.1f}%)")
        rows = re.search(r"(\d+) source rows are not in the KG", text)
        if not rows or int(rows[1]) != not_in_kg:
            return f"source rows not in the KG: printed {rows and rows[0]!r}, expected {not_in_kg}"
        return None
    return check


def imported_as_given(vectors: dict[str, list[float]], directory: str = "out"
                      ) -> Callable[[Path, Completed], str | None]:
    """Check: each KG entity of ``vectors`` has its vector in the saved table; the others
    are zero (the default --missing policy)."""
    def check(tmp: Path, completed: Completed) -> str | None:
        rows, problem = read_npy(tmp / directory / "entity_vectors.npy")
        ids = json.loads((tmp / directory / "embeddings.json").read_text())["entity_ids"]
        if problem:
            return problem
        for entity, row in zip(ids, rows):
            want = vectors.get(entity, [0.0] * len(row))
            if any(abs(a - b) > 1e-4 for a, b in zip(row, want)) or len(row) != len(want):
                return f"the saved vector of {entity!r} is {row[:3]}..., expected {want[:3]}..."
        return None
    return check


def import_cases() -> list[Case]:
    ids = demo_entity_ids()
    extra = ["Q42", "not_in_the_kg", "Douglas_Adams"]
    everything = source_vectors([*ids, *extra])
    part = source_vectors([i for n, i in enumerate(ids) if n % 2 == 0 or i in
                           ("paris", "france")], seed=1)
    words = source_vectors(["the", "of", "capital"], seed=2)
    covered_part = len(part)
    wiki2vec = {**{f"ENTITY/{k}" if n == 1 else k: v for n, (k, v) in enumerate(part.items())},
                **words}
    base = ["kg", "import-embeddings", "--kg", "{shared}/kg", "--out", "{tmp}/out"]
    openke = [*base, "--format", "openke", "--source", "{tmp}/openke"]
    word2vec = [*base, "--format", "word2vec", "--source", "{tmp}/vectors.txt"]

    def openke_source(vectors: dict[str, list[float]], line: str | None = None,
                      number: int = 0) -> Callable[[Path], None]:
        """An OpenKE export of ``vectors``; ``line`` replaces line ``number`` of its
        entity2vec.vec."""
        def setup(tmp: Path) -> None:
            write_openke(tmp / "openke", vectors)
            if line is not None:
                edit_line("entity2vec.vec", number, new=line.encode() + b"\n")(tmp / "openke")
        return setup

    def word2vec_source(vectors: dict[str, list[float]]) -> Callable[[Path], None]:
        return lambda tmp: write_word2vec(tmp / "vectors.txt", vectors)

    def earlier_import(tmp: Path) -> None:
        write_openke(tmp / "openke", everything)
        run_cli(*expand(openke, tmp))
        write_json(tmp / "earlier.json", snapshot(tmp / "out"))

    def dglke_truncated(tmp: Path) -> None:
        rows = [everything[i] for i in ids]
        write_npy(tmp / "dglke" / "demo_TransE_l2_entity.npy", rows)
        write_lines(tmp / "dglke" / "entities.tsv", (f"{n}\t{i}" for n, i in enumerate(ids)))
        truncate_half("demo_TransE_l2_entity.npy")(tmp / "dglke")

    def names(*needles: str) -> Callable[[Path, Completed], str | None]:
        def check(tmp: Path, completed: Completed) -> str | None:
            text = re.sub(r"\s+", " ", completed.stdout + completed.stderr)
            missing = [n for n in needles if n not in text]
            return f"the message does not name {', '.join(missing)}" if missing else None
        return check

    nan = {**part, "paris": [float("nan")] * IMPORT_DIM}
    bad_row = 6  # entity2vec.vec line 6: one value short
    return [
        Case("import-openke-ok", "import", f"an OpenKE export of every demo KG entity and "
             f"{len(extra)} names the KG lacks (coverage 100%; kg nearest works)", openke,
             expect="ok", needs=("kg",), setup=openke_source(everything),
             check=all_of(import_report(len(ids), len(ids), len(extra)),
                          imported_as_given(everything), nearest_check(first="france"))),
        Case("import-word2vec-ok", "import", f"a word2vec text file covering {covered_part} "
             f"of the {len(ids)} demo KG entities (one as Wikipedia2Vec's ENTITY/name) plus "
             f"{len(words)} words; kg nearest works", word2vec, expect="ok", needs=("kg",),
             setup=word2vec_source(wiki2vec),
             check=all_of(import_report(covered_part, len(ids), len(words)),
                          imported_as_given(part), nearest_check(first="france"))),
        Case("import-format-unknown", "import", "--format fasttext", [
            *base, "--format", "fasttext", "--source", "{tmp}/vectors.txt"], needs=("kg",),
            setup=word2vec_source(part)),
        Case("import-missing-bogus", "import", "--missing bogus",
             [*word2vec, "--missing", "bogus"], needs=("kg",), setup=word2vec_source(part)),
        Case("import-source-missing", "import", "--source names no directory",
             [*base, "--format", "openke", "--source", "{tmp}/nothing"], needs=("kg",),
             check=no_output("out")),
        Case("import-dim-changes", "import", f"entity2vec.vec line {bad_row} has "
             f"{IMPORT_DIM - 1} values, the others {IMPORT_DIM}: the message names the file "
             "and line", openke, needs=("kg",),
             setup=openke_source(everything, " ".join(["0.5"] * (IMPORT_DIM - 1)), bad_row),
             check=all_of(names(f"entity2vec.vec:{bad_row}"), no_output("out")),
             check_outcome="unclear error"),
        Case("import-nan-vector", "import", "the vector of the KG entity paris is all NaN: "
             "the message names the entity", word2vec, needs=("kg",),
             setup=word2vec_source(nan), check=all_of(names("paris"), no_output("out")),
             check_outcome="unclear error"),
        Case("import-missing-error", "import", f"--missing error with {covered_part} of "
             f"{len(ids)} entities covered", [*word2vec, "--missing", "error"], needs=("kg",),
             setup=word2vec_source(part), check=no_output("out")),
        Case("import-no-match", "import", "no source name is a KG id (Wikidata QIDs for a KG "
             "of names)", word2vec, needs=("kg",), check=no_output("out"),
             setup=word2vec_source(source_vectors([f"Q{n}" for n in range(1, 50)]))),
        Case("import-rerun-refused", "import", "--out over an earlier import without "
             "--overwrite: refused, earlier files kept", openke, needs=("kg",),
             setup=earlier_import, check=unchanged(), check_outcome="lost work"),
        Case("import-dglke-truncated", "import", "a DGL-KE export whose entity .npy is cut "
             "to half", [*base, "--format", "dglke", "--source", "{tmp}/dglke"],
             needs=("kg",), setup=dglke_truncated, check=no_output("out")),
    ]


def finetune_cases() -> list[Case]:
    def ft(*extra: str, train: str = "{tmp}/train.json") -> list[str]:
        argv = [*FT_BASE, "--train", train, "--output-dir", "{tmp}/run"]
        for flag, value in zip(extra[::2], extra[1::2]):
            if flag in argv:
                argv[argv.index(flag) + 1] = value
            else:
                argv += [flag, value] if value else [flag]
        return argv

    shared = "{shared}/train.json"
    needs = ("kg", "fewrel", "emb")

    def fewrel_case(case_id: str, description: str, setup: Callable[[Path], None],
                    expect: str = "error", check=None) -> Case:
        return Case(case_id, "finetune", description, ft(), expect=expect, needs=needs,
                    setup=setup, check=check)

    def set_positions(role: str, positions: list[int]) -> Callable[[dict], None]:
        return lambda data: first_instance(data)[role].__setitem__(2, [positions])

    def latin1(raw: bytes) -> bytes:
        return raw.replace(b'"London"', b'"L\xf6ndon"', 1)

    extra = next(r for r in json.loads((DEMO_CORPUS / "dev.json").read_text(
        encoding="utf-8")) if r not in ("capital_of", "born_in"))

    def dev_with_extra_relation(tmp: Path) -> None:
        dev = json.loads((FX.root / "dev.json").read_text(encoding="utf-8"))
        corpus = json.loads((DEMO_CORPUS / "dev.json").read_text(encoding="utf-8"))
        write_json(tmp / "dev.json", {**dev, extra: corpus[extra][:2]})

    def names_label(tmp: Path, completed: Completed) -> str | None:
        return None if extra in completed.stdout + completed.stderr else \
            f"the message does not name the unknown relation {extra!r}"

    def no_checkpoint_run(tmp: Path) -> None:
        write_lines(tmp / "run" / "log.jsonl", ['{"step": 3, "loss": 0.7}'])
        write_json(tmp / "run" / "metrics.json", {"accuracy": 0.5})

    return [
        Case("ft-epochs-0", "finetune", "--epochs 0", ft("--epochs", "0", train=shared),
             needs=needs),
        Case("ft-epochs-negative", "finetune", "--epochs -2",
             ft("--epochs", "-2", train=shared), needs=needs),
        Case("ft-batch-0", "finetune", "--batch-size 0",
             ft("--batch-size", "0", train=shared), needs=needs),
        Case("ft-lr-negative", "finetune", "--lr -5e-5", ft("--lr", "-5e-5", train=shared),
             needs=needs),
        Case("ft-knowledge-lr-negative", "finetune", "--knowledge-lr -1",
             ft("--knowledge-lr", "-1", train=shared), needs=needs),
        Case("ft-max-length-4", "finetune", "--max-length 4",
             ft("--max-length", "4", train=shared), needs=needs),
        Case("ft-model-unknown", "finetune", "--model bert (neither ernie nor baseline)",
             ft("--model", "bert", train=shared), needs=needs),
        Case("ft-format-unknown", "finetune", "--format csv",
             ft("--format", "csv", train=shared), needs=needs),
        Case("ft-entities-unknown", "finetune", "--entities all",
             ft("--entities", "all", train=shared), needs=needs),
        Case("ft-format-mismatch", "finetune", "--format jsonl given a FewRel file",
             ft("--format", "jsonl", train=shared), needs=needs),
        Case("ft-train-missing", "finetune", "--train names no file",
             ft(train="{tmp}/nothing.json"), needs=needs),
        fewrel_case("ft-train-nonutf8", "training file with a Latin-1 byte (Löndon)",
                    fewrel_bytes(latin1)),
        fewrel_case("ft-train-bom", "training file opening with a byte-order mark "
                    "(accepted)", fewrel_bytes(lambda raw: BOM + raw), expect="ok",
                    check=files_exist("run/metrics.json", "run/model/model.safetensors")),
        fewrel_case("ft-train-invalid-json", "training file cut off (invalid JSON)",
                    fewrel_bytes(lambda raw: raw[: len(raw) // 2])),
        fewrel_case("ft-train-empty", "training file holding {} (no examples)",
                    fewrel_variant(raw=b"{}\n")),
        fewrel_case("ft-span-out-of-range", "head token index 99 in a 7-token sentence",
                    fewrel_variant(set_positions("h", [99]))),
        fewrel_case("ft-negative-index", "tail token index -1 (must be refused, not "
                    "wrapped around to the last token)", fewrel_variant(set_positions("t", [-1]))),
        Case("ft-foreign-embeddings", "finetune", "--embeddings made for another KG "
             "(coverage none)", ft("--embeddings", "{shared}/foreign/embeddings",
                                   train=shared), needs=(*needs, "foreign")),
        Case("ft-kg-missing", "finetune", "--kg names no directory",
             ft("--kg", "{tmp}/no-kg", train=shared), needs=needs),
        Case("ft-dev-missing", "finetune", "--dev names no file",
             ft("--dev", "{tmp}/dev.json", train=shared), needs=needs,
             check=lambda tmp, c: "training ran before the missing --dev was noticed"
             if (tmp / "run" / "checkpoints").exists() else None),
        Case("ft-run-dir-holds-run", "finetune", "--output-dir holds an earlier run: "
             "refused, earlier files kept", ft(train=shared), needs=(*needs, "model"),
             setup=earlier_run(lambda: FX.root / "ft", ["metrics.json", "log.jsonl",
                                                        "model/config.json"], "run"),
             check=unchanged("run"), check_outcome="lost work"),
        Case("ft-overwrite", "finetune", "--overwrite over an earlier run: moved to "
             "run.old-1", ft("--overwrite", "", train=shared), expect="ok",
             needs=(*needs, "model"),
             setup=earlier_run(lambda: FX.root / "ft", ["metrics.json", "log.jsonl",
                                                        "model/config.json"], "run"),
             check=moved_aside("run"), check_outcome="lost work"),
        Case("ft-resume-no-checkpoint", "finetune", "--resume on a run directory with no "
             "checkpoint", ft("--resume", "", train=shared), needs=needs,
             setup=no_checkpoint_run),
        Case("ft-dev-unknown-label", "finetune", "a --dev file holding a relation the "
             "training file lacks: an error naming it",
             ft("--dev", "{tmp}/dev.json", train=shared), needs=needs,
             setup=dev_with_extra_relation, check=names_label, check_outcome="unclear error"),
        Case("ft-sigint", "finetune", "Ctrl-C (SIGINT to the process group) during epoch 2 "
             "(after a checkpoint and a later log line): exit 130, one 'interrupted' line; "
             "then the same command with --resume finishes, no step logged twice",
             [*FT_KILL, "--resume"], expect="ok", needs=needs, setup=interrupted_finetune,
             check=every_problem(first_run_interrupted, resumed_cleanly), timeout=240),
        Case("ft-kill-resume", "finetune", "kill -9 during epoch 2 (after checkpoint and "
             "a later log line), then the same command with --resume", [*FT_KILL, "--resume"],
             expect="ok", needs=needs, setup=killed_finetune, check=resumed_cleanly,
             timeout=240),
    ]


def pretrain_cases() -> list[Case]:
    prepare = ["pretrain", "prepare", "--corpus", "{tmp}/corpus.jsonl", "--kg",
               "{shared}/ptkg", "--out", "{tmp}/data", "--max-length", "32"]
    run = ["pretrain", "run", "--data", "{shared}/ptdata", "--kg", "{shared}/ptkg",
           "--output", "{tmp}/out", "--max-steps", "2", "--batch-size", "4",
           "--save-steps", "1"]

    def with_(argv: list[str], *extra: str) -> list[str]:
        argv = list(argv)
        for flag, value in zip(extra[::2], extra[1::2]):
            if flag in argv:
                argv[argv.index(flag) + 1] = value
            else:
                argv += [flag, value] if value else [flag]
        return argv

    def corpus(*lines: str | bytes) -> Callable[[Path], None]:
        return lambda tmp: write_lines(tmp / "corpus.jsonl", lines)

    def shared_corpus(tmp: Path) -> None:
        shutil.copyfile(FX.root / "corpus.jsonl", tmp / "corpus.jsonl")

    def bom_corpus(tmp: Path) -> None:
        (tmp / "corpus.jsonl").write_bytes(BOM + (FX.root / "corpus.jsonl").read_bytes())

    sentence = '{"text": "Paris is the capital of France . Berlin is the capital of Germany ."}'
    prep_needs = ("ptkg", "fewrel")
    run_needs = ("ptkg", "ptdata")
    return [
        Case("pt-prepare-corpus-missing", "pretrain", "--corpus names no file",
             with_(prepare, "--corpus", "{tmp}/nothing.jsonl"), needs=prep_needs),
        Case("pt-prepare-corpus-nonutf8", "pretrain", "corpus line 2 saved as Latin-1",
             prepare, needs=prep_needs, setup=corpus(
                 sentence, '{"text": "Café de Flore is in Paris ."}'.encode("latin-1"))),
        Case("pt-prepare-corpus-bad-json", "pretrain", "corpus.jsonl line 2 cut off",
             prepare, needs=prep_needs, setup=corpus(sentence, '{"text": "Paris is')),
        Case("pt-prepare-corpus-bom", "pretrain", "corpus opening with a byte-order mark "
             "(accepted)", prepare, expect="ok", needs=prep_needs, setup=bom_corpus,
             check=files_exist("data")),
        Case("pt-prepare-corpus-empty", "pretrain", "an empty corpus (nothing to train on)",
             prepare, needs=prep_needs, setup=corpus()),
        Case("pt-prepare-max-length-4", "pretrain", "--max-length 4",
             with_(prepare, "--max-length", "4"), needs=prep_needs, setup=shared_corpus),
        Case("pt-prepare-lang-unknown", "pretrain", "--lang english (spaCy wants a code: "
             "en)", with_(prepare, "--lang", "english"), needs=prep_needs, setup=shared_corpus),
        Case("pt-prepare-kg-missing", "pretrain", "--kg names no directory",
             with_(prepare, "--kg", "{tmp}/no-kg"), needs=prep_needs, setup=shared_corpus),
        Case("pt-prepare-rerun-refused", "pretrain", "--out over earlier prepared data "
             "without --overwrite: refused, earlier files kept", prepare,
             needs=(*prep_needs, "ptdata"), check=unchanged("data"), check_outcome="lost work",
             setup=lambda tmp: (shared_corpus(tmp),
                                earlier_run(lambda: FX.root / "ptdata", target="data")(tmp))),
        Case("pt-prepare-rerun-overwrite", "pretrain", "--out over earlier prepared data "
             "with --overwrite: earlier data moved to data.old-1",
             with_(prepare, "--overwrite", ""), expect="ok", needs=(*prep_needs, "ptdata"),
             check=moved_aside("data", "manifest.json"), check_outcome="lost work",
             setup=lambda tmp: (shared_corpus(tmp),
                                earlier_run(lambda: FX.root / "ptdata", target="data")(tmp))),
        Case("pt-run-data-missing", "pretrain", "--data names no directory",
             with_(run, "--data", "{tmp}/no-data"), needs=run_needs),
        Case("pt-run-data-not-prepared", "pretrain", "--data is a KG directory, not "
             "`pretrain prepare` output", with_(run, "--data", "{shared}/kg"),
             needs=(*run_needs, "kg")),
        Case("pt-run-max-steps-0", "pretrain", "--max-steps 0",
             with_(run, "--max-steps", "0"), needs=run_needs),
        Case("pt-run-lr-negative", "pretrain", "--learning-rate -1e-4",
             with_(run, "--learning-rate", "-1e-4"), needs=run_needs),
        Case("pt-run-dropout-1.5", "pretrain", "--dropout 1.5",
             with_(run, "--dropout", "1.5"), needs=run_needs),
        Case("pt-run-precision-unknown", "pretrain", "--mixed-precision fp8",
             with_(run, "--mixed-precision", "fp8"), needs=run_needs),
        Case("pt-run-knowledge-layers-99", "pretrain", "--num-knowledge-layers 99 (the "
             "backbone has 6 layers)", with_(run, "--num-knowledge-layers", "99"),
             needs=run_needs),
        Case("pt-run-no-resume-refused", "pretrain", "--no-resume over an earlier run: "
             "refused, earlier files kept", with_(run, "--no-resume", ""), needs=run_needs,
             setup=fake_pretrain_run, check=unchanged(), check_outcome="lost work"),
        Case("pt-run-no-resume-overwrite", "pretrain", "--no-resume --overwrite over an "
             "earlier run: moved to out.old-1", with_(run, "--no-resume", "", "--overwrite",
                                                      ""),
             expect="ok", needs=run_needs, setup=fake_pretrain_run,
             check=moved_aside(new_file="model.safetensors"), check_outcome="lost work"),
        Case("pt-run-kg-mismatch", "pretrain", "--kg another KG (its entity table covers "
             "none of the data's entities)", with_(run, "--kg", "{shared}/foreign"),
             needs=(*run_needs, "foreign")),
    ]


def saved_cases() -> list[Case]:
    evaluate = ["evaluate", "--model", "{tmp}/model", "--data", "{shared}/dev.json"]
    needs = ("model",)

    def damaged(case_id: str, description: str, damage, expect: str = "error") -> Case:
        return Case(case_id, "saved", description, evaluate, expect=expect, needs=needs,
                    setup=copied_model(damage))

    nearest = ["kg", "nearest", "--embeddings", "{tmp}/emb", "--entity", "paris"]
    return [
        damaged("ev-intact", "evaluate an intact copy (control)", None, expect="ok"),
        damaged("ev-weights-deleted", "model.safetensors deleted",
                delete("model.safetensors")),
        damaged("ev-weights-truncated", "model.safetensors truncated to half",
                truncate_half("model.safetensors")),
        damaged("ev-config-deleted", "config.json deleted", delete("config.json")),
        damaged("ev-tokenizer-deleted", "tokenizer.json deleted", delete("tokenizer.json")),
        damaged("ev-entity-ids-swapped", "entity_ids.json edited: two ids swapped (same "
                "count)", swap_ids("entity_ids.json")),
        damaged("ev-entity-ids-shortened", "entity_ids.json edited: last id removed",
                drop_last_id("entity_ids.json")),
        damaged("ev-classifier-json-deleted", "ernie_kg_classifier.json deleted",
                delete("ernie_kg_classifier.json")),
        Case("ev-model-missing", "saved", "--model names no directory",
             ["evaluate", "--model", "{tmp}/no-model", "--data", "{shared}/dev.json"],
             needs=needs),
        Case("ev-run-dir-not-model", "saved", "--model is the run directory, not "
             "run/model", ["evaluate", "--model", "{shared}/ft", "--data",
                           "{shared}/dev.json"], needs=needs),
        Case("evaluate-output-unwritable", "saved", "evaluate --output under /proc (not "
             "writable)", ["evaluate", "--model", "{shared}/ft/model", "--data",
                           "{shared}/dev.json", "--output", "/proc/ernie-kg-probe/metrics.json"],
             needs=needs),
        Case("ev-data-missing", "saved", "--data names no file",
             ["evaluate", "--model", "{shared}/ft/model", "--data", "{tmp}/dev.json"],
             needs=needs),
        Case("ev-format-mismatch", "saved", "--format tacred given a FewRel file",
             ["evaluate", "--model", "{shared}/ft/model", "--data", "{shared}/dev.json",
              "--format", "tacred"], needs=needs),
        Case("emb-vectors-truncated", "saved", "saved embeddings: entity_vectors.npy "
             "truncated to half (kg nearest)", nearest, needs=("emb",),
             setup=copied_embeddings(truncate_half("entity_vectors.npy"))),
        Case("emb-sha-mismatch", "saved", "saved embeddings: embeddings.json ids edited so "
             "its sha256 no longer matches (kg nearest)", nearest, needs=("emb",),
             setup=copied_embeddings(swap_ids("embeddings.json", "entity_ids"))),
        Case("emb-sha-mismatch-finetune", "saved", "the same edited table given to "
             "finetune --embeddings", [*FT, "--embeddings", "{tmp}/emb"],
             needs=("emb", "fewrel", "kg"),
             setup=copied_embeddings(swap_ids("embeddings.json", "entity_ids"))),
        Case("emb-json-deleted", "saved", "saved embeddings: embeddings.json deleted",
             nearest, needs=("emb",), setup=copied_embeddings(delete("embeddings.json"))),
    ]


def network_cases() -> list[Case]:
    online = {"HF_HUB_OFFLINE": None}
    offline = {"HF_HUB_OFFLINE": "1"}
    ft = [*FT, "--backbone", "bert-base-uncased"]
    prepare = ["pretrain", "prepare", "--corpus", "{shared}/corpus.jsonl", "--kg",
               "{shared}/ptkg", "--out", "{tmp}/data", "--backbone", "bert-base-uncased"]
    run = ["pretrain", "run", "--data", "{shared}/ptdata", "--kg", "{shared}/ptkg",
           "--output", "{tmp}/out", "--max-steps", "2", "--backbone", "bert-base-uncased"]
    blackhole = {"HF_HUB_OFFLINE": None, "HF_ENDPOINT": "http://10.255.255.1"}
    missing_dir = [*FT, "--backbone", "./models/my-bert"]

    def timed(argv: list[str], env: dict[str, str | None]) -> dict:
        return {"argv": argv, "env": env, "check": network_wait(argv, env),
                "check_outcome": "hang", "timeout": 60}

    return [
        Case("net-ft-hub-name", "network", "finetune --backbone bert-base-uncased, no "
             "network, HF_HUB_OFFLINE unset: fails within ~10 s",
             needs=("kg", "fewrel", "emb"), **timed(ft, online)),
        Case("net-ft-hub-name-offline", "network", "the same with HF_HUB_OFFLINE=1", ft,
             env=offline, needs=("kg", "fewrel", "emb"), timeout=60),
        Case("net-ft-unreachable-endpoint", "network", "the same with an unreachable "
             "hub address (HF_ENDPOINT=http://10.255.255.1; this sandbox accepts the "
             "connection, then fails the request)",
             needs=("kg", "fewrel", "emb"), **timed(ft, blackhole)),
        Case("net-ft-stalled-endpoint", "network", "the same behind a proxy that accepts "
             "the connection and never answers (HF_ENDPOINT=a local silent server)",
             needs=("kg", "fewrel", "emb", "stall"),
             **timed(ft, {"HF_HUB_OFFLINE": None, "HF_ENDPOINT": "http://{stall}"})),
        Case("net-prepare-hub-name", "network", "pretrain prepare --backbone "
             "bert-base-uncased, no network", needs=("ptkg", "fewrel"),
             **timed(prepare, online)),
        Case("net-run-hub-name-offline", "network", "pretrain run --backbone "
             "bert-base-uncased with HF_HUB_OFFLINE=1", run, env=offline,
             needs=("ptkg", "ptdata"), timeout=60),
        Case("net-backbone-missing-dir", "network", "--backbone ./models/my-bert (a path "
             "that does not exist)", needs=("kg", "fewrel", "emb"),
             **timed(missing_dir, online)),
        Case("net-data-fetch", "network", "data fetch fewrel with no network: fails "
             "within the 10 s timeout, nothing half-written",
             ["data", "fetch", "fewrel", "--dest", "{tmp}/dest"],
             check=all_of(fast(25), dest_has_no(["train_wiki.json", "val_wiki.json",
                                                 "pid2name.json"])),
             check_outcome="hang", timeout=90),
    ]


def data_cases() -> list[Case]:
    fetch = ["data", "fetch", "fewrel", "--dest", "{tmp}/dest"]
    names = ["train_wiki.json", "val_wiki.json", "pid2name.json"]

    def wrong_files(tmp: Path) -> None:
        for name in names:
            write_json(tmp / "src" / name, {"not": "fewrel"})

    return [
        Case("data-unknown-dataset", "data", "data fetch wikidata (unknown dataset)",
             ["data", "fetch", "wikidata", "--dest", "{tmp}/dest"]),
        Case("data-no-dataset", "data", "data fetch with no dataset name",
             ["data", "fetch", "--dest", "{tmp}/dest"]),
        Case("data-no-dest", "data", "data fetch fewrel without --dest",
             ["data", "fetch", "fewrel"]),
        Case("data-no-subcommand-typo", "data", "data fewrel (the fetch subcommand left out)",
             ["data", "fewrel", "--dest", "{tmp}/dest"]),
        Case("data-from-dir-missing", "data", "--from-dir names no directory",
             [*fetch, "--from-dir", "{tmp}/nothing"]),
        Case("data-from-dir-empty", "data", "--from-dir is an empty directory",
             [*fetch, "--from-dir", "{tmp}/src"], setup=lambda tmp: (tmp / "src").mkdir()),
        Case("data-from-dir-wrong-files", "data", "--from-dir holds files with the right "
             "names and the wrong content (checksums fail; nothing kept)",
             [*fetch, "--from-dir", "{tmp}/src"], setup=wrong_files,
             check=dest_has_no(names)),
        Case("data-timeout-0", "data", "--timeout 0", [*fetch, "--timeout", "0"]),
        Case("data-timeout-negative", "data", "--timeout -5", [*fetch, "--timeout", "-5"]),
        Case("data-dest-is-file", "data", "--dest is an existing file (kept)",
             [*fetch, "--from-dir", "{tmp}/src"],
             setup=lambda tmp: (wrong_files(tmp), (tmp / "dest").write_text("keep me\n")),
             check=lambda tmp, c: None if (tmp / "dest").read_text() == "keep me\n"
             else "the file given as --dest was changed", check_outcome="lost work"),
    ]


def cli_cases() -> list[Case]:
    index = ["kg", "index", "--kg", "{tmp}/kg"]

    def interrupted_index(tmp: Path) -> None:
        write_json(tmp / "expected.json", synthetic_kg(tmp / "kg"))
        first = run_first(tmp, index, after(r"indexing kg:", 1.0))
        (tmp / NOTE).write_text(f"SIGINT 1 s into indexing ({first.interrupted_at:.1f} s after "
                                f"the start); it exited {first.returncode} after "
                                f"{first.seconds:.1f} s")

    return [
        Case("cli-sigint-kg-index", "cli", "Ctrl-C (SIGINT to the process group) one second "
             f"into kg index of a {SYNTHETIC_TRIPLES:,}-triple KG, then kg index again: ok, "
             "and kg stats counts every entity, relation and triple (no half index used)",
             index, expect="ok", setup=interrupted_index,
             check=every_problem(first_run_interrupted, synthetic_counts)),
        Case("cli-unknown-command", "cli", "ernie-kg train (no such command)", ["train"]),
        Case("cli-finetune-no-options", "cli", "ernie-kg finetune with no options",
             ["finetune"]),
        Case("cli-option-typo", "cli", "kg stats --kgg (misspelt option)",
             ["kg", "stats", "--kgg", "kg_data/demo"]),
    ]


SYNTHETIC_TRIPLES, SYNTHETIC_ENTITIES, SYNTHETIC_RELATIONS = 200_000, 50_000, 20


def synthetic_kg(target: Path) -> dict[str, int]:
    """A KG of :data:`SYNTHETIC_TRIPLES` distinct triples over every one of
    :data:`SYNTHETIC_ENTITIES` entities (each with a label and an alias); returns the
    counts ``kg stats`` should report."""
    target.mkdir(parents=True)
    lines = []
    for i in range(SYNTHETIC_TRIPLES):  # head i % E, its (i // E)-th triple: all distinct
        head, k = i % SYNTHETIC_ENTITIES, i // SYNTHETIC_ENTITIES
        tail = (head * 31 + k * 7919 + 1) % SYNTHETIC_ENTITIES
        tail = (tail + 1) % SYNTHETIC_ENTITIES if tail == head else tail
        lines.append(f"e{head}\tr{(head + k) % SYNTHETIC_RELATIONS}\te{tail}")
    write_lines(target / "train.txt", lines)
    write_lines(target / "entities.jsonl", (json.dumps(
        {"id": f"e{i}", "label": f"Synthetic Entity {i}", "aliases": [f"Entity {i}"]})
        for i in range(SYNTHETIC_ENTITIES)))
    return {"entities": SYNTHETIC_ENTITIES, "relations": SYNTHETIC_RELATIONS,
            "train triples": SYNTHETIC_TRIPLES}


def synthetic_counts(tmp: Path, completed: Completed) -> str | None:
    """Check: ``kg stats --kg $TMP/kg`` reports the counts in ``$TMP/expected.json``."""
    expected = json.loads((tmp / "expected.json").read_text())
    stats = execute([CLI, "kg", "stats", "--kg", str(tmp / "kg")], base_env(), DEFAULT_TIMEOUT)
    if stats.returncode != 0:
        return f"kg stats failed after the rerun: {message_of(stats)}"
    wrong = []
    for name, count in expected.items():
        found = re.search(rf"{name}\s*\S\s*(\d+)", stats.stdout)
        if not found or int(found.group(1)) != count:
            wrong.append(f"{name} {found.group(1) if found else 'not shown'} (expected {count})")
    return f"kg stats after the rerun: {', '.join(wrong)}" if wrong else None


def all_cases() -> list[Case]:
    cases = [*kg_cases(), *link_cases(), *embed_cases(), *import_cases(), *finetune_cases(),
             *pretrain_cases(), *saved_cases(), *network_cases(), *data_cases(),
             *cli_cases()]
    ids = Counter(c.id for c in cases)
    assert all(n == 1 for n in ids.values()), [i for i, n in ids.items() if n > 1]
    assert all(c.group in GROUPS and c.expect in ("ok", "error", "either") for c in cases)
    return cases


# --------------------------------------------------------------------------- probe
def run_case(case: Case, work: Path) -> dict:
    """Set up, run, check and classify one case; returns its record."""
    tmp = work / case.id
    tmp.mkdir(parents=True)
    record = {"id": case.id, "group": case.group, "description": case.description,
              "command": None, "expected": case.expect}
    try:
        for name in case.needs:
            FX.need(name)
        if case.setup is not None:
            case.setup(tmp)
    except (SetupError, OSError, ValueError, KeyError) as problem:
        record["command"] = shown(expand(case.argv, tmp), tmp, FX.root, case.env)
        return {**record, "outcome": "setup failed", "seconds": 0.0,
                "message": str(problem)[:300], "problem": None, "exit_code": None,
                "note": None, "traceback": None}
    env = expand_env(case.env, tmp)
    record["command"] = shown(expand(case.argv, tmp), tmp, FX.root, env)
    completed = execute([CLI, *expand(case.argv, tmp)], base_env(env), case.timeout,
                        case.interrupt)
    if case.interrupt is not None and completed.interrupted_at is None \
            and not completed.timed_out:
        return {**record, "outcome": "setup failed", "seconds": round(completed.seconds, 2),
                "message": f"the command ended (exit {completed.returncode}) after "
                f"{completed.seconds:.1f} s, before it could be interrupted: give it a "
                "bigger input", "problem": None, "exit_code": completed.returncode,
                "note": None, "traceback": None}
    if completed.interrupted_at is not None and not (tmp / NOTE).is_file():
        (tmp / NOTE).write_text(f"SIGINT sent to the process group after "
                                f"{completed.interrupted_at:.1f} s; it exited after "
                                f"{completed.seconds:.1f} s")
    try:
        problem = case.check(tmp, completed) if case.check else None
    except (OSError, ValueError, KeyError) as error:  # the check's own inputs are gone
        problem = f"check could not run: {type(error).__name__}: {error}"
    outcome, note = classify(case, completed, problem)
    return {**record, "outcome": outcome, "seconds": round(completed.seconds, 2),
            "message": short_paths(message_of(completed, limit=400), tmp)[:160],
            "problem": note and short_paths(note, tmp),
            "exit_code": completed.returncode,
            "note": (tmp / NOTE).read_text() if (tmp / NOTE).is_file() else None,
            "traceback": short_paths(traceback_tail(completed) or "", tmp) or None
            if outcome == "raw traceback" else None}


def machine() -> str:
    return f"{cpu_model()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}"


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _cell(text: object) -> str:
    return str(text or "").replace("|", "\\|").replace("\n", " ")


def write_markdown(path: Path, report: dict) -> None:
    summary = report["summary"]
    lines = [
        "# ernie-kg CLI reliability probe",
        "",
        f"`experiments/reliability_probe.py` on {report['machine']}, {report['date']} "
        f"(commit {report['commit']}, working tree edited in parallel; load average at "
        f"start {report['load_average']}). {len(report['cases'])} cases"
        + (f" (selected: {', '.join(report['only'])})" if report["only"] else "")
        + f", {report['seconds']:.0f} s.",
        "",
        "Each case is one mistake a new user can make, run as `.venv/bin/ernie-kg ...` from "
        "the project root in its own process; `$TMP` is the case's temporary directory, "
        "`$SHARED` the inputs shared by all cases (a copy of `kg_data/demo`, tiny FewRel "
        "files, a 1-epoch TransE table, one tiny fine-tuned model, prepared pre-training "
        "data). Ctrl-C cases send SIGINT to the command's process group. Outcomes: `ok` "
        "(success expected, or `either` success or a clear refusal, and checks passed), "
        "`clear error` "
        "(non-zero exit, a message, no traceback), `raw traceback`, `silent wrong` "
        "(accepted a mistake, or a check of the result failed), `lost work`, `hang` (no "
        "exit before the case's timeout, or more than 10 s spent waiting for a network "
        "that is not there, measured against the same command with HF_HUB_OFFLINE=1).",
        "",
        "| outcome | cases |",
        "|---|---|",
        *(f"| {o} | {summary[o]} |" for o in OUTCOMES if summary.get(o)),
        "",
    ]
    problems = [c for c in report["cases"] if c["outcome"] not in ("ok", "clear error")]
    if problems:
        lines += ["## Cases that are not `ok` / `clear error`", ""]
        for case in problems:
            lines.append(f"- **{case['id']}** ({case['outcome']}): {case['description']}. "
                         f"`{case['command']}`")
            if case["problem"]:
                lines.append(f"  - problem: {case['problem']}")
            if case["note"]:
                lines.append(f"  - note: {case['note']}")
            if case["message"]:
                lines.append(f"  - message: `{case['message']}`")
            if case["traceback"]:
                lines += ["", "    ```", *("    " + t for t in case["traceback"].splitlines()),
                          "    ```"]
        lines.append("")
    lines += ["## All cases", "",
              "| case | command | expected | outcome | s | message |",
              "|---|---|---|---|---|---|"]
    for case in report["cases"]:
        lines.append(f"| {case['id']} | `{_cell(case['command'])}` | {case['expected']} | "
                     f"{case['outcome']} | {case['seconds']:.1f} | {_cell(case['message'])} |")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", choices=GROUPS, default=[],
                        metavar="GROUP", help=f"run only this group (repeatable): "
                        f"{', '.join(GROUPS)}")
    parser.add_argument("--case", action="append", default=[], help="run only this case id "
                        "(repeatable)")
    parser.add_argument("--out", type=Path, default=ROOT / "results",
                        help="directory for reliability.json and reliability.md")
    parser.add_argument("--keep", action="store_true", help="keep the temporary files")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    args = parser.parse_args(argv)
    if not (ROOT / CLI).exists():
        parser.error(f"{ROOT / CLI} is missing: run `make setup` first")

    chosen = args.only or args.case  # either selects; neither: every case
    cases = [c for c in all_cases()
             if not chosen or c.group in args.only or c.id in args.case]
    if args.list:
        for case in cases:
            print(f"{case.group:9} {case.id:30} {case.expect:5} {case.description}")
        return 0
    if not cases:
        parser.error("no case selected")

    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:  # started as a background job:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # commands must not inherit it
    work = Path(tempfile.mkdtemp(prefix="ernie-kg-probe-"))
    FX.root = work / "shared"
    FX.root.mkdir()
    print(f"{len(cases)} cases; temporary files in {work}", flush=True)
    started = time.perf_counter()
    date = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    records = []
    try:
        for number, case in enumerate(cases, start=1):
            record = run_case(case, work / "cases")
            records.append(record)
            print(f"[{number:3}/{len(cases)}] {case.id:32} {record['outcome']:14} "
                  f"{record['seconds']:6.1f} s  {record['message'][:90]}", flush=True)
            if not args.keep:
                shutil.rmtree(work / "cases" / case.id, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    counts = Counter(r["outcome"] for r in records)
    report = {
        "machine": machine(),
        "date": date,
        "commit": git_commit(),
        "python": sys.version.split()[0],
        "load_average": load,
        "only": args.only + args.case,
        "seconds": round(time.perf_counter() - started, 1),
        "summary": {o: counts[o] for o in OUTCOMES if counts[o]},
        "cases": records,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "reliability.json").write_text(
        json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    write_markdown(args.out / "reliability.md", report)
    print(json.dumps(report["summary"]), f"-> {args.out}/reliability.json, .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
