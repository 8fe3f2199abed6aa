"""Many idle connections held by a server all answer afterwards (issue: 10k idle conns).

The full-size check (10,000 connections, a thread or a goroutine per
connection) is the ``idle`` scenario of ``netpoll bench --full``, which
echoes once on every idle connection afterwards and reports how many
answered; this test keeps the property at a size a test run affords, for
both kinds of G, on every backend.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest

import netpoll

#: Idle connections per test: enough that every conn is parked at once.
IDLE = 300


def _serve(ln: Any, kind: str, done: threading.Event) -> None:
    def handle(conn: Any) -> None:
        with conn:
            buf = bytearray(64)
            while n := conn.readinto(buf):
                conn.write(memoryview(buf)[:n])

    while not done.is_set():
        try:
            conn = ln.accept()
        except netpoll.ErrClosed:
            return
        if kind == "goroutine":
            netpoll.go(handle, conn)
        else:
            threading.Thread(target=handle, args=(conn,), daemon=True).start()


@pytest.mark.parametrize("kind", ["thread", "goroutine"])
def test_idle_connections_all_answer_afterwards(backend: str, kind: str) -> None:
    ln = netpoll.listen("tcp", "127.0.0.1:0")
    done = threading.Event()
    if kind == "goroutine":
        acceptor: Any = netpoll.go(_serve, ln, kind, done)
    else:
        acceptor = threading.Thread(target=_serve, args=(ln, kind, done))
        acceptor.start()
    addr = ln.addr()
    assert isinstance(addr, netpoll.TCPAddr)
    clients: list[socket.socket] = []
    try:
        for _ in range(IDLE):
            clients.append(socket.create_connection(("127.0.0.1", addr.port), timeout=10))
        time.sleep(0.3)  # every handler parks in its read
        slowest = 0.0
        for i, c in enumerate(clients):
            t0 = time.monotonic()
            c.sendall(b"ping")
            assert c.recv(4) == b"ping", f"connection {i} did not answer"
            slowest = max(slowest, time.monotonic() - t0)
        # Each answers at once, not after a poller tick or a scan of the others.
        assert slowest < 2.0, f"slowest echo {slowest:.3f} s"
    finally:
        for c in clients:
            c.close()
        done.set()
        ln.close()
        acceptor.join(10)
    # The autouse leak check then sees every handler gone: each saw EOF and closed.
