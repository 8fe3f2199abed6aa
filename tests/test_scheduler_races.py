"""Races in the scheduler's handshakes, forced open with a slow step.

An M that is about to sleep and a thread that hands it work meet in the
``sleeping`` handshake of ``M.schedule`` / ``M.inject_g``: the M sets
``sleeping`` and then looks at its queue, the waker appends and then looks
at ``sleeping``.  These tests widen the windows in which that handshake can
be skipped and check that no work is left unrun.
"""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest

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
