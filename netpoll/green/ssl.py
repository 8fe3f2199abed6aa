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
not pass through netpoll's syscall hooks, so ``netpoll.testing.Faults``
rules on ``read``/``write`` do not reach TLS traffic of these sockets
(connect/accept/close rules do).  For TLS whose every byte is injectable, use
``netpoll.tls`` (the memory-BIO path over a netpoll conn).

:class:`SSLContext` is the stdlib's with ``sslsocket_class`` set to
:class:`SSLSocket`; ``create_default_context`` and the other module
functions are the stdlib's, looking names up in this module.
:func:`netpoll.patch.all` instead sets ``sslsocket_class`` on the stdlib
``SSLContext`` class itself, so contexts made before patching (and their
``isinstance`` checks) keep working.
"""

from __future__ import annotations

import ssl as _std
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from netpoll.core.errors import DeadlineExceededError, NetClosingError
from netpoll.core.hookspecs import MODE_R, MODE_W
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
_time_now = _gsocket._time_now


class _WantOther(Exception):
    """The TLS call wants the other direction: park on ``mode`` instead."""

    def __init__(self, mode: int) -> None:
        super().__init__(mode)
        self.mode = mode


class SSLSocket(_OrigSSLSocket, _gsocket.socket):  # type: ignore[misc]
    """``ssl.SSLSocket`` whose TLS calls park on want-read/want-write (see the module doc).

    Made by :meth:`SSLContext.wrap_socket`, as the stdlib's.
    """

    def _ssl_io(self, op: Callable[[], _T], timeout: float | None) -> _T:
        """Run the TLS call ``op``, parking on whatever direction OpenSSL wants."""
        if timeout == 0.0:
            return op()
        fd = self._get_fd()
        if timeout is not None:
            fd.set_deadline(_time_now() + timeout)
        mode = MODE_R
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
        finally:
            if timeout is not None and not fd.closed:
                try:
                    fd.set_deadline(None)
                except OSError:
                    pass

    def do_handshake(self, block: bool = False) -> None:
        """The TLS handshake; parks until done (``block`` forces it in non-blocking mode)."""
        self._check_connected()  # type: ignore[attr-defined]
        timeout = self.gettimeout()
        if timeout == 0.0 and block:
            timeout = None
        sslobj = self._sslobj  # type: ignore[attr-defined]
        self._ssl_io(sslobj.do_handshake, timeout)

    def read(self, len: int = 1024, buffer: Any = None) -> Any:
        """Read up to ``len`` bytes of plaintext (into ``buffer`` if given)."""
        return self._ssl_io(lambda: _OrigSSLSocket.read(self, len, buffer), self.gettimeout())

    def write(self, data: Any) -> int:
        """Write ``data`` as TLS records; returns the bytes of plaintext taken."""
        return self._ssl_io(lambda: _OrigSSLSocket.write(self, data), self.gettimeout())

    def send(self, data: Any, flags: int = 0) -> int:
        """Send plaintext (TLS) or bytes (before the handshake), parking as needed."""
        if self._sslobj is None:  # type: ignore[attr-defined]
            return _gsocket.socket.send(self, data, flags)
        if flags != 0:
            raise ValueError(f"non-zero flags not allowed in calls to send() on {self.__class__}")
        sslobj = self._sslobj  # type: ignore[attr-defined]
        n: int = self._ssl_io(lambda: sslobj.write(data), self.gettimeout())
        return n

    def unwrap(self) -> Any:
        """Shut TLS down (close_notify both ways); returns the plain socket."""
        return self._ssl_io(lambda: _OrigSSLSocket.unwrap(self), self.gettimeout())


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
