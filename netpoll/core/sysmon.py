"""sysmon: the runtime's watcher thread (Go's ``runtime/proc.go`` sysmon).

A daemon thread, started with the first M (:func:`ensure_running`), that
looks at every M each :data:`SYSMON_TICK` and reports what Python cannot
prevent: a goroutine that has held its M for longer than
:data:`HOG_REPORT_SECONDS` without parking (Python cannot preempt a
greenlet, so the report, once per G, with its stack, is what there is); an
M starved of its poller by several goroutines in turn
(:mod:`netpoll.core.starvation`); and a run whose goroutines can never be
woken again (:mod:`netpoll.core.deadlock`, raised out of ``run`` through a
timer on the M).
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

from netpoll.core import deadlock, starvation

if TYPE_CHECKING:
    from netpoll.core.g import GreenletG
    from netpoll.core.m import M

#: sysmon reports a G that held its M this long without parking.
HOG_REPORT_SECONDS = 0.1
#: How often sysmon looks.
SYSMON_TICK = 0.02

_monotonic = time.monotonic


class GoroutineHogWarning(RuntimeWarning):
    """A goroutine ran for too long without parking and held up its M."""


class StarvationWarning(GoroutineHogWarning):
    """An M did not reach its poller for too long, held by several goroutines in turn."""


class _Thread:
    """The sysmon thread of this process (a fork's child starts its own)."""

    __slots__ = ("thread",)

    def __init__(self) -> None:
        self.thread: threading.Thread | None = None


_sysmon = _Thread()


def ensure_running(all_ms: Callable[[], list[M]]) -> None:
    """Start sysmon, watching the Ms ``all_ms()`` returns, unless it runs already."""
    t = _sysmon.thread
    if t is None or not t.is_alive():
        t = threading.Thread(target=_loop, args=(all_ms,), name="netpoll-sysmon", daemon=True)
        _sysmon.thread = t
        t.start()


def _after_fork_in_child() -> None:
    _sysmon.thread = None  # the parent's: not in this process


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _loop(all_ms: Callable[[], list[M]]) -> None:
    seen: dict[M, tuple[int, float]] = {}
    starving = starvation.StarvationMonitor(HOG_REPORT_SECONDS)
    deadlocks = deadlock.DeadlockDetector()
    while True:
        time.sleep(SYSMON_TICK)
        ms = all_ms()
        if not ms:
            seen.clear()
            continue
        now = _monotonic()
        for m in ms:
            g = m.running
            switches = m.switches
            last = seen.get(m)
            if g is None or last is None or last[0] != switches:
                seen[m] = (switches, now)
                continue
            if now - last[1] >= HOG_REPORT_SECONDS and not g.hog_reported:
                g.hog_reported = True
                _report_hog(m, g, now - last[1])
        for m in list(seen):
            if m not in ms:
                del seen[m]
        for report in starving.observe(ms, now, SYSMON_TICK):
            warnings.warn(StarvationWarning(report), stacklevel=1)
        for m, report in deadlocks.observe(ms, now):
            m.add_timer(0.0, deadlock.raise_in_hub, (m, report))  # run() raises it


def _report_hog(m: M, g: GreenletG, held: float) -> None:
    frame = sys._current_frames().get(m.ident)
    stack = "".join(traceback.format_stack(frame)) if frame is not None else "(no stack)\n"
    warnings.warn(
        GoroutineHogWarning(
            f"netpoll: goroutine {g.name} has held {m.name} for {held * 1000:.0f} ms "
            f"without parking; the other goroutines of this M wait meanwhile.\n{stack}"
        ),
        stacklevel=1,
    )


__all__ = [
    "HOG_REPORT_SECONDS",
    "SYSMON_TICK",
    "GoroutineHogWarning",
    "StarvationWarning",
    "ensure_running",
]
