"""The package's import graph: layers point down, no cycles, testing/ stays out of the core.

Read from the source with :mod:`ast` (nothing is imported), every ``import``
and ``from ... import`` counts, wherever it stands (module level or inside a
function), except under ``if TYPE_CHECKING:``.  An import of ``a.b.c`` is an
edge to the deepest module of the package it names.

Imports no ``import`` statement shows count too:

* a dynamic import (``importlib.import_module``, ``__import__``, ...) whose
  name is a constant (a literal, a module-level string constant, or the
  constant head of an f-string) is an edge like any other; one whose name is
  computed is allowed only at the sites listed in :data:`COMPUTED_IMPORTS`;
* the core may not even name a backend module in a string;
* the entry points in ``pyproject.toml`` are how plugins are loaded: every
  ``netpoll.backends`` entry point is a backend module, and every backend
  module is one (the built-in backends load the way third-party ones do).
"""

from __future__ import annotations

import ast
from pathlib import Path

import netpoll
from tests.helpers.pyproject import entry_points

ROOT = Path(netpoll.__file__).resolve().parent
# The checkout's, not the installed package's parent: under tox netpoll is
# installed from a wheel into site-packages.
PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"

#: Calls that import a module named by a string.
DYNAMIC_IMPORTERS = {"import_module", "__import__", "spec_from_file_location", "find_spec"}

#: (module, function) -> why its dynamic import takes a name computed at run time.
COMPUTED_IMPORTS = {
    ("netpoll.core.plugins", "_load_plugins"): "NETPOLL_PLUGINS: modules the user names",
    ("netpoll.testing", "__getattr__"): "lazy exports: the testing modules in _EXPORTS",
    ("netpoll.patch", "_std"): "the stdlib module being patched (socket, ssl, ...)",
    ("netpoll.patch", "library"): "the installed package the user names",
    ("netpoll._build", "build_info"): "each module of COMPILED_MODULES, to say which build runs",
    ("netpoll._build", "find_spec"): "the finder that picks a hot module's compiled or pure file",
}


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


def _tree(module: str) -> ast.Module:
    return ast.parse(MODULES[module].read_text(), str(MODULES[module]))


def _string_constants(tree: ast.Module) -> dict[str, str]:
    """Module-level ``NAME = "text"`` assignments."""
    found = {}
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            found.update({t.id: node.value.value for t in node.targets if isinstance(t, ast.Name)})
    return found


def _imported_name(arg: ast.expr, constants: dict[str, str]) -> str | None:
    """The module name a dynamic import's argument stands for, if it is constant."""
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    if isinstance(arg, ast.Name):
        return constants.get(arg.id)
    if isinstance(arg, ast.JoinedStr) and arg.values:
        head = arg.values[0]
        if isinstance(head, ast.Constant) and isinstance(head.value, str):
            return head.value.rstrip(".") or None  # the package it reaches into
    return None


def _dynamic_imports(module: str) -> list[tuple[str, str | None]]:
    """(enclosing function, constant name or None) of each dynamic import call."""
    tree = _tree(module)
    constants = _string_constants(tree)
    found: list[tuple[str, str | None]] = []

    def visit(node: ast.AST, function: str) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            function = node.name
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in DYNAMIC_IMPORTERS:
                found.append((function, _imported_name(node.args[0], constants)))
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(tree, "<module>")
    return found


def _imports(module: str) -> set[str]:
    tree = _tree(module)
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = {name for _, name in _dynamic_imports(module) if name is not None}

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
    # Dynamic imports with a constant name are edges: a literal, a constant.
    assert "netpoll.bench" in GRAPH["netpoll.cli"]
    assert "netpoll.testing.kqueue_emulation" in GRAPH["netpoll.testing.pytest_plugin"]


def test_the_dynamic_import_reader_resolves_names() -> None:
    def name_of(call_arg: str) -> str | None:
        tree = ast.parse(f'PKG = "netpoll.net"\nimportlib.import_module({call_arg})\n')
        call = tree.body[1].value  # type: ignore[attr-defined]
        return _imported_name(call.args[0], _string_constants(tree))

    assert name_of('"netpoll.core.sched"') == "netpoll.core.sched"
    assert name_of("PKG") == "netpoll.net"
    assert name_of('f"netpoll.backends.{name}"') == "netpoll.backends"
    assert _resolve(name_of('f"netpoll.backends.{name}"') or "") == "netpoll.backends"
    assert name_of("modname") is None


def test_dynamic_imports_of_computed_names_only_where_allowed() -> None:
    sites = {
        (m, function) for m in MODULES for function, name in _dynamic_imports(m) if name is None
    }
    assert sites == set(COMPUTED_IMPORTS), sites


def test_the_lazy_testing_exports_stay_in_testing() -> None:
    import netpoll.testing

    exports = netpoll.testing._EXPORTS  # type: ignore[attr-defined]
    assert exports
    assert {_layer(m) for m in exports.values() if m in MODULES} == {"testing"}
    assert set(exports.values()) <= set(MODULES)


def test_the_core_names_no_backend_module() -> None:
    """Not even as a string to import later (the old built-in backend list).

    The entry-point group's name, ``"netpoll.backends"``, is no module of it.
    """
    bad = []
    for m in MODULES:
        if _layer(m) != "core":
            continue
        tree = _tree(m)
        docstrings = {
            id(n.value)
            for n in ast.walk(tree)
            if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)
        }
        bad += [
            f"{m}:{n.lineno}: {n.value!r}"
            for n in ast.walk(tree)
            if isinstance(n, ast.Constant)
            and isinstance(n.value, str)
            and n.value.startswith("netpoll.backends.")
            and id(n) not in docstrings
        ]
    assert not bad, bad


def test_backends_load_through_entry_points_only() -> None:
    groups = entry_points(PYPROJECT)
    targets = {name: value.partition(":")[0] for name, value in groups["netpoll.backends"].items()}
    shared = {"netpoll.backends", "netpoll.backends.base"}
    backend_modules = {m for m in MODULES if _layer(m) == "backends"} - shared
    assert set(targets.values()) == backend_modules
    assert all(m.rpartition(".")[2] == name for name, m in targets.items()), targets


def test_entry_point_targets_respect_the_layers() -> None:
    """What an entry point loads is in the layer its group serves."""
    expected = {"netpoll.backends": "backends", "pytest11": "testing"}
    for group, eps in entry_points(PYPROJECT).items():
        for name, value in eps.items():
            module = value.partition(":")[0]
            assert module in MODULES, f"{group}: {name} = {value}: no such module"
            assert _layer(module) == expected[group], f"{group}: {name} = {value}"


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


#: What a backend may import from netpoll: the contract, the wake channel, the bases.
BACKEND_MAY_IMPORT = {"netpoll.core.hookspecs", "netpoll.core.wakefd", "netpoll.backends.base"}


def test_a_backend_imports_only_hookspecs_wakefd_and_the_backend_bases() -> None:
    bad = [
        f"{m} imports {dep}"
        for m, deps in GRAPH.items()
        if _layer(m) == "backends"
        for dep in deps
        if dep not in BACKEND_MAY_IMPORT
    ]
    assert not bad, bad


def test_the_core_modules_a_backend_may_import_are_leaves() -> None:
    # So a backend reaching them reaches nothing else of the core.
    core = sorted(m for m in BACKEND_MAY_IMPORT if _layer(m) == "core")
    assert core == ["netpoll.core.hookspecs", "netpoll.core.wakefd"]
    assert {m: GRAPH[m] for m in core} == {m: set() for m in core}


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
