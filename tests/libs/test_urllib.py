"""``urllib.request`` (on ``http.client``) against a real HTTP and HTTPS server, on goroutines.

Each scenario runs over ``http`` and ``https`` (a trustme CA, in an
``SSLContext`` made by the ``ssl`` module the patched ``http.client`` uses),
with the stdlib patched per library in this process and with
``netpoll.patch.all()`` in a child (see :mod:`tests.libs.harness`):

* 20 goroutines ``urlopen`` at once and get correct bodies;
* a sibling goroutine ticking every 10 ms keeps ticking while workers wait
  for responses the server sends after 100 ms;
* netpoll faults, with no proxy: a refused connect is ``URLError`` whose
  reason is ``ConnectionRefusedError``; a reset in the middle of a body is
  ``ConnectionResetError`` out of ``read()`` (``http.client`` wraps neither);
  a read whose wakeup never comes is ``TimeoutError`` at ``urlopen``'s timeout.

Over https the read faults reach the TLS records because the rules are in
place before the connection's first TLS call (the green ``ssl`` then runs it
on memory BIOs through netpoll's hooks).
"""

from __future__ import annotations

import errno
import functools
import http.client
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

import netpoll
from netpoll.testing import Faults
from tests.helpers.http_server import PATTERN
from tests.helpers.servers import HTTPServers
from tests.libs import harness
from tests.libs.conftest import MODES

#: What ``netpoll.patch.library`` is called with in the ``library`` mode.
PATCH_LIBRARIES = ["urllib", "http"]
SCHEMES = ["http", "https"]
N = 20


def context(srv: HTTPServers) -> Any:
    """A client context trusting the test CA, from the ``ssl`` that ``http.client`` uses.

    With the per-library patch that is netpoll's ssl (a stdlib
    ``SSLContext`` would wrap the socket in a blocking stdlib ``SSLSocket``);
    with the global patch it is the patched stdlib module.
    """
    return http.client.ssl.create_default_context(cafile=srv.ca_pem)


def fetch(srv: HTTPServers, scheme: str, path: str, timeout: float = 10.0) -> bytes:
    """GET ``path`` with urlopen; the body."""
    ctx = context(srv) if scheme == "https" else None
    with urllib.request.urlopen(srv.url(scheme, path), timeout=timeout, context=ctx) as r:
        data: bytes = r.read()
        return data


def body(n: int) -> bytes:
    """What ``/bytes/<n>`` answers."""
    return (PATTERN * (n // len(PATTERN) + 1))[:n]


def concurrent(scheme: str, srv: HTTPServers) -> dict[str, Any]:
    """N goroutines: a 50 ms-delayed echo and a sized body each."""

    def call(i: int) -> bool:
        a = fetch(srv, scheme, f"/delay/50/tok{i}")
        b = fetch(srv, scheme, f"/bytes/{1000 * i + 1}")
        return a == f"tok{i}".encode() and b == body(1000 * i + 1)

    ok, peak = harness.concurrently(N, call)
    return {"ok": ok, "peak": peak}


def tick(scheme: str, srv: HTTPServers) -> dict[str, Any]:
    """Tick beside workers whose responses come after 100 ms."""
    ms = int(harness.SLOW * 1000)
    # Two workers: every urlopen is a new connection, and over https each one
    # is a TLS handshake (a few ms of CPU between parks), which four workers
    # starting together would spend back to back ahead of the ticker.
    workers = 2 if scheme == "https" else 4
    return harness.tick_while(lambda i: fetch(srv, scheme, f"/delay/{ms}/t{i}"), workers)


def fault_refused(scheme: str, srv: HTTPServers) -> dict[str, Any]:
    """A refused connect: URLError(reason=ConnectionRefusedError)."""

    def main() -> dict[str, Any]:
        out: dict[str, Any] = {}
        with Faults() as f:
            rule = f.fail("connect", errno.ECONNREFUSED)
            try:
                fetch(srv, scheme, "/echo/never")
            except urllib.error.URLError as exc:
                out["error"] = type(exc).__name__
                out["reason"] = type(exc.reason).__name__
            out["fired"] = rule.fired
        return out

    return netpoll.run(main)


def fault_reset(scheme: str, srv: HTTPServers) -> dict[str, Any]:
    """A reset 100 kB into a 300 kB body: ConnectionResetError from read()."""

    def main() -> dict[str, Any]:
        out: dict[str, Any] = {}
        ctx = context(srv) if scheme == "https" else None
        with Faults() as f:
            # Counted from the connection's first read: https adds its
            # handshake (a few kB), still far below 100 kB.
            rule = f.reset_after(100_000, "read", times=1)
            try:
                with urllib.request.urlopen(
                    srv.url(scheme, "/bytes/300000"), timeout=10, context=ctx
                ) as r:
                    out["len"] = len(r.read())
            except OSError as exc:
                out["error"] = type(exc).__name__
            out["reset_conns"] = rule.connections
        out["after"] = fetch(srv, scheme, "/echo/after").decode()
        return out

    return netpoll.run(main)


def fault_stall(scheme: str, srv: HTTPServers) -> dict[str, Any]:
    """Reads whose readiness never comes (lost wakeups): TimeoutError at the timeout."""

    def main() -> dict[str, Any]:
        out: dict[str, Any] = {}
        with Faults() as f:
            f.eagain("read", wake=False)
            start = time.monotonic()
            try:
                fetch(srv, scheme, "/echo/stalled", timeout=0.2)
            except OSError as exc:
                # urllib wraps what fails while sending (URLError), not getresponse's
                reason = getattr(exc, "reason", exc)
                out["error"] = type(exc).__name__
                out["reason"] = type(reason).__name__
            out["elapsed"] = time.monotonic() - start
        out["after"] = fetch(srv, scheme, "/echo/after").decode()
        return out

    return netpoll.run(main)


def control(srv: HTTPServers) -> dict[str, Any]:
    """Unpatched (a child with no patch): 3 goroutines' delayed GETs, and one tick window."""
    ms = int(harness.SLOW * 1000)
    _, peak = harness.concurrently(3, lambda i: fetch(srv, "http", f"/delay/50/{i}"))
    late = harness.tick_once(lambda i: fetch(srv, "http", f"/delay/{ms}/{i}"))
    return {"peak": peak, "late": late}


#: What the child of the control test runs, with no patch at all.
CONTROLS = {"control": control}

_KINDS: dict[str, Callable[[str, HTTPServers], Any]] = {
    "concurrent": concurrent,
    "tick": tick,
    "fault_refused": fault_refused,
    "fault_reset": fault_reset,
    "fault_stall": fault_stall,
}
SCENARIOS = {
    f"{kind}_{scheme}": functools.partial(fn, scheme)
    for kind, fn in _KINDS.items()
    for scheme in SCHEMES
}


def _fn(kind: str, scheme: str) -> Callable[[HTTPServers], Any]:
    return SCENARIOS[f"{kind}_{scheme}"]


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("mode", MODES)
def test_concurrent_calls(mode: str, scheme: str, scenario: Any, http_srv: HTTPServers) -> None:
    r = scenario(mode, _fn("concurrent", scheme), http_srv)
    assert r["ok"] == [True] * N
    assert r["peak"] >= N // 2, r["peak"]


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("mode", MODES)
def test_sibling_goroutine_keeps_ticking(
    mode: str, scheme: str, scenario: Any, http_srv: HTTPServers
) -> None:
    harness.check_ticks(scenario(mode, _fn("tick", scheme), http_srv))


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("mode", MODES)
def test_refused_connect_is_url_error(
    mode: str, scheme: str, scenario: Any, http_srv: HTTPServers
) -> None:
    r = scenario(mode, _fn("fault_refused", scheme), http_srv)
    assert r.get("error") == "URLError" and r["reason"] == "ConnectionRefusedError", r
    assert r["fired"] >= 1, r


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("mode", MODES)
def test_reset_mid_body_is_connection_reset(
    mode: str, scheme: str, scenario: Any, http_srv: HTTPServers
) -> None:
    r = scenario(mode, _fn("fault_reset", scheme), http_srv)
    assert r.get("error") == "ConnectionResetError" and r["reset_conns"] == 1, r
    assert r["after"] == "after"


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("mode", MODES)
def test_stalled_read_times_out(
    mode: str, scheme: str, scenario: Any, http_srv: HTTPServers
) -> None:
    r = scenario(mode, _fn("fault_stall", scheme), http_srv)
    # http: the response read times out; https: the handshake's read does,
    # inside urlopen's request, which urllib reports as URLError(reason=...).
    assert r.get("reason") == "TimeoutError", r
    assert 0.15 <= r["elapsed"] < 5.0, r
    assert r["after"] == "after"
