"""Trainer callbacks for logs: every record to ``log.jsonl``, short lines on the console.

Why: Trainer prints its raw log dicts; a run is easier to follow with one line per
evaluation, while the full records still land in a file for learning curves.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from transformers import (
    ProgressCallback,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)


class JsonlLogCallback(TrainerCallback):
    """Appends every ``Trainer`` log record (loss, lr, eval metrics) to a JSONL file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.started = time.perf_counter()

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        """Trainer's hook: append the record (with step, epoch, seconds) on the main process."""
        if not state.is_world_process_zero or not logs:
            return
        record = {"step": state.global_step, "epoch": state.epoch,
                  "seconds": round(time.perf_counter() - self.started, 2), **logs}
        with open(self.path, "a", encoding="utf-8") as out:
            out.write(json.dumps(record, default=float) + "\n")


class _LogLines:
    """Trainer log records -> one line per evaluation and one for the finished run (the
    records themselves go to ``log.jsonl``)."""

    def __init__(self) -> None:
        self.loss: float | None = None

    def __call__(self, args: TrainingArguments, state: TrainerState,
                 logs: Mapping[str, Any] | None) -> str | None:
        logs = logs or {}
        if "loss" in logs:
            self.loss = float(logs["loss"])
        if "train_runtime" in logs:
            loss = logs.get("train_loss")
            return (f"trained {state.global_step} steps in {logs['train_runtime']:.1f} s"
                    + (f" · train loss {loss:.4g}" if loss is not None else ""))
        if not any(k.startswith("eval_") for k in logs):
            return None
        parts = [f"loss {self.loss:.4g}"] if self.loss is not None else []
        if "eval_loss" in logs:
            parts.append(f"dev loss {logs['eval_loss']:.4g}")
        metric = args.metric_for_best_model or "loss"
        metric = metric.removeprefix("eval_")
        if metric != "loss" and isinstance(logs.get(f"eval_{metric}"), (int, float)):
            parts.append(f"dev {metric} {logs[f'eval_{metric}']:.4f}")
        return f"epoch {round(state.epoch or 0, 2):g}: " + " · ".join(parts)


class ProgressLineCallback(ProgressCallback):
    """Trainer's progress bars, with a short line per evaluation instead of each raw log
    dict."""

    def __init__(self) -> None:
        super().__init__()
        self.lines = _LogLines()

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        """Trainer's hook: write the line (if any) above the training bar."""
        line = self.lines(args, state, logs)
        if line and state.is_world_process_zero and self.training_bar is not None:
            self.training_bar.write(line)


class LogLineCallback(TrainerCallback):
    """Without progress bars (``progress=False``): the same short lines, printed (in place
    of Trainer's ``PrinterCallback`` and its raw dicts)."""

    def __init__(self) -> None:
        self.lines = _LogLines()

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        """Trainer's hook: print the line (if any) on the main process."""
        line = self.lines(args, state, logs)
        if line and state.is_world_process_zero:
            print(line, flush=True)
