"""The package's import graph: layers point down, no cycles, testing/ stays out of the core.

Read from the source with :mod:`ast` (nothing is imported), every ``import``
and ``from ... import`` counts, wherever it stands (module level or inside a
function), except under ``if TYPE_CHECKING:``.  An import of ``a.b.c`` is an
edge to the deepest module of the package it names.
"""

from __future__ import annotations

import ast
from pathlib import Path

import netpoll

ROOT = Path(netpoll.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(name: str) -> str | None:
    """The deepest netpoll module ``name`` stands for (a module, or a name in one)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str) -> set[str]:
    tree = ast.parse(MODULES[module].read_text(), str(MODULES[module]))
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                found.add(f"{base}.{alias.name}")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    edges = {_resolve(n) for n in found if n == "netpoll" or n.startswith("netpoll.")}
    return {e for e in edges if e is not None and e != module}


GRAPH = {m: _imports(m) for m in MODULES}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_the_walk_sees_the_package() -> None:
    assert "netpoll.core.sched" in GRAPH
    assert "netpoll.core.hookspecs" in GRAPH["netpoll.backends.epoll"]
    assert "netpoll.testing.switch" in GRAPH["netpoll.testing.faults"]


def test_no_import_cycles() -> None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def walk(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(GRAPH[module]):
            if state.get(dep) == 1:
                cycles.append([*path[path.index(dep) :], module, dep])
            elif dep not in state:
                walk(dep, [*path, dep])
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            walk(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_core_and_backends_never_import_testing() -> None:
    bad = [
        f"{m} imports {dep}"
        for m, deps in GRAPH.items()
        if _layer(m) in ("core", "backends")
        for dep in deps
        if _layer(dep) == "testing"
    ]
    assert not bad, bad


def test_only_tests_and_the_pytest_plugin_import_testing() -> None:
    bad = [
        f"{m} imports {dep}"
        for m, deps in GRAPH.items()
        if _layer(m) != "testing"
        for dep in deps
        if _layer(dep) == "testing"
    ]
    assert not bad, bad


def test_core_never_imports_net_or_backends() -> None:
    bad = [
        f"{m} imports {dep}"
        for m, deps in GRAPH.items()
        if _layer(m) == "core"
        for dep in deps
        if _layer(dep) in ("net", "backends", "testing", "bench", "green", "patch", "socket")
    ]
    assert not bad, bad


def test_a_backend_imports_only_hookspecs_and_the_backend_bases() -> None:
    allowed = {"netpoll.core.hookspecs", "netpoll.backends.base"}
    bad = [
        f"{m} imports {dep}"
        for m, deps in GRAPH.items()
        if _layer(m) == "backends"
        for dep in deps
        if dep not in allowed
    ]
    assert not bad, bad


def test_green_modules_import_only_core_and_green() -> None:
    # The green stdlib modules sit on the core (FD, pollDesc, scheduler);
    # netpoll.patch and netpoll.socket sit on them.  Nothing below imports them.
    bad = [
        f"{m} imports {dep}"
        for m, deps in GRAPH.items()
        if _layer(m) == "green"
        for dep in deps
        if _layer(dep) not in ("core", "green")
    ]
    users = [
        f"{m} imports {dep}"
        for m, deps in GRAPH.items()
        if _layer(m) not in ("green", "patch", "socket")
        for dep in deps
        if _layer(dep) in ("green", "patch")
    ]
    assert not bad, bad
    assert not users, users
