"""requests (on urllib3) against a real HTTP and HTTPS server, on goroutines sharing one M.

Each scenario runs over ``http`` and ``https`` (a trustme CA), with the
libraries patched per library in this process and with
``netpoll.patch.all()`` in a child (see :mod:`tests.libs.harness`):

* 20 goroutines share one ``Session`` (urllib3's pool, 20 connections) and
  get correct bodies, all inside a request at once;
* a sibling goroutine ticking every 10 ms keeps ticking while workers wait
  for responses the server sends after 100 ms;
* netpoll faults, with no proxy: refused connects retried by urllib3's
  ``Retry`` (or ``requests.ConnectionError`` without retries); a reset
  before the status line retried by ``Retry(read=...)``; a reset in the
  middle of a body as ``requests.exceptions.ChunkedEncodingError``; a read
  whose wakeup never comes as ``requests.ReadTimeout`` at the read timeout.

Over https the read faults reach the TLS records because the rules are in
place before the connection's first TLS call (the green ``ssl`` then runs it
on memory BIOs through netpoll's hooks; see :func:`watch_reads`).
"""

from __future__ import annotations

import errno
import functools
import time
from collections.abc import Callable
from typing import Any

import pytest

import netpoll
from netpoll.testing import Faults
from tests.helpers.http_server import PATTERN
from tests.helpers.servers import HTTPServers
from tests.libs import harness
from tests.libs.conftest import MODES

requests = pytest.importorskip("requests")
from requests.adapters import HTTPAdapter  # noqa: E402
from urllib3.util.retry import Retry  # noqa: E402

#: What ``netpoll.patch.library`` is called with in the ``library`` mode.
PATCH_LIBRARIES = ["requests", "urllib3"]
SCHEMES = ["http", "https"]
N = 20


def session(srv: HTTPServers, retries: Any = 0, pool: int = N) -> Any:
    """A Session trusting the test CA, with ``pool`` connections and a retry policy."""
    s = requests.Session()
    # trust_env off: REQUESTS_CA_BUNDLE (set on some machines) would override
    # Session.verify (requests merges the environment over session settings).
    s.trust_env = False
    s.verify = srv.ca_pem
    adapter = HTTPAdapter(pool_connections=2, pool_maxsize=pool, max_retries=retries)
    s.mount("http://", adapter)
    s.mount("https://", adapter)
    return s


def body(n: int) -> bytes:
    """What ``/bytes/<n>`` answers."""
    return (PATTERN * (n // len(PATTERN) + 1))[:n]


def concurrent(scheme: str, srv: HTTPServers) -> dict[str, Any]:
    """N goroutines, one Session: a 50 ms-delayed echo and a sized body each."""
    with session(srv) as s:

        def call(i: int) -> bool:
            r1 = s.get(srv.url(scheme, f"/delay/50/tok{i}"), timeout=10)
            r2 = s.get(srv.url(scheme, f"/bytes/{1000 * i + 1}"), timeout=10)
            return r1.text == f"tok{i}" and r2.content == body(1000 * i + 1)

        ok, peak = harness.concurrently(N, call)
    return {"ok": ok, "peak": peak}


def tick(scheme: str, srv: HTTPServers) -> dict[str, Any]:
    """Tick beside workers whose responses come after 100 ms."""
    ms = int(harness.SLOW * 1000)
    with session(srv) as s:
        return harness.tick_while(
            lambda i: s.get(srv.url(scheme, f"/delay/{ms}/t{i}"), timeout=10).raise_for_status()
        )


def fault_refused(scheme: str, srv: HTTPServers) -> dict[str, Any]:
    """Two refused connects retried by urllib3; always refused: requests.ConnectionError."""

    def main() -> dict[str, Any]:
        out: dict[str, Any] = {}
        with Faults() as f:
            rule = f.fail("connect", errno.ECONNREFUSED, times=2)
            with session(srv, retries=Retry(connect=3, backoff_factor=0)) as s:
                out["text"] = s.get(srv.url(scheme, "/echo/again"), timeout=10).text
            out["fired"] = rule.fired
            f.fail("connect", errno.ECONNREFUSED)
            with session(srv) as s:
                try:
                    s.get(srv.url(scheme, "/echo/never"), timeout=10)
                except requests.ConnectionError as exc:
                    out["error"] = type(exc).__name__
                    out["message"] = str(exc)
        return out

    return netpoll.run(main)


def watch_reads(f: Faults) -> None:
    """A read rule that never fires, so reads are watched from now on.

    The green ``ssl`` decides at a TLS connection's first call whether its
    records go through netpoll's read/write hooks (memory BIOs, while a
    plugin watches them) or OpenSSL reads the descriptor itself; a
    connection made before any read rule existed is out of the faults'
    reach for its whole life.
    """
    f.fail("read", errno.EIO, where=lambda _st: False)


def fault_reset(scheme: str, srv: HTTPServers) -> dict[str, Any]:
    """Reset before the status line: retried; 100 kB into a 300 kB body: ChunkedEncodingError.

    Each rule is added once the Session holds a connected (for https:
    handshaken) connection, so its byte count starts at the next response.
    Reads are watched (:func:`watch_reads`) before that connection is made.
    """

    def main() -> dict[str, Any]:
        out: dict[str, Any] = {}
        retry = Retry(total=2, read=2, backoff_factor=0)
        with session(srv, retries=retry, pool=1) as s, Faults() as f:
            watch_reads(f)
            s.get(srv.url(scheme, "/echo/warm"), timeout=10)
            rule = f.reset_after(0, "read", times=1)
            out["retried"] = s.get(srv.url(scheme, "/echo/retried"), timeout=10).text
            out["reset_conns"] = rule.connections
        with session(srv, pool=1) as s, Faults() as f:
            watch_reads(f)
            s.get(srv.url(scheme, "/echo/warm"), timeout=10)
            f.reset_after(100_000, "read", times=1)
            try:
                r = s.get(srv.url(scheme, "/bytes/300000"), timeout=10)
                out["len"] = len(r.content)
            except requests.RequestException as exc:
                out["error"] = type(exc).__name__
                out["message"] = str(exc)
        return out

    return netpoll.run(main)


def fault_stall(scheme: str, srv: HTTPServers) -> dict[str, Any]:
    """A read whose readiness never comes (lost wakeup): requests.ReadTimeout."""

    def main() -> dict[str, Any]:
        out: dict[str, Any] = {}
        with session(srv) as s:
            with Faults() as f:
                watch_reads(f)
                s.get(srv.url(scheme, "/echo/warm"), timeout=10)  # a pooled, connected conn
                f.eagain("read", wake=False)
                start = time.monotonic()
                try:
                    s.get(srv.url(scheme, "/echo/stalled"), timeout=(5, 0.2))
                except requests.RequestException as exc:
                    out["error"] = type(exc).__name__
                    out["message"] = str(exc)
                out["elapsed"] = time.monotonic() - start
            out["after"] = s.get(srv.url(scheme, "/echo/after"), timeout=10).text
        return out

    return netpoll.run(main)


def control(srv: HTTPServers) -> dict[str, Any]:
    """Unpatched (a child with no patch): 3 goroutines' delayed GETs, and one tick window."""
    ms = int(harness.SLOW * 1000)
    with session(srv) as s:
        _, peak = harness.concurrently(3, lambda i: s.get(srv.url("http", f"/delay/50/{i}")))
        late = harness.tick_once(lambda i: s.get(srv.url("http", f"/delay/{ms}/{i}")))
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
def test_refused_connect_is_retried_or_connection_error(
    mode: str, scheme: str, scenario: Any, http_srv: HTTPServers
) -> None:
    r = scenario(mode, _fn("fault_refused", scheme), http_srv)
    assert r["text"] == "again" and r["fired"] == 2, r
    assert r["error"] == "ConnectionError" and "refused" in r["message"].lower(), r


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("mode", MODES)
def test_reset_is_retried_or_chunked_encoding_error(
    mode: str, scheme: str, scenario: Any, http_srv: HTTPServers
) -> None:
    r = scenario(mode, _fn("fault_reset", scheme), http_srv)
    assert r["retried"] == "retried" and r["reset_conns"] == 1, r
    assert r.get("error") == "ChunkedEncodingError", r
    assert "reset" in r["message"].lower(), r


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("mode", MODES)
def test_stalled_read_is_read_timeout(
    mode: str, scheme: str, scenario: Any, http_srv: HTTPServers
) -> None:
    r = scenario(mode, _fn("fault_stall", scheme), http_srv)
    assert r.get("error") == "ReadTimeout", r
    assert 0.15 <= r["elapsed"] < 5.0, r
    assert r["after"] == "after"
