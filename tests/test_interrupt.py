"""Ctrl-C reaches the main goroutine of ``netpoll.run`` (issue 18, item 2).

SIGINT used to raise ``KeyboardInterrupt`` in the hub (a traceback ending in
the backend's poll): ``main``'s own ``except``/``finally`` never ran before
``run`` unwound.  Now it is thrown into the main goroutine where it is parked.
The first tests send a real SIGINT to a server in a subprocess; the others
signal this process from a goroutine, so the handler runs while another G
(not main) is current, which is the case that needs the hub's delivery.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import netpoll
from tests.helpers.proc import child_env, dump_and_kill

pytestmark = pytest.mark.skipif(
    not hasattr(signal, "SIGINT") or sys.platform == "win32",
    reason="needs POSIX signals",
)

SERVER = textwrap.dedent(
    """
    import netpoll

    def main():
        ln = netpoll.listen("tcp", "127.0.0.1:0")
        def other():
            try:
                netpoll.sleep(60)
            finally:
                print("other: finally", flush=True)
        netpoll.go(other)
        print("ready", flush=True)
        try:
            ln.accept()
        except KeyboardInterrupt:
            print("main: caught KeyboardInterrupt", flush=True)
            if CATCH:
                return "main returned"
            raise
        finally:
            print("main: finally", flush=True)
            ln.close()

    try:
        print(netpoll.run(main), flush=True)
    except KeyboardInterrupt:
        print("outer: KeyboardInterrupt", flush=True)
        raise SystemExit(3)
    """
)


def _serve_and_interrupt(catch: bool, backend: str | None = None) -> tuple[int, list[str], str]:
    code = f"CATCH = {catch}\n" + SERVER
    env = child_env()
    if backend is not None:
        env["NETPOLL_BACKEND"] = backend
    with subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=env,
        text=True,
    ) as p:
        assert p.stdout is not None
        try:
            assert p.stdout.readline().strip() == "ready"
            time.sleep(0.3)  # main is parked in accept, the hub blocked in its poller
            p.send_signal(signal.SIGINT)
            out, err = p.communicate(timeout=20)
        except BaseException:
            dump_and_kill(p)
            raise
    return p.returncode, out.splitlines(), err


@pytest.mark.parametrize("backend_env", ["epoll", "poll", "select"])
def test_sigint_runs_mains_except_and_finally_in_order(backend_env: str) -> None:
    """A real SIGINT: main catches it, its finally runs, then the other G's, and run returns."""
    rc, lines, err = _serve_and_interrupt(catch=True, backend=backend_env)
    assert rc == 0, err
    assert lines == [
        "main: caught KeyboardInterrupt",
        "main: finally",
        "other: finally",
        "main returned",
    ], err


def test_an_uncaught_sigint_leaves_run_after_mains_finally() -> None:
    """Not caught in main: main's finally runs first, and run raises KeyboardInterrupt."""
    rc, lines, err = _serve_and_interrupt(catch=False)
    assert rc == 3, err
    assert lines == [
        "main: caught KeyboardInterrupt",
        "main: finally",
        "other: finally",
        "outer: KeyboardInterrupt",
    ], err
    assert "epoll.poll" not in err and "Traceback" not in err


def _interrupt_soon() -> None:
    """From a goroutine that is not main: SIGINT this process (its handler runs here)."""
    netpoll.sleep(0.05)
    os.kill(os.getpid(), signal.SIGINT)
    # The handler has run in this goroutine by now; keep running, so the hub
    # delivers while another G was current.
    for _ in range(3):
        netpoll.gosched()


@pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread()
    or signal.getsignal(signal.SIGINT) is not signal.default_int_handler,
    reason="needs the main thread with Python's default SIGINT handler",
)
class TestInProcess:
    """The handler, run while another goroutine is current."""

    def test_delivered_to_main_parked_on_a_channel(self) -> None:
        """Main parked on a Chan gets KeyboardInterrupt; its handler and finally run."""
        events: list[str] = []

        def main() -> str:
            netpoll.go(_interrupt_soon)
            try:
                netpoll.Chan().recv(timeout=10)
            except KeyboardInterrupt:
                events.append("caught")
            finally:
                events.append("finally")
            return "returned"

        assert netpoll.run(main) == "returned"
        assert events == ["caught", "finally"]
        # run gave SIGINT back to Python's handler.
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

    def test_delivered_while_the_m_stays_busy(self) -> None:
        """Other goroutines keep the run queue busy: delivery comes with the periodic poll."""
        stop = threading.Event()

        def spinner() -> None:
            while not stop.is_set():
                netpoll.gosched()

        def main() -> str:
            netpoll.go(spinner)
            netpoll.go(_interrupt_soon)
            try:
                netpoll.sleep(10)
            except KeyboardInterrupt:
                return "interrupted"
            finally:
                stop.set()
            return "slept"

        assert netpoll.run(main) == "interrupted"

    def test_uncaught_raises_from_run(self) -> None:
        """Uncaught in main, it leaves run as KeyboardInterrupt after main's finally."""
        events: list[str] = []

        def main() -> None:
            netpoll.go(_interrupt_soon)
            try:
                netpoll.sleep(10)
            finally:
                events.append("finally")

        with pytest.raises(KeyboardInterrupt):
            netpoll.run(main)
        assert events == ["finally"]

    def test_a_handler_of_the_program_is_left_alone(self) -> None:
        """A SIGINT handler installed before run stays installed and is called."""
        got: list[int] = []
        previous = signal.signal(signal.SIGINT, lambda signum, frame: got.append(signum))
        try:

            def main() -> object:
                netpoll.go(_interrupt_soon)
                netpoll.sleep(0.3)
                return signal.getsignal(signal.SIGINT)

            handler = netpoll.run(main)
        finally:
            signal.signal(signal.SIGINT, previous)
        assert got == [signal.SIGINT]
        assert handler is not signal.default_int_handler
