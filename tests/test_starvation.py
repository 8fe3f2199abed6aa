"""sysmon reports an M starved of its poller by many short blocking calls (issue 18, item 4).

The per-goroutine hog report needs one goroutine to hold its M for 100 ms;
goroutines that each block the thread for 30 ms, one after another, kept
the M from its poller (network readiness, timers) for far longer and went
unreported.  Timing is checked by generous bounds only.
"""

from __future__ import annotations

import re
import time
import warnings

import netpoll
from netpoll.core import sysmon
from netpoll.core.starvation import STARVATION_REPORT_SECONDS

BLOCK = 0.03  # each call well under the hog limit
N = 10  # together 300 ms, three times the starvation limit


def _blockers(block: object) -> list[str]:
    """Run N goroutines that each call ``block(BLOCK)``, in a row; the warnings' texts."""

    def main() -> None:
        done: netpoll.Chan[int] = netpoll.Chan(N)

        def blocker(i: int) -> None:
            block(BLOCK)  # type: ignore[operator]
            done.send(i)

        for i in range(N):
            netpoll.go(blocker, i)
        for _ in range(N):
            done.recv(timeout=10)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        netpoll.run(main)
        time.sleep(2 * sysmon.SYSMON_TICK)  # a report of the last tick lands too
    return [
        f"{w.category.__name__}: {w.message}"
        for w in caught
        if issubclass(w.category, sysmon.GoroutineHogWarning)
    ]


def test_short_blocking_calls_in_a_row_are_reported_once() -> None:
    """No single call reaches the hog limit; the M's starvation is reported, with the cure."""
    assert BLOCK < sysmon.HOG_REPORT_SECONDS and N * BLOCK > 2 * STARVATION_REPORT_SECONDS
    reports = _blockers(time.sleep)
    assert len(reports) == 1, reports
    text = reports[0]
    assert text.startswith("StarvationWarning: netpoll: run-")
    assert re.search(r"run-\S+ (has not reached|did not reach) its poller for \d+ ms", text), text
    assert "netpoll.blocking" in text and "netpoll.patch" in text
    # The sampled stacks show what held the M: the blockers, in time.sleep.
    assert "in blocker" in text and "block(BLOCK)" in text
    assert len(set(re.findall(r"G\d+:\S*blocker", text))) >= 2


def test_the_same_calls_through_blocking_are_not_reported() -> None:
    """With netpoll.blocking the M keeps polling: no report."""
    assert _blockers(lambda s: netpoll.blocking(time.sleep, s)) == []


def test_parking_goroutines_are_not_reported() -> None:
    """Goroutines that park (netpoll.sleep) for the same time: no report."""
    assert _blockers(netpoll.sleep) == []


def test_a_single_hog_gets_the_hog_report_only() -> None:
    """One goroutine holding the M for 300 ms is the hog report's case, not this one."""

    def spin(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            pass

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        netpoll.run(lambda: netpoll.go(spin, 3 * STARVATION_REPORT_SECONDS).join(10))
        time.sleep(2 * sysmon.SYSMON_TICK)
    kinds = [w.category for w in caught if issubclass(w.category, sysmon.GoroutineHogWarning)]
    assert kinds == [sysmon.GoroutineHogWarning]
