"""netpoll: Go's network poller for Python.

A Go-like ``net`` API (:func:`listen`, :func:`dial`, :class:`Dialer`,
:class:`ListenConfig`, conns with deadlines) on non-blocking descriptors,
goroutines (:func:`go`, :func:`run`, :class:`Chan`, :func:`select`) that park
on a pollDesc while their M runs others, plain threads that park in the
kernel, with the poller backends (epoll, kqueue, poll, select) and the socket
syscalls as pluggy plugins.  See docs/design.md for the layers.
"""

from __future__ import annotations

# First import: installs the finder that picks compiled or pure hot modules
# (netpoll/_build.py) before any of them is imported.
import netpoll._build  # noqa: F401  (installs the finder)
from netpoll.core.chan import Chan, ChanClosed, RecvCase, Selected, SendCase, select
from netpoll.core.deadlock import DeadlockError
from netpoll.core.goroutine import Goroutine, GoroutineKilled, current_goroutine, go
from netpoll.core.plugins import BackendError, NetpollPluginManager
from netpoll.core.runtime import runtime as _runtime
from netpoll.core.sched import blocking, gosched, run, sleep
from netpoll.core.sync import Mutex, WaitGroup
from netpoll.core.sysmon import GoroutineHogWarning, StarvationWarning
from netpoll.net import (
    Addr,
    AddrError,
    CanceledError,
    Conn,
    Dialer,
    DNSError,
    ErrCanceled,
    ErrClosed,
    ListenConfig,
    Listener,
    OpError,
    RawConn,
    TCPAddr,
    TCPConn,
    TCPListener,
    UDPAddr,
    UDPConn,
    UnixAddr,
    UnixConn,
    UnixListener,
    UnknownNetworkError,
    dial,
    join_host_port,
    listen,
    listen_packet,
    resolve_tcp_addr,
    resolve_udp_addr,
    split_host_port,
)
from netpoll.net.dial import create_connection
from netpoll.net.lookup import lookup_host, lookup_port
from netpoll.net.pipe import PipeConn, pipe
from netpoll.net.socket_adapter import ConnSocket

__version__ = "0.1.0"


def use_backend(name: str | None) -> None:
    """Choose the poller backend by name (``None``: back to env var / default).

    Call it before the first listen/dial; switching later works only while no
    descriptor is registered.  Raises :class:`BackendError` for an unknown or
    unavailable name, listing what is available here.
    """
    _runtime.use_backend(name)


def backend_name() -> str:
    """The backend in use, or the one the next listen/dial would start."""
    return _runtime.backend_name()


def available_backends() -> list[str]:
    """Names of the backends that work on this system, best first."""
    return _runtime.registry.available()


def plugin_manager() -> NetpollPluginManager:
    """The pluggy PluginManager: register syscall/poller plugins on it.

    Registering or unregistering a plugin rebuilds the syscall table at once.
    """
    return _runtime.pm


__all__ = [
    "Addr",
    "AddrError",
    "BackendError",
    "CanceledError",
    "Chan",
    "ChanClosed",
    "Conn",
    "ConnSocket",
    "DNSError",
    "DeadlockError",
    "Dialer",
    "ErrCanceled",
    "ErrClosed",
    "Goroutine",
    "GoroutineHogWarning",
    "GoroutineKilled",
    "ListenConfig",
    "Listener",
    "Mutex",
    "OpError",
    "PipeConn",
    "RawConn",
    "RecvCase",
    "Selected",
    "SendCase",
    "StarvationWarning",
    "TCPAddr",
    "TCPConn",
    "TCPListener",
    "UDPAddr",
    "UDPConn",
    "UnixAddr",
    "UnixConn",
    "UnixListener",
    "UnknownNetworkError",
    "WaitGroup",
    "available_backends",
    "backend_name",
    "blocking",
    "create_connection",
    "current_goroutine",
    "dial",
    "go",
    "gosched",
    "join_host_port",
    "listen",
    "listen_packet",
    "lookup_host",
    "lookup_port",
    "pipe",
    "plugin_manager",
    "resolve_tcp_addr",
    "resolve_udp_addr",
    "run",
    "select",
    "sleep",
    "split_host_port",
    "tls",
    "use_backend",
]

# Go's crypto/tls, as netpoll.tls (imported last: it builds on the names above).
from netpoll import tls  # noqa: E402
