"""Make existing libraries run on netpoll: patch the whole process or one library.

gevent's counterpart is ``gevent/monkey.py`` (global patching); eventlet's
is ``eventlet/patcher.py`` (``import_patched``).  The green modules are in
:mod:`netpoll.green`; what they change is said there.

Two ways, with fixed names:

:func:`all`
    Like ``gevent.monkey.patch_all()``: the attributes of the stdlib modules
    ``socket``, ``ssl``, ``select``, ``selectors``, ``time``, ``threading``
    and ``queue`` are replaced by the green ones, for every module of the
    process.  Idempotent; :func:`is_patched` says what is patched.  It warns
    (:class:`PatchWarning`) where it is too late to matter: a module that
    did ``from socket import socket`` (or ``from threading import Lock``...)
    before the call keeps the stdlib object, sockets made before stay stdlib
    sockets, and threads started before may hold stdlib locks.  ``ssl``
    imported first (gevent's classic trap) does no harm here: netpoll
    changes ``ssl.SSLContext.sslsocket_class`` on the class, so contexts
    made before the call also wrap into green sockets.  netpoll's own
    modules keep the stdlib objects (they are rebound to unpatched copies of
    the modules), as gevent's internals keep theirs.
:func:`library`
    One installed package and its submodules use the green modules, and the
    rest of the process does not change.  Modules already imported get their
    module-global references rebound: a global that *is* one of the seven
    stdlib modules becomes the green module, and one that is a patched
    stdlib object (``from socket import create_connection``) becomes the
    green object.  Modules imported later (an import hook on
    ``sys.meta_path``) also get their own ``__import__``, so ``import
    socket`` at module level or inside a function gives them the green
    module from the start.

Trade-offs, compared:

* eventlet's ``import_patched`` re-imports a module with green modules in
  ``sys.modules``: imports the library makes at run time are missed, and the
  library's classes exist twice (the patched copy's exceptions are not the
  ones the rest of the program catches).  :func:`library` keeps one copy of
  every module and class and follows run-time imports of modules loaded
  after the call.
* gevent's global patch depends on import order (``ssl`` or a ``from socket
  import ...`` before ``patch_all`` keeps the blocking object) and changes
  every library at once.  :func:`all` has the same order rule, and says
  which modules were too early; for ``ssl`` it changes ``SSLContext``'s
  socket class instead of replacing the class, so contexts made before the
  call work too.
* :func:`library`'s limits: objects a module made *before* the call (a
  module-level ``threading.Lock()``) stay stdlib ones (reported by a
  :class:`PatchWarning`); an object the library receives from the rest of
  the process (a stdlib socket, or an ``ssl.SSLContext`` made outside it,
  whose ``wrap_socket`` makes a stdlib ``SSLSocket``) is not green; a
  function imported before the call that does ``import socket`` inside its
  body gets the stdlib module (Python 3.11+ keeps a function's builtins from
  its creation).  ``isinstance(x, socket.socket)`` inside the library checks
  the green class, which a stdlib socket made elsewhere does not pass.

Neither patches ``subprocess``, ``os.read``/``os.write`` on pipes, or
``signal``: ``Popen.wait`` is a blocking ``waitpid``, so ``subprocess.run``
and ``Popen.wait`` in a goroutine block its M (wrap them in
:func:`netpoll.blocking`; after :func:`all`, ``communicate`` itself waits
through the green selectors); a pipe read with ``os.read`` blocks too
(wrap it in :func:`netpoll.blocking`); signal handlers run in the main
thread between bytecodes as always (an M blocked in its poller wakes with
``EINTR`` and runs them).  ``threading.Thread`` and ``queue.SimpleQueue``
stay the stdlib's, and ``threading.local`` becomes per-goroutine (see
:mod:`netpoll.green.threading` and :mod:`netpoll.green.queue`).
"""

from __future__ import annotations

import builtins
import gc
import importlib
import importlib.abc
import importlib.machinery
import sys
import threading
import types
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from netpoll.green import GREEN_MODULES
from netpoll.green import queue as _gqueue
from netpoll.green import select as _gselect
from netpoll.green import selectors as _gselectors
from netpoll.green import socket as _gsocket
from netpoll.green import ssl as _gssl
from netpoll.green import threading as _gthreading
from netpoll.green import time as _gtime

__all__ = ["PatchWarning", "all", "is_patched", "library", "patched_libraries"]


class PatchWarning(RuntimeWarning):
    """Patching came too late for something, or could not reach it."""


#: stdlib module name -> its green module.
_GREEN: dict[str, types.ModuleType] = {
    "socket": _gsocket,
    "ssl": _gssl,
    "select": _gselect,
    "selectors": _gselectors,
    "time": _gtime,
    "threading": _gthreading,
    "queue": _gqueue,
}
assert tuple(_GREEN) == GREEN_MODULES

_lock = threading.RLock()
#: What :func:`all` changed: module name -> {attribute: original value}.
_saved: dict[str, dict[str, Any]] = {}
#: Unpatched copies of the stdlib modules, for netpoll's own modules.
_shadows: dict[str, types.ModuleType] = {}
#: Packages patched by :func:`library`.
_libraries: set[str] = set()


def _std(name: str) -> types.ModuleType:
    return importlib.import_module(name)


def _replacements(name: str) -> dict[str, Any]:
    """The attributes :func:`all` sets on stdlib module ``name``."""
    green = _GREEN[name]
    names: Sequence[str] = green.GREEN_NAMES
    if name == "ssl":
        # SSLContext keeps its class (contexts made earlier, isinstance);
        # its sslsocket_class is set on the class instead, see all().
        # ssl.SSLSocket stays the stdlib class: SSLSocket._create calls
        # super(SSLSocket, self).__init__ with the module's global, and
        # with the green class there it lands in the stdlib SSLSocket's
        # __init__, which refuses ("no public constructor").
        return {}
    return {n: getattr(green, n) for n in names if hasattr(green, n)}


def _identity_map() -> dict[int, Any]:
    """id(stdlib object) -> green object, for every name a green module replaces."""
    out: dict[int, Any] = {}
    for name, green in _GREEN.items():
        std = _saved_or_current(name)
        for attr in green.GREEN_NAMES:
            if attr in std and hasattr(green, attr):
                orig = std[attr]
                if orig is not getattr(green, attr) and not isinstance(orig, (int, str)):
                    out[id(orig)] = getattr(green, attr)
    return out


def _saved_or_current(name: str) -> dict[str, Any]:
    """The stdlib module's namespace as it was before :func:`all` (if it ran)."""
    ns = dict(vars(_std(name)))
    ns.update(_saved.get(name, {}))
    return ns


# --------------------------------------------------------------------------
# Global patching
# --------------------------------------------------------------------------


def is_patched(name: str) -> bool:
    """True if :func:`all` patched the stdlib module ``name`` (e.g. ``"socket"``).

    Raises :class:`ValueError` for a name netpoll has no green module for.
    """
    if name not in _GREEN:
        raise ValueError(
            f"netpoll.patch: no green module for {name!r} (known: {', '.join(_GREEN)})"
        )
    return name in _saved


def all() -> None:
    """Patch the stdlib modules for the whole process (see the module doc).

    Call it as early as possible: first thing in the main module, before the
    libraries are imported.  A second call does nothing.
    """
    with _lock:
        if len(_saved) == len(_GREEN):
            return
        late = _late_imports()
        sockets = _live_stdlib_sockets()
        threads = [
            t.name
            for t in threading.enumerate()
            if t is not threading.main_thread() and not t.name.startswith("netpoll-")
        ]
        for name in _GREEN:
            std = _std(name)
            if name not in _shadows:
                shadow = types.ModuleType(name, std.__doc__)
                shadow.__dict__.update(vars(std))
                _shadows[name] = shadow
        _protect_netpoll()
        for name in _GREEN:
            if name in _saved:
                continue
            std = _std(name)
            saved: dict[str, Any] = {}
            for attr, value in _replacements(name).items():
                saved[attr] = getattr(std, attr, _MISSING)
                setattr(std, attr, value)
            if name == "select":
                for attr in _gselect.REMOVED_NAMES:
                    saved[attr] = getattr(std, attr)
                    delattr(std, attr)
            if name == "ssl":
                saved["SSLContext.sslsocket_class"] = std.SSLContext.sslsocket_class
                std.SSLContext.sslsocket_class = _gssl.SSLSocket
            _saved[name] = saved
        _install_finder()
        # psycopg waits in a function it picks at import (C poll() unless
        # gevent patched select): it needs its own hook, after its import.
        from netpoll.green import psycopg_support

        psycopg_support.install_when_imported()
    if late:
        warnings.warn(
            "netpoll.patch.all() ran after these modules imported stdlib objects by name, "
            "which keep the blocking versions: "
            + "; ".join(
                f"{mod}: {', '.join(sorted(names))}" for mod, names in sorted(late.items())
            ),
            PatchWarning,
            stacklevel=2,
        )
    if sockets:
        warnings.warn(
            f"netpoll.patch.all() ran after {sockets} stdlib socket(s) were made; "
            "they stay blocking (patch before creating sockets)",
            PatchWarning,
            stacklevel=2,
        )
    if threads:
        warnings.warn(
            f"netpoll.patch.all() ran after {len(threads)} thread(s) started "
            f"({', '.join(sorted(threads)[:5])}): the locks, queues and sockets made "
            "before the call are the stdlib's, and a goroutine waiting on one blocks its M",
            PatchWarning,
            stacklevel=2,
        )


_MISSING = object()


def _is_netpoll(modname: str) -> bool:
    return modname == "netpoll" or modname.startswith("netpoll.")


def _late_imports() -> dict[str, set[str]]:
    """Modules (not stdlib, not netpoll) holding stdlib objects that :func:`all` replaces."""
    wanted = {id(v): f"{name}.{attr}" for name in _GREEN for attr, v in _orig_replaced(name)}
    stdlib = set(sys.stdlib_module_names)
    out: dict[str, set[str]] = {}
    for modname, mod in list(sys.modules.items()):
        if mod is None or _is_netpoll(modname) or modname.split(".")[0] in stdlib:
            continue
        if modname.split(".")[0] in ("_pytest", "pytest", "pluggy", "greenlet"):
            continue
        try:
            items = list(vars(mod).items())
        except TypeError:
            continue
        for _k, v in items:
            what = wanted.get(id(v))
            if what is not None:
                out.setdefault(modname, set()).add(what)
    return out


def _orig_replaced(name: str) -> list[tuple[str, Any]]:
    std = _std(name)
    out = []
    for attr in _replacements(name):
        v = getattr(std, attr, None)
        if v is not None and not isinstance(v, (int, str)):
            out.append((attr, v))
    return out


def _live_stdlib_sockets() -> int:
    """How many open sockets of the stdlib class exist (a gc walk, done once)."""
    import socket as std_socket

    cls = std_socket.socket
    count = 0
    for obj in gc.get_objects():
        if type(obj) is cls:
            try:
                if obj.fileno() >= 0:
                    count += 1
            except Exception:
                pass
    return count


def _protect_netpoll() -> None:
    """Rebind netpoll's own modules to unpatched copies of the stdlib modules.

    netpoll's core makes ``threading.Lock()`` objects and sockets as it
    runs; after :func:`all` it must still get the stdlib ones (a green lock
    inside the scheduler would park the scheduler).
    """
    for modname, mod in list(sys.modules.items()):
        if mod is not None and _is_netpoll(modname):
            _rebind_globals(mod, _shadows_by_id())


def _shadows_by_id() -> dict[int, Any]:
    return {id(_std(name)): shadow for name, shadow in _shadows.items()}


def _rebind_globals(mod: types.ModuleType, mapping: dict[int, Any]) -> list[str]:
    """Replace each global of ``mod`` found in ``mapping`` (by identity); the names."""
    changed = []
    ns = vars(mod)
    for key, value in list(ns.items()):
        if key.startswith("__"):
            continue
        new = mapping.get(id(value))
        if new is not None and new is not value:
            ns[key] = new
            changed.append(key)
    return changed


# --------------------------------------------------------------------------
# Per-library patching
# --------------------------------------------------------------------------


def patched_libraries() -> frozenset[str]:
    """The packages :func:`library` was called for."""
    return frozenset(_libraries)


def _in_library(modname: str) -> bool:
    return any(modname == p or modname.startswith(p + ".") for p in _libraries)


def _module_import(real: Callable[..., Any], table: dict[str, Any]) -> Callable[..., Any]:
    """An ``__import__`` that answers absolute imports of the seven modules from ``table``."""

    def __import__(
        name: str,
        globals: Any = None,
        locals: Any = None,
        fromlist: Any = (),
        level: int = 0,
    ) -> Any:
        if level == 0 and name in table:
            real(name, globals, locals, fromlist, level)  # the stdlib module stays imported
            return table[name]
        return real(name, globals, locals, fromlist, level)

    return __import__


_builtins_ns: dict[bool, dict[str, Any]] = {}


def _module_builtins(green: bool) -> dict[str, Any]:
    """The builtins of a patched library's module (green) or of netpoll's after all()."""
    ns = _builtins_ns.get(green)
    if ns is None:
        ns = dict(vars(builtins))
        ns["__import__"] = _module_import(builtins.__import__, _GREEN if green else _shadows)
        _builtins_ns[green] = ns
    return ns


def _library_mapping() -> dict[int, Any]:
    mapping = _identity_map()
    for name, green in _GREEN.items():
        mapping[id(_std(name))] = green
        shadow = _shadows.get(name)
        if shadow is not None:
            mapping[id(shadow)] = green
    return mapping


class _Loader(importlib.abc.Loader):
    """Wraps a module's loader: the module runs with the right ``__import__``."""

    def __init__(self, inner: Any, green: bool) -> None:
        self._inner = inner
        self._green = green

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        """The wrapped loader's module object (None: Python's default)."""
        create = getattr(self._inner, "create_module", None)
        return create(spec) if create is not None else None

    def exec_module(self, module: types.ModuleType) -> None:
        """Run the module with the right ``__import__``, then rebind its globals."""
        module.__dict__["__builtins__"] = _module_builtins(self._green)
        self._inner.exec_module(module)
        if self._green:
            _rebind_globals(module, _library_mapping())
        elif _shadows:
            _rebind_globals(module, _shadows_by_id())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _Finder(importlib.abc.MetaPathFinder):
    """On ``sys.meta_path``: netpoll's modules (after :func:`all`) and patched libraries."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        """The spec of ``fullname`` with its loader wrapped, if netpoll patches it; else None."""
        green = _in_library(fullname)
        if not green and not (_shadows and _is_netpoll(fullname)):
            return None
        for finder in sys.meta_path:
            if finder is self:
                continue
            find = getattr(finder, "find_spec", None)
            if find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _Loader(spec.loader, green)
                return spec  # type: ignore[no-any-return]
        return None


_finder = _Finder()


def _install_finder() -> None:
    if _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)


def library(name: str) -> types.ModuleType:
    """Make package ``name`` (and its submodules) use netpoll's green modules.

    Imports it if needed and returns it.  The rest of the process keeps the
    stdlib modules.  Calling it again for the same package does nothing new
    (submodules imported since are already patched by the import hook).
    Raises :class:`ModuleNotFoundError` if ``name`` is not installed and
    :class:`ValueError` for a stdlib module or netpoll itself.
    """
    if not isinstance(name, str) or not name or name.startswith("."):
        raise ValueError(f"netpoll.patch.library: expected an absolute module name, got {name!r}")
    top = name.split(".")[0]
    if top in _GREEN or top in ("_socket", "_ssl", "_thread", "builtins", "importlib", "sys"):
        raise ValueError(
            f"netpoll.patch.library: cannot patch {name!r} (a module netpoll builds on)"
        )
    if _is_netpoll(name):
        raise ValueError("netpoll.patch.library: netpoll needs no patching")
    with _lock:
        new = name not in _libraries
        _libraries.add(name)
        _install_finder()
        try:
            module = importlib.import_module(name)
        except BaseException:
            if new:
                _libraries.discard(name)
            raise
        mapping = _library_mapping()
        early: list[str] = []
        for modname, mod in list(sys.modules.items()):
            if mod is None or not (modname == name or modname.startswith(name + ".")):
                continue
            _rebind_globals(mod, mapping)
            early.extend(_stdlib_objects_made_early(modname, mod))
        if top == "psycopg":
            # Its waits are chosen at import, not through socket/select.
            from netpoll.green import psycopg_support

            psycopg_support.install()
    if early:
        warnings.warn(
            f"netpoll.patch.library({name!r}): these objects were made before the call "
            "and stay blocking: " + ", ".join(early),
            PatchWarning,
            stacklevel=2,
        )
    return module


def _stdlib_objects_made_early(modname: str, mod: types.ModuleType) -> list[str]:
    """Module-level stdlib locks and sockets of an already-imported module."""
    import _thread
    import socket as std_socket

    kinds: tuple[type, ...] = (
        _thread.LockType,
        type(_thread.RLock()),
        std_socket.socket,
    )
    out = []
    for key, value in vars(mod).items():
        if type(value) in kinds and not isinstance(value, _gsocket.socket):
            out.append(f"{modname}.{key}")
    return out
