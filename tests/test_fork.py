"""fork never changes the parent, and the child can use netpoll at once (issue 18, item 1).

Each test forks this very process (the pytest process, with its sysmon,
background M and finalizer threads) on every backend: from a goroutine of
``netpoll.run``, from a plain thread, from a goroutine on a background M,
and through ``multiprocessing`` with the fork context.  The parent checks
that a goroutine it had parked before the fork still wakes (on epoll the
child's after-fork handler used to ``EPOLL_CTL_DEL`` the parent's
registrations from the epoll instance they share), and the child reports
through a pipe and its exit code what it could do: start goroutines, do I/O
on conns it inherited and on new ones, and call ``netpoll.run``.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import pytest

import netpoll
from netpoll.core.procs import ENV_PROCS

if not hasattr(os, "fork"):  # pragma: no cover - Windows
    pytest.skip("os.fork does not exist on this platform", allow_module_level=True)

pytestmark = [
    # Python 3.12+ warns that forking a process with threads may deadlock;
    # surviving that is what these tests check.
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]

CHILD_TIMEOUT = 20.0


def _fork(child: Callable[[], str]) -> tuple[int, int]:
    """Fork; the child runs ``child()`` and reports its result (or traceback) on a pipe.

    The child always leaves through ``os._exit``: 0 when ``child()`` returned,
    1 when it raised.  Returns ``(pid, read end of the pipe)`` in the parent.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child, which never returns
        code = 1
        try:
            os.close(r)
            msg = child()
            code = 0
        except BaseException:
            msg = traceback.format_exc()
        finally:
            try:
                os.write(w, msg.encode()[:60000])
            finally:
                os._exit(code)
    os.close(w)
    return pid, r


def _reap(pid: int, r: int) -> tuple[int, str]:
    """Wait (bounded) for the child; its exit code and what it wrote."""
    deadline = time.monotonic() + CHILD_TIMEOUT
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            os.close(r)
            raise AssertionError(f"the forked child did not finish in {CHILD_TIMEOUT}s")
        time.sleep(0.01)
    chunks = []
    while True:
        data = os.read(r, 65536)
        if not data:
            break
        chunks.append(data)
    os.close(r)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode()


def _child_uses_netpoll(inherited: tuple[Any, Any] | None) -> str:
    """What every child checks: goroutines, a fresh listener, and inherited conns."""
    out = []
    # A new goroutine runs and its value comes back through a channel.  No
    # timeout: a lost wakeup (a waker notifying the forking thread's old wake
    # fd) must hang the child, which _reap then reports, not just slow it.
    ch: netpoll.Chan[str] = netpoll.Chan(1)
    netpoll.go(lambda: ch.send("go ok"))
    out.append(ch.recv())
    # New sockets work: an echo over a fresh listener, served by a goroutine.
    ln = netpoll.listen("tcp", "127.0.0.1:0")

    def serve() -> None:
        c = ln.accept()
        c.write(c.read(100))
        c.close()

    netpoll.go(serve)
    c = netpoll.dial("tcp", str(ln.addr()), timeout=5)
    c.set_deadline(time.time() + 5)
    c.write(b"new ok")
    out.append(c.read(100).decode())
    c.close()
    ln.close()
    if inherited is not None:
        a, b = inherited
        a.set_deadline(time.time() + 5)
        b.set_deadline(time.time() + 5)
        a.write(b"inherited ok")
        out.append(b.read(100).decode())
    return ",".join(out)


EXPECTED_CHILD = "go ok,new ok,inherited ok"


def _pair() -> tuple[Any, Any, Any]:
    """A listener and a connected pair of conns (made by the caller's kind of G)."""
    ln = netpoll.listen("tcp", "127.0.0.1:0")
    got: netpoll.Chan[Any] = netpoll.Chan(1)
    netpoll.go(lambda: got.send(ln.accept()))
    a = netpoll.dial("tcp", str(ln.addr()), timeout=5)
    b = got.recv(timeout=5)
    return ln, a, b


def test_fork_from_a_goroutine_keeps_the_parents_parked_accept(backend: str) -> None:
    """The issue's reproduction: the parent's accept, parked before the fork, still wakes."""

    def main() -> tuple[int, str, str, str]:
        ln = netpoll.listen("tcp", "127.0.0.1:0")
        got: netpoll.Chan[str] = netpoll.Chan(1)

        def acc() -> None:
            c = ln.accept()
            got.send("accepted")
            c.close()

        netpoll.go(acc)
        ln2, a, b = _pair()
        netpoll.sleep(0.05)  # acc is parked on the listener now
        pid, r = _fork(lambda: _child_uses_netpoll((a, b)))
        code, report = netpoll.blocking(_reap, pid, r)
        # The parent: its parked accept wakes, and a conn registered before
        # the fork still carries data both ways.
        c = netpoll.dial("tcp", str(ln.addr()), timeout=5)
        accepted = got.recv(timeout=5)
        b.set_deadline(time.time() + 5)
        a.write(b"parent ok")
        echoed = b.read(100).decode()
        for x in (c, a, b, ln, ln2):
            x.close()
        return code, report, accepted, echoed

    code, report, accepted, echoed = netpoll.run(main)
    assert (code, report) == (0, EXPECTED_CHILD)
    assert accepted == "accepted"
    assert echoed == "parent ok"


@pytest.mark.parametrize("procs", [1, 2])  # 2: what test_goroutines expects too (Ms live for good)
def test_fork_from_a_plain_thread_with_background_ms(
    backend: str, procs: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fork from a thread while background Ms run goroutines, one parked in accept."""
    monkeypatch.setenv(ENV_PROCS, str(procs))
    ln = netpoll.listen("tcp", "127.0.0.1:0")
    got: netpoll.Chan[str] = netpoll.Chan(1)
    stop: netpoll.Chan[None] = netpoll.Chan()

    def acc() -> None:
        c = ln.accept()
        got.send("accepted")
        c.close()

    def ticker() -> None:  # keeps the other Ms busy across the fork
        while True:
            try:
                stop.recv(timeout=0.001)
                return
            except TimeoutError:
                pass

    tickers = [netpoll.go(ticker) for _ in range(procs)]
    g = netpoll.go(acc)
    ln2, a, b = _pair()
    time.sleep(0.05)

    def child() -> str:
        report = _child_uses_netpoll((a, b))
        # netpoll.run works in the child's thread too.
        ran = netpoll.run(lambda: _child_uses_netpoll(None))
        return f"{report}|{ran}"

    pid, r = _fork(child)
    code, report = _reap(pid, r)
    assert (code, report) == (0, f"{EXPECTED_CHILD}|go ok,new ok")
    c = netpoll.dial("tcp", str(ln.addr()), timeout=5)
    assert got.recv(timeout=5) == "accepted"
    assert g.join(5)
    for _ in tickers:
        stop.send(None)
    assert all(t.join(5) for t in tickers)
    b.set_deadline(time.time() + 5)
    a.write(b"parent ok")
    assert b.read(100) == b"parent ok"
    for x in (c, a, b, ln, ln2):
        x.close()


def test_fork_from_a_goroutine_on_a_background_m(backend: str) -> None:
    """The forking goroutine's background M survives in the child, with a new poller."""
    ln = netpoll.listen("tcp", "127.0.0.1:0")
    got: netpoll.Chan[str] = netpoll.Chan(1)
    result: netpoll.Chan[tuple[int, str]] = netpoll.Chan(1)

    def acc() -> None:
        c = ln.accept()
        got.send("accepted")
        c.close()

    def forker() -> None:
        ln2, a, b = _pair()
        netpoll.sleep(0.05)
        pid, r = _fork(lambda: _child_uses_netpoll((a, b)))
        result.send(netpoll.blocking(_reap, pid, r))
        for x in (a, b, ln2):
            x.close()

    netpoll.go(acc)
    time.sleep(0.05)
    netpoll.go(forker)
    assert result.recv(timeout=CHILD_TIMEOUT + 5) == (0, EXPECTED_CHILD)
    c = netpoll.dial("tcp", str(ln.addr()), timeout=5)
    assert got.recv(timeout=5) == "accepted"
    c.close()
    ln.close()


def _mp_child(addr: str, conn: Any) -> None:
    """A multiprocessing target: dial the parent and report what the child saw."""
    c = netpoll.dial("tcp", addr, timeout=5)
    c.write(b"hello from the child")
    c.close()
    conn.send(_child_uses_netpoll(None))
    conn.close()


def test_multiprocessing_fork_context_from_a_thread(backend: str) -> None:
    """A ``multiprocessing`` child (fork) dials the parent, whose parked accept serves it."""
    ctx = multiprocessing.get_context("fork")
    ln = netpoll.listen("tcp", "127.0.0.1:0")
    got: netpoll.Chan[bytes] = netpoll.Chan(1)

    def acc() -> None:
        c = ln.accept()
        c.set_deadline(time.time() + 10)
        got.send(c.readall())
        c.close()

    netpoll.go(acc)
    time.sleep(0.05)
    parent_end, child_end = ctx.Pipe()
    p = ctx.Process(target=_mp_child, args=(str(ln.addr()), child_end))
    p.start()
    child_end.close()
    try:
        assert parent_end.poll(CHILD_TIMEOUT), "the child reported nothing"
        assert parent_end.recv() == "go ok,new ok"
        p.join(CHILD_TIMEOUT)
        assert p.exitcode == 0
        assert got.recv(timeout=5) == b"hello from the child"
    finally:
        if p.is_alive():
            p.kill()
            p.join()
        parent_end.close()
        ln.close()


def test_multiprocessing_fork_context_from_a_goroutine(backend: str) -> None:
    """Started from a goroutine of ``netpoll.run``; the parent's parked accept still works."""
    ctx = multiprocessing.get_context("fork")

    def main() -> tuple[str, int | None, str]:
        ln = netpoll.listen("tcp", "127.0.0.1:0")
        got: netpoll.Chan[str] = netpoll.Chan(1)

        def acc() -> None:
            c = ln.accept()
            got.send("accepted")
            c.close()

        netpoll.go(acc)
        netpoll.sleep(0.05)
        parent_end, child_end = ctx.Pipe()
        p = ctx.Process(target=_report_only, args=(child_end,))
        p.start()
        child_end.close()
        try:
            report = parent_end.recv() if netpoll.blocking(parent_end.poll, CHILD_TIMEOUT) else ""
            netpoll.blocking(p.join, CHILD_TIMEOUT)
        finally:
            if p.is_alive():
                p.kill()
                p.join()
            parent_end.close()
        c = netpoll.dial("tcp", str(ln.addr()), timeout=5)
        accepted = got.recv(timeout=5)
        c.close()
        ln.close()
        return report, p.exitcode, accepted

    report, exitcode, accepted = netpoll.run(main)
    assert report == "go ok,new ok"
    assert exitcode == 0
    assert accepted == "accepted"


def _report_only(conn: Any) -> None:
    conn.send(_child_uses_netpoll(None))
    conn.close()


def test_threads_keep_working_in_the_parent_after_many_forks(backend: str) -> None:
    """Five forks in a row from a goroutine; a plain thread's parked read still wakes."""
    ln, a, b = _pair()
    got: list[bytes] = []

    def reader() -> None:
        b.set_deadline(time.time() + 20)
        got.append(b.read(100))

    t = threading.Thread(target=reader)
    t.start()

    def main() -> list[int]:
        codes = []
        for _ in range(5):
            pid, r = _fork(lambda: "child ok")
            codes.append(netpoll.blocking(_reap, pid, r)[0])
        return codes

    assert netpoll.run(main) == [0] * 5
    a.write(b"still there")
    t.join(10)
    assert got == [b"still there"]
    for x in (a, b, ln):
        x.close()
