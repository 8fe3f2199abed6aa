"""FD: read/write/accept/connect-wait/close on one non-blocking descriptor.

This is Go's ``internal/poll/fd_unix.go`` (``poll.FD``) with
``fd_poll_runtime.go``.  Every operation follows the same shape:

1. take the fdMutex (reads serialise with reads, writes with writes; a closed
   FD fails here with "use of closed network connection");
2. ``prepare``: fail at once if the deadline has passed or the FD is closing;
3. try the syscall through the syscall table; only on ``EAGAIN`` park on the
   pollDesc and try again when woken;
4. release the fdMutex; the last one out after ``close`` destroys the FD.

A descriptor the backend refuses (a regular file on epoll: ``EPERM``) is not
pollable: it is switched to blocking mode and its operations block in the
syscall, as Go does.  Deadlines cannot apply to it.
"""

from __future__ import annotations

import _socket
import errno
import math
import os
import stat
import time
from _thread import get_ident as _get_ident
from collections.abc import Callable
from typing import Any

from netpoll.core import finalizer as _finalizer
from netpoll.core.errors import FileClosingError, NetClosingError
from netpoll.core.fdmutex import FDMutex
from netpoll.core.g import RHINT_DRAINED, current_g
from netpoll.core.hookspecs import MODE_R, MODE_RW, MODE_W
from netpoll.core.park import Note
from netpoll.core.polldesc import PollDesc, close_polldesc, open_polldesc
from netpoll.core.runtime import runtime

#: Go caps one read/write syscall at 1 GiB (``maxRW``): larger buffers are
#: written in chunks, which also keeps a huge send from starving the peer.
MAX_RW = 1 << 30

_table = runtime.table
_monotonic = time.monotonic
_time = time.time

# The socket's kind and family as stored ints (the ``socket.socket``
# properties build enum members on every read).
_sock_type = _socket.socket.type.__get__
_sock_family = _socket.socket.family.__get__
_TCP_FAMILIES = (_socket.AF_INET, getattr(_socket, "AF_INET6", _socket.AF_INET))


def _is_tcp(sock: Any) -> bool:
    """True for a TCP stream socket (see PollDesc.wait: its short reads drain it)."""
    return (
        isinstance(sock, _socket.socket)
        and _sock_type(sock) == _socket.SOCK_STREAM
        and _sock_family(sock) in _TCP_FAMILIES
    )


def _short_reads_drain() -> bool:
    """False on an edge-triggered backend that cannot report exceptional events.

    There a short TCP read that left EOF, an error or data behind an urgent
    mark would look like an empty socket, and no new edge comes for them.
    """
    spec = runtime.spec()
    return not spec.edge_triggered or spec.reports_except


class FileHandle:
    """A pipe or file fd with the socket methods the syscall hooks use.

    Lets the same FD code and the same hooks serve pipes (Go's ``os.File``
    uses the same ``poll.FD``).  Owns the fd: :meth:`close` closes it.
    """

    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        if fd < 0:
            raise ValueError(f"netpoll: bad file descriptor {fd}")
        self._fd = fd

    def fileno(self) -> int:
        """The OS fd (-1 once closed)."""
        return self._fd

    def recv_into(self, buf: Any) -> int:
        """Read into ``buf`` (readv, so no intermediate bytes object)."""
        return os.readv(self._fd, [buf])

    def recv(self, n: int) -> bytes:
        """Read up to ``n`` bytes (the direct read path's call)."""
        return os.read(self._fd, n)

    def send(self, data: Any) -> int:
        """Write from ``data``."""
        return os.write(self._fd, data)

    def setblocking(self, flag: bool) -> None:
        """Switch O_NONBLOCK."""
        os.set_blocking(self._fd, flag)

    def close(self) -> None:
        """Close the fd once."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def __repr__(self) -> str:
        return f"<FileHandle fd={self._fd}>"


def _seconds_until(t: float | None) -> float:
    """Seconds from now until the wall-clock time ``t``; ``inf`` for None (no deadline)."""
    if t is None:
        return math.inf
    return t - _time()


def _never_blocks(fd: int) -> bool:
    """True for regular files and directories: poll(2) calls them always ready
    and epoll refuses them (EPERM), so they are not put on the poller."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISREG(mode) or stat.S_ISDIR(mode)


class FD:
    """A non-blocking descriptor registered with the netpoller.

    ``sock`` is a non-blocking :class:`socket.socket` or a
    :class:`FileHandle`.  The FD owns it from construction: if registration
    fails, the caller still owns it and must close it.
    """

    __slots__ = ("_close_error", "_csema", "_mu", "_seq", "is_file", "pd", "sock", "sysfd")

    def __init__(self, sock: Any, *, is_file: bool = False) -> None:
        sysfd = sock.fileno()
        if sysfd < 0:
            raise ValueError(f"netpoll: bad file descriptor {sysfd}")
        self.sock = sock
        self.sysfd = sysfd
        if _finalizer._thread is None:
            # A close made by a finalizer during a collection is queued for
            # that thread (see close): it must run before the first such
            # close, which may come from a collection inside this very call.
            _finalizer.ensure_started()
        self.is_file = is_file
        self._mu = FDMutex()
        self._csema: Any = None
        self._close_error: BaseException | None = None
        pd: PollDesc | None
        if is_file and _never_blocks(sysfd):
            pd = None
        else:
            try:
                pd = open_polldesc(sysfd)
            except OSError as exc:
                if exc.errno != errno.EPERM:
                    raise
                pd = None
            else:
                pd.is_file = is_file
                pd.short_read_drains = _is_tcp(sock) and _short_reads_drain()
        if pd is None:
            # Not pollable (a regular file): blocking I/O, as Go falls back.
            sock.setblocking(True)
        self.pd = pd
        #: The pollDesc generation this fd owns (deadlines check it).
        self._seq = -1 if pd is None else pd.fdseq

    @property
    def pollable(self) -> bool:
        """True when the descriptor is registered with the poller."""
        return self.pd is not None

    def _closing_error(self) -> OSError:
        return FileClosingError() if self.is_file else NetClosingError()

    # -- references for non-I/O operations -----------------------------------

    def incref(self) -> None:
        """Hold the FD open for a non-I/O operation (setsockopt, getsockname...)."""
        # FDMutex.incref inline: every accepted conn takes a few of these.
        mu = self._mu
        lk = mu.state_lock
        lk.acquire()
        if mu.closed:
            lk.release()
            raise self._closing_error()
        mu.refs += 1
        lk.release()

    def decref(self) -> None:
        """Release a reference taken by :meth:`incref`."""
        mu = self._mu
        lk = mu.state_lock
        lk.acquire()
        if mu.refs <= 0:
            lk.release()
            raise RuntimeError("netpoll: inconsistent fdMutex (decref below zero)")
        mu.refs -= 1
        if not mu.closed:
            lk.release()
            return
        destroy = mu.destroy_due_locked()
        lk.release()
        if destroy:
            self._destroy()

    def _lock_failed(self) -> OSError:
        """After a failed lock (closed): destroy if this caller was the last, say why."""
        if self._mu.release_closed():
            self._destroy()
        return self._closing_error()

    def _unlock_slow(self, read: bool) -> None:
        """After a release that found waiters queued or the FD closed."""
        if self._mu.unlocked_slow(read):
            self._destroy()

    def _lock(self, read: bool) -> None:
        """fdMutex rwlock for the operations off the hot path; raises when closed."""
        if not self._mu.rwlock(read):
            raise self._lock_failed()

    def _unlock(self, read: bool) -> None:
        """fdMutex rwunlock for the operations off the hot path."""
        if self._mu.rwunlock(read):
            self._destroy()

    # -- close ------------------------------------------------------------------

    def close(self) -> None:
        """Close: wake parked operations, and return once the fd is closed.

        Operations parked in other threads fail with the closing error; the
        OS descriptor is closed when the last of them has left (which may be
        this call).  A second close raises the closing error.

        Called by a finalizer during a garbage collection, it only queues the
        close for the finalizer thread (:mod:`netpoll.core.finalizer`): the
        collection may have started at an allocation made under a lock the
        close needs (the fdMutex state lock, a pollDesc's, a poller's).
        """
        collecting = _finalizer.collecting
        if collecting and collecting == _get_ident() and _finalizer._thread is not None:
            _finalizer.queue_close(self.close)
            return
        mu = self._mu
        if not mu.incref_and_close():
            raise self._closing_error()
        if self.pd is not None:
            self.pd.evict()
        # FDMutex.decref, inline (once per closed conn); refs >= 1 here: ours.
        lk = mu.state_lock
        lk.acquire()
        mu.refs -= 1
        destroy = mu.destroy_due_locked()
        lk.release()
        if destroy:
            self._destroy()  # the common case: nobody else was inside
        else:
            # Go's fd.Close waits on csema: close returns after the real
            # close, which the last operation to leave does.
            csema = Note()
            with mu.state_lock:
                waiting = self.sysfd != -1
                if waiting:
                    self._csema = csema
            if waiting:
                csema.wait(current_g(), None, "fd close")
        err = self._close_error
        if err is not None:
            self._close_error = None
            raise err

    def _destroy(self) -> None:
        """Unregister and close the OS fd; exactly once, by the last user."""
        try:
            if self.pd is not None:
                pd, self.pd = self.pd, None
                close_polldesc(pd)
            _table.close(self.sock)
        except BaseException as exc:
            self._close_error = exc
        finally:
            with self._mu.state_lock:
                self.sysfd = -1
                csema = self._csema
            if csema is not None:
                csema.wakeup()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has started."""
        return self._mu.closed

    # -- reads ----------------------------------------------------------------
    #
    # readinto, read and write are Go's FD.Read / FD.Write: one loop of lock,
    # prepare, syscall, park on EAGAIN.  The fdMutex fast path (a
    # non-blocking acquire, the closed check; a release, then the queue and
    # closed check) and pollDesc's prepare are inlined, and while no plugin
    # watches the call (``_table.read_direct``) the socket method is called
    # directly: each is a measurable share of an echoed message.  The
    # generic shape, with the same steps as calls, is :meth:`_io`.

    def readinto(self, buf: Any) -> int:
        """Read into ``buf``; 0 at EOF.  Parks until data, deadline or close."""
        mu = self._mu
        lk = mu.rl
        if not lk.acquire(False):
            if not mu.rwlock_slow(True):
                raise self._lock_failed()
        elif mu.closed:
            lk.release()
            raise self._lock_failed()
        try:
            pd = self.pd
            if pd is not None:
                d = pd.rd
                if pd.closing or (d and (d < 0 or d <= _monotonic())):
                    pd.prepare(MODE_R)  # raises the closing or timeout error
                hint = pd.rhint
                if hint and _table.read_direct:
                    # The last read expects nothing yet: wait first, skipping
                    # the EAGAIN round (see PollDesc.wait), before the latch
                    # is dropped.
                    pd.rhint = 0
                    pd.wait(MODE_R, hint)
                pd.rg = None  # a stale notice: the call below tries anyway
            sock = self.sock
            while True:
                try:
                    if _table.read_direct:
                        n: int = sock.recv_into(buf)
                        if n > 0 and pd is not None and pd.short_read_drains:
                            kind = buf.__class__
                            if (kind is bytearray or kind is memoryview) and n < len(buf):
                                pd.rhint = RHINT_DRAINED  # short: see read
                    else:
                        n = _table.read(sock, buf)
                    return n
                except BlockingIOError:
                    if pd is None:
                        raise
                # Parked outside the except block: the exception's traceback
                # would keep the syscall frame (and its arguments) alive.
                pd.wait(MODE_R)
        finally:
            lk.release()
            if mu.rwait or mu.closed:
                self._unlock_slow(True)

    def read(self, n: int) -> bytes:
        """Read up to ``n`` bytes; ``b""`` at EOF.

        Nothing is allocated before the data is there: the direct path is
        ``sock.recv(n)``, and the hooked path makes its buffer per attempt,
        so an idle ``read(65536)`` holds no 64 KiB while it waits.
        """
        if n < 0:
            raise ValueError(f"netpoll: negative read size {n}")
        mu = self._mu
        lk = mu.rl
        if not lk.acquire(False):
            if not mu.rwlock_slow(True):
                raise self._lock_failed()
        elif mu.closed:
            lk.release()
            raise self._lock_failed()
        try:
            pd = self.pd
            if pd is not None:
                d = pd.rd
                if pd.closing or (d and (d < 0 or d <= _monotonic())):
                    pd.prepare(MODE_R)
                hint = pd.rhint
                if hint and _table.read_direct:
                    pd.rhint = 0
                    pd.wait(MODE_R, hint)
                pd.rg = None
            sock = self.sock
            while True:
                if _table.read_direct:
                    try:
                        data: bytes = sock.recv(n)
                        # Short on TCP: the receive queue is empty now, so the
                        # next read waits first (PollDesc.wait says why).
                        if data and pd is not None and pd.short_read_drains and len(data) < n:
                            pd.rhint = RHINT_DRAINED
                        return data
                    except BlockingIOError:
                        if pd is None:
                            raise
                else:
                    buf = bytearray(n)
                    try:
                        k: int = _table.read(sock, buf)
                        del buf[k:]
                        return bytes(buf)
                    except BlockingIOError:
                        if pd is None:
                            raise
                    del buf
                pd.wait(MODE_R)
        finally:
            lk.release()
            if mu.rwait or mu.closed:
                self._unlock_slow(True)

    def recvfrom_into(self, buf: Any) -> tuple[int, Any]:
        """Receive one datagram into ``buf``: ``(nbytes, sender)``."""
        n, addr = self._io(MODE_R, _table.recvfrom, buf)
        return n, addr

    def accept(self) -> tuple[Any, Any]:
        """Accept one connection: ``(new socket, peer address)``.

        Retries ``ECONNABORTED`` (a connection reset while queued) and parks
        on ``EAGAIN``, as Go's ``FD.Accept`` does.
        """
        # _io's steps with the fdMutex fast path and prepare inline, as in
        # readinto: a server accepts once per connection.  The call always
        # goes through the syscall table (fault plugins watch accept).
        mu = self._mu
        lk = mu.rl
        if not lk.acquire(False):
            if not mu.rwlock_slow(True):
                raise self._lock_failed()
        elif mu.closed:
            lk.release()
            raise self._lock_failed()
        try:
            pd = self.pd
            if pd is not None:
                d = pd.rd
                if pd.closing or (d and (d < 0 or d <= _monotonic())):
                    pd.prepare(MODE_R)  # raises the closing or timeout error
                pd.rg = None  # a stale notice: the call below tries anyway
            call = _table.accept
            sock = self.sock
            while True:
                try:
                    conn, addr = call(sock)
                    return conn, addr
                except BlockingIOError:
                    if pd is None:
                        raise
                except ConnectionAbortedError:
                    continue  # reset while queued: take the next one
                # Parked outside the except block (see readinto).
                pd.wait(MODE_R)
        finally:
            lk.release()
            if mu.rwait or mu.closed:
                self._unlock_slow(True)

    def _io(
        self, mode: int, call: Callable[..., Any], *args: Any, retry_aborted: bool = False
    ) -> Any:
        """The shape of every operation: lock, prepare, try the call, park on EAGAIN.

        ``readinto`` and ``write`` spell this out inline instead, because they
        are the hot path and an extra frame per call is measurable there.
        """
        read = mode == MODE_R
        self._lock(read)
        try:
            pd = self.pd
            if pd is not None:
                pd.prepare(mode)
            while True:
                try:
                    return call(self.sock, *args)
                except BlockingIOError:
                    if pd is None:
                        raise
                except ConnectionAbortedError:
                    if not retry_aborted:
                        raise
                    continue
                pd.wait(mode)
        finally:
            self._unlock(read)

    # -- writes -----------------------------------------------------------------

    def write(self, data: Any) -> int:
        """Write all of ``data``, parking whenever the buffer is full.

        Returns ``len(data)``, or raises; the exception's ``written``
        attribute says how many bytes went out first.
        """
        mu = self._mu
        lk = mu.wl
        if not lk.acquire(False):
            if not mu.rwlock_slow(False):
                raise self._lock_failed()
        elif mu.closed:
            lk.release()
            raise self._lock_failed()
        nn: int = 0
        try:
            pd = self.pd
            if pd is not None:
                d = pd.wd
                if pd.closing or (d and (d < 0 or d <= _monotonic())):
                    pd.prepare(MODE_W)
                pd.wg = None
            sock = self.sock
            kind = data.__class__
            if (kind is bytes or kind is bytearray) and data and _table.write_direct:
                # The common case: one send that takes everything.
                try:
                    sent: int = sock.send(data)
                    nn = sent
                except BlockingIOError:
                    if pd is None:
                        raise
                else:
                    total = len(data)
                    if nn == total:
                        return nn
            return self._write_rest(data, nn, pd)
        except OSError as exc:
            if not hasattr(exc, "written"):
                exc.written = nn  # type: ignore[attr-defined]
            raise
        finally:
            lk.release()
            if mu.wwait or mu.closed:
                self._unlock_slow(False)

    def _write_rest(self, data: Any, nn: int, pd: PollDesc | None) -> int:
        """The rest of :meth:`write` after ``nn`` bytes went out (write lock held).

        Chunks of at most :data:`MAX_RW`, parking on a full buffer; a raised
        :class:`OSError` carries ``written``.
        """
        kind = data.__class__
        # Byte count without copying: len() counts items, not bytes, for
        # buffers of wider formats.
        if kind is bytes or kind is bytearray:
            total = len(data)
        elif kind is memoryview:
            total = data.nbytes
        else:
            total = memoryview(data).nbytes
        if total == 0:
            return 0
        view = data if nn == 0 and total <= MAX_RW else memoryview(data).cast("B")
        sock = self.sock
        try:
            while nn < total:
                chunk = view if view is data else view[nn : nn + MAX_RW]
                try:
                    if _table.write_direct:
                        n: int = sock.send(chunk)
                    else:
                        n = _table.write(sock, chunk)
                except BlockingIOError:
                    if pd is None:
                        raise
                    n = -1
                if n < 0:
                    assert pd is not None
                    pd.wait(MODE_W)  # outside the except block, see readinto
                    continue
                nn += n
                if nn < total and view is data:
                    view = memoryview(data).cast("B")  # slicing bytes would copy
            return nn
        except OSError as exc:
            exc.written = nn  # type: ignore[attr-defined]
            raise

    def sendto(self, data: Any, address: Any) -> int:
        """Send one datagram to ``address``; returns the bytes sent."""
        n: int = self._io(MODE_W, _table.sendto, data, address)
        return n

    def wait_write(self) -> None:
        """Park until writable: how a non-blocking connect waits to finish.

        Go's ``netFD.connect`` calls ``pd.WaitWrite`` under a write lock; the
        caller then reads ``SO_ERROR``.
        """
        self._lock(False)
        try:
            pd = self.pd
            if pd is None:
                return
            pd.wait(MODE_W)
        finally:
            self._unlock(False)

    # -- deadlines ----------------------------------------------------------------

    def set_deadline(self, t: float | None) -> None:
        """Set both deadlines (absolute ``time.time()`` seconds; None clears)."""
        self.set_deadline_in(_seconds_until(t), MODE_RW)

    def set_read_deadline(self, t: float | None) -> None:
        """Set the read deadline (absolute ``time.time()`` seconds; None clears)."""
        self.set_deadline_in(_seconds_until(t), MODE_R)

    def set_write_deadline(self, t: float | None) -> None:
        """Set the write deadline (absolute ``time.time()`` seconds; None clears)."""
        self.set_deadline_in(_seconds_until(t), MODE_W)

    def set_deadline_in(self, seconds: float, mode: int) -> None:
        """Set the deadline of ``mode`` (MODE_R, MODE_W or both) ``seconds`` from now.

        ``inf`` clears it; zero or less means already passed.  The deadline
        is kept on the monotonic clock, so a wall-clock step after this call
        does not move it.  Go's ``FD.SetDeadline`` holds an fdMutex reference
        so that the pollDesc cannot be reused under it; here the pollDesc
        checks the generation this FD owns instead, under the lock it takes
        anyway.
        """
        if seconds > 0:
            d = 0.0 if seconds == math.inf else _monotonic() + seconds
        elif seconds != seconds:
            raise ValueError("netpoll: deadline is NaN")
        else:
            d = -1.0
        pd = self.pd
        if pd is None:
            if self._mu.closed:
                raise self._closing_error()
            raise OSError(errno.ENOTSUP, "file type does not support deadline")
        pd.set_deadline(d, mode, self._seq)

    def __repr__(self) -> str:
        state = "closed" if self._mu.closed else "open"
        return f"<FD {self.sysfd} {state} pollable={self.pollable}>"

    # -- raw I/O (Go's rawconn.go Read/Write on poll.FD: RawRead / RawWrite) ------

    def raw_io(self, mode: int, fn: Callable[[int], bool], *, wait_first: bool = False) -> None:
        """Call ``fn(sysfd)`` until it returns True, parking on ``mode`` in between.

        Go's ``FD.RawRead`` / ``FD.RawWrite``: the read (``MODE_R``) or write
        (``MODE_W``) lock is held, the deadline and closing checks of
        ``prepare`` apply, and each False from ``fn`` parks until the poller
        reports the descriptor ready again (or the deadline passes, or the FD
        is closed).  Exceptions from ``fn`` propagate.

        ``wait_first`` (reads only): the caller knows ``fn`` cannot succeed
        before the descriptor is readable (no data buffered above the
        kernel), so a thread whose last read parked in the kernel waits
        before the first call, as :meth:`readinto` does, saving the EAGAIN
        round (see :meth:`PollDesc.wait`).
        """
        read = mode == MODE_R
        self._lock(read)
        try:
            pd = self.pd
            if pd is not None:
                hint = pd.rhint
                if wait_first and read and hint:
                    pd.rhint = 0
                    pd.wait(MODE_R, hint)
                pd.prepare(mode)
            while not fn(self.sysfd):
                if pd is None:
                    raise BlockingIOError(errno.EAGAIN, "resource temporarily unavailable")
                pd.wait(mode)
        finally:
            self._unlock(read)
