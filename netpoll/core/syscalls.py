"""The real system calls: the default plugin behind the syscall hooks.

Go's defaults are ``syscall.Socket``, ``syscall.Connect`` and friends, assigned
to the function variables of ``net/hook_unix.go`` and
``internal/poll/hook_unix.go``.  Here they are ``trylast`` hook implementations
on :class:`OSSyscalls`, so any other plugin runs before them.

Each method also exists as a plain module-level function (``sys_read`` ...),
which is what the syscall table calls directly when nobody wraps the hook: the
hot path then costs one Python call on top of the socket method.
"""

from __future__ import annotations

import socket as _socket
from collections.abc import Callable
from typing import Any

from netpoll.core.hookspecs import Address, hookimpl

# SOCK_NONBLOCK/SOCK_CLOEXEC exist on Linux and the BSDs; macOS lacks them, so
# the flags are applied after the call there (Go's sysSocket fallback).
_SOCK_FLAGS = getattr(_socket, "SOCK_NONBLOCK", 0) | getattr(_socket, "SOCK_CLOEXEC", 0)


def sys_socket(family: int, type: int, proto: int) -> _socket.socket:
    """Create a non-blocking, close-on-exec socket."""
    sock = _socket.socket(family, type | _SOCK_FLAGS, proto)
    # Python's socket object keeps its own timeout; 0.0 makes every method a
    # plain non-blocking syscall (EAGAIN surfaces as BlockingIOError).
    sock.setblocking(False)
    return sock


def sys_connect(sock: _socket.socket, address: Address) -> None:
    """Start a non-blocking connect; BlockingIOError means in progress."""
    sock.connect(address)


def sys_listen(sock: _socket.socket, backlog: int) -> None:
    """Listen with the given backlog."""
    sock.listen(backlog)


def sys_accept(sock: _socket.socket) -> tuple[_socket.socket, Address]:
    """Accept one connection as a non-blocking, close-on-exec socket."""
    # socket.accept() uses accept4(SOCK_CLOEXEC) where the OS has it; Python
    # does not pass SOCK_NONBLOCK, so the new socket is switched explicitly.
    conn, addr = sock.accept()
    conn.setblocking(False)
    return conn, addr


def sys_getsockopt_int(sock: _socket.socket, level: int, option: int) -> int:
    """Read an integer socket option."""
    return sock.getsockopt(level, option)


def sys_close(sock: _socket.socket) -> None:
    """Close the descriptor."""
    sock.close()


def sys_read(sock: _socket.socket, buf: Any) -> int:
    """recv_into: bytes read, 0 at EOF, BlockingIOError when empty."""
    return sock.recv_into(buf)


def sys_write(sock: _socket.socket, data: Any) -> int:
    """send: bytes taken by the OS, BlockingIOError when full."""
    return sock.send(data)


def sys_recvfrom(sock: _socket.socket, buf: Any) -> tuple[int, Address]:
    """recvfrom_into: one datagram and its sender."""
    return sock.recvfrom_into(buf)


def sys_sendto(sock: _socket.socket, data: Any, address: Address) -> int:
    """sendto: one datagram to ``address``."""
    return sock.sendto(data, address)


#: hook name -> the direct function the syscall table uses when unwrapped.
DIRECT: dict[str, Callable[..., Any]] = {
    "socket": sys_socket,
    "connect": sys_connect,
    "listen": sys_listen,
    "accept": sys_accept,
    "getsockopt_int": sys_getsockopt_int,
    "close": sys_close,
    "read": sys_read,
    "write": sys_write,
    "recvfrom": sys_recvfrom,
    "sendto": sys_sendto,
}


class OSSyscalls:
    """The default plugin: every syscall hook, calling the OS (``trylast``)."""

    @hookimpl(trylast=True)
    def socket(self, family: int, type: int, proto: int) -> _socket.socket:
        """Create a socket; see :func:`netpoll.core.hookspecs.socket`."""
        return sys_socket(family, type, proto)

    @hookimpl(trylast=True)
    def connect(self, sock: _socket.socket, address: Address) -> None:
        """Connect; see :func:`netpoll.core.hookspecs.connect`."""
        sys_connect(sock, address)

    @hookimpl(trylast=True)
    def listen(self, sock: _socket.socket, backlog: int) -> None:
        """Listen; see :func:`netpoll.core.hookspecs.listen`."""
        sys_listen(sock, backlog)

    @hookimpl(trylast=True)
    def accept(self, sock: _socket.socket) -> tuple[_socket.socket, Address]:
        """Accept; see :func:`netpoll.core.hookspecs.accept`."""
        return sys_accept(sock)

    @hookimpl(trylast=True)
    def getsockopt_int(self, sock: _socket.socket, level: int, option: int) -> int:
        """Get an int option; see :func:`netpoll.core.hookspecs.getsockopt_int`."""
        return sys_getsockopt_int(sock, level, option)

    @hookimpl(trylast=True)
    def close(self, sock: _socket.socket) -> None:
        """Close; see :func:`netpoll.core.hookspecs.close`."""
        sys_close(sock)

    @hookimpl(trylast=True)
    def read(self, sock: _socket.socket, buf: Any) -> int:
        """Read; see :func:`netpoll.core.hookspecs.read`."""
        return sys_read(sock, buf)

    @hookimpl(trylast=True)
    def write(self, sock: _socket.socket, data: Any) -> int:
        """Write; see :func:`netpoll.core.hookspecs.write`."""
        return sys_write(sock, data)

    @hookimpl(trylast=True)
    def recvfrom(self, sock: _socket.socket, buf: Any) -> tuple[int, Address]:
        """Receive a datagram; see :func:`netpoll.core.hookspecs.recvfrom`."""
        return sys_recvfrom(sock, buf)

    @hookimpl(trylast=True)
    def sendto(self, sock: _socket.socket, data: Any, address: Address) -> int:
        """Send a datagram; see :func:`netpoll.core.hookspecs.sendto`."""
        return sys_sendto(sock, data, address)
