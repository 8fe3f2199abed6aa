"""A :class:`socket.socket`-shaped adapter over a netpoll conn.

Go has no counterpart (Go code takes a ``net.Conn``); Python's stdlib and
libraries take a socket.  :class:`ConnSocket` gives them the socket methods
they call (``recv``, ``recv_into``, ``send``, ``sendall``, ``makefile``,
``settimeout``/``gettimeout``/``setblocking``, ``setsockopt``/``getsockopt``,
``getpeername``/``getsockname``, ``shutdown``, ``fileno``, ``close``,
``detach``, ``family``/``type``/``proto``) on top of the conn's parking
``readinto``/``write``, so :mod:`http.client`, :mod:`urllib`, ``smtplib``-style
code and redis-py's connection run over netpoll.  :func:`netpoll.create_connection`
is :func:`socket.create_connection` on :class:`~netpoll.net.dial.Dialer`.

How socket semantics map:

* a timeout (``settimeout(t)``, ``t > 0``) becomes a deadline ``now + t``
  set before each call (``sendall`` gets one for the whole call, as the
  stdlib does); expiry raises the conn's OpError, which is a
  :class:`TimeoutError` (= :class:`socket.timeout`);
* ``settimeout(None)`` / ``setblocking(True)`` clear the deadlines;
* ``setblocking(False)`` / ``settimeout(0)``: each call tries the system call
  once and raises :class:`BlockingIOError` on ``EAGAIN`` (plain conns only:
  over TLS non-blocking mode raises :class:`ValueError`);
* ``makefile`` returns the same files as ``Conn.makefile``
  (:mod:`netpoll.net.connfile`: reads refused after a timeout, as socket
  files do) over the adapter, and ``close`` waits for those files to be
  closed too, like a socket.

What it does not do: ``recv``/``send`` flags other than 0, ``sendmsg``/
``recvmsg`` (use ``conn.syscall_conn().read/write`` for those), ``dup``,
``accept``/``bind``/``listen``/``connect`` (it is a connected stream).
``ssl.SSLContext.wrap_socket(adapter)`` works by *taking the descriptor over*
(``detach``): the result is an ordinary stdlib :class:`ssl.SSLSocket` doing
its own blocking I/O, outside netpoll; for TLS on netpoll's parking I/O use
``netpoll.tls.client(conn, ctx).as_socket()`` or ``netpoll.tls.wrap_socket``.
"""

from __future__ import annotations

import errno
import os
import socket as _socket
import threading
import time
from typing import Any

from netpoll.net.addr import TCPAddr, UnixAddr, join_host_port
from netpoll.net.connfile import ConnFile, make_file

__all__ = ["ConnSocket", "address_text"]


def _net_conn(conn: Any) -> Any:
    """The plain netpoll conn under ``conn`` (through TLS layers), or None."""
    seen = 0
    while conn is not None and getattr(conn, "_nfd", None) is None and seen < 16:
        inner = getattr(conn, "net_conn", None)
        conn = inner() if inner is not None else None
        seen += 1
    return conn


def _ebadf() -> OSError:
    return OSError(errno.EBADF, "Bad file descriptor")


class ConnSocket:
    """A connected stream "socket" whose I/O is a netpoll conn's (see the module doc).

    Made by ``conn.as_socket()`` or :func:`create_connection`; owns the conn:
    closing the adapter (and every file from :meth:`makefile`) closes it.
    """

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._base = _net_conn(conn)
        self._timeout: float | None = None
        self._deadlines_set = False
        self._closed = False  # close() was called
        self._dead = False  # the conn is closed or handed over
        self._io_refs = 0
        self._lock = threading.Lock()
        nfd = getattr(self._base, "_nfd", None)
        self.family: int = nfd.family if nfd is not None else _socket.AF_UNIX
        self.type: int = nfd.sotype if nfd is not None else _socket.SOCK_STREAM
        self.proto: int = 0

    # -- the conn -------------------------------------------------------------------

    def conn(self) -> Any:
        """The netpoll conn this adapter reads and writes."""
        return self._conn

    def take_over(self, old: ConnSocket) -> None:
        """Become the owner of ``old``'s conn (wrapped in this adapter's): take its
        timeout (a non-blocking one becomes blocking) and mark ``old`` closed."""
        self._timeout = old._timeout if old._timeout != 0.0 else None
        old._closed = old._dead = True

    def arm_timeout(self) -> None:
        """Start the timeout now for both directions (bounds a handshake, say)."""
        self._arm(True)
        self._arm(False)

    def _check(self) -> None:
        # Like a socket: after close() the file objects from makefile() keep
        # working until they are closed too; only then is the conn gone.
        if self._dead:
            raise _ebadf()

    # -- timeouts ---------------------------------------------------------------------

    def settimeout(self, value: float | None) -> None:
        """Per-call timeout in seconds (None: block; 0: non-blocking), as a socket's."""
        if value is not None:
            value = float(value)
            if value < 0:
                raise ValueError("Timeout value out of range")
            if value == 0 and self._base is not self._conn:
                raise ValueError("netpoll: non-blocking mode is not supported over TLS")
        self._timeout = value
        if value is None or value == 0:
            self._clear_deadlines()

    def gettimeout(self) -> float | None:
        """The timeout set by :meth:`settimeout` (None: blocking)."""
        return self._timeout

    def setblocking(self, flag: bool) -> None:
        """``True``: ``settimeout(None)``; ``False``: ``settimeout(0.0)``."""
        self.settimeout(None if flag else 0.0)

    def getblocking(self) -> bool:
        """False only in non-blocking mode (timeout 0)."""
        return self._timeout != 0.0

    @property
    def timeout(self) -> float | None:
        """Same as :meth:`gettimeout`."""
        return self._timeout

    def _clear_deadlines(self) -> None:
        if self._deadlines_set and not self._dead:
            self._deadlines_set = False
            try:
                self._conn.set_deadline(None)
            except OSError:
                pass

    def _arm(self, read: bool) -> None:
        t = self._timeout
        if t:
            self._deadlines_set = True
            d = time.time() + t
            if read:
                self._conn.set_read_deadline(d)
            else:
                self._conn.set_write_deadline(d)

    def _nonblocking(self, call: Any, *args: Any) -> Any:
        """One non-blocking attempt on the raw socket, with the descriptor held open."""
        nfd = self._base._nfd
        try:
            nfd.fd.incref()
        except OSError:
            raise _ebadf() from None
        try:
            return call(nfd.sock, *args)
        finally:
            nfd.fd.decref()

    # -- reads --------------------------------------------------------------------------

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        """Read into ``buffer`` (at most ``nbytes`` if given); 0 at EOF."""
        self._check()
        if flags:
            raise ValueError("netpoll: recv flags are not supported")
        raw = memoryview(buffer)
        flat = raw.cast("B")
        view = flat[:nbytes] if nbytes else flat
        try:
            if self._timeout == 0.0:
                return int(self._nonblocking(lambda s, v: s.recv_into(v), view))
            self._arm(True)
            return int(self._conn.readinto(view) or 0)
        finally:
            # Our views of the caller's buffer end here, even where something
            # still references them: the traceback of an EAGAIN that went
            # through a plugin's read wrapper (a Switch, a fault rule) is a
            # reference cycle that keeps the view until the next gc, and the
            # caller could not resize its bytearray meanwhile (BufferError).
            view.release()
            flat.release()
            raw.release()

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        """Read up to ``bufsize`` bytes; ``b""`` at EOF."""
        buf = bytearray(bufsize)
        n = self.recv_into(buf, bufsize, flags)
        if n == bufsize:
            return bytes(buf)
        # Copy the prefix instead of resizing ``buf``: a view a plugin kept of
        # it would make the resize fail.
        with memoryview(buf) as mv:
            return mv[:n].tobytes()

    # -- writes -----------------------------------------------------------------------------

    def send(self, data: Any, flags: int = 0) -> int:
        """Send ``data``; returns the bytes sent (all of them unless non-blocking)."""
        self._check()
        if flags:
            raise ValueError("netpoll: send flags are not supported")
        if self._timeout == 0.0:
            return int(self._nonblocking(lambda s, d: s.send(d), data))
        self._arm(False)
        self._conn.write(data)
        return memoryview(data).nbytes

    def sendall(self, data: Any, flags: int = 0) -> None:
        """Send all of ``data``; the timeout bounds the whole call."""
        if self._timeout == 0.0:
            view = memoryview(data).cast("B")
            while view:
                view = view[self.send(view, flags) :]
            return
        self.send(data, flags)

    # -- files ---------------------------------------------------------------------------------

    def makefile(
        self,
        mode: str = "r",
        buffering: int | None = None,
        *,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
    ) -> Any:
        """A file object over the adapter, as :meth:`socket.socket.makefile` makes.

        The same file as :meth:`netpoll.net.conn.Conn.makefile`'s (see
        :mod:`netpoll.net.connfile`), over this adapter's ``recv_into`` and
        ``send``: once a read times out (the ``settimeout`` limit or the
        conn's deadline), later reads through the file are refused; in
        non-blocking mode a read or write that would block returns None.
        The adapter closes the conn once it and every such file are closed.
        """

        def raw(rawmode: str) -> ConnFile:
            self._io_refs += 1
            return ConnFile(
                rawmode,
                readinto=self.recv_into,
                write=self.send,
                fileno=self.fileno,
                on_close=self._decref_socketios,
            )

        return make_file(mode, buffering, encoding, errors, newline, raw)

    def _decref_socketios(self) -> None:
        # Called when a makefile() file closes (the stdlib's name for it).
        if self._io_refs > 0:
            self._io_refs -= 1
        if self._closed and self._io_refs <= 0:
            self._real_close()

    # -- socket options and addresses -----------------------------------------------------------

    def _sock_call(self, fn: Any) -> Any:
        self._check()
        nfd = getattr(self._base, "_nfd", None)
        if nfd is None:
            raise OSError(errno.ENOTSOCK, "netpoll: this conn has no socket")
        try:
            nfd.fd.incref()
        except OSError:
            raise _ebadf() from None
        try:
            return fn(nfd.sock)
        finally:
            nfd.fd.decref()

    def setsockopt(self, level: int, option: int, value: Any, optlen: int | None = None) -> None:
        """setsockopt on the descriptor."""
        if optlen is not None:
            self._sock_call(lambda s: s.setsockopt(level, option, value, optlen))
        else:
            self._sock_call(lambda s: s.setsockopt(level, option, value))

    def getsockopt(self, level: int, option: int, buflen: int = 0) -> Any:
        """getsockopt on the descriptor."""
        if buflen:
            return self._sock_call(lambda s: s.getsockopt(level, option, buflen))
        return self._sock_call(lambda s: s.getsockopt(level, option))

    def getpeername(self) -> Any:
        """The peer's address, in the socket module's form."""
        return self._sock_call(lambda s: s.getpeername())

    def getsockname(self) -> Any:
        """The local address, in the socket module's form."""
        return self._sock_call(lambda s: s.getsockname())

    def fileno(self) -> int:
        """The descriptor (-1 once closed)."""
        if self._dead:
            return -1
        fileno = getattr(self._conn, "fileno", None)
        return int(fileno()) if fileno is not None else -1

    def shutdown(self, how: int) -> None:
        """SHUT_WR: ``close_write`` (close_notify over TLS); SHUT_RD: ``close_read``."""
        self._check()
        if how in (_socket.SHUT_WR, _socket.SHUT_RDWR):
            self._conn.close_write()
        if how in (_socket.SHUT_RD, _socket.SHUT_RDWR):
            close_read = getattr(self._conn, "close_read", None)
            if close_read is not None:
                close_read()

    # -- close / detach ----------------------------------------------------------------------------

    def close(self) -> None:
        """Close; the conn closes once every :meth:`makefile` file is closed too."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._io_refs <= 0:
            self._real_close()

    def _real_close(self) -> None:
        self._dead = True
        self._conn.close()

    def detach(self) -> int:
        """Hand the descriptor over: netpoll lets go of it without closing it.

        The number returned stays open and becomes the caller's (this is what
        ``ssl.SSLContext.wrap_socket`` and ``socket.socket(fileno=...)`` do
        with it).  Only for plain conns.
        """
        self._check()
        if self._base is not self._conn:
            raise ValueError("netpoll: cannot detach the descriptor under a TLS conn")
        nfd = self._conn._nfd
        fd = int(nfd.sock.detach())  # the socket object forgets it: closing it is a no-op
        self._closed = self._dead = True
        self._conn.close()  # unregisters from the poller; the fd stays open
        os.set_blocking(fd, True)
        return fd

    def __enter__(self) -> ConnSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ConnSocket over {self._conn!r}>"


def address_text(address: Any) -> tuple[str, str]:
    """``(network, "host:port")`` for a socket-style address: a tuple, text or a path."""
    if isinstance(address, tuple):
        return "tcp", join_host_port(str(address[0]), address[1])
    if isinstance(address, (TCPAddr, UnixAddr)):
        return address.network(), str(address)
    text = str(address)
    if text.startswith("/") or text.startswith("@"):
        return "unix", text
    return "tcp", text
