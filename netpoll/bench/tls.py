"""``netpoll bench --tls``: netpoll.tls next to a blocking stdlib ``ssl.SSLSocket``.

Here the *client* is under test.  One peer process (stdlib, blocking
sockets, a thread per connection, pinned to one CPU) serves TLS and plain
TCP on loopback; this process (pinned to the other CPU) runs, in turn and
interleaved over rounds, the same client code on:

* ``netpoll.tls`` (:class:`netpoll.tls.TLSConn` over a TCPConn, on its
  socket path: OpenSSL does the socket I/O) and a blocking stdlib
  :class:`ssl.SSLSocket`, both with the peer's certificate verified, same
  context, same cipher (whatever TLS 1.3 picks);
* for bulk also ``netpoll.tls`` held on its memory-BIO path
  (``io_path="memory"``, what a conn watched by a plugin uses);
* for ping-pong also plain netpoll and plain blocking sockets, so the cost
  of TLS is shown beside the cost without it.

Scenarios: ``tls-bulk send`` (the client encrypts ``--bulk`` bytes, the peer
decrypts and drops them), ``tls-bulk recv`` (the peer encrypts, the client
decrypts), and ``ping-pong`` (C=1, ``--size`` bytes, ``--seconds`` long).
The table gives medians over rounds and netpoll / stdlib.  The certificate is
a fixed test certificate shipped in this directory (``tls_bench_*.pem``),
issued for localhost: it protects nothing.

The peer is ``python -m netpoll.bench.tls --peer``; it prints its two ports
and serves until its stdin closes.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import netpoll
from netpoll import tls
from netpoll.bench.procstat import pin_to_cpu, pinning_plan

HERE = Path(__file__).resolve().parent
SERVER_PEM = HERE / "tls_bench_server.pem"
CA_PEM = HERE / "tls_bench_ca.pem"

#: Buffer for bulk reads and writes on both sides.
CHUNK = 256 * 1024

_HDR = struct.Struct("!cQ")  # command, byte count


# -- the peer (stdlib, blocking) ----------------------------------------------------------


def _recv_exact(s: Any, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise EOFError("peer: EOF")
        out += chunk
    return bytes(out)


def _serve(s: Any) -> None:
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    try:
        while True:
            cmd, n = _HDR.unpack(_recv_exact(s, _HDR.size))
            if cmd == b"S":  # sink n bytes, then ack
                left = n
                while left:
                    k = s.recv_into(view[: min(left, CHUNK)])
                    if not k:
                        return
                    left -= k
                s.sendall(b"k")
            elif cmd == b"R":  # source n bytes
                left = n
                while left:
                    k = min(left, CHUNK)
                    s.sendall(view[:k])
                    left -= k
            elif cmd == b"E":  # echo messages of n bytes until EOF
                while True:
                    try:
                        msg = _recv_exact(s, n)
                    except EOFError:
                        return
                    s.sendall(msg)
            else:
                return
    except (OSError, EOFError):
        return
    finally:
        s.close()


def run_peer() -> int:
    """The peer process: a TLS and a plain listener, a thread per connection."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(SERVER_PEM))
    listeners = []
    for _ in range(2):
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", 0))
        ls.listen(64)
        listeners.append(ls)
    print(
        json.dumps({"tls": listeners[0].getsockname()[1], "plain": listeners[1].getsockname()[1]})
    )
    sys.stdout.flush()

    def accept_loop(ls: socket.socket, secure: bool) -> None:
        while True:
            try:
                c, _ = ls.accept()
            except OSError:
                return
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                s: Any = ctx.wrap_socket(c, server_side=True) if secure else c
            except (OSError, ssl.SSLError):
                c.close()
                continue
            threading.Thread(target=_serve, args=(s,), daemon=True).start()

    for ls, secure in ((listeners[0], True), (listeners[1], False)):
        threading.Thread(target=accept_loop, args=(ls, secure), daemon=True).start()
    sys.stdin.read()  # until the parent closes our stdin
    return 0


# -- the clients under test ---------------------------------------------------------------


def _client_context() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(CA_PEM))


class _Client:
    """``write(b)``, ``readinto(b)``, ``close()`` over one of the four kinds."""

    def __init__(self, kind: str, ports: dict[str, int]) -> None:
        self.kind = kind
        secure = "tls" in kind
        port = ports["tls" if secure else "plain"]
        self.write: Callable[[Any], Any]
        self.readinto: Callable[[Any], int]
        if kind.startswith("netpoll"):
            conn: Any = netpoll.dial("tcp", f"127.0.0.1:{port}", timeout=10)
            if secure:
                io_path = "memory" if kind.endswith("-memory") else None
                conn = tls.client(conn, _client_context(), "localhost", io_path=io_path)
                conn.handshake()
            self.write, self.readinto, self.close = conn.write, conn.readinto, conn.close
        else:
            sock: Any = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(None)
            if secure:
                sock = _client_context().wrap_socket(sock, server_hostname="localhost")
            self.write, self.readinto, self.close = sock.sendall, sock.recv_into, sock.close

    def read_exact(self, view: memoryview) -> None:
        got = 0
        while got < view.nbytes:
            n = self.readinto(view[got:])
            if not n:
                raise EOFError(f"{self.kind}: EOF from the peer")
            got += n


def bulk(kind: str, ports: dict[str, int], direction: str, total: int) -> float:
    """MiB/s for ``total`` bytes sent to (``send``) or received from (``recv``) the peer."""
    c = _Client(kind, ports)
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    try:
        t0 = time.perf_counter()
        if direction == "send":
            c.write(_HDR.pack(b"S", total))
            left = total
            while left:
                k = min(left, CHUNK)
                c.write(view[:k])
                left -= k
            c.read_exact(view[:1])
        else:
            c.write(_HDR.pack(b"R", total))
            left = total
            while left:
                n = c.readinto(view[: min(left, CHUNK)])
                if not n:
                    raise EOFError(f"{kind}: EOF after {total - left} bytes")
                left -= n
        return total / (time.perf_counter() - t0) / (1 << 20)
    finally:
        c.close()


def pingpong(kind: str, ports: dict[str, int], size: int, seconds: float) -> float:
    """Round trips per second of ``size``-byte messages on one connection."""
    c = _Client(kind, ports)
    msg = b"x" * size
    buf = memoryview(bytearray(size))
    try:
        c.write(_HDR.pack(b"E", size))
        for _ in range(200):  # warm-up
            c.write(msg)
            c.read_exact(buf)
        n = 0
        t0 = time.perf_counter()
        end = t0 + seconds
        while True:
            for _ in range(100):
                c.write(msg)
                c.read_exact(buf)
            n += 100
            now = time.perf_counter()
            if now >= end:
                return n / (now - t0)
    finally:
        c.close()


# -- the run ---------------------------------------------------------------------------------


def run(
    *,
    bulk_bytes: int,
    size: int,
    seconds: float,
    rounds: int,
    pin: bool = True,
    say: Callable[[str], None] = lambda s: None,
) -> dict[str, Any]:
    """Run every TLS scenario ``rounds`` times, interleaved; returns the results as JSON data."""
    pins = pinning_plan() if pin else None
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(HERE.parent.parent), *filter(None, [env.get("PYTHONPATH")])]
    )
    peer = subprocess.Popen(
        [sys.executable, "-m", "netpoll.bench.tls", "--peer"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    old_affinity = os.sched_getaffinity(0) if pins and hasattr(os, "sched_getaffinity") else None
    try:
        assert peer.stdout is not None
        line = peer.stdout.readline()
        if not line:
            raise RuntimeError("the TLS bench peer did not start")
        ports = json.loads(line)
        if pins is not None:
            try:
                os.sched_setaffinity(peer.pid, {pins[0]})
            except OSError:
                pass
            pin_to_cpu(pins[1])
        plan: list[tuple[str, str, Callable[[], float]]] = []
        for direction in ("send", "recv"):
            for kind in ("netpoll-tls", "netpoll-tls-memory", "stdlib-tls"):
                plan.append(
                    (
                        f"tls-bulk {direction}",
                        kind,
                        partial(bulk, kind, ports, direction, bulk_bytes),
                    )
                )
        for kind in ("netpoll-tls", "stdlib-tls", "netpoll-plain", "stdlib-plain"):
            plan.append(("ping-pong", kind, partial(pingpong, kind, ports, size, seconds)))
        values: dict[tuple[str, str], list[float]] = {}
        for rnd in range(1, rounds + 1):
            for scenario, kind, fn in plan:
                v = fn()
                values.setdefault((scenario, kind), []).append(v)
                unit = "MiB/s" if scenario.startswith("tls-bulk") else "msg/s"
                say(f"round {rnd}/{rounds}  {scenario:<14} {kind:<14} {v:>12,.1f} {unit}")
    finally:
        if peer.stdin is not None:
            peer.stdin.close()
        try:
            peer.wait(5)
        except subprocess.TimeoutExpired:
            peer.kill()
            peer.wait()
        if peer.stdout is not None:
            peer.stdout.close()
        if old_affinity is not None:
            try:
                os.sched_setaffinity(0, old_affinity)
            except OSError:
                pass
    med = {k: statistics.median(v) for k, v in values.items()}
    return {
        "meta": {
            "bulk_bytes": bulk_bytes,
            "size": size,
            "seconds": seconds,
            "rounds": rounds,
            "pinned": pins,
            "backend": netpoll.backend_name(),
            "openssl": ssl.OPENSSL_VERSION,
            "python": sys.version.split()[0],
        },
        "values": [
            {"scenario": s, "kind": k, "values": v, "median": med[(s, k)]}
            for (s, k), v in values.items()
        ],
    }


def format_table(doc: dict[str, Any]) -> str:
    """The results as a text table (medians; netpoll / stdlib ratios)."""
    med = {(r["scenario"], r["kind"]): r["median"] for r in doc["values"]}
    m = doc["meta"]
    size_mib = m["bulk_bytes"] / (1 << 20)
    lines = [
        f"TLS: netpoll.tls vs blocking stdlib ssl.SSLSocket (client under test), "
        f"{m['backend']} backend, {m['openssl']}, Python {m['python']}, "
        f"median of {m['rounds']} round(s)",
        f"{'scenario':<28} {'netpoll':>12} {'stdlib':>12} {'netpoll/stdlib':>15}",
    ]
    for d in ("send", "recv"):
        a, b = med[(f"tls-bulk {d}", "netpoll-tls")], med[(f"tls-bulk {d}", "stdlib-tls")]
        label = f"tls bulk {d} {size_mib:g} MiB"
        lines.append(f"{label:<28} {a:>8,.0f} MiB/s {b:>6,.0f} MiB/s {a / b:>14.2f}x")
        m_ = med.get((f"tls-bulk {d}", "netpoll-tls-memory"))
        if m_ is not None:
            label = f"  memory-BIO path {d}"
            lines.append(f"{label:<28} {m_:>8,.0f} MiB/s {b:>6,.0f} MiB/s {m_ / b:>14.2f}x")
    for kind in ("tls", "plain"):
        a, b = med[("ping-pong", f"netpoll-{kind}")], med[("ping-pong", f"stdlib-{kind}")]
        label = f"ping-pong {m['size']} B, {kind}"
        lines.append(f"{label:<28} {a:>8,.0f} msg/s {b:>6,.0f} msg/s {a / b:>14.2f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m netpoll.bench.tls [--peer]``: the peer, or a quick stand-alone run."""
    p = argparse.ArgumentParser(prog="python -m netpoll.bench.tls")
    p.add_argument("--peer", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--bulk", type=int, default=256 << 20)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--rounds", type=int, default=1)
    args = p.parse_args(argv)
    if args.peer:
        return run_peer()
    doc = run(
        bulk_bytes=args.bulk,
        size=args.size,
        seconds=args.seconds,
        rounds=args.rounds,
        say=lambda s: print(s, file=sys.stderr),
    )
    print(format_table(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
