"""File objects over a conn: what ``makefile`` returns, one behaviour for both makers.

CPython's ``socket.SocketIO`` and ``socket.socket.makefile``
(``Lib/socket.py``), written once for :meth:`netpoll.net.conn.Conn.makefile`
and :meth:`netpoll.net.socket_adapter.ConnSocket.makefile`, so that a file
behaves the same whichever object made it:

* **Modes**: ``mode`` is made of "r", "w" and "b" ("rb", "wb", "rwb";
  without "b" a text file, whose ``mode`` attribute is the one asked for).
  ``buffering`` None or negative means :data:`io.DEFAULT_BUFFER_SIZE`; 0
  (binary only) gives the raw :class:`ConnFile`.  A bad mode or an
  unbuffered text file is a :class:`ValueError`, raised before anything is
  made (so an adapter's close is not held up by a file that never existed).
* **Timeouts**: once a read through the file times out, whatever set the
  limit (the conn's read deadline, or the adapter's ``settimeout``), every
  later read through *that file* raises :class:`OSError` ("cannot read from
  timed out object"), as socket files do.  The reason: a buffered read that
  times out has lost the bytes it already took from its buffer (CPython's
  :mod:`io` drops them), so going on would silently skip data.  Read the
  conn or the adapter itself to go on after a timeout; writes are not
  affected.
* **Non-blocking** (an adapter in non-blocking mode): a read or write that
  would block returns None, as :class:`io.RawIOBase` says.
* **Closing** the file runs the maker's ``on_close``: a conn's file leaves
  the conn open, an adapter's tells the adapter, which closes the conn once
  it and all its files are closed, like a socket.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

__all__ = ["ConnFile", "make_file"]


class ConnFile(io.RawIOBase):
    """The raw file under ``makefile`` (CPython's ``socket.SocketIO``); see the module doc.

    ``readinto(buffer)`` and ``write(data)`` are the maker's blocking I/O
    (they may raise :class:`BlockingIOError` in non-blocking mode),
    ``fileno()`` its descriptor, ``on_close()`` runs once when the file is
    closed.
    """

    def __init__(
        self,
        mode: str,
        *,
        readinto: Callable[[Any], int],
        write: Callable[[Any], int],
        fileno: Callable[[], int],
        on_close: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self._reading = "r" in mode
        self._writing = "w" in mode
        self._readinto = readinto
        self._write = write
        self._fileno = fileno
        self._on_close = on_close
        self.mode = mode + "b"
        self._timed_out = False

    def readable(self) -> bool:
        """True for a file opened for reading."""
        return self._reading

    def writable(self) -> bool:
        """True for a file opened for writing."""
        return self._writing

    def readinto(self, buffer: Any) -> int | None:
        """Read into ``buffer``; None if it would block; refused once a read timed out."""
        if self.closed:
            raise ValueError("I/O operation on closed file.")
        if not self._reading:
            raise io.UnsupportedOperation("netpoll: file not open for reading")
        if self._timed_out:
            raise OSError(
                "netpoll: cannot read from timed out object: a buffered read may have "
                "dropped data when the read timed out; read the conn itself to go on"
            )
        try:
            return self._readinto(buffer)
        except TimeoutError:
            self._timed_out = True
            raise
        except BlockingIOError:
            return None

    def write(self, b: Any) -> int | None:
        """Write ``b``; returns the bytes written (None if nothing could be, non-blocking)."""
        if self.closed:
            raise ValueError("I/O operation on closed file.")
        if not self._writing:
            raise io.UnsupportedOperation("netpoll: file not open for writing")
        try:
            return self._write(b)
        except BlockingIOError:
            return None

    def fileno(self) -> int:
        """The conn's descriptor."""
        return self._fileno()

    @property
    def name(self) -> int:
        """The descriptor, as for socket files."""
        return self.fileno()

    def close(self) -> None:
        """Close the file (once) and tell its maker."""
        if self.closed:
            return
        super().close()
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()


def make_file(
    mode: str,
    buffering: int | None,
    encoding: str | None,
    errors: str | None,
    newline: str | None,
    raw: Callable[[str], ConnFile],
) -> Any:
    """What ``makefile(mode, buffering, ...)`` returns; ``raw(rawmode)`` makes the raw file.

    Checks the arguments first and only then calls ``raw``; see the module doc.
    """
    if not set(mode) <= {"r", "w", "b"}:
        raise ValueError(f"netpoll: makefile: invalid mode {mode!r} (only r, w, b allowed)")
    writing = "w" in mode
    reading = "r" in mode or not writing
    binary = "b" in mode
    if buffering is None or buffering < 0:
        buffering = io.DEFAULT_BUFFER_SIZE
    if buffering == 0 and not binary:
        raise ValueError("netpoll: makefile: unbuffered streams must be binary")
    file = raw(("r" if reading else "") + ("w" if writing else ""))
    if buffering == 0:
        return file
    buffer: io.BufferedIOBase
    if reading and writing:
        buffer = io.BufferedRWPair(file, file, buffering)
    elif reading:
        buffer = io.BufferedReader(file, buffering)
    else:
        buffer = io.BufferedWriter(file, buffering)
    if binary:
        return buffer
    text: Any = io.TextIOWrapper(buffer, encoding, errors, newline)
    text.mode = mode  # a socket file's text wrapper says its mode too
    return text
