"""psycopg 3 against a real PostgreSQL, on goroutines sharing one M.

psycopg does its I/O in libpq (C) and waits between libpq calls in
``psycopg.waiting``; :mod:`netpoll.green.psycopg_support` makes those waits
park on the connection's pollDesc (``netpoll.patch.library("psycopg")`` and
``netpoll.patch.all()`` install it).  Each scenario runs with the per-library
patch in this process and with the global patch in a child
(see :mod:`tests.libs.harness`):

* 10 goroutines, a connection each, run queries the server answers after
  50 ms, all at once, with correct results; 5 more share one connection
  (psycopg serialises them on the connection's lock, which must park);
* a sibling goroutine ticking every 10 ms keeps ticking while workers wait
  on ``pg_sleep(0.1)``;
* faults.  netpoll's syscall hooks never see libpq's ``connect``/``recv``/
  ``send``, so syscall-level :class:`~netpoll.testing.Faults` cannot reach
  psycopg; its waits go through the poller, where a fault can drop every
  readiness event (lost wakeups): psycopg's own 100 ms re-check recovers and
  the results stay right.  The other failures are real: a backend terminated
  mid-query and a refused connect surface as ``psycopg.OperationalError``.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

import netpoll
from netpoll.testing import Switch
from tests.helpers.servers import PostgresServer, free_port
from tests.libs import harness
from tests.libs.conftest import MODES

psycopg = pytest.importorskip("psycopg")

#: What ``netpoll.patch.library`` is called with in the ``library`` mode.
PATCH_LIBRARIES = ["psycopg"]
N = 10
SHARED = 5


def concurrent(srv: PostgresServer) -> dict[str, Any]:
    """N goroutines with a connection each, SHARED more on one shared connection."""
    with psycopg.connect(srv.dsn, autocommit=True) as setup:
        setup.execute("DROP TABLE IF EXISTS np_items")
        setup.execute("CREATE UNLOGGED TABLE np_items (i int PRIMARY KEY, doubled int)")
        shared = psycopg.connect(srv.dsn, autocommit=True)
        try:

            def call(i: int) -> bool:
                if i >= N:  # the shared connection: its lock serialises these
                    row = shared.execute("SELECT pg_sleep(0.02), %s::int", (i,)).fetchone()
                    return row is not None and row[1] == i
                with psycopg.connect(srv.dsn, autocommit=True) as c:
                    c.execute("SELECT pg_sleep(0.05)")
                    c.execute("INSERT INTO np_items VALUES (%s, %s * 2)", (i, i))
                    row = c.execute("SELECT doubled FROM np_items WHERE i = %s", (i,)).fetchone()
                    return row is not None and row[0] == 2 * i

            ok, peak = harness.concurrently(N + SHARED, call)
        finally:
            shared.close()
        total = setup.execute("SELECT count(*), sum(doubled) FROM np_items").fetchone()
    return {"ok": ok, "peak": peak, "rows": list(total) if total else None}


def tick(srv: PostgresServer) -> dict[str, Any]:
    """Tick beside workers (a connection each) waiting on pg_sleep(0.1)."""
    conns: dict[int, Any] = {}

    def call(i: int) -> None:
        c = conns.get(i)
        if c is None:
            c = conns[i] = psycopg.connect(srv.dsn, autocommit=True)
        c.execute("SELECT pg_sleep(%s)", (harness.SLOW,))

    try:
        return harness.tick_while(call)
    finally:
        for c in conns.values():
            c.close()


def fault_lost_wakeups(srv: PostgresServer) -> dict[str, Any]:
    """The poller drops every readiness event: queries still finish right (psycopg re-checks)."""
    dropped = 0

    def drop_events(_st: Any) -> Any:
        def after(st: Any) -> None:
            nonlocal dropped
            if st.error is None and st.result:
                dropped += len(st.result) if isinstance(st.result, list) else 1
                st.result = [] if isinstance(st.result, list) else 0

        return after

    def main() -> dict[str, Any]:
        with psycopg.connect(srv.dsn, autocommit=True) as c, Switch() as sw:
            sw.set("netpoll", drop_events)  # an M's poller (goroutines)
            sw.set("netpollwait", drop_events)  # a thread parked in the kernel
            start = time.monotonic()
            rows = [
                c.execute("SELECT pg_sleep(0.03), %s::int + 1", (i,)).fetchone() for i in range(3)
            ]
            elapsed = time.monotonic() - start
        values = [r[1] if r else None for r in rows]
        return {"values": values, "dropped": dropped, "elapsed": elapsed}

    return netpoll.run(main)


def fault_terminated(srv: PostgresServer) -> dict[str, Any]:
    """The server terminates the backend mid-query: psycopg.OperationalError."""

    def main() -> dict[str, Any]:
        out: dict[str, Any] = {}
        victim = psycopg.connect(srv.dsn, autocommit=True)
        pid = victim.info.backend_pid

        def killer() -> None:
            netpoll.sleep(0.1)
            with psycopg.connect(srv.dsn, autocommit=True) as c:
                c.execute("SELECT pg_terminate_backend(%s)", (pid,))

        g = netpoll.go(killer)
        start = time.monotonic()
        try:
            victim.execute("SELECT pg_sleep(10)")
        except psycopg.OperationalError as exc:
            out["error"] = type(exc).__name__
            out["operational"] = True
        finally:
            out["elapsed"] = time.monotonic() - start
            victim.close()
            g.join()
        return out

    return netpoll.run(main)


def fault_refused(srv: PostgresServer) -> dict[str, Any]:
    """A connect to a port where nothing listens: psycopg.OperationalError."""

    def main() -> dict[str, Any]:
        out: dict[str, Any] = {}
        try:
            psycopg.connect(f"host=127.0.0.1 port={free_port()} user=postgres", connect_timeout=5)
        except psycopg.OperationalError as exc:
            out["error"] = type(exc).__name__
            out["message"] = str(exc)
        return out

    return netpoll.run(main)


def control(srv: PostgresServer) -> dict[str, Any]:
    """Unpatched (a child with no patch): 3 goroutines' pg_sleeps, and one tick window."""
    conns: dict[int, Any] = {}

    def call(i: int) -> None:
        c = conns.get(i)
        if c is None:
            c = conns[i] = psycopg.connect(srv.dsn, autocommit=True)
        c.execute("SELECT pg_sleep(%s)", (harness.SLOW,))

    try:
        _, peak = harness.concurrently(3, lambda i: call(i))
        late = harness.tick_once(call)
    finally:
        for c in conns.values():
            c.close()
    return {"peak": peak, "late": late}


#: What the child of the control test runs, with no patch at all.
CONTROLS = {"control": control}

SCENARIOS = {
    "concurrent": concurrent,
    "tick": tick,
    "fault_lost_wakeups": fault_lost_wakeups,
    "fault_terminated": fault_terminated,
    "fault_refused": fault_refused,
}


@pytest.mark.parametrize("mode", MODES)
def test_concurrent_calls(mode: str, scenario: Any, pg_srv: PostgresServer) -> None:
    r = scenario(mode, concurrent, pg_srv)
    assert r["ok"] == [True] * (N + SHARED)
    assert r["rows"] == [N, sum(2 * i for i in range(N))]
    assert r["peak"] >= N // 2, r["peak"]


@pytest.mark.parametrize("mode", MODES)
def test_sibling_goroutine_keeps_ticking(mode: str, scenario: Any, pg_srv: PostgresServer) -> None:
    harness.check_ticks(scenario(mode, tick, pg_srv))


@pytest.mark.parametrize("mode", MODES)
def test_lost_wakeups_are_recovered_by_psycopgs_recheck(
    mode: str, scenario: Any, pg_srv: PostgresServer
) -> None:
    r = scenario(mode, fault_lost_wakeups, pg_srv)
    assert r["values"] == [1, 2, 3], r
    assert r["dropped"] >= 1, r  # the fault did hit psycopg's waits
    assert r["elapsed"] < 5.0, r


@pytest.mark.parametrize("mode", MODES)
def test_backend_terminated_mid_query_is_operational_error(
    mode: str, scenario: Any, pg_srv: PostgresServer
) -> None:
    r = scenario(mode, fault_terminated, pg_srv)
    assert r.get("operational") is True, r
    assert r["elapsed"] < 5.0, r


@pytest.mark.parametrize("mode", MODES)
def test_refused_connect_is_operational_error(
    mode: str, scenario: Any, pg_srv: PostgresServer
) -> None:
    r = scenario(mode, fault_refused, pg_srv)
    assert r.get("error") == "OperationalError" and "refused" in r["message"].lower(), r
