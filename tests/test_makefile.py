"""``makefile``: one behaviour, whether a conn or its socket adapter made the file.

Both makers build the same file (:mod:`netpoll.net.connfile`).  Each test
runs over both, on real TCP conns: once a read through a file times out
(a read deadline on the conn, ``settimeout`` on the adapter) later reads
through that file are refused, writes go on, and the conn itself goes on
reading; modes and errors are the same.  What differs is documented
ownership: an adapter's file keeps the conn open until it is closed.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

import netpoll
from tests.helpers.net import conn_pair

#: A maker: (conn) -> (object with makefile, start a 50 ms read limit, lift it).
Maker = Callable[[netpoll.Conn], tuple[Any, Callable[[], None], Callable[[], None]]]


def _conn_maker(c: netpoll.Conn) -> tuple[Any, Callable[[], None], Callable[[], None]]:
    return (
        c,
        lambda: c.set_read_deadline(time.time() + 0.05),
        lambda: c.set_read_deadline(None),
    )


def _adapter_maker(c: netpoll.Conn) -> tuple[Any, Callable[[], None], Callable[[], None]]:
    s = c.as_socket()
    return s, lambda: s.settimeout(0.05), lambda: s.settimeout(None)


MAKERS = [pytest.param(_conn_maker, id="conn"), pytest.param(_adapter_maker, id="adapter")]


@contextmanager
def made(
    maker: Maker,
) -> Iterator[tuple[Any, netpoll.Conn, Callable[[], None], Callable[[], None]]]:
    """(the maker object, the peer conn, start the limit, lift it) over a fresh TCP pair."""
    with conn_pair("tcp") as (c, peer):
        peer.set_deadline(time.time() + 10)
        owner, start, lift = maker(c)
        try:
            yield owner, peer, start, lift
        finally:
            owner.close()


def _read_own(owner: Any, n: int) -> bytes:
    """Read ``n`` bytes from the maker itself (a conn or an adapter), not through a file."""
    out = b""
    while len(out) < n:
        chunk = owner.read(n - len(out)) if hasattr(owner, "read") else owner.recv(n - len(out))
        assert chunk, "EOF"
        out += chunk
    return out


@pytest.mark.parametrize("maker", MAKERS)
def test_reads_through_a_file_are_refused_after_a_timeout(maker: Maker) -> None:
    with made(maker) as (owner, peer, start, lift):
        f = owner.makefile("rwb", buffering=16)
        peer.write(b"abcdefgh")
        assert f.read(2) == b"ab"  # the buffer now holds "cdefgh"
        start()
        with pytest.raises(TimeoutError):
            f.read(10)  # takes "cdefgh" from the buffer, then times out
        lift()
        peer.write(b"ij")
        for read in (lambda: f.read(2), f.readline, lambda: f.read1(1)):
            with pytest.raises(OSError, match="cannot read from timed out object"):
                read()
        f.write(b"still writes")  # writes are not affected
        f.flush()
        assert peer.read(12) == b"still writes"
        assert _read_own(owner, 2) == b"ij"  # the maker itself goes on
        f.close()


@pytest.mark.parametrize("maker", MAKERS)
def test_a_timeout_refuses_only_that_file(maker: Maker) -> None:
    with made(maker) as (owner, peer, start, lift):
        timed_out = owner.makefile("rb", buffering=0)
        start()
        with pytest.raises(TimeoutError):
            timed_out.read(1)
        lift()
        fresh = owner.makefile("rb", buffering=0)
        peer.write(b"k")
        assert fresh.read(1) == b"k"
        with pytest.raises(OSError, match="cannot read from timed out object"):
            timed_out.read(1)
        timed_out.close()
        fresh.close()


@pytest.mark.parametrize("maker", MAKERS)
def test_modes_and_bad_arguments_are_the_same(maker: Maker) -> None:
    with made(maker) as (owner, peer, _start, _lift):
        text = owner.makefile("r", encoding="ascii", newline="\n")
        assert isinstance(text, io.TextIOWrapper) and text.mode == "r"
        peer.write(b"line\n")
        assert text.readline() == "line\n"
        text.close()
        raw = owner.makefile("wb", buffering=0)
        assert raw.mode == "wb" and raw.fileno() == raw.name >= 0
        with pytest.raises(io.UnsupportedOperation, match="not open for reading"):
            raw.read(1)
        raw.close()
        for mode, kind in (("rb", io.BufferedReader), ("wb", io.BufferedWriter)):
            with owner.makefile(mode) as f:
                assert isinstance(f, kind)
        with owner.makefile("rwb") as f:
            assert isinstance(f, io.BufferedRWPair)
        with pytest.raises(
            ValueError, match=r"netpoll: makefile: invalid mode 'rx' \(only r, w, b"
        ):
            owner.makefile("rx")
        with pytest.raises(
            ValueError, match="netpoll: makefile: unbuffered streams must be binary"
        ):
            owner.makefile("r", buffering=0)


def test_closing_a_conns_file_leaves_the_conn_open() -> None:
    with conn_pair("tcp") as (c, peer):
        f = c.makefile("rb")
        f.close()
        f.close()  # twice is fine
        assert not c.closed
        peer.write(b"z")
        c.set_read_deadline(time.time() + 10)
        assert c.read(1) == b"z"


def test_an_adapter_closes_the_conn_after_its_last_file() -> None:
    with conn_pair("tcp") as (c, peer):
        peer.set_deadline(time.time() + 10)
        s = c.as_socket()
        f = s.makefile("rb")
        s.close()
        assert not c.closed  # the file holds it open, like a socket's
        f.close()
        assert c.closed
        assert peer.read(1) == b""  # EOF


def test_a_refused_makefile_does_not_hold_the_adapter_open() -> None:
    """The arguments are checked before the file exists: nothing is left to close."""
    with conn_pair("tcp") as (c, peer):
        peer.set_deadline(time.time() + 10)
        s = c.as_socket()
        with pytest.raises(ValueError):
            s.makefile("r", buffering=0)
        with pytest.raises(ValueError):
            s.makefile("rx")
        s.close()
        assert c.closed
        assert peer.read(1) == b""


def test_a_non_blocking_adapters_file_returns_none_when_it_would_block() -> None:
    with conn_pair("tcp") as (c, peer):
        s = c.as_socket()
        s.setblocking(False)
        f = s.makefile("rb", buffering=0)
        assert f.read(4) is None  # nothing queued: would block
        peer.write(b"data")
        deadline = time.monotonic() + 10
        got = None
        while got is None and time.monotonic() < deadline:
            got = f.read(4)
        assert got == b"data"
        f.close()
        s.close()
