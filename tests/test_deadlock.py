"""Deadlock detection: run raises instead of hanging (issue 18, item 3).

``netpoll.run(lambda: netpoll.Chan().recv())`` waited forever; Go says
"all goroutines are asleep - deadlock!".  Each case runs a small program in
a subprocess (a clean process: no pytest threads, no pytest-timeout signal
handler, either of which rightly disables the report), with a bound on how
long it may take.  The negative cases are the things that can still wake a
goroutine: another thread, parked I/O, a ``netpoll.blocking`` call, a timer.
"""

from __future__ import annotations

import sys
import textwrap

from tests.helpers import proc

TIMEOUT = 30.0


def _run(code: str) -> tuple[int, str, str]:
    res = proc.run([sys.executable, "-c", textwrap.dedent(code)], timeout=TIMEOUT)
    return res.returncode, res.stdout, res.stderr


def test_the_issues_reproduction_raises_deadlock_error() -> None:
    """A receive nobody can send to: DeadlockError from run, naming the G and where it waits."""
    rc, out, err = _run(
        """
        import netpoll
        try:
            netpoll.run(lambda: netpoll.Chan().recv())
        except netpoll.DeadlockError as exc:
            print(exc)
        """
    )
    assert rc == 0, err
    assert out.startswith("netpoll: all goroutines are asleep - deadlock!")
    assert "goroutine G1:<lambda>" in out
    # Go's "[chan receive]", the same in both builds (compiled netpoll code
    # leaves no frames to name the call by).
    assert "waits in chan receive, called at <string>:4 in <lambda>" in out


def test_every_parked_goroutine_is_named_and_finally_blocks_run() -> None:
    """Main waits on a G that waits on a Mutex held for good: both are listed."""
    rc, out, err = _run(
        """
        import netpoll

        def main():
            mu = netpoll.Mutex()
            mu.lock()
            def locker():
                try:
                    mu.lock()
                finally:
                    print("locker: finally", flush=True)
            g = netpoll.go(locker)
            try:
                g.join()
            finally:
                print("main: finally", flush=True)

        try:
            netpoll.run(main)
        except netpoll.DeadlockError as exc:
            print("ERROR", exc)
        """
    )
    assert rc == 0, err
    lines = out.splitlines()
    # run ends every goroutine (in no set order) before it raises.
    assert sorted(lines[:2]) == ["locker: finally", "main: finally"], out
    report = out[out.index("ERROR") :]
    assert "all goroutines are asleep - deadlock!" in report
    assert "goroutine G1:main" in report and "waits in goroutine join" in report
    assert "locker" in report and "waits in sync.Mutex.Lock" in report


def test_no_report_while_another_thread_can_still_send() -> None:
    """A plain thread sends after 0.5 s: the receive completes, no DeadlockError."""
    rc, out, err = _run(
        """
        import threading, time, netpoll
        ch = netpoll.Chan()
        def later():
            time.sleep(0.5)
            ch.send("from the thread")
        threading.Thread(target=later).start()
        print(netpoll.run(ch.recv))
        """
    )
    assert (rc, out.strip()) == (0, "from the thread"), err


def test_no_report_while_a_goroutine_waits_for_io() -> None:
    """A G parked in accept can be woken by a peer (here another process, later)."""
    rc, out, err = _run(
        """
        import subprocess, sys, netpoll

        def main():
            ln = netpoll.listen("tcp", "127.0.0.1:0")
            ch = netpoll.Chan()
            def acc():
                c = ln.accept()
                ch.send(c.read(100))
                c.close()
            netpoll.go(acc)
            host, port = str(ln.addr()).rsplit(":", 1)
            peer = subprocess.Popen([sys.executable, "-c",
                "import socket, time; time.sleep(0.5); "
                f"socket.create_connection(({host!r}, {port})).sendall(b'from the peer')"])
            try:
                return ch.recv()
            finally:
                peer.wait()
                ln.close()

        print(netpoll.run(main))
        """
    )
    assert (rc, out.strip()) == (0, "b'from the peer'"), err


def test_no_report_while_a_blocking_call_runs() -> None:
    """A netpoll.blocking call in flight will ready its G, which then sends."""
    rc, out, err = _run(
        """
        import time, netpoll

        def main():
            ch = netpoll.Chan()
            def worker():
                netpoll.blocking(time.sleep, 0.5)
                ch.send("after the pool call")
            netpoll.go(worker)
            return ch.recv()

        print(netpoll.run(main))
        """
    )
    assert (rc, out.strip()) == (0, "after the pool call"), err


def test_a_timeout_is_not_a_deadlock() -> None:
    """A receive with a timeout has a timer: it times out, no DeadlockError."""
    rc, out, err = _run(
        """
        import netpoll
        try:
            netpoll.run(lambda: netpoll.Chan().recv(timeout=0.5))
        except TimeoutError:
            print("timed out")
        """
    )
    assert (rc, out.strip()) == (0, "timed out"), err
