"""sysmon's starvation report: an M that has not reached its poller for too long.

Go's sysmon (``runtime/proc.go``) polls the network itself when no M has
for 10 ms, and preempts a G that ran for 10 ms.  Python can do neither: a
greenlet runs until it parks, and only its M may poll its poller.  What
sysmon can do is *say so*.  The per-goroutine hog report
(:func:`netpoll.core.sysmon._report_hog`) catches one goroutine that held its
M for :data:`~netpoll.core.sysmon.HOG_REPORT_SECONDS`; it misses the common
case of many goroutines that each block the thread a little (a library's own
stdlib socket calls, ``time.sleep``, file I/O), one after another, so that
no single call reaches the limit while the M does not poll for much longer.

This module watches the M instead: how many times it has polled
(``M.polls``, counted by the scheduler after each poll) and whether it is
asleep in its poller (``M.sleeping``).  When an M has been awake without
polling for more than :data:`STARVATION_REPORT_SECONDS` (reported when it
polls again, or while it goes on once it has lasted twice that), and
samples of its thread's stack taken every sysmon tick meanwhile show more
than one holder and no goroutine held it alone for the hog limit (the hog
report's case, not reported twice), the report names the M, how
long its I/O and timers waited, and the sampled stacks that held it, and
points at the cure: :func:`netpoll.blocking`, or netpoll's sockets for a
library (``netpoll.patch``).  At most one report per M per
:data:`STARVATION_REPEAT_SECONDS`.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from netpoll.core.m import M

#: Report an M that has not polled for this long.
STARVATION_REPORT_SECONDS = 0.1
#: At most one report per M in this many seconds.
STARVATION_REPEAT_SECONDS = 10.0
#: How many innermost frames of each sampled stack the report shows.
SAMPLE_FRAMES = 4
#: How many goroutine names the report lists per stack.
MAX_NAMES = 5


@dataclass
class _Episode:
    """What sysmon saw of one M since it last polled."""

    polls: int
    since: float
    #: The last look that found the M still not polled.
    last: float
    #: The M's switch count at the last look, and since when it has not changed.
    switches: int
    streak_since: float
    #: Some goroutine held the M alone for the hog limit: the hog report's case.
    hog: bool = False
    samples: Counter[tuple[str, str]] = field(default_factory=Counter)
    reported: bool = False


class StarvationMonitor:
    """Per-M bookkeeping of sysmon's starvation report (sysmon's thread only).

    An episode (awake, not polled) is reported when it ends having lasted
    :data:`STARVATION_REPORT_SECONDS`, or while it goes on once it has lasted
    twice that; waiting that long lets one goroutine's hold be recognised as
    the hog report's case, so the same stall is not reported twice.
    """

    def __init__(self, hog_seconds: float = STARVATION_REPORT_SECONDS) -> None:
        self._episodes: dict[M, _Episode] = {}
        self._last_report: dict[M, float] = {}
        self._hog_seconds = hog_seconds

    def observe(self, ms: list[M], now: float, tick: float) -> list[str]:
        """Look at ``ms`` once (every sysmon tick); the reports due now (never raises)."""
        try:
            return self._observe(ms, now, tick)
        except Exception:  # sysmon must live on; a report is not worth its thread
            self._episodes.clear()
            return []

    def _observe(self, ms: list[M], now: float, tick: float) -> list[str]:
        reports: list[str] = []
        for m in ms:
            polls = getattr(m, "polls", 0)
            switches = m.switches
            ep = self._episodes.get(m)
            if ep is None or m.sleeping or ep.polls != polls:
                # Asleep in the poller, or it polled since the last look: an
                # episode ended (reported if it qualifies), a new one starts.
                if ep is not None and self._due(m, ep, ep.last - ep.since, now):
                    reports.append(_message(m, ep.last - ep.since, ep.samples, tick, ended=True))
                self._episodes[m] = _Episode(polls, now, now, switches, now)
                continue
            ep.last = now
            if switches != ep.switches:
                ep.switches, ep.streak_since = switches, now
            elif now - ep.streak_since >= self._hog_seconds:
                ep.hog = True
            held = now - ep.since
            if held < tick / 2:
                continue
            ep.samples[_sample(m)] += 1
            if held >= 2 * STARVATION_REPORT_SECONDS and self._due(m, ep, held, now):
                reports.append(_message(m, held, ep.samples, tick, ended=False))
        for m in list(self._episodes):
            if m not in ms:
                del self._episodes[m]
                self._last_report.pop(m, None)
        return reports

    def _due(self, m: M, ep: _Episode, held: float, now: float) -> bool:
        """Report ``ep`` now? Marks it (and the M's time) reported if so."""
        if ep.reported or ep.hog or held < STARVATION_REPORT_SECONDS:
            return False
        if len({who for who, _ in ep.samples}) < 2:
            return False  # one goroutine alone: the hog report's case
        last = self._last_report.get(m)
        if last is not None and now - last < STARVATION_REPEAT_SECONDS:
            return False
        ep.reported = True
        self._last_report[m] = now
        return True


def _sample(m: M) -> tuple[str, str]:
    """``(holder, stack)``: the running goroutine's name and its innermost frames.

    Only names and line numbers are taken from the frames, and the frame
    objects are dropped at once: a frame object kept alive keeps the locals
    of a function that returned meanwhile, and a memoryview among them would
    keep its buffer from being resized (``BufferError`` in the sampled code).
    """
    g = m.running
    who = g.name if g is not None else f"{m.name}'s scheduler loop"
    frame = sys._current_frames().get(m.ident)  # the dict of every thread's frame dies here
    where: list[tuple[str, int, str]] = []
    while frame is not None and len(where) < 2 * SAMPLE_FRAMES:
        code = frame.f_code
        if not code.co_filename.endswith(_SCHED_FILES):  # a G's run() frame says nothing
            where.append((code.co_filename, frame.f_lineno, code.co_name))
        frame = frame.f_back
    del frame
    if not where:
        return who, "    (no stack)\n"
    frames = [traceback.FrameSummary(f, n, name) for f, n, name in reversed(where[:SAMPLE_FRAMES])]
    return who, "".join(traceback.format_list(frames))


#: The runtime's own files: a G's run(), its park, the M's loop say nothing.
_SCHED_FILES = tuple(
    os.path.join("netpoll", "core", f) for f in ("g.py", "park.py", "m.py", "sched.py")
)


def _message(
    m: M, held: float, samples: Counter[tuple[str, str]], tick: float, *, ended: bool
) -> str:
    how = "did not reach" if ended else "has not reached"
    lines = [
        f"netpoll: {m.name} {how} its poller for {held * 1000:.0f} ms: network "
        "readiness and timers of all its goroutines waited meanwhile.  No single goroutine "
        "was to blame; calls that block the thread (time.sleep, a library's own sockets, "
        "files, long computations) held it one after another.  Run such a call with "
        "netpoll.blocking(fn, *args); for a library that does its own socket I/O, give it "
        "netpoll's sockets (netpoll.patch, or netpoll.create_connection).  "
        f"What held {m.name} (stacks sampled every {tick * 1000:.0f} ms):"
    ]
    # Grouped by stack: many goroutines blocking in the same place are one cure.
    by_stack: dict[str, Counter[str]] = {}
    for (who, stack), n in samples.items():
        by_stack.setdefault(stack, Counter())[who] += n
    for stack, whos in sorted(by_stack.items(), key=lambda kv: -sum(kv[1].values())):
        names = ", ".join(sorted(whos)[:MAX_NAMES])
        if len(whos) > MAX_NAMES:
            names += f" and {len(whos) - MAX_NAMES} more goroutines"
        lines.append(f"  {sum(whos.values())} sample(s) in {names}:\n{stack.rstrip()}")
    return "\n".join(lines) + "\n"


__all__ = ["STARVATION_REPORT_SECONDS", "StarvationMonitor"]
