r"""Hook specifications: the socket system calls and the poller, as pluggy hooks.

Go keeps its socket syscalls in package-level function variables
(``net/hook_unix.go``: ``socketFunc``, ``connectFunc``, ``listenFunc``,
``getsockoptIntFunc``; ``internal/poll/hook_unix.go``: ``CloseFunc``,
``AcceptFunc``) so that tests can swap them, and its poller is a fixed set of
functions per OS (``runtime/netpoll_epoll.go`` and friends: ``netpollinit``,
``netpollopen``, ``netpoll``, ``netpollclose``, ``netpollBreak``).  netpoll
states both families as pluggy hook specifications, so that swapping them is a
public plugin API.

Three families live here:

* **System calls** (``socket`` ... ``sendto``).  The real calls are a
  ``trylast`` plugin (:mod:`netpoll.core.syscalls`).  All are
  ``firstresult``: the first non-``None`` result wins, and a plain
  implementation that returns ``None`` lets the next one run, down to the OS
  call.  So a plain implementation can *replace* a value-returning call (by
  returning a value) or fail any call (by raising), but it cannot stop
  ``connect``, ``listen`` or ``close``, whose result is ``None``: the OS call
  still happens after it.  To watch, fail, skip or alter any call, register a
  ``wrapper=True`` implementation: raising before ``yield`` fails the call
  without running it; after ``yield`` it sees the result (or the exception)
  and may return something else.
* **Poller** (``netpollinit`` ... ``netpollwait``).  :class:`Poller` is the
  contract, the one page a backend author reads: one hook per method, taking
  the poller object first.  The hook specifications are made from it (so are
  the core's ``trylast`` implementations, which call the method), never
  written out again.  The same ``firstresult`` rule applies; a wrapper sees
  every M's calls.
* **Backend registry** (``netpoll_backends``, ``netpoll_os_api``).  Every
  backend plugin answers ``netpoll_backends`` with :class:`BackendSpec`\ s;
  selection reads the collected list.  ``netpoll_os_api`` is the one
  injection point through which a plugin hands a backend a substitute for
  the OS module it wraps (the kqueue emulation on Linux).

With exactly one plain implementation of a hook and no wrapper, the core
calls that implementation directly, without pluggy (see
:mod:`netpoll.core.plugins`).

Descriptors are passed as ``sock``: a :class:`socket.socket` in non-blocking
mode, or, for pipes and files, any object with the same ``recv_into``/``send``/
``fileno``/``close`` methods (see :class:`netpoll.core.fd.FileHandle`).

Modes are bit flags: :data:`MODE_R` for read readiness, :data:`MODE_W` for
write readiness.  Timeouts of the poller hooks are in seconds.
"""

from __future__ import annotations

import inspect
import socket as _socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import pluggy

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

PROJECT = "netpoll"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

#: The descriptor is readable (or at EOF, or in error).
MODE_R = 1
#: The descriptor is writable (or hung up, or in error).
MODE_W = 2
#: Both directions; used for a combined read+write deadline.
MODE_RW = MODE_R | MODE_W
#: :meth:`Poller.netpollwait` only: the wake descriptor is readable.
MODE_WAKE = 4
#: With :data:`MODE_R`, from a backend whose spec says ``reports_except``:
#: an exceptional condition on the read side (the peer shut down or reset
#: the connection, an error is pending, or urgent ``MSG_OOB`` data came).
#: After it a read that returned short may not have left the socket empty:
#: EOF, the error or the data behind the urgent mark is still there, with no
#: new edge to come (see ``netpoll.core.polldesc.PollDesc.wait``).
MODE_EXCEPT = 8

#: The longest a backend blocks in one wait, in seconds.  Kernels take
#: millisecond ints (epoll/poll overflow past about 24.8 days) or time_t
#: (select, kqueue); capping at a day keeps every backend in range for any
#: deadline, and an early return is just a spurious wakeup.
MAX_WAIT = 86400.0


def clamp_timeout(timeout: float | None) -> float | None:
    """A poller timeout every backend can pass to its OS call.

    ``None`` and ``inf`` mean "block" (``None``), NaN and negatives ``0``,
    anything longer than :data:`MAX_WAIT` is cut to it.
    """
    if timeout is None:
        return None
    if timeout > MAX_WAIT:
        return None if timeout == float("inf") else MAX_WAIT
    if timeout > 0.0:
        return timeout
    return 0.0


#: A socket address as the socket module takes it: (host, port), a 4-tuple for
#: IPv6, or a path (str/bytes) for Unix sockets.
Address = tuple[Any, ...] | str | bytes

#: The ``os_api`` argument of :func:`netpoll_backends`: ``os_api(name)`` is
#: the substitute a plugin supplied for the OS API ``name`` through
#: :func:`netpoll_os_api`, or ``None`` (use the real one).
OSApi = Callable[[str], object | None]


class Poller(Protocol):
    """The poller contract: what a backend's poller object must do, stated once.

    One poller object watches descriptors for one M (Go's
    ``runtime/netpoll_epoll.go`` and friends, as an object):
    ``BackendSpec.create()`` makes a fresh one per M, and the M calls it
    through the *poller hooks*, one per method below (but :meth:`shutdown`),
    named like the method and taking the object first (``netpoll(poller,
    timeout)``).  The core's ``trylast`` implementation of each hook calls
    the method, so a backend is just this class, and a wrapper plugin of a
    hook sees the calls of every M.  All poller hooks are ``firstresult``,
    like the syscall hooks.  :mod:`netpoll.backends.base` implements most of
    it; ``tests/example_backend`` is a complete backend in one small file.

    Modes are :data:`MODE_R`/:data:`MODE_W` bit flags; timeouts are seconds,
    ``None`` to block.  Every implementation must also:

    * **be thread-safe**: ``netpollopen``/``netpollclose``/``netpollarm``/
      ``netpollbreak`` come from any thread while the owner is inside
      :meth:`netpoll`;
    * **wake the wait when it changes what the wait watches**: a wait blocked
      in ``poll``/``select`` sees only the set it started with, so an arm
      must wake it;
    * **wake a wait that watches an fd being closed**: while ``poll(2)``/
      ``select(2)`` is blocked on it the kernel holds the open file, so
      closing the fd does not close the socket (the peer sees no EOF) until
      the wait returns;
    * **report hang-ups and errors as readiness** (both directions): the woken
      operation retries its system call and sees EOF or the error itself;
    * **drop events of fds closed meanwhile**: look the token up under the
      lock after the wait; a missing one means the fd is gone.
    """

    def netpollinit(self) -> None:
        """Create the OS poller object and its wakeup channel.

        Called once per poller object, by the M that owns it, before any
        other method (Go's ``serverInit.Do``).
        """

    def netpollopen(self, fd: int, token: object) -> None:
        """Watch ``fd`` for read and write readiness, once, until :meth:`netpollclose`.

        Edge-triggered backends arm both directions now; level-triggered ones
        only remember the fd until :meth:`netpollarm`.  ``token`` is opaque:
        :meth:`netpoll` hands it back with each event of this fd.  Raising
        :class:`OSError` (``EPERM`` for a regular file on epoll) means the fd
        is not pollable and the caller falls back to blocking I/O.
        """

    def netpollclose(self, fd: int) -> None:
        """Forget ``fd``; called before the descriptor itself is closed."""

    def netpoll(self, timeout: float | None) -> Sequence[tuple[object, int]]:
        """Wait for readiness; return ``[(token, modes), ...]``, one entry per fd.

        ``timeout`` is ``None`` to block, ``0`` to poll, or seconds to wait.
        Called only by the M that owns the poller.  Returns an empty list on
        timeout or when woken by :meth:`netpollbreak`; the wakeup itself is
        never reported as an event, and the events of one fd are merged.  A
        backend waits at most :data:`MAX_WAIT` (see :func:`clamp_timeout`):
        an early empty return is a spurious wakeup, which every caller
        tolerates.
        """

    def netpollbreak(self) -> None:
        """Make a :meth:`netpoll` blocked in another thread return.

        Called when work for the owning M arrives from another thread (a G
        made ready, an earlier timer) and on shutdown.  Safe from any thread;
        extra calls may be coalesced.
        """

    def netpollarm(self, fd: int, mode: int) -> None:
        """Level-triggered backends: watch ``fd`` for ``mode`` until it is reported once.

        Go calls ``netpollarm`` on Solaris/AIX; here the poll and select
        backends need it.  Called just before a waiter parks; the backend
        reports the event once and then drops that interest again, so an fd
        nobody waits on costs nothing.  Edge-triggered backends do nothing.
        """

    def netpollwait(self, fd: int, mode: int, wake_fd: int, timeout: float | None) -> int:
        """Block the calling thread until ``fd`` is ready for ``mode``.

        How a plain thread G parks (Go's "M blocked in a syscall"): it waits
        in the kernel on its own descriptor plus its wake descriptor
        ``wake_fd`` (readable when another thread wakes it: a close, a
        deadline change), so no other thread has to poll for it.  ``wake_fd``
        is ``-1`` when the thread has none; ``fd`` is ``-1`` to wait on
        ``wake_fd`` alone.

        Returns the ready modes of ``fd`` (:data:`MODE_R`/:data:`MODE_W`,
        which may include the other direction or be a hang-up), plus
        :data:`MODE_WAKE` when ``wake_fd`` is readable; ``0`` on timeout.
        Never drains ``wake_fd``: its owner does.  Level-triggered, stateless
        and safe from any number of threads at once; it is called on the
        process's thread-wait poller object, which is never passed to
        :meth:`netpoll`.
        """

    def shutdown(self) -> None:
        """Release the OS objects; safe to call twice, and in a forked child.

        Not a hook: the M that owns the poller calls it when it drops it.
        """


#: The poller hooks: every method of :class:`Poller` but ``shutdown``, in order.
POLLER_HOOKS = tuple(
    name
    for name in Poller.__dict__
    if name.startswith("netpoll") and callable(Poller.__dict__[name])
)


def poller_hook_function(name: str, body: str, namespace: dict[str, Any]) -> Callable[..., Any]:
    """The function ``name(poller, <the parameters of Poller.name>)`` running ``body``.

    ``body`` is one statement (it may span indented lines) in which
    ``{args}`` stands for the parameters after ``poller``, comma-separated;
    ``namespace`` holds the names it uses (and ``__name__``, the module the
    function is said to belong to).  The parameters must be real ones,
    not ``*args``: pluggy reads a hook function's parameter names from its
    code.  This is how the poller hook specifications below and the core's
    forwarding implementations (``netpoll.core.plugins.PollerForwarder``)
    follow :class:`Poller` without restating it.
    """
    params = list(inspect.signature(getattr(Poller, name)).parameters)[1:]  # no self
    args = ", ".join(params)
    source = f"def {name}(poller{', ' if args else ''}{args}):\n    {body.format(args=args)}\n"
    exec(compile(source, f"<poller hook {name}>", "exec"), namespace)
    function: Callable[..., Any] = namespace.pop(name)
    function.__doc__ = f"The ``{name}`` poller hook: :meth:`Poller.{name}` on ``poller``."
    return function


@dataclass(frozen=True)
class BackendSpec:
    """What a backend plugin tells the registry about itself.

    ``probe`` decides availability by trying the mechanism (create and close a
    poller object), not by looking for an attribute: it returns ``None`` when
    the backend works here, or a short reason why it does not.  ``create``
    returns a fresh :class:`Poller` (one per M); it is only called after a
    successful probe.  ``priority`` orders the default choice
    (higher wins).  ``edge_triggered`` is False for backends that need
    :meth:`Poller.netpollarm` before a waiter parks.  ``reports_except`` is
    True for an edge-triggered backend whose events carry
    :data:`MODE_EXCEPT`; on other edge-triggered backends a short TCP read is
    not taken as proof that the socket is empty.
    """

    name: str
    priority: int
    probe: Callable[[], str | None]
    create: Callable[[], Poller]
    edge_triggered: bool = True
    description: str = field(default="")
    reports_except: bool = False


# --------------------------------------------------------------------------
# System calls (Go: socketFunc, connectFunc, listenFunc, AcceptFunc,
# getsockoptIntFunc, CloseFunc, plus read/write and the datagram pair).
# --------------------------------------------------------------------------


@hookspec(firstresult=True)
def socket(family: int, type: int, proto: int) -> _socket.socket:  # type: ignore[empty-body]
    """Create a socket (Go's ``socketFunc``).

    Called by the net layer for every listener, dialed connection and packet
    conn, before bind/connect.  Returns a :class:`socket.socket` that is
    already non-blocking and close-on-exec.  Raising :class:`OSError` fails
    the listen/dial with that error; nothing has been opened then.
    """


@hookspec(firstresult=True)
def connect(sock: _socket.socket, address: Address) -> None:
    """Start connecting ``sock`` to ``address`` (Go's ``connectFunc``).

    Called once per dial attempt, right after ``socket`` (and ``control``).
    Returns ``None`` when the connection completed at once; raises
    :class:`BlockingIOError` (``EINPROGRESS``) when it is in progress (the
    caller then waits for write readiness and reads ``SO_ERROR`` through
    :func:`getsockopt_int`); any other :class:`OSError` fails the dial.
    """


@hookspec(firstresult=True)
def listen(sock: _socket.socket, backlog: int) -> None:
    """Mark a bound socket as listening (Go's ``listenFunc``).

    Called once per stream listener after bind.  Returns ``None``; raising
    :class:`OSError` fails the listen and the socket is closed.
    """


@hookspec(firstresult=True)
def accept(sock: _socket.socket) -> tuple[_socket.socket, Address]:  # type: ignore[empty-body]
    """Accept one connection (Go's ``AcceptFunc``/``Accept4Func``).

    Called by ``FD.accept`` each time it tries; the result is a new
    non-blocking, close-on-exec socket and the peer address.  Raises
    :class:`BlockingIOError` when nothing is queued (the caller parks),
    :class:`ConnectionAbortedError` for a connection reset while queued (the
    caller retries invisibly), any other :class:`OSError` to fail the accept.
    A wrapper that replaces a successful result with an error must close the
    accepted socket.
    """


@hookspec(firstresult=True)
def getsockopt_int(sock: _socket.socket, level: int, option: int) -> int:  # type: ignore[empty-body]
    """Read an integer socket option (Go's ``getsockoptIntFunc``).

    The net layer calls it for ``SO_ERROR`` after a non-blocking connect
    reports writable.  Returns the option's value.
    """


@hookspec(firstresult=True)
def close(sock: _socket.socket) -> None:
    """Close the descriptor (Go's ``CloseFunc``).

    Called exactly once per descriptor, when the last operation in flight has
    left after ``FD.close`` (or when a half-built socket is abandoned).
    """


@hookspec(firstresult=True)
def read(sock: _socket.socket, buf: WriteableBuffer) -> int:  # type: ignore[empty-body]
    """Read into the writable buffer ``buf``; returns the byte count (0 = EOF).

    Raises :class:`BlockingIOError` when no data is ready: the caller parks on
    the poll descriptor and calls again after a wakeup.  This is the hot path:
    with no wrapper registered it is called straight from the syscall table.
    """


@hookspec(firstresult=True)
def write(sock: _socket.socket, data: ReadableBuffer) -> int:  # type: ignore[empty-body]
    """Write from the buffer ``data``; returns how many bytes the OS took.

    A short count is normal; ``FD.write`` loops until all is written.
    Raises :class:`BlockingIOError` when the send buffer is full.
    """


@hookspec(firstresult=True)
def recvfrom(sock: _socket.socket, buf: WriteableBuffer) -> tuple[int, Address]:  # type: ignore[empty-body]
    """Receive one datagram into ``buf``; returns ``(nbytes, sender)``.

    Used by packet conns (UDP, unixgram).  Raises :class:`BlockingIOError`
    when no datagram is queued.
    """


@hookspec(firstresult=True)
def sendto(sock: _socket.socket, data: ReadableBuffer, address: Address) -> int:  # type: ignore[empty-body]
    """Send one datagram ``data`` to ``address``; returns the bytes sent.

    Raises :class:`BlockingIOError` when the send buffer is full.
    """


# --------------------------------------------------------------------------
# Poller (Go: runtime netpollinit/netpollopen/netpoll/netpollclose/
# netpollBreak/netpollarm): one hook per method of Poller, the poller first.
# The contract is Poller's docstrings; these specifications only give pluggy
# the names and parameters.
# --------------------------------------------------------------------------

for _name in POLLER_HOOKS:
    _spec = poller_hook_function(_name, "pass", {"__name__": __name__})
    globals()[_name] = hookspec(firstresult=True)(_spec)
del _spec
del _name


# --------------------------------------------------------------------------
# Backend registry.
# --------------------------------------------------------------------------


@hookspec
def netpoll_backends(os_api: OSApi) -> list[BackendSpec]:  # type: ignore[empty-body]
    """Return the backends this plugin provides.

    Called whenever the registry is listed or a backend is selected; results
    of all plugins are collected, and names must be unique.  A backend that
    wraps an OS module takes it from ``os_api(name)`` when that is not
    ``None`` (the kqueue backend asks for ``"kqueue"``), so a plugin can
    substitute it through :func:`netpoll_os_api` without the backend
    importing the substitute.  Third-party packages provide this hook through
    the ``netpoll.backends`` entry-point group.
    """


@hookspec(firstresult=True)
def netpoll_os_api(name: str) -> object | None:
    """Supply a substitute for the OS API ``name`` a backend wraps, or ``None``.

    The first non-``None`` answer wins; with none, the backend uses the real
    module.  ``"kqueue"`` asks for something shaped like the kqueue part of
    :mod:`select` (see ``netpoll.backends.kqueue.KqueueApi``);
    ``netpoll.testing.kqueue_emulation`` answers it on Linux.  Asked each
    time the backends are listed: after registering or unregistering such a
    plugin, call ``BackendRegistry.forget_probes()``.
    """


#: Syscall hook names, in the order of the syscall table.
SYSCALL_HOOKS = (
    "socket",
    "connect",
    "listen",
    "accept",
    "getsockopt_int",
    "close",
    "read",
    "write",
    "recvfrom",
    "sendto",
)
