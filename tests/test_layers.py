"""Imports go one way: errors/io/spans/checks/memory/pure_python -> kg -> linking, modeling
-> processing -> data -> training -> pipelines -> cli/demo, and no two modules import each
other at run time.

Read from the source with ``ast`` (nothing is imported), function-local imports included;
imports under ``if TYPE_CHECKING:`` are type hints only and do not count for cycles.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "ernie_kg"
LAYERS = {
    "errors": 0, "io": 0, "paths": 0, "spans": 0, "checks": 0, "hub": 0, "machine": 0,
    "memory": 0, "pure_python": 0,
    "kg": 1,
    "linking": 2, "modeling": 2,
    "processing": 3,
    "data": 4,
    "training": 5,
    "pipelines": 6,
    "cli": 7, "cli_options": 7, "cli_pretrain": 7, "demo": 7, "__main__": 7, "": 7,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "ernie_kg":
        return None
    return LAYERS[parts[1] if len(parts) > 1 else ""]


def imports(tree: ast.AST, runtime_only: bool = False) -> list[tuple[int, str]]:
    """(line, module) of every import of ``tree``; ``runtime_only`` skips TYPE_CHECKING."""
    skipped: set[int] = set()
    if runtime_only:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                skipped |= {id(child) for child in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.lineno, node.module)]
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
    return found


def sources() -> dict[str, ast.AST]:
    return {module_name(p): ast.parse(p.read_text(encoding="utf-8"))
            for p in sorted(PACKAGE.rglob("*.py"))}


def test_no_module_imports_a_higher_layer():
    upward = []
    for module, tree in sources().items():
        mine = layer(module)
        for line, target in imports(tree):
            theirs = layer(target)
            if theirs is not None and theirs > mine:
                upward.append(f"{module}:{line} imports {target}")
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    trees = sources()
    graph = {m: {t for _, t in imports(tree, runtime_only=True) if t in trees and t != m}
             for m, tree in trees.items()}
    for module in graph:  # a package's __init__ importing its own modules is no cycle
        if "." in module:
            graph[module].discard(module.rsplit(".", 1)[0])
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        for target in graph[node]:
            if target in path:
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif len(path) < 12:
                visit(target, path + [target])

    for start in graph:
        visit(start, [start])
    assert not cycles, "\n".join(sorted(set(cycles))[:20])


@pytest.mark.parametrize("module", ["ernie_kg.processing.processor", "ernie_kg.spans"])
def test_layer_table_covers_the_package(module):
    assert layer(module) is not None
