"""Bad inputs and small bugs found by using netpoll as a new user would (issue 11, item 5).

Each test names what a user did and what they must see: a clear error that
names the argument or the path, Go's behaviour where Go has one, and no
silently lost data or leaked socket.
"""

from __future__ import annotations

import datetime
import errno
import io
import os
import pickle
import socket
import sys
import tempfile
import time
import traceback
from typing import Any

import pytest

import netpoll
from netpoll.net.addr import SUN_PATH_MAX
from netpoll.net.context import RELATIVE_DEADLINE_LIMIT, as_deadline
from netpoll.testing import Status, Switch
from tests.helpers.net import conn_pair, unix_path

UTC = datetime.timezone.utc


# -- AF_UNIX path too long ------------------------------------------------------


def _long_path(nbytes: int) -> str:
    d = tempfile.gettempdir()
    return os.path.join(d, "p" * (nbytes - len(d) - 1))


@pytest.mark.parametrize("network", ["unix", "unixgram", "unixpacket"])
def test_unix_path_too_long_is_einval_naming_the_path(backend: str, network: str) -> None:
    path = _long_path(SUN_PATH_MAX + 40)
    with pytest.raises(netpoll.OpError) as ei:
        netpoll.listen(network, path) if network != "unixgram" else netpoll.listen_packet(
            network, path
        )
    err = ei.value
    assert err.errno == errno.EINVAL  # was EIO (errno 5): CPython's error has no errno
    assert path in str(err)
    assert ": bind: invalid argument (unix socket name is " in str(err)
    assert f"longer than the {SUN_PATH_MAX - 1} this OS allows" in str(err)
    assert not os.path.exists(path)


def test_unix_dial_path_too_long(backend: str) -> None:
    path = _long_path(SUN_PATH_MAX)  # one byte too many: the NUL does not fit
    with pytest.raises(netpoll.OpError) as ei:
        netpoll.dial("unix", path, timeout=2)
    assert ei.value.errno == errno.EINVAL
    assert str(ei.value).startswith(f"dial unix {path}: connect: invalid argument")


def test_unix_path_at_the_limit_works(backend: str) -> None:
    with tempfile.TemporaryDirectory(prefix="np-") as d:
        path = os.path.join(d, "q" * (SUN_PATH_MAX - 1 - len(d) - 1))
        assert len(os.fsencode(path)) == SUN_PATH_MAX - 1
        with netpoll.listen("unix", path) as ln:
            netpoll.dial("unix", path, timeout=2).close()
            ln.accept().close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abstract names are Linux's")
def test_abstract_unix_name_too_long(backend: str) -> None:
    name = "@" + "a" * SUN_PATH_MAX  # with the leading NUL: one byte too many
    with pytest.raises(netpoll.OpError) as ei:
        netpoll.listen("unix", name)
    assert ei.value.errno == errno.EINVAL
    assert f"longer than the {SUN_PATH_MAX} this OS allows" in str(ei.value)


def test_unixgram_write_to_path_too_long(backend: str) -> None:
    with unix_path() as path, netpoll.listen_packet("unixgram", path) as pc:
        dest = _long_path(SUN_PATH_MAX + 1)
        with pytest.raises(netpoll.OpError) as ei:
            pc.write_to(b"x", dest)  # type: ignore[attr-defined]
        assert ei.value.errno == errno.EINVAL
        assert f"write unixgram {path}->{dest}: sendto: invalid argument" in str(ei.value)


# -- keep-alive period -------------------------------------------------------------


def _keepalive(c: netpoll.TCPConn) -> tuple[int, int | None]:
    s = socket.socket(fileno=os.dup(c.fileno()))
    try:
        on = s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
        idle = getattr(socket, "TCP_KEEPIDLE", None)
        return on, (s.getsockopt(socket.IPPROTO_TCP, idle) if idle is not None else None)
    finally:
        s.close()


def test_negative_keep_alive_period_turns_keep_alive_off(backend: str) -> None:
    with conn_pair("tcp") as (c, _s):
        assert isinstance(c, netpoll.TCPConn)
        c.set_keep_alive(True)
        c.set_keep_alive_period(30)
        assert _keepalive(c) == (1, 30 if hasattr(socket, "TCP_KEEPIDLE") else None)
        c.set_keep_alive_period(-5)  # was: accepted, and the idle time set to 1 s
        on, idle = _keepalive(c)
        assert on == 0
        assert idle != 1
        c.set_keep_alive_period(0)  # Go's default idle time
        if idle is not None:
            assert _keepalive(c)[1] == 15


@pytest.mark.parametrize(
    ("call", "arg", "exc", "message"),
    [
        ("set_read_buffer", "x", TypeError, "set_read_buffer: nbytes must be an int, not str"),
        ("set_write_buffer", 1.5, TypeError, "set_write_buffer: nbytes must be an int, not float"),
        ("set_read_buffer", True, TypeError, "set_read_buffer: nbytes must be an int, not bool"),
        ("set_linger", "1", TypeError, "set_linger: sec must be an int, not str"),
        ("set_no_delay", "no", TypeError, "set_no_delay: on must be a bool, not str"),
        ("set_keep_alive", None, TypeError, "set_keep_alive: on must be a bool, not NoneType"),
        (
            "set_keep_alive_period",
            "5",
            TypeError,
            "set_keep_alive_period: seconds must be a number, not str",
        ),
        (
            "set_keep_alive_period",
            float("nan"),
            ValueError,
            "set_keep_alive_period: seconds must be finite",
        ),
    ],
)
def test_setters_name_the_bad_argument(
    backend: str, call: str, arg: Any, exc: type[Exception], message: str
) -> None:
    with conn_pair("tcp") as (c, _s):
        with pytest.raises(exc) as ei:
            getattr(c, call)(arg)
        assert message in str(ei.value)


def test_setters_still_take_ints(backend: str) -> None:
    with conn_pair("tcp") as (c, _s):
        assert isinstance(c, netpoll.TCPConn)
        c.set_read_buffer(65536)
        c.set_write_buffer(65536)
        c.set_linger(0)
        c.set_no_delay(False)
        c.set_no_delay(1)
        c.set_keep_alive_period(2.5)


# -- relative deadlines by mistake ---------------------------------------------------


@pytest.mark.parametrize("t", [5, 5.0, 0, -1, 1.0, time.monotonic(), float("-inf")])
def test_relative_deadline_is_refused(t: float) -> None:
    with pytest.raises(ValueError, match="looks like a relative time") as ei:
        as_deadline(t)
    assert "time.time() +" in str(ei.value)


def test_relative_deadline_refused_by_every_setter(backend: str) -> None:
    with conn_pair("tcp") as (c, _s), netpoll.listen("tcp", "127.0.0.1:0") as ln:
        for setter in (c.set_deadline, c.set_read_deadline, c.set_write_deadline, ln.set_deadline):
            with pytest.raises(ValueError, match="deadline 5 is more than a day in the past"):
                setter(5)
        with pytest.raises(ValueError, match="relative time"):
            netpoll.Dialer(deadline=30).dial("tcp", str(ln.addr()))
        # The conn is untouched: no deadline was set.
        c.write(b"x")
        assert _s.read(1) == b"x"


def test_absolute_deadlines_are_accepted() -> None:
    now = time.time()
    assert as_deadline(now) == now
    assert as_deadline(now - RELATIVE_DEADLINE_LIMIT + 60) == now - RELATIVE_DEADLINE_LIMIT + 60
    assert as_deadline(now + 30 * 86400) == now + 30 * 86400
    # A datetime is explicit, however old: Go's aLongTimeAgo.
    assert as_deadline(datetime.datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)) == 1.0


@pytest.mark.parametrize(
    "t",
    [
        float("inf"),
        10**400,
        datetime.datetime.max,
        datetime.datetime.max.replace(tzinfo=UTC),
    ],
    ids=["inf", "huge-int", "datetime.max", "datetime.max-utc"],
)
def test_never_is_infinity(t: Any) -> None:
    assert as_deadline(t) == float("inf")


def test_datetime_min_is_a_past_deadline_not_an_error() -> None:
    # Naive datetime.min has no local timestamp ("year 0 is out of range").
    d = as_deadline(datetime.datetime.min)
    assert d is not None and d < -6e10


# -- the dynamic OpError classes ---------------------------------------------------


def test_timeout_error_reads_as_operror(backend: str) -> None:
    with conn_pair("tcp") as (c, _s):
        c.set_read_deadline(time.time())
        with pytest.raises(TimeoutError) as ei:
            c.read(1)
    err = ei.value
    assert isinstance(err, netpoll.OpError)
    assert type(err).__name__ == "OpError"
    assert repr(err).startswith("OpError('read tcp ")
    assert type(err).__qualname__ == "OpError[TimeoutError]"
    tb = "".join(traceback.format_exception_only(type(err), err))
    assert tb.startswith("netpoll.OpError[TimeoutError]: read tcp ")
    assert "OpError_" not in tb + repr(err) + str(type(err))


def test_refused_error_reads_as_operror() -> None:
    from netpoll.net.errors import op_error

    err = op_error("dial", "tcp", None, "127.0.0.1:1", ConnectionRefusedError(111, "x"))
    assert isinstance(err, ConnectionRefusedError)
    assert type(err).__name__ == "OpError"
    assert "OpError[ConnectionRefusedError]" in "".join(
        traceback.format_exception_only(type(err), err)
    )
    again = pickle.loads(pickle.dumps(err))  # rebuilt through op_error, not by class name
    assert type(again) is type(err) and str(again) == str(err)


# -- the Switch closes a socket whose error an after filter set in place -------------


def test_switch_closes_socket_when_after_filter_sets_error_in_place(backend: str) -> None:
    created: list[int] = []

    def f(st: Status) -> Any:
        def after(st: Status) -> None:
            created.append(st.result.fileno())
            st.error = OSError(errno.EMFILE, os.strerror(errno.EMFILE))  # result left alone

        return after

    with Switch() as sw:
        sw.set("socket", f)
        with pytest.raises(netpoll.OpError, match="socket: too many open files"):
            netpoll.dial("tcp", "127.0.0.1:9", timeout=1)
        assert created
        with pytest.raises(OSError):
            os.fstat(created[0])  # was: still open, leaked
        assert sw.sockets() == {}
        assert sw.stat(socket.AF_INET, socket.SOCK_STREAM).open_failed == 1


# -- makefile ------------------------------------------------------------------------


def test_buffered_reader_over_conn_loses_data_on_timeout(backend: str) -> None:
    """Why makefile exists: CPython's BufferedReader drops bytes on a timeout."""
    with conn_pair("tcp") as (c, s):
        r = io.BufferedReader(c, 16)
        s.write(b"abcdefgh")
        assert r.read(2) == b"ab"  # the buffer now holds "cdefgh"
        c.set_read_deadline(time.time() + 0.05)
        with pytest.raises(TimeoutError):
            r.read(10)  # takes "cdefgh" from the buffer, then times out
        c.set_read_deadline(None)
        s.write(b"ij")
        assert r.read(2) == b"ij"  # "cdefgh" is gone, silently


def test_makefile_refuses_reads_after_a_timeout(backend: str) -> None:
    with conn_pair("tcp") as (c, s):
        f = c.makefile("rb", buffering=16)
        assert isinstance(f, io.BufferedReader)
        s.write(b"abcdefgh")
        assert f.read(2) == b"ab"
        c.set_read_deadline(time.time() + 0.05)
        with pytest.raises(TimeoutError):
            f.read(10)
        c.set_read_deadline(None)
        s.write(b"ij")
        with pytest.raises(OSError, match="cannot read from timed out object"):
            f.read(2)  # refused, where io.BufferedReader(c) went on without "cdefgh"
        with pytest.raises(OSError, match="cannot read from timed out object"):
            f.readline()
        f.close()
        assert not c.closed  # the file does not own the conn
        assert c.read(2) == b"ij"  # the conn itself goes on


def test_makefile_modes(backend: str) -> None:
    with conn_pair("tcp") as (c, s):
        c.set_deadline(time.time() + 5)
        s.set_deadline(time.time() + 5)
        w = s.makefile("wb")
        w.write(b"line one\nline two\n")
        w.flush()
        with c.makefile("r", encoding="ascii", newline="\n") as t:
            assert t.readline() == "line one\n"
            assert t.readline() == "line two\n"
        rw = c.makefile("rwb")
        rw.write(b"pong\n")
        rw.flush()
        assert s.read(5) == b"pong\n"
        raw = c.makefile("rb", buffering=0)
        s.write(b"z")
        assert raw.read(1) == b"z"
        assert raw.fileno() == c.fileno()
        for f in (w, rw, raw):
            f.close()
        with pytest.raises(ValueError, match="invalid mode 'rx'"):
            c.makefile("rx")
        with pytest.raises(ValueError, match="unbuffered streams must be binary"):
            c.makefile("r", buffering=0)
        with pytest.raises(io.UnsupportedOperation):
            c.makefile("wb", buffering=0).read(1)
