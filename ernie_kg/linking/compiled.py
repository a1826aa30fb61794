"""The linker's optional compiled hot path (``_speedups.pyx``, built by ``pip install``
when Cython and a C++ compiler are at hand).

It reads spaCy's C structs, so it is used only with the spaCy version it was built
against. Without it, or with ``ERNIE_KG_PURE_PYTHON=1`` in the environment, the linker
runs the same steps in pure Python, slower, to the same results: the same mentions, and
the same context words added to their set in the same order, so scores agree to the bit.
"""

from __future__ import annotations

import warnings
from types import ModuleType

import spacy

from ernie_kg.pure_python import PURE_PYTHON_ENV, pure_python_requested

__all__ = ["PURE_PYTHON_ENV", "speedups"]


def _load() -> ModuleType | None:
    if pure_python_requested():
        return None
    try:
        from ernie_kg.linking import _speedups
    except ImportError:  # not built: no compiler at install time
        return None
    except ValueError as error:  # Cython's check of spaCy's struct sizes
        warnings.warn(f"compiled linker unusable ({error}); linking in pure Python",
                      stacklevel=2)
        return None
    if _speedups.BUILT_WITH_SPACY != spacy.__version__:
        warnings.warn(
            f"the compiled linker was built for spaCy {_speedups.BUILT_WITH_SPACY}, not "
            f"{spacy.__version__}; linking in pure Python (to build it for this spaCy, reinstall "
            "ernie-kg with Cython installed and pip's --no-build-isolation)",
            stacklevel=2)
        return None
    if not hasattr(_speedups, "alias_spans"):  # built from an older source
        warnings.warn("the compiled linker predates this release's alias patterns; linking "
                      "in pure Python (reinstall ernie-kg to rebuild it)", stacklevel=2)
        return None
    return _speedups


#: The compiled module, or None (pure Python).
speedups: ModuleType | None = _load()
