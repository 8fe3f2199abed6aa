"""The Switch: watch, count and fail netpoll's socket system calls (Go's socktest).

Go's own tests replace ``socketFunc``, ``connectFunc``, ``poll.AcceptFunc`` and
friends with the methods of a ``net/internal/socktest.Switch``
(``switch.go``: the filter table, the socket table and the per-cookie
statistics; ``sys_unix.go``: one wrapper per system call).  Here the same
thing is a pluggy plugin that anyone may use, not a test-only hack: the
syscalls are hooks (:mod:`netpoll.core.hookspecs`), and a :class:`Switch`
registers new-style ``wrapper=True`` implementations on the runtime's plugin
manager while it is installed::

    with Switch() as sw:
        sw.set("connect", lambda st: (_ for _ in ()).throw(ConnectionRefusedError(...)))
        ...
        print(sw.stats(), sw.sockets())

Filters
    ``sw.set(kind, filter)`` installs one filter per kind (``None`` removes
    it).  A filter is called with a :class:`Status` *before* the system call.
    Raising an :class:`OSError` cancels the call: the real syscall does not
    run and the caller sees that error.  Returning a callable (an *after
    filter*) lets the call run; the after filter then gets the same Status
    with ``result``/``error`` filled in and may replace the outcome: raise to
    fail the call, return a non-``None`` value to make it the result, or edit
    ``status.result``/``status.error`` in place (setting ``error = None``
    turns a failure into a success).  A before filter of a read/write kind
    may also set ``status.max_bytes`` to make the real call see only that
    much of the buffer: a short read or write.

No leaks by injection
    A socket (``socket``) or connection (``accept``) that the OS did create
    but whose success a filter replaced by an error is closed by the Switch,
    as Go's socktest does.  A *cancelled or failed close* is different from
    Go: Go's socktest returns the filter's error without closing, which
    leaks the fd.  Here the descriptor is closed for real anyway and the
    injected error is reported, which is also what Linux does (``close(2)``
    releases the fd even when it returns an error, and nobody may retry it).
    The fd leaves :meth:`Switch.sockets` and counts as ``close_failed``.

Statistics (:meth:`Switch.stats`)
    Per cookie (family, type, protocol) as Go's ``socktest.Stat``: opened,
    connected, listened, accepted, closed, and the failures of each.  They
    count what the *caller* saw, injected failures included.  Two
    differences from Go, both to make counts exact and deterministic: a
    non-blocking connect that is merely in progress (``EINPROGRESS``,
    ``EALREADY``, ``EINTR``) is not a failure; its outcome is counted when the
    ``SO_ERROR`` read through ``getsockopt_int`` reports it (0 or ``EISCONN``
    and a peer: connected; any other error: connect failed), once per
    connect.  And an accept that found nothing queued (``EAGAIN``) is not an
    accept failure.  Only sockets the Switch saw opened are counted (Go
    ignores the others too); filters, however, apply to every call.

Sockets (:meth:`Switch.sockets`)
    Every fd the Switch saw opened (``socket`` or ``accept``) and not yet
    closed, with the stack where it was opened: the leak report.

Cost
    The socket/connect/listen/accept/getsockopt/close wrappers are always
    registered while the Switch is installed: the statistics need them, and
    these calls are rare.  The hot-path hooks (``read``, ``write``,
    ``recvfrom``, ``sendto``) and the poller hooks (``netpollopen``,
    ``netpoll``) get a wrapper only while a filter for them is set, so
    reads and writes of a Switch without I/O filters still go straight to
    the OS through the syscall table.  Uninstalling leaves nothing behind.

Thread safety
    Filters run in the calling thread (several at once); the tables are
    guarded by one lock, never held while a filter or a syscall runs.  The
    lock is reentrant: the garbage collector may run a finalizer that closes
    a socket (``weakref.finalize`` in urllib3's pools does) on any
    allocation, including one made while the lock is held (registering a
    hook wrapper allocates), and that close passes through this Switch in
    the same thread.
"""

from __future__ import annotations

import errno
import socket as _socket
import threading
import traceback
from collections.abc import Callable, Generator
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

from netpoll.core import syscalls
from netpoll.core.hookspecs import hookimpl

__all__ = [
    "ALL_KINDS",
    "IO_KINDS",
    "POLLER_KINDS",
    "SOCKET_KINDS",
    "AfterFilter",
    "Cookie",
    "Filter",
    "SocketInfo",
    "Stat",
    "Status",
    "Switch",
]

#: Kinds whose wrappers are always installed (Go's socktest set).
SOCKET_KINDS = ("socket", "connect", "listen", "accept", "getsockopt", "close")
#: Hot-path kinds: wrapped only while a filter for them is set.
IO_KINDS = ("read", "write", "recvfrom", "sendto")
#: Poller kinds: wrapped only while a filter for them is set.
POLLER_KINDS = ("netpollopen", "netpoll", "netpollwait")
#: Every filter kind, in a stable order.
ALL_KINDS = SOCKET_KINDS + IO_KINDS + POLLER_KINDS

#: Filter kind -> hook name (``getsockopt`` is the ``getsockopt_int`` hook).
_HOOK_OF = {k: k for k in ALL_KINDS} | {"getsockopt": "getsockopt_int"}
#: Aliases accepted by :meth:`Switch.set`.
_ALIASES = {"getsockopt_int": "getsockopt", "socket_open": "socket"}

# Flags the kernel accepts in the type argument; not part of the cookie.
_TYPE_FLAGS = getattr(_socket, "SOCK_NONBLOCK", 0) | getattr(_socket, "SOCK_CLOEXEC", 0)
# An in-progress non-blocking connect (Go: connect returns EINPROGRESS).
_IN_PROGRESS = frozenset({errno.EINPROGRESS, errno.EALREADY, errno.EINTR})


class Cookie(NamedTuple):
    """What kind of socket: ``(family, type, proto)`` (Go's ``socktest.Cookie``)."""

    family: int
    type: int
    proto: int

    def __str__(self) -> str:
        family = _enum_name(_socket.AddressFamily, self.family)
        return f"({family}, {_type_name(self.type)}, {self.proto})"


def _enum_name(enum: Any, value: int) -> str:
    try:
        return str(enum(value).name)
    except ValueError:
        return str(value)


def _type_name(value: int) -> str:
    return _enum_name(_socket.SocketKind, value)


#: The cookie of a descriptor that is not a socket the Switch knows (a pipe).
NO_COOKIE = Cookie(0, 0, 0)


@dataclass
class Status:
    """One system call as a filter sees it (Go's ``socktest.Status``).

    ``kind`` is the filter kind ("connect", "read", ...), ``cookie`` the
    socket's (family, type, proto), ``fd`` its descriptor (-1 for ``socket``
    before the call and for ``netpoll``), ``args`` the call's arguments by
    name (``address``, ``backlog``, ``buf``, ``data``, ``level``/``option``,
    ``timeout``, ...; ``sock`` is the socket object).  After the call,
    ``result`` and ``error`` hold its outcome; for an ``SO_ERROR`` read,
    ``socket_error`` is the value read.  ``max_bytes`` (read/write kinds,
    set by a before filter) limits how much of the buffer the real call sees.
    """

    kind: str
    cookie: Cookie
    fd: int
    args: dict[str, Any]
    result: Any = None
    error: BaseException | None = None
    socket_error: int | None = None
    max_bytes: int | None = None

    @property
    def address(self) -> Any:
        """The ``address`` argument (connect, sendto), or None."""
        return self.args.get("address")

    def __repr__(self) -> str:
        extra = ""
        if self.error is not None:
            extra = f" error={self.error!r}"
        elif self.result is not None:
            extra = f" result={self.result!r}"
        return f"<Status {self.kind} fd={self.fd} cookie={self.cookie}{extra}>"


#: Called after the real call with its outcome in the Status.
AfterFilter = Callable[[Status], Any]
#: Called before the real call; raises to cancel it, or returns an after filter.
Filter = Callable[[Status], "AfterFilter | None"]


@dataclass
class Stat:
    """Counters for one cookie (Go's ``socktest.Stat``)."""

    family: int
    type: int
    proto: int
    opened: int = 0
    connected: int = 0
    listened: int = 0
    accepted: int = 0
    closed: int = 0
    open_failed: int = 0
    connect_failed: int = 0
    listen_failed: int = 0
    accept_failed: int = 0
    close_failed: int = 0

    @property
    def cookie(self) -> Cookie:
        """This stat's cookie."""
        return Cookie(self.family, self.type, self.proto)

    def __str__(self) -> str:
        return (
            f"{self.cookie} opened={self.opened} connected={self.connected} "
            f"listened={self.listened} accepted={self.accepted} closed={self.closed} "
            f"openfailed={self.open_failed} connectfailed={self.connect_failed} "
            f"listenfailed={self.listen_failed} acceptfailed={self.accept_failed} "
            f"closefailed={self.close_failed}"
        )


# Frames of these are never worth showing in "where it was opened".
_NOISE = (
    "/pluggy/",
    "/_pytest/",
    "/pytest/",
    "/netpoll/testing/",
    "/netpoll/core/",
    "/threading.py",
    "<frozen ",
)
# netpoll's own frames: shown only when nothing else is on the stack (a
# thread the package started, such as a dial racer).
_PACKAGE = "/netpoll/"


def _user_frames(stack: traceback.StackSummary) -> list[traceback.FrameSummary]:
    frames = [f for f in stack if not any(p in f.filename.replace("\\", "/") for p in _NOISE)]
    user = [f for f in frames if _PACKAGE not in f.filename.replace("\\", "/")]
    return user or frames


@dataclass
class SocketInfo:
    """An open socket the Switch saw created: fd, cookie, and where.

    ``how`` is "socket" or "accept"; ``stack`` the opening thread's stack
    (frames of pluggy and of this package left out); ``thread`` its name.
    """

    fd: int
    cookie: Cookie
    how: str
    thread: str
    stack: traceback.StackSummary = field(repr=False)
    #: A non-blocking connect is in progress (its outcome is not counted yet).
    connecting: bool = field(default=False, repr=False)

    def where(self, limit: int = 12) -> str:
        """The opening stack, innermost last, formatted like a traceback."""
        frames = _user_frames(self.stack)[-limit:]
        summary = traceback.StackSummary.from_list(frames)
        return "".join(summary.format())

    def describe(self) -> str:
        """One leak-report entry: what the socket is and where it was opened."""
        return (
            f"fd {self.fd} {self.cookie} opened by {self.how} in thread {self.thread!r} at:\n"
            + (self.where())
        )


def _capture_stack() -> traceback.StackSummary:
    # lookup_lines=False: reading source lines is the expensive part; it is
    # done when (if ever) the stack is formatted.
    frames = traceback.StackSummary.extract(traceback.walk_stack(None), lookup_lines=False)
    frames.reverse()
    return frames


def _fileno(sock: Any) -> int:
    try:
        return int(sock.fileno())
    except (OSError, ValueError, AttributeError):
        return -1


def _sock_cookie(sock: Any) -> Cookie:
    """A cookie read from a socket object (for sockets opened before the Switch)."""
    try:
        return Cookie(int(sock.family), int(sock.type) & ~_TYPE_FLAGS, int(sock.proto))
    except (AttributeError, OSError, ValueError):
        return NO_COOKIE


class Switch:
    """Go's ``socktest.Switch`` as a netpoll plugin; see the module docstring.

    ``pm`` is the plugin manager to install on (default: the runtime's).
    Use it as a context manager, or call :meth:`install`/:meth:`uninstall`.
    """

    def __init__(self, pm: Any = None) -> None:
        if pm is None:
            from netpoll.core.runtime import runtime

            pm = runtime.pm
        self._pm = pm
        # Reentrant: see "Thread safety" in the module docstring.
        self._lock = threading.RLock()
        # kind -> {owner: filter}; owner None is sw.set()'s slot, others are
        # layers such as a Faults object (so both can filter one kind).
        self._filters: dict[str, dict[object, Filter]] = {}
        # kind -> the layers' filters in order, rebuilt on every change, read
        # without the lock on the call path (a tuple swap is atomic).
        self._chain: dict[str, tuple[Filter, ...]] = {}
        self._sotab: dict[int, SocketInfo] = {}
        self._stats: dict[Cookie, Stat] = {}
        self._installed = False
        self._core = _CoreHooks(self)
        self._ondemand: dict[str, object] = {}
        self._registered: set[str] = set()
        self._tls = threading.local()

    # -- installation ---------------------------------------------------------

    @property
    def installed(self) -> bool:
        """True while the Switch's plugins are registered."""
        return self._installed

    def install(self) -> Switch:
        """Register on the plugin manager (the syscall table is rebuilt)."""
        with self._lock:
            if self._installed:
                raise RuntimeError("netpoll: this Switch is already installed")
            self._pm.register(self._core, name=f"netpoll.testing.switch-{id(self):x}")
            self._installed = True
            for kind in self._chain:
                self._sync_ondemand_locked(kind)
        return self

    def uninstall(self) -> None:
        """Unregister every plugin of this Switch; calls go straight to the OS again."""
        with self._lock:
            if not self._installed:
                return
            self._installed = False
            for kind in list(self._registered):
                self._pm.unregister(self._ondemand[kind])
            self._registered.clear()
            self._pm.unregister(self._core)

    def __enter__(self) -> Switch:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.uninstall()

    # -- filters ----------------------------------------------------------------

    @staticmethod
    def kind_name(kind: str) -> str:
        """The canonical filter kind for ``kind`` (raises ValueError if unknown)."""
        kind = _ALIASES.get(kind, kind)
        if kind not in _HOOK_OF:
            raise ValueError(
                f"netpoll: unknown filter kind {kind!r}; kinds: {', '.join(ALL_KINDS)}"
            )
        return kind

    def set(self, kind: str, filter: Filter | None) -> None:
        """Install ``filter`` for ``kind`` (Go's ``Switch.Set``); ``None`` removes it."""
        self.set_layer(None, kind, filter)

    def get(self, kind: str) -> Filter | None:
        """The filter :meth:`set` installed for ``kind``, or None."""
        return self._filters.get(self.kind_name(kind), {}).get(None)

    def set_layer(self, owner: object, kind: str, filter: Filter | None) -> None:
        """Install ``filter`` for ``kind`` in the layer of ``owner``.

        Layers let helpers (:class:`~netpoll.testing.faults.Faults`) filter
        a kind without taking :meth:`set`'s slot.  All layers' before filters
        run in the order the layers were first used; the after filters they
        return run in the same order after the call.
        """
        kind = self.kind_name(kind)
        with self._lock:
            layers = self._filters.setdefault(kind, {})
            if filter is None:
                layers.pop(owner, None)
            else:
                layers[owner] = filter
            chain = tuple(layers.values())
            if chain:
                self._chain[kind] = chain
            else:
                self._chain.pop(kind, None)
                del self._filters[kind]
            if self._installed:
                self._sync_ondemand_locked(kind)

    def clear(self) -> None:
        """Remove every filter (all layers)."""
        with self._lock:
            kinds = list(self._chain)
            self._filters.clear()
            self._chain.clear()
            if self._installed:
                for kind in kinds:
                    self._sync_ondemand_locked(kind)

    def _sync_ondemand_locked(self, kind: str) -> None:
        """Register the wrapper of an I/O or poller kind iff it has filters."""
        if kind in SOCKET_KINDS:
            return
        want = kind in self._chain
        if want and kind not in self._registered:
            plugin = self._ondemand.get(kind)
            if plugin is None:
                plugin = _ONDEMAND_CLASSES[kind](self)
                self._ondemand[kind] = plugin
            self._pm.register(plugin, name=f"netpoll.testing.switch-{id(self):x}-{kind}")
            self._registered.add(kind)
        elif not want and kind in self._registered:
            self._pm.unregister(self._ondemand[kind])
            self._registered.discard(kind)

    def wrapped_kinds(self) -> list[str]:
        """The kinds this Switch currently has a wrapper registered for."""
        with self._lock:
            if not self._installed:
                return []
            return [k for k in ALL_KINDS if k in SOCKET_KINDS or k in self._registered]

    # -- tables -----------------------------------------------------------------

    def stats(self) -> dict[Cookie, Stat]:
        """A snapshot of the counters, per cookie (Go's ``Switch.Stats``)."""
        with self._lock:
            return {c: replace(s) for c, s in self._stats.items()}

    def stat(self, family: int, type: int, proto: int = 0) -> Stat:
        """A snapshot of one cookie's counters (zeros if never seen).

        The cookie is what ``socket`` was called with; the net layer passes
        ``proto`` 0, so ``sw.stat(AF_INET, SOCK_STREAM)`` is TCP over IPv4.
        """
        c = Cookie(family, type, proto)
        with self._lock:
            s = self._stats.get(c)
            return replace(s) if s is not None else Stat(family, type, proto)

    def sockets(self) -> dict[int, SocketInfo]:
        """Open sockets the Switch saw created, by fd (Go's ``Switch.Sockets``).

        Sockets opened before :meth:`install` are not in it (nor counted in
        :meth:`stats`): a leak check built on it covers what was opened while
        the Switch was installed.  The pytest ``netpoll_switch`` fixture is
        therefore set up before a test's other function-scoped fixtures.
        """
        with self._lock:
            return dict(self._sotab)

    def leak_report(self) -> str:
        """A readable list of :meth:`sockets` ("" when none are open)."""
        socks = self.sockets()
        if not socks:
            return ""
        lines = [f"{len(socks)} socket(s) left open:"]
        for info in sorted(socks.values(), key=lambda i: i.fd):
            lines.append("  " + info.describe().replace("\n", "\n  ").rstrip())
        return "\n".join(lines)

    def reset_stats(self) -> None:
        """Zero every counter (the socket table is kept)."""
        with self._lock:
            self._stats.clear()

    def _stat_locked(self, cookie: Cookie) -> Stat:
        s = self._stats.get(cookie)
        if s is None:
            s = self._stats[cookie] = Stat(*cookie)
        return s

    def cookie_of(self, fd: int, sock: Any = None) -> Cookie:
        """The cookie of a known fd, else read from ``sock``, else zeros."""
        info = self._sotab.get(fd)
        if info is not None:
            return info.cookie
        return _sock_cookie(sock) if sock is not None else NO_COOKIE

    # -- the call path ------------------------------------------------------------

    def _before(self, st: Status) -> list[AfterFilter]:
        """Run the before filters; raises to cancel; returns the after filters."""
        afters: list[AfterFilter] = []
        for f in self._chain.get(st.kind, ()):
            after = f(st)
            if after is not None:
                afters.append(after)
        return afters

    @staticmethod
    def _after(st: Status, afters: list[AfterFilter]) -> None:
        """Run the after filters; each may replace the outcome in ``st``."""
        for after in afters:
            try:
                value = after(st)
            except BaseException as exc:
                st.error = exc
                st.result = None
                continue
            if value is not None:
                st.result = value
                st.error = None

    def _call(self, st: Status) -> Generator[None, Any, tuple[Any, BaseException | None]]:
        """Filters around the real call (the ``yield``); outcome left in ``st``.

        A before filter's exception propagates from here: the call is
        cancelled.  Otherwise the outcome, as replaced by the after filters,
        is in ``st.result``/``st.error``, and the real call's own outcome is
        returned, so that a created socket a filter hid can be closed.
        """
        afters = self._before(st)
        views = self._set_short(st) if st.max_bytes is not None else None
        try:
            st.result = yield
        except BaseException as exc:
            st.error = exc
        finally:
            if views is not None:
                # Release the views at once: the caller may resize its buffer
                # (FD.read trims a bytearray), which exported views forbid.
                self._tls.__dict__.pop(st.kind, None)
                for v in reversed(views):
                    v.release()
        real = st.result, st.error
        if afters:
            self._after(st, afters)
        return real

    def _set_short(self, st: Status) -> list[memoryview] | None:
        """Arrange for the real call to see only ``st.max_bytes`` of the buffer."""
        if st.kind not in IO_KINDS:
            raise ValueError(f"netpoll: max_bytes applies to {IO_KINDS}, not {st.kind!r}")
        n = max(0, int(st.max_bytes or 0))
        base = memoryview(st.args["buf" if st.kind in ("read", "recvfrom") else "data"])
        flat = base.cast("B") if base.format != "B" or base.ndim != 1 else base
        if n >= flat.nbytes:
            if flat is not base:
                flat.release()
            base.release()
            return None
        short = flat[:n]
        # Picked up by the tryfirst substitute implementation of the same
        # plugin: pluggy wrappers cannot change the arguments of the call.
        setattr(self._tls, st.kind, short)
        return [base, flat, short] if flat is not base else [base, short]

    def _take_short(self, kind: str) -> Any:
        return self._tls.__dict__.get(kind)

    @staticmethod
    def _outcome(st: Status) -> Any:
        if st.error is not None:
            raise st.error
        return st.result

    # -- per-syscall bookkeeping (Go's sys_unix.go) ---------------------------

    def _h_socket(self, family: int, type: int, proto: int) -> Generator[None, Any, Any]:
        cookie = Cookie(family, type & ~_TYPE_FLAGS, proto)
        st = Status("socket", cookie, -1, {"family": family, "type": type, "proto": proto})
        try:
            real, real_err = yield from self._call(st)
        except OSError:
            with self._lock:
                self._stat_locked(cookie).open_failed += 1
            raise
        # Hidden when an after filter replaced the result, or set ``error`` in
        # place and left ``result`` alone (the docstring allows both).
        hidden = st.error is not None or st.result is not real
        if real_err is None and real is not None and hidden:
            _close_quietly(real)  # created, but a filter said it failed: no leak
        if st.error is not None:
            with self._lock:
                self._stat_locked(cookie).open_failed += 1
            raise st.error
        sock = st.result
        self._add(sock, cookie, "socket")
        return sock

    def _add(self, sock: Any, cookie: Cookie, how: str) -> None:
        fd = _fileno(sock)
        info = SocketInfo(fd, cookie, how, threading.current_thread().name, _capture_stack())
        with self._lock:
            self._sotab[fd] = info
            s = self._stat_locked(cookie)
            if how == "socket":
                s.opened += 1
            else:
                s.accepted += 1

    def _h_accept(self, sock: Any) -> Generator[None, Any, Any]:
        fd = _fileno(sock)
        cookie = self.cookie_of(fd, sock)
        st = Status("accept", cookie, fd, {"sock": sock})
        try:
            real, real_err = yield from self._call(st)
        except BlockingIOError:
            raise
        except OSError:
            self._count(fd, "accept_failed")
            raise
        hidden = st.error is not None or st.result is None or st.result[0] is not real[0]
        if real_err is None and real is not None and hidden:
            _close_quietly(real[0])  # accepted, but a filter said it failed: no leak
        if st.error is not None:
            if not isinstance(st.error, BlockingIOError):
                self._count(fd, "accept_failed")
            raise st.error
        conn, _addr = st.result
        self._add(conn, cookie, "accept")
        return st.result

    def _count(self, fd: int, counter: str) -> None:
        with self._lock:
            info = self._sotab.get(fd)
            if info is not None:
                s = self._stat_locked(info.cookie)
                setattr(s, counter, getattr(s, counter) + 1)

    def _h_connect(self, sock: Any, address: Any) -> Generator[None, Any, Any]:
        fd = _fileno(sock)
        st = Status("connect", self.cookie_of(fd, sock), fd, {"sock": sock, "address": address})
        try:
            yield from self._call(st)
        except OSError as exc:
            self._connect_outcome(fd, exc)
            raise
        self._connect_outcome(fd, st.error)
        return self._outcome(st)

    def _connect_outcome(self, fd: int, err: BaseException | None) -> None:
        with self._lock:
            info = self._sotab.get(fd)
            if info is None:
                return
            if isinstance(err, OSError) and err.errno in _IN_PROGRESS:
                info.connecting = True  # counted when SO_ERROR says how it ended
                return
            info.connecting = False
            s = self._stat_locked(info.cookie)
            if err is None or (isinstance(err, OSError) and err.errno == errno.EISCONN):
                s.connected += 1
            else:
                s.connect_failed += 1

    def _h_listen(self, sock: Any, backlog: int) -> Generator[None, Any, Any]:
        fd = _fileno(sock)
        st = Status("listen", self.cookie_of(fd, sock), fd, {"sock": sock, "backlog": backlog})
        try:
            yield from self._call(st)
        except OSError:
            self._count(fd, "listen_failed")
            raise
        self._count(fd, "listen_failed" if st.error is not None else "listened")
        return self._outcome(st)

    def _h_getsockopt(self, sock: Any, level: int, option: int) -> Generator[None, Any, Any]:
        fd = _fileno(sock)
        st = Status(
            "getsockopt",
            self.cookie_of(fd, sock),
            fd,
            {"sock": sock, "level": level, "option": option},
        )
        is_so_error = level == _socket.SOL_SOCKET and option == _socket.SO_ERROR
        afters = self._before(st)
        try:
            st.result = yield
        except BaseException as exc:
            st.error = exc
        if is_so_error and st.error is None:
            st.socket_error = st.result
        if afters:
            self._after(st, afters)
        if is_so_error and st.error is None:
            st.socket_error = int(st.result)
            self._so_error_outcome(fd, sock, st.socket_error)
        return self._outcome(st)

    def _so_error_outcome(self, fd: int, sock: Any, soerr: int) -> None:
        """Count a non-blocking connect's end, as Go counts it from SO_ERROR."""
        info = self._sotab.get(fd)
        if info is None or not info.connecting or soerr in _IN_PROGRESS:
            return
        if soerr == 0:
            # SO_ERROR is 0 both when connected and when nothing happened yet
            # (a spurious wakeup): only a peer address says which.
            try:
                sock.getpeername()
            except OSError:
                return
        with self._lock:
            if not info.connecting:
                return
            info.connecting = False
            s = self._stat_locked(info.cookie)
            if soerr in (0, errno.EISCONN):
                s.connected += 1
            else:
                s.connect_failed += 1

    def _h_close(self, sock: Any) -> Generator[None, Any, Any]:
        fd = _fileno(sock)
        st = Status("close", self.cookie_of(fd, sock), fd, {"sock": sock})
        # Forget the fd *before* it is closed: the moment close(2) returns,
        # another thread may get the same number from socket or accept.
        with self._lock:
            info = self._sotab.pop(fd, None)
        try:
            afters = self._before(st)
        except OSError as exc:
            # Cancelled: close for real anyway (see the module docstring), so
            # the injected error never leaks the descriptor.
            _close_quietly(sock)
            self._closed(info, failed=True)
            raise exc from None
        except BaseException:
            _close_quietly(sock)
            self._closed(info, failed=True)
            raise
        try:
            st.result = yield
        except BaseException as e:
            st.error = e
        if afters:
            self._after(st, afters)
        self._closed(info, failed=st.error is not None)
        return self._outcome(st)

    def _closed(self, info: SocketInfo | None, failed: bool) -> None:
        if info is None:
            return
        with self._lock:
            s = self._stat_locked(info.cookie)
            if failed:
                s.close_failed += 1
            else:
                s.closed += 1

    def _h_io(self, kind: str, sock: Any, args: dict[str, Any]) -> Generator[None, Any, Any]:
        fd = _fileno(sock)
        st = Status(kind, self.cookie_of(fd, sock), fd, args)
        yield from self._call(st)
        return self._outcome(st)

    def _h_poller(self, kind: str, fd: int, args: dict[str, Any]) -> Generator[None, Any, Any]:
        info = self._sotab.get(fd)
        st = Status(kind, info.cookie if info is not None else NO_COOKIE, fd, args)
        yield from self._call(st)
        return self._outcome(st)

    def __repr__(self) -> str:
        state = "installed" if self._installed else "not installed"
        return f"<Switch {state} filters={sorted(self._chain)} open={len(self._sotab)}>"


def _close_quietly(sock: Any) -> None:
    try:
        sock.close()
    except OSError:
        pass


# --------------------------------------------------------------------------
# The plugin objects.  pluggy registers every hookimpl of an object, so the
# always-on wrappers and each on-demand one live in separate small objects.
# --------------------------------------------------------------------------


class _CoreHooks:
    """socket/connect/listen/accept/getsockopt/close: always on while installed."""

    def __init__(self, sw: Switch) -> None:
        self._sw = sw

    @hookimpl(wrapper=True)
    def socket(self, family: int, type: int, proto: int) -> Generator[None, Any, Any]:
        """Go's ``Switch.Socket``."""
        return (yield from self._sw._h_socket(family, type, proto))

    @hookimpl(wrapper=True)
    def connect(self, sock: Any, address: Any) -> Generator[None, Any, Any]:
        """Go's ``Switch.Connect``."""
        return (yield from self._sw._h_connect(sock, address))

    @hookimpl(wrapper=True)
    def listen(self, sock: Any, backlog: int) -> Generator[None, Any, Any]:
        """Go's ``Switch.Listen``."""
        return (yield from self._sw._h_listen(sock, backlog))

    @hookimpl(wrapper=True)
    def accept(self, sock: Any) -> Generator[None, Any, Any]:
        """Go's ``Switch.Accept``."""
        return (yield from self._sw._h_accept(sock))

    @hookimpl(wrapper=True)
    def getsockopt_int(self, sock: Any, level: int, option: int) -> Generator[None, Any, Any]:
        """Go's ``Switch.GetsockoptInt``."""
        return (yield from self._sw._h_getsockopt(sock, level, option))

    @hookimpl(wrapper=True)
    def close(self, sock: Any) -> Generator[None, Any, Any]:
        """Go's ``Switch.Close``."""
        return (yield from self._sw._h_close(sock))


class _ReadHooks:
    def __init__(self, sw: Switch) -> None:
        self._sw = sw

    @hookimpl(wrapper=True)
    def read(self, sock: Any, buf: Any) -> Generator[None, Any, Any]:
        """Filters around ``read``."""
        return (yield from self._sw._h_io("read", sock, {"sock": sock, "buf": buf}))

    @hookimpl(tryfirst=True, specname="read")
    def read_short(self, sock: Any, buf: Any) -> Any:
        """A short read a filter asked for (``Status.max_bytes``); else pass on."""
        view = self._sw._take_short("read")
        return None if view is None else syscalls.read(sock, view)


class _WriteHooks:
    def __init__(self, sw: Switch) -> None:
        self._sw = sw

    @hookimpl(wrapper=True)
    def write(self, sock: Any, data: Any) -> Generator[None, Any, Any]:
        """Filters around ``write``."""
        return (yield from self._sw._h_io("write", sock, {"sock": sock, "data": data}))

    @hookimpl(tryfirst=True, specname="write")
    def write_short(self, sock: Any, data: Any) -> Any:
        """A short write a filter asked for; else pass on."""
        view = self._sw._take_short("write")
        return None if view is None else syscalls.write(sock, view)


class _RecvfromHooks:
    def __init__(self, sw: Switch) -> None:
        self._sw = sw

    @hookimpl(wrapper=True)
    def recvfrom(self, sock: Any, buf: Any) -> Generator[None, Any, Any]:
        """Filters around ``recvfrom``."""
        return (yield from self._sw._h_io("recvfrom", sock, {"sock": sock, "buf": buf}))

    @hookimpl(tryfirst=True, specname="recvfrom")
    def recvfrom_short(self, sock: Any, buf: Any) -> Any:
        """A truncated receive a filter asked for; else pass on."""
        view = self._sw._take_short("recvfrom")
        return None if view is None else syscalls.recvfrom(sock, view)


class _SendtoHooks:
    def __init__(self, sw: Switch) -> None:
        self._sw = sw

    @hookimpl(wrapper=True)
    def sendto(self, sock: Any, data: Any, address: Any) -> Generator[None, Any, Any]:
        """Filters around ``sendto``."""
        args = {"sock": sock, "data": data, "address": address}
        return (yield from self._sw._h_io("sendto", sock, args))

    @hookimpl(tryfirst=True, specname="sendto")
    def sendto_short(self, sock: Any, data: Any, address: Any) -> Any:
        """A truncated datagram a filter asked for; else pass on."""
        view = self._sw._take_short("sendto")
        return None if view is None else syscalls.sendto(sock, view, address)


class _NetpollopenHooks:
    def __init__(self, sw: Switch) -> None:
        self._sw = sw

    @hookimpl(wrapper=True)
    def netpollopen(self, poller: Any, fd: int, token: object) -> Generator[None, Any, Any]:
        """Filters around registering an fd with the poller."""
        return (yield from self._sw._h_poller("netpollopen", fd, {"fd": fd, "token": token}))


class _NetpollHooks:
    def __init__(self, sw: Switch) -> None:
        self._sw = sw

    @hookimpl(wrapper=True)
    def netpoll(self, poller: Any, timeout: float | None) -> Generator[None, Any, Any]:
        """Filters around one wait of an M's poller (result: ``[(token, modes)]``)."""
        return (yield from self._sw._h_poller("netpoll", -1, {"timeout": timeout}))


class _NetpollwaitHooks:
    def __init__(self, sw: Switch) -> None:
        self._sw = sw

    @hookimpl(wrapper=True)
    def netpollwait(
        self, poller: Any, fd: int, mode: int, wake_fd: int, timeout: float | None
    ) -> Generator[None, Any, Any]:
        """Filters around one wait of a parked thread (result: ready modes)."""
        args = {"mode": mode, "wake_fd": wake_fd, "timeout": timeout}
        return (yield from self._sw._h_poller("netpollwait", fd, args))


_ONDEMAND_CLASSES: dict[str, Callable[[Switch], object]] = {
    "read": _ReadHooks,
    "write": _WriteHooks,
    "recvfrom": _RecvfromHooks,
    "sendto": _SendtoHooks,
    "netpollopen": _NetpollopenHooks,
    "netpoll": _NetpollHooks,
    "netpollwait": _NetpollwaitHooks,
}
