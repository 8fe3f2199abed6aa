"""What every library test measures, for any library: concurrency, ticks, child runs.

The tests of ``tests/libs`` drive real client libraries (redis-py, requests,
urllib3, ``urllib.request``, psycopg, ``smtplib``) against real servers
(:mod:`tests.helpers.servers`) from goroutines that share one M, with the
library patched one of two ways:

``library``
    :func:`netpoll.patch.library` for that library only, in the test process
    (it leaves the rest of the process alone, so it can stay applied).
``all``
    :func:`netpoll.patch.all` in a child process (:func:`run_child`): global
    patching must not leak into the test process.  The child patches first,
    then imports the test module (so the library is imported after the
    patch, as gevent's rules require), runs every scenario the module lists
    in ``SCENARIOS`` and reports each one's result or traceback as JSON.

A scenario is a plain function ``fn(server) -> JSON value`` that raises on a
wrong result; the test asserts on what it returns, the same way in both
modes.  The shared measurements:

:func:`concurrently`
    ``n`` goroutines on one M (:func:`netpoll.run`) each run ``call(i)``;
    returns their results in order, and how many were inside ``call`` at the
    same time at the peak.  On a blocking library the peak is 1 (a call
    holds the M until it returns); on a patched one every goroutine gets in
    while the others wait for their server.
:func:`tick_while`
    a sibling goroutine ticking every 10 ms (:data:`TICK`) beside ``workers``
    goroutines calling the library; returns how late the latest tick was.
    A blocked M delays a tick by the whole call (the scenarios use calls the
    server answers after 100 ms); a parked one by little more than the CPU
    the other goroutines use between parks.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import netpoll
from tests.helpers import proc, servers

ROOT = Path(__file__).resolve().parents[2]
#: The sibling goroutine's period.
TICK = 0.010
#: The most a tick may be late (beyond its 10 ms) in a passing attempt.
HELD_BOUND = 0.020
#: How long one tick measurement runs.
TICK_WINDOW = 0.3
#: Measurements per tick test: the first within the bound passes.  A blocked
#: M is late by a whole server delay (100 ms) in every attempt; a machine
#: busy with other work (a shared CI box) delays a window now and then, but
#: rarely five in a row.
TICK_ATTEMPTS = 5
#: How long the server takes to answer the "slow" calls of the tick scenarios.
SLOW = 0.100
#: Bound on a child's run (below pytest-timeout's 120 s, so its stacks get reported).
CHILD_TIMEOUT = 60.0


def concurrently(n: int, call: Callable[[int], Any]) -> tuple[list[Any], int]:
    """Run ``call(0) .. call(n-1)`` as ``n`` goroutines on one M; (results, peak in flight).

    The first exception of a goroutine is re-raised once they have all ended.
    """
    results: list[Any] = [None] * n
    errors: list[BaseException] = []
    inside = 0
    peak = 0

    def worker(i: int) -> None:
        nonlocal inside, peak
        inside += 1  # one M: no other goroutine runs between these lines
        peak = max(peak, inside)
        try:
            results[i] = call(i)
        except BaseException as exc:
            errors.append(exc)
        finally:
            inside -= 1

    def main() -> None:
        gs = [netpoll.go(worker, i) for i in range(n)]
        for g in gs:
            g.join()

    netpoll.run(main)
    if errors:
        raise errors[0]
    return results, peak


def tick_while(call: Callable[[int], Any], workers: int = 4) -> dict[str, Any]:
    """Tick every :data:`TICK` beside ``workers`` goroutines looping ``call(i)``.

    Up to :data:`TICK_ATTEMPTS` windows of :data:`TICK_WINDOW` seconds;
    stops at the first whose latest tick was at most :data:`HELD_BOUND` late.
    Returns ``{"late": [max lateness per attempt], "calls": [...], "ticks": [...]}``.
    """
    out: dict[str, list[Any]] = {"late": [], "calls": [], "ticks": []}
    for _ in range(TICK_ATTEMPTS):
        late, calls, ticks = netpoll.run(_one_window, call, workers)
        out["late"].append(late)
        out["calls"].append(calls)
        out["ticks"].append(ticks)
        if late <= HELD_BOUND:
            break
    return out


def tick_once(call: Callable[[int], Any], workers: int = 2) -> float:
    """One tick window (for the controls): how late the latest tick was."""
    late, _calls, _ticks = netpoll.run(_one_window, call, workers)
    return late


def check_control(results: Mapping[str, Any]) -> None:
    """Assert an unpatched control child saw the library block its M.

    The control proves the measurements can fail: with no patch, one
    goroutine at a time is inside a call (peak 1), and the ticking goroutine
    is held for most of a slow call.
    """
    got = results["control"]
    assert "error" not in got, got.get("error")
    value = got["value"]
    assert value["peak"] == 1, value
    assert value["late"] >= SLOW / 2, value


def _one_window(call: Callable[[int], Any], workers: int) -> tuple[float, int, int]:
    stop = False
    calls = 0
    errors: list[BaseException] = []

    end = time.monotonic() + TICK_WINDOW

    def worker(i: int) -> None:
        nonlocal calls
        try:
            # Bounded by the clock too: on a blocking library (the controls)
            # the ticker that sets ``stop`` only runs between calls.
            while not stop and time.monotonic() < end:
                call(i)
                calls += 1
                netpoll.gosched()
        except BaseException as exc:
            errors.append(exc)

    gs = [netpoll.go(worker, i) for i in range(workers)]
    latest = 0.0
    ticks = 0
    # The first tick counts too: the workers run their first calls in it.
    before = time.monotonic()
    while True:
        netpoll.sleep(TICK)
        now = time.monotonic()
        latest = max(latest, now - before - TICK)
        ticks += 1
        before = now
        if now >= end:
            break
    stop = True
    for g in gs:
        g.join()
    if errors:
        raise errors[0]
    return latest, calls, ticks


def check_ticks(result: Mapping[str, Any], *, bound: float = HELD_BOUND) -> None:
    """Assert the tick scenario passed: some attempt within ``bound``, with calls made."""
    late = result["late"]
    assert min(late) <= bound, (
        f"the ticking goroutine was held {[round(x * 1000, 1) for x in late]} ms late "
        f"(bound {bound * 1000:.0f} ms) while the library calls ran: "
        f"calls {result['calls']}, ticks {result['ticks']}"
    )
    # The window really overlapped calls the server answers after SLOW.
    assert result["calls"][-1] >= 1, result


# -- the global patch, in a child --------------------------------------------------


def server_spec(server: Any) -> dict[str, Any]:
    """A server dataclass as JSON-able ``{"class": name, "fields": {...}}``."""
    return {"class": type(server).__name__, "fields": dataclasses.asdict(server)}


def server_from_spec(spec: Mapping[str, Any]) -> Any:
    """The inverse of :func:`server_spec`."""
    return getattr(servers, spec["class"])(**spec["fields"])


def _tests_path() -> str:
    """Where a child finds the ``tests`` package (see tests/conftest.py)."""
    return os.environ.get("NETPOLL_TESTS_PATH", str(ROOT))


def run_child(module: str, server: Any, *, patch: str = "all") -> dict[str, Any]:
    """Run every scenario of ``module`` in a child process; {name: {"value"|"error": ...}}.

    ``patch="all"``: the child calls :func:`netpoll.patch.all` before it
    imports anything else (the unpatched controls use :func:`run_controls`).
    """
    args = [sys.executable, "-m", "tests.libs.child", module, patch]
    args.append(json.dumps(server_spec(server)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_tests_path(), env.get("PYTHONPATH")]))
    res = proc.run(args, timeout=CHILD_TIMEOUT, env=env, cwd=str(ROOT))
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULTS ")]
    if res.returncode != 0 or not lines:
        raise AssertionError(
            f"child for {module} (patch={patch}) exited {res.returncode}:\n"
            f"{res.stdout[-3000:]}\n{res.stderr[-6000:]}"
        )
    results: dict[str, Any] = json.loads(lines[-1][len("RESULTS ") :])
    return results


def run_controls(servers_by_module: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Every module's ``CONTROLS`` in one unpatched child: {module: {name: result}}."""
    specs = {m: server_spec(srv) for m, srv in servers_by_module.items()}
    args = [sys.executable, "-m", "tests.libs.child", "--controls", json.dumps(specs)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_tests_path(), env.get("PYTHONPATH")]))
    res = proc.run(args, timeout=CHILD_TIMEOUT, env=env, cwd=str(ROOT))
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULTS ")]
    if res.returncode != 0 or not lines:
        raise AssertionError(
            f"controls child exited {res.returncode}:\n{res.stdout[-3000:]}\n{res.stderr[-6000:]}"
        )
    results: dict[str, dict[str, Any]] = json.loads(lines[-1][len("RESULTS ") :])
    return results


def controls_main(spec_json: str) -> int:
    """The child's side of :func:`run_controls`."""
    import importlib

    out: dict[str, dict[str, Any]] = {}
    for module, spec in json.loads(spec_json).items():
        mod = importlib.import_module(module)
        server = server_from_spec(spec)
        out[module] = {}
        for name, fn in mod.CONTROLS.items():
            try:
                out[module][name] = {"value": fn(server)}
            except BaseException:
                out[module][name] = {"error": traceback.format_exc()}
    print("RESULTS " + json.dumps(out), flush=True)
    return 0


def child_main(argv: list[str]) -> int:
    """The child's side of :func:`run_child` (``python -m tests.libs.child``)."""
    module, _patch, spec = argv
    import importlib

    mod = importlib.import_module(module)
    server = server_from_spec(json.loads(spec))
    results: dict[str, Any] = {}
    for name, fn in mod.SCENARIOS.items():
        try:
            results[name] = {"value": fn(server)}
        except BaseException:
            results[name] = {"error": traceback.format_exc()}
    print("RESULTS " + json.dumps(results), flush=True)
    return 0
