"""The two builds of the hot modules (netpoll/_build.py, setup.py): compiled and pure Python.

Whichever build this run has, the tests check that it is the one the
environment asked for (tox sets ``NETPOLL_TEST_EXPECT_BUILD``), that
``NETPOLL_PURE_PYTHON`` forces the pure modules, and that what users see
through compiled frames (tracebacks with source lines, the call counts of the
benchmark) matches pure Python.  The rest of the suite (fault injection, the
pytest plugin, sysmon's hog report, greenlet subclasses) runs unchanged on
both builds.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import netpoll
from netpoll import _build
from netpoll.bench import calls as calls_bench

ROOT = Path(netpoll.__file__).resolve().parent


def _run(code: str, **env: str) -> str:
    """Run ``code`` in a fresh interpreter with this netpoll and extra env; its stdout."""
    full = dict(os.environ)
    full.pop(_build.ENV_PURE, None)
    full["PYTHONPATH"] = str(ROOT.parent) + os.pathsep + full.get("PYTHONPATH", "")
    full.update(env)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _installed_build() -> str:
    """The build this install has when nothing forces pure (compiled, pure or mixed)."""
    out = _run("import json, netpoll._build as b; print(json.dumps(b.build_info()))")
    return str(json.loads(out)["build"])


def test_build_is_what_the_environment_asked_for() -> None:
    info = _build.build_info()
    # The report agrees with the modules actually loaded.
    for name, kind in info["modules"].items():
        module = importlib.import_module(name)
        suffix = Path(module.__file__ or "").suffix
        assert (suffix != ".py") == (kind == "compiled"), (name, module.__file__)
    assert info["build"] in ("compiled", "pure", "mixed")
    assert info["reason"]
    expected = os.environ.get("NETPOLL_TEST_EXPECT_BUILD")
    if expected:  # set by tox.ini: a compile that failed quietly must fail the run
        assert info["build"] == expected, info


def test_pure_python_env_var_forces_every_hot_module_pure() -> None:
    code = (
        "import json, netpoll, netpoll._build as b\n"
        "import netpoll.core.fd as fd\n"
        "print(json.dumps([b.build_info(), fd.__file__]))"
    )
    info, fd_file = json.loads(_run(code, NETPOLL_PURE_PYTHON="1"))
    assert info["build"] == "pure"
    assert "NETPOLL_PURE_PYTHON=1" in info["reason"]
    assert set(info["modules"].values()) == {"pure"}
    assert fd_file.endswith(os.path.join("core", "fd.py"))


def test_pure_python_env_var_can_name_modules() -> None:
    code = "import json, netpoll._build as b; print(json.dumps(b.build_info()))"
    info = json.loads(_run(code, NETPOLL_PURE_PYTHON="park,netpoll.core.chan"))
    assert info["modules"]["netpoll.core.park"] == "pure"
    assert info["modules"]["netpoll.core.chan"] == "pure"
    others = {
        v for k, v in info["modules"].items() if k not in ("netpoll.core.park", "netpoll.core.chan")
    }
    installed = _installed_build()
    assert others == ({"compiled"} if installed == "compiled" else {"pure"})


def test_pure_python_zero_means_no() -> None:
    assert not _build.pure_requested({"NETPOLL_PURE_PYTHON": "0"})
    assert not _build.pure_requested({"NETPOLL_PURE_PYTHON": ""})
    assert not _build.pure_requested({})
    assert _build.pure_requested({"NETPOLL_PURE_PYTHON": "1"})
    assert _build.pure_modules({"NETPOLL_PURE_PYTHON": "yes"}) == frozenset(_build.COMPILED_MODULES)
    assert _build.pure_modules({"NETPOLL_PURE_PYTHON": "fd"}) == {"netpoll.core.fd"}


def test_a_compiled_module_whose_source_changed_loads_pure(tmp_path: Path) -> None:
    # An editable install edited since its build: the finder compares the
    # source's hash with the one recorded at build time (nothing is loaded here).
    import importlib.machinery

    source = tmp_path / "fd.py"
    source.write_text("X = 1\n")
    compiled = tmp_path / ("fd" + importlib.machinery.EXTENSION_SUFFIXES[0])
    compiled.write_bytes(b"")  # stands for the compiled twin; only its path is used
    finder = _build._PureFinder(frozenset(), {"netpoll.core.fd": _build.source_hash(str(source))})
    spec = finder.find_spec("netpoll.core.fd", [str(tmp_path)])
    assert spec is not None and spec.origin == str(compiled)
    source.write_text("X = 2\n")
    spec = finder.find_spec("netpoll.core.fd", [str(tmp_path)])
    assert spec is not None and spec.origin == str(source)
    assert "netpoll.core.fd" in finder.stale
    # Forced pure, and modules it does not handle.
    forced = _build._PureFinder(frozenset({"netpoll.core.fd"}), {})
    spec = forced.find_spec("netpoll.core.fd", [str(tmp_path)])
    assert spec is not None and spec.origin == str(source)
    assert forced.find_spec("netpoll.core.errors", [str(tmp_path)]) is None


def test_info_and_bench_say_which_build_runs() -> None:
    from netpoll.cli import collect_info, format_info

    info = collect_info()
    assert info["build"]["build"] == _build.build_info()["build"]
    text = format_info(info)
    assert f"build:     {info['build']['build']} (" in text


def test_no_compiled_module_defines_a_hookimpl() -> None:
    # pluggy registers only plain functions as hook implementations: a
    # hookimpl in a compiled module would silently not be registered.
    for name in _build.COMPILED_MODULES:
        path = ROOT.parent.joinpath(*name.split(".")).with_suffix(".py")
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for deco in node.decorator_list:
                    target = deco.func if isinstance(deco, ast.Call) else deco
                    label = ast.unparse(target)
                    assert "hookimpl" not in label, f"{name}.{node.name} is a hookimpl"


_TRACEBACK = r"""
import json, time, traceback, netpoll
ln = netpoll.listen("tcp", "127.0.0.1:0")
c = netpoll.dial("tcp", str(ln.addr()))
s = ln.accept()
frames = []
def reader():
    s.set_read_deadline(time.time() + 0.05)
    try:
        s.read(10)
    except netpoll.OpError as exc:
        inner = exc.__cause__ or exc.__context__
        for f in traceback.extract_tb(inner.__traceback__):
            name = f.name.rpartition(".")[2]  # compiled frames carry qualified names
            base = f.filename.replace("\\", "/").rsplit("/", 1)[-1]
            frames.append([base, name, f.lineno, f.line])
netpoll.run(reader)
c.close(); s.close(); ln.close()
print(json.dumps(frames))
"""


def test_tracebacks_through_compiled_frames_match_pure_python() -> None:
    pure = json.loads(_run(_TRACEBACK, NETPOLL_PURE_PYTHON="1"))
    installed = json.loads(_run(_TRACEBACK))
    # The deadline error is raised in polldesc.py, called from fd.py: both
    # builds show the same files, functions, lines and source text.
    files = [f[0] for f in pure]
    assert "fd.py" in files and "polldesc.py" in files, pure
    assert installed == pure
    assert all(f[3] for f in installed), installed  # every frame has its source line


@pytest.mark.skipif(sys.version_info < (3, 12), reason="sys.monitoring is new in Python 3.12")
def test_call_counts_see_the_deadline_and_two_switches_per_message() -> None:
    plain = calls_bench.measure(conns=10, messages=10)
    deadline = calls_bench.measure(conns=10, messages=10, deadline=True)
    assert plain is not None and deadline is not None
    # One park and one wake per echoed message: two greenlet switches (a few
    # rounds find the data already there, hence not exactly 2).
    assert 1.0 <= plain["switches"] <= 2.5, plain
    # Setting a deadline per message is Python work the counts must show.
    assert deadline["calls"] > plain["calls"] > 0, (plain, deadline)
    assert deadline["py_functions"] > plain["py_functions"] > 0, (plain, deadline)


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="Python >= 3.12 has sys.monitoring")
def test_call_counts_say_why_they_are_skipped_before_3_12() -> None:
    assert calls_bench.measure(conns=1, messages=1) is None
    doc = calls_bench.measure_all(conns=1, messages=1)
    assert "Python >= 3.12" in doc["skipped"]
    assert "skipped" in calls_bench.format_table(doc)


def test_call_counts_reject_bad_arguments() -> None:
    with pytest.raises(ValueError, match="conns, messages and size"):
        calls_bench.measure(conns=0)


def _pxd_classes(path: Path) -> dict[str, tuple[set[str], set[str]]]:
    """``{class: (fields, methods)}`` declared by an augmenting .pxd (its simple syntax only)."""
    classes: dict[str, tuple[set[str], set[str]]] = {}
    current: tuple[set[str], set[str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line:
            continue
        if line.startswith(("cimport ", "from ")):  # a cimport: the types the fields use
            continue
        if line.startswith("cdef class "):
            current = classes.setdefault(
                line[len("cdef class ") :].split(":")[0].strip(), (set(), set())
            )
            continue
        assert current is not None and raw.startswith("    "), f"{path.name}: {raw!r}"
        if line.lstrip().startswith("@"):  # @cython.locals(...) on the method that follows
            continue
        words = line.split("(")[0].split()
        if "(" in line:  # cpdef/cdef method: its name is the last word before "("
            current[1].add(words[-1])
        else:  # field(s): cdef [public|readonly] type name[, name]
            current[0].update(n.strip() for n in line.split(None, 3)[-1].split(",") if n.strip())
    return classes


@pytest.mark.parametrize("pxd", sorted(ROOT.rglob("*.pxd")), ids=lambda p: p.name)
def test_augmenting_pxd_matches_its_py(pxd: Path) -> None:
    # A .pxd turns the class into an extension type: a field it does not list
    # would fail at run time (no __dict__) in the compiled build only, so the
    # fields must be exactly the class's __slots__, and every declared method
    # must exist.  Checked on the source, in every build.
    source = pxd.with_suffix(".py")
    tree = ast.parse(source.read_text(), str(source))
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    for name, (fields, methods) in _pxd_classes(pxd).items():
        assert name in classes, f"{pxd.name} declares {name}, which {source.name} lacks"
        body = classes[name].body
        slots: set[str] = set()
        for stmt in body:
            if isinstance(stmt, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__slots__" for t in stmt.targets
            ):
                slots = {ast.literal_eval(e) for e in stmt.value.elts}  # type: ignore[attr-defined]
        assert slots, f"{source.name}: {name} has no __slots__ to check {pxd.name} against"
        assert fields == slots, (
            f"{pxd.name} and {source.name} disagree on {name}'s fields: "
            f"only in .pxd {sorted(fields - slots)}, only in __slots__ {sorted(slots - fields)}"
        )
        defined = {s.name for s in body if isinstance(s, ast.FunctionDef)}
        assert methods <= defined, (
            f"{pxd.name} declares missing methods {sorted(methods - defined)}"
        )


@pytest.mark.parametrize("pxd", sorted(ROOT.rglob("*.pxd")), ids=lambda p: p.name)
def test_augmenting_pxd_cimports_only_compiled_modules(pxd: Path) -> None:
    # fd.pxd cimports FDMutex and PollDesc: the types exist in C only where
    # their modules are compiled too, so a .pxd (and the module it augments)
    # may cimport only modules of COMPILED_MODULES.
    own = ".".join(pxd.relative_to(ROOT.parent).with_suffix("").parts)
    assert own in _build.COMPILED_MODULES, f"{pxd.name} augments {own}, which is not compiled"
    for raw in pxd.read_text().splitlines():
        words = raw.split("#", 1)[0].split()
        if words[:1] == ["from"] and "cimport" in words:
            assert words[1] in _build.COMPILED_MODULES, f"{pxd.name} cimports from {words[1]}"
