"""The package's API rules, read from the source with ``ast`` (nothing is imported).

* Every public top-level function, every public method of a public class (properties
  included; ``__init__`` and ``__call__`` count, and a class docstring documents
  ``__init__``) and every ``forward`` method, public class or not, has a docstring.
* Every parameter of those, bar ``self`` / ``cls`` and ``*args`` / ``**kwargs``, has a
  type annotation (property setters included, though they need no docstring).
* No module is longer than :data:`MAX_LINES` lines.

The failure message lists every offender as ``path:line name: what is missing``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ernie_kg"
MAX_LINES = 430
CHECKED_DUNDERS = ("__init__", "__call__")

Function = ast.FunctionDef | ast.AsyncFunctionDef


def _modules() -> list[Path]:
    """Every Python module of the package (``_speedups.pyx`` is Cython, not Python)."""
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _public(name: str) -> bool:
    return not name.startswith("_")


def _decorator_names(function: Function) -> set[str]:
    """``property``, ``setter``, ``overload``, ...: the last dotted part of each decorator."""
    names = set()
    for decorator in function.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if isinstance(target, ast.Attribute):
            names.add(target.attr)
        elif isinstance(target, ast.Name):
            names.add(target.id)
    return names


def _body(nodes: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Statements of a module or class body, looking inside ``if`` / ``try`` / ``with``."""
    for node in nodes:
        if isinstance(node, ast.If):
            yield from _body(node.body)
            yield from _body(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody,
                          *(handler.body for handler in node.handlers)):
                yield from _body(block)
        elif isinstance(node, ast.With):
            yield from _body(node.body)
        else:
            yield node


def _checked(tree: ast.Module) -> Iterator[tuple[str, Function, ast.ClassDef | None]]:
    """``(qualified name, function, its class)`` for every function the rules cover."""
    for node in _body(tree.body):
        if isinstance(node, Function) and _public(node.name):
            yield node.name, node, None
        elif isinstance(node, ast.ClassDef):
            yield from _methods(node, node.name, _public(node.name))


def _methods(cls: ast.ClassDef, prefix: str, public: bool,
             ) -> Iterator[tuple[str, Function, ast.ClassDef | None]]:
    for node in _body(cls.body):
        if isinstance(node, ast.ClassDef):
            yield from _methods(node, f"{prefix}.{node.name}", public and _public(node.name))
        elif isinstance(node, Function):
            covered = public and (_public(node.name) or node.name in CHECKED_DUNDERS)
            if covered or node.name == "forward":
                yield f"{prefix}.{node.name}", node, cls


def _unannotated(function: Function) -> list[str]:
    """Names of the parameters that lack a type annotation."""
    arguments = function.args
    named = [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]
    return [a.arg for a in named if a.annotation is None and a.arg not in ("self", "cls")]


def _offences(where: str, source: str) -> list[str]:
    """``path:line name: what is missing`` for each broken rule in one module's source."""
    found = []
    lines = len(source.splitlines())
    if lines > MAX_LINES:
        found.append(f"{where}:{lines} <module>: {lines} lines, over {MAX_LINES}; split it")
    for name, function, cls in _checked(ast.parse(source, filename=where)):
        decorators = _decorator_names(function)
        if "overload" in decorators:
            continue
        documented = ast.get_docstring(function) is not None
        if not documented and function.name == "__init__" and cls is not None:
            documented = ast.get_docstring(cls) is not None
        if not documented and not decorators & {"setter", "deleter"}:
            found.append(f"{where}:{function.lineno} {name}: docstring")
        missing = _unannotated(function)
        if missing:
            found.append(f"{where}:{function.lineno} {name}: type hint for "
                         + ", ".join(missing))
    return found


def test_modules_are_found() -> None:
    modules = _modules()
    assert PACKAGE / "modeling" / "modeling.py" in modules
    assert len(modules) > 20


def test_public_api_has_docstrings_type_hints_and_short_modules() -> None:
    offences = [offence for path in _modules()
                for offence in _offences(path.relative_to(ROOT).as_posix(),
                                         path.read_text(encoding="utf-8"))]
    assert not offences, f"{len(offences)} API rule offences:\n" + "\n".join(offences)


def test_the_checker_catches_each_kind_of_offence() -> None:
    source = '''
def documented(x: int) -> int:
    """Fine."""

def bare(x, *args, **kwargs):
    pass

class Thing:
    """The class docstring documents __init__."""

    def __init__(self, value: int) -> None:
        pass

    @property
    def size(self) -> int:
        return 1

    @size.setter
    def size(self, value: int) -> None:
        pass

    def __repr__(self):
        return ""

    def _helper(self, y):
        pass

class _Private:
    def method(self, z):
        pass

    def forward(self, z):
        pass
'''
    assert _offences("probe.py", source + "\n" * MAX_LINES) == [
        f"probe.py:{MAX_LINES + 33} <module>: {MAX_LINES + 33} lines, over {MAX_LINES}; "
        "split it",
        "probe.py:5 bare: docstring",
        "probe.py:5 bare: type hint for x",
        "probe.py:15 Thing.size: docstring",
        "probe.py:32 _Private.forward: docstring",
        "probe.py:32 _Private.forward: type hint for z",
    ]
