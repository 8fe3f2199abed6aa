"""A user's typed netpoll code: checked by ``mypy --strict`` in the tox ``type`` env.

The network name picks the conn type (typing overloads on literal network
names), so TCP-only calls such as ``set_no_delay`` type-check without casts.
Not run by pytest (the file name has no ``test_`` prefix);
``tests/test_typing_user.py`` also runs mypy on it and on a wrong use.
"""

from __future__ import annotations

import ssl

from typing_extensions import assert_type

import netpoll
from netpoll import tls


def tcp_client(address: str) -> bytes:
    conn = netpoll.dial("tcp", address, timeout=2.0)
    assert_type(conn, netpoll.TCPConn)
    conn.set_no_delay(False)
    conn.set_keep_alive_period(30.0)
    conn.write(b"ping")
    data = conn.read(4)
    conn.close()
    return data


def unix_client(path: str) -> netpoll.UnixConn:
    conn = netpoll.dial("unix", path)
    assert_type(conn, netpoll.UnixConn)
    conn.close_write()
    return conn


def udp_client(address: str) -> netpoll.UDPConn:
    return netpoll.Dialer(timeout=1.0).dial("udp4", address)


def tcp_server() -> None:
    ln = netpoll.listen("tcp", "127.0.0.1:0")
    assert_type(ln, netpoll.TCPListener)
    assert_type(ln.addr(), netpoll.TCPAddr)
    conn = ln.accept()
    assert_type(conn, netpoll.TCPConn)
    conn.set_linger(0)
    conn.close()
    ln.close()


def unix_server(path: str) -> netpoll.UnixListener:
    ln = netpoll.ListenConfig(backlog=16).listen("unix", path)
    ln.set_unlink_on_close(True)
    return ln


def packet() -> netpoll.UDPConn:
    pc = netpoll.listen_packet("udp", "127.0.0.1:0")
    assert_type(pc, netpoll.UDPConn)
    return pc


def any_network(network: str, address: str) -> netpoll.Conn:
    # A network only known at run time gives the base class.
    return netpoll.dial(network, address)


def tls_client(address: str, ctx: ssl.SSLContext) -> str | None:
    conn = tls.dial("tcp", address, ctx, timeout=5.0)
    assert_type(conn, tls.TLSConn)
    state = conn.connection_state()
    conn.close()
    return state.negotiated_protocol


def in_memory() -> tuple[netpoll.PipeConn, netpoll.PipeConn]:
    a, b = netpoll.pipe()
    a.set_deadline(None)
    return a, b


def lookups() -> tuple[list[str], int]:
    return netpoll.lookup_host("localhost"), netpoll.lookup_port("tcp", "http")


def goroutines() -> int:
    # go() and blocking() are typed with ParamSpec: arguments are checked
    # against the function, and the handle carries its return type.
    def add(a: int, b: int = 0) -> int:
        return a + b

    h = netpoll.go(add, 1, b=2)
    assert_type(h, netpoll.Goroutine[int])
    assert h.join(1.0)
    exc = h.exception(timeout=1.0)
    assert exc is None
    total = h.result(timeout=1.0) + netpoll.blocking(add, 3, b=4)
    assert_type(netpoll.run(add, 5), int)
    # A wrong argument is an error; if mypy stopped seeing it, the now unused
    # ignore would fail this check (--strict warns about unused ignores).
    netpoll.go(add, "wrong")  # type: ignore[arg-type]
    netpoll.blocking(add, 1, c=2)  # type: ignore[call-arg]
    return total
