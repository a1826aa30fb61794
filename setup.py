"""Builds the linker's optional compiled hot path (ernie_kg/linking/_speedups.pyx);
everything else about the package is in pyproject.toml.

It reads spaCy's C structs, so it is compiled against the spaCy that ``pip`` puts in the
build environment and used only with that same version (ernie_kg/linking/compiled.py).
Without Cython, numpy or a C++ compiler the build goes on without it and the linker runs
the same steps in pure Python.
"""

import warnings

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """A failed compile is a warning, not a failed install."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as error:  # no compiler, no headers
            warnings.warn(f"ernie-kg: could not compile the linker ({error}); it runs in "
                          "pure Python", stacklevel=1)


def extensions() -> list:
    try:
        import numpy
        import spacy
        from Cython.Build import cythonize
    except ImportError as error:
        warnings.warn(f"ernie-kg: compiled linker skipped ({error})", stacklevel=1)
        return []
    speedups = Extension(
        "ernie_kg.linking._speedups",
        ["ernie_kg/linking/_speedups.pyx"],
        include_dirs=[numpy.get_include()],
        language="c++",
        define_macros=[("ERNIE_KG_SPACY_VERSION", f'"{spacy.__version__}"')],
    )
    try:
        return cythonize([speedups], quiet=True, force=True)  # never a stale .cpp
    except Exception as error:  # spaCy's .pxd files changed shape
        warnings.warn(f"ernie-kg: compiled linker skipped ({error})", stacklevel=1)
        return []


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
