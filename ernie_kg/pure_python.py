"""The one switch for the package's compiled code: ``ERNIE_KG_PURE_PYTHON=1``.

Why one: the linker's Cython hot path (``ernie_kg.linking.compiled``) and the entity
stream's CPU kernels (``ernie_kg.modeling.native``) are both optional speed-ups with a
pure-Python (or ATen) twin computing the same results; a user comparing the two, or
working where a build misbehaves, switches both off with one variable.
"""

from __future__ import annotations

import os

__all__ = ["PURE_PYTHON_ENV", "pure_python_requested"]

PURE_PYTHON_ENV = "ERNIE_KG_PURE_PYTHON"


def pure_python_requested() -> bool:
    """Whether the environment asks for no compiled code (any value but empty or 0)."""
    return os.environ.get(PURE_PYTHON_ENV, "") not in ("", "0")
