"""A small HTTP + HTTPS server for the library tests, run as a child process.

Run by :func:`tests.helpers.servers.http_servers` as a script
(``python http_server.py CERT_PEM``): it binds 127.0.0.1 on two free ports,
plain HTTP and HTTPS (the PEM holds the key and chain, written by trustme),
prints ``PORTS <http> <https>`` on stdout and serves until stdin closes.

It is stdlib only (``http.server``, a thread per connection, HTTP/1.1 with
keep-alive so client pools reuse connections), and a separate process so its
threads, fds and GIL stay out of the measurements of the test process.

Paths (GET):

``/echo/<text>``
    200 with body ``<text>``.
``/delay/<ms>/<text>``
    sleeps ``ms`` milliseconds, then as ``/echo``: a slow backend, so clients
    park while the server sleeps.
``/bytes/<n>``
    200 with ``n`` bytes of a repeating pattern (``b"0123456789"``), sent in
    small chunks so a client's reads see them over several calls.
"""

from __future__ import annotations

import socket
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PATTERN = b"0123456789"


class Handler(BaseHTTPRequestHandler):
    """The three paths above; anything else is a 404."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the tests read stdout for the ports only."""

    def _send(self, body: bytes, chunk: int = 0) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not chunk:
            self.wfile.write(body)
            return
        for i in range(0, len(body), chunk):
            self.wfile.write(body[i : i + chunk])
            self.wfile.flush()

    def do_GET(self) -> None:
        """Serve one request."""
        parts = self.path.split("/")
        try:
            if len(parts) == 3 and parts[1] == "echo":
                self._send(parts[2].encode())
            elif len(parts) == 4 and parts[1] == "delay":
                time.sleep(int(parts[2]) / 1000.0)
                self._send(parts[3].encode())
            elif len(parts) == 3 and parts[1] == "bytes":
                n = int(parts[2])
                self._send((PATTERN * (n // len(PATTERN) + 1))[:n], chunk=4096)
            else:
                self.send_error(404)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away (the fault tests reset on purpose)


class Server(ThreadingHTTPServer):
    """Threads are daemons: the process exits when stdin closes."""

    daemon_threads = True
    request_queue_size = 256

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet: clients reset and stall on purpose in the fault tests."""


class TLSServer(Server):
    """HTTPS: the handshake runs in the connection's thread, not the accept loop.

    A client that stalls or resets mid-handshake then holds up only its own
    thread (OpenSSL's first read drives the handshake).
    """

    def __init__(self, ctx: ssl.SSLContext) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.ctx = ctx

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept, and wrap without handshaking yet."""
        raw, addr = self.socket.accept()
        return self.ctx.wrap_socket(raw, server_side=True, do_handshake_on_connect=False), addr


def main() -> None:
    """Serve HTTP and HTTPS until stdin is closed."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(sys.argv[1])
    plain = Server(("127.0.0.1", 0), Handler)
    tls = TLSServer(ctx)
    for srv in (plain, tls):
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    print(f"PORTS {plain.server_address[1]} {tls.server_address[1]}", flush=True)
    sys.stdin.read()  # until the parent closes our stdin (or dies)


if __name__ == "__main__":
    main()
