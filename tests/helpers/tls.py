"""Certificates (trustme) and real TLS peers (openssl, stdlib ssl) for the TLS tests.

``Certs`` writes a CA and a "localhost"/127.0.0.1 server certificate into a
temp dir (PEM files for openssl and curl) and builds contexts from them.
``OpenSSL`` runs ``openssl s_server`` / ``s_client`` as subprocesses with
bounded timeouts; each is killed and reaped however the test ends.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

trustme = pytest.importorskip("trustme")

OPENSSL = shutil.which("openssl")
CURL = shutil.which("curl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl binary not installed")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl binary not installed")

PEER_TIMEOUT = 10.0


class Certs:
    """A test CA and certificates issued by it, as files and contexts."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.ca = trustme.CA()
        self.server = self.ca.issue_cert("localhost", "127.0.0.1")
        self.ca_pem = directory / "ca.pem"
        self.server_pem = directory / "server.pem"  # key + chain, for openssl/http.server
        self.ca.cert_pem.write_to_path(str(self.ca_pem))
        self.server.private_key_and_cert_chain_pem.write_to_path(str(self.server_pem))

    def server_context(self, alpn: list[str] | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server.configure_cert(ctx)
        if alpn:
            ctx.set_alpn_protocols(alpn)
        return ctx

    def client_context(self, alpn: list[str] | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        if alpn:
            ctx.set_alpn_protocols(alpn)
        return ctx

    def expired_server_context(self) -> ssl.SSLContext:
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = self.ca.issue_cert(
            "localhost",
            "127.0.0.1",
            not_before=now - datetime.timedelta(days=30),
            not_after=now - datetime.timedelta(days=1),
        )
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(ctx)
        return ctx


@contextlib.contextmanager
def certs() -> Iterator[Certs]:
    with tempfile.TemporaryDirectory(prefix="np-tls-") as d:
        yield Certs(Path(d))


@contextlib.contextmanager
def spawn(args: list[str], **kw: Any) -> Iterator[subprocess.Popen[bytes]]:
    """A subprocess killed and reaped at the end, whatever happens."""
    proc = subprocess.Popen(args, **kw)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(PEER_TIMEOUT)
        for f in (proc.stdin, proc.stdout, proc.stderr):
            if f is not None:
                f.close()


@contextlib.contextmanager
def openssl_server(c: Certs, *extra: str) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """``openssl s_server`` on 127.0.0.1 (a free port); yields (port, process)."""
    assert OPENSSL is not None
    args = [OPENSSL, "s_server", "-accept", "127.0.0.1:0", "-cert", str(c.server_pem)]
    args += ["-naccept", "1", *extra]
    with spawn(
        args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    ) as proc:
        assert proc.stdout is not None
        port = 0
        while True:
            line = proc.stdout.readline()
            if not line:
                raise AssertionError("openssl s_server exited before listening")
            if line.startswith(b"ACCEPT"):
                port = int(line.rsplit(b":", 1)[1])
                break
        yield port, proc


class Thread(threading.Thread):
    """A thread that keeps its target's result or exception; join() re-raises."""

    def __init__(self, target: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self._fn = target
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self._fn()
        except BaseException as exc:
            self.error = exc

    def join_result(self, timeout: float = PEER_TIMEOUT) -> Any:
        self.join(timeout)
        assert not self.is_alive(), "thread did not finish"
        if self.error is not None:
            raise self.error
        return self.result


def start(fn: Callable[[], Any]) -> Thread:
    t = Thread(fn)
    t.start()
    return t


def stdlib_tls_server(
    ctx: ssl.SSLContext, handler: Callable[[ssl.SSLSocket], Any]
) -> tuple[int, Thread, socket.socket]:
    """A one-connection blocking stdlib TLS server thread: (port, thread, listening socket)."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen()
    ls.settimeout(PEER_TIMEOUT)

    def serve() -> Any:
        try:
            raw, _ = ls.accept()
        finally:
            ls.close()
        raw.settimeout(PEER_TIMEOUT)
        with ctx.wrap_socket(raw, server_side=True) as s:
            return handler(s)

    return ls.getsockname()[1], start(serve), ls


__all__ = [
    "CURL",
    "OPENSSL",
    "PEER_TIMEOUT",
    "Certs",
    "Thread",
    "certs",
    "needs_curl",
    "needs_openssl",
    "openssl_server",
    "spawn",
    "start",
    "stdlib_tls_server",
]

_ = os
