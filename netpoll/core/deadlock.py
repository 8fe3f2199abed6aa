"""Deadlock detection: "all goroutines are asleep - deadlock!" (Go's ``checkdead``).

Go's ``runtime/proc.go`` ``checkdead`` runs whenever an M goes idle and
counts Ms that could still run Go code; with none left and no timer pending,
the program can never make progress, and it dies with ``fatal error: all
goroutines are asleep - deadlock!``.  ``netpoll.run(lambda:
netpoll.Chan().recv())`` used to wait forever instead.

Here the check runs in sysmon (:mod:`netpoll.core.sysmon`), which already
looks at every M each tick, and it is conservative: a report means that
nothing in the process can ever wake a parked goroutine.  All of these must
hold, and keep holding, unchanged, for :data:`DEADLOCK_CONFIRM_SECONDS`:

* some :func:`netpoll.run` is in progress (its caller is who gets the error);
* every M is asleep in its poller with an empty run queue, an empty
  injection queue and no timer (so no sleep, deadline or timeout is pending);
* no goroutine or thread is parked on a descriptor (a peer could make it ready);
* no :func:`netpoll.blocking` call is in flight (its end readies its goroutine);
* no thread is alive beside netpoll's own (Ms, sysmon, the finalizer and the
  idle blocking pool): any other thread could send on a channel;
* the finalizer has nothing queued, and no Python signal handler is set
  beyond the defaults and netpoll's own SIGINT delivery (a handler could send).

Then the M of each ``run`` is handed a timer that, in its hub, checks its
own queues once more and raises :class:`DeadlockError` out of the scheduler;
``run`` ends the goroutines (their ``finally`` blocks run) and raises it.
The message names every parked goroutine and where it waits.
"""

from __future__ import annotations

import os
import signal
import threading
import traceback
from typing import TYPE_CHECKING, Any

from netpoll.core import finalizer, interrupt
from netpoll.core.runtime import runtime

if TYPE_CHECKING:
    from netpoll.core.g import GreenletG
    from netpoll.core.m import M

#: How long the deadlocked state must hold, unchanged, before it is reported.
DEADLOCK_CONFIRM_SECONDS = 0.1

#: :func:`netpoll.blocking` calls in flight (their futures; set ops are atomic).
pool_calls: set[Any] = set()

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: The runtime's own files: a G's run(), its park, the M's loop.
_SCHED_FILES = frozenset(
    os.path.join(_PACKAGE_DIR, "core", f) for f in ("g.py", "park.py", "m.py", "sched.py")
)


class DeadlockError(RuntimeError):
    """Raised by :func:`netpoll.run` when no goroutine can ever be woken again."""


class DeadlockDetector:
    """sysmon's side: decides, from its thread, when the process is deadlocked."""

    def __init__(self) -> None:
        self._signature: tuple[Any, ...] | None = None
        self._since = 0.0
        self._reported: tuple[Any, ...] | None = None

    def observe(self, ms: list[M], now: float) -> list[tuple[M, str]]:
        """Look once (every sysmon tick); ``(run M, report)`` pairs to raise in (never raises)."""
        try:
            return self._observe(ms, now)
        except Exception:  # a racing M changed under us: look again next tick
            self._signature = None
            return []

    def _observe(self, ms: list[M], now: float) -> list[tuple[M, str]]:
        runs = [m for m in ms if m.main_g is not None and not m.main_g.dead and not m.exited]
        if not runs or not all(_idle(m) for m in ms):
            self._signature = None
            return []
        signature = _signature(ms)
        if signature != self._signature:
            self._signature, self._since = signature, now
            return []
        if now - self._since < DEADLOCK_CONFIRM_SECONDS or signature == self._reported:
            return []
        if not _nothing_else_can_wake(ms) or _signature(ms) != signature:
            return []
        if not all(_idle(m) for m in ms):
            return []
        self._reported = signature
        report = _report(ms)
        return [(m, report) for m in runs]


def _idle(m: M) -> bool:
    """Asleep in its poller with nothing queued and no timer."""
    return bool(m.sleeping and not m.runq and not m.inject and not m.timers)


def _signature(ms: list[M]) -> tuple[Any, ...]:
    """What changes whenever an M does anything."""
    per_m = [(id(m), m.switches, getattr(m, "polls", 0), len(m.gs), m.sleeping) for m in ms]
    return (*per_m, runtime.cache.live)


def _nothing_else_can_wake(ms: list[M]) -> bool:
    """No parked I/O, no pool call, no other thread, no finalizer work, no signal handler."""
    if pool_calls:
        return False
    with runtime.cache._lock:
        pds = list(runtime.cache.live_set)
    for pd in pds:
        for g in (pd.rg, pd.wg):
            if g is not None and hasattr(g, "ready"):
                return False  # parked on a descriptor: a peer can wake it
    own = {m.ident for m in ms}
    own.add(threading.get_ident())
    for t in threading.enumerate():
        if t.ident in own or t.name.startswith("netpoll-"):
            continue  # ours: an M, sysmon, the finalizer or an idle pool thread
        if t.is_alive():
            return False
    if not finalizer._pending.empty():
        return False
    return not _signal_handlers()


def _signal_handlers() -> bool:
    """True if a Python signal handler is set that could send on a channel."""
    for sig in signal.valid_signals():
        try:
            h = signal.getsignal(sig)
        except (OSError, ValueError):
            continue
        if h in (None, signal.SIG_DFL, signal.SIG_IGN, signal.default_int_handler):
            continue
        if isinstance(getattr(h, "__self__", None), interrupt.Delivery):
            continue  # netpoll's own Ctrl-C delivery
        return True
    return False


def _where(g: GreenletG) -> str:
    """Where a parked goroutine waits: the netpoll call it made, and its innermost frames."""
    frame = g.gr_frame
    if frame is None:
        return "    (not started)\n"
    stack = traceback.extract_stack(frame)
    # What it waits for (the park's reason: frames of compiled netpoll code
    # do not exist, so the report names it the same way in both builds),
    # and the innermost frame of the program, which made the netpoll call.
    ours = [f.filename.startswith(_PACKAGE_DIR) for f in stack]
    head = ""
    site_index = -1
    if not all(ours):
        i = max(i for i, own in enumerate(ours) if not own)
        caller = stack[i]
        what = g.waitreason or "netpoll"
        at = f"{caller.filename}:{caller.lineno} in {caller.name}"
        head = f"    waits in {what}, called at {at}\n"
        if i + 1 < len(stack):
            site_index = i + 1  # the netpoll call itself (pure build)
    # The scheduler's own frames (a G's run(), park) say nothing, but the call site may be there.
    shown = [f for k, f in enumerate(stack) if f.filename not in _SCHED_FILES or k == site_index]
    return head + "".join(traceback.format_list(shown[-6:]))


def _report(ms: list[M]) -> str:
    lines = ["netpoll: all goroutines are asleep - deadlock!"]
    lines.append(
        "Nothing can wake them: no goroutine is runnable, no timer or deadline is pending, "
        "no goroutine or thread waits for I/O, no netpoll.blocking call is running, and no "
        "thread but netpoll's own is alive."
    )
    for m in ms:
        for g in sorted(m.gs, key=lambda g: g.name):
            if not g.dead:
                lines.append(f"\ngoroutine {g.name} on {m.name}:\n{_where(g).rstrip()}")
    return "\n".join(lines) + "\n"


def raise_in_hub(arg: tuple[M, str]) -> None:
    """The timer sysmon hands a deadlocked run's M: raise, unless it woke meanwhile."""
    m, report = arg
    if m.runq or m.inject or m.main_g is None or m.main_g.dead:
        return  # something woke it after all; sysmon looks again
    raise DeadlockError(report)


__all__ = ["DEADLOCK_CONFIRM_SECONDS", "DeadlockDetector", "DeadlockError", "raise_in_hub"]
