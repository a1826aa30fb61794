"""Range checks of numeric arguments at the API boundary (the CLI's options use the same
ones): a bad value fails before any work starts, with the argument's name and its range,
not later deep inside torch or PyKEEN."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ernie_kg.errors import SettingError

__all__ = ["RANGES", "check_number", "check_settings"]

#: name -> (least, open at least?, most); None: no bound on that side.
RANGES: dict[str, tuple[float | None, bool, float | None]] = {
    "epochs": (0, True, None),
    "num_epochs": (0, True, None),
    "max_steps": (1, False, None),
    "dim": (1, False, None),
    "batch_size": (1, False, None),
    "eval_batch_size": (1, False, None),
    "gradient_accumulation_steps": (1, False, None),
    "learning_rate": (0, True, None),
    "knowledge_learning_rate": (0, True, None),
    "gate_learning_rate": (0, True, None),
    "warmup_ratio": (0, False, 1),
    "weight_decay": (0, False, None),
    "max_grad_norm": (0, True, None),
    "save_steps": (1, False, None),
    "logging_steps": (1, False, None),
    "scoring_fct_norm": (1, False, 2),
    "max_length": (8, False, None),
}


def check_number(name: str, value: Any, least: float | None = None, open_least: bool = False,
                 most: float | None = None) -> Any:
    """``value`` when it is a finite number in range, else SettingError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SettingError(f"{name} must be a finite number, not {value!r}")
    too_low = least is not None and (value <= least if open_least else value < least)
    if too_low or (most is not None and value > most):
        low = "" if least is None else f"{'>' if open_least else '>='} {least:g}"
        high = "" if most is None else f"<= {most:g}"
        raise SettingError(f"{name} must be {' and '.join(filter(None, (low, high)))}, "
                         f"not {value!r}")
    return value


def check_settings(settings: Mapping[str, Any]) -> None:
    """Check every setting :data:`RANGES` knows (None means unset and passes)."""
    for name, value in settings.items():
        if name in RANGES and value is not None:
            least, open_least, most = RANGES[name]
            check_number(name, value, least, open_least, most)
