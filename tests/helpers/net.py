"""Helpers shared by the tests/test_net_*.py modules.

Conn pairs over tcp/unix, a connect-hook plugin context, a "blackhole"
address where connects hang (a listener with a full backlog: Linux drops the
SYN, so the connect stays in SYN_SENT), and a few small checks.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import netpoll
from netpoll.core.hookspecs import hookimpl
from netpoll.core.procs import runtime_fds
from netpoll.core.runtime import runtime


def has_ipv6() -> bool:
    """True when ::1 can be bound here."""
    from netpoll.net.sock import supports_ipv6

    return supports_ipv6()


def fd_is_open(fd: int) -> bool:
    """True while ``fd`` is an open descriptor of this process."""
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def open_fds() -> set[int]:
    """The fds this process has open, less the runtime's own (empty without /proc).

    The listing shows the directory fd ``listdir`` itself used, closed by
    now; it takes the lowest free number, which moves as the runtime opens
    and closes its descriptors, so it is left out.  The wake fds of threads
    and the Ms' pollers belong to the runtime (:func:`runtime_fds`).
    """
    try:
        listed = {int(x) for x in os.listdir("/proc/self/fd")}
    except FileNotFoundError:
        return set()
    return {fd for fd in listed if fd_is_open(fd)} - runtime_fds()


def open_fd_count() -> int:
    """How many fds this process has open, not counting the runtime's own."""
    return len(open_fds())


def is_timeout(err: BaseException) -> bool:
    """Go's checkForTimeoutError: a netpoll OpError that is a TimeoutError."""
    return isinstance(err, netpoll.OpError) and isinstance(err, TimeoutError)


@contextlib.contextmanager
def unix_path() -> Iterator[str]:
    """A fresh socket path in a temp dir, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="np-") as d:
        yield os.path.join(d, "sock")


@contextlib.contextmanager
def listener(network: str = "tcp") -> Iterator[netpoll.Listener]:
    """A listener on loopback (tcp: 127.0.0.1, tcp6: ::1, unix: temp path)."""
    if network.startswith("unix"):
        with unix_path() as path:
            ln = netpoll.listen(network, path)
            try:
                yield ln
            finally:
                ln.close()
        return
    host = "[::1]" if network == "tcp6" else "127.0.0.1"
    ln = netpoll.listen(network, f"{host}:0")
    try:
        yield ln
    finally:
        ln.close()


@contextlib.contextmanager
def conn_pair(network: str = "tcp") -> Iterator[tuple[netpoll.Conn, netpoll.Conn]]:
    """(dialed, accepted) connected conns; both closed afterwards."""
    with listener(network) as ln:
        c1 = netpoll.dial(network, str(ln.addr()), timeout=5)
        try:
            c2 = ln.accept()
        except BaseException:
            c1.close()
            raise
    try:
        yield c1, c2
    finally:
        c1.close()
        c2.close()


class Threads:
    """Start threads, collect their exceptions, join them all (a WaitGroup)."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    def go(self, fn: Callable[..., Any], *args: Any) -> threading.Thread:
        """Run ``fn(*args)`` in a new thread."""

        def run() -> None:
            try:
                fn(*args)
            except BaseException as exc:
                self.errors.append(exc)

        t = threading.Thread(target=run, name="test-worker", daemon=True)
        self.threads.append(t)
        t.start()
        return t

    def wait(self, timeout: float = 30.0) -> None:
        """Join all; re-raise the first exception a thread raised."""
        end = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, end - time.monotonic()))
            assert not t.is_alive(), "worker thread did not finish"
        if self.errors:
            raise self.errors[0]


def copy_until_error(dst: Any, src: Any, size: int = 32 * 1024) -> None:
    """Go's chunkedCopy: copy src to dst until EOF or any error (ignored)."""
    buf = bytearray(size)
    try:
        while True:
            n = src.readinto(buf)
            if not n:
                return
            dst.write(memoryview(buf)[:n])
    except OSError:
        return


def write_until_error(c: Any, chunk: bytes = b"x" * 1024) -> BaseException:
    """Write until it fails; returns the exception."""
    while True:
        try:
            c.write(chunk)
        except OSError as exc:
            return exc


def read_exact(c: Any, n: int) -> bytes:
    """Read exactly n bytes (EOF is an error)."""
    out = bytearray()
    while len(out) < n:
        b = c.read(n - len(out))
        assert b, "unexpected EOF"
        out += b
    return bytes(out)


@contextlib.contextmanager
def plugin(obj: object) -> Iterator[object]:
    """Register a syscall plugin on the runtime's plugin manager for the block."""
    runtime.pm.register(obj)
    try:
        yield obj
    finally:
        runtime.pm.unregister(obj)


class Blackhole:
    """An address where TCP connects hang: a raw listener whose backlog is full.

    With ``listen(0)`` and one queued connection, Linux drops every further
    SYN, so a dial stays in SYN_SENT until its deadline or cancel.
    """

    def __init__(self, family: int = socket.AF_INET) -> None:
        host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
        self.ln = socket.socket(family, socket.SOCK_STREAM)
        self.ln.bind((host, 0))
        self.ln.listen(0)
        self.addr = self.ln.getsockname()
        self.fillers: list[socket.socket] = []
        for _ in range(4):
            s = socket.socket(family, socket.SOCK_STREAM)
            s.setblocking(False)
            self.fillers.append(s)
            try:
                s.connect(self.addr)
            except BlockingIOError:
                pass
        time.sleep(0.05)

    def close(self) -> None:
        """Close the listener and the fillers."""
        for s in self.fillers:
            s.close()
        self.ln.close()

    def __enter__(self) -> Blackhole:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RedirectConnect:
    """Connect hook: sockets whose target matches ``pred`` connect to ``to`` instead.

    The redirect happens before the real connect runs; the real connect
    then reports EALREADY/EISCONN, which the wrapper turns into the normal
    "in progress" answer, so the dial waits on the redirected connect.
    """

    def __init__(self, pred: Callable[[Any], bool], to: Any) -> None:
        self.pred = pred
        self.to = to
        self.calls: list[Any] = []

    @hookimpl(wrapper=True)
    def connect(self, sock: socket.socket, address: Any) -> Any:
        """Redirect matching connects."""
        self.calls.append(address)
        if not self.pred(address):
            return (yield)
        try:
            sock.connect(self.to)
        except BlockingIOError:
            pass
        try:
            yield
        except OSError:
            pass
        raise BlockingIOError(115, "Operation now in progress")


class FailConnect:
    """Connect hook: connects whose target matches ``pred`` fail with ``err``."""

    def __init__(self, pred: Callable[[Any], bool], err: OSError) -> None:
        self.pred = pred
        self.err = err

    @hookimpl(wrapper=True)
    def connect(self, sock: socket.socket, address: Any) -> Any:
        """Fail matching connects before the real call."""
        if self.pred(address):
            raise self.err
        return (yield)


def is_v6(address: Any) -> bool:
    """True for an IPv6 socket address tuple."""
    return isinstance(address, tuple) and len(address) == 4


def is_v4(address: Any) -> bool:
    """True for an IPv4 socket address tuple."""
    return isinstance(address, tuple) and len(address) == 2


class ReadOutcomes:
    """A plugin that watches the ``read`` syscall hook: "EAGAIN" or "data" per call.

    While it is registered no read takes the direct path, so it sees every
    attempt, the EAGAIN round included.
    """

    def __init__(self) -> None:
        self.outcomes: list[str] = []

    @hookimpl(wrapper=True)
    def read(self, sock: Any, buf: Any) -> Any:
        """Record how each read attempt ended."""
        try:
            n = yield
        except BlockingIOError:
            self.outcomes.append("EAGAIN")
            raise
        self.outcomes.append("data")
        return n
