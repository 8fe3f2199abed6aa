"""Listening: ListenConfig, listen, listen_packet, TCPListener, UnixListener.

Go's ``net/dial.go`` (``ListenConfig.Listen``, ``ListenConfig.ListenPacket``,
``Listen``, ``ListenPacket``), ``net/tcpsock.go`` + ``tcpsock_posix.go``
(``TCPListener``: ``listenTCP``, ``accept`` with no-delay and keep-alive)
and ``net/unixsock.go`` + ``unixsock_posix.go`` (``UnixListener``, which
removes its socket file on close).

One call does socket, options, bind and listen, plus the poller registration
when called from a goroutine (its M's poller).  From a plain thread nothing is
registered yet: the thread's own waits poll the descriptor directly, and the
descriptor is registered when a goroutine first parks on it (a failure then
is reported by that operation, e.g. ``accept tcp 127.0.0.1:80: cannot
allocate memory``).  Any failure closes the descriptor and raises an
:class:`~netpoll.net.errors.OpError` such as ``listen tcp 127.0.0.1:80: bind:
address already in use``.
"""

from __future__ import annotations

import os
import socket as _socket
import sys
import threading
import warnings
from typing import Any, Literal, overload

from netpoll.core.errors import NetClosingError
from netpoll.core.finalizer import ensure_started as finalizer_started
from netpoll.core.finalizer import queue_close
from netpoll.net.addr import (
    TCP_NETWORKS,
    UDP_NETWORKS,
    UNIX_NETWORKS,
    Addr,
    TCPAddr,
    UDPAddr,
    UnixAddr,
)
from netpoll.net.conn import Conn, TCPConn, UDPConn, UnixConn
from netpoll.net.context import as_deadline
from netpoll.net.errors import AddrError, OpError, UnknownNetworkError, op_error
from netpoll.net.lookup import first_ipv4, resolve_addr_list
from netpoll.net.sock import (
    ControlFn,
    NetFD,
    RawConn,
    accept,
    accept_tcp,
    favorite_family,
    socket,
)

_SOTYPE = {
    "unix": _socket.SOCK_STREAM,
    "unixpacket": _socket.SOCK_SEQPACKET,
    "unixgram": _socket.SOCK_DGRAM,
}


class Listener:
    """A stream listener (Go's ``net.Listener``); see TCPListener / UnixListener."""

    def __init__(self, nfd: NetFD, config: ListenConfig) -> None:
        self._nfd = nfd
        self._fd = nfd.fd
        self._config = config
        self._closed = False
        self._close_lock = threading.Lock()
        finalizer_started()  # __del__ cannot start it

    def _error(self, op: str, exc: BaseException, syscall: str = "") -> OpError:
        return op_error(op, self._nfd.net, None, self._nfd.laddr, exc, syscall)

    def _accept_nfd(self) -> NetFD:
        try:
            return accept(self._nfd)
        except OSError as exc:
            raise self._error("accept", exc, "accept") from None

    def accept(self) -> Conn:
        """Wait for and return the next connection.

        Parks until a connection arrives, the deadline passes (an OpError
        that is a :class:`TimeoutError`) or the listener is closed from
        another thread (ErrClosed).
        """
        raise NotImplementedError

    def addr(self) -> Addr:
        """The listening address (with the port the OS picked for ``:0``)."""
        laddr = self._nfd.laddr
        assert laddr is not None
        return laddr

    def set_deadline(self, t: Any) -> None:
        """Accept deadline: a time.time() float or datetime; None clears."""
        d = as_deadline(t)
        try:
            self._fd.set_deadline(d)
        except OSError as exc:
            raise self._error("set", exc) from None

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def close(self) -> None:
        """Stop listening; a parked accept fails with ErrClosed.  Idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._before_close()
        try:
            self._fd.close()
        except NetClosingError:
            pass
        except OSError as exc:
            raise self._error("close", exc, "close") from None

    def _before_close(self) -> None:
        pass

    def __del__(self) -> None:
        # Go sets a finalizer on every netFD; an unreferenced open listener is
        # closed through the poller (not just by the socket object's own
        # finalizer, which would leave its pollDesc registered).
        if not getattr(self, "_closed", True) and not sys.is_finalizing():
            warnings.warn(f"unclosed listener {self!r}", ResourceWarning, stacklevel=2)
            queue_close(self.close)  # on the finalizer thread: see core/finalizer.py

    def fileno(self) -> int:
        """The OS descriptor number."""
        return int(self._fd.sysfd)

    def syscall_conn(self) -> RawConn:
        """A :class:`RawConn` for the listening descriptor."""
        return RawConn(self._fd)

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<{type(self).__name__} {self._nfd.net} {self._nfd.laddr} {state}>"


class TCPListener(Listener):
    """A TCP listener (Go's ``TCPListener``)."""

    def accept(self) -> TCPConn:
        """Accept a TCP connection: TCP_NODELAY on, keep-alive per the ListenConfig."""
        try:
            nfd = accept_tcp(self._nfd, self._config.keep_alive)
        except OSError as exc:
            raise self._error("accept", exc, "accept") from None
        return TCPConn(nfd)

    def addr(self) -> TCPAddr:
        """The listening TCP address."""
        a = super().addr()
        assert isinstance(a, TCPAddr)
        return a


class UnixListener(Listener):
    """A Unix-domain stream or seqpacket listener (Go's ``UnixListener``).

    Removes its socket file on close if it created it (not for abstract
    names); :meth:`set_unlink_on_close` changes that.
    """

    def __init__(self, nfd: NetFD, config: ListenConfig, path: str, unlink: bool) -> None:
        super().__init__(nfd, config)
        self._path = path
        self._unlink = unlink

    def accept(self) -> UnixConn:
        """Accept a Unix connection."""
        return UnixConn(self._accept_nfd())

    def addr(self) -> UnixAddr:
        """The listening Unix address."""
        a = super().addr()
        assert isinstance(a, UnixAddr)
        return a

    def set_unlink_on_close(self, unlink: bool) -> None:
        """Whether close removes the socket file (Go's ``SetUnlinkOnClose``)."""
        self._unlink = unlink

    def _before_close(self) -> None:
        if self._unlink and self._path and not self._path.startswith("@"):
            try:
                os.unlink(self._path)
            except OSError:
                pass


class ListenConfig:
    """Options for listening (Go's ``ListenConfig``).

    ``control(network, address, raw_conn)`` runs after the socket is created
    and before bind, e.g. to set SO_REUSEPORT.  ``keep_alive`` applies to
    accepted TCP conns: 0 = Go's default (15 s idle and interval), negative =
    off, positive = that period in seconds.  ``backlog`` overrides the
    listen backlog (default: /proc/sys/net/core/somaxconn, as Go).
    """

    def __init__(
        self,
        control: ControlFn | None = None,
        keep_alive: float = 0.0,
        backlog: int | None = None,
    ) -> None:
        self.control = control
        self.keep_alive = keep_alive
        self.backlog = backlog

    @overload
    def listen(self, network: Literal["tcp", "tcp4", "tcp6"], address: str) -> TCPListener: ...
    @overload
    def listen(self, network: Literal["unix", "unixpacket"], address: str) -> UnixListener: ...
    @overload
    def listen(self, network: str, address: str) -> TCPListener | UnixListener: ...

    def listen(self, network: str, address: str) -> TCPListener | UnixListener:
        """Listen on ``network`` ("tcp", "tcp4", "tcp6", "unix", "unixpacket") at ``address``.

        ``"tcp"`` with a wildcard host (``":0"``, ``"[::]:80"``, ``"0.0.0.0:0"``
        is IPv4 only) listens on both IPv4 and IPv6 where the machine allows.
        """
        try:
            addrs = resolve_addr_list("listen", network, address)
        except OSError as exc:
            raise op_error("listen", network, None, None, exc) from None
        la = first_ipv4(addrs)
        if network not in TCP_NETWORKS and network not in ("unix", "unixpacket"):
            err = AddrError(
                "unexpected address type (use listen_packet for packet networks)", address
            )
            raise op_error("listen", network, None, la, err)
        try:
            if isinstance(la, TCPAddr):
                return self._listen_tcp(network, la)
            assert isinstance(la, UnixAddr)
            return self._listen_unix(network, la)
        except OSError as exc:
            raise op_error("listen", network, None, la, exc) from None

    def _listen_tcp(self, network: str, la: TCPAddr) -> TCPListener:
        family, ipv6only = favorite_family(network, la, None, "listen")
        nfd = socket(
            None,
            network,
            family,
            _socket.SOCK_STREAM,
            0,
            ipv6only,
            la,
            None,
            self.control,
            self.backlog,
        )
        if self.control is None:
            bound = nfd.laddr
            if isinstance(bound, TCPAddr) and not bound.is_wildcard():
                nfd.accept_laddr = bound
        return TCPListener(nfd, self)

    def _listen_unix(self, network: str, la: UnixAddr) -> UnixListener:
        nfd = socket(
            None,
            network,
            _socket.AF_UNIX,
            _SOTYPE[network],
            0,
            False,
            la,
            None,
            self.control,
            self.backlog,
        )
        return UnixListener(nfd, self, la.name, unlink=not la.is_abstract())

    @overload
    def listen_packet(self, network: Literal["udp", "udp4", "udp6"], address: str) -> UDPConn: ...
    @overload
    def listen_packet(self, network: Literal["unixgram"], address: str) -> UnixConn: ...
    @overload
    def listen_packet(self, network: str, address: str) -> UDPConn | UnixConn: ...

    def listen_packet(self, network: str, address: str) -> UDPConn | UnixConn:
        """A packet conn on ``network`` ("udp", "udp4", "udp6", "unixgram") at ``address``."""
        try:
            addrs = resolve_addr_list("listen", network, address)
        except OSError as exc:
            raise op_error("listen", network, None, None, exc) from None
        la = first_ipv4(addrs)
        try:
            if isinstance(la, UDPAddr):
                family, ipv6only = favorite_family(network, la, None, "listen")
                nfd = socket(
                    None, network, family, _socket.SOCK_DGRAM, 0, ipv6only, la, None, self.control
                )
                return UDPConn(nfd)
            if isinstance(la, UnixAddr) and network == "unixgram":
                nfd = socket(
                    None,
                    network,
                    _socket.AF_UNIX,
                    _socket.SOCK_DGRAM,
                    0,
                    False,
                    la,
                    None,
                    self.control,
                )
                return UnixConn(nfd)
            if network in UNIX_NETWORKS:
                raise UnknownNetworkError(network)
        except OSError as exc:
            raise op_error("listen", network, None, la, exc) from None
        err = AddrError("unexpected address type (use listen for stream networks)", address)
        raise op_error("listen", network, None, la, err)


@overload
def listen(network: Literal["tcp", "tcp4", "tcp6"], address: str) -> TCPListener: ...
@overload
def listen(network: Literal["unix", "unixpacket"], address: str) -> UnixListener: ...
@overload
def listen(network: str, address: str) -> TCPListener | UnixListener: ...


def listen(network: str, address: str) -> TCPListener | UnixListener:
    """Listen with default options (Go's ``net.Listen``)."""
    return ListenConfig().listen(network, address)


@overload
def listen_packet(network: Literal["udp", "udp4", "udp6"], address: str) -> UDPConn: ...
@overload
def listen_packet(network: Literal["unixgram"], address: str) -> UnixConn: ...
@overload
def listen_packet(network: str, address: str) -> UDPConn | UnixConn: ...


def listen_packet(network: str, address: str) -> UDPConn | UnixConn:
    """A packet conn with default options (Go's ``net.ListenPacket``)."""
    return ListenConfig().listen_packet(network, address)


_ = UDP_NETWORKS

__all__ = ["ListenConfig", "Listener", "TCPListener", "UnixListener", "listen", "listen_packet"]
