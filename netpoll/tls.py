"""TLS on any netpoll conn: Go's ``crypto/tls`` shape on the stdlib :mod:`ssl` module.

Mirrors Go's ``crypto/tls/tls.go`` (``Client``, ``Server``, ``Dial``,
``DialWithDialer``, ``Listen``, ``NewListener``) and ``crypto/tls/conn.go``
(``Conn``: ``Handshake``, ``Read``, ``Write``, ``Close`` sending close_notify,
``CloseWrite``, ``ConnectionState``, ``NetConn``; the ``in``/``out``/
``handshakeMutex`` locking and the ``activeCall`` interlock between ``Write``
and ``Close``).  No cryptography of our own: the record layer and the
handshake are OpenSSL's, driven through :class:`ssl.SSLObject` over two
:class:`ssl.MemoryBIO` buffers, and every byte of ciphertext moves through the
wrapped conn's ``readinto``/``write``, so it parks on netpoll's poller, obeys
that conn's deadlines, and wakes when another thread closes it.

Locking (as in Go, a read and a write may run at the same time in two
threads):

* ``_hs_lock``: one handshake at a time; the first ``read``/``write`` runs it
  implicitly, like Go's ``Conn.Handshake``;
* ``_in_lock``: one reader at a time (Go's ``c.in``), held while parked;
* ``_out_lock``: one writer of ciphertext at a time (Go's ``c.out``), held
  while parked, so records leave in the order they were made;
* ``_ssl_lock``: guards the :class:`ssl.SSLObject` and both BIOs; held only
  around memory-only OpenSSL calls, never while parked.

A reader that makes output (a post-handshake message needing an answer)
hands it to whoever holds ``_out_lock``: that holder re-checks the outgoing
buffer under ``_ssl_lock`` before it lets go, so nothing is stranded and a
reader never waits behind a parked writer.

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
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from netpoll.core.errors import NetClosingError
from netpoll.core.sync import Mutex
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


# -- the conn ----------------------------------------------------------------------


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
    called explicitly; deadlines bound it like any I/O.
    """

    def __init__(
        self,
        conn: StreamConn,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
        session: ssl.SSLSession | None = None,
    ) -> None:
        super().__init__()
        if server_side:
            _record_sni(context)
        self._conn = conn
        self._context = context
        self._server_side = server_side
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        try:
            self._ssl: ssl.SSLObject = context.wrap_bio(
                self._incoming,
                self._outgoing,
                server_side=server_side,
                server_hostname=server_hostname,
                session=session,
            )
        except (ValueError, ssl.SSLError) as exc:
            raise _ssl_op_error("handshake", conn, exc) from None
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
        self._rbuf = bytearray(READ_CHUNK)
        self._rview = memoryview(self._rbuf)

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

    def read(self, size: int | None = -1) -> bytes:
        """Read up to ``size`` bytes (``b""`` at the end); ``-1``/None reads to the end."""
        if size is None or size < 0:
            return self.readall()
        buf = bytearray(size)
        n = self.readinto(buf)
        del buf[n:]
        return bytes(buf)

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

    # -- close ------------------------------------------------------------------------------

    def _send_close_notify(self) -> None:
        """Queue close_notify (SSL_shutdown) and flush it; ``_out_lock`` is taken here.

        :meth:`ssl.SSLObject.unwrap` calls SSL_shutdown twice, and the second
        call reads: application data found then is a fatal error in OpenSSL,
        which would end a half-closed conn that still reads.  So decrypted
        bytes not yet read are moved to ``_plain`` and unread ciphertext is
        set aside while it runs, then put back in front of the incoming BIO.
        """
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
                super().close()

    def _check_open(self, op: str) -> None:
        if self._closing:
            raise _ssl_op_error(op, self._conn, NetClosingError())

    def __del__(self) -> None:
        # The wrapped conn has its own finalizer; nothing of ours holds an fd.
        pass

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
) -> TLSConn:
    """The client side of TLS over ``conn`` (Go's ``tls.Client``).

    ``context`` defaults to :func:`ssl.create_default_context` (verifies the
    certificate and the host name, so ``server_hostname`` is then required).
    The handshake runs on the first read or write, or on :meth:`TLSConn.handshake`.
    """
    if context is None:
        context = ssl.create_default_context()
    return TLSConn(
        conn, context, server_side=False, server_hostname=server_hostname, session=session
    )


def server(conn: StreamConn, context: ssl.SSLContext) -> TLSConn:
    """The server side of TLS over ``conn`` (Go's ``tls.Server``).

    ``context`` must hold a certificate chain
    (``ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)`` +
    ``load_cert_chain``).  The handshake runs on the first read or write.
    """
    return TLSConn(conn, context, server_side=True)


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
    try:
        tconn = client(conn, context, server_hostname)
        if deadline is not None:
            conn.set_deadline(deadline)
        tconn.handshake()
        if deadline is not None:
            conn.set_deadline(None)
        return tconn
    except BaseException:
        conn.close()
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
