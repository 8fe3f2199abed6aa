"""``smtplib`` against a real SMTP server (aiosmtpd), on goroutines sharing one M.

Each scenario runs with ``smtplib`` patched per library in this process and
with ``netpoll.patch.all()`` in a child (see :mod:`tests.libs.harness`):

* 10 goroutines each send a message on their own connection; the server's
  DATA reply carries the SHA-256 of what it received, which must be the
  digest of what was sent;
* a sibling goroutine ticking every 10 ms keeps ticking while workers wait
  for DATA replies the server sends after 100 ms;
* netpoll faults, with no proxy: a refused connect is
  ``ConnectionRefusedError`` (smtplib does not wrap it); a reset in the
  middle of the server's replies and a read whose wakeup never comes (past
  the connection's timeout) are ``smtplib.SMTPServerDisconnected``.
"""

from __future__ import annotations

import errno
import hashlib
import smtplib
import time
from typing import Any

import pytest

import netpoll
from netpoll.testing import Faults
from tests.helpers.servers import SMTPServer
from tests.libs import harness
from tests.libs.conftest import MODES

#: What ``netpoll.patch.library`` is called with in the ``library`` mode.
PATCH_LIBRARIES = ["smtplib"]
N = 10
SENDER = "sender@example.com"


def message(i: int) -> bytes:
    """Message ``i``: headers and a body of a size that depends on ``i``."""
    lines = [f"Subject: message {i}", "", *(f"line {j} of message {i}" for j in range(i * 40))]
    return ("\r\n".join(lines) + "\r\n").encode()


def digest(msg: bytes) -> str:
    """What the server's DATA reply says for ``msg`` (sent with CRLF endings)."""
    return hashlib.sha256(msg).hexdigest()[:16]


def send(c: smtplib.SMTP, i: int, rcpt: str) -> bool:
    """One transaction on ``c``; True if the server got message ``i`` intact."""
    c.ehlo_or_helo_if_needed()
    code, _ = c.mail(SENDER)
    assert code == 250, code
    code, _ = c.rcpt(rcpt)
    assert code == 250, code
    code, reply = c.data(message(i))
    return code == 250 and reply.decode().endswith(f"sha256={digest(message(i))}")


def concurrent(srv: SMTPServer) -> dict[str, Any]:
    """N goroutines, a connection each, a DATA reply delayed 50 ms."""

    def call(i: int) -> bool:
        with smtplib.SMTP(srv.host, srv.port, timeout=10) as c:
            c.ehlo()
            return send(c, i, "delay50@example.com")

    ok, peak = harness.concurrently(N, call)
    return {"ok": ok, "peak": peak}


def tick(srv: SMTPServer) -> dict[str, Any]:
    """Tick beside workers whose DATA replies come after 100 ms."""
    ms = int(harness.SLOW * 1000)
    conns: dict[int, smtplib.SMTP] = {}

    def call(i: int) -> None:
        c = conns.get(i)
        if c is None:
            c = conns[i] = smtplib.SMTP(srv.host, srv.port, timeout=10)
        assert send(c, i, f"delay{ms}@example.com")

    try:
        return harness.tick_while(call)
    finally:
        for c in conns.values():
            c.quit()


def fault_refused(srv: SMTPServer) -> dict[str, Any]:
    """A refused connect: ConnectionRefusedError."""

    def main() -> dict[str, Any]:
        out: dict[str, Any] = {}
        with Faults() as f:
            rule = f.fail("connect", errno.ECONNREFUSED)
            try:
                smtplib.SMTP(srv.host, srv.port, timeout=10).quit()
            except OSError as exc:
                out["error"] = type(exc).__name__
            out["fired"] = rule.fired
        return out

    return netpoll.run(main)


def fault_reset(srv: SMTPServer) -> dict[str, Any]:
    """The connection resets 100 bytes into the server's replies: SMTPServerDisconnected."""

    def main() -> dict[str, Any]:
        out: dict[str, Any] = {}
        with Faults() as f:
            rule = f.reset_after(100, "read", times=1)
            c = smtplib.SMTP(timeout=10)
            try:
                c.connect(srv.host, srv.port)  # the greeting (~40 bytes)
                c.ehlo()  # the EHLO reply passes 100 bytes: reset in its middle
                send(c, 1, "a@example.com")
            except smtplib.SMTPException as exc:
                out["error"] = type(exc).__name__
                out["message"] = str(exc)
            finally:
                c.close()
            out["reset_conns"] = rule.connections
        with smtplib.SMTP(srv.host, srv.port, timeout=10) as c:
            out["after"] = send(c, 2, "b@example.com")
        return out

    return netpoll.run(main)


def fault_stall(srv: SMTPServer) -> dict[str, Any]:
    """A reply whose readiness never comes (lost wakeup): SMTPServerDisconnected at the timeout."""

    def main() -> dict[str, Any]:
        out: dict[str, Any] = {}
        c = smtplib.SMTP(srv.host, srv.port, timeout=0.2)
        try:
            c.ehlo()
            with Faults() as f:
                f.eagain("read", wake=False)
                start = time.monotonic()
                try:
                    c.noop()
                except smtplib.SMTPException as exc:
                    out["error"] = type(exc).__name__
                    out["message"] = str(exc)
                out["elapsed"] = time.monotonic() - start
        finally:
            c.close()
        return out

    return netpoll.run(main)


def control(srv: SMTPServer) -> dict[str, Any]:
    """Unpatched (a child with no patch): 3 goroutines' delayed DATA, and one tick window."""
    conns: dict[int, smtplib.SMTP] = {}

    def call(i: int) -> None:
        c = conns.get(i)
        if c is None:
            c = conns[i] = smtplib.SMTP(srv.host, srv.port, timeout=10)
        send(c, i, f"delay{int(harness.SLOW * 1000)}@example.com")

    try:
        _, peak = harness.concurrently(3, call)
        late = harness.tick_once(call)
    finally:
        for c in conns.values():
            c.quit()
    return {"peak": peak, "late": late}


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
def test_concurrent_calls(mode: str, scenario: Any, smtp_srv: SMTPServer) -> None:
    r = scenario(mode, concurrent, smtp_srv)
    assert r["ok"] == [True] * N
    assert r["peak"] >= N // 2, r["peak"]


@pytest.mark.parametrize("mode", MODES)
def test_sibling_goroutine_keeps_ticking(mode: str, scenario: Any, smtp_srv: SMTPServer) -> None:
    harness.check_ticks(scenario(mode, tick, smtp_srv))


@pytest.mark.parametrize("mode", MODES)
def test_refused_connect(mode: str, scenario: Any, smtp_srv: SMTPServer) -> None:
    r = scenario(mode, fault_refused, smtp_srv)
    assert r.get("error") == "ConnectionRefusedError" and r["fired"] >= 1, r


@pytest.mark.parametrize("mode", MODES)
def test_reset_mid_reply_is_server_disconnected(
    mode: str, scenario: Any, smtp_srv: SMTPServer
) -> None:
    r = scenario(mode, fault_reset, smtp_srv)
    assert r.get("error") == "SMTPServerDisconnected", r
    assert "reset" in r["message"].lower() and r["reset_conns"] == 1, r
    assert r["after"] is True


@pytest.mark.parametrize("mode", MODES)
def test_stalled_read_is_server_disconnected(
    mode: str, scenario: Any, smtp_srv: SMTPServer
) -> None:
    r = scenario(mode, fault_stall, smtp_srv)
    assert r.get("error") == "SMTPServerDisconnected" and "timed out" in r["message"], r
    assert 0.15 <= r["elapsed"] < 5.0, r
