"""netpoll.pipe(): Go's net.Pipe semantics (synchronous, full duplex, deadlines, close)."""

from __future__ import annotations

import io
import threading
import time

import pytest

import netpoll
from tests.helpers.tls import PEER_TIMEOUT, start


def test_write_waits_for_reads_and_one_write_feeds_many_reads() -> None:
    a, b = netpoll.pipe()
    events: list[str] = []
    w = start(lambda: (a.write(b"hello world"), events.append("written")))
    time.sleep(0.05)
    assert events == []  # no reader yet: the write waits
    assert b.read(5) == b"hello"
    assert b.read(100) == b" world"
    w.join_result()
    assert events == ["written"]
    # Full duplex: the other direction at the same time.
    t = start(lambda: b.write(b"pong"))
    assert a.read(4) == b"pong"
    t.join_result()
    a.close()
    b.close()


def test_deadlines() -> None:
    a, b = netpoll.pipe()
    b.set_read_deadline(time.time() + 0.1)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError) as info:
        b.read(1)
    assert time.monotonic() - t0 >= 0.09
    assert isinstance(info.value, netpoll.OpError)
    assert str(info.value) == "read pipe pipe->pipe: i/o timeout"
    # Extending the deadline lets reads go on; moving it while parked takes effect.
    b.set_read_deadline(None)
    reader = start(lambda: b.read(1))
    time.sleep(0.05)
    b.set_read_deadline(time.time() - 1)
    with pytest.raises(TimeoutError):
        reader.join_result()
    a.set_write_deadline(time.time() + 0.1)
    with pytest.raises(TimeoutError) as winfo:
        a.write(b"nobody reads")
    assert winfo.value.written == 0  # type: ignore[attr-defined]
    a.close()
    b.close()


def test_close_wakes_both_ends() -> None:
    a, b = netpoll.pipe()
    reader = start(lambda: b.read(1))
    own = start(lambda: a.read(1))
    time.sleep(0.05)
    a.close()
    assert reader.join_result() == b""  # the peer closed: EOF
    with pytest.raises(netpoll.ErrClosed):
        own.join_result()
    with pytest.raises(BrokenPipeError, match="io: read/write on closed pipe"):
        b.write(b"x")
    with pytest.raises(netpoll.ErrClosed):
        a.write(b"x")
    with pytest.raises(io.UnsupportedOperation):
        a.fileno()
    assert str(a.local_addr()) == "pipe" and a.remote_addr().network() == "pipe"
    b.close()


def test_partial_write_then_peer_close_reports_written() -> None:
    a, b = netpoll.pipe()
    writer = start(lambda: a.write(b"0123456789"))
    assert b.read(4) == b"0123"
    b.close()
    with pytest.raises(BrokenPipeError) as info:
        writer.join_result()
    assert info.value.written == 4  # type: ignore[attr-defined]
    a.close()


def test_pipe_under_buffered_io() -> None:
    a, b = netpoll.pipe()
    t = start(lambda: (a.write(b"line 1\nline 2\n"), a.close()))
    f = io.BufferedReader(b)
    assert f.readline() == b"line 1\n"
    assert f.read() == b"line 2\n"
    t.join_result(PEER_TIMEOUT)
    b.close()


_ = threading
