"""The stdlib :mod:`ssl` on netpoll sockets: TLS whose waits park a goroutine.

gevent's counterpart is ``gevent/ssl.py`` (``_ssl3.py``); the semantics are
CPython's ``Lib/ssl.py``.  :class:`SSLSocket` is the stdlib's
``ssl.SSLSocket`` over a :class:`netpoll.green.socket.socket` (it inherits
from both): OpenSSL reads and writes the non-blocking descriptor itself, and
every ``SSLWantReadError``/``SSLWantWriteError`` parks the calling G on the
descriptor's pollDesc until it is readable/writable, then the TLS call is
tried again, all within the socket's timeout (``socket.timeout`` when it
passes; in non-blocking mode the want-errors reach the caller, as the
stdlib's do).  A plain connect/accept under the TLS socket is the green
socket's (through the syscall hooks).

**Fault injection:** OpenSSL's own ``read``/``write`` of the descriptor do
not pass through netpoll's syscall hooks.  So a TLS socket whose first TLS
call (the handshake, normally) comes while a plugin wraps the ``read`` or
``write`` hook, as a ``netpoll.testing.Faults`` rule on them does, runs on
memory BIOs instead: OpenSSL reads and writes two ``MemoryBIO`` objects and
this class moves the records through the green socket's hooked ``recv`` and
``send`` path, so the rules reach the TLS traffic (the mode is chosen once
per connection; one made before the rules keeps the direct path).  It is
the same C TLS object either way (``SSLContext._wrap_bio`` rather than
``_wrap_socket``), so every ``SSLSocket`` method works in both modes.

:class:`SSLContext` is the stdlib's with ``sslsocket_class`` set to
:class:`SSLSocket`; ``create_default_context`` and the other module
functions are the stdlib's, looking names up in this module.
:func:`netpoll.patch.all` instead sets ``sslsocket_class`` on the stdlib
``SSLContext`` class itself, so contexts made before patching (and their
``isinstance`` checks) keep working.
"""

from __future__ import annotations

import contextlib
import math
import ssl as _std
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from netpoll.core.errors import DeadlineExceededError, NetClosingError
from netpoll.core.hookspecs import MODE_R, MODE_RW, MODE_W
from netpoll.green import rebind_function as _rebind
from netpoll.green import reexport as _reexport
from netpoll.green import socket as _gsocket

_reexport(_std, globals())

if TYPE_CHECKING:
    # Every other name is the stdlib module's (copied above at run time).
    def __getattr__(name: str) -> Any: ...


_T = TypeVar("_T")
_OrigSSLSocket = _std.SSLSocket
_OrigSSLContext = _std.SSLContext
_SSLWantReadError = _std.SSLWantReadError
_SSLWantWriteError = _std.SSLWantWriteError
_monotonic = _gsocket._monotonic
#: How much one read from the descriptor feeds a memory BIO.
_BIO_READ = 65536


class _WantOther(Exception):
    """The TLS call wants the other direction: park on ``mode`` instead."""

    def __init__(self, mode: int) -> None:
        super().__init__(mode)
        self.mode = mode


class SSLSocket(_OrigSSLSocket, _gsocket.socket):  # type: ignore[misc]
    """``ssl.SSLSocket`` whose TLS calls park on want-read/want-write (see the module doc).

    Made by :meth:`SSLContext.wrap_socket`, as the stdlib's.
    """

    _sslobj: Any  # the stdlib's: the C TLS object (None before connect / after unwrap)
    _session: Any
    _context: Any
    #: (incoming, outgoing) memory BIOs when TLS runs on them (see _choose_mode).
    _bio: tuple[Any, Any] | None = None
    _mode_chosen = False

    def _choose_mode(self) -> None:
        """At the first TLS call: memory BIOs if a plugin watches reads or writes now.

        Then the TLS records go through the green socket's ``recv``/``send``
        path, i.e. the syscall hooks, and fault rules reach them (as
        ``netpoll.tls`` does); otherwise OpenSSL reads and writes the
        descriptor itself, which is faster.  The TLS object is the same C
        type either way (``SSLContext._wrap_bio`` instead of ``_wrap_socket``),
        so every ``SSLSocket`` method works on both.
        """
        self._mode_chosen = True
        wrapped = _gsocket._table.wrapped
        if self._sslobj is None or not (wrapped.get("read") or wrapped.get("write")):
            return
        incoming, outgoing = _std.MemoryBIO(), _std.MemoryBIO()
        self._sslobj = self._context._wrap_bio(
            incoming,
            outgoing,
            self.server_side,
            self.server_hostname,
            owner=self,
            session=self._session,
        )
        self._bio = (incoming, outgoing)

    def _bio_io(self, op: Callable[[], _T], timeout: float | None) -> _T:
        """Run ``op`` on memory BIOs: flush what it wrote, feed it what it wants to read."""
        assert self._bio is not None
        incoming, outgoing = self._bio
        deadline = None if not timeout else _monotonic() + timeout
        while True:
            try:
                result = op()
            except (_SSLWantReadError, _SSLWantWriteError) as want:
                self._bio_flush(outgoing, deadline)
                if isinstance(want, _SSLWantWriteError):
                    continue
                try:
                    chunk = self._recv_until(_BIO_READ, deadline, timeout == 0.0)
                except BlockingIOError:
                    raise want from None
                if chunk:
                    incoming.write(chunk)
                else:
                    incoming.write_eof()
                continue
            except BaseException:
                with contextlib.suppress(OSError):
                    self._bio_flush(outgoing, deadline)  # an alert for the peer
                raise
            self._bio_flush(outgoing, deadline)
            return result

    def _bio_flush(self, outgoing: Any, deadline: float | None) -> None:
        data = outgoing.read()
        if data:
            self._send_until(data, deadline)

    def _ssl_io(self, op: Callable[[], _T], timeout: float | None) -> _T:
        """Run the TLS call ``op``, parking on whatever direction OpenSSL wants.

        One attempt first: a read with plaintext buffered or a write that
        fits needs no deadline, fdMutex or closure.  Then, as the green
        socket's data calls, the timeout becomes one deadline for the call,
        left set afterwards (``_dl``, see ``socket._arm``).
        """
        if not self._mode_chosen:
            self._choose_mode()
        if self._bio is not None:
            return self._bio_io(op, timeout)
        if timeout == 0.0:
            return op()
        try:
            return op()
        except _SSLWantReadError:
            mode = MODE_R
        except _SSLWantWriteError:
            mode = MODE_W
        return self._ssl_park(op, timeout, mode)

    def _ssl_park(self, op: Callable[[], _T], timeout: float | None, mode: int) -> _T:
        """The rest of :meth:`_ssl_io` after OpenSSL wanted ``mode``: park and retry."""
        fd = self._get_fd()
        box: list[_T] = []

        def once(_sysfd: int) -> bool:
            try:
                box.append(op())
            except _SSLWantReadError:
                if mode != MODE_R:
                    raise _WantOther(MODE_R) from None
                return False
            except _SSLWantWriteError:
                if mode != MODE_W:
                    raise _WantOther(MODE_W) from None
                return False
            return True

        try:
            if fd.pd is not None:
                if timeout is not None:
                    self._dl = True
                    fd.set_deadline_in(timeout, MODE_RW)
                elif self._dl:
                    # A forced blocking handshake in non-blocking mode: drop
                    # a deadline left by an earlier timed call.
                    self._dl = False
                    fd.set_deadline_in(math.inf, MODE_RW)
            while not box:
                try:
                    fd.raw_io(mode, once)
                except _WantOther as want:
                    mode = want.mode
            return box[0]
        except DeadlineExceededError:
            raise _gsocket._timed_out() from None
        except NetClosingError:
            raise _gsocket._ebadf() from None

    def settimeout(self, value: float | None) -> None:
        """As the green socket's, and the descriptor is put back in non-blocking mode.

        ``SSLContext.wrap_socket`` detaches the socket it wraps, which leaves
        the (shared) descriptor blocking when that socket had no timeout;
        the stdlib's ``_create`` then calls ``settimeout`` on the new object.
        """
        _gsocket.socket.settimeout(self, value)
        raw = self._raw
        if raw is not None and raw.fileno() >= 0:
            _gsocket._CSocket.settimeout(self, 0.0)
            raw.setblocking(False)

    def do_handshake(self, block: bool = False) -> None:
        """The TLS handshake; parks until done (``block`` forces it in non-blocking mode)."""
        self._check_connected()  # type: ignore[attr-defined]
        timeout = self.gettimeout()
        if timeout == 0.0 and block:
            timeout = None
        self._ssl_io(lambda: self._sslobj.do_handshake(), timeout)

    def read(self, len: int = 1024, buffer: Any = None) -> Any:
        """Read up to ``len`` bytes of plaintext (into ``buffer`` if given)."""
        return self._ssl_io(lambda: _OrigSSLSocket.read(self, len, buffer), self.gettimeout())

    def write(self, data: Any) -> int:
        """Write ``data`` as TLS records; returns the bytes of plaintext taken."""
        return self._ssl_io(lambda: _OrigSSLSocket.write(self, data), self.gettimeout())

    def send(self, data: Any, flags: int = 0) -> int:
        """Send plaintext (TLS) or bytes (before the handshake), parking as needed."""
        if self._sslobj is None:
            return _gsocket.socket.send(self, data, flags)
        if flags != 0:
            raise ValueError(f"non-zero flags not allowed in calls to send() on {self.__class__}")
        n: int = self._ssl_io(lambda: self._sslobj.write(data), self.gettimeout())
        return n

    def unwrap(self) -> Any:
        """Shut TLS down (close_notify both ways); returns the plain socket."""
        if not self._mode_chosen:
            self._choose_mode()
        if self._bio is None:
            return self._ssl_io(lambda: _OrigSSLSocket.unwrap(self), self.gettimeout())
        if self._sslobj is None:
            raise ValueError(f"No SSL wrapper around {self}")
        self._ssl_io(lambda: self._sslobj.shutdown(), self.gettimeout())
        self._sslobj = None
        self._bio = None
        return self


class SSLContext(_OrigSSLContext):
    """``ssl.SSLContext`` whose ``wrap_socket`` makes green :class:`SSLSocket` objects."""

    sslsocket_class = SSLSocket


# The stdlib's module functions, finding this module's SSLContext and
# create_connection by name.
for _fname in (
    "create_default_context",
    "_create_unverified_context",
    "get_server_certificate",
    "wrap_socket",
):
    _fn = getattr(_std, _fname, None)
    if _fn is not None:
        globals()[_fname] = _rebind(_fn, globals())
_create_default_https_context = globals()["create_default_context"]
_create_stdlib_context = globals()["_create_unverified_context"]
create_connection = _gsocket.create_connection
socket = _gsocket.socket
del _fname, _fn

#: The names this module replaces in the stdlib's under library patching.
GREEN_NAMES = (
    "SSLSocket",
    "SSLContext",
    "create_default_context",
    "_create_unverified_context",
    "_create_default_https_context",
    "_create_stdlib_context",
    "get_server_certificate",
    "create_connection",
    "socket",
)

__all__ = sorted(n for n in dir(_std) if not n.startswith("_"))
