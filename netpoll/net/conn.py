"""Connections: Conn, TCPConn, UnixConn, UDPConn.

Go's ``net/net.go`` (``conn``: Read/Write/Close/LocalAddr/RemoteAddr/
Set*Deadline, each failure wrapped in ``*OpError``), ``net/tcpsock.go`` +
``tcpsock_posix.go`` (``TCPConn``: no-delay, keep-alive, linger,
CloseRead/CloseWrite, buffer sizes), ``net/unixsock.go`` (``UnixConn``) and
``net/udpsock.go`` (``UDPConn``: ReadFrom/WriteTo); ``Conn.writev`` is
``net/net.go``'s ``Buffers`` (``writev``).

A :class:`Conn` is an :class:`io.RawIOBase`: ``readinto`` returns 0 at EOF,
``read`` returns ``b""``, ``write`` writes everything (or raises an OpError
whose ``written`` says how much went out), and it works as a context manager.
For buffered or text I/O use :meth:`Conn.makefile`, not
``io.BufferedReader(conn)``: when a read times out in the middle of a
buffered read, CPython's buffered reader drops the bytes it had already
taken from its buffer, and a later read goes on as if nothing was lost.
``makefile``, like :meth:`socket.socket.makefile`, refuses every read after
a timeout instead (:mod:`netpoll.net.connfile`: the same files as the
socket adapter's).  ``close`` is idempotent, as for every
Python file object; any other operation on a closed conn raises
:class:`~netpoll.net.errors.ErrClosed`, and a ``close`` from another thread
wakes parked reads and writes, which raise ErrClosed too.
"""

from __future__ import annotations

import io
import math
import operator
import os
import socket as _socket
import struct
import sys
import warnings
from collections.abc import Iterable
from time import time as _time
from typing import TYPE_CHECKING, Any

from netpoll.core import finalizer as _finalizer
from netpoll.core.errors import NetClosingError
from netpoll.core.finalizer import ensure_started as finalizer_started
from netpoll.core.finalizer import queue_close
from netpoll.core.hookspecs import MODE_R, MODE_RW, MODE_W
from netpoll.net.addr import (
    UDP_NETWORKS,
    UNIX_NETWORKS,
    Addr,
    TCPAddr,
    UDPAddr,
    UnixAddr,
)
from netpoll.net.connfile import ConnFile, make_file
from netpoll.net.context import RELATIVE_DEADLINE_LIMIT, as_deadline
from netpoll.net.errors import AddrError, NetError, OpError, op_error
from netpoll.net.sock import NetFD, RawConn

if TYPE_CHECKING:
    from netpoll.net.socket_adapter import ConnSocket

#: Read size of :meth:`Conn.readall` per syscall.
READALL_CHUNK = 64 * 1024


#: Buffers per ``sendmsg`` in :meth:`Conn.writev` (the OS's IOV_MAX).
def _iov_max() -> int:
    try:
        return max(16, int(os.sysconf("SC_IOV_MAX")))
    except (AttributeError, ValueError, OSError):
        return 1024


_IOV_MAX = _iov_max()


def int_arg(method: str, name: str, value: Any) -> int:
    """``value`` as an int for ``method``, or a TypeError naming the argument.

    Socket options take C ints; without this a string reaches
    ``setsockopt`` and fails with "a bytes-like object is required".
    A bool is refused too: ``set_read_buffer(True)`` is a mistake.
    """
    if not isinstance(value, bool):
        try:
            return operator.index(value)
        except TypeError:
            pass
    raise TypeError(f"netpoll: {method}: {name} must be an int, not {type(value).__name__}")


def bool_arg(method: str, name: str, value: Any) -> bool:
    """``value`` as a bool for ``method`` (a bool or an int), or a TypeError naming it."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    raise TypeError(f"netpoll: {method}: {name} must be a bool, not {type(value).__name__}")


class WriteToConnectedError(NetError):
    """write_to on a connected packet conn (Go's ``ErrWriteToConnected``)."""

    def __init__(self) -> None:
        import errno

        super().__init__(errno.EISCONN, "use of WriteTo with pre-connected connection")


class Conn(io.RawIOBase):
    """A stream or connected packet connection (Go's ``net.Conn``).

    Not created directly: :func:`~netpoll.net.dial.dial` and listeners'
    ``accept`` return the concrete subclass for the network.
    """

    def __init__(self, nfd: NetFD) -> None:
        super().__init__()
        self._nfd = nfd
        self._fd = nfd.fd
        if _finalizer._thread is None:  # ensure_started's own test, inline
            finalizer_started()  # __del__ cannot start it

    # -- errors ------------------------------------------------------------

    def _error(self, op: str, exc: BaseException, syscall: str = "", addr: Any = None) -> OpError:
        nfd = self._nfd
        return op_error(op, nfd.net, nfd.laddr, nfd.raddr if addr is None else addr, exc, syscall)

    # -- io.RawIOBase --------------------------------------------------------

    def readable(self) -> bool:
        """Always True."""
        return True

    def writable(self) -> bool:
        """Always True."""
        return True

    def readinto(self, buffer: Any) -> int:
        """Read into ``buffer``; returns the count, 0 at EOF.

        Parks until data arrives, the read deadline passes (OpError that is a
        :class:`TimeoutError`) or the conn is closed (ErrClosed).
        """
        try:
            return self._fd.readinto(buffer)
        except OSError as exc:
            raise self._error("read", exc, "read") from None

    def read(self, size: int | None = -1) -> bytes:
        """Read up to ``size`` bytes (``b""`` at EOF); ``-1``/None reads to EOF."""
        if size is None or size < 0:
            return self.readall()
        try:
            return self._fd.read(size)
        except OSError as exc:
            raise self._error("read", exc, "read") from None

    def readall(self) -> bytes:
        """Read until EOF."""
        chunks = bytearray()
        buf = bytearray(READALL_CHUNK)
        view = memoryview(buf)
        while True:
            n = self.readinto(view)
            if n == 0:
                return bytes(chunks)
            chunks += view[:n]

    def write(self, b: Any) -> int:
        """Write all of ``b``; returns ``len(b)``.

        On failure raises an OpError whose ``written`` attribute is the
        number of bytes that went out before the error.
        """
        try:
            return self._fd.write(b)
        except OSError as exc:
            raise self._error("write", exc, "write") from None

    def close(self) -> None:
        """Close the conn; parked operations in other threads fail with ErrClosed.

        Returns once the descriptor is closed.  Closing twice is a no-op.
        """
        if self.closed:
            return
        try:
            self._fd.close()
        except NetClosingError:
            pass  # closed concurrently by another thread
        except OSError as exc:
            raise self._error("close", exc, "close") from None
        finally:
            super().close()

    def __del__(self) -> None:
        # Like Go's netFD finalizer (and Python's FileIO): close what was
        # dropped while open, through the poller, with a ResourceWarning.
        if not getattr(self, "_nfd", None) or self.closed or sys.is_finalizing():
            # At interpreter shutdown a daemon thread frozen while holding a
            # runtime lock would hang the close; the process exits anyway.
            return
        warnings.warn(f"unclosed connection {self!r}", ResourceWarning, stacklevel=2)
        # Not here: the collector may run in a thread holding a lock the
        # close path takes; the finalizer thread closes it (Go's runfinq).
        queue_close(self.close)

    def fileno(self) -> int:
        """The OS descriptor number (for select() or socket options)."""
        return int(self._fd.sysfd)

    # -- addresses -------------------------------------------------------------

    def local_addr(self) -> Addr | None:
        """The local address (Go's ``LocalAddr``)."""
        return self._nfd.laddr

    def remote_addr(self) -> Addr | None:
        """The remote address, or None for an unconnected packet conn."""
        return self._nfd.raddr

    # -- deadlines -----------------------------------------------------------

    def set_deadline(self, t: Any) -> None:
        """Set read and write deadlines: a time.time() float or datetime; None clears.

        Absolute, effective at once for operations already parked; a past
        deadline makes I/O fail with a timeout until it is moved.
        """
        self._set_deadline(t, MODE_RW)

    def set_read_deadline(self, t: Any) -> None:
        """Set the read deadline (see :meth:`set_deadline`)."""
        # The per-message case, a time.time() float, in one step; anything
        # else (None, a datetime, a bad value) goes through as_deadline.
        if t.__class__ is float:
            remaining = t - _time()
            if remaining >= -RELATIVE_DEADLINE_LIMIT:  # False for NaN too
                try:
                    self._fd.set_deadline_in(remaining, MODE_R)
                except OSError as exc:
                    raise self._error("set", exc) from None
                return
        self._set_deadline(t, MODE_R)

    def set_write_deadline(self, t: Any) -> None:
        """Set the write deadline (see :meth:`set_deadline`)."""
        self._set_deadline(t, MODE_W)

    def _set_deadline(self, t: Any, mode: int) -> None:
        d = as_deadline(t)
        try:
            if d is None:
                self._fd.set_deadline_in(math.inf, mode)
            else:
                self._fd.set_deadline_in(d - _time(), mode)
        except OSError as exc:
            raise self._error("set", exc) from None

    # -- raw access -------------------------------------------------------------

    def syscall_conn(self) -> RawConn:
        """A :class:`RawConn` for the descriptor (Go's ``SyscallConn``)."""
        return RawConn(self._fd, self._nfd)

    def writev(self, buffers: Iterable[Any]) -> int:
        """Write every buffer, in order, with as few ``sendmsg`` calls as possible.

        Go's ``net.Buffers.WriteTo`` (``writev``): one system call for many
        buffers, parking when the socket buffer is full, under the write
        deadline.  Returns the total bytes; on failure raises an OpError whose
        ``written`` says how much went out first.  The call goes straight to
        the OS (``RawConn.write``), not through the ``write`` syscall hook.
        """
        views = [v for v in (memoryview(b).cast("B") for b in buffers) if v.nbytes]
        total = sum(v.nbytes for v in views)
        sock = self._nfd.sock
        sent = 0
        pos = 0

        def attempt(_fd: int) -> bool:
            nonlocal sent, pos
            while pos < len(views):
                try:
                    n = sock.sendmsg(views[pos : pos + _IOV_MAX])
                except BlockingIOError:
                    return False
                except InterruptedError:
                    continue
                sent += n
                while n and pos < len(views):
                    v = views[pos]
                    if n >= v.nbytes:
                        n -= v.nbytes
                        pos += 1
                    else:
                        views[pos] = v[n:]
                        n = 0
            return True

        if total == 0:
            return 0
        try:
            self._fd.raw_io(MODE_W, attempt)
        except OSError as exc:
            exc.written = sent  # type: ignore[attr-defined]
            raise self._error("write", exc, "sendmsg") from None
        return total

    def as_socket(self) -> ConnSocket:
        """A :class:`socket.socket`-like adapter for stdlib and library code.

        See :mod:`netpoll.net.socket_adapter`: ``recv``/``send``/``sendall``/
        ``makefile``/timeouts/options on this conn's parking I/O, so
        ``http.client``, ``urllib`` and friends run over netpoll.  The adapter
        owns the conn.
        """
        from netpoll.net.socket_adapter import ConnSocket

        return ConnSocket(self)

    def _setsockopt(self, level: int, opt: int, value: int | bytes) -> None:
        try:
            self._nfd.setsockopt(level, opt, value)
        except OSError as exc:
            raise self._error("set", exc) from None

    def set_read_buffer(self, nbytes: int) -> None:
        """SO_RCVBUF: the OS receive buffer size (an int; TypeError otherwise)."""
        nbytes = int_arg("set_read_buffer", "nbytes", nbytes)
        self._setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVBUF, nbytes)

    def set_write_buffer(self, nbytes: int) -> None:
        """SO_SNDBUF: the OS send buffer size (an int; TypeError otherwise)."""
        nbytes = int_arg("set_write_buffer", "nbytes", nbytes)
        self._setsockopt(_socket.SOL_SOCKET, _socket.SO_SNDBUF, nbytes)

    def makefile(
        self,
        mode: str = "r",
        buffering: int | None = None,
        *,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
    ) -> Any:
        """A file object over the conn, like :meth:`socket.socket.makefile`.

        ``mode`` is made of "r", "w" and "b"; ``buffering`` 0 (binary only)
        gives the raw file.  Once a read through the file times out (the
        read deadline passed), every later read through it raises
        :class:`OSError`: the buffered read may have dropped data.  Closing
        the file does not close the conn; closing the conn makes the file's
        operations fail with ErrClosed.  The same behaviour as the files of
        :meth:`as_socket`'s adapter: see :mod:`netpoll.net.connfile`.
        """

        def raw(rawmode: str) -> ConnFile:
            return ConnFile(rawmode, readinto=self.readinto, write=self.write, fileno=self.fileno)

        return make_file(mode, buffering, encoding, errors, newline, raw)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return (
            f"<{type(self).__name__} {self._nfd.net} {self._nfd.laddr}->{self._nfd.raddr} {state}>"
        )


class _ShutdownMixin(Conn):
    """close_read / close_write: shutdown(2) for stream conns."""

    def _shutdown(self, how: int) -> None:
        try:
            self._fd.incref()
        except OSError as exc:
            raise self._error("close", exc) from None
        try:
            self._nfd.sock.shutdown(how)
        except OSError as exc:
            raise self._error("close", exc, "shutdown") from None
        finally:
            self._fd.decref()

    def close_read(self) -> None:
        """Shut down the reading side (Go's ``CloseRead``)."""
        self._shutdown(_socket.SHUT_RD)

    def close_write(self) -> None:
        """Shut down the writing side: the peer reads EOF (Go's ``CloseWrite``)."""
        self._shutdown(_socket.SHUT_WR)


class TCPConn(_ShutdownMixin):
    """A TCP connection (Go's ``TCPConn``); TCP_NODELAY is on from the start."""

    def set_no_delay(self, on: bool) -> None:
        """TCP_NODELAY: send small writes at once (True, the default) or coalesce."""
        on = bool_arg("set_no_delay", "on", on)
        self._setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, int(on))

    def set_keep_alive(self, on: bool) -> None:
        """SO_KEEPALIVE."""
        on = bool_arg("set_keep_alive", "on", on)
        self._setsockopt(_socket.SOL_SOCKET, _socket.SO_KEEPALIVE, int(on))

    def set_keep_alive_period(self, seconds: float) -> None:
        """Keep-alive idle time and probe interval, rounded up to whole seconds.

        As Go's ``Dialer.KeepAlive`` and ``ListenConfig.KeepAlive`` read it:
        a **negative** period turns keep-alive **off** (SO_KEEPALIVE 0), and
        0 means Go's default of 15 s.  A positive period does not turn
        keep-alive on by itself (see :meth:`set_keep_alive`).  Raises
        TypeError for a non-number and ValueError for NaN or infinity.
        """
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise TypeError(
                "netpoll: set_keep_alive_period: seconds must be a number, "
                f"not {type(seconds).__name__}"
            )
        if not math.isfinite(seconds):
            raise ValueError(
                f"netpoll: set_keep_alive_period: seconds must be finite, not {seconds}"
            )
        if seconds < 0:
            self._setsockopt(_socket.SOL_SOCKET, _socket.SO_KEEPALIVE, 0)
            return
        try:
            self._nfd.set_keep_alive_period(seconds)
        except OSError as exc:
            raise self._error("set", exc) from None

    def set_linger(self, sec: int) -> None:
        """SO_LINGER: negative = OS default (close returns at once, data sent in the
        background), 0 = discard unsent data and reset, > 0 = linger that many seconds."""
        sec = int_arg("set_linger", "sec", sec)
        onoff, linger = (1, sec) if sec >= 0 else (0, 0)
        self._setsockopt(_socket.SOL_SOCKET, _socket.SO_LINGER, struct.pack("ii", onoff, linger))


class UnixConn(_ShutdownMixin):
    """A Unix-domain connection (Go's ``UnixConn``): unix, unixpacket or unixgram."""

    def read_from(self, b: Any) -> tuple[int, UnixAddr | None]:
        """Receive one datagram (unixgram): ``(nbytes, sender or None if unnamed)``."""
        try:
            n, sa = self._fd.recvfrom_into(b)
        except OSError as exc:
            raise self._error("read", exc, "recvfrom") from None
        addr = UnixAddr.from_sockaddr(sa, self._nfd.net)
        return n, (addr if addr.name else None)

    def write_to(self, b: Any, addr: UnixAddr | str) -> int:
        """Send one datagram to ``addr`` (unixgram); returns the bytes sent."""
        if isinstance(addr, str):
            addr = UnixAddr(addr, self._nfd.net)
        if self._nfd.raddr is not None:
            raise self._error("write", WriteToConnectedError(), addr=addr)
        try:
            return int(self._fd.sendto(b, addr.sockaddr()))
        except OSError as exc:
            raise self._error("write", exc, "sendto", addr=addr) from None


class UDPConn(Conn):
    """A UDP socket (Go's ``UDPConn``): connected (dial) or not (listen_packet)."""

    def read_from(self, b: Any) -> tuple[int, UDPAddr]:
        """Receive one datagram into ``b``: ``(nbytes, sender)``; 0 is an empty datagram."""
        try:
            n, sa = self._fd.recvfrom_into(b)
        except OSError as exc:
            raise self._error("read", exc, "recvfrom") from None
        return n, UDPAddr.from_sockaddr(sa)

    def write_to(self, b: Any, addr: UDPAddr | TCPAddr | str) -> int:
        """Send ``b`` as one datagram to ``addr`` (a UDPAddr or ``"host:port"``)."""
        if isinstance(addr, str):
            from netpoll.net.lookup import resolve_udp_addr

            try:
                addr = resolve_udp_addr(self._nfd.net, addr)
            except OSError as exc:
                raise self._error("write", exc) from None
        if self._nfd.raddr is not None:
            raise self._error("write", WriteToConnectedError(), addr=addr)
        try:
            sa = addr.sockaddr(self._nfd.family)
            return int(self._fd.sendto(b, sa))
        except AddrError as exc:
            raise self._error("write", exc, addr=addr) from None
        except OSError as exc:
            raise self._error("write", exc, "sendto", addr=addr) from None


def new_conn(nfd: NetFD) -> Conn:
    """The Conn subclass for the NetFD's network."""
    if nfd.net in UNIX_NETWORKS:
        return UnixConn(nfd)
    if nfd.net in UDP_NETWORKS:
        return UDPConn(nfd)
    return TCPConn(nfd)


__all__ = [
    "Conn",
    "ConnFile",
    "TCPConn",
    "UDPConn",
    "UnixConn",
    "WriteToConnectedError",
    "new_conn",
]
