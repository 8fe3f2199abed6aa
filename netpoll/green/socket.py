"""The stdlib :mod:`socket` API on netpoll (what ``import netpoll.socket`` gives).

Mirrors CPython's ``Lib/socket.py`` and ``Modules/socketmodule.c`` for the
semantics, and gevent's ``gevent/_socket3.py`` for the approach; the I/O is
netpoll's Go-shaped ``internal/poll``: :class:`netpoll.core.fd.FD` and its
pollDesc.

:class:`socket` is a subclass of the stdlib :class:`socket.socket`, so
``isinstance`` checks, :meth:`makefile` (the stdlib ``SocketIO``), ``ssl``'s
``wrap_socket`` and the C methods (``bind``, ``setsockopt``, ``getpeername``,
...) work unchanged.  What changes:

* **Parking.**  The descriptor is always ``O_NONBLOCK`` and the C object's
  own timeout is 0.  A call that would block tries the system call, and on
  ``EAGAIN`` parks the calling G on the descriptor's pollDesc: a goroutine
  lets its M run other goroutines, a plain thread waits in the kernel (both
  as :class:`~netpoll.core.fd.FD` does for a netpoll conn).
* **The timeout is the stdlib's.**  :meth:`settimeout` keeps the value in
  Python; ``None`` blocks, ``t > 0`` becomes a pollDesc deadline of
  ``now + t`` for each call (``sendall``: for the whole call) and raises
  :class:`TimeoutError` (``socket.timeout``, message "timed out"), ``0``
  tries once and raises :class:`BlockingIOError`.  ``getdefaulttimeout``
  applies to new sockets.  The deadline is set when a call may park and
  left set afterwards (the next timed call overwrites it; ``settimeout(None)``
  clears it; non-blocking calls never consult it), so a call costs no
  clearing round trip.
* **The hot path.**  ``recv``, ``recv_into`` and ``sendall`` without flags
  call the FD's own loops (:meth:`~netpoll.core.fd.FD.read`, ``readinto``,
  ``write``: fdMutex, pollDesc checks, the socket method, parking on
  ``EAGAIN``) with nothing in between but the timeout's deadline, so an
  echoed message costs what a netpoll ``Conn``'s does
  (``docs/performance.md``, "Green sockets").
* **Syscall hooks.**  ``socket``, ``connect``, ``listen``, ``accept``, the
  ``SO_ERROR`` read that ends a connect, ``close``, and the data calls
  ``recv``/``recv_into`` and ``send``/``sendall`` (with any flags),
  ``recvfrom``/``recvfrom_into`` and ``sendto`` (without flags) go through
  netpoll's :class:`~netpoll.core.plugins.SyscallTable`, so
  ``netpoll.testing.Faults`` rules (refuse a connect, reset a connection,
  stall a read) reach any library using these sockets.  ``recvmsg``,
  ``sendmsg``, flagged ``recvfrom``/``sendto``, ``bind``, ``setsockopt`` and
  ``socketpair`` call the OS directly (the hook specification has no entry
  for them).  Over TLS (:mod:`netpoll.green.ssl`) OpenSSL reads and writes
  the descriptor itself, bypassing the hooks, unless a plugin watched them
  when the TLS connection started (then it runs on memory BIOs over the
  hooked calls).
* **Lookups** (``getaddrinfo``, ``gethostbyname``, ...) and a ``connect``
  to a host name run in :func:`netpoll.blocking`'s thread pool from a
  goroutine, so a slow resolver does not stop its M.

Each socket has two Python objects on one descriptor: itself (what the user
and the C methods see) and a private stdlib socket, ``raw``, that the FD owns
and that the syscall hooks receive (a hook calling ``sock.recv_into`` must
reach the OS, not this class's parking method).  Closing goes through the FD
(parked operations of other Gs fail with ``EBADF``, the poller forgets the
descriptor, then ``raw`` closes it); the socket object itself only forgets
the number.  The FD is made at the first call that may park, so a socket that
never waits (a listener's options, a socket handed to ``ssl``) costs no
poller registration.
"""

from __future__ import annotations

import _socket
import builtins as _builtins
import errno as _errno
import math
import os as _os
import socket as _std
import threading as _threading
import time as _time
import warnings as _warnings
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from netpoll.core import finalizer as _finalizer
from netpoll.core.errors import DeadlineExceededError, NetClosingError
from netpoll.core.fd import FD
from netpoll.core.hookspecs import MODE_R, MODE_RW, MODE_W
from netpoll.core.runtime import runtime as _runtime
from netpoll.core.sched import blocking as _blocking

# Everything else the stdlib module holds (private names that libraries use,
# such as _GLOBAL_DEFAULT_TIMEOUT), so this module can stand in for it.
for _name, _value in list(vars(_std).items()):
    if not _name.startswith("__") and _name not in globals():
        globals()[_name] = _value
del _name, _value

if TYPE_CHECKING:
    # Every other name is the stdlib module's (copied above at run time).
    def __getattr__(name: str) -> Any: ...


_T = TypeVar("_T")

#: The stdlib objects this module builds on, captured at import (before any
#: patching replaces the module attributes).
_StdSocket = _std.socket
_CSocket = _socket.socket  # the C type
_orig_getaddrinfo = _std.getaddrinfo
_orig_gethostbyname = _std.gethostbyname
_orig_gethostbyname_ex = _std.gethostbyname_ex
_orig_gethostbyaddr = _std.gethostbyaddr
_orig_getnameinfo = _std.getnameinfo
_orig_socketpair = _std.socketpair
_orig_getdefaulttimeout = _std.getdefaulttimeout
_orig_getfqdn = _std.getfqdn
_ExceptionGroup: Any = getattr(_builtins, "ExceptionGroup", None)
_GLOBAL_DEFAULT_TIMEOUT: object = _std._GLOBAL_DEFAULT_TIMEOUT  # type: ignore[attr-defined]
_time_now = _time.time
_monotonic = _time.monotonic

_table = _runtime.table

#: Guards the lazy creation of a socket's FD against a close in another thread.
#: Reentrant: making the FD allocates, an allocation may run the garbage
#: collector, and a finalizer it runs may close another green socket in this
#: thread (urllib3 closes a dropped pool's connections from weakref.finalize).
_fd_lock = _threading.RLock()


def _timed_out() -> OSError:
    return TimeoutError("timed out")


def _ebadf() -> OSError:
    return OSError(_errno.EBADF, "Bad file descriptor")


class _RawSocket(_StdSocket):
    """The stdlib socket that the FD owns and the syscall hooks receive.

    Its ``accept`` makes another raw socket (not whatever class ``socket.socket``
    names at the time, which after :func:`netpoll.patch.all` is the green one).
    """

    def accept(self) -> tuple[_RawSocket, Any]:
        """accept(2): ``(raw socket, address)``; the descriptor is close-on-exec."""
        fd, addr = self._accept()  # type: ignore[attr-defined]
        return _RawSocket(self.family, self.type, self.proto, fileno=fd), addr


class _Flagged:
    """``raw`` seen through the read/write hooks with ``flags`` for recv/send.

    The hooks call ``sock.recv_into(buf)`` and ``sock.send(data)``; this gives
    them the flagged calls while every other attribute (``fileno``, ``family``,
    ``getpeername``...) stays the raw socket's, so fault rules still match.
    """

    __slots__ = ("_flags", "_raw")

    def __init__(self, raw: _RawSocket, flags: int) -> None:
        self._raw = raw
        self._flags = flags

    def recv_into(self, buf: Any) -> int:
        """recv(2) into ``buf`` with the flags."""
        return self._raw.recv_into(buf, 0, self._flags)

    def send(self, data: Any) -> int:
        """send(2) with the flags."""
        return self._raw.send(data, self._flags)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


def _set_pd_deadline(fd: FD, d: float, mode: int) -> None:
    """``FD.set_*_deadline`` without the wall-clock round trip (``d``: monotonic, 0 clears)."""
    if fd.pd is None:
        return
    fd.set_deadline_in(math.inf if d == 0 else d - _monotonic(), mode)


def _shrink(buf: bytearray, n: int) -> bytes:
    """The first ``n`` bytes of ``buf`` as bytes.

    A fault plugin may still hold a view of ``buf`` (its log records the
    call's arguments), and a bytearray with views cannot be resized.
    """
    try:
        del buf[n:]
    except BufferError:
        return bytes(memoryview(buf)[:n])
    return bytes(buf)


def _is_ip_literal(host: str) -> bool:
    """An IPv4 or IPv6 address (a ``%scope`` suffix allowed), not a name."""
    if _is_numeric_host(_std.AF_INET, host):
        return True
    return _std.has_ipv6 and _is_numeric_host(_std.AF_INET6, host.split("%", 1)[0])


def _is_numeric_host(family: int, host: str) -> bool:
    try:
        _std.inet_pton(family, host)
    except (OSError, ValueError):
        return False
    return True


class socket(_StdSocket):
    """A stdlib-compatible socket whose blocking calls park (see the module doc).

    Same constructor as :class:`socket.socket`: ``socket(family, type, proto,
    fileno)``; with ``fileno`` the socket takes that descriptor over (and
    switches it to non-blocking mode).
    """

    _raw: _RawSocket | None
    _fd: FD | None
    _gtimeout: float | None
    _closing: bool
    #: True once a call may have left a pollDesc deadline set (see _arm).
    _dl: bool = False

    def __init__(
        self, family: int = -1, type: int = -1, proto: int = -1, fileno: int | None = None
    ) -> None:
        self._raw = None
        self._fd = None
        self._closing = False
        if fileno is None:
            made = _table.socket(
                _std.AF_INET if family == -1 else family,
                _std.SOCK_STREAM if type == -1 else type,
                0 if proto == -1 else proto,
            )
            try:
                raw = _RawSocket(made.family, made.type, made.proto, fileno=made.fileno())
            except BaseException:
                made.close()
                raise
            made.detach()
        else:
            raw = _RawSocket(family, type, proto, fileno=fileno)
        try:
            raw.setblocking(False)
            _StdSocket.__init__(self, raw.family, raw.type, raw.proto, fileno=raw.fileno())
        except BaseException:
            if fileno is None:
                raw.close()
            else:
                raw.detach()  # a failed constructor leaves the caller's descriptor open
            raise
        self._adopt_raw(raw)

    def _adopt_raw(self, raw: _RawSocket) -> None:
        _CSocket.settimeout(self, 0.0)
        self._raw = raw
        self._gtimeout = _orig_getdefaulttimeout()

    @classmethod
    def _from_raw(cls, raw: _RawSocket) -> socket:
        """A green socket over an accepted raw socket (shares its descriptor)."""
        self = cls.__new__(cls)
        self._raw = None
        self._fd = None
        self._closing = False
        _StdSocket.__init__(self, raw.family, raw.type, raw.proto, fileno=raw.fileno())
        self._adopt_raw(raw)
        return self

    # -- the FD -------------------------------------------------------------------

    def _get_fd(self) -> FD:
        fd = self._fd
        if fd is not None:
            return fd
        with _fd_lock:
            fd = self._fd
            if fd is None:
                if self._closing or self._raw is None or self._raw.fileno() < 0:
                    raise _ebadf()
                fd = self._fd = FD(self._raw)
            return fd

    def _live_raw(self) -> _RawSocket:
        raw = self._raw
        if raw is None or self._closing:
            raise _ebadf()
        return raw

    def _arm(self, fd: FD, mode: int) -> None:
        """Set this call's deadline from the timeout (None: none).

        The deadline is left set when the call returns: every call that may
        park with a timeout sets its own first, non-blocking calls never
        consult it, and :meth:`settimeout` to None clears it (``_dl`` says
        one may be set).
        """
        t = self._gtimeout
        if t is not None and fd.pd is not None:
            self._dl = True
            fd.set_deadline_in(t, mode)

    def _recv_until(self, n: int, deadline: float | None, nonblocking: bool) -> bytes:
        """Up to ``n`` bytes through the read hook, parking until ``deadline`` (monotonic).

        For the TLS layer's memory BIOs: ``BlockingIOError`` if ``nonblocking``
        and nothing is queued.
        """
        raw = self._live_raw()
        buf = bytearray(n)
        if nonblocking:
            return _shrink(buf, _table.read(raw, buf))
        fd = self._get_fd()
        try:
            if deadline is not None:
                self._dl = True
            _set_pd_deadline(fd, 0.0 if deadline is None else deadline, MODE_R)
            k = fd.readinto(buf)
        except DeadlineExceededError:
            raise _timed_out() from None
        except NetClosingError:
            raise _ebadf() from None
        return _shrink(buf, k)

    def _send_until(self, data: bytes, deadline: float | None) -> None:
        """All of ``data`` through the write hook, parking until ``deadline`` (monotonic)."""
        self._live_raw()
        fd = self._get_fd()
        try:
            if deadline is not None:
                self._dl = True
            _set_pd_deadline(fd, 0.0 if deadline is None else deadline, MODE_W)
            fd.write(data)
        except DeadlineExceededError:
            raise _timed_out() from None
        except NetClosingError:
            raise _ebadf() from None

    def _io(self, mode: int, attempt: Callable[[], _T], *, tried: bool = False) -> _T:
        """Run ``attempt`` (which raises BlockingIOError on EAGAIN) with the timeout.

        Non-blocking: once.  Otherwise one attempt first (most calls
        succeed at once, and then no deadline needs setting; ``tried``: the
        caller made it), then under the fdMutex, parking on ``mode`` between
        attempts, until it succeeds, the deadline passes (``socket.timeout``)
        or the socket is closed (``EBADF``).
        """
        self._live_raw()
        if not tried:
            if self._gtimeout == 0.0:
                return attempt()
            try:
                return attempt()
            except BlockingIOError:
                pass
        fd = self._get_fd()
        box: list[_T] = []

        def once(_sysfd: int) -> bool:
            try:
                box.append(attempt())
            except BlockingIOError:
                return False
            return True

        try:
            self._arm(fd, mode)
            fd.raw_io(mode, once)
        except DeadlineExceededError:
            raise _timed_out() from None
        except NetClosingError:
            raise _ebadf() from None
        return box[0]

    # -- timeouts -------------------------------------------------------------------

    def settimeout(self, value: float | None) -> None:
        """Per-call timeout in seconds: None blocks, 0 is non-blocking (as the stdlib)."""
        if value is not None:
            value = float(value)
            if value != value or value < 0:
                raise ValueError("Timeout value out of range")
        self._gtimeout = value
        if value is None and self._dl:
            # Calls without a timeout go to the FD with no deadline of their
            # own: clear the one a timed call left.  (Non-blocking calls never
            # consult it, so settimeout(0), which redis-py's pool check does
            # twice per command with its timeout, leaves it.)
            self._dl = False
            fd = self._fd
            if fd is not None and fd.pd is not None:
                try:
                    fd.set_deadline_in(math.inf, MODE_RW)
                except OSError:
                    pass

    def gettimeout(self) -> float | None:
        """The timeout set by :meth:`settimeout` (None: blocking)."""
        return self._gtimeout

    def setblocking(self, flag: bool) -> None:
        """``True``: ``settimeout(None)``; ``False``: ``settimeout(0.0)``."""
        self.settimeout(None if flag else 0.0)

    def getblocking(self) -> bool:
        """False only in non-blocking mode (timeout 0)."""
        return self._gtimeout != 0.0

    @property
    def timeout(self) -> float | None:
        """Same as :meth:`gettimeout`."""
        return self._gtimeout

    # -- connect / accept / listen ------------------------------------------------------

    def _resolve(self, address: Any) -> Any:
        """A host name in an INET address, looked up off the M (the C call would block)."""
        if (
            self.family in (_std.AF_INET, _std.AF_INET6)
            and isinstance(address, tuple)
            and len(address) >= 2
            and isinstance(address[0], str)
            and address[0] not in ("", "<broadcast>")
            and not _is_numeric_host(self.family, address[0])
        ):
            infos = getaddrinfo(address[0], address[1], self.family, self.type, self.proto)
            if not infos:
                raise _std.gaierror(_std.EAI_NONAME, "Name or service not known")
            sockaddr = infos[0][4]
            if self.family == _std.AF_INET6 and len(address) == 4:
                return (sockaddr[0], sockaddr[1], address[2], address[3])
            return sockaddr
        return address

    def connect(self, address: Any) -> None:
        """Connect to ``address``, parking until done (as the stdlib's, with the timeout)."""
        raw = self._live_raw()
        address = self._resolve(address)
        try:
            _table.connect(raw, address)
            return
        except BlockingIOError as exc:
            if self._gtimeout == 0.0 or exc.errno not in (_errno.EINPROGRESS, _errno.EALREADY):
                raise
        except InterruptedError:
            if self._gtimeout == 0.0:
                raise
        fd = self._get_fd()
        try:
            self._arm(fd, MODE_W)
            while True:
                fd.wait_write()
                err = int(_table.getsockopt_int(raw, _std.SOL_SOCKET, _std.SO_ERROR))
                if err in (_errno.EINPROGRESS, _errno.EALREADY, _errno.EINTR):
                    continue
                if err in (0, _errno.EISCONN):
                    try:
                        raw.getpeername()
                    except OSError:
                        continue  # a spurious wakeup: not connected yet
                    return
                raise OSError(err, _os.strerror(err))
        except DeadlineExceededError:
            raise _timed_out() from None
        except NetClosingError:
            raise _ebadf() from None
        finally:
            if self._fd is not None and self._gtimeout is not None:
                try:
                    self._fd.set_write_deadline(None)
                except OSError:
                    pass

    def connect_ex(self, address: Any) -> int:
        """Like :meth:`connect`, but returns an errno (0 on success) instead of raising.

        A timeout returns ``EAGAIN``, as CPython's does; a lookup failure raises.
        """
        try:
            self.connect(address)
        except _std.gaierror:
            raise
        except TimeoutError:
            return _errno.EAGAIN
        except OSError as exc:
            return exc.errno if exc.errno is not None else _errno.EIO
        return 0

    def listen(self, backlog: int | None = None) -> None:
        """listen(2) through the syscall hook (default backlog as the stdlib's)."""
        if backlog is None:
            backlog = min(_std.SOMAXCONN, 128)
        _table.listen(self._live_raw(), max(0, backlog))

    def bind(self, address: Any) -> None:
        """bind(2); a host name is looked up off the M first."""
        _CSocket.bind(self, self._resolve(address))

    def accept(self) -> tuple[socket, Any]:
        """Accept a connection: ``(netpoll socket, address)``; parks until one arrives."""
        if self._gtimeout == 0.0:
            conn, addr = _table.accept(self._live_raw())
        else:
            fd = self._get_fd()
            try:
                self._arm(fd, MODE_R)
                conn, addr = fd.accept()
            except DeadlineExceededError:
                raise _timed_out() from None
            except NetClosingError:
                raise _ebadf() from None
        if not isinstance(conn, _RawSocket):  # a plugin made its own: take the fd over
            raw = _RawSocket(conn.family, conn.type, conn.proto, fileno=conn.fileno())
            conn.detach()
            conn = raw
        conn.setblocking(False)
        return socket._from_raw(conn), addr

    # -- reads --------------------------------------------------------------------------

    # The data calls without flags are the hot path of every library (redis-py
    # reads with recv, http.client's SocketIO with recv_into, both write with
    # sendall): each goes straight to the FD's own loop (fdMutex, pollDesc
    # checks, the socket method or its syscall hook, parking on EAGAIN), with
    # no closure per attempt.  A timeout costs one ``set_deadline_in`` per
    # call that may park; the deadline is left behind (see _arm).  The
    # flagged and rarer calls take the generic path, _io.

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        """Read into ``buffer`` (at most ``nbytes`` if given); 0 at EOF."""
        if nbytes or flags:
            return self._recv_into_slow(buffer, nbytes, flags)
        t = self._gtimeout
        if t == 0.0:
            return self._recv_into_slow(buffer, 0, 0)
        fd = self._fd
        if fd is None:
            fd = self._get_fd()
        if not _table.read_direct:
            # A plugin watches: hand it a byte view (it may slice or log it).
            buffer = memoryview(buffer).cast("B")
        try:
            if t is not None and fd.pd is not None:
                self._dl = True
                fd.set_deadline_in(t, MODE_R)
            return fd.readinto(buffer)
        except DeadlineExceededError:
            raise _timed_out() from None
        except NetClosingError:
            raise _ebadf() from None

    def _recv_into_slow(self, buffer: Any, nbytes: int, flags: int) -> int:
        """recv_into with ``nbytes``, ``flags`` or in non-blocking mode."""
        view = memoryview(buffer).cast("B")
        if nbytes:
            if nbytes < 0:
                raise ValueError("negative buffersize in recv_into")
            if nbytes > view.nbytes:
                raise ValueError("buffer too small for requested bytes")
            view = view[:nbytes]
        raw = self._live_raw()
        target: Any = _Flagged(raw, flags) if flags else raw
        return self._io(MODE_R, lambda: _table.read(target, view))

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        """Read up to ``bufsize`` bytes; ``b""`` at EOF."""
        if bufsize < 0:
            raise ValueError("negative buffersize in recv")
        t = self._gtimeout
        if flags or t == 0.0:
            if not flags and _table.read_direct:
                raw = self._raw
                if raw is None or self._closing:
                    raise _ebadf()
                data: bytes = raw.recv(bufsize)  # non-blocking: once
                return data
            buf = bytearray(bufsize)
            return _shrink(buf, self._recv_into_slow(buf, 0, flags))
        fd = self._fd
        if fd is None:
            fd = self._get_fd()
        try:
            if t is not None and fd.pd is not None:
                self._dl = True
                fd.set_deadline_in(t, MODE_R)
            return fd.read(bufsize)
        except DeadlineExceededError:
            raise _timed_out() from None
        except NetClosingError:
            raise _ebadf() from None

    def recvfrom_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> tuple[int, Any]:
        """Receive one datagram into ``buffer``: ``(nbytes, address)``."""
        view = memoryview(buffer).cast("B")
        if nbytes:
            view = view[:nbytes]
        raw = self._live_raw()
        if flags:
            return self._io(MODE_R, lambda: raw.recvfrom_into(view, 0, flags))
        return self._io(MODE_R, lambda: _table.recvfrom(raw, view))

    def recvfrom(self, bufsize: int, flags: int = 0) -> tuple[bytes, Any]:
        """Receive one datagram: ``(data, address)``."""
        if bufsize < 0:
            raise ValueError("negative buffersize in recvfrom")
        buf = bytearray(bufsize)
        n, addr = self.recvfrom_into(buf, bufsize, flags)
        return _shrink(buf, n), addr

    def recvmsg(self, bufsize: int, ancbufsize: int = 0, flags: int = 0) -> Any:
        """recvmsg(2), parking while nothing is queued (no syscall hook: direct)."""
        raw = self._live_raw()
        return self._io(MODE_R, lambda: raw.recvmsg(bufsize, ancbufsize, flags))

    def recvmsg_into(self, buffers: Iterable[Any], ancbufsize: int = 0, flags: int = 0) -> Any:
        """recvmsg(2) into ``buffers``, parking while nothing is queued."""
        raw = self._live_raw()
        bufs = list(buffers)
        return self._io(MODE_R, lambda: raw.recvmsg_into(bufs, ancbufsize, flags))

    # -- writes ---------------------------------------------------------------------------

    def send(self, data: Any, flags: int = 0) -> int:
        """Send ``data``; returns how many bytes the OS took (parks while none fit)."""
        raw = self._raw
        if raw is None or self._closing:
            raise _ebadf()
        if flags:
            target: Any = _Flagged(raw, flags)
            return self._io(MODE_W, lambda: _table.write(target, data))
        # One attempt before the generic path: a send that fits is the rule.
        try:
            if _table.write_direct:
                n: int = raw.send(data)
                return n
            return _table.write(raw, data)
        except BlockingIOError:
            if self._gtimeout == 0.0:
                raise
        return self._io(MODE_W, lambda: _table.write(raw, data), tried=True)

    def sendall(self, data: Any, flags: int = 0) -> None:
        """Send all of ``data``; the timeout bounds the whole call."""
        t = self._gtimeout
        if flags or t == 0.0:
            self._sendall_slow(data, flags)
            return
        if t is not None:
            # One attempt before paying for a deadline: a small send fits.
            raw = self._raw
            if raw is None or self._closing:
                raise _ebadf()
            kind = data.__class__
            if kind is bytes or kind is bytearray:
                total = len(data)
            else:
                data = memoryview(data).cast("B")
                total = data.nbytes
            try:
                sent: int = raw.send(data) if _table.write_direct else _table.write(raw, data)
            except BlockingIOError:
                sent = 0
            if sent >= total:
                return
            if sent:
                data = memoryview(data).cast("B")[sent:]
        fd = self._fd
        if fd is None:
            fd = self._get_fd()
        try:
            if t is not None and fd.pd is not None:
                self._dl = True
                fd.set_deadline_in(t, MODE_W)
            fd.write(data)
        except DeadlineExceededError:
            raise _timed_out() from None
        except NetClosingError:
            raise _ebadf() from None

    def _sendall_slow(self, data: Any, flags: int) -> None:
        """sendall with flags or in non-blocking mode: :meth:`send` until all is out."""
        self._live_raw()
        view = memoryview(data).cast("B")
        t = self._gtimeout
        deadline = None if not t else _monotonic() + t
        while view:
            if deadline is not None and _monotonic() >= deadline:
                raise _timed_out()
            view = view[self.send(view, flags) :]

    def sendto(self, data: Any, flags_or_address: Any, address: Any = None) -> int:
        """``sendto(data, address)`` or ``sendto(data, flags, address)``: one datagram."""
        raw = self._live_raw()
        if address is None:
            flags, address = 0, flags_or_address
        else:
            flags = int(flags_or_address)
        address = self._resolve(address)
        if flags:
            return self._io(MODE_W, lambda: raw.sendto(data, flags, address))
        return self._io(MODE_W, lambda: _table.sendto(raw, data, address))

    def sendmsg(
        self,
        buffers: Iterable[Any],
        ancdata: Iterable[Any] = (),
        flags: int = 0,
        address: Any = None,
    ) -> int:
        """sendmsg(2), parking while the buffer is full (no syscall hook: direct)."""
        raw = self._live_raw()
        bufs = list(buffers)
        anc = list(ancdata)
        if address is None:
            return self._io(MODE_W, lambda: raw.sendmsg(bufs, anc, flags))
        return self._io(MODE_W, lambda: raw.sendmsg(bufs, anc, flags, address))

    def sendfile(self, file: Any, offset: int = 0, count: int | None = None) -> int:
        """Send a file with :meth:`send` (the stdlib's os.sendfile path waits in selectors)."""
        return int(self._sendfile_use_send(file, offset, count))  # type: ignore[attr-defined]

    # -- shutdown / close / detach ------------------------------------------------------------

    def _take(self) -> tuple[_RawSocket | None, FD | None]:
        """Mark closing and take the raw socket and FD (once)."""
        with _fd_lock:
            if self._closing:
                return None, None
            self._closing = True
            raw, fd = self._raw, self._fd
        return raw, fd

    def _real_close(self, _ss: Any = None) -> None:
        raw, fd = self._take()
        if raw is None:
            return
        _CSocket.detach(self)  # forget the number; the FD closes it through raw
        if fd is None:
            _table.close(raw)
            return
        try:
            fd.close()
        except NetClosingError:
            pass

    def detach(self) -> int:
        """Give the descriptor up without closing it; returns it (-1 if closed).

        The poller forgets it; it is left in blocking mode unless this socket
        had a timeout, as a stdlib socket's would be.
        """
        self._closed = True
        blocking = self._gtimeout is None
        num = int(_CSocket.detach(self))
        raw, fd = self._take()
        if raw is None:
            return num
        raw.detach()  # raw forgets the number: the FD's close below does not close it
        if fd is not None:
            try:
                fd.close()
            except NetClosingError:
                pass
        if num >= 0 and blocking:
            _os.set_blocking(num, True)
        return num

    def __del__(self) -> None:
        # Defining __del__ replaces the C finalizer, which would close the
        # number behind the FD's back: close through the FD instead, on the
        # finalizer thread (__del__ may run anywhere, see core/finalizer.py).
        raw = getattr(self, "_raw", None)
        if raw is None or getattr(self, "_closing", True):
            return
        self._closing = True
        fd = self._fd
        try:
            num = int(_CSocket.detach(self))
        except Exception:
            num = -1
        if num >= 0:
            _warnings.warn(f"unclosed netpoll socket fd={num}", ResourceWarning, stacklevel=2)
        if fd is not None:
            _finalizer.queue_close(fd.close)
        else:
            _finalizer.queue_close(lambda: _table.close(raw))


SocketType = socket


def _orig_timeout_value(timeout: object) -> float | None:
    if timeout is _GLOBAL_DEFAULT_TIMEOUT:
        return _orig_getdefaulttimeout()
    return None if timeout is None else float(timeout)  # type: ignore[arg-type]


def create_connection(
    address: tuple[str | None, int],
    timeout: float | object | None = _GLOBAL_DEFAULT_TIMEOUT,
    source_address: Any = None,
    *,
    all_errors: bool = False,
) -> socket:
    """:func:`socket.create_connection` with netpoll sockets: each address in turn.

    The timeout applies to each connect and stays set on the socket, as the
    stdlib's.  On failure the last error is raised (``all_errors``: an
    :class:`ExceptionGroup` of them all, Python 3.11+).
    """
    host, port = address
    errors: list[OSError] = []
    for family, type_, proto, _canon, sa in getaddrinfo(host, port, 0, _std.SOCK_STREAM):
        sock: socket | None = None
        try:
            sock = socket(family, type_, proto)
            sock.settimeout(_orig_timeout_value(timeout))
            if source_address:
                sock.bind(source_address)
            sock.connect(sa)
            errors.clear()
            return sock
        except OSError as exc:
            errors.append(exc)
            if sock is not None:
                sock.close()
    if not errors:
        raise OSError("getaddrinfo returns an empty list")
    if all_errors and _ExceptionGroup is not None:
        raise _ExceptionGroup("create_connection failed", errors)
    raise errors[-1]


def create_server(
    address: Any,
    *,
    family: int = _std.AF_INET,
    backlog: int | None = None,
    reuse_port: bool = False,
    dualstack_ipv6: bool = False,
) -> socket:
    """:func:`socket.create_server` with a netpoll socket (bound and listening)."""
    if reuse_port and not hasattr(_std, "SO_REUSEPORT"):
        raise ValueError("SO_REUSEPORT not supported on this platform")
    if dualstack_ipv6:
        if not _std.has_dualstack_ipv6():
            raise ValueError("dualstack_ipv6 not supported on this platform")
        if family != _std.AF_INET6:
            raise ValueError("dualstack_ipv6 requires AF_INET6 family")
    sock = socket(family, _std.SOCK_STREAM)
    try:
        if _os.name not in ("nt", "cygwin") and hasattr(_std, "SO_REUSEADDR"):
            try:
                sock.setsockopt(_std.SOL_SOCKET, _std.SO_REUSEADDR, 1)
            except OSError:
                pass
        if reuse_port:
            sock.setsockopt(_std.SOL_SOCKET, _std.SO_REUSEPORT, 1)
        if family == _std.AF_INET6 and _std.has_ipv6 and hasattr(_std, "IPPROTO_IPV6"):
            sock.setsockopt(_std.IPPROTO_IPV6, _std.IPV6_V6ONLY, 0 if dualstack_ipv6 else 1)
        try:
            sock.bind(address)
        except OSError as exc:
            raise OSError(
                exc.errno, f"{exc.strerror} (while attempting to bind on address {address!r})"
            ) from None
        sock.listen(backlog)
        return sock
    except BaseException:
        sock.close()
        raise


def socketpair(
    family: int | None = None, type: int = _std.SOCK_STREAM, proto: int = 0
) -> tuple[socket, socket]:
    """A connected pair of netpoll sockets (``socketpair(2)``: no syscall hook)."""
    if family is None:
        family = getattr(_std, "AF_UNIX", _std.AF_INET)
    a, b = _orig_socketpair(family, type, proto)
    try:
        ga = socket(a.family, a.type, a.proto, fileno=a.fileno())
    except BaseException:
        a.close()
        b.close()
        raise
    a.detach()
    try:
        gb = socket(b.family, b.type, b.proto, fileno=b.fileno())
    except BaseException:
        ga.close()
        b.close()
        raise
    b.detach()
    return ga, gb


def fromfd(fd: int, family: int, type: int, proto: int = 0) -> socket:
    """A netpoll socket on a duplicate of ``fd`` (as :func:`socket.fromfd`)."""
    nfd = _os.dup(fd)
    try:
        return socket(family, type, proto, fileno=nfd)
    except BaseException:
        _os.close(nfd)
        raise


# -- lookups: off the M from a goroutine -------------------------------------------------


def getaddrinfo(
    host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
) -> list[tuple[Any, Any, int, str, Any]]:
    """:func:`socket.getaddrinfo`, run in :func:`netpoll.blocking`'s pool from a goroutine.

    A numeric host (or None) needs no resolver: it is answered in the caller,
    saving the pool round trip on every connect to an address.
    """
    if host is None or (isinstance(host, str) and _is_ip_literal(host)):
        return _orig_getaddrinfo(host, port, family, type, proto, flags)
    return _blocking(_orig_getaddrinfo, host, port, family, type, proto, flags)


def gethostbyname(hostname: str) -> str:
    """:func:`socket.gethostbyname` off the M."""
    return _blocking(_orig_gethostbyname, hostname)


def gethostbyname_ex(hostname: str) -> tuple[str, list[str], list[str]]:
    """:func:`socket.gethostbyname_ex` off the M."""
    return _blocking(_orig_gethostbyname_ex, hostname)


def gethostbyaddr(ip_address: str) -> tuple[str, list[str], list[str]]:
    """:func:`socket.gethostbyaddr` off the M."""
    return _blocking(_orig_gethostbyaddr, ip_address)


def getnameinfo(sockaddr: Any, flags: int) -> tuple[str, str]:
    """:func:`socket.getnameinfo` off the M."""
    return _blocking(_orig_getnameinfo, sockaddr, flags)


def getfqdn(name: str = "") -> str:
    """:func:`socket.getfqdn` off the M."""
    return _blocking(_orig_getfqdn, name)


#: The names this module replaces in the stdlib's (what ``netpoll.patch`` swaps).
GREEN_NAMES = (
    "socket",
    "SocketType",
    "create_connection",
    "create_server",
    "socketpair",
    "fromfd",
    "getaddrinfo",
    "gethostbyname",
    "gethostbyname_ex",
    "gethostbyaddr",
    "getnameinfo",
    "getfqdn",
)

__all__ = sorted({*_std.__all__, *GREEN_NAMES})
