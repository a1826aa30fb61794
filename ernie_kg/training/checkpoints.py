"""The files of a pre-training run: checkpoints, the step log and the finished settings.

Why a checkpoint is a directory written beside its place and renamed into it: a killed
run must never leave a half-written checkpoint, and a rename is atomic, so every
``checkpoints/checkpoint-N`` directory is complete. The single files (the trainer state,
the log after a resume, the finished settings) go through :mod:`ernie_kg.io` for the
same reason. Fine-tuning checkpoints (written by the Hugging Face ``Trainer``) take the
same route: each is written inside a staging directory ``.tmp-checkpoint-N`` beside its
place (:func:`finetune_staging_dir`) and renamed into place when complete.

Settings travel as plain dicts (``dataclasses.asdict``), so this module does not depend
on the training loop that defines them.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ernie_kg.errors import ErnieKGError, SavedFileError
from ernie_kg.io import iter_jsonl, read_json, write_atomic, write_json
from ernie_kg.modeling.entity_table import rebase_reference

__all__ = [
    "FINISHED_FILE",
    "LOG_FILE",
    "STATE_FILE",
    "append_log",
    "check_resume",
    "finetune_staging_dir",
    "latest_checkpoint",
    "plot_log",
    "publish_staged_checkpoint",
    "read_log",
    "refuse_earlier_finetune",
    "remove_staging",
    "restore_checkpoint",
    "resumable_finetune_checkpoint",
    "save_checkpoint",
    "truncate_finetune_log",
    "truncate_log",
    "write_finished",
]

LOG_FILE = "log.jsonl"
STATE_FILE = "trainer_state.json"
FINISHED_FILE = "pretraining_settings.json"
OPTIMIZER_FILE = "optimizer.pt"
#: Name prefix of a checkpoint still being written (never counts as a checkpoint).
STAGING_PREFIX = ".tmp-"

#: Settings a resumed run must share with its checkpoint, or the data stream, the
#: corruption or the schedule would silently change.
RESUME_KEYS = ("batch_size", "gradient_accumulation_steps", "learning_rate", "warmup_ratio",
               "seed", "mlm_probability", "whole_word_masking", "whole_entity_masking",
               "dea", "nsp", "max_steps", "head_warmup_steps", "head_learning_rate",
               "gate_learning_rate", "mlm_prior", "freeze_word_embeddings",
               "held_bottom_layers")


def _step_of(path: Path) -> int:
    """The N of a ``checkpoint-N`` directory."""
    return int(path.name.split("-")[1])


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint under ``output_dir/checkpoints`` (renames are atomic,
    so every ``checkpoint-N`` directory is complete)."""
    root = Path(output_dir) / "checkpoints"
    found = [p for p in root.glob("checkpoint-*") if (p / STATE_FILE).is_file()]
    return max(found, key=_step_of, default=None)


def resumable_finetune_checkpoint(run_dir: str | Path) -> Path:
    """The newest complete ``checkpoint-N`` of a fine-tuning run. Checkpoints are renamed
    into place when complete, but as a safety net (a checkpoint written by plain
    ``Trainer``) one without ``trainer_state.json``, which Trainer writes last, counts as
    cut short: newer such ones are moved aside to ``incomplete-checkpoint-N`` (kept, not
    deleted). Staging directories a killed run left are removed. No complete checkpoint
    raises an error naming the directory."""
    run_dir = Path(run_dir)
    remove_staging(run_dir)
    found = sorted((p for p in run_dir.glob("checkpoint-*")
                    if p.is_dir() and p.name.split("-", 1)[1].isdigit()), key=_step_of)
    complete = [p for p in found if (p / STATE_FILE).is_file()]
    if not complete:
        what = (f"only incomplete checkpoints ({', '.join(p.name for p in found)}: no "
                f"{STATE_FILE}; the run was killed while writing them)" if found
                else "no checkpoint")
        raise ErnieKGError(f"{run_dir}: cannot resume, {what}; start again without "
                           "--resume")
    newest = complete[-1]
    for path in found:
        if _step_of(path) > _step_of(newest):
            aside = path.with_name(f"incomplete-{path.name}")
            shutil.rmtree(aside, ignore_errors=True)
            path.rename(aside)
    return newest


def refuse_earlier_finetune(run_dir: str | Path, log_path: str | Path | None) -> None:
    """A fresh (not resumed) fine-tuning run must not write over an earlier one: its
    checkpoints would mix and its log lines append to the old ones."""
    found = [p.name for p in Path(run_dir).glob("checkpoint-*")]
    if log_path is not None and _logged_steps(Path(log_path)):
        found.append(Path(log_path).name)
    if found:
        raise ErnieKGError(f"{run_dir} already holds a fine-tuning run ({', '.join(found[:3])}"
                           "): resume it (resume_from_checkpoint=True, --resume), or use "
                           "another directory (--overwrite moves the earlier run aside)")


def _logged_steps(path: Path) -> bool:
    """Does the log hold training records (with a "step")? Other records, such as an
    experiment's own "start" event written before training, are not a run."""
    if not path.is_file():
        return False
    try:
        return any("step" in record for _, record in iter_jsonl(path))
    except SavedFileError:
        return True  # a torn line: something was training here


def finetune_staging_dir(run_dir: str | Path, step: int) -> Path:
    """Where fine-tuning writes ``checkpoint-{step}`` (in a folder of that name inside
    it) before :func:`publish_staged_checkpoint` renames it into ``run_dir``."""
    return Path(run_dir) / f"{STAGING_PREFIX}checkpoint-{step}"


def remove_staging(run_dir: str | Path) -> list[Path]:
    """Delete the staging directories in ``run_dir`` (what a kill mid-save leaves: never a
    checkpoint); returns what was removed."""
    stale = sorted(Path(run_dir).glob(f"{STAGING_PREFIX}checkpoint-*"))
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def publish_staged_checkpoint(staging: Path, target: Path) -> Path:
    """Rename the complete checkpoint ``staging/target.name`` to ``target`` (replacing one
    of the same step from an earlier run) and drop the emptied ``staging``."""
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging / target.name, target)
    shutil.rmtree(staging, ignore_errors=True)
    rebase_reference(target)  # its entity table's relative path was from the staging dir
    return target


def save_checkpoint(
    output_dir: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
    scheduler: Any, settings: dict[str, Any], keep: int,
) -> Path:
    """Write ``checkpoints/checkpoint-{step}`` (model, optimizer, scheduler, step, settings)
    through a temporary directory renamed into place; keep the newest ``keep`` of them."""
    root = output_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"checkpoint-{step}"
    temporary = root / f".tmp-checkpoint-{step}"
    if temporary.exists():
        shutil.rmtree(temporary)
    temporary.mkdir()
    model.save_pretrained(temporary)
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
               temporary / OPTIMIZER_FILE)
    write_json(temporary / STATE_FILE, {"step": step, "settings": settings})
    if target.exists():
        shutil.rmtree(target)
    os.replace(temporary, target)
    checkpoints = sorted((p for p in root.glob("checkpoint-*") if p.is_dir()), key=_step_of)
    for old in checkpoints[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return target


def restore_checkpoint(checkpoint: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                       scheduler: Any, device: torch.device) -> tuple[int, dict[str, Any]]:
    """Load a checkpoint into ``model``, ``optimizer`` and ``scheduler``; returns its step
    and the settings it was made with."""
    from safetensors.torch import load_file

    state = load_file(str(checkpoint / "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or {})
    if [k for k in missing if k not in tied] or unexpected:
        raise ErnieKGError(f"{checkpoint}: checkpoint does not fit the model "
                           f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    saved = torch.load(checkpoint / OPTIMIZER_FILE, map_location=device, weights_only=False)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    trainer_state = read_json(checkpoint / STATE_FILE, what="the checkpoint's trainer state")
    return int(trainer_state["step"]), trainer_state.get("settings", {})


def check_resume(checkpoint: Path, saved: dict[str, Any], current: dict[str, Any]) -> None:
    """Refuse to resume when a setting in :data:`RESUME_KEYS` differs from the checkpoint's."""
    changed = {k: (saved[k], current[k]) for k in RESUME_KEYS
               if k in saved and saved[k] != current[k]}
    if changed:
        details = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
        raise ErnieKGError(
            f"{checkpoint}: cannot resume with other settings ({details}); use the "
            "checkpoint's settings, a new --output directory, or --no-resume --overwrite "
            "(the earlier run is moved aside)"
        )


def append_log(output_dir: Path, record: dict[str, Any]) -> None:
    """Add one step's record to ``log.jsonl`` (a kill may tear this line; see below)."""
    with (output_dir / LOG_FILE).open("a", encoding="utf-8") as log:
        log.write(json.dumps(record) + "\n")


def truncate_log(path: Path, step: int, summary_key: str | None = None) -> None:
    """Drop training records past ``step`` (written after the checkpoint a resume starts
    from) and a last line torn by the kill (lines are only appended, so nothing follows
    it); records without a step are kept. With
    ``summary_key``, a record at ``step`` holding that key goes too (logged after the
    checkpoint of its step was saved)."""
    if not path.exists():
        return
    kept: list[dict[str, Any]] = []
    try:
        for _, record in iter_jsonl(path):
            at = record.get("step")
            if not isinstance(at, int):  # not a training record (an experiment's event)
                kept.append(record)
            elif at < step or at == step and summary_key not in record:
                kept.append(record)
    except SavedFileError:
        pass  # the torn line
    write_atomic(path, lambda handle: handle.writelines(json.dumps(r) + "\n" for r in kept))


def truncate_finetune_log(path: str | Path, checkpoint: str | Path) -> None:
    """Make a fine-tuning ``log.jsonl`` end where ``checkpoint`` was saved, so a resumed
    run logs each step once: :func:`truncate_log` at its ``global_step``, dropping the
    end-of-training summary (``train_runtime``), which Trainer logs after its last save."""
    state = read_json(Path(checkpoint) / STATE_FILE, what="the checkpoint's trainer state")
    truncate_log(Path(path), int(state["global_step"]), summary_key="train_runtime")


def read_log(output_dir: Path) -> list[dict[str, Any]]:
    """Every record of ``log.jsonl``, in order (none before the first step is logged)."""
    path = output_dir / LOG_FILE
    return [record for _, record in iter_jsonl(path)] if path.is_file() else []


def write_finished(output_dir: Path, settings: dict[str, Any]) -> Path:
    """``pretraining_settings.json``, written last: its presence means a whole model."""
    return write_json(output_dir / FINISHED_FILE, settings)


def plot_log(output_dir: Path, objectives: tuple[str, ...]) -> None:
    """``loss.png`` from ``log.jsonl``: each objective's loss (``{name}_loss``) and dEA
    accuracy against chance, per step, so a run can be judged at a glance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_log(output_dir)
    if not records:
        return
    steps = [r["step"] for r in records]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for name in objectives:
        key = f"{name}_loss"
        if key in records[0]:
            left.plot(steps, [r.get(key, float("nan")) for r in records], label=name)
    left.set(xlabel="step", ylabel="loss", title="pre-training losses")
    left.legend()
    if "dea_accuracy" in records[0]:
        right.plot(steps, [r.get("dea_accuracy", float("nan")) for r in records],
                   label="dEA accuracy")
        right.plot(steps, [r.get("dea_chance", float("nan")) for r in records],
                   label="in-batch chance", linestyle="--")
        right.set(xlabel="step", ylabel="accuracy", title="dEA", ylim=(0, 1))
        right.legend()
    figure.tight_layout()
    figure.savefig(output_dir / "loss.png", dpi=100)
    plt.close(figure)
