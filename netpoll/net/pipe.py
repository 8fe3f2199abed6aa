"""An in-memory, synchronous, full-duplex conn pair (Go's ``net/pipe.go``: ``net.Pipe``).

Each end is a Conn-shaped :class:`io.RawIOBase` (``readinto``/``read``/
``write``/``close``, ``local_addr``/``remote_addr``, absolute deadlines),
made for tests: wrap one end in TLS, drive a protocol, all without sockets.

As in Go the pipe has no buffer: a ``write`` waits until the other end's
reads have taken every byte (one write may satisfy several reads).
Deadlines can be set, moved or cleared from any thread while an operation
waits, and take effect at once; a timeout is an OpError that is also a
:class:`TimeoutError`.  ``close`` wakes everything waiting on both ends:
operations on the closed end raise ErrClosed, the other end's reads return
EOF and its writes fail with a :class:`BrokenPipeError`
("io: read/write on closed pipe").

Waiting is on a :class:`netpoll.core.sync.Cond`, not the netpoller (there
is no descriptor), so goroutines and threads can sit on either end;
``fileno`` raises :class:`io.UnsupportedOperation`.
"""

from __future__ import annotations

import errno
import io
import time
from typing import Any

from netpoll.core.errors import DeadlineExceededError, NetClosingError
from netpoll.core.sync import Cond, Mutex
from netpoll.net.context import as_deadline
from netpoll.net.errors import OpError, op_error

__all__ = ["PipeAddr", "PipeConn", "pipe"]


class PipeAddr:
    """The address of a pipe end (Go's ``pipeAddr``): network and text "pipe"."""

    def network(self) -> str:
        """Always ``"pipe"``."""
        return "pipe"

    def __str__(self) -> str:
        return "pipe"

    def __repr__(self) -> str:
        return "PipeAddr()"


_ADDR = PipeAddr()


class _ClosedPipeError(BrokenPipeError):
    """Go's ``io.ErrClosedPipe``."""

    def __init__(self) -> None:
        super().__init__(errno.EPIPE, "io: read/write on closed pipe")

    def __str__(self) -> str:
        return str(self.strerror)


class _Direction:
    """One direction of the pipe: the writer's offered bytes, taken by reads."""

    __slots__ = ("offer",)

    def __init__(self) -> None:
        self.offer: memoryview | None = None


class PipeConn(io.RawIOBase):
    """One end of :func:`pipe` (see the module doc)."""

    def __init__(self, cond: Cond, rx: _Direction, tx: _Direction) -> None:
        super().__init__()
        self._cond = cond
        self._rx = rx
        self._tx = tx
        self._wmu = Mutex()  # Go's wrMu: one write at a time (held while waiting)
        self._done = False
        self.peer: PipeConn | None = None
        self._rdeadline: float | None = None
        self._wdeadline: float | None = None

    def _error(self, op: str, exc: BaseException) -> OpError:
        return op_error(op, "pipe", _ADDR, _ADDR, exc)

    @staticmethod
    def _remaining(deadline: float | None) -> float | None:
        if deadline is None:
            return None
        return deadline - time.time()

    # -- io.RawIOBase -------------------------------------------------------------

    def readable(self) -> bool:
        """Always True."""
        return True

    def writable(self) -> bool:
        """Always True."""
        return True

    def readinto(self, buffer: Any) -> int:
        """Take up to ``len(buffer)`` bytes of the peer's pending write; 0 at EOF."""
        view = memoryview(buffer).cast("B")
        with self._cond:
            while True:
                if self._done:
                    raise self._error("read", NetClosingError())
                offer = self._rx.offer
                if offer is not None and view.nbytes:
                    n = min(view.nbytes, offer.nbytes)
                    view[:n] = offer[:n]
                    rest = offer[n:]
                    self._rx.offer = rest if rest.nbytes else None
                    self._cond.notify_all()
                    return n
                peer = self.peer
                if peer is None or peer._done:
                    return 0
                if not view.nbytes:
                    return 0
                left = self._remaining(self._rdeadline)
                if left is not None and left <= 0:
                    raise self._error("read", DeadlineExceededError())
                self._cond.wait(left)

    def read(self, size: int | None = -1) -> bytes:
        """Read up to ``size`` bytes (``b""`` at EOF); ``-1``/None reads to EOF."""
        if size is None or size < 0:
            return self.readall()
        buf = bytearray(size)
        n = self.readinto(buf)
        del buf[n:]
        return bytes(buf)

    def write(self, b: Any) -> int:
        """Hand all of ``b`` to the peer's reads; returns once they took every byte.

        On a timeout or close the OpError's ``written`` says how much was taken.
        """
        view = memoryview(b).cast("B")
        total = view.nbytes
        with self._wmu, self._cond:
            if self._done:
                raise self._error("write", NetClosingError())
            peer = self.peer
            if peer is None or peer._done:
                raise self._error("write", _ClosedPipeError())
            self._tx.offer = view if total else None
            self._cond.notify_all()
            try:
                while self._tx.offer is not None:
                    err: OSError | None = None
                    if self._done:
                        err = NetClosingError()
                    elif peer._done:
                        err = _ClosedPipeError()
                    else:
                        left = self._remaining(self._wdeadline)
                        if left is not None and left <= 0:
                            err = DeadlineExceededError()
                        else:
                            self._cond.wait(left)
                            continue
                    offer = self._tx.offer
                    err.written = total - (offer.nbytes if offer is not None else 0)  # type: ignore[attr-defined]
                    raise self._error("write", err)
            finally:
                self._tx.offer = None
            return total

    def close(self) -> None:
        """Close this end: waiters on both ends wake.  Idempotent."""
        with self._cond:
            if not self._done:
                self._done = True
                self._cond.notify_all()
        super().close()

    def fileno(self) -> int:
        """No descriptor: raises :class:`io.UnsupportedOperation`."""
        raise io.UnsupportedOperation("a pipe end has no descriptor")

    # -- Conn interface -------------------------------------------------------------

    def local_addr(self) -> PipeAddr:
        """Go's pipe address ("pipe")."""
        return _ADDR

    def remote_addr(self) -> PipeAddr:
        """Go's pipe address ("pipe")."""
        return _ADDR

    def _set(self, t: Any, read: bool, write: bool) -> None:
        d = as_deadline(t)
        with self._cond:
            if self._done:
                raise self._error("set", NetClosingError())
            if read:
                self._rdeadline = d
            if write:
                self._wdeadline = d
            self._cond.notify_all()

    def set_deadline(self, t: Any) -> None:
        """Read and write deadlines (absolute ``time.time()`` or datetime; None clears)."""
        self._set(t, True, True)

    def set_read_deadline(self, t: Any) -> None:
        """The read deadline (see :meth:`set_deadline`)."""
        self._set(t, True, False)

    def set_write_deadline(self, t: Any) -> None:
        """The write deadline (see :meth:`set_deadline`)."""
        self._set(t, False, True)

    def __repr__(self) -> str:
        return f"<PipeConn {'closed' if self._done else 'open'}>"


def pipe() -> tuple[PipeConn, PipeConn]:
    """Two connected in-memory conn ends (Go's ``net.Pipe``); see the module doc."""
    cond = Cond()
    a_to_b, b_to_a = _Direction(), _Direction()
    a = PipeConn(cond, rx=b_to_a, tx=a_to_b)
    b = PipeConn(cond, rx=a_to_b, tx=b_to_a)
    a.peer, b.peer = b, a
    return a, b
