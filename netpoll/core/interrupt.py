"""Ctrl-C in ``netpoll.run``: SIGINT is delivered to the main goroutine.

gevent's hub catches a ``KeyboardInterrupt`` raised while it runs and throws
it into the main greenlet (``gevent/hub.py``, ``Hub.handle_error`` with
``SYSTEM_ERROR``); this does the same for the goroutine that
:func:`netpoll.run` started, so ``main``'s own ``except KeyboardInterrupt``
and ``finally`` blocks run, in order, before ``run`` returns or re-raises.

Where Python signal handlers run: CPython runs them only in the main
thread, between two bytecodes of whatever that thread executes, or when a
system call of that thread is interrupted (``EINTR``).  With ``netpoll.run``
in the main thread that is either a goroutine of its M or the M's hub (the
scheduler loop, usually blocked in the poller).  Python's default SIGINT
handler would raise ``KeyboardInterrupt`` right there, so it used to end in
the hub (``epoll.poll`` in the traceback) and never reach ``main``.

So, while ``run`` executes in the main thread and SIGINT has Python's
default handler, :class:`Delivery` installs its own:

* the main goroutine is running: ``KeyboardInterrupt`` is raised at once,
  where it runs (as Python would);
* anything else runs (the hub, another goroutine): the interrupt becomes
  *pending* and one byte is written to a pipe the M's poller watches (a
  system call, no lock: the handler may have interrupted code holding any
  lock).  The hub sees the pipe at its next poll and, from a timer (the hub's
  own context, between two Gs), throws ``KeyboardInterrupt`` into the main
  goroutine where it is parked;
* a second SIGINT while one is still pending raises ``KeyboardInterrupt``
  where the thread is, as before (a way out of a goroutine that never
  yields).

A handler the program installed itself is left alone; it runs as described
above, in whatever code the main thread executes, so it must not park.
``run`` in another thread changes nothing (signals never reach it).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import TYPE_CHECKING, Any

import greenlet

from netpoll.core.hookspecs import MODE_R
from netpoll.core.runtime import runtime

if TYPE_CHECKING:
    from netpoll.core.g import GreenletG
    from netpoll.core.m import M

_table = runtime.table


class MainFinished(BaseException):
    """Raised out of the scheduler loop when a delivered interrupt ended the main goroutine."""


class Delivery:
    """SIGINT delivery to one main goroutine (see the module docstring).

    It is also the poller token's owner for its pipe: the scheduler calls
    ``ready(mode)`` on ``token[0]`` when ``token[0].fdseq == token[1]``, as
    for a pollDesc.
    """

    fdseq = 1

    def __init__(self, m: M, main: GreenletG) -> None:
        self.m = m
        self.main = main
        #: True from a SIGINT until it was thrown into the main goroutine.
        self.pending = False
        self.rfd = self.wfd = -1
        self.registered = False
        self._previous: Any = None
        self._pid = os.getpid()

    # -- the pipe ---------------------------------------------------------------

    def _open(self) -> None:
        """A fresh non-blocking pipe, its read end registered with the M's poller."""
        self.rfd, self.wfd = os.pipe()  # non-inheritable (close-on-exec) by default
        os.set_blocking(self.rfd, False)
        os.set_blocking(self.wfd, False)
        self._pid = os.getpid()
        poller = self.m.poller
        try:
            _table.netpollopen(poller, self.rfd, (self, self.fdseq))
            if not self.m.edge_triggered:
                _table.netpollarm(poller, self.rfd, MODE_R)
            self.registered = True
        except (OSError, RuntimeError, ValueError, KeyError):
            self.registered = False  # delivery then waits for the hub's next wakeup

    def _close(self) -> None:
        """Deregister (only in the process that registered it) and close the pipe."""
        if self.rfd < 0:
            return
        poller = self.m.poller
        if self.registered and poller is not None and os.getpid() == self._pid:
            try:
                _table.netpollclose(poller, self.rfd)
            except (OSError, RuntimeError, ValueError):
                pass
        self.registered = False
        for fd in {self.rfd, self.wfd}:
            try:
                os.close(fd)
            except OSError:
                pass
        self.rfd = self.wfd = -1

    # -- install / uninstall -----------------------------------------------------

    def install(self) -> None:
        """Open the pipe and take over SIGINT (main thread, default handler only)."""
        self._open()
        self._previous = signal.signal(signal.SIGINT, self._handler)
        _active[id(self.m)] = self

    def uninstall(self) -> None:
        """Give SIGINT back to the previous handler and close the pipe."""
        _active.pop(id(self.m), None)
        try:
            if signal.getsignal(signal.SIGINT) == self._handler:
                signal.signal(signal.SIGINT, self._previous)
        finally:
            self._close()

    def after_fork(self, survives: bool) -> None:
        """In a forked child: new pipe for a surviving M; the parent's copies are closed."""
        self.registered = False  # with the parent's poller, which the child dropped
        for fd in {self.rfd, self.wfd}:
            if fd >= 0:
                try:
                    os.close(fd)  # the child's copy only: the parent keeps its pipe
                except OSError:
                    pass
        self.rfd = self.wfd = -1
        if survives:
            self._open()

    # -- the handler (main thread, between bytecodes) ----------------------------

    def _handler(self, signum: int, frame: Any) -> None:
        if greenlet.getcurrent() is self.main or self.pending or self.main.dead:
            raise KeyboardInterrupt
        self.pending = True
        try:
            os.write(self.wfd, b"\0")  # wakes the hub's poll; no lock taken
        except OSError:
            pass  # full (a byte is there already) or closed

    # -- the hub ------------------------------------------------------------------

    def ready(self, mode: int) -> None:
        """The pipe is readable (the hub, from its poll): schedule the delivery."""
        try:
            while os.read(self.rfd, 512):
                pass
        except OSError:
            pass
        if not self.m.edge_triggered and self.registered:
            try:
                _table.netpollarm(self.m.poller, self.rfd, MODE_R)
            except (OSError, RuntimeError, ValueError, KeyError):
                self.registered = False
        if self.pending:
            self.m.add_timer(0.0, self._deliver, None)

    def _deliver(self, _arg: Any) -> None:
        """Throw KeyboardInterrupt into the main goroutine (the hub, from a timer)."""
        g = self.main
        if not self.pending or g.dead:
            return
        if not g:  # not started yet: it would die without running run()
            self.m.add_timer(time.monotonic() + 0.001, self._deliver, None)
            return
        self.pending = False
        m = self.m
        m.running = g
        m.switches += 1
        try:
            g.throw(KeyboardInterrupt())
        finally:
            m.running = None
        if g.dead:
            raise MainFinished  # leave the scheduler loop: run() is over


#: The installed deliveries, by id of their M.
_active: dict[int, Delivery] = {}


def run_main(m: M, main: GreenletG) -> None:
    """``m.schedule(until=main)``, with SIGINT delivered to ``main`` where possible."""
    delivery: Delivery | None = None
    if (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    ):
        delivery = Delivery(m, main)
        delivery.install()
    try:
        m.schedule(until=main)
    except MainFinished:
        pass
    finally:
        if delivery is not None:
            delivery.uninstall()


def after_fork_in_child(survivor: M | None) -> None:
    """Give the surviving M's delivery a pipe of the child's own; drop the others."""
    for key, delivery in list(_active.items()):
        keep = delivery.m is survivor
        delivery.after_fork(keep)
        if not keep:
            del _active[key]


__all__ = ["Delivery", "MainFinished", "after_fork_in_child", "run_main"]
