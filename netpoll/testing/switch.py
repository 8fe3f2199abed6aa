"""The Switch: watch, count and fail netpoll's socket system calls (Go's socktest).

Go's own tests replace ``socketFunc``, ``connectFunc``, ``poll.AcceptFunc`` and
friends with the methods of a ``net/internal/socktest.Switch``
(``switch.go``: the filter table, the socket table and the per-cookie
statistics; ``sys_unix.go``: one wrapper per system call).  Here the same
thing is a pluggy plugin that anyone may use, not a test-only hack: the
syscalls are hooks (:mod:`netpoll.core.hookspecs`), and a :class:`Switch`
registers its hook implementations on the runtime's plugin manager while it
is installed::

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
    turns a failure into a success).  A before filter of an I/O kind (read,
    write, recvfrom, sendto) may also set ``status.max_bytes`` to make the
    real call see only that much of the buffer: a short read or write (for
    any other kind it fails the call with :class:`ValueError`).

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

How a filter reaches a call
    One table, :attr:`Switch._chain`: kind -> the ``(owner, filter)`` pairs
    of its layers (:meth:`Switch.set` is the layer of owner ``None``; a
    :class:`~netpoll.testing.faults.Faults` is another).  Changing it
    (:meth:`Switch.set_layer`) registers or unregisters the Switch's hook for
    that kind on the plugin manager (``_sync_locked``): a bound method named
    after the hook (``Switch._read``, ``Switch._connect``...), in a plugin
    object of its own.  The manager then rebuilds the syscall table
    (:mod:`netpoll.core.plugins`), whose entry for the hook now goes through
    pluggy, which calls the method.  The method runs the kind's filters
    around the call: the socket and poller kinds are ``wrapper=True``
    implementations (``_call``: filters, ``yield`` to the rest of the call,
    after filters); the I/O kinds are plain ``tryfirst`` implementations
    (``_io``) that make the call themselves, through the implementations
    registered under them (another Switch's, then the OS call), so they can
    pass on a buffer cut to ``Status.max_bytes``.  pluggy runs every wrapper
    before any plain implementation, so another plugin's wrapper of an I/O
    hook sees the Switch's outcome whichever was registered first.

Cost
    The socket/connect/listen/accept/getsockopt/close hooks are always
    registered while the Switch is installed: the statistics need them, and
    these calls are rare.  The hot-path hooks (``read``, ``write``,
    ``recvfrom``, ``sendto``) and the poller hooks (``netpollopen``,
    ``netpoll``, and ``netpollwait``, a parked plain thread's own wait) are
    registered only while a filter for them is set, so reads, writes and
    waits of a Switch without such filters still go straight to the OS
    through the syscall table (its ``read_direct``... flags stay True).
    Uninstalling leaves nothing behind.

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
from types import SimpleNamespace
from typing import Any, NamedTuple

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
        # The filter table: kind -> the (owner, filter) pairs of its layers,
        # in the order the layers were first used.  Owner None is sw.set()'s
        # slot; a Faults object is another.  A kind is a key only while it has
        # a filter.  Changed under the lock by swapping a whole tuple in; the
        # call path reads it without the lock.
        self._chain: dict[str, tuple[tuple[object, Filter], ...]] = {}
        # kind -> the plugin object registered for it: the socket kinds while
        # installed, the others while installed and in _chain (_sync_locked).
        self._plugins: dict[str, object] = {}
        self._sotab: dict[int, SocketInfo] = {}
        self._stats: dict[Cookie, Stat] = {}
        self._installed = False

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
            self._installed = True
            # close before socket: no socket the table records misses its close.
            for kind in reversed(ALL_KINDS):
                self._sync_locked(kind)
        return self

    def uninstall(self) -> None:
        """Unregister every plugin of this Switch; calls go straight to the OS again."""
        with self._lock:
            if not self._installed:
                return
            self._installed = False
            for kind in ALL_KINDS:
                self._sync_locked(kind)

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
        return next((f for o, f in self._chain.get(self.kind_name(kind), ()) if o is None), None)

    def set_layer(self, owner: object, kind: str, filter: Filter | None) -> None:
        """Install ``filter`` for ``kind`` in the layer of ``owner`` (``None`` removes it).

        Layers let helpers (:class:`~netpoll.testing.faults.Faults`) filter
        a kind without taking :meth:`set`'s slot.  All layers' before filters
        run in the order the layers were first used (a replaced filter keeps
        its layer's place); the after filters they return run in the same
        order after the call.
        """
        kind = self.kind_name(kind)
        with self._lock:
            pairs = list(self._chain.get(kind, ()))
            at = next((i for i, (o, _) in enumerate(pairs) if o is owner), len(pairs))
            pairs[at : at + 1] = [] if filter is None else [(owner, filter)]
            if pairs:
                self._chain[kind] = tuple(pairs)
            else:
                self._chain.pop(kind, None)
            self._sync_locked(kind)

    def clear(self) -> None:
        """Remove every filter (all layers)."""
        with self._lock:
            kinds = list(self._chain)
            self._chain.clear()
            for kind in kinds:
                self._sync_locked(kind)

    def _sync_locked(self, kind: str) -> None:
        """Register this Switch's hook for ``kind`` iff it is needed (the cost model).

        Needed while installed: always for the socket kinds (the statistics
        and the socket table), and for the I/O and poller kinds only while
        :attr:`_chain` has a filter for them.  The hook is a bound method of
        this Switch named after the hook (``_read``, ``_netpoll``...), in a
        plugin object of its own: pluggy registers every hook of an object at
        once, and each kind comes and goes alone.
        """
        want = self._installed and (kind in SOCKET_KINDS or kind in self._chain)
        plugin = self._plugins.get(kind)
        if want and plugin is None:
            hook = _HOOK_OF[kind]
            plugin = SimpleNamespace(**{hook: getattr(self, "_" + hook)})
            self._pm.register(plugin, name=f"netpoll.testing.switch-{id(self):x}-{kind}")
            self._plugins[kind] = plugin
        elif not want and plugin is not None:
            self._pm.unregister(plugin)
            del self._plugins[kind]

    def wrapped_kinds(self) -> list[str]:
        """The kinds this Switch currently has a hook registered for."""
        with self._lock:
            return [k for k in ALL_KINDS if k in self._plugins]

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
        """Run the before filters of ``st.kind``; raises to cancel; returns the after filters."""
        afters: list[AfterFilter] = []
        for _owner, f in self._chain.get(st.kind, ()):
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
        """Filters around the rest of a wrapped call (the ``yield``); outcome left in ``st``.

        A before filter's exception propagates from here: the call is
        cancelled.  Otherwise the outcome, as replaced by the after filters,
        is in ``st.result``/``st.error``, and the real call's own outcome is
        returned, so that a created socket a filter hid can be closed.
        """
        afters = self._before(st)
        if st.max_bytes is not None:
            raise ValueError(f"netpoll: max_bytes applies to {IO_KINDS}, not {st.kind!r}")
        try:
            st.result = yield
        except BaseException as exc:
            st.error = exc
        real = st.result, st.error
        if afters:
            self._after(st, afters)
        return real

    @staticmethod
    def _outcome(st: Status) -> Any:
        if st.error is not None:
            raise st.error
        return st.result

    # -- the I/O kinds: plain implementations that make the call themselves ------

    @hookimpl(tryfirst=True)
    def _read(self, sock: Any, buf: Any) -> Any:
        """Filters around ``read``."""
        return self._io("read", {"sock": sock, "buf": buf}, "buf")

    @hookimpl(tryfirst=True)
    def _write(self, sock: Any, data: Any) -> Any:
        """Filters around ``write``."""
        return self._io("write", {"sock": sock, "data": data}, "data")

    @hookimpl(tryfirst=True)
    def _recvfrom(self, sock: Any, buf: Any) -> Any:
        """Filters around ``recvfrom``."""
        return self._io("recvfrom", {"sock": sock, "buf": buf}, "buf")

    @hookimpl(tryfirst=True)
    def _sendto(self, sock: Any, data: Any, address: Any) -> Any:
        """Filters around ``sendto``."""
        return self._io("sendto", {"sock": sock, "data": data, "address": address}, "data")

    def _io(self, kind: str, args: dict[str, Any], key: str) -> Any:
        """The I/O kinds' path: filters around the call, passed on with ``args[key]`` cut short.

        Unlike the other kinds, an I/O kind's hook is a plain
        implementation, not a wrapper: it makes the call itself
        (:meth:`_below`), so it can hand the OS a shorter buffer when a
        before filter set ``st.max_bytes`` (a pluggy wrapper cannot change
        the arguments of the call it wraps).
        """
        sock = args["sock"]
        fd = _fileno(sock)
        st = Status(kind, self.cookie_of(fd, sock), fd, args)
        afters = self._before(st)
        try:
            if st.max_bytes is None:
                st.result = self._below(kind, args)
            else:
                # The views are released before the caller gets its buffer
                # back: it may resize it (FD.read trims a bytearray), which a
                # live export forbids, even one a traceback still holds.
                n = max(0, int(st.max_bytes))
                with memoryview(args[key]) as view, view.cast("B") as flat, flat[:n] as short:
                    st.result = self._below(kind, {**args, key: short})
        except BaseException as exc:
            st.error = exc
        if afters:
            self._after(st, afters)
        return self._outcome(st)

    def _below(self, kind: str, args: dict[str, Any]) -> Any:
        """Pass an I/O call on to the plain implementations under this Switch's.

        pluggy's order for a ``firstresult`` hook: the ones registered
        earlier (another Switch's, then the OS call of
        :mod:`netpoll.core.syscalls`, which is ``trylast``), newest first,
        until one returns a value.  ``get_hookimpls()`` lists the plain
        implementations first, in the reverse of the order they are called
        in, then the wrappers.
        """
        mine = self._plugins.get(kind)
        under = []
        for impl in getattr(self._pm.hook, _HOOK_OF[kind]).get_hookimpls():
            if impl.plugin is mine or impl.wrapper or impl.hookwrapper:
                break
            under.append(impl)
        for impl in reversed(under):
            result = impl.function(*[args[name] for name in impl.argnames])
            if result is not None:
                return result
        return None

    # -- the poller kinds: wrappers -----------------------------------------------

    @hookimpl(wrapper=True)
    def _netpollopen(self, poller: Any, fd: int, token: object) -> Generator[None, Any, Any]:
        """Filters around registering an fd with the poller."""
        return (yield from self._poller("netpollopen", fd, {"fd": fd, "token": token}))

    @hookimpl(wrapper=True)
    def _netpoll(self, poller: Any, timeout: float | None) -> Generator[None, Any, Any]:
        """Filters around one wait of an M's poller (result: ``[(token, modes)]``)."""
        return (yield from self._poller("netpoll", -1, {"timeout": timeout}))

    @hookimpl(wrapper=True)
    def _netpollwait(
        self, poller: Any, fd: int, mode: int, wake_fd: int, timeout: float | None
    ) -> Generator[None, Any, Any]:
        """Filters around one wait of a parked thread (result: ready modes)."""
        args = {"mode": mode, "wake_fd": wake_fd, "timeout": timeout}
        return (yield from self._poller("netpollwait", fd, args))

    def _poller(self, kind: str, fd: int, args: dict[str, Any]) -> Generator[None, Any, Any]:
        info = self._sotab.get(fd)
        st = Status(kind, info.cookie if info is not None else NO_COOKIE, fd, args)
        yield from self._call(st)
        return self._outcome(st)

    # -- the socket kinds: wrappers, with the bookkeeping (Go's sys_unix.go) -----

    @hookimpl(wrapper=True)
    def _socket(self, family: int, type: int, proto: int) -> Generator[None, Any, Any]:
        """Go's ``Switch.Socket``: filters around ``socket``; counts it, records the new fd."""
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

    @hookimpl(wrapper=True)
    def _accept(self, sock: Any) -> Generator[None, Any, Any]:
        """Go's ``Switch.Accept``: filters around ``accept``; counts it, records the new fd."""
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

    @hookimpl(wrapper=True)
    def _connect(self, sock: Any, address: Any) -> Generator[None, Any, Any]:
        """Go's ``Switch.Connect``: filters around ``connect``; counts its outcome."""
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

    @hookimpl(wrapper=True)
    def _listen(self, sock: Any, backlog: int) -> Generator[None, Any, Any]:
        """Go's ``Switch.Listen``: filters around ``listen``; counts it."""
        fd = _fileno(sock)
        st = Status("listen", self.cookie_of(fd, sock), fd, {"sock": sock, "backlog": backlog})
        try:
            yield from self._call(st)
        except OSError:
            self._count(fd, "listen_failed")
            raise
        self._count(fd, "listen_failed" if st.error is not None else "listened")
        return self._outcome(st)

    @hookimpl(wrapper=True)
    def _getsockopt_int(self, sock: Any, level: int, option: int) -> Generator[None, Any, Any]:
        """Go's ``Switch.GetsockoptInt``: filters around it; an ``SO_ERROR`` ends a connect."""
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

    @hookimpl(wrapper=True)
    def _close(self, sock: Any) -> Generator[None, Any, Any]:
        """Go's ``Switch.Close``: filters around ``close``; the fd leaves the table."""
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

    def __repr__(self) -> str:
        state = "installed" if self._installed else "not installed"
        return f"<Switch {state} filters={sorted(self._chain)} open={len(self._sotab)}>"


def _close_quietly(sock: Any) -> None:
    try:
        sock.close()
    except OSError:
        pass
