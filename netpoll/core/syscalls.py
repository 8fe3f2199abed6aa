"""The real system calls: the default plugin behind the syscall hooks.

Go's defaults are ``syscall.Socket``, ``syscall.Connect`` and friends, assigned
to the function variables of ``net/hook_unix.go`` and
``internal/poll/hook_unix.go``.  Here they are this module's functions, each a
``trylast`` hook implementation, and the module itself is the plugin (the
plugin manager registers it under the name ``netpoll.syscalls``).  While no
other plugin implements a hook, the syscall table holds the function below
itself, and for ``read`` and ``write`` the table's ``read_direct`` /
``write_direct`` flags let ``FD`` call the socket method without it.

The functions are named after their hooks, and they are the bottom of each
hook's chain: a fault plugin's I/O hook that cuts a buffer passes it on
down the chain, which ends here.
"""

from __future__ import annotations

import os as _os
import socket as _socket
from _socket import socket as _CSocket
from typing import TYPE_CHECKING

from netpoll.core.hookspecs import Address, hookimpl

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

_new_socket = _CSocket.__new__

# SOCK_NONBLOCK/SOCK_CLOEXEC exist on Linux and the BSDs; macOS lacks them, so
# the flags are applied after the call there (Go's sysSocket fallback).
_SOCK_FLAGS = getattr(_socket, "SOCK_NONBLOCK", 0) | getattr(_socket, "SOCK_CLOEXEC", 0)


@hookimpl(trylast=True)
def socket(family: int, type: int, proto: int) -> _socket.socket:
    """Create a non-blocking, close-on-exec socket; see :func:`netpoll.core.hookspecs.socket`."""
    sock = _socket.socket(family, type | _SOCK_FLAGS, proto)
    # Python's socket object keeps its own timeout; 0.0 makes every method a
    # plain non-blocking syscall (EAGAIN surfaces as BlockingIOError).
    sock.setblocking(False)
    return sock


@hookimpl(trylast=True)
def connect(sock: _socket.socket, address: Address) -> None:
    """Start a non-blocking connect; BlockingIOError means in progress."""
    sock.connect(address)


@hookimpl(trylast=True)
def listen(sock: _socket.socket, backlog: int) -> None:
    """Listen with the given backlog."""
    sock.listen(backlog)


@hookimpl(trylast=True)
def accept(sock: _socket.socket) -> tuple[_socket.socket, Address]:
    """Accept one connection as a non-blocking, close-on-exec socket."""
    # _accept() is accept4(SOCK_CLOEXEC) where the OS has it, without the
    # Python-level work of socket.accept() (two enum conversions of the
    # listener's family and type): the new socket reads its own family, type
    # and protocol from the descriptor.  Python does not pass SOCK_NONBLOCK,
    # so the new socket is switched explicitly.
    fd, addr = sock._accept()  # type: ignore[attr-defined]
    try:
        # socket.socket(fileno=fd) without its Python __init__ (CPython's
        # Lib/socket.py: the C init, which reads family, type and protocol
        # from the descriptor, then two attributes): once per accepted conn.
        conn = _new_socket(_socket.socket)
        _CSocket.__init__(conn, -1, -1, -1, fd)
        conn._io_refs = 0  # type: ignore[attr-defined]
        conn._closed = False  # type: ignore[attr-defined]
    except BaseException:
        _os.close(fd)
        raise
    conn.setblocking(False)
    return conn, addr


@hookimpl(trylast=True)
def getsockopt_int(sock: _socket.socket, level: int, option: int) -> int:
    """Read an integer socket option."""
    return sock.getsockopt(level, option)


@hookimpl(trylast=True)
def close(sock: _socket.socket) -> None:
    """Close the descriptor."""
    if type(sock) is _socket.socket and sock._io_refs <= 0:  # type: ignore[attr-defined]
        # What socket.socket.close and its _real_close do (CPython's
        # Lib/socket.py) with no makefile() object open, without their two
        # Python calls: once per closed connection.
        sock._closed = True  # type: ignore[attr-defined]
        _CSocket.close(sock)
    else:
        sock.close()


@hookimpl(trylast=True)
def read(sock: _socket.socket, buf: WriteableBuffer) -> int:
    """recv_into: bytes read, 0 at EOF, BlockingIOError when empty."""
    return sock.recv_into(buf)


@hookimpl(trylast=True)
def write(sock: _socket.socket, data: ReadableBuffer) -> int:
    """send: bytes taken by the OS, BlockingIOError when full."""
    return sock.send(data)


@hookimpl(trylast=True)
def recvfrom(sock: _socket.socket, buf: WriteableBuffer) -> tuple[int, Address]:
    """recvfrom_into: one datagram and its sender."""
    return sock.recvfrom_into(buf)


@hookimpl(trylast=True)
def sendto(sock: _socket.socket, data: ReadableBuffer, address: Address) -> int:
    """sendto: one datagram to ``address``."""
    return sock.sendto(data, address)
