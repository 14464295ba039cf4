"""The package's import structure, read from the source: layers import only downwards and no two
modules import each other, directly or round a circle.

Every ``import`` counts, those inside functions too (a lazy import is still a dependency); only
imports under ``if TYPE_CHECKING:`` are left out, since they exist for type hints and never run.
"""

from __future__ import annotations

import ast
import platform
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "platform" / "surrogate_search"

LAYERS = [
    {"registry", "utils", "cache", "plugins", "progress"},
    {"metrics"},
    {"tasks"},
    {"sampling"},
    {"surrogates"},
    {"config", "checkpoint", "fidelity", "selection"},
    {"pretrain", "posttune", "surrogate_training"},
    {"compare"},
    {"tracking"},
    {"search"},
    {"api"},
    {"cli"},
]
"""Lowest first. The package's own ``__init__`` (the public API) sits above them all."""


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``path`` imports (``from pkg import submodule`` names the submodule)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and is_type_checking(child):
                for orelse in child.orelse:
                    visit(orelse)
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name in modules)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                for alias in child.names:
                    target = f"{child.module}.{alias.name}"
                    if target in modules:
                        found.add(target)
                    elif child.module in modules:
                        found.add(child.module)
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    return {name: imports_of(path, modules) - {name} for name, path in files.items()}


def layer(module: str) -> int:
    top = module.split(".")[1]
    return next(i for i, names in enumerate(LAYERS) if top in names)


def test_every_module_belongs_to_a_layer() -> None:
    for module in import_graph():
        if module != "surrogate_search":
            layer(module)  # StopIteration names a module missing from LAYERS


def test_no_import_from_a_lower_layer_to_a_higher_one() -> None:
    upward = [(src, dst) for src, targets in import_graph().items() if src != "surrogate_search"
              for dst in targets if dst != "surrogate_search" and layer(dst) > layer(src)]
    assert upward == []


def test_no_module_imports_itself_round_a_circle() -> None:
    graph = import_graph()
    # A package's __init__ re-exporting its own modules is not a circle; a module of the package
    # importing that __init__ back is one only if the __init__ depends on it in turn.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def connect(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    assert circles == []


def test_the_walker_sees_a_planted_circle_and_an_upward_import(tmp_path: Path) -> None:
    a = tmp_path / "a.py"
    a.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import surrogate_search.cli\n"
                 "def f():\n    from surrogate_search.search import tune\n", encoding="utf-8")
    found = imports_of(a, {"surrogate_search.cli", "surrogate_search.search.tune", "surrogate_search.search"})
    assert found == {"surrogate_search.search.tune"}  # the lazy import counts; TYPE_CHECKING does not


@pytest.mark.parametrize("module", ["surrogate_search.tasks", "surrogate_search.metrics", "surrogate_search.surrogates"])
def test_lower_layers_never_reach_search_tracking_or_cli(module: str) -> None:
    graph = import_graph()
    reached, todo = set(), [m for m in graph if m == module or m.startswith(module + ".")]
    while todo:
        current = todo.pop()
        if current in reached:
            continue
        reached.add(current)
        todo.extend(graph.get(current, ()))
    assert not {m for m in reached if m.split(".")[1] in {"search", "tracking", "cli", "api"}}


def test_standard_library_platform_still_imports() -> None:
    assert platform.system()
    assert not (PACKAGE.parent / "__init__.py").exists()
