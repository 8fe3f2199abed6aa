"""conn.as_socket() and netpoll.create_connection with stdlib code on the other side.

http.client and urllib through the adapter, plain and TLS, against
http.server in a thread; the stdlib SSLSocket taking the descriptor over
(wrap_socket); asyncio streams on an adapter; socket timeouts mapped onto
deadlines; makefile; non-blocking mode; options and addresses.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import http.server
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

import netpoll
from netpoll import tls
from tests.helpers.tls import PEER_TIMEOUT, Certs, certs, start


@pytest.fixture(scope="module")
def pki() -> Iterator[Certs]:
    with certs() as c:
        yield c


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = f"path={self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        n = int(self.headers["Content-Length"])
        body = self.rfile.read(n)[::-1]
        self.send_response(201)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def http_server(ctx: ssl.SSLContext | None = None) -> Iterator[int]:
    """A stdlib ThreadingHTTPServer (TLS if ``ctx``) on 127.0.0.1; yields its port."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = False
    srv.block_on_close = True
    if ctx is not None:
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    t.start()
    try:
        yield srv.server_address[1]
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(PEER_TIMEOUT)


class NetpollHTTPConnection(http.client.HTTPConnection):
    """http.client over netpoll: only ``connect`` changes."""

    def connect(self) -> None:
        self.sock = netpoll.create_connection((self.host, self.port), self.timeout)


class NetpollHTTPSConnection(http.client.HTTPSConnection):
    """https over netpoll.tls (the context comes from http.client)."""

    def connect(self) -> None:
        sock = netpoll.create_connection((self.host, self.port), self.timeout)
        self.sock = tls.wrap_socket(sock, self._context, server_hostname=self.host)  # type: ignore[attr-defined]


def test_http_client_plain_keepalive(backend: str) -> None:
    with http_server() as port:
        c = NetpollHTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", "/one")
        r = c.getresponse()
        assert (r.status, r.read()) == (200, b"path=/one")
        assert isinstance(c.sock, netpoll.ConnSocket)
        first = c.sock
        c.request("POST", "/two", body=b"abcdef")
        r = c.getresponse()
        assert (r.status, r.read()) == (201, b"fedcba")
        assert c.sock is first  # the same netpoll conn carried both requests
        c.close()


def test_https_client_through_netpoll_tls(backend: str, pki: Certs) -> None:
    with http_server(pki.server_context()) as port:
        c = NetpollHTTPSConnection("localhost", port, timeout=5, context=pki.client_context())
        c.request("GET", "/secure")
        r = c.getresponse()
        assert (r.status, r.read()) == (200, b"path=/secure")
        tconn = c.sock.conn()  # type: ignore[union-attr]
        assert isinstance(tconn, tls.TLSConn)
        assert tconn.connection_state().version in ("TLSv1.2", "TLSv1.3")
        c.close()


def test_urllib_plain_and_tls(backend: str, pki: Certs) -> None:
    class Plain(urllib.request.HTTPHandler):
        def http_open(self, req: Any) -> Any:
            return self.do_open(NetpollHTTPConnection, req)

    contexts = [pki.client_context()]

    class Secure(urllib.request.HTTPSHandler):
        def https_open(self, req: Any) -> Any:
            return self.do_open(NetpollHTTPSConnection, req, context=contexts[0])

    opener = urllib.request.build_opener(Plain, Secure)
    with http_server() as port, opener.open(f"http://127.0.0.1:{port}/u", timeout=5) as resp:
        assert resp.read() == b"path=/u"
    with http_server(pki.server_context()) as port:
        with opener.open(f"https://localhost:{port}/s", timeout=5) as resp:
            assert resp.read() == b"path=/s"
        contexts[0] = ssl.create_default_context()  # does not trust the test CA
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            opener.open(f"https://localhost:{port}/s", timeout=5)


def test_stdlib_wrap_socket_takes_the_descriptor_over(backend: str, pki: Certs) -> None:
    """ssl.SSLContext.wrap_socket(adapter): stdlib TLS on the fd netpoll let go of."""
    with tls.listen("tcp", "127.0.0.1:0", pki.server_context()) as ln:

        def serve() -> bytes:
            with ln.accept() as conn:
                conn.set_deadline(time.time() + PEER_TIMEOUT)
                data = conn.read(5)
                conn.write(data.upper())
                return data

        t = start(serve)
        adapter = netpoll.create_connection(("127.0.0.1", ln.addr().port), timeout=5)
        fd = adapter.fileno()
        with pki.client_context().wrap_socket(adapter, server_hostname="localhost") as s:  # type: ignore[arg-type]
            assert s.fileno() == fd and adapter.fileno() == -1
            s.sendall(b"hello")
            assert s.recv(5) == b"HELLO"
        assert t.join_result() == b"hello"


def test_asyncio_streams_on_an_adapter(backend: str) -> None:
    """asyncio drives the adapter in non-blocking mode (its own selector on the fd)."""
    with netpoll.listen("tcp", "127.0.0.1:0") as ln:

        def serve() -> None:
            with ln.accept() as conn:
                conn.set_deadline(time.time() + PEER_TIMEOUT)
                conn.write(conn.read(4)[::-1])

        t = start(serve)
        sock = netpoll.dial("tcp", str(ln.addr()), timeout=5).as_socket()

        async def main() -> bytes:
            reader, writer = await asyncio.open_connection(sock=sock)  # type: ignore[arg-type]
            writer.write(b"ping")
            data = await asyncio.wait_for(reader.readexactly(4), PEER_TIMEOUT)
            writer.close()
            await writer.wait_closed()
            return data

        assert asyncio.run(main()) == b"gnip"
        t.join_result()
        assert sock.fileno() == -1


def test_timeouts_map_to_deadlines(backend: str) -> None:
    with netpoll.listen("tcp", "127.0.0.1:0") as ln:
        done = threading.Event()
        finished = threading.Event()

        def serve() -> None:
            with ln.accept() as conn:
                done.wait(PEER_TIMEOUT)
                conn.write(b"late")
                finished.wait(PEER_TIMEOUT)

        t = start(serve)
        s = netpoll.create_connection(str(ln.addr()), timeout=5)
        assert s.gettimeout() == 5.0
        s.settimeout(0.2)
        t0 = time.monotonic()
        with pytest.raises(socket.timeout) as info:
            s.recv(10)
        assert 0.15 < time.monotonic() - t0 < 5.0
        assert isinstance(info.value, netpoll.OpError)
        s.settimeout(None)  # clears the deadline: the next recv blocks until data
        done.set()
        assert s.recv(4) == b"late"
        s.setblocking(False)
        assert not s.getblocking()
        with pytest.raises(BlockingIOError):
            s.recv(1)
        finished.set()
        s.close()
        t.join_result()


def test_makefile_options_addresses_shutdown(backend: str) -> None:
    with netpoll.listen("tcp", "127.0.0.1:0") as ln:

        def serve() -> bytes:
            with ln.accept() as conn:
                conn.write(b"line one\nline two\n")
                return conn.readall()

        t = start(serve)
        s = netpoll.dial("tcp", str(ln.addr()), timeout=5).as_socket()
        assert (s.family, s.type) == (socket.AF_INET, socket.SOCK_STREAM)
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE) == socket.SOCK_STREAM
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
        assert s.getpeername() == ("127.0.0.1", ln.addr().port)
        assert s.getsockname()[0] == "127.0.0.1"
        f = s.makefile("rb")
        assert f.readline() == b"line one\n"
        s.sendall(b"bye")
        s.shutdown(socket.SHUT_WR)
        s.close()  # the file still holds the conn open, as with a real socket
        assert f.readline() == b"line two\n"
        f.close()
        assert t.join_result() == b"bye"
        with pytest.raises(OSError, match="Bad file descriptor"):
            s.recv(1)


def test_create_connection_errors() -> None:
    with netpoll.listen("tcp", "127.0.0.1:0") as ln:
        port = ln.addr().port
    with pytest.raises(ConnectionRefusedError, match="connect: connection refused"):
        netpoll.create_connection(("127.0.0.1", port), timeout=2)
