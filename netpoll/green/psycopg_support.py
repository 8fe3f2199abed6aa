"""psycopg 3 on goroutines: its waits park on the connection's pollDesc.

psycopg does no socket I/O in Python: libpq (C) reads and writes its own
non-blocking socket, and psycopg waits for readiness between libpq calls in
one of the functions of ``psycopg.waiting``.  Which one is decided when that
module is imported: ``wait_c`` (C, ``poll(2)``, blocking the calling
thread: the whole M) unless ``gevent.monkey`` has patched ``select``
(``_is_select_patched``, the only green library psycopg knows), or the
``PSYCOPG_WAIT_FUNC`` environment variable names another.  Patching
``select`` or ``socket`` therefore changes nothing for psycopg.

What psycopg does support: its connection code looks ``waiting.wait`` and
``waiting.wait_conn`` up in the module at every call, and the pure-Python
waits ``wait_selector`` and ``wait_conn`` build their selector from
``waiting.DefaultSelector``, a module global.  :func:`install` sets
``waiting.DefaultSelector`` to :class:`PollDescSelector` and ``waiting.wait``
to ``waiting.wait_selector``, so psycopg keeps its own logic (its
``interval`` re-checks, ``connect_timeout``, the closed-socket check) and
only the waiting parks: a goroutine on the fd's pollDesc while its M runs
other goroutines, a plain thread in the kernel as before.  It works whenever
it is called, before or after connections exist; :func:`uninstall` undoes it.

What this cannot give psycopg: netpoll's syscall hooks never see libpq's
``connect``/``recv``/``send``, so :class:`netpoll.testing.Faults` rules on
those kinds do not reach psycopg's traffic, only its waits (the poller).

Tested with psycopg 3.1-3.3 semantics (``psycopg/waiting.py``).  Mirrors the
role of gevent's ``select`` patch for psycopg, without a global patch.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.util
import select as _select
import selectors
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from netpoll.core.errors import DeadlineExceededError
from netpoll.core.fd import FD
from netpoll.core.hookspecs import MODE_R, MODE_W
from netpoll.core.sched import sleep as _sleep

__all__ = ["PollDescSelector", "install", "install_when_imported", "installed", "uninstall"]

# Captured at import: a zero-timeout poll(2) for "is it ready now".  (A
# globally patched ``select.poll`` would also never park with timeout 0.)
_poll = getattr(_select, "poll", None)
_EVENT_READ = selectors.EVENT_READ
_EVENT_WRITE = selectors.EVENT_WRITE
#: While waiting for read *or* write (libpq flushing while it may also need
#: to read), the wait parks for write and re-checks both at least this often.
RW_RECHECK = 0.01


class _Borrowed:
    """A descriptor the FD uses but does not own: libpq closes it, not us."""

    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        """The descriptor."""
        return self._fd

    def setblocking(self, flag: bool) -> None:
        """Leave the mode alone: libpq set it (non-blocking) and owns it."""

    def close(self) -> None:
        """Nothing: closing the FD only unregisters it from the poller."""


def _ready_now(fd: int, events: int) -> int:
    """The subset of ``events`` ``fd`` is ready for, without waiting.

    An error or hangup counts as ready for every requested event, so that
    libpq makes the call that reports it.
    """
    if _poll is not None:
        p = _poll()
        mask = (_select.POLLIN if events & _EVENT_READ else 0) | (
            _select.POLLOUT if events & _EVENT_WRITE else 0
        )
        p.register(fd, mask)
        got = 0
        for _fd, ev in p.poll(0):
            got |= ev
        out = 0
        if got & (_select.POLLIN | _select.POLLERR | _select.POLLHUP):
            out |= _EVENT_READ
        if got & (_select.POLLOUT | _select.POLLERR | _select.POLLHUP):
            out |= _EVENT_WRITE
        return out & events
    r, w, x = _select.select(
        [fd] if events & _EVENT_READ else [], [fd] if events & _EVENT_WRITE else [], [fd], 0
    )
    out = (_EVENT_READ if r or x else 0) | (_EVENT_WRITE if w or x else 0)
    return out & events


def _park(fd: FD, mode: int, wait: float | None, ready: Callable[[int], bool]) -> bool:
    """Go's ``RawRead``/``RawWrite`` with a deadline: True once ``ready(fd)``, False at ``wait``."""
    setter = fd.set_read_deadline if mode == MODE_R else fd.set_write_deadline
    setter(None if wait is None else time.time() + wait)
    try:
        fd.raw_io(mode, ready)
    except DeadlineExceededError:
        return False
    finally:
        setter(None)
    return True


class PollDescSelector(selectors.BaseSelector):
    """A selector whose ``select`` parks on each fd's pollDesc (psycopg's single fd).

    Meant for psycopg's waits, which register one descriptor; with several,
    ``select`` parks on the first and re-checks the others when it wakes.
    Registering opens a pollDesc for the fd (without taking ownership: the
    fd is never closed here); unregistering or closing releases it.
    """

    def __init__(self) -> None:
        self._keys: dict[int, selectors.SelectorKey] = {}
        self._fds: dict[int, FD] = {}
        self._map = _KeyMap(self._keys)

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        """Watch ``fileobj`` (an fd or an object with ``fileno()``) for ``events``."""
        if not events or events & ~(_EVENT_READ | _EVENT_WRITE):
            raise ValueError(f"netpoll: invalid events {events!r}")
        fd = _fileno(fileobj)
        if fd in self._keys:
            raise KeyError(f"{fileobj!r} (fd {fd}) is already registered")
        key = selectors.SelectorKey(fileobj, fd, events, data)
        self._fds[fd] = FD(_Borrowed(fd))
        self._keys[fd] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        """Stop watching ``fileobj``; its pollDesc is released (the fd stays open)."""
        fd = _fileno(fileobj)
        try:
            key = self._keys.pop(fd)
        except KeyError:
            raise KeyError(f"{fileobj!r} is not registered") from None
        self._fds.pop(fd).close()
        return key

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        """Change the events (and data) watched for ``fileobj``, keeping its pollDesc."""
        fd = _fileno(fileobj)
        if fd not in self._keys:
            raise KeyError(f"{fileobj!r} is not registered")
        if not events or events & ~(_EVENT_READ | _EVENT_WRITE):
            raise ValueError(f"netpoll: invalid events {events!r}")
        key = self._keys[fd]._replace(events=events, data=data)
        self._keys[fd] = key
        return key

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        """Keys ready now, or park until the first is ready or ``timeout`` passes.

        Go's ``RawRead`` shape: after the pollDesc is prepared, a readiness
        check (``poll`` with timeout 0) runs first, and only a "not ready"
        parks; readiness that arrives in between is not lost.
        """
        if not self._keys:
            if timeout is not None and timeout > 0:
                _sleep(timeout)
            return []
        ready = self._ready()
        if ready or (timeout is not None and timeout <= 0):
            return ready
        deadline = None if timeout is None else time.monotonic() + timeout
        fd, key = next(iter(self._keys.items()))
        mode = MODE_R if key.events == _EVENT_READ else MODE_W
        events = key.events
        while True:
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                return []
            if events == _EVENT_READ | _EVENT_WRITE:
                wait = RW_RECHECK if wait is None else min(wait, RW_RECHECK)
            if _park(self._fds[fd], mode, wait, lambda sysfd: _ready_now(sysfd, events) != 0):
                ready = self._ready()
                if ready:
                    return ready

    def _ready(self) -> list[tuple[selectors.SelectorKey, int]]:
        out = []
        for fd, key in self._keys.items():
            got = _ready_now(fd, key.events)
            if got:
                out.append((key, got))
        return out

    def close(self) -> None:
        """Release every pollDesc (the fds stay open: their owner closes them)."""
        fds, self._fds = self._fds, {}
        self._keys.clear()
        for f in fds.values():
            f.close()

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        """The registered keys by fd."""
        return self._map


class _KeyMap(Mapping[Any, selectors.SelectorKey]):
    def __init__(self, keys: dict[int, selectors.SelectorKey]) -> None:
        self._keys = keys

    def __len__(self) -> int:
        return len(self._keys)

    def __getitem__(self, fileobj: Any) -> selectors.SelectorKey:
        return self._keys[_fileno(fileobj)]

    def __iter__(self) -> Any:
        return iter(self._keys)


def _fileno(fileobj: Any) -> int:
    fd = fileobj if isinstance(fileobj, int) else int(fileobj.fileno())
    if fd < 0:
        raise ValueError(f"netpoll: invalid file descriptor {fd}")
    return fd


_saved: dict[str, Any] = {}


def installed() -> bool:
    """True while :func:`install` is in effect."""
    return bool(_saved)


def install() -> None:
    """Make psycopg's waits park on the connection's pollDesc (idempotent).

    Raises :class:`ImportError` if psycopg 3 is not installed, and
    :class:`RuntimeError` if its ``psycopg.waiting`` lacks what this relies on
    (``wait_selector``, ``DefaultSelector``): a psycopg this was not written for.
    """
    # By name: psycopg is optional, and mypy must not need it installed.
    waiting: Any = importlib.import_module("psycopg.waiting")
    if _saved:
        return
    if not hasattr(waiting, "wait_selector") or not hasattr(waiting, "DefaultSelector"):
        raise RuntimeError(
            "netpoll: psycopg.waiting has no wait_selector/DefaultSelector "
            f"(psycopg {getattr(sys.modules.get('psycopg'), '__version__', '?')}); "
            "cannot make its waits park"
        )
    _saved["DefaultSelector"] = waiting.DefaultSelector
    _saved["wait"] = waiting.wait
    waiting.DefaultSelector = PollDescSelector
    waiting.wait = waiting.wait_selector


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs :func:`install` right after ``psycopg.waiting`` is first executed."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        """Find ``psycopg.waiting`` through the other finders and wrap its loader."""
        if fullname != "psycopg.waiting":
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _InstallAfter(spec.loader)
                return spec
        return None


class _InstallAfter(importlib.abc.Loader):
    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def create_module(self, spec: Any) -> Any:
        """The wrapped loader's module object (None: Python's default)."""
        create = getattr(self._inner, "create_module", None)
        return create(spec) if create is not None else None

    def exec_module(self, module: Any) -> None:
        """Run the module, then install the wait hook into psycopg."""
        self._inner.exec_module(module)
        # install() imports psycopg.waiting by name: it is in sys.modules now.
        install()
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(_after_import)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


_after_import = _AfterImport()


def install_when_imported() -> None:
    """:func:`install` now if psycopg is imported, else as soon as it is (idempotent).

    For :func:`netpoll.patch.all`, which runs before the libraries are
    imported: psycopg picks its wait function when ``psycopg.waiting`` is
    first executed, so the rebinding must follow that import.
    """
    if "psycopg.waiting" in sys.modules:
        install()
        return
    if importlib.util.find_spec("psycopg") is None:
        return  # not installed: nothing to do, now or later
    if _after_import not in sys.meta_path:
        sys.meta_path.insert(0, _after_import)


def uninstall() -> None:
    """Put psycopg's original wait function and selector back."""
    if not _saved:
        return
    waiting: Any = importlib.import_module("psycopg.waiting")

    waiting.DefaultSelector = _saved.pop("DefaultSelector")
    waiting.wait = _saved.pop("wait")
