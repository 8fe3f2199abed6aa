"""Which build of netpoll's hot modules is running: compiled (Cython) or pure Python.

The hot modules (:data:`COMPILED_MODULES`) are ordinary ``.py`` files. Where a C
compiler was found at install time, ``setup.py`` also compiled each one with
Cython into an extension module of the *same name* placed beside its source
(``netpoll/core/fd.py`` and ``netpoll/core/fd.cpython-312-x86_64-linux-gnu.so``);
Python's import system prefers the extension, so nothing else in the package
knows which build it got.  This plays the part of gevent's ``import_c_accel``
(``src/gevent/_util.py``), which swaps a pure module's globals for those of a
``gevent._gevent_c_*`` twin at the end of the module; keeping one module name
instead means module-level side effects (``atexit`` handlers, ``threading.local``
objects, pluggy registrations) run exactly once, and ``__module__``, pickling
and ``sys.modules`` keys are the same in both builds.

The pure modules are chosen instead, by :class:`_PureFinder` on ``sys.meta_path``:

* when ``NETPOLL_PURE_PYTHON`` is set to anything but ``""``/``0`` (as gevent's
  ``PURE_PYTHON``); read once, when ``netpoll`` is first imported;
* when a compiled module is *stale*: it was compiled from a source whose hash
  differs from the ``.py`` beside it (an editable install whose sources were
  edited since the last build).  The hashes are recorded at build time in
  ``_build_info.json``.

This module imports nothing from netpoll and is loaded by ``setup.py`` by path
(it is the one list of compiled modules), so it must stay dependency-free.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

#: The modules compiled where a C compiler exists.  The hot path of an echoed
#: message runs through all of them (see docs/performance.md, "Compiled core").
COMPILED_MODULES: tuple[str, ...] = (
    "netpoll.core.fdmutex",
    "netpoll.core.polldesc",
    "netpoll.core.fd",
    "netpoll.core.g",
    "netpoll.core.m",
    "netpoll.core.park",
    "netpoll.core.chan",
    "netpoll.backends.base",
)
# Not netpoll.backends.epoll (nor any module defining a pluggy hookimpl):
# pluggy registers only plain Python functions (types.FunctionType) as hook
# implementations, and a compiled module's functions are Cython functions, so
# a compiled backend module would silently provide no backend.
# tests/test_build.py checks that no compiled module defines a hookimpl.

#: The environment variable that forces the pure-Python modules (at import
#: time) and skips compiling them (at build time).
ENV_PURE = "NETPOLL_PURE_PYTHON"

#: Written by setup.py beside this file: what the build did and why.
INFO_FILE = "_build_info.json"


def pure_requested(environ: Any = None) -> bool:
    """True when ``NETPOLL_PURE_PYTHON`` asks for pure modules (all, or some: see below)."""
    value = (os.environ if environ is None else environ).get(ENV_PURE, "")
    return value.strip() not in ("", "0")


def pure_modules(environ: Any = None) -> frozenset[str]:
    """The hot modules ``NETPOLL_PURE_PYTHON`` forces pure.

    ``1`` (or any value that names no module) means all of them; a comma list
    of module names (``sched,chan`` or ``netpoll.core.sched``) only those, for
    measuring what compiling each module is worth.
    """
    if not pure_requested(environ):
        return frozenset()
    value = (os.environ if environ is None else environ).get(ENV_PURE, "")
    words = {w.strip() for w in value.split(",") if w.strip()}
    named = frozenset(m for m in COMPILED_MODULES if m in words or m.rpartition(".")[2] in words)
    return named or frozenset(COMPILED_MODULES)


def source_hash(path: str) -> str:
    """The hash setup.py records for a compiled module's source (sha256, 16 hex digits)."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def _read_info() -> dict[str, Any]:
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), INFO_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class _CompiledLoader(importlib.machinery.ExtensionFileLoader):
    """Loads a compiled hot module; its source is the ``.py`` beside it.

    The plain extension loader has no source, so :mod:`linecache` (through
    the module's ``__loader__``) would show tracebacks through compiled frames
    without their source lines; with :meth:`get_source` they read as in pure
    Python.
    """

    def __init__(self, fullname: str, path: str, source: str) -> None:
        super().__init__(fullname, path)
        self.source = source

    def get_source(self, fullname: str) -> str | None:  # type: ignore[override]
        """The text of the ``.py`` this module was compiled from."""
        try:
            with open(self.source, encoding="utf-8") as f:
                return f.read()
        except OSError:
            return None


class _PureFinder:
    """The ``sys.meta_path`` finder that picks, per hot module, the compiled or the ``.py`` file.

    It answers only for :data:`COMPILED_MODULES`: the ``.py`` when the pure
    module was requested or the compiled one is stale, the extension module
    (with :class:`_CompiledLoader`) when one is beside the ``.py``, else
    ``None`` (the ordinary path finder loads the ``.py``).
    """

    def __init__(self, force_pure: frozenset[str], hashes: dict[str, str]) -> None:
        self.force_pure = force_pure
        self.hashes = hashes
        #: module name -> why its pure source was loaded although compiled exists.
        self.stale: dict[str, str] = {}

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        """The spec of ``fullname``'s ``.py`` source, or ``None`` to let the next finder decide."""
        if fullname not in COMPILED_MODULES or path is None:
            return None
        leaf = fullname.rpartition(".")[2]
        for entry in path:
            source = os.path.join(entry, leaf + ".py")
            if not os.path.isfile(source):
                continue
            if fullname not in self.force_pure and not self._is_stale(fullname, source):
                for suffix in importlib.machinery.EXTENSION_SUFFIXES:
                    compiled = os.path.join(entry, leaf + suffix)
                    if os.path.isfile(compiled):
                        loader = _CompiledLoader(fullname, compiled, source)
                        return importlib.util.spec_from_file_location(
                            fullname, compiled, loader=loader
                        )
            return importlib.util.spec_from_file_location(fullname, source)
        return None

    def _is_stale(self, fullname: str, source: str) -> bool:
        recorded = self.hashes.get(fullname)
        if recorded is None:
            return False  # not compiled by our setup.py (or no record): let import decide
        if source_hash(source) == recorded:
            return False
        self.stale[fullname] = "its .py changed since it was compiled"
        return True


_finder: _PureFinder | None = None


def install() -> None:
    """Put :class:`_PureFinder` first on ``sys.meta_path`` (once); netpoll's ``__init__`` calls it.

    Must run before any compiled module is imported, which is why the package's
    ``__init__`` imports this module first.
    """
    global _finder
    if _finder is not None:
        return
    info = _read_info()
    hashes = info.get("sources", {})
    _finder = _PureFinder(pure_modules(), hashes if isinstance(hashes, dict) else {})
    sys.meta_path.insert(0, _finder)


def _is_compiled(module: ModuleType) -> bool:
    spec = getattr(module, "__spec__", None)
    return spec is not None and isinstance(spec.loader, importlib.machinery.ExtensionFileLoader)


def build_info() -> dict[str, Any]:
    """Which build is running and why, as JSON-ready data (``netpoll info``, ``netpoll bench``).

    ``build`` is ``"compiled"`` (every hot module is an extension module),
    ``"pure"`` (none is) or ``"mixed"``; ``reason`` says why in a sentence;
    ``modules`` maps each hot module to ``"compiled"`` or ``"pure"``.
    """
    modules: dict[str, str] = {}
    for name in COMPILED_MODULES:
        module = importlib.import_module(name)
        modules[name] = "compiled" if _is_compiled(module) else "pure"
    compiled = [n for n, kind in modules.items() if kind == "compiled"]
    info = _read_info()
    stale = dict(_finder.stale) if _finder is not None else {}
    if len(compiled) == len(modules):
        build = "compiled"
        reason = f"compiled with Cython {info.get('cython', '?')} at install time"
    else:
        build = "pure" if not compiled else "mixed"
        if _finder is not None and _finder.force_pure:
            reason = f"{ENV_PURE}={os.environ.get(ENV_PURE, '')} forces the pure-Python modules"
        elif stale:
            reason = "compiled modules are stale (sources edited since the build): " + ", ".join(
                sorted(stale)
            )
        elif info.get("reason"):
            reason = str(info["reason"])
        else:
            reason = "no compiled modules beside the sources (a source checkout, never built)"
    return {
        "build": build,
        "reason": reason,
        "modules": modules,
        "python": sys.version.split()[0],
    }


def describe() -> str:
    """One line: ``compiled (…why…)`` or ``pure Python (…why…)``."""
    info = build_info()
    label = {"compiled": "compiled", "pure": "pure Python", "mixed": "mixed"}[info["build"]]
    return f"{label} ({info['reason']})"


# Importing this module installs the finder: netpoll/__init__.py imports it
# before anything else, so the choice is made before any hot module loads.
install()
