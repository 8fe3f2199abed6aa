"""Micro-benchmark: the cost of the syscall table on the non-blocking read path.

Go's syscall hooks are plain function variables; ours must be nearly as free
when no plugin wraps them.  This measures, on a socketpair with data always
available (so every call is a real, successful ``recv``):

* ``direct``: ``sock.recv_into(buf)``, the floor;
* ``table``: ``runtime.table.read(sock, buf)``, what FD calls;
* ``fd``: ``FD.readinto(buf)``, the whole poll-layer read (fdMutex, prepare);
* ``wrapped``: ``table.read`` with one pass-through pluggy wrapper registered.

Run: ``python benchmarks/dispatch_bench.py [--calls N] [--repeat R] [--json]``.
Reports the best of R runs per variant, in ns/call, and the ratios to direct.
"""

from __future__ import annotations

import argparse
import json
import socket
import time
from collections.abc import Callable, Generator
from typing import Any

from netpoll.core.fd import FD
from netpoll.core.hookspecs import hookimpl
from netpoll.core.runtime import runtime


class PassThrough:
    """One wrapper that changes nothing: the price of being watched."""

    @hookimpl(wrapper=True)
    def read(self, sock: Any, buf: Any) -> Generator[None, int, int]:
        """Let the read through unchanged."""
        return (yield)


def _time(fn: Callable[[], Any], calls: int, repeat: int, refill: Callable[[int], None]) -> float:
    best = float("inf")
    for _ in range(repeat):
        refill(calls)
        start = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter_ns() - start) / calls)
    return best


def main() -> None:
    """Run the four variants and print ns/call and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    a, b = socket.socketpair()
    a.setblocking(False)
    # Keep a large backlog queued so every 1-byte recv succeeds at once.
    b.setblocking(False)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    buf = bytearray(1)
    fd = FD(a)
    table = runtime.table

    def refill(calls: int) -> None:
        # Drain what is left, then queue exactly one byte per timed call.
        try:
            while a.recv(1 << 16):
                pass
        except BlockingIOError:
            pass
        queued = 0
        while queued < calls:
            queued += b.send(b"x" * min(65536, calls - queued))

    results: dict[str, float] = {}
    variants: list[tuple[str, Callable[[], Any]]] = [
        ("direct", lambda: a.recv_into(buf)),
        ("table", lambda: table.read(a, buf)),
        ("fd", lambda: fd.readinto(buf)),
    ]
    for name, fn in variants:
        results[name] = _time(fn, args.calls, args.repeat, refill)
    plugin = PassThrough()
    runtime.pm.register(plugin)
    try:
        results["wrapped"] = _time(lambda: table.read(a, buf), args.calls, args.repeat, refill)
    finally:
        runtime.pm.unregister(plugin)
    fd.close()
    b.close()

    base = results["direct"]
    if args.json:
        print(json.dumps({k: {"ns": v, "ratio": v / base} for k, v in results.items()}))
        return
    print(f"{'variant':<10}{'ns/call':>10}{'x direct':>10}")
    for name, ns in results.items():
        print(f"{name:<10}{ns:>10.0f}{ns / base:>10.2f}")


if __name__ == "__main__":
    main()
