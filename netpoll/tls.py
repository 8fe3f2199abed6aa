"""TLS on any netpoll conn: Go's ``crypto/tls`` shape on the stdlib :mod:`ssl` module.

Mirrors Go's ``crypto/tls/tls.go`` (``Client``, ``Server``, ``Dial``,
``DialWithDialer``, ``Listen``, ``NewListener``) and ``crypto/tls/conn.go``
(``Conn``: ``Handshake``, ``Read``, ``Write``, ``Close`` sending close_notify,
``CloseWrite``, ``ConnectionState``, ``NetConn``; the ``in``/``out``/
``handshakeMutex`` locking and the ``activeCall`` interlock between ``Write``
and ``Close``).  No cryptography of our own: the record layer and the
handshake are OpenSSL's, driven through :class:`ssl.SSLObject`, either on
the socket itself or over two :class:`ssl.MemoryBIO` buffers (the two paths
below); either way a TLS operation parks on netpoll's poller, obeys the
wrapped conn's deadlines, and wakes when another thread closes it.

Locking (as in Go, a read and a write may run at the same time in two
threads):

* ``_hs_lock``: one handshake at a time; the first ``read``/``write`` runs it
  implicitly, like Go's ``Conn.Handshake``;
* ``_in_lock``: one reader at a time (Go's ``c.in``), held while parked;
* ``_out_lock``: one writer of ciphertext at a time (Go's ``c.out``), held
  while parked, so records leave in the order they were made;
* ``_ssl_lock``: guards the :class:`ssl.SSLObject` and both BIOs; held only
  around OpenSSL calls that cannot block (memory-only, or on the
  non-blocking socket), never while parked.

On the memory path a reader that makes output (a post-handshake message
needing an answer) hands it to whoever holds ``_out_lock``: that holder
re-checks the outgoing buffer under ``_ssl_lock`` before it lets go, so
nothing is stranded and a reader never waits behind a parked writer.  On
the socket path OpenSSL sends such output itself, and a read that must wait
to send parks for writability (see :meth:`TLSConn._drive`).

Two ways to move the ciphertext, chosen when the :class:`TLSConn` is made
and kept for its life (:attr:`TLSConn.io_path`):

* ``"socket"``, the fast path: the wrapped conn is a plain
  :class:`~netpoll.net.conn.TCPConn` or stream
  :class:`~netpoll.net.conn.UnixConn` and no plugin watches the ``read`` and
  ``write`` syscall hooks (the :class:`~netpoll.core.plugins.SyscallTable`
  entries are the bare functions of :mod:`netpoll.core.syscalls`).  OpenSSL
  then reads and writes the non-blocking socket itself, the way gevent's
  ``ssl`` module does (``SSLContext._wrap_socket`` on a socket object, the
  private constructor the stdlib's ``SSLSocket`` uses too); each
  ``SSLWantRead``/``SSLWantWrite`` parks on the conn's pollDesc through
  ``FD.raw_io`` (Go's ``RawRead``/``RawWrite``), so the conn's deadlines,
  ``close`` from another thread and goroutine parking behave exactly as on
  the other path.  OpenSSL works on a ``dup`` of the conn's descriptor,
  which this conn owns and closes after the wrapped conn: the dup lets the
  close_notify alert be made against a socketpair (``SSL_shutdown`` reads
  after it writes, and application data read then is fatal in OpenSSL; see
  :meth:`TLSConn._shutdown_to_bytes`) and then sent in order on the conn.
  So a socket-path TLSConn holds two descriptors.  Closing only the
  wrapped conn (``net_conn().close()``, say from another thread to break a
  parked read) still ends the connection: the TLS operation it wakes, or
  the next one, finds the conn closed and shuts the dup down (or closes
  it); with no TLS operation at all the connection stays open until the
  TLSConn is closed or collected.
* ``"memory"``: :class:`ssl.SSLObject` over two :class:`ssl.MemoryBIO`
  buffers, every byte of ciphertext through the wrapped conn's
  ``readinto``/``write``.  Used for conns that are not plain sockets
  (:func:`netpoll.pipe`, another TLSConn, custom conns) and whenever a
  plugin watches reads or writes when the TLSConn is made, so a
  :class:`netpoll.testing.Faults` rule in place before the conn exists sees
  (and can break) its TLS traffic.  A plugin registered *after* a
  ``"socket"`` TLSConn was made does not see that conn's traffic: the path
  is not switched under a live TLS session.

Errors are :class:`~netpoll.net.errors.OpError` objects (``op`` is
"handshake", "read", "write" or "close") that keep the ssl error text
(``[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: Hostname
mismatch ...``) and are also instances of the ssl exception class
(``except ssl.SSLCertVerificationError`` works) or, for I/O failures, of the
builtin class (``TimeoutError``, ``ConnectionResetError``, ErrClosed).

The three locks held across a park (``_hs_lock``, ``_in_lock``,
``_out_lock``) are :class:`netpoll.Mutex` es, so a goroutine waiting for one
lets its M run others; the short critical sections around the SSL object
use plain :mod:`threading` locks, never held while parked.  Renegotiation is
whatever OpenSSL does by default.
"""

from __future__ import annotations

import errno
import io
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from netpoll.core import syscalls
from netpoll.core.errors import NetClosingError
from netpoll.core.fd import FD
from netpoll.core.hookspecs import MODE_R, MODE_W
from netpoll.core.runtime import runtime
from netpoll.core.sync import Mutex
from netpoll.net.conn import TCPConn, UnixConn
from netpoll.net.context import as_deadline
from netpoll.net.dial import Dialer
from netpoll.net.errors import OpError, op_error
from netpoll.net.listen import ListenConfig, Listener

if TYPE_CHECKING:
    from netpoll.net.socket_adapter import ConnSocket

__all__ = [
    "ConnectionState",
    "StreamConn",
    "TLSConn",
    "TLSListener",
    "client",
    "dial",
    "listen",
    "new_listener",
    "server",
    "wrap_socket",
]

#: Ciphertext read from the wrapped conn per call.
READ_CHUNK = 256 * 1024
#: Plaintext encrypted per ``SSLObject.write`` call in :meth:`TLSConn.write`.
WRITE_CHUNK = 256 * 1024
#: How long ``close`` may spend sending close_notify (Go: 5 s).
CLOSE_NOTIFY_TIMEOUT = 5.0
#: The largest plaintext of one TLS record.  On the socket path a read goes on
#: to the next record only after a full one (the peer is streaming).
MAX_RECORD = 16384


class StreamConn(Protocol):
    """What :class:`TLSConn` needs from the conn it wraps (any netpoll stream conn).

    A :class:`~netpoll.net.conn.TCPConn`, :class:`~netpoll.net.conn.UnixConn`,
    the ends of :func:`netpoll.pipe`, or another :class:`TLSConn`.
    """

    def readinto(self, buffer: Any, /) -> int | None: ...

    def write(self, b: Any, /) -> int | None: ...

    def close(self) -> None: ...

    def set_deadline(self, t: Any) -> None: ...

    def set_read_deadline(self, t: Any) -> None: ...

    def set_write_deadline(self, t: Any) -> None: ...

    def local_addr(self) -> Any: ...

    def remote_addr(self) -> Any: ...


@dataclass(frozen=True)
class ConnectionState:
    """What the handshake settled (Go's ``tls.ConnectionState``).

    ``version`` ("TLSv1.3"), ``cipher_suite`` (OpenSSL's name), ``cipher_bits``,
    ``negotiated_protocol`` (ALPN, or None), ``server_name`` (the SNI name:
    the one sent by a client, the one received by a server), ``peer_certificate``
    (the decoded dict of :meth:`ssl.SSLObject.getpeercert`, empty when not
    verified or absent), ``peer_certificate_der`` (the DER bytes or None),
    ``did_resume`` (session reused) and ``handshake_complete``.
    """

    handshake_complete: bool
    version: str | None = None
    cipher_suite: str | None = None
    cipher_bits: int | None = None
    negotiated_protocol: str | None = None
    server_name: str | None = None
    peer_certificate: dict[str, Any] = field(default_factory=dict)
    peer_certificate_der: bytes | None = None
    did_resume: bool = False


# -- errors -----------------------------------------------------------------------

_ssl_classes: dict[type[BaseException], type[OpError]] = {}
_ssl_classes_lock = threading.Lock()


def _ssl_op_error(op: str, conn: StreamConn, err: BaseException) -> OpError:
    """``err`` as an OpError; an ssl error keeps its class (and text) as a mixin."""
    try:
        laddr, raddr = conn.local_addr(), conn.remote_addr()
    except Exception:
        laddr = raddr = None
    net = getattr(laddr, "network", lambda: "")() if laddr is not None else ""
    if isinstance(err, OpError):
        if err.op == op:
            return err
        err = err.err  # the wrapped conn's failure, reported as this TLS operation
    if not isinstance(err, ssl.SSLError):
        return op_error(op, net, laddr, raddr, err)
    base = type(err)
    cls = _ssl_classes.get(base)
    if cls is None:
        with _ssl_classes_lock:
            cls = _ssl_classes.get(base)
            if cls is None:
                cls = type(f"OpError_{base.__name__}", (OpError, base), {"__module__": __name__})
                _ssl_classes[base] = cls
    e = cls(op, net, laddr, raddr, err)
    for attr in ("library", "reason", "verify_code", "verify_message"):
        if hasattr(err, attr):
            setattr(e, attr, getattr(err, attr))
    return e


class _ShutdownError(OSError):
    """Write after close_notify (Go's ``errShutdown``)."""

    def __init__(self) -> None:
        super().__init__(errno.EPIPE, "tls: protocol is shutdown")

    def __str__(self) -> str:
        return str(self.strerror)


# -- SNI bookkeeping for the server side ------------------------------------------

_sni_lock = threading.Lock()


def _record_sni(context: ssl.SSLContext) -> None:
    """Make ``context`` note the client's SNI name on each server-side SSLObject.

    Wraps (once) whatever ``sni_callback`` the context already has.
    """
    with _sni_lock:
        current = context.sni_callback
        if getattr(current, "_netpoll_sni", False):
            return
        inner = current

        def callback(obj: Any, name: str | None, ctx: ssl.SSLContext) -> int | None:
            try:
                obj._netpoll_server_name = name
            except AttributeError:
                pass
            return inner(obj, name, ctx) if inner is not None else None  # type: ignore[arg-type]

        callback._netpoll_sni = True  # type: ignore[attr-defined]
        context.sni_callback = callback


# -- which path -------------------------------------------------------------------


def _socket_fd(conn: StreamConn) -> FD | None:
    """The FD OpenSSL may read and write itself, or None for the memory-BIO path.

    Only a conn of exactly the two plain stream types (a subclass may
    override ``readinto``/``write``), registered with the poller, on a stream
    socket, while the table's ``read`` and ``write`` are the plain syscalls:
    any plugin on either hook (a Switch filter, a Faults rule, a tracer)
    makes the table point elsewhere, and then the traffic must go through the
    hooks so the plugin sees it.
    """
    if type(conn) is not TCPConn and type(conn) is not UnixConn:
        return None
    table = runtime.table
    if table.read is not syscalls.read or table.write is not syscalls.write:
        return None
    fd: FD = conn._fd
    sock = fd.sock
    if fd.pd is None or not isinstance(sock, socket.socket) or sock.type != socket.SOCK_STREAM:
        return None
    return fd


def _dup_socket(fd: FD) -> socket.socket | None:
    """A non-blocking socket object on a ``dup`` of ``fd`` (None if fd is closed)."""
    try:
        fd.incref()
    except OSError:
        return None  # closed already: the memory path reports ErrClosed as before
    try:
        dup: socket.socket = fd.sock.dup()
    except OSError:
        return None  # out of descriptors: the memory path needs none
    finally:
        fd.decref()
    dup.setblocking(False)
    return dup


# -- the conn ----------------------------------------------------------------------


def _wrap_socket(
    context: ssl.SSLContext,
    sock: socket.socket,
    server_side: bool,
    server_hostname: str | None,
    session: ssl.SSLSession | None,
) -> ssl.SSLObject:
    """An :class:`ssl.SSLObject` whose OpenSSL object does its I/O on ``sock``.

    What ``SSLContext.wrap_bio`` makes, with the socket constructor the
    stdlib's ``SSLSocket`` (and gevent's) uses in place of the BIO one, and
    without taking the socket over: ``sock`` stays ours to close.  No
    argument checks beyond ``wrap_bio``'s, so both paths accept and refuse
    the same arguments.
    """
    cls = context.sslobject_class
    obj = cls.__new__(cls)
    hostname = context._encode_hostname(server_hostname)  # type: ignore[attr-defined]
    obj._sslobj = context._wrap_socket(  # type: ignore[attr-defined]
        sock, server_side, hostname, owner=obj, session=session
    )
    return obj


class TLSConn(io.RawIOBase):
    """A TLS connection over a netpoll stream conn (Go's ``tls.Conn``).

    Built by :func:`client`, :func:`server`, :func:`dial` or a
    :class:`TLSListener`.  The whole Conn interface: ``read``/``readinto``
    (0 / ``b""`` at the end of the stream), ``write`` (all or an OpError),
    ``close`` (sends close_notify first, bounded by the write deadline and
    5 s), ``close_write`` (close_notify only), ``local_addr``/``remote_addr``,
    ``set_deadline``/``set_read_deadline``/``set_write_deadline``, plus
    :meth:`handshake`, :meth:`connection_state`, :meth:`net_conn` and
    :meth:`as_socket`.  The handshake runs on the first read or write if not
    called explicitly; deadlines bound it like any I/O.  ``io_path="memory"``
    keeps a plain socket conn on the memory-BIO path (see :attr:`io_path`),
    for a conn that plugins registered later must be able to watch.
    """

    def __init__(
        self,
        conn: StreamConn,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
        session: ssl.SSLSession | None = None,
        io_path: str | None = None,
    ) -> None:
        super().__init__()
        if io_path not in (None, "memory"):
            raise ValueError(f"netpoll.tls: io_path must be None or 'memory', not {io_path!r}")
        if server_side:
            _record_sni(context)
        self._conn = conn
        self._context = context
        self._server_side = server_side
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        # The socket path: the conn's FD (for parking, deadlines and close)
        # and the dup OpenSSL does its I/O on; both None on the memory path.
        self._fd: FD | None = None
        self._dup: socket.socket | None = None
        self._read_err: BaseException | None = None  # met after data; raised next read
        fd = _socket_fd(conn) if io_path is None else None
        dup = _dup_socket(fd) if fd is not None else None
        try:
            if dup is not None:
                self._ssl: ssl.SSLObject = _wrap_socket(
                    context, dup, server_side, server_hostname, session
                )
                self._fd, self._dup = fd, dup
            else:
                self._ssl = context.wrap_bio(
                    self._incoming,
                    self._outgoing,
                    server_side=server_side,
                    server_hostname=server_hostname,
                    session=session,
                )
        except BaseException as exc:
            if dup is not None:
                dup.close()
            if isinstance(exc, (ValueError, ssl.SSLError)):
                raise _ssl_op_error("handshake", conn, exc) from None
            raise
        self._ssl_lock = threading.Lock()
        self._in_lock = Mutex()
        self._out_lock = Mutex()
        self._hs_lock = Mutex()
        self._state_lock = threading.Lock()
        self._handshake_complete = False
        self._handshake_err: OpError | None = None
        self._active_writes = 0  # Go's activeCall, without the closed bit
        self._closing = False
        self._close_notify_sent = False
        self._read_eof = False
        self._eof_fed = False  # the wrapped conn reported EOF into the incoming BIO
        self._plain = bytearray()  # plaintext decrypted ahead by _send_close_notify
        self._write_deadline: float | None = None
        # The memory path's ciphertext buffer; the socket path reads none.
        self._rview = memoryview(bytearray(READ_CHUNK if self._fd is None else 0))

    # -- ciphertext movement ------------------------------------------------------

    def _release_out(self) -> None:
        """Flush the outgoing BIO, then let go of ``_out_lock`` (held by the caller).

        The final emptiness check and the release happen under ``_ssl_lock``:
        output a reader adds meanwhile is flushed here, never stranded.
        """
        try:
            while True:
                with self._ssl_lock:
                    data = self._outgoing.read()
                    if not data:
                        self._out_lock.unlock()
                        return
                self._conn.write(data)
        except BaseException:
            self._out_lock.unlock()
            raise

    def _fill(self) -> None:
        """Read ciphertext from the wrapped conn into the incoming BIO (``_in_lock`` held)."""
        n = self._conn.readinto(self._rview)
        with self._ssl_lock:
            if not n:
                self._eof_fed = True
                self._incoming.write_eof()
            else:
                self._incoming.write(self._rview[:n])

    # -- the socket path: OpenSSL does the I/O, we park ---------------------------

    def _drive(self, mode: int, step: Callable[[], bool], *, wait_first: bool = False) -> None:
        """Run ``step`` (an OpenSSL call on the socket) until it returns True.

        ``step`` runs under ``_ssl_lock`` inside ``FD.raw_io``: the FD's read
        or write lock for ``mode`` is held, its deadline and closing checks
        apply, and the descriptor cannot be closed under OpenSSL.  A want of
        ``mode`` parks on the pollDesc and tries again; a want of the other
        direction (a read that must send, a write that must receive) leaves
        this ``raw_io`` and enters one for that direction, so the pollDesc
        never has two waiters of one mode and no FD lock is held while
        waiting for the other one.
        """
        fd = self._fd
        assert fd is not None
        lock = self._ssl_lock
        switch = 0
        first = wait_first

        def attempt(_sysfd: int) -> bool:
            nonlocal switch
            with lock:
                try:
                    return step()
                except ssl.SSLWantReadError:
                    want = MODE_R
                except ssl.SSLWantWriteError:
                    want = MODE_W
            if want == mode:
                return False  # park on this direction, then try again
            switch = want
            return True

        while True:
            switch = 0
            try:
                fd.raw_io(mode, attempt, wait_first=first)
            except NetClosingError:
                self._drop_dup_if_conn_gone()
                raise
            if not switch:
                return
            mode, first = switch, False

    def _drop_dup_if_conn_gone(self) -> None:
        """The wrapped conn was closed under us: end the connection the dup keeps open.

        Once the FD's last reference has left (``sysfd`` is -1) no OpenSSL
        call can be using the dup (each runs holding one), so it is closed.
        Until then (another woken operation has not left yet) it is shut
        down, which sends the FIN at once and frees no descriptor number;
        the TLSConn's close (or collection) closes it.  ``_state_lock`` is
        held so a concurrent close cannot free the number under the shutdown.
        """
        fd = self._fd
        if fd is None or not fd.closed:
            return
        with self._state_lock:
            dup = self._dup
            if dup is None:
                return
            if fd.sysfd >= 0:
                try:
                    dup.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # not connected any more: nothing to end
                return
            self._dup = None
            dup.close()

    def _reset_error(self, exc: OSError, reading: bool) -> OSError:
        """What an OpenSSL EOF error on the socket path really was.

        Before Python 3.13, CPython with OpenSSL 3 reports a system call that
        failed inside SSL_read/SSL_write (a reset, a broken pipe) as
        :class:`ssl.SSLEOFError` with no ``reason`` and the errno lost, where
        the memory path sees the conn's own ``ConnectionResetError`` or
        ``BrokenPipeError``.  A real end of stream has the reason
        ``UNEXPECTED_EOF_WHILE_READING``.  A read that failed so met a reset
        (what else fails a read on an established connection); for a write,
        an empty ``send`` on the socket (it sends nothing) recovers the
        error.  The caller holds the FD.
        """
        if (
            not isinstance(exc, ssl.SSLEOFError)
            or exc.reason is not None
            or ssl.OPENSSL_VERSION_INFO < (3,)  # 1.1.1: errno kept; this is an EOF
        ):
            return exc
        if reading:
            return ConnectionResetError(errno.ECONNRESET, os.strerror(errno.ECONNRESET))
        dup = self._dup
        if dup is None:
            return exc
        try:
            dup.send(b"")
        except OSError as probe:
            probe.__traceback__ = None
            return probe
        return exc

    def _discard_input(self) -> None:
        """After a failed handshake on the socket path, read what the peer sent.

        OpenSSL stops at the first bad record header, leaving the rest (a
        plain-text request, say) in the kernel, and closing a socket with
        unread input sends a reset instead of the alert and FIN.  The memory
        path has read one chunk of up to :data:`READ_CHUNK` bytes by then; so
        does this, without waiting.
        """
        fd, dup = self._fd, self._dup
        if fd is None or dup is None:
            return
        try:
            fd.incref()  # the dup is used only while the conn's FD is held
        except OSError:
            return
        try:
            dup.recv_into(bytearray(READ_CHUNK))
        except OSError:
            pass  # nothing there, or the peer is gone: nothing to protect
        finally:
            fd.decref()

    def _shutdown_to_bytes(self, sysfd: int) -> bytes:
        """Make close_notify (SSL_shutdown) on the socket path; returns its bytes.

        ``_ssl_lock`` and a reference on the FD are held by the caller.
        ``ssl.SSLObject.unwrap`` calls SSL_shutdown twice, and the second
        call reads: application data found then is fatal in OpenSSL, and on
        this path it would come straight from the socket.  So for the call
        the dup OpenSSL uses is pointed at one end of a fresh socketpair
        (``dup2``): the alert (and the rest of a record a timed-out write left
        behind) lands there, the second call finds nothing to read, and the
        dup is pointed back at the conn's socket before anything else can
        run.  The caller sends the bytes on the conn.
        """
        dup = self._dup
        assert dup is not None
        a, b = socket.socketpair()
        try:
            a.setblocking(False)
            b.setblocking(False)
            target = dup.fileno()
            os.dup2(a.fileno(), target, inheritable=False)
            try:
                self._ssl.unwrap()
            except ssl.SSLWantReadError:
                pass  # sent; the peer's close_notify is not waited for
            except ssl.SSLError:
                if not self._read_eof:
                    raise
            finally:
                os.dup2(sysfd, target, inheritable=False)
            out = bytearray()
            while True:
                try:
                    chunk = b.recv(65536)
                except BlockingIOError:
                    break
                if not chunk:
                    break
                out += chunk
            return bytes(out)
        finally:
            a.close()
            b.close()

    # -- handshake ------------------------------------------------------------------

    def handshake(self) -> None:
        """Run the TLS handshake if it has not run yet (Go's ``Conn.Handshake``).

        Bounded by the conn's deadlines.  A failure (a certificate that does
        not verify, a peer that does not speak TLS, a reset, a timeout) is an
        OpError with op "handshake" that keeps the ssl error text; it is
        remembered and raised again by every later call, as Go does.
        """
        if self._handshake_complete:
            return
        with self._hs_lock:
            if self._handshake_complete:
                return
            if self._handshake_err is not None:
                raise self._handshake_err
            if self._closing:
                raise _ssl_op_error("handshake", self._conn, NetClosingError())
            try:
                self._do_handshake()
            except OSError as exc:
                err = _ssl_op_error("handshake", self._conn, exc)
                self._handshake_err = err
                raise err from None
            self._handshake_complete = True

    def _do_handshake(self) -> None:
        if self._fd is not None:
            do_handshake = self._ssl.do_handshake

            def step() -> bool:
                do_handshake()
                return True

            try:
                self._drive(MODE_R, step)
            except ssl.SSLError as exc:
                err = self._reset_error(exc, reading=True)
                self._discard_input()
                if err is exc:
                    raise
                raise err from None
            return
        while True:
            want_read = False
            failure: BaseException | None = None
            with self._ssl_lock:
                try:
                    self._ssl.do_handshake()
                except ssl.SSLWantReadError:
                    want_read = True
                except ssl.SSLError as exc:
                    failure = exc
            self._out_lock.lock()
            try:
                self._release_out()  # our flight (or the alert we are failing with)
            except OSError:
                if failure is None:
                    raise
            if failure is not None:
                raise failure
            if not want_read:
                return
            with self._in_lock:
                self._fill()

    # -- reads --------------------------------------------------------------------------

    def readable(self) -> bool:
        """Always True."""
        return True

    def writable(self) -> bool:
        """Always True."""
        return True

    def readinto(self, buffer: Any) -> int:
        """Decrypt into ``buffer``; returns the count, 0 at the end of the stream.

        The end is the peer's close_notify, or a plain TCP EOF without one
        (like the stdlib's ``suppress_ragged_eofs``).  Parks until data, the
        read deadline (an OpError that is a :class:`TimeoutError`) or a close
        (ErrClosed).
        """
        self._check_open("read")
        self.handshake()
        view = buffer if isinstance(buffer, memoryview) else memoryview(buffer)
        if view.itemsize != 1 or view.ndim != 1:
            view = view.cast("B")
        size = view.nbytes
        if size == 0:
            return 0
        if self._fd is not None:
            return self._readinto_socket(view, size)
        with self._in_lock:
            while True:
                if self._read_eof:
                    return 0
                flush = False
                result: int | None = None
                failure: ssl.SSLError | None = None
                with self._ssl_lock:
                    plain = self._plain
                    try:
                        if plain:
                            result = min(size, len(plain))
                            view[:result] = plain[:result]
                            del plain[:result]
                        else:
                            result = int(self._ssl.read(size, view))
                            # One SSL read gives at most one TLS record (16 KiB):
                            # go on while whole records are already buffered,
                            # so a large read costs one pass through here.
                            obj = self._ssl
                            while result < size and (obj.pending() or self._incoming.pending):
                                try:
                                    more = int(obj.read(size - result, view[result:]))
                                except ssl.SSLError:
                                    # Want-read, close_notify or a failure: the
                                    # next call sees it; these bytes go out now.
                                    break
                                if not more:
                                    break
                                result += more
                    except ssl.SSLWantReadError:
                        pass
                    except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                        self._read_eof = True
                        result = 0
                    except ssl.SSLError as exc:
                        failure = exc
                    if self._outgoing.pending and self._out_lock.try_lock():
                        flush = True
                try:
                    if flush:
                        self._release_out()
                    if failure is not None:
                        raise failure
                    if result is not None:
                        return result
                    self._fill()
                except OSError as exc:
                    raise _ssl_op_error("read", self._conn, exc) from None

    def _readinto_socket(self, view: memoryview, size: int) -> int:
        """:meth:`readinto` on the socket path (``size`` > 0)."""
        with self._in_lock:
            if self._read_eof:
                return 0
            plain = self._plain
            if plain:  # decrypted ahead by _send_close_notify
                n = min(size, len(plain))
                view[:n] = plain[:n]
                del plain[:n]
                return n
            err = self._read_err
            if err is not None:
                self._read_err = None
                raise err
            obj = self._ssl
            # The C method itself: SSLObject.read is a Python frame per record.
            read = obj._sslobj.read  # type: ignore[attr-defined]
            got = 0
            with self._ssl_lock:  # a writer may be inside OpenSSL meanwhile
                pending = obj.pending()

            def step() -> bool:
                # One SSL read gives at most one record.  Go on only after a
                # full record or while OpenSSL holds more: a streaming peer
                # fills the buffer in one call, a request/response peer
                # costs no extra (EAGAIN) read.
                nonlocal got
                try:
                    while got < size:
                        n = int(read(size - got, view[got:] if got else view))
                        if not n:  # close_notify
                            self._read_eof = True
                            return True
                        got += n
                        if n < MAX_RECORD and not obj.pending():
                            break
                except ssl.SSLZeroReturnError:
                    self._read_eof = True  # close_notify
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    if not got:
                        raise
                except OSError as exc:
                    err = self._reset_error(exc, reading=True)
                    if err is exc and isinstance(exc, ssl.SSLEOFError):
                        # A plain EOF without close_notify: the end of the
                        # stream, like the stdlib's suppress_ragged_eofs.
                        self._read_eof = True
                        return True
                    if not got:
                        raise err from None
                    # Report it on the next read; no traceback, which would
                    # keep this frame and the caller's buffer export alive.
                    err.__traceback__ = None
                    self._read_err = _ssl_op_error("read", self._conn, err)
                return True

            try:
                # With nothing decrypted or half-read inside OpenSSL (it reads
                # one record at a time: CPython leaves read-ahead off), only
                # the socket can satisfy this read.
                self._drive(MODE_R, step, wait_first=not pending)
            except OSError as exc:
                raise _ssl_op_error("read", self._conn, exc) from None
            return got

    def read(self, size: int | None = -1) -> bytes:
        """Read up to ``size`` bytes (``b""`` at the end); ``-1``/None reads to the end."""
        if size is None or size < 0:
            return self.readall()
        buf = bytearray(size)
        n = self.readinto(buf)
        # Not ``del buf[n:]``: a plugin's exception cycle may still hold a
        # view of buf until the collector runs (resizing would fail).
        return bytes(buf) if n == size else bytes(memoryview(buf)[:n])

    def readall(self) -> bytes:
        """Read until the end of the stream."""
        out = bytearray()
        buf = bytearray(READ_CHUNK)
        while n := self.readinto(buf):
            out += memoryview(buf)[:n]
        return bytes(out)

    # -- writes --------------------------------------------------------------------------

    def write(self, b: Any) -> int:
        """Encrypt and send all of ``b``; returns ``len(b)`` in bytes.

        Parks whenever the wrapped conn's buffer is full; bounded by the
        write deadline.  On failure raises an OpError (op "write").
        """
        self._check_open("write")
        self.handshake()
        view = b if isinstance(b, memoryview) else memoryview(b)
        if view.itemsize != 1 or view.ndim != 1:
            view = view.cast("B")
        total = view.nbytes
        with self._state_lock:
            if self._closing:
                raise _ssl_op_error("write", self._conn, NetClosingError())
            self._active_writes += 1
        try:
            if self._close_notify_sent:
                raise _ssl_op_error("write", self._conn, _ShutdownError())
            if self._fd is not None:
                self._write_socket(view, total)
                return total
            self._out_lock.lock()
            try:
                for off in range(0, total, WRITE_CHUNK):
                    with self._ssl_lock:
                        self._ssl.write(view[off : off + WRITE_CHUNK])
                        data = self._outgoing.read()
                    self._conn.write(data)
            except BaseException:
                self._out_lock.unlock()
                raise
            self._release_out()
            return total
        except OSError as exc:
            raise _ssl_op_error("write", self._conn, exc) from None
        finally:
            with self._state_lock:
                self._active_writes -= 1

    def _write_socket(self, view: memoryview, total: int) -> None:
        """:meth:`write` on the socket path: OpenSSL writes records to the socket.

        A write that finds the socket full is retried with the same chunk,
        as OpenSSL requires; it has kept the records it made meanwhile.
        """
        write = self._ssl.write
        off = 0

        def step() -> bool:
            nonlocal off
            while off < total:
                end = min(off + WRITE_CHUNK, total)
                write(view[off:end])
                off = end
            return True

        with self._out_lock:
            try:
                self._drive(MODE_W, step)
            except ssl.SSLError as exc:
                err = self._reset_error(exc, reading=False)
                if err is exc:
                    raise
                raise err from None

    # -- close ------------------------------------------------------------------------------

    def _send_close_notify(self) -> None:
        """Queue close_notify (SSL_shutdown) and flush it; ``_out_lock`` is taken here.

        :meth:`ssl.SSLObject.unwrap` calls SSL_shutdown twice, and the second
        call reads: application data found then is a fatal error in OpenSSL,
        which would end a half-closed conn that still reads.  So decrypted
        bytes not yet read are moved to ``_plain`` and unread ciphertext is
        set aside while it runs, then put back in front of the incoming BIO.
        """
        if self._fd is not None:
            self._send_close_notify_socket(self._fd)
            return
        self._out_lock.lock()
        try:
            with self._ssl_lock:
                if not self._close_notify_sent:
                    self._close_notify_sent = True
                    obj, incoming = self._ssl, self._incoming
                    while obj.pending():
                        self._plain += obj.read(obj.pending())
                    saved = b"" if self._eof_fed else incoming.read()
                    try:
                        obj.unwrap()
                    except ssl.SSLWantReadError:
                        pass  # sent; the peer's close_notify is not waited for
                    except ssl.SSLError:
                        if not self._eof_fed:
                            raise
                    if saved:
                        incoming.write(saved)
        except BaseException:
            self._out_lock.unlock()
            raise
        self._release_out()

    def _send_close_notify_socket(self, fd: FD) -> None:
        """:meth:`_send_close_notify` on the socket path (see :meth:`_shutdown_to_bytes`)."""
        with self._out_lock:
            fd.incref()  # the descriptor the dup is pointed back at stays open
            try:
                with self._ssl_lock:
                    if self._close_notify_sent:
                        return
                    self._close_notify_sent = True
                    obj = self._ssl
                    try:
                        while obj.pending():
                            self._plain += obj.read(obj.pending())
                    except ssl.SSLError:
                        pass  # the next read meets it again
                    alert = self._shutdown_to_bytes(fd.sysfd)
            finally:
                fd.decref()
            if alert:
                self._conn.write(alert)

    def close_write(self) -> None:
        """Send close_notify: the peer reads the end of the stream (Go's ``CloseWrite``).

        Reading goes on.  Later writes fail ("tls: protocol is shutdown").
        Needs a finished handshake.
        """
        self._check_open("close")
        if not self._handshake_complete:
            raise _ssl_op_error(
                "close",
                self._conn,
                OSError(errno.ENOTCONN, "tls: CloseWrite called before handshake complete"),
            )
        try:
            self._send_close_notify()
        except (OSError, ssl.SSLError) as exc:
            raise _ssl_op_error("close", self._conn, exc) from None

    def close(self) -> None:
        """Send close_notify (if the handshake finished), then close the wrapped conn.

        The alert is bounded by the write deadline and by 5 s; failing to
        send it (a reset, a timeout) is not an error, since the conn is
        closed anyway and the peer then sees a plain EOF.  Parked reads
        and writes in other threads wake with ErrClosed.  With a write in
        flight, the alert is skipped and the conn just closed (Go's
        interlock: such a close is there to break the write).  Idempotent.
        """
        with self._state_lock:
            if self._closing:
                return
            self._closing = True
            busy = self._active_writes > 0 or self._hs_lock.locked()
        try:
            if not busy and self._handshake_complete and not self._close_notify_sent:
                limit = time.time() + CLOSE_NOTIFY_TIMEOUT
                wd = self._write_deadline
                try:
                    self._conn.set_write_deadline(limit if wd is None else min(wd, limit))
                    self._send_close_notify()
                except (OSError, ssl.SSLError):
                    pass  # the conn is closed anyway; the peer sees a plain EOF
        finally:
            try:
                self._conn.close()
            finally:
                # After the conn's close returned, no OpenSSL call can run
                # (each holds a reference on the FD): the dup can go.
                try:
                    with self._state_lock:
                        dup, self._dup = self._dup, None
                        if dup is not None:
                            dup.close()
                finally:
                    super().close()

    def _check_open(self, op: str) -> None:
        if self._closing:
            raise _ssl_op_error(op, self._conn, NetClosingError())

    def __del__(self) -> None:
        # The wrapped conn has its own finalizer (with the ResourceWarning);
        # ours is the socket path's dup, closed quietly.  Not close(): that
        # would send close_notify from the collector.
        dup = getattr(self, "_dup", None)
        if dup is not None:
            self._dup = None
            dup.close()

    @property
    def io_path(self) -> str:
        """``"socket"`` when OpenSSL reads and writes the socket itself, else ``"memory"``.

        Decided when the conn is made (see the module docstring) and kept.
        """
        return "socket" if self._fd is not None else "memory"

    # -- the rest of the Conn interface ------------------------------------------------------

    def local_addr(self) -> Any:
        """The wrapped conn's local address."""
        return self._conn.local_addr()

    def remote_addr(self) -> Any:
        """The wrapped conn's remote address."""
        return self._conn.remote_addr()

    def set_deadline(self, t: Any) -> None:
        """Read and write deadlines of the wrapped conn (absolute; None clears)."""
        self._write_deadline = as_deadline(t)
        self._conn.set_deadline(t)

    def set_read_deadline(self, t: Any) -> None:
        """The wrapped conn's read deadline (see :meth:`set_deadline`)."""
        self._conn.set_read_deadline(t)

    def set_write_deadline(self, t: Any) -> None:
        """The wrapped conn's write deadline (see :meth:`set_deadline`)."""
        self._write_deadline = as_deadline(t)
        self._conn.set_write_deadline(t)

    def fileno(self) -> int:
        """The wrapped conn's descriptor (raises if it has none, like a pipe)."""
        fileno: Callable[[], int] | None = getattr(self._conn, "fileno", None)
        if fileno is None:
            raise io.UnsupportedOperation("fileno")
        return fileno()

    def net_conn(self) -> StreamConn:
        """The wrapped conn (Go's ``NetConn``); reading or writing it corrupts the stream."""
        return self._conn

    def as_socket(self) -> ConnSocket:
        """A :mod:`socket`-like adapter over this TLS conn (see ``Conn.as_socket``)."""
        from netpoll.net.socket_adapter import ConnSocket

        return ConnSocket(self)

    def connection_state(self) -> ConnectionState:
        """What the handshake settled: version, cipher, ALPN, names, peer certificate.

        Go's ``ConnectionState``; before the handshake only
        ``handshake_complete=False`` is filled in.
        """
        if not self._handshake_complete:
            return ConnectionState(handshake_complete=False)
        with self._ssl_lock:
            obj = self._ssl
            cipher = obj.cipher()
            if self._server_side:
                name = getattr(obj, "_netpoll_server_name", None)
            else:
                name = obj.server_hostname
            der = obj.getpeercert(binary_form=True)
            decoded: dict[str, Any] = dict(obj.getpeercert() or {})
            return ConnectionState(
                handshake_complete=True,
                version=obj.version(),
                cipher_suite=cipher[0] if cipher else None,
                cipher_bits=cipher[2] if cipher else None,
                negotiated_protocol=obj.selected_alpn_protocol(),
                server_name=name,
                peer_certificate=decoded,
                peer_certificate_der=der,
                did_resume=obj.session_reused,
            )

    @property
    def session(self) -> ssl.SSLSession | None:
        """The TLS session, to resume it with ``client(..., session=)``."""
        return self._ssl.session

    def __repr__(self) -> str:
        side = "server" if self._server_side else "client"
        state = "closed" if self.closed else "open"
        return f"<TLSConn {side} over {self._conn!r} {state}>"


# -- constructors (Go's tls.go) -----------------------------------------------------------


def client(
    conn: StreamConn,
    context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    *,
    session: ssl.SSLSession | None = None,
    io_path: str | None = None,
) -> TLSConn:
    """The client side of TLS over ``conn`` (Go's ``tls.Client``).

    ``context`` defaults to :func:`ssl.create_default_context` (verifies the
    certificate and the host name, so ``server_hostname`` is then required).
    The handshake runs on the first read or write, or on :meth:`TLSConn.handshake`.
    ``io_path="memory"``: see :class:`TLSConn`.
    """
    if context is None:
        context = ssl.create_default_context()
    return TLSConn(
        conn,
        context,
        server_side=False,
        server_hostname=server_hostname,
        session=session,
        io_path=io_path,
    )


def server(conn: StreamConn, context: ssl.SSLContext, *, io_path: str | None = None) -> TLSConn:
    """The server side of TLS over ``conn`` (Go's ``tls.Server``).

    ``context`` must hold a certificate chain
    (``ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)`` +
    ``load_cert_chain``).  The handshake runs on the first read or write.
    ``io_path="memory"``: see :class:`TLSConn`.
    """
    return TLSConn(conn, context, server_side=True, io_path=io_path)


def dial(
    network: str,
    address: str,
    context: ssl.SSLContext | None = None,
    *,
    timeout: float | None = None,
    dialer: Dialer | None = None,
    server_hostname: str | None = None,
) -> TLSConn:
    """Dial and complete a TLS handshake (Go's ``tls.Dial`` / ``DialWithDialer``).

    ``timeout`` (or the dialer's timeout/deadline) bounds the connect *and*
    the handshake together.  ``server_hostname`` defaults to the host part of
    ``address``.  On any failure the conn is closed and an OpError raised.
    """
    from netpoll.net.addr import split_host_port

    d = dialer if dialer is not None else Dialer(timeout=timeout)
    if dialer is not None and timeout is not None:
        d = Dialer(
            timeout=timeout if d.timeout is None else min(timeout, d.timeout),
            deadline=d.deadline,
            local_addr=d.local_addr,
            fallback_delay=d.fallback_delay,
            keep_alive=d.keep_alive,
            control=d.control,
            cancel=d.cancel,
        )
    deadline = d._deadline(time.time())
    if server_hostname is None and network not in ("unix", "unixpacket"):
        try:
            server_hostname = split_host_port(address)[0] or None
        except OSError:
            server_hostname = None
    conn = d.dial(network, address)
    tconn: TLSConn | None = None
    try:
        tconn = client(conn, context, server_hostname)
        if deadline is not None:
            conn.set_deadline(deadline)
        tconn.handshake()
        if deadline is not None:
            conn.set_deadline(None)
        return tconn
    except BaseException:
        # The TLSConn's close also closes what it owns (the socket path's dup).
        (conn if tconn is None else tconn).close()
        raise


class TLSListener:
    """A listener whose accepted conns are TLS servers (Go's ``tls.NewListener``).

    ``accept`` does not handshake (Go's neither): the handshake runs on the
    first read or write of the accepted conn, in whatever thread serves it,
    so a client that fails its handshake never stops the listener.
    """

    def __init__(self, inner: Listener, context: ssl.SSLContext) -> None:
        self._inner = inner
        self._context = context

    def accept(self) -> TLSConn:
        """Wait for the next connection; returns it as a (not yet handshaken) TLS server conn."""
        return server(self._inner.accept(), self._context)

    def addr(self) -> Any:
        """The listening address."""
        return self._inner.addr()

    def set_deadline(self, t: Any) -> None:
        """Accept deadline (absolute; None clears)."""
        self._inner.set_deadline(t)

    def close(self) -> None:
        """Stop listening; a parked accept fails with ErrClosed."""
        self._inner.close()

    @property
    def closed(self) -> bool:
        """True once closed."""
        return self._inner.closed

    def net_listener(self) -> Listener:
        """The wrapped plain listener."""
        return self._inner

    def __enter__(self) -> TLSListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<TLSListener over {self._inner!r}>"


def new_listener(inner: Listener, context: ssl.SSLContext) -> TLSListener:
    """Wrap a listener so that accepts return TLS server conns (Go's ``tls.NewListener``)."""
    return TLSListener(inner, context)


def wrap_socket(
    sock: ConnSocket,
    context: ssl.SSLContext | None = None,
    *,
    server_side: bool = False,
    server_hostname: str | None = None,
    do_handshake_on_connect: bool = True,
) -> ConnSocket:
    """``SSLContext.wrap_socket`` for a netpoll socket adapter, on netpoll's parking I/O.

    ``sock`` comes from ``conn.as_socket()`` or
    :func:`netpoll.create_connection`; the result is a new adapter over a
    :class:`TLSConn` (it owns the conn now).  The socket's timeout carries
    over and bounds the handshake.  Use it where library code would call
    ``context.wrap_socket(sock)``, e.g. in ``HTTPSConnection.connect``.
    """
    from netpoll.net.socket_adapter import ConnSocket

    conn = sock.conn()
    if server_side:
        if context is None:
            raise ValueError("netpoll.tls.wrap_socket: server_side needs a context")
        tconn = server(conn, context)
    else:
        tconn = client(conn, context, server_hostname)
    out = ConnSocket(tconn)
    out.take_over(sock)
    if do_handshake_on_connect:
        try:
            out.arm_timeout()
            tconn.handshake()
        except BaseException:
            tconn.close()
            raise
    return out


def listen(
    network: str, address: str, context: ssl.SSLContext, *, config: ListenConfig | None = None
) -> TLSListener:
    """Listen for TLS connections (Go's ``tls.Listen``)."""
    inner = (config or ListenConfig()).listen(network, address)
    return TLSListener(inner, context)
