"""Errors of the poll layer (Go's ``internal/poll/fd.go`` error values).

These are raised by :mod:`netpoll.core.fd`; the net layer wraps them into
``OpError`` with the operation and addresses.  Each is also the builtin class a
Python user would catch: a deadline is a :class:`TimeoutError`, use of a
closed descriptor an :class:`OSError` with ``EBADF``.
"""

from __future__ import annotations

import errno


class NetClosingError(OSError):
    """Use of a closed network connection (Go's ``ErrNetClosing``).

    Raised by an operation on a descriptor that was closed, or that was parked
    when another thread closed it.
    """

    def __init__(self, msg: str = "use of closed network connection") -> None:
        super().__init__(errno.EBADF, msg)

    def __str__(self) -> str:
        return str(self.strerror)


class FileClosingError(NetClosingError):
    """Use of a closed file (Go's ``ErrFileClosing``), for non-socket fds."""

    def __init__(self) -> None:
        super().__init__("use of closed file")


class DeadlineExceededError(TimeoutError):
    """An I/O deadline passed (Go's ``ErrDeadlineExceeded``: "i/o timeout")."""

    def __init__(self, msg: str = "i/o timeout") -> None:
        super().__init__(errno.ETIMEDOUT, msg)

    def __str__(self) -> str:
        return str(self.strerror)


class PollRegistrationError(OSError):
    """Registering the descriptor with a poller failed as a G first parked on it.

    Go registers every descriptor when its FD is made (``pollDesc.init``) and
    reports a failure there without a system call's name: ``accept tcp
    127.0.0.1:80: cannot allocate memory``.  Here a descriptor made by a plain
    thread is registered later, when a goroutine first parks on it; this
    wrapper carries that failure up through the operation (accept, read,
    write ...) so the net layer reports it the same bare way instead of
    naming the operation's own system call.  ``err`` is the backend's error;
    ``errno`` and ``strerror`` are its.
    """

    def __init__(self, err: OSError) -> None:
        super().__init__(err.errno, err.strerror)
        self.err = err

    def __str__(self) -> str:
        return str(self.strerror) if self.strerror else str(self.err)
