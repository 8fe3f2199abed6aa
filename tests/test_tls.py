"""netpoll.tls against real peers: itself, stdlib ssl, openssl s_server/s_client, curl.

Also: ALPN, SNI and certificate details in connection_state; clear errors for
a wrong hostname, an expired certificate and a plain-TCP peer; deadlines on
the handshake, reads, writes and close; close from another thread; a TLS
listener that survives a failed handshake; TLS over netpoll.pipe; and faults
injected mid-handshake (reset, short writes, EAGAIN storms, spurious wakeups).

The tests taking ``tls_path`` run on both ways of moving ciphertext: "socket"
(OpenSSL reads and writes the socket itself) and "memory" (MemoryBIO through
the conn, forced by a plugin that watches reads and writes, as any Faults
rule does).  Each checks the path its conns took.
"""

from __future__ import annotations

import errno
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import netpoll
from netpoll import tls
from netpoll.core.hookspecs import hookimpl
from netpoll.core.runtime import runtime
from netpoll.testing import Faults, on_thread
from tests.helpers.tls import (
    CURL,
    PEER_TIMEOUT,
    Certs,
    certs,
    needs_curl,
    needs_openssl,
    openssl_server,
    spawn,
    start,
    stdlib_tls_server,
)


@pytest.fixture(scope="module")
def pki() -> Iterator[Certs]:
    with certs() as c:
        yield c


class _Watch:
    """A plugin on the read and write hooks that lets every call through and notes its fd."""

    def __init__(self) -> None:
        self.fds: list[int] = []

    @hookimpl(wrapper=True)
    def read(self, sock: socket.socket, buf: object) -> object:
        self.fds.append(sock.fileno())
        return (yield)

    @hookimpl(wrapper=True)
    def write(self, sock: socket.socket, data: object) -> object:
        self.fds.append(sock.fileno())
        return (yield)


@pytest.fixture(params=["socket", "memory"])
def tls_path(request: pytest.FixtureRequest) -> Iterator[str]:
    """The TLS path under test; "memory" is forced by a watching plugin."""
    path: str = request.param
    if path == "socket":
        yield path
        return
    watch = _Watch()
    runtime.pm.register(watch, name="tests.tls-watch")
    try:
        yield path
    finally:
        runtime.pm.unregister(watch)


def _echo_once(ln: tls.TLSListener, path: str | None = None) -> bytes:
    """Accept one TLS conn, echo until EOF, return what was read."""
    conn = ln.accept()
    assert path is None or conn.io_path == path
    got = bytearray()
    with conn:
        conn.set_deadline(time.time() + PEER_TIMEOUT)
        buf = bytearray(65536)
        while n := conn.readinto(buf):
            got += buf[:n]
            conn.write(memoryview(buf)[:n])
    return bytes(got)


# -- netpoll <-> netpoll, state -------------------------------------------------------


def test_roundtrip_and_connection_state(backend: str, pki: Certs, tls_path: str) -> None:
    sctx = pki.server_context(alpn=["h2", "http/1.1"])
    with tls.listen("tcp", "127.0.0.1:0", sctx) as ln:
        states: list[tls.ConnectionState] = []

        def serve() -> None:
            conn = ln.accept()
            with conn:
                assert conn.io_path == tls_path
                conn.handshake()
                states.append(conn.connection_state())
                conn.write(conn.read(5).upper())

        t = start(serve)
        addr = f"localhost:{ln.addr().port}"
        with tls.dial("tcp", addr, pki.client_context(alpn=["http/1.1"]), timeout=5) as c:
            assert c.io_path == tls_path
            c.write(b"hello")
            assert c.read(5) == b"HELLO"
            st = c.connection_state()
        t.join_result()
    assert st.handshake_complete and st.version in ("TLSv1.2", "TLSv1.3")
    assert st.negotiated_protocol == "http/1.1"
    assert st.server_name == "localhost"
    assert ("DNS", "localhost") in st.peer_certificate["subjectAltName"]
    assert st.peer_certificate_der and st.cipher_suite
    srv = states[0]
    assert srv.server_name == "localhost"  # the SNI the client sent
    assert srv.negotiated_protocol == "http/1.1"
    assert srv.version == st.version and srv.cipher_suite == st.cipher_suite


def test_bulk_both_ways_with_close_write(backend: str, pki: Certs, tls_path: str) -> None:
    """8 MiB each way at once; close_write (close_notify) ends the peer's reads."""
    payload = bytes(range(256)) * (32 * 1024)
    with tls.listen("tcp", "127.0.0.1:0", pki.server_context()) as ln:
        t = start(lambda: _echo_once(ln, tls_path))
        c = tls.dial("tcp", str(ln.addr()), pki.client_context(), server_hostname="localhost")
        assert c.io_path == tls_path
        with c:

            def send() -> None:
                c.write(payload)
                c.close_write()
                with pytest.raises(netpoll.OpError, match="tls: protocol is shutdown"):
                    c.write(b"more")

            w = start(send)
            got = c.readall()
            w.join_result()
        assert t.join_result() == payload
    assert got == payload


def test_tls_over_pipe(pki: Certs) -> None:
    """TLS on the in-memory pipe: no sockets at all.

    net.Pipe has no buffer, so (as with Go's crypto/tls on net.Pipe) each
    side must be reading while the other writes: TLS 1.3 session tickets
    follow the handshake, so the client reads in one thread and writes in
    another.
    """
    a, b = netpoll.pipe()
    for end in (a, b):
        end.set_deadline(time.time() + PEER_TIMEOUT)
    srv = tls.server(b, pki.server_context())
    cli = tls.client(a, pki.client_context(), "localhost")
    assert srv.io_path == cli.io_path == "memory"  # no socket under a pipe

    def serve() -> None:
        srv.write(srv.read(4).upper())
        srv.close()

    t = start(serve)
    w = start(lambda: cli.write(b"pipe"))
    assert cli.read(4) == b"PIPE"
    assert cli.read(1) == b""  # the server's close_notify
    w.join_result()
    t.join_result()
    cli.close()
    assert cli.closed and srv.closed


# -- stdlib ssl peers -------------------------------------------------------------------


def test_stdlib_ssl_client_to_netpoll_server(backend: str, pki: Certs, tls_path: str) -> None:
    with tls.listen("tcp", "127.0.0.1:0", pki.server_context()) as ln:
        t = start(lambda: _echo_once(ln, tls_path))
        raw = socket.create_connection(("127.0.0.1", ln.addr().port), timeout=PEER_TIMEOUT)
        with pki.client_context().wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(b"x" * 100_000)
            got = b""
            while len(got) < 100_000:
                got += s.recv(65536)
            assert got == b"x" * 100_000
            s.unwrap().close()  # close_notify: the netpoll side reads EOF
        assert t.join_result() == b"x" * 100_000


def test_netpoll_client_to_stdlib_ssl_server(backend: str, pki: Certs, tls_path: str) -> None:
    def handler(s: ssl.SSLSocket) -> bytes:
        data = s.recv(100)
        s.sendall(data[::-1])
        return data

    port, t, _ = stdlib_tls_server(pki.server_context(), handler)
    with tls.dial("tcp", f"localhost:{port}", pki.client_context(), timeout=5) as c:
        assert c.io_path == tls_path
        c.write(b"stressed")
        assert c.read(8) == b"desserts"
    assert t.join_result() == b"stressed"


# -- openssl and curl ----------------------------------------------------------------------


@needs_openssl
def test_client_against_openssl_s_server(backend: str, pki: Certs, tls_path: str) -> None:
    with openssl_server(pki, "-rev", "-alpn", "h2,http/1.1") as (port, _proc):
        ctx = pki.client_context(alpn=["http/1.1"])
        with tls.dial("tcp", f"localhost:{port}", ctx, timeout=5) as c:
            c.set_deadline(time.time() + PEER_TIMEOUT)
            assert c.io_path == tls_path
            assert c.connection_state().negotiated_protocol == "http/1.1"
            c.write(b"netpoll\n")
            got = b""
            while b"llopten" not in got:
                chunk = c.read(100)
                assert chunk, f"EOF before the reply: {got!r}"
                got += chunk


@needs_openssl
def test_openssl_s_client_alpn_against_netpoll_server(
    backend: str, pki: Certs, tls_path: str
) -> None:
    sctx = pki.server_context(alpn=["h2", "http/1.1"])
    with tls.listen("tcp", "127.0.0.1:0", sctx) as ln:
        states: list[tls.ConnectionState] = []

        def serve() -> None:
            conn = ln.accept()
            with conn:
                conn.set_deadline(time.time() + PEER_TIMEOUT)
                assert conn.io_path == tls_path
                line = conn.read(64)
                states.append(conn.connection_state())
                conn.write(b"got " + line)

        t = start(serve)
        args = [
            "openssl", "s_client", "-connect", f"127.0.0.1:{ln.addr().port}",
            "-servername", "localhost", "-CAfile", str(pki.ca_pem),
            "-verify_return_error", "-alpn", "http/1.1", "-ign_eof",
        ]  # fmt: skip
        with spawn(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE) as proc:
            out, _ = proc.communicate(b"hello\n", timeout=PEER_TIMEOUT)
        t.join_result()
    assert proc.returncode == 0, out.decode(errors="replace")
    assert b"ALPN protocol: http/1.1" in out
    assert b"Verify return code: 0 (ok)" in out
    assert b"got hello" in out
    assert states[0].negotiated_protocol == "http/1.1"
    assert states[0].server_name == "localhost"


@needs_curl
def test_curl_against_netpoll_https_server(backend: str, pki: Certs, tls_path: str) -> None:
    with tls.listen("tcp", "127.0.0.1:0", pki.server_context(alpn=["http/1.1"])) as ln:

        def serve() -> bytes:
            conn = ln.accept()
            with conn:
                assert conn.io_path == tls_path
                conn.set_deadline(time.time() + PEER_TIMEOUT)
                req = b""
                while b"\r\n\r\n" not in req:
                    chunk = conn.read(4096)
                    assert chunk
                    req += chunk
                body = b"hello from netpoll.tls\n"
                conn.write(
                    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                    % (len(body), body)
                )
            return req

        t = start(serve)
        assert CURL is not None
        url = f"https://localhost:{ln.addr().port}/path"
        res = subprocess.run(
            [CURL, "-sS", "--max-time", "10", "--cacert", str(pki.ca_pem), url],
            capture_output=True,
            timeout=PEER_TIMEOUT + 5,
        )
        req = t.join_result()
    assert res.returncode == 0, res.stderr
    assert res.stdout == b"hello from netpoll.tls\n"
    assert req.startswith(b"GET /path HTTP/1.1\r\n")


# -- clear errors ------------------------------------------------------------------------------


def _failing_server(ln: tls.TLSListener, path: str) -> BaseException | None:
    conn = ln.accept()
    with conn:
        assert conn.io_path == path
        conn.set_deadline(time.time() + PEER_TIMEOUT)
        try:
            conn.handshake()
        except OSError as exc:
            return exc
    return None


def test_wrong_hostname(backend: str, pki: Certs, tls_path: str) -> None:
    with tls.listen("tcp", "127.0.0.1:0", pki.server_context()) as ln:
        t = start(lambda: _failing_server(ln, tls_path))
        with pytest.raises(ssl.SSLCertVerificationError) as info:
            tls.dial("tcp", str(ln.addr()), pki.client_context(), server_hostname="wrong.example")
        server_err = t.join_result()
    err = info.value
    assert isinstance(err, netpoll.OpError) and err.op == "handshake"
    assert "CERTIFICATE_VERIFY_FAILED" in str(err) and "Hostname mismatch" in str(err)
    assert str(err).startswith("handshake tcp 127.0.0.1:")
    assert isinstance(server_err, ssl.SSLError) and "ALERT_BAD_CERTIFICATE" in str(server_err)


def test_expired_certificate(backend: str, pki: Certs, tls_path: str) -> None:
    with tls.listen("tcp", "127.0.0.1:0", pki.expired_server_context()) as ln:
        t = start(lambda: _failing_server(ln, tls_path))
        with pytest.raises(ssl.SSLCertVerificationError, match="certificate has expired"):
            tls.dial("tcp", f"localhost:{ln.addr().port}", pki.client_context(), timeout=5)
        t.join_result()


def test_plain_tcp_peer(backend: str, pki: Certs, tls_path: str) -> None:
    """A server that answers in plain text: the TLS client fails clearly, at once."""
    with netpoll.listen("tcp", "127.0.0.1:0") as ln:

        def serve() -> None:
            with ln.accept() as conn:
                conn.set_deadline(time.time() + PEER_TIMEOUT)
                conn.read(1)
                conn.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
                conn.read(1)

        t = start(serve)
        c = tls.client(netpoll.dial("tcp", str(ln.addr())), pki.client_context(), "localhost")
        with c:
            assert c.io_path == tls_path
            c.set_deadline(time.time() + 5)
            with pytest.raises(ssl.SSLError, match=r"WRONG_VERSION_NUMBER|record layer failure"):
                c.handshake()
        t.join_result()


def test_failed_handshakes_never_stop_the_listener(backend: str, pki: Certs, tls_path: str) -> None:
    """A plain-TCP client, a client that distrusts us, then a good one: all served."""
    with tls.listen("tcp", "127.0.0.1:0", pki.server_context()) as ln:
        outcomes: list[str] = []
        paths: list[str] = []
        handlers: list[threading.Thread] = []

        def handle(conn: tls.TLSConn) -> None:
            paths.append(conn.io_path)
            with conn:
                conn.set_deadline(time.time() + PEER_TIMEOUT)
                try:
                    conn.write(conn.read(2))
                    outcomes.append("ok")
                except OSError as exc:
                    outcomes.append(f"failed: {exc.__class__.__mro__[2].__name__}")

        def accept_loop() -> None:
            for _ in range(3):
                conn = ln.accept()
                h = threading.Thread(target=handle, args=(conn,))
                h.start()
                handlers.append(h)

        t = start(accept_loop)
        with socket.create_connection(("127.0.0.1", ln.addr().port), timeout=5) as plain:
            plain.sendall(b"GET / HTTP/1.0\r\n\r\n")
            plain.recv(100)
        with pytest.raises(ssl.SSLCertVerificationError):
            tls.dial("tcp", str(ln.addr()), ssl.create_default_context(), timeout=5)
        with tls.dial("tcp", f"localhost:{ln.addr().port}", pki.client_context(), timeout=5) as c:
            c.write(b"ok")
            assert c.read(2) == b"ok"
        t.join_result()
        for h in handlers:
            h.join(PEER_TIMEOUT)
    assert sorted(outcomes)[-1] == "ok" and len(outcomes) == 3
    assert outcomes.count("ok") == 1
    assert paths == [tls_path] * 3


# -- deadlines and close -----------------------------------------------------------------------


def test_handshake_bounded_by_dial_timeout(backend: str, pki: Certs, tls_path: str) -> None:
    """A server that accepts but never speaks TLS: the dial timeout ends the handshake."""
    with netpoll.listen("tcp", "127.0.0.1:0") as ln:
        t = start(ln.accept)
        t0 = time.monotonic()
        with pytest.raises(TimeoutError) as info:
            tls.dial("tcp", f"localhost:{ln.addr().port}", pki.client_context(), timeout=0.3)
        elapsed = time.monotonic() - t0
        t.join_result().close()
    assert isinstance(info.value, netpoll.OpError) and info.value.op == "handshake"
    assert "i/o timeout" in str(info.value)
    assert 0.25 <= elapsed < 5.0


def test_read_and_write_deadlines(backend: str, pki: Certs, tls_path: str) -> None:
    with tls.listen("tcp", "127.0.0.1:0", pki.server_context()) as ln:
        release = threading.Event()

        def serve() -> None:
            with ln.accept() as conn:
                conn.handshake()
                release.wait(PEER_TIMEOUT)  # never reads: the client's writes fill up

        t = start(serve)
        with tls.dial("tcp", f"localhost:{ln.addr().port}", pki.client_context(), timeout=5) as c:
            assert c.io_path == tls_path
            c.set_read_deadline(time.time() + 0.2)
            with pytest.raises(TimeoutError) as rinfo:
                c.read(1)
            assert rinfo.value.op == "read"  # type: ignore[attr-defined]
            c.set_write_deadline(time.time() + 0.3)
            t0 = time.monotonic()
            with pytest.raises(TimeoutError) as winfo:
                c.write(b"z" * (64 << 20))
            assert time.monotonic() - t0 < 5.0
            assert winfo.value.op == "write"  # type: ignore[attr-defined]
            # The close_notify in close() is bounded too (write deadline in the past).
            t1 = time.monotonic()
            c.close()
            assert time.monotonic() - t1 < 5.5
        release.set()
        t.join_result()


def test_close_from_another_thread_wakes_parked_read_and_write(
    backend: str, pki: Certs, tls_path: str
) -> None:
    with tls.listen("tcp", "127.0.0.1:0", pki.server_context()) as ln:
        release = threading.Event()

        def serve() -> None:
            with ln.accept() as conn:
                conn.handshake()
                release.wait(PEER_TIMEOUT)

        t = start(serve)
        c = tls.dial("tcp", f"localhost:{ln.addr().port}", pki.client_context(), timeout=5)
        assert c.io_path == tls_path
        reader = start(lambda: c.read(1))
        writer = start(lambda: c.write(b"w" * (64 << 20)))
        time.sleep(0.2)
        assert reader.is_alive() and writer.is_alive()
        c.close()
        for th in (reader, writer):
            with pytest.raises(netpoll.ErrClosed):
                th.join_result()
        with pytest.raises(netpoll.ErrClosed):
            c.read(1)
        release.set()
        t.join_result()


# -- faults mid-handshake ----------------------------------------------------------------------


def _serve_handshake(ln: tls.TLSListener) -> BaseException | None:
    conn = ln.accept()
    with conn:
        conn.set_deadline(time.time() + PEER_TIMEOUT)
        try:
            conn.write(conn.read(5))
        except OSError as exc:
            return exc
    return None


def test_reset_mid_handshake(backend: str, pki: Certs) -> None:
    with Faults() as faults:
        with tls.listen("tcp", "127.0.0.1:0", pki.server_context()) as ln:
            t = start(lambda: _serve_handshake(ln))
            faults.reset_after(40, where=on_thread())  # inside the server's first flight
            with pytest.raises(ConnectionResetError) as info:
                tls.dial("tcp", f"localhost:{ln.addr().port}", pki.client_context(), timeout=5)
            server_err = t.join_result()
        assert not faults.switch.sockets(), faults.switch.leak_report()
    assert server_err is not None  # the server saw the client go away mid-handshake
    assert info.value.op == "handshake"  # type: ignore[attr-defined]
    assert "connection reset" in str(info.value)


@pytest.mark.parametrize("fault", ["short_writes", "eagain_storm", "spurious_wakeups"])
def test_handshake_survives_faults(backend: str, pki: Certs, fault: str) -> None:
    with Faults() as faults:
        if fault == "short_writes":
            rule = faults.short("write", 7)
        elif fault == "eagain_storm":
            rule = faults.eagain(["read", "write"], times=60)
        else:
            rule = faults.spurious_wakeups(0.5)
        with tls.listen("tcp", "127.0.0.1:0", pki.server_context()) as ln:
            t = start(lambda: _serve_handshake(ln))
            addr = f"localhost:{ln.addr().port}"
            with tls.dial("tcp", addr, pki.client_context(), timeout=5) as c:
                c.write(b"fault")
                assert c.read(5) == b"fault"
            assert t.join_result() is None
        assert rule.fired > 0
        rule.remove()
        assert not faults.switch.sockets(), faults.switch.leak_report()


def test_short_writes_on_both_sides_keep_records_intact(backend: str, pki: Certs) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB
    with Faults() as faults, tls.listen("tcp", "127.0.0.1:0", pki.server_context()) as ln:
        faults.short("write", 1000)
        faults.short("read", 999)
        t = start(lambda: _echo_once(ln))
        with tls.dial("tcp", f"localhost:{ln.addr().port}", pki.client_context(), timeout=5) as c:
            w = start(lambda: (c.write(payload), c.close_write()))
            got = c.readall()
            w.join_result()
        assert t.join_result() == payload
    assert got == payload


def test_write_failure_is_an_op_error(backend: str, pki: Certs) -> None:
    """A fault added after the dial reaches a memory-path conn (a plugin watched at its making)."""
    watch = _Watch()
    runtime.pm.register(watch, name="tests.tls-watch")
    try:
        with Faults() as faults, tls.listen("tcp", "127.0.0.1:0", pki.server_context()) as ln:
            t = start(lambda: _serve_handshake(ln))
            addr = f"localhost:{ln.addr().port}"
            with tls.dial("tcp", addr, pki.client_context(), timeout=5) as c:
                assert c.io_path == "memory"
                faults.fail("write", errno.EPIPE, where=on_thread())
                with pytest.raises(BrokenPipeError) as info:
                    c.write(b"x")
                assert info.value.op == "write"  # type: ignore[attr-defined]
            t.join_result()
    finally:
        runtime.pm.unregister(watch)


# -- the socket path: what decides it, and what it keeps ----------------------------------


def test_plugin_registered_after_the_conn_keeps_the_socket_path(backend: str, pki: Certs) -> None:
    """The path is chosen when the TLSConn is made: a later plugin sees only later conns."""
    with tls.listen("tcp", "127.0.0.1:0", pki.server_context()) as ln:
        t = start(lambda: _echo_once(ln))
        addr = f"localhost:{ln.addr().port}"
        c = tls.dial("tcp", addr, pki.client_context(), timeout=5)
        with c:
            assert c.io_path == "socket"
            watch = _Watch()
            runtime.pm.register(watch, name="tests.tls-watch")
            try:
                c.write(b"ping")
                assert c.read(4) == b"ping"
                assert c.io_path == "socket"
                assert c.fileno() not in watch.fds  # OpenSSL did this conn's I/O
                t2 = start(lambda: _echo_once(ln))
                with tls.dial("tcp", addr, pki.client_context(), timeout=5) as c2:
                    assert c2.io_path == "memory"
                    c2.write(b"pong")
                    assert c2.read(4) == b"pong"
                    assert c2.fileno() in watch.fds  # its traffic goes through the hooks
                t2.join_result()
            finally:
                runtime.pm.unregister(watch)
        assert t.join_result() == b"ping"


def test_socket_path_over_unix_socket(pki: Certs, tmp_path: Path) -> None:
    path = str(tmp_path / "tls.sock")
    with tls.listen("unix", path, pki.server_context()) as ln:
        t = start(lambda: _echo_once(ln, "socket"))
        with tls.dial("unix", path, pki.client_context(), server_hostname="localhost") as c:
            assert c.io_path == "socket"
            c.set_deadline(time.time() + PEER_TIMEOUT)
            c.write(b"unix" * 10000)
            c.close_write()
            assert c.readall() == b"unix" * 10000
        assert t.join_result() == b"unix" * 10000


def test_write_after_peer_reset_is_an_op_error(backend: str, pki: Certs, tls_path: str) -> None:
    """A real reset (the peer closes with SO_LINGER 0): writes fail with op "write"."""
    with tls.listen("tcp", "127.0.0.1:0", pki.server_context()) as ln:

        def serve() -> None:
            with ln.accept() as conn:
                conn.set_deadline(time.time() + PEER_TIMEOUT)
                conn.read(1)
                tcp = conn.net_conn()
                assert isinstance(tcp, netpoll.TCPConn)
                tcp.set_linger(0)

        t = start(serve)
        with tls.dial("tcp", f"localhost:{ln.addr().port}", pki.client_context(), timeout=5) as c:
            assert c.io_path == tls_path
            c.set_deadline(time.time() + PEER_TIMEOUT)
            c.write(b"x")
            t.join_result()
            with pytest.raises((ConnectionResetError, BrokenPipeError)) as info:
                for _ in range(1000):
                    c.write(b"y" * 65536)
                    time.sleep(0.001)
            assert isinstance(info.value, netpoll.OpError) and info.value.op == "write"


def test_io_path_memory_keeps_a_socket_conn_watchable(backend: str, pki: Certs) -> None:
    with tls.listen("tcp", "127.0.0.1:0", pki.server_context()) as ln:
        t = start(lambda: _echo_once(ln))
        conn = netpoll.dial("tcp", str(ln.addr()), timeout=5)
        with pytest.raises(ValueError, match="io_path must be None or 'memory', not 'sock'"):
            tls.client(conn, pki.client_context(), "localhost", io_path="sock")
        with tls.client(conn, pki.client_context(), "localhost", io_path="memory") as c:
            assert c.io_path == "memory"
            watch = _Watch()
            runtime.pm.register(watch, name="tests.tls-watch")
            try:
                c.write(b"seen")
                assert c.read(4) == b"seen"
            finally:
                runtime.pm.unregister(watch)
            assert c.fileno() in watch.fds  # registered after the conn, and still sees it
        assert t.join_result() == b"seen"


def test_close_write_while_the_peer_streams(backend: str, pki: Certs, tls_path: str) -> None:
    """close_notify goes out mid-stream; every byte the peer sends still arrives, and
    the peer reads a clean close_notify (not a ragged EOF)."""
    total = 4 << 20
    started = threading.Event()

    def handler(s: ssl.SSLSocket) -> bytes:
        chunk = bytes(range(256)) * 256
        sent = 0
        while sent < total:
            s.sendall(chunk)
            sent += len(chunk)
            started.set()
        return s.recv(10)  # b"" only after a valid close_notify

    port, t, _ = stdlib_tls_server(pki.server_context(), handler)
    with tls.dial("tcp", f"localhost:{port}", pki.client_context(), timeout=5) as c:
        assert c.io_path == tls_path
        c.set_deadline(time.time() + PEER_TIMEOUT)
        first = c.read(65536)
        assert started.wait(PEER_TIMEOUT)
        c.close_write()
        with pytest.raises(netpoll.OpError, match="tls: protocol is shutdown"):
            c.write(b"late")
        rest = c.readall()
        got = first + rest
    assert len(got) == total and got == (bytes(range(256)) * 256) * (total // 65536)
    assert t.join_result() == b""


def test_closing_the_wrapped_conn_wakes_a_parked_read_and_ends_the_connection(
    backend: str, pki: Certs, tls_path: str
) -> None:
    """Go's idiom: close the net.Conn under a TLS conn to break its read; the peer sees the end."""
    with tls.listen("tcp", "127.0.0.1:0", pki.server_context()) as ln:

        def serve() -> bytes:
            with ln.accept() as conn:
                conn.set_deadline(time.time() + PEER_TIMEOUT)
                conn.handshake()
                return conn.read(10)  # b"": the client's connection went away

        t = start(serve)
        c = tls.dial("tcp", f"localhost:{ln.addr().port}", pki.client_context(), timeout=5)
        with c:
            assert c.io_path == tls_path
            reader = start(lambda: c.read(1))
            time.sleep(0.2)
            assert reader.is_alive()
            c.net_conn().close()
            with pytest.raises(netpoll.ErrClosed):
                reader.join_result()
            assert t.join_result() == b""  # before the TLSConn itself is closed


def test_read_after_peer_reset_is_an_op_error(backend: str, pki: Certs, tls_path: str) -> None:
    """A reset without close_notify: ConnectionResetError (op "read"), not the end of stream."""

    def handler(s: ssl.SSLSocket) -> None:
        s.recv(1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    port, t, _ = stdlib_tls_server(pki.server_context(), handler)
    with tls.dial("tcp", f"localhost:{port}", pki.client_context(), timeout=5) as c:
        assert c.io_path == tls_path
        c.set_deadline(time.time() + PEER_TIMEOUT)
        c.write(b"x")
        with pytest.raises(ConnectionResetError) as info:
            c.read(1)
        assert isinstance(info.value, netpoll.OpError) and info.value.op == "read"
        assert "connection reset" in str(info.value)
    t.join_result()


def test_deadline_set_from_another_thread_wakes_a_parked_read(
    backend: str, pki: Certs, tls_path: str
) -> None:
    with tls.listen("tcp", "127.0.0.1:0", pki.server_context()) as ln:
        release = threading.Event()

        def serve() -> None:
            with ln.accept() as conn:
                conn.handshake()
                release.wait(PEER_TIMEOUT)

        t = start(serve)
        with tls.dial("tcp", f"localhost:{ln.addr().port}", pki.client_context(), timeout=5) as c:
            assert c.io_path == tls_path
            reader = start(lambda: c.read(1))
            time.sleep(0.2)
            assert reader.is_alive()
            c.set_read_deadline(time.time() + 0.1)
            with pytest.raises(TimeoutError) as info:
                reader.join_result()
            assert isinstance(info.value, netpoll.OpError) and info.value.op == "read"
            assert "i/o timeout" in str(info.value)
            c.set_read_deadline(None)
            c.write(b"still usable")  # a read timeout does not break the conn
        release.set()
        t.join_result()
