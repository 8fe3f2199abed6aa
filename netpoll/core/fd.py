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

import errno
import math
import os
import stat
import time
from collections.abc import Callable
from typing import Any

from netpoll.core.errors import FileClosingError, NetClosingError
from netpoll.core.fdmutex import FDMutex
from netpoll.core.hookspecs import MODE_R, MODE_RW, MODE_W
from netpoll.core.polldesc import PollDesc, close_polldesc, open_polldesc
from netpoll.core.runtime import runtime
from netpoll.core.sched import Note

#: Go caps one read/write syscall at 1 GiB (``maxRW``): larger buffers are
#: written in chunks, which also keeps a huge send from starving the peer.
MAX_RW = 1 << 30

_table = runtime.table
_wrapped = _table.wrapped


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


def _deadline_to_monotonic(t: float | None) -> float:
    """A wall-clock deadline (``time.time()`` seconds) as pollDesc's ``d``.

    ``None`` and ``inf`` mean no deadline (0.0); a past one is ``-1.0``.
    """
    if t is None or t == math.inf:
        return 0.0
    if t != t:  # NaN
        raise ValueError("netpoll: deadline is NaN")
    remaining = t - time.time()
    if remaining <= 0:
        return -1.0
    return time.monotonic() + remaining


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

    __slots__ = ("_close_error", "_csema", "_mu", "is_file", "pd", "sock", "sysfd")

    def __init__(self, sock: Any, *, is_file: bool = False) -> None:
        sysfd = sock.fileno()
        if sysfd < 0:
            raise ValueError(f"netpoll: bad file descriptor {sysfd}")
        self.sock = sock
        self.sysfd = sysfd
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
        if pd is None:
            # Not pollable (a regular file): blocking I/O, as Go falls back.
            sock.setblocking(True)
        self.pd = pd

    @property
    def pollable(self) -> bool:
        """True when the descriptor is registered with the poller."""
        return self.pd is not None

    def _closing_error(self) -> OSError:
        return FileClosingError() if self.is_file else NetClosingError()

    # -- references for non-I/O operations -----------------------------------

    def incref(self) -> None:
        """Hold the FD open for a non-I/O operation (setsockopt, getsockname...)."""
        if not self._mu.incref():
            raise self._closing_error()

    def decref(self) -> None:
        """Release a reference taken by :meth:`incref`."""
        if self._mu.decref():
            self._destroy()

    # -- close ------------------------------------------------------------------

    def close(self) -> None:
        """Close: wake parked operations, and return once the fd is closed.

        Operations parked in other threads fail with the closing error; the
        OS descriptor is closed when the last of them has left (which may be
        this call).  A second close raises the closing error.
        """
        csema = Note()
        if not self._mu.incref_and_close():
            raise self._closing_error()
        # Set before our decref: until then we hold a reference, so nobody
        # else can reach _destroy and miss the semaphore.
        self._csema = csema
        if self.pd is not None:
            self.pd.evict()
        if self._mu.decref():
            self._destroy()
        # Go's fd.Close waits on csema: close returns after the real close.
        csema.wait()
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
            self.sysfd = -1
            if self._csema is not None:
                self._csema.wakeup()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has started."""
        return self._mu.closed

    # -- reads ----------------------------------------------------------------

    def readinto(self, buf: Any) -> int:
        """Read into ``buf``; 0 at EOF.  Parks until data, deadline or close."""
        mu = self._mu
        if not mu.rwlock(True):
            raise self._closing_error()
        try:
            pd = self.pd
            if pd is not None:
                # After a read that parked in the kernel this waits first,
                # skipping the EAGAIN round (see PollDesc.wait_first).
                pd.prepare_read(_wrapped["read"])
            while True:
                try:
                    n: int = _table.read(self.sock, buf)
                    return n
                except BlockingIOError:
                    if pd is None:
                        raise
                # Parked outside the except block: the exception's traceback
                # would keep the syscall frame (and its arguments) alive.
                pd.wait(MODE_R)
        finally:
            if mu.rwunlock(True):
                self._destroy()

    def read(self, n: int) -> bytes:
        """Read up to ``n`` bytes; ``b""`` at EOF.

        The buffer is made for each attempt and dropped before parking, so
        an idle ``read(65536)`` holds no 64 KiB while it waits.
        """
        if n < 0:
            raise ValueError(f"netpoll: negative read size {n}")
        mu = self._mu
        if not mu.rwlock(True):
            raise self._closing_error()
        try:
            pd = self.pd
            if pd is not None:
                pd.prepare_read(_wrapped["read"])
            while True:
                buf = bytearray(n)
                try:
                    k: int = _table.read(self.sock, buf)
                    del buf[k:]
                    return bytes(buf)
                except BlockingIOError:
                    if pd is None:
                        raise
                del buf
                pd.wait(MODE_R)
        finally:
            if mu.rwunlock(True):
                self._destroy()

    def recvfrom_into(self, buf: Any) -> tuple[int, Any]:
        """Receive one datagram into ``buf``: ``(nbytes, sender)``."""
        n, addr = self._io(MODE_R, _table.recvfrom, buf)
        return n, addr

    def accept(self) -> tuple[Any, Any]:
        """Accept one connection: ``(new socket, peer address)``.

        Retries ``ECONNABORTED`` (a connection reset while queued) and parks
        on ``EAGAIN``, as Go's ``FD.Accept`` does.
        """
        conn, addr = self._io(MODE_R, _table.accept, retry_aborted=True)
        return conn, addr

    def _io(
        self, mode: int, call: Callable[..., Any], *args: Any, retry_aborted: bool = False
    ) -> Any:
        """The shape of every operation: lock, prepare, try the call, park on EAGAIN.

        ``readinto`` and ``write`` spell this out inline instead, because they
        are the hot path and an extra frame per call is measurable there.
        """
        read = mode == MODE_R
        mu = self._mu
        if not mu.rwlock(read):
            raise self._closing_error()
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
            if mu.rwunlock(read):
                self._destroy()

    # -- writes -----------------------------------------------------------------

    def write(self, data: Any) -> int:
        """Write all of ``data``, parking whenever the buffer is full.

        Returns ``len(data)``, or raises; the exception's ``written``
        attribute says how many bytes went out first.
        """
        mu = self._mu
        if not mu.rwlock(False):
            raise self._closing_error()
        nn = 0
        try:
            pd = self.pd
            if pd is not None:
                pd.prepare(MODE_W)
            # Byte count without copying: len() counts items, not bytes, for
            # buffers of wider formats.
            kind = type(data)
            if kind is bytes or kind is bytearray:
                total = len(data)
            elif kind is memoryview:
                total = data.nbytes
            else:
                total = memoryview(data).nbytes
            if total == 0:
                return 0
            view = data if total <= MAX_RW else memoryview(data).cast("B")
            sock = self.sock
            write = _table.write
            while True:
                chunk = view if nn == 0 and total <= MAX_RW else view[nn : nn + MAX_RW]
                try:
                    n: int = write(sock, chunk)
                except BlockingIOError:
                    if pd is None:
                        raise
                    n = -1
                if n < 0:
                    assert pd is not None
                    pd.wait(MODE_W)  # outside the except block, see readinto
                    continue
                nn += n
                if nn >= total:
                    return nn
                if view is data:
                    view = memoryview(data).cast("B")  # slicing bytes would copy
        except OSError as exc:
            exc.written = nn  # type: ignore[attr-defined]
            raise
        finally:
            if mu.rwunlock(False):
                self._destroy()

    def sendto(self, data: Any, address: Any) -> int:
        """Send one datagram to ``address``; returns the bytes sent."""
        n: int = self._io(MODE_W, _table.sendto, data, address)
        return n

    def wait_write(self) -> None:
        """Park until writable: how a non-blocking connect waits to finish.

        Go's ``netFD.connect`` calls ``pd.WaitWrite`` under a write lock; the
        caller then reads ``SO_ERROR``.
        """
        mu = self._mu
        if not mu.rwlock(False):
            raise self._closing_error()
        try:
            pd = self.pd
            if pd is None:
                return
            pd.wait(MODE_W)
        finally:
            if mu.rwunlock(False):
                self._destroy()

    # -- deadlines ----------------------------------------------------------------

    def set_deadline(self, t: float | None) -> None:
        """Set both deadlines (absolute ``time.time()`` seconds; None clears)."""
        self._set_deadline(t, MODE_RW)

    def set_read_deadline(self, t: float | None) -> None:
        """Set the read deadline (absolute ``time.time()`` seconds; None clears)."""
        self._set_deadline(t, MODE_R)

    def set_write_deadline(self, t: float | None) -> None:
        """Set the write deadline (absolute ``time.time()`` seconds; None clears)."""
        self._set_deadline(t, MODE_W)

    def _set_deadline(self, t: float | None, mode: int) -> None:
        d = _deadline_to_monotonic(t)
        self.incref()
        try:
            pd = self.pd
            if pd is None:
                raise OSError(errno.ENOTSUP, "file type does not support deadline")
            pd.set_deadline(d, mode)
        finally:
            self.decref()

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
        round (see :meth:`PollDesc.prepare_read`).
        """
        read = mode == MODE_R
        mu = self._mu
        if not mu.rwlock(read):
            raise self._closing_error()
        try:
            pd = self.pd
            if pd is not None:
                if wait_first and read:
                    pd.prepare_read(False)
                else:
                    pd.prepare(mode)
            while not fn(self.sysfd):
                if pd is None:
                    raise BlockingIOError(errno.EAGAIN, "resource temporarily unavailable")
                pd.wait(mode)
        finally:
            if mu.rwunlock(read):
                self._destroy()
