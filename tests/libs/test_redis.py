"""redis-py against a real redis-server, on goroutines sharing one M.

Each scenario runs with ``netpoll.patch.library("redis")`` in this process
and with ``netpoll.patch.all()`` in a child (see :mod:`tests.libs.harness`):

* 50 goroutines make concurrent calls through one client (its connection
  pool) with correct results, all of them inside a call at once;
* a sibling goroutine ticking every 10 ms keeps ticking while workers wait
  on ``BLPOP`` calls the server answers after 100 ms;
* netpoll faults, with no proxy: refused connects are retried by redis-py's
  ``Retry`` (and surface as ``redis.ConnectionError`` without one), a
  connection reset mid-reply is retried on a fresh connection (or surfaces
  as ``ConnectionError``), and a read whose wakeup never comes ends at
  ``socket_timeout`` as ``redis.TimeoutError``.
"""

from __future__ import annotations

import errno
import time
from typing import Any

import pytest

import netpoll
from netpoll.testing import Faults
from tests.helpers.servers import RedisServer
from tests.libs import harness
from tests.libs.conftest import MODES

redis = pytest.importorskip("redis")
from redis.backoff import NoBackoff  # noqa: E402
from redis.retry import Retry  # noqa: E402

#: What ``netpoll.patch.library`` is called with in the ``library`` mode.
PATCH_LIBRARIES = ["redis"]
N = 50
BIG = b"0123456789abcdef" * 12_500  # 200 kB: a reply read over many recv calls


def client(srv: RedisServer, retries: int = 0, **kw: Any) -> Any:
    """A client with an explicit retry policy (redis-py 6+ retries by default)."""
    kw.setdefault("socket_timeout", 10.0)
    return redis.Redis(host=srv.host, port=srv.port, retry=Retry(NoBackoff(), retries), **kw)


def concurrent(srv: RedisServer) -> dict[str, Any]:
    """N goroutines: SET, a 50 ms BLPOP, GET, INCR through one client."""
    c = client(srv)
    try:
        c.delete("np:ctr")

        def call(i: int) -> bool:
            value = f"{i}:".encode() * (1 + i * 37 % 400)
            c.set(f"np:k:{i}", value)
            c.blpop([f"np:empty:{i}"], timeout=0.05)
            c.incr("np:ctr")
            return bool(c.get(f"np:k:{i}") == value)

        ok, peak = harness.concurrently(N, call)
        return {"ok": ok, "peak": peak, "ctr": int(c.get("np:ctr"))}
    finally:
        c.close()


def tick(srv: RedisServer) -> dict[str, Any]:
    """Tick beside workers whose BLPOP the server answers after 100 ms."""
    c = client(srv)
    try:
        return harness.tick_while(lambda i: c.blpop([f"np:tick:{i}"], timeout=harness.SLOW))
    finally:
        c.close()


def fault_refused(srv: RedisServer) -> dict[str, Any]:
    """Two refused connects: retried; always refused, no retries: ConnectionError."""

    def main() -> dict[str, Any]:
        out: dict[str, Any] = {}
        with Faults() as f:
            rule = f.fail("connect", errno.ECONNREFUSED, times=2)
            c = client(srv, retries=3)
            try:
                out["ping"] = c.ping()
            finally:
                c.close()
            out["fired"] = rule.fired
            f.fail("connect", errno.ECONNREFUSED)
            c = client(srv, retries=0)
            try:
                c.ping()
            except redis.ConnectionError as exc:
                out["error"] = type(exc).__name__
                out["message"] = str(exc)
            finally:
                c.close()
        return out

    return netpoll.run(main)


def fault_reset(srv: RedisServer) -> dict[str, Any]:
    """A reset 50 kB into a 200 kB reply: retried on a new connection, or ConnectionError."""
    setup = client(srv)
    try:
        setup.set("np:big", BIG)
    finally:
        setup.close()

    def main() -> dict[str, Any]:
        out: dict[str, Any] = {}
        with Faults() as f:
            rule = f.reset_after(50_000, "read", times=1)
            c = client(srv, retries=2)
            try:
                out["retried_ok"] = c.get("np:big") == BIG
            finally:
                c.close()
            out["reset_conns"] = rule.connections
            f.reset_after(50_000, "read", times=1)
            c = client(srv, retries=0)
            try:
                c.get("np:big")
            except redis.ConnectionError as exc:
                out["error"] = type(exc).__name__
                out["message"] = str(exc)
            finally:
                c.close()
        return out

    return netpoll.run(main)


def fault_stall(srv: RedisServer) -> dict[str, Any]:
    """A read whose readiness never comes (lost wakeup): redis.TimeoutError at socket_timeout."""

    def main() -> dict[str, Any]:
        out: dict[str, Any] = {}
        c = client(srv, socket_timeout=0.2)
        try:
            c.ping()  # connected before the fault
            with Faults() as f:
                f.eagain("read", wake=False)
                start = time.monotonic()
                try:
                    c.get("np:k:1")
                except redis.TimeoutError as exc:
                    out["error"] = type(exc).__name__
                    out["message"] = str(exc)
                out["elapsed"] = time.monotonic() - start
            out["after"] = c.ping()  # redis-py reconnects after the timeout
        finally:
            c.close()
        return out

    return netpoll.run(main)


def control(srv: RedisServer) -> dict[str, Any]:
    """Unpatched (a child with no patch): 3 goroutines' BLPOPs, and one tick window."""
    c = client(srv)
    try:
        _, peak = harness.concurrently(3, lambda i: c.blpop([f"np:c:{i}"], timeout=0.05))
        late = harness.tick_once(lambda i: c.blpop([f"np:t:{i}"], timeout=harness.SLOW))
        return {"peak": peak, "late": late}
    finally:
        c.close()


#: What the child of the control test runs, with no patch at all.
CONTROLS = {"control": control}

SCENARIOS = {
    "concurrent": concurrent,
    "tick": tick,
    "fault_refused": fault_refused,
    "fault_reset": fault_reset,
    "fault_stall": fault_stall,
}


@pytest.mark.parametrize("mode", MODES)
def test_concurrent_calls(mode: str, scenario: Any, redis_srv: RedisServer) -> None:
    r = scenario(mode, concurrent, redis_srv)
    assert r["ok"] == [True] * N
    assert r["ctr"] == N
    # Every goroutine got into a call while the others waited for the server.
    assert r["peak"] >= N // 2, r["peak"]


@pytest.mark.parametrize("mode", MODES)
def test_sibling_goroutine_keeps_ticking(mode: str, scenario: Any, redis_srv: RedisServer) -> None:
    harness.check_ticks(scenario(mode, tick, redis_srv))


@pytest.mark.parametrize("mode", MODES)
def test_refused_connect_is_retried_or_connection_error(
    mode: str, scenario: Any, redis_srv: RedisServer
) -> None:
    r = scenario(mode, fault_refused, redis_srv)
    assert r["ping"] is True and r["fired"] == 2
    assert r["error"] == "ConnectionError" and "refused" in r["message"].lower(), r


@pytest.mark.parametrize("mode", MODES)
def test_reset_mid_reply_is_retried_or_connection_error(
    mode: str, scenario: Any, redis_srv: RedisServer
) -> None:
    r = scenario(mode, fault_reset, redis_srv)
    assert r["retried_ok"] is True and r["reset_conns"] == 1
    assert r["error"] == "ConnectionError" and "reset" in r["message"].lower(), r


@pytest.mark.parametrize("mode", MODES)
def test_stalled_read_times_out(mode: str, scenario: Any, redis_srv: RedisServer) -> None:
    r = scenario(mode, fault_stall, redis_srv)
    assert r["error"] == "TimeoutError", r
    assert 0.15 <= r["elapsed"] < 5.0, r
    assert r["after"] is True
