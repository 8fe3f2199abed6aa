"""net: address parsing, Go-shaped errors, and bad input rejected before any socket opens."""

from __future__ import annotations

import datetime
import errno
import socket
import time

import pytest

import netpoll
from netpoll.core.errors import DeadlineExceededError, NetClosingError
from netpoll.net.addr import parse_port, split_host_port
from netpoll.net.context import as_deadline
from netpoll.net.dial import SANE_MINIMUM, partial_deadline, partition
from netpoll.net.errors import CanceledError, op_error
from tests.helpers.net import open_fd_count, plugin

# -- host:port (Go's TestSplitHostPort / TestJoinHostPort) -------------------


@pytest.mark.parametrize(
    ("hostport", "host", "port"),
    [
        ("localhost:http", "localhost", "http"),
        ("localhost:80", "localhost", "80"),
        ("127.0.0.1:80", "127.0.0.1", "80"),
        ("[::1]:80", "::1", "80"),
        ("[fe80::1%lo0]:80", "fe80::1%lo0", "80"),
        (":80", "", "80"),
        ("[]:80", "", "80"),
        ("127.0.0.1:", "127.0.0.1", ""),
        ("[::1]:", "::1", ""),
    ],
)
def test_split_host_port(hostport: str, host: str, port: str) -> None:
    assert split_host_port(hostport) == (host, port)
    if host or port:
        assert netpoll.split_host_port(netpoll.join_host_port(host, port)) == (host, port)


@pytest.mark.parametrize(
    ("hostport", "why"),
    [
        ("golang.org", "missing port in address"),
        ("127.0.0.1", "missing port in address"),
        ("[::1]", "missing port in address"),
        ("[fe80::1%lo0]", "missing port in address"),
        ("[localhost%lo0]", "missing port in address"),
        ("localhost%lo0", "missing port in address"),
        ("::1", "too many colons in address"),
        ("fe80::1%lo0", "too many colons in address"),
        ("fe80::1%lo0:80", "too many colons in address"),
        ("[foo:bar]", "missing port in address"),
        ("[foo:bar]baz", "missing port in address"),
        ("[foo]bar:baz", "missing port in address"),
        ("[foo]:[bar]:baz", "too many colons in address"),
        ("[foo]:[bar]baz", "unexpected '[' in address"),
        ("foo[bar]:baz", "unexpected '[' in address"),
        ("foo]bar:baz", "unexpected ']' in address"),
        ("[::1:80", "missing ']' in address"),
    ],
)
def test_split_host_port_errors(hostport: str, why: str) -> None:
    with pytest.raises(netpoll.AddrError) as info:
        split_host_port(hostport)
    assert info.value.err == why
    assert str(info.value) == f"address {hostport}: {why}"
    assert isinstance(info.value, ValueError)


def test_join_host_port() -> None:
    assert netpoll.join_host_port("127.0.0.1", 80) == "127.0.0.1:80"
    assert netpoll.join_host_port("::1", 80) == "[::1]:80"
    assert netpoll.join_host_port("", 80) == ":80"


def test_parse_port() -> None:
    assert parse_port("tcp", "80") == 80
    assert parse_port("tcp", "") == 0
    assert parse_port("tcp", "http") == 80
    assert parse_port("udp", "domain") == 53
    with pytest.raises(netpoll.AddrError, match="invalid port"):
        parse_port("tcp", "65536")
    with pytest.raises(netpoll.DNSError, match="lookup tcp/no-such-service: unknown port"):
        parse_port("tcp", "no-such-service")


# -- address types -------------------------------------------------------------


def test_addr_strings_and_networks() -> None:
    assert str(netpoll.TCPAddr("127.0.0.1", 80)) == "127.0.0.1:80"
    assert str(netpoll.TCPAddr("::1", 80)) == "[::1]:80"
    assert str(netpoll.TCPAddr("fe80::1", 80, "eth0")) == "[fe80::1%eth0]:80"
    assert str(netpoll.TCPAddr("", 80)) == ":80"
    assert netpoll.TCPAddr().network() == "tcp"
    assert netpoll.UDPAddr("::1", 53).network() == "udp"
    assert str(netpoll.UDPAddr("::1", 53)) == "[::1]:53"
    assert netpoll.UnixAddr("/tmp/s", "unixgram").network() == "unixgram"
    assert str(netpoll.UnixAddr("/tmp/s")) == "/tmp/s"
    # Go prints an IPv4-mapped IPv6 address as IPv4.
    assert netpoll.TCPAddr.from_sockaddr(("::ffff:127.0.0.1", 5, 0, 0)) == netpoll.TCPAddr(
        "127.0.0.1", 5
    )
    assert netpoll.TCPAddr("127.0.0.1", 5).sockaddr(socket.AF_INET6)[0] == "::ffff:127.0.0.1"
    with pytest.raises(netpoll.AddrError, match="non-IPv4 address"):
        netpoll.TCPAddr("::1", 5).sockaddr(socket.AF_INET)


def test_resolve_tcp_addr() -> None:
    assert netpoll.resolve_tcp_addr("tcp", "127.0.0.1:http") == netpoll.TCPAddr("127.0.0.1", 80)
    assert netpoll.resolve_tcp_addr("tcp6", "[::1]:0") == netpoll.TCPAddr("::1", 0)
    assert netpoll.resolve_udp_addr("udp", ":53") == netpoll.UDPAddr("", 53)
    with pytest.raises(netpoll.AddrError, match="no suitable address"):
        netpoll.resolve_tcp_addr("tcp4", "[::1]:0")
    with pytest.raises(netpoll.UnknownNetworkError):
        netpoll.resolve_tcp_addr("udp", "127.0.0.1:0")


# -- OpError -----------------------------------------------------------------


def test_op_error_is_the_builtin_class_and_reads_like_go() -> None:
    refused = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
    e = op_error("dial", "tcp", None, netpoll.TCPAddr("127.0.0.1", 1), refused, "connect")
    assert str(e) == "dial tcp 127.0.0.1:1: connect: connection refused"
    assert isinstance(e, netpoll.OpError)
    assert isinstance(e, ConnectionRefusedError)
    assert e.errno == errno.ECONNREFUSED
    assert e.err is refused and e.op == "dial" and e.net == "tcp" and e.source is None

    src, dst = netpoll.TCPAddr("127.0.0.1", 5), netpoll.TCPAddr("127.0.0.1", 6)
    t = op_error("read", "tcp", src, dst, DeadlineExceededError())
    assert str(t) == "read tcp 127.0.0.1:5->127.0.0.1:6: i/o timeout"
    assert isinstance(t, TimeoutError) and t.timeout()
    # One class per builtin, cached.
    assert type(t) is type(op_error("write", "tcp", src, dst, DeadlineExceededError()))

    c = op_error("read", "tcp", src, dst, NetClosingError())
    assert isinstance(c, netpoll.ErrClosed) and not isinstance(c, TimeoutError)
    assert str(c) == "read tcp 127.0.0.1:5->127.0.0.1:6: use of closed network connection"

    k = op_error("dial", "tcp", None, dst, CanceledError())
    assert isinstance(k, netpoll.ErrCanceled)
    assert str(k) == "dial tcp 127.0.0.1:6: operation was canceled"

    reset = ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
    r = op_error("read", "tcp", src, dst, reset, "read")
    assert isinstance(r, ConnectionResetError)
    assert str(r) == "read tcp 127.0.0.1:5->127.0.0.1:6: read: connection reset by peer"
    with pytest.raises(OSError):
        raise r


# -- deadlines ------------------------------------------------------------------


def test_as_deadline() -> None:
    assert as_deadline(None) is None
    soon = time.time() + 12.5
    assert as_deadline(soon) == soon
    with pytest.raises(ValueError, match="looks like a relative time"):
        as_deadline(12.5)  # refused since issue 11: almost surely time.time() + 12.5
    now = datetime.datetime.now(datetime.timezone.utc)
    assert as_deadline(now) == pytest.approx(now.timestamp())
    naive = datetime.datetime.now()
    assert as_deadline(naive) == pytest.approx(naive.timestamp())
    with pytest.raises(TypeError):
        as_deadline("soon")
    with pytest.raises(ValueError):
        as_deadline(float("nan"))


def test_partial_deadline() -> None:
    # Go's TestDialParallel partialDeadline table, in seconds.
    now = 1000.0
    assert partial_deadline(now, None, 3) is None
    assert partial_deadline(now, now + 10, 1) == now + 10
    assert partial_deadline(now, now + 10, 2) == now + 5
    assert partial_deadline(now, now + 10, 10) == now + SANE_MINIMUM
    assert partial_deadline(now, now + 1, 10) == now + 1
    with pytest.raises(DeadlineExceededError):
        partial_deadline(now, now, 1)
    with pytest.raises(DeadlineExceededError):
        partial_deadline(now, now - 1, 1)


def test_partition() -> None:
    a4, b4 = netpoll.TCPAddr("127.0.0.1", 1), netpoll.TCPAddr("127.0.0.2", 1)
    a6 = netpoll.TCPAddr("::1", 1)
    assert partition([a6, a4, b4]) == ([a6], [a4, b4])
    assert partition([a4, a6, b4]) == ([a4, b4], [a6])
    assert partition([a4]) == ([a4], [])


# -- bad input fails before any socket opens -------------------------------------


class _CountSockets:
    def __init__(self) -> None:
        self.n = 0

    from netpoll.core.hookspecs import hookimpl

    @hookimpl(wrapper=True)
    def socket(self, family: int, type: int, proto: int) -> object:
        self.n += 1
        return (yield)


@pytest.mark.parametrize(
    ("call", "exc", "text"),
    [
        (
            lambda: netpoll.dial("tcp7", "127.0.0.1:80"),
            netpoll.UnknownNetworkError,
            "dial tcp7: unknown network tcp7",
        ),
        (
            lambda: netpoll.dial("tcp", "127.0.0.1"),
            netpoll.AddrError,
            "dial tcp: address 127.0.0.1: missing port in address",
        ),
        (
            lambda: netpoll.dial("tcp", "1.2.3.4:5:6"),
            netpoll.AddrError,
            "dial tcp: address 1.2.3.4:5:6: too many colons in address",
        ),
        (lambda: netpoll.dial("tcp", "[::1:80"), netpoll.AddrError, "missing ']' in address"),
        (lambda: netpoll.dial("tcp", "127.0.0.1:99999"), netpoll.AddrError, "invalid port"),
        (lambda: netpoll.dial("tcp", ""), netpoll.AddrError, "dial tcp: missing address"),
        (lambda: netpoll.dial("tcp4", "[::1]:80"), netpoll.AddrError, "no suitable address found"),
        (
            lambda: netpoll.Dialer(local_addr="[::1]:0").dial("tcp", "127.0.0.1:80"),
            netpoll.AddrError,
            "no suitable address found",
        ),
        (
            lambda: netpoll.Dialer(local_addr=netpoll.UnixAddr("/x")).dial("tcp", "127.0.0.1:80"),
            netpoll.AddrError,
            "mismatched local address type",
        ),
        (
            lambda: netpoll.Dialer(local_addr=netpoll.TCPAddr()).dial("unix", "/x"),
            netpoll.AddrError,
            "mismatched local address type",
        ),
        (
            lambda: netpoll.Dialer(timeout=-1).dial("tcp", "127.0.0.1:80"),
            ValueError,
            "negative or NaN dial timeout -1 (timeout)",
        ),
        (
            lambda: netpoll.listen("udp", "127.0.0.1:0"),
            netpoll.AddrError,
            "unexpected address type",
        ),
        (
            lambda: netpoll.listen_packet("tcp", "127.0.0.1:0"),
            netpoll.AddrError,
            "unexpected address type",
        ),
        (
            lambda: netpoll.listen("tcp", "nohost.invalid:0"),
            netpoll.DNSError,
            "lookup nohost.invalid: no such host",
        ),
    ],
)
def test_bad_input_fails_before_any_socket(call, exc, text) -> None:  # type: ignore[no-untyped-def]
    counter = _CountSockets()
    before = open_fd_count()
    with plugin(counter), pytest.raises(exc) as info:
        call()
    assert text in str(info.value)
    assert counter.n == 0, "a socket was opened"
    assert open_fd_count() == before
    if isinstance(info.value, netpoll.OpError):
        assert isinstance(info.value, OSError)


def test_syscall_error_is_unwrapped_into_the_op_error() -> None:
    """Go's os.SyscallError: the call's name travels in its own object, not on the error."""
    import errno as _errno

    from netpoll.net.errors import SyscallError, op_error, with_syscall

    raw = ConnectionRefusedError(_errno.ECONNREFUSED, "Connection refused")
    wrapped = with_syscall(raw, "connect")
    assert isinstance(wrapped, SyscallError) and wrapped.err is raw
    assert wrapped.errno == _errno.ECONNREFUSED
    assert not hasattr(raw, "netpoll_syscall")  # nothing rides on the original
    err = op_error("dial", "tcp", None, None, wrapped)
    assert isinstance(err, ConnectionRefusedError)
    assert str(err).endswith("connect: connection refused")
    # Poll-layer errors stay bare, as Go reports them.
    from netpoll.core.errors import DeadlineExceededError

    timeout = DeadlineExceededError()
    assert with_syscall(timeout, "read") is timeout
    assert str(op_error("read", "tcp", None, None, timeout, "read")).endswith(": i/o timeout")
