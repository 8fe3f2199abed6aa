"""Races in the scheduler's handshakes, forced open with a slow step.

An M that is about to sleep and a thread that hands it work meet in the
``sleeping`` handshake of ``M.schedule`` / ``M.inject_g``: the M sets
``sleeping`` and then looks at its queue, the waker appends and then looks
at ``sleeping``.  These tests widen the windows in which that handshake can
be skipped and check that no work is left unrun.
"""

from __future__ import annotations

import dataclasses
import socket
import threading
import time

import pytest

import netpoll
from netpoll.core.fd import FD
from netpoll.core.procs import background_m
from netpoll.core.runtime import runtime

WAIT = 5.0


def test_work_handed_over_while_an_m_replaces_its_poller_is_run(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a backend switch an M replaces its poller on its next sleep.  While
    the new one is being made the M has no poller to break and ``sleeping`` is
    clear, so a waker skips the wake: the M must look at its queue again
    before it blocks on the new poller (it used to block for good)."""
    m = background_m()
    deadline = time.monotonic() + WAIT
    while not m.sleeping:
        assert time.monotonic() < deadline, "the background M never went to sleep"
        time.sleep(0.001)
    spec = runtime.spec()
    creating = threading.Event()
    go_on = threading.Event()

    def slow_create() -> object:
        creating.set()
        go_on.wait(WAIT)
        return spec.create()

    monkeypatch.setattr(runtime, "_spec", dataclasses.replace(spec, create=slow_create))
    # Not undone: every M then replaces its poller once more, which is harmless,
    # while an M left on a generation the runtime reaches again later would
    # keep a poller of the wrong backend.
    runtime.backend_generation += 1
    m.wake()  # the M goes round its loop and starts replacing its poller
    assert creating.wait(WAIT), "the M did not replace its poller"
    fired = threading.Event()
    m.add_timer(time.monotonic(), lambda _: fired.set(), None)  # handed over now
    go_on.set()
    assert fired.wait(WAIT), "work handed to the M while it replaced its poller never ran"


def test_an_fd_is_registered_with_the_backend_chosen_after_a_switch() -> None:
    """The background M sleeps on the old backend's poller when the backend is
    switched, and a G it is handed then runs before the M polls again.  The fd
    that G parks on must be registered with a poller of the new backend, not
    with the old one (which would then stay: an M keeps its poller while fds
    are registered with it)."""
    names = runtime.registry.available()
    if len(names) < 2:
        pytest.skip("only one backend is available on this platform")
    before = runtime.spec().name
    after = next(n for n in names if n != before)
    m = background_m()
    assert netpoll.go(lambda: None).join(WAIT)  # the M runs and polls on the current backend
    deadline = time.monotonic() + WAIT
    while not m.sleeping:
        assert time.monotonic() < deadline, "the background M never went to sleep"
        time.sleep(0.001)
    runtime.use_backend(after)
    try:
        a, b = socket.socketpair()
        with a, b:
            ours = a.dup()
            ours.setblocking(False)
            fd = FD(ours)
            try:
                g = netpoll.go(fd.read, 1)  # on m; parks: registers the fd there
                deadline = time.monotonic() + WAIT
                while fd.pd is None or fd.pd.m is None:
                    assert time.monotonic() < deadline, "the G never parked on the fd"
                    time.sleep(0.001)
                registered_with = fd.pd.m.poller.name
                b.send(b"!")
                assert g.join(WAIT) and g.result() == b"!"
            finally:
                fd.close()
        assert registered_with == after, (
            f"registered with {registered_with} after a switch to {after}"
        )
    finally:
        runtime.use_backend(before)
