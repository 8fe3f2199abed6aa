"""Declarative, deterministic faults on top of the :class:`~netpoll.testing.switch.Switch`.

Go's tests write socktest filters by hand (``net/internal/socktest``'s
``switch.go`` filters, used by ``net/error_test.go``, ``dial_test.go``,
``timeout_test.go``...).  This module packages the common ones as rules a
test declares up front::

    with Faults() as f:
        f.fail("connect", errno.ECONNREFUSED, times=2)   # two refusals, then real
        f.reset_after(100)                               # next conn resets after 100 bytes
        f.short("write", 7)                              # every write takes at most 7 bytes
        run_the_client()

A :class:`Faults` owns one filter *layer* on a Switch (its own, or one you
pass in, e.g. the pytest ``netpoll_switch`` fixture's), so ``Switch.set``
filters and fault rules can be used together.  Every helper returns a
:class:`Rule`; rules apply in the order they were added.

The same conventions hold for every helper:

``times``
    How many faults the rule injects; ``None`` (the default of every
    helper) means every matching call until the rule is removed or the
    ``with`` block ends, like a Switch filter.  ``times=1`` is a one-off.
    The one unit that is not a call: ``reset_after`` counts *connections*
    (a reset connection stays reset).
``after``
    The first ``after`` matching calls are let through untouched.
``where``
    A predicate on the :class:`~netpoll.testing.switch.Status` narrowing the
    calls (:func:`on_address`, :func:`on_fd`, :func:`on_thread`, or yours).
``rule.fired``
    How many calls the rule changed (failed, delayed, shortened, answered
    with EAGAIN, blackholed, reset, or a poller wait it added fake events
    to).  Each of them is exactly one :class:`Injection` in
    :attr:`Faults.log`, so ``rule.fired == len(faults.injections(rule))``.
    ``times`` caps ``fired`` (except for ``reset_after``, see above).
``rule.seen``
    How many matching calls the rule looked at, whatever it did to them
    (for ``reset_after`` too: every call on a targeted connection counts;
    for ``spurious_wakeups`` the calls are the poller waits it looked at).
``faults.log``
    Structured :class:`Injection` records, in order: which rule, which call
    kind and fd, the ``action`` taken and its ``errno``/``value``.

The path of a rule, from the call that adds it to the syscall: a helper
(``f.short("read", 3)``) makes a :class:`Rule`; ``Faults._add`` appends it
to ``Faults._rules`` and sets ``Faults._filter``, the one filter of this
Faults, on the Switch for each kind the rule injects into (``rule.kinds``)
or watches (``rule.watch``).  The Switch registers its hook for that kind
and the syscall table calls it (see "How a filter reaches a call" in
:mod:`netpoll.testing.switch`).  On each call the Switch calls
``Faults._filter``, which calls ``before`` of every rule naming the kind:
``_Short.before`` sets ``status.max_bytes``, and the Switch hands the OS
call a buffer cut to that size; ``_ResetAfter.before`` does the same up to
the byte boundary, then raises ``ECONNRESET``.

Nesting two ``Faults()``: each creates and installs its own Switch, and the
one installed last wraps the calls *outside* the other, so it sees every
call first.  A call its rule fails before the syscall never reaches the
outer (earlier) Switch: the outer one's statistics, socket table and rules
do not see it.  To have one view of everything, layer the inner rules on
the outer Switch instead, ``Faults(outer.switch)`` (the ``netpoll_faults``
fixture does this with ``netpoll_switch``): one Switch then counts every
call, and the layers' rules apply in the order the layers were first used.

Determinism: a rule decides from its own counters (``after`` matching calls
are let through, then ``times`` are failed), never from the clock, and
:meth:`Faults.chaos` draws each decision from ``(seed, kind, call index)``,
so the same calls get the same faults for the same seed.

The fault kinds and how they are realised:

``fail``           the call fails with an errno, before the syscall (default)
                   or after it (``when="after"``: the real call ran, a created
                   socket is closed by the Switch).
``delay``          sleep before the syscall (a slow connect, a slow close...).
``short``          the syscall sees at most ``max_bytes`` of the buffer.
``eagain``         the call reports ``EAGAIN`` without running, and (``wake``)
                   a readiness event is then posted to the caller's wait, so
                   the parked operation retries: an EAGAIN storm.  A
                   goroutine gets it through its M's ``netpoll``, a plain
                   thread (parked in the kernel on its own fd, where no M
                   looks) through its own ``netpollwait``.  With
                   ``wake=False`` nothing wakes it: a lost wakeup, which only
                   the deadline (or new data) ends.
``blackhole_connect``  connect reports ``EINPROGRESS`` without connecting;
                   the poller never reports the socket writable and
                   ``SO_ERROR`` keeps saying ``EINPROGRESS``, so the dial
                   ends only at its deadline or cancel.  Loopback only: no
                   packet is ever sent.
``reset_after``    a connection's reads (or writes) fail with ``ECONNRESET``
                   once it has transferred ``nbytes``.
``spurious_wakeups``  the poller reports readiness that is not there.
``chaos``          seeded random mix of the above over chosen kinds.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import random
import socket as _socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from netpoll.core.hookspecs import MODE_R, MODE_RW, MODE_W
from netpoll.core.sched import current_g as _current_g
from netpoll.core.sched import sleep as _park_or_sleep
from netpoll.testing.switch import IO_KINDS, AfterFilter, Status, Switch

__all__ = [
    "CHAOS_ACTIONS",
    "INJECTION_ACTIONS",
    "Faults",
    "Injection",
    "Rule",
    "on_address",
    "on_fd",
    "on_thread",
]

_R = TypeVar("_R", bound="Rule")

#: Predicate a rule's ``where`` takes.
Where = Callable[[Status], bool]

#: What :meth:`Faults.chaos` may inject, per kind: an errno (the call fails
#: with it), "short" (a short read/write), "eagain" (EAGAIN + wakeup) or
#: "delay" (a few milliseconds).
CHAOS_ACTIONS: dict[str, tuple[int | str, ...]] = {
    "socket": (errno.EMFILE, errno.ENFILE),
    "connect": (errno.ECONNREFUSED, errno.ETIMEDOUT, errno.ENETUNREACH),
    "listen": (errno.EADDRINUSE,),
    "accept": (errno.ECONNABORTED, errno.EMFILE, "eagain"),
    "getsockopt": (errno.ENOBUFS,),
    "close": (errno.EIO,),
    "read": (errno.ECONNRESET, "short", "eagain"),
    "write": (errno.EPIPE, errno.ECONNRESET, "short", "eagain"),
    "recvfrom": (errno.ECONNREFUSED, "short", "eagain"),
    "sendto": (errno.ENOBUFS, "eagain"),
    "netpoll": ("delay",),
}

# Which readiness an operation of a kind waits for (eagain's wakeup).
_MODE_OF = {
    "read": MODE_R,
    "recvfrom": MODE_R,
    "accept": MODE_R,
    "write": MODE_W,
    "sendto": MODE_W,
    "connect": MODE_W,
}


def make_error(err: int | BaseException | type[BaseException]) -> BaseException:
    """A fresh exception for ``err``: an errno, an exception class or instance.

    ``OSError(errno, strerror)`` picks the builtin subclass
    (:class:`ConnectionRefusedError` for ``ECONNREFUSED``...).  Instances are
    copied, because the net layer annotates the exception it is given.
    """
    if isinstance(err, int):
        return OSError(err, os.strerror(err))
    if isinstance(err, type):
        if issubclass(err, OSError):
            code = _DEFAULT_ERRNO.get(err)
            return err(code, os.strerror(code)) if code is not None else err()
        return err()
    try:
        return type(err)(*err.args)
    except TypeError:
        return err


_DEFAULT_ERRNO: dict[type[BaseException], int] = {
    ConnectionRefusedError: errno.ECONNREFUSED,
    ConnectionResetError: errno.ECONNRESET,
    ConnectionAbortedError: errno.ECONNABORTED,
    BrokenPipeError: errno.EPIPE,
    TimeoutError: errno.ETIMEDOUT,
    BlockingIOError: errno.EAGAIN,
    InterruptedError: errno.EINTR,
    PermissionError: errno.EPERM,
}


# -- predicates ------------------------------------------------------------------


def _norm_host(host: str) -> str:
    host = host.strip("[]").split("%")[0]
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def _address_key(addr: Any) -> Any:
    """A comparable form of a socket address, ``"host:port"`` text or Addr object."""
    if isinstance(addr, tuple) and len(addr) >= 2:
        return (_norm_host(str(addr[0])), int(addr[1]))
    text = str(addr)
    if text.count(":") >= 1 and not text.startswith("/") and not text.startswith("@"):
        host, _, port = text.rpartition(":")
        if port.isdigit():
            return (_norm_host(host), int(port))
    return text


def on_address(match: Any) -> Where:
    """A ``where`` for calls whose ``address`` argument is ``match``.

    ``match`` is a socket address tuple, ``"host:port"`` text, an address
    object (``ln.addr()``), a Unix path, or a callable taking the address.
    """
    if callable(match):
        fn: Callable[[Any], bool] = match
        return lambda st: st.address is not None and bool(fn(st.address))
    key = _address_key(match)
    return lambda st: st.address is not None and _address_key(st.address) == key


def on_fd(target: Any) -> Where:
    """A ``where`` for calls on one descriptor: an fd number or anything with ``fileno()``."""
    fd = target if isinstance(target, int) else int(target.fileno())
    return lambda st: st.fd == fd


def on_thread(thread: threading.Thread | None = None) -> Where:
    """A ``where`` for calls made by ``thread`` (default: the calling thread).

    Handy when the code under test and a test server share the process:
    ``f.reset_after(3, where=on_thread())`` resets the client's reads only.
    """
    ident = (thread or threading.current_thread()).ident
    return lambda _st: threading.get_ident() == ident


def _all(*preds: Where | None) -> Where | None:
    ps = [p for p in preds if p is not None]
    if not ps:
        return None
    if len(ps) == 1:
        return ps[0]
    return lambda st: all(p(st) for p in ps)


# -- the poller side ------------------------------------------------------------


def _runtime() -> Any:
    from netpoll.core.runtime import runtime

    return runtime


def _token_fd(token: object) -> int:
    """The fd of a poller token (-1: stale)."""
    fd: int = _runtime().cache.fd_of(token)
    return fd


def _break_poller() -> None:
    """Make every M's poller return, so pending fake events are delivered."""
    from netpoll.core.sched import break_all_pollers

    break_all_pollers()


# -- rules -------------------------------------------------------------------------


#: The values of :attr:`Injection.action`.
INJECTION_ACTIONS = ("fail", "delay", "short", "eagain", "blackhole", "reset", "spurious")


@dataclass(frozen=True)
class Injection:
    """One call a rule changed, as recorded in :attr:`Faults.log`.

    ``rule`` is the rule's name ("fail", "chaos", ...) and ``source`` the
    :class:`Rule` itself; ``kind`` and ``fd`` say which call (``fd`` is -1
    for ``socket`` and ``netpoll``); ``action`` is one of
    :data:`INJECTION_ACTIONS`.  ``errno`` is the error the caller saw (fail,
    eagain, reset) and ``error`` its class name; ``value`` is the delay in
    seconds, the byte limit of a short call, the byte count after which a
    connection reset, or the number of fake events of a spurious wakeup.
    ``when`` is "after" for a fail that let the syscall run; ``wake`` is
    False for an EAGAIN with no wakeup; ``index`` is chaos's call index;
    ``thread`` the calling thread's name.  ``what`` is a one-line text.
    """

    rule: str
    kind: str
    fd: int
    action: str
    errno: int | None = None
    error: str = ""
    value: float | None = None
    when: str = "before"
    wake: bool = True
    index: int | None = None
    thread: str = ""
    source: Rule | None = field(default=None, compare=False, repr=False)

    @property
    def what(self) -> str:
        """A human-readable summary of the fault."""
        code = errno.errorcode.get(self.errno, self.error) if self.errno is not None else ""
        value = "?" if self.value is None else f"{self.value:g}"
        if self.action == "fail":
            text = f"{self.when}: {code or self.error}"
        elif self.action == "delay":
            text = f"sleep {value}"
        elif self.action == "short":
            text = f"short: at most {value} bytes"
        elif self.action == "eagain":
            text = "EAGAIN" + (" + wakeup" if self.wake else " (no wakeup)")
        elif self.action == "blackhole":
            text = "blackhole"
        elif self.action == "reset":
            text = f"reset after {value} bytes: {code}"
        else:
            text = f"{value} fake event(s)"
        if self.index is not None:
            text = f"chaos #{self.index}: {text}"
        return text


class Rule:
    """One declared fault: which calls, how often, and what happens to them.

    ``kinds`` are the filter kinds it injects into; ``where`` (a predicate on
    the :class:`Status`) narrows them; the first ``after`` matching calls are
    let through, then the next ``times`` (None: all) get the fault.
    ``fired`` counts the calls the rule changed (one :class:`Injection`
    each), ``seen`` the matching calls it looked at.  See the module
    docstring for the conventions every helper follows.
    """

    #: Extra kinds a rule watches without injecting (bookkeeping).
    watch: tuple[str, ...] = ()

    def __init__(
        self,
        name: str,
        kinds: Iterable[str],
        *,
        times: int | None = None,
        after: int = 0,
        where: Where | None = None,
    ) -> None:
        if times is not None and times < 0:
            raise ValueError(f"netpoll: times must be >= 0 or None, not {times}")
        if after < 0:
            raise ValueError(f"netpoll: after must be >= 0, not {after}")
        self.name = name
        self.kinds = tuple(Switch.kind_name(k) for k in kinds)
        self.times = times
        self.after = after
        self.where = where
        self.seen = 0
        self.fired = 0
        self.active = True
        self._lock = threading.Lock()
        self._faults: Faults | None = None

    def __repr__(self) -> str:
        state = "active" if self.active else "removed"
        return f"<Rule {self.name} {'/'.join(self.kinds)} fired={self.fired} {state}>"

    def _claim(self, st: Status) -> bool:
        """Count a matching call; True when this one gets the fault."""
        if not self.active or (self.where is not None and not self.where(st)):
            return False
        with self._lock:
            self.seen += 1
            if self.seen <= self.after:
                return False
            if self.times is not None and self.fired >= self.times:
                return False
            self.fired += 1
        return True

    @property
    def exhausted(self) -> bool:
        """True once ``times`` faults have been injected."""
        return self.times is not None and self.fired >= self.times

    def before(self, st: Status) -> AfterFilter | None:
        """Called before a call of one of :attr:`kinds`; raise to fail it."""
        return None

    def observe(self, st: Status) -> AfterFilter | None:
        """Called before a call of one of :attr:`watch` (never raises)."""
        return None

    def remove(self) -> None:
        """Stop injecting; the rule is taken off its :class:`Faults`."""
        faults = self._faults
        if faults is not None:
            faults._remove(self)
        else:
            self._stop()

    def _stop(self) -> None:
        self.active = False

    def _record(self, st: Status, action: str, **details: Any) -> None:
        faults = self._faults
        if faults is not None:
            name = threading.current_thread().name
            inj = Injection(self.name, st.kind, st.fd, action, thread=name, source=self, **details)
            faults._record(inj)


def _error_details(exc: BaseException) -> dict[str, Any]:
    code = getattr(exc, "errno", None)
    return {"errno": code if isinstance(code, int) else None, "error": type(exc).__name__}


class _Fail(Rule):
    def __init__(self, kinds: Iterable[str], err: Any, when: str, **kw: Any) -> None:
        super().__init__("fail", kinds, **kw)
        if when not in ("before", "after"):
            raise ValueError(f"netpoll: when must be 'before' or 'after', not {when!r}")
        make_error(err)  # validate now
        self.err = err
        self.when = when

    def before(self, st: Status) -> AfterFilter | None:
        if not self._claim(st):
            return None
        exc = make_error(self.err)
        self._record(st, "fail", when=self.when, **_error_details(exc))
        if self.when == "before":
            raise exc

        def replace(_st: Status) -> Any:
            raise make_error(self.err)

        return replace


class _Delay(Rule):
    def __init__(self, kinds: Iterable[str], seconds: float, **kw: Any) -> None:
        super().__init__("delay", kinds, **kw)
        if seconds < 0:
            raise ValueError(f"netpoll: negative delay {seconds}")
        self.seconds = seconds

    def before(self, st: Status) -> AfterFilter | None:
        if self._claim(st):
            self._record(st, "delay", value=self.seconds)
            # A goroutine parks for the delay (its M runs the others, as
            # during a slow syscall in Go); a thread sleeps.
            _park_or_sleep(self.seconds)
        return None


class _Short(Rule):
    def __init__(self, kinds: Iterable[str], max_bytes: int, **kw: Any) -> None:
        super().__init__("short", kinds, **kw)
        for k in self.kinds:
            if k not in IO_KINDS:
                raise ValueError(f"netpoll: short applies to {IO_KINDS}, not {k!r}")
        if max_bytes < 1:
            raise ValueError(f"netpoll: max_bytes must be >= 1, not {max_bytes}")
        self.max_bytes = max_bytes

    def before(self, st: Status) -> AfterFilter | None:
        if self._claim(st):
            cur = st.max_bytes
            st.max_bytes = self.max_bytes if cur is None else min(cur, self.max_bytes)
            self._record(st, "short", value=st.max_bytes)
        return None


class _Eagain(Rule):
    def __init__(self, kinds: Iterable[str], wake: bool, **kw: Any) -> None:
        super().__init__("eagain", kinds, **kw)
        for k in self.kinds:
            if k not in _MODE_OF or k == "connect":
                raise ValueError(
                    f"netpoll: eagain applies to read/write/accept/recvfrom/sendto, not {k!r}"
                )
        self.wake = wake
        # netpoll: an M delivers the wakeup; netpollwait: a thread parked in
        # the kernel gets it in its own wait (Faults._post_ready).
        self.watch = ("netpoll", "netpollwait") if wake else ()

    def before(self, st: Status) -> AfterFilter | None:
        if not self._claim(st):
            return None
        self._record(st, "eagain", errno=errno.EAGAIN, error="BlockingIOError", wake=self.wake)
        faults = self._faults
        if self.wake and faults is not None:
            # Posted before the raise, delivered by the poller after it: the
            # pollDesc's ready latch keeps it for the wait that follows.
            faults._post_ready(st.fd, _MODE_OF[st.kind])
        raise BlockingIOError(errno.EAGAIN, os.strerror(errno.EAGAIN))


class _Blackhole(Rule):
    """connect → EINPROGRESS, never writable, SO_ERROR stays EINPROGRESS."""

    watch = ("getsockopt", "netpoll", "netpollwait", "close")

    #: How long a parked thread's wait on a blackholed fd lasts before it
    #: looks again: its poll(2) sees the unconnected socket "ready" at once,
    #: and without a pause the dial would spin until its deadline.
    QUIET = 0.02

    def __init__(self, **kw: Any) -> None:
        super().__init__("blackhole_connect", ("connect",), **kw)
        self._holes: set[int] = set()

    def before(self, st: Status) -> AfterFilter | None:
        if not self._claim(st):
            return None
        with self._lock:
            self._holes.add(st.fd)
        self._record(st, "blackhole")
        # The real connect never runs, so no SYN leaves and the socket stays
        # unconnected until the dial gives up and closes it.
        raise BlockingIOError(errno.EINPROGRESS, os.strerror(errno.EINPROGRESS))

    def observe(self, st: Status) -> AfterFilter | None:
        holes = self._holes
        if not holes:
            return None
        if st.kind == "close":
            with self._lock:
                holes.discard(st.fd)
            return None
        if st.kind == "getsockopt":
            if st.fd in holes and st.args.get("option") == _socket.SO_ERROR:
                # An unconnected socket reads SO_ERROR 0; say "still trying".
                return lambda _st: errno.EINPROGRESS
            return None
        if st.kind == "netpoll":
            return self._strip
        if st.kind == "netpollwait" and st.fd in holes:
            return self._quiet_wait
        return None

    def _quiet_wait(self, st: Status) -> None:
        # A thread's own wait on the blackholed fd: nothing happens for a
        # while (the SYN went nowhere); a wakeup of its wake fd still counts.
        if st.error is None and st.result and st.result & MODE_RW:
            timeout = st.args.get("timeout")
            time.sleep(self.QUIET if timeout is None else max(0.0, min(self.QUIET, timeout)))
            st.result = st.result & ~MODE_RW

    def _strip(self, st: Status) -> None:
        # Linux reports an unconnected stream socket as writable + hung up;
        # hide that, so the dial parks until its deadline instead of spinning.
        if st.error is None and st.result:
            holes = self._holes
            kept = [ev for ev in st.result if _token_fd(ev[0]) not in holes]
            if len(kept) != len(st.result):
                st.result = kept


class _ResetAfter(Rule):
    """Per connection: after ``nbytes`` read (or written), every call fails.

    ``times`` counts connections; ``fired`` the calls failed with the reset
    error (every call on a reset connection); ``seen`` every matching call
    the rule looked at, as for every rule; ``connections`` the connections
    that were reset.
    """

    watch = ("close",)

    def __init__(self, kind: str, nbytes: int, err: Any, **kw: Any) -> None:
        super().__init__("reset_after", (kind,), **kw)
        if self.kinds[0] not in ("read", "write"):
            raise ValueError(f"netpoll: reset_after applies to read or write, not {kind!r}")
        if nbytes < 0:
            raise ValueError(f"netpoll: negative nbytes {nbytes}")
        self.nbytes = nbytes
        self.err = err
        self._count: dict[int, int] = {}  # fd -> bytes so far, for targeted conns
        self._targets = 0
        # Matching calls on connections not (yet) targeted: what ``after`` counts.
        self._untargeted = 0
        #: Connections that reached ``nbytes`` and were reset.
        self.connections = 0

    def _target(self, st: Status) -> bool:
        fd = st.fd
        if fd in self._count:
            with self._lock:
                self.seen += 1  # every matching call counts, as for every rule
            return True
        if not self.active or (self.where is not None and not self.where(st)):
            return False
        with self._lock:
            self.seen += 1
            self._untargeted += 1
            if self._untargeted <= self.after:
                return False
            if self.times is not None and self._targets >= self.times:
                return False
            self._targets += 1
            self._count[fd] = 0
        return True

    def before(self, st: Status) -> AfterFilter | None:
        if not self._target(st):
            return None
        fd = st.fd
        done = self._count.get(fd, 0)
        remaining = self.nbytes - done
        if remaining <= 0:
            with self._lock:
                if done == self.nbytes:
                    self.connections += 1
                    self._count[fd] = self.nbytes + 1  # reset happened: sticky
                self.fired += 1
            exc = make_error(self.err)
            self._record(st, "reset", value=self.nbytes, **_error_details(exc))
            raise exc
        cur = st.max_bytes
        st.max_bytes = remaining if cur is None else min(cur, remaining)

        def count(st: Status) -> None:
            if st.error is None and isinstance(st.result, int) and st.result > 0:
                with self._lock:
                    if fd in self._count:
                        self._count[fd] += st.result

        return count

    def observe(self, st: Status) -> AfterFilter | None:
        if st.kind == "close" and st.fd in self._count:
            with self._lock:
                self._count.pop(st.fd, None)
        return None


class _Spurious(Rule):
    """Readiness events that are not there, on live descriptors."""

    watch = ("netpoll", "netpollwait")

    def __init__(self, rate: float, seed: int, interval: float, **kw: Any) -> None:
        super().__init__("spurious_wakeups", (), **kw)
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"netpoll: rate must be in [0, 1], not {rate}")
        self.rate = rate
        self.interval = interval
        self._rng = random.Random(seed)
        self._stopping = threading.Event()
        self._ticker: threading.Thread | None = None
        #: Fake readiness events added so far (``fired`` counts the waits they
        #: were added to: an M's ``netpoll``, or a parked thread's ``netpollwait``).
        self.events = 0

    def _start(self) -> None:
        if self.interval > 0:
            # A blocked poller only returns when something happens; the ticker
            # makes it return often, so there is something to add events to.
            t = threading.Thread(target=self._tick, name="netpoll-faults-ticker", daemon=True)
            self._ticker = t
            t.start()

    def _tick(self) -> None:
        while not self._stopping.wait(self.interval):
            _break_poller()

    def _stop(self) -> None:
        super()._stop()
        self._stopping.set()
        t = self._ticker
        if t is not None and t is not threading.current_thread():
            t.join()
        self._ticker = None

    def observe(self, st: Status) -> AfterFilter | None:
        if not self.active:
            return None
        if st.kind == "netpollwait":
            return self._add_to_wait
        return self._add if st.kind == "netpoll" else None

    def _add_to_wait(self, st: Status) -> None:
        # A parked thread's wait: report its fd ready although it may not be.
        if st.error is not None or st.fd < 0:
            return
        if self.where is not None and not self.where(st):
            return
        with self._lock:
            self.seen += 1
            hit = self._rng.random() < self.rate
            if hit:
                self.fired += 1
                self.events += 1
        if hit:
            self._record(st, "spurious", value=1)
            st.result = int(st.result or 0) | MODE_RW

    def _add(self, st: Status) -> None:
        if st.error is not None:
            return
        extra = []
        where = self.where
        with self._lock:
            self.seen += 1
            for _fd, token in _runtime().cache.registered():
                if self._rng.random() < self.rate:
                    extra.append((token, MODE_RW))
        if where is not None:
            extra = [
                ev for ev in extra if where(Status("netpoll", st.cookie, _token_fd(ev[0]), {}))
            ]
        if not extra:
            return
        # Counted after ``where``: only events that reach the poller's caller.
        with self._lock:
            self.fired += 1
            self.events += len(extra)
        self._record(st, "spurious", value=len(extra))
        st.result = [*(st.result or ()), *extra]


class _Chaos(Rule):
    """Seeded faults: decision i of kind k depends only on (seed, k, i)."""

    def __init__(
        self,
        seed: int | str,
        rate: float,
        kinds: Iterable[str],
        actions: dict[str, Sequence[int | str]] | None,
        **kw: Any,
    ) -> None:
        super().__init__("chaos", kinds, times=None, **kw)
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"netpoll: rate must be in [0, 1], not {rate}")
        self.seed = seed
        self.rate = rate
        self.actions: dict[str, tuple[int | str, ...]] = {}
        for k in self.kinds:
            acts = tuple((actions or {}).get(k, CHAOS_ACTIONS.get(k, ())))
            if not acts:
                raise ValueError(f"netpoll: chaos has no actions for kind {k!r}")
            for a in acts:
                if isinstance(a, str) and a not in ("short", "eagain", "delay"):
                    raise ValueError(f"netpoll: unknown chaos action {a!r}")
                if a == "short" and k not in IO_KINDS:
                    raise ValueError(f"netpoll: chaos action 'short' needs an I/O kind, not {k!r}")
                if a == "eagain" and (k not in _MODE_OF or k == "connect"):
                    raise ValueError(f"netpoll: chaos action 'eagain' does not apply to {k!r}")
            self.actions[k] = acts
        if any("eagain" in a for a in self.actions.values()):
            self.watch = ("netpoll", "netpollwait")
        self._calls: dict[str, int] = {}
        #: ``(kind, call index, action)`` of every injected fault, in order.
        self.log: list[tuple[str, int, str]] = []

    def before(self, st: Status) -> AfterFilter | None:
        if not self.active or (self.where is not None and not self.where(st)):
            return None
        kind = st.kind
        with self._lock:
            self.seen += 1
            n = self._calls.get(kind, 0)
            self._calls[kind] = n + 1
        rng = random.Random(f"{self.seed}:{kind}:{n}")
        if rng.random() >= self.rate:
            return None
        action = rng.choice(self.actions[kind])
        name = errno.errorcode.get(action, str(action)) if isinstance(action, int) else action
        with self._lock:
            self.fired += 1
            self.log.append((kind, n, name))
        if isinstance(action, int):
            exc = make_error(action)
            self._record(st, "fail", index=n, **_error_details(exc))
            raise exc
        if action == "short":
            key = "buf" if kind in ("read", "recvfrom") else "data"
            with memoryview(st.args[key]) as view:
                size = view.nbytes
            limit = size
            if size > 1:
                limit = 1 + rng.randrange(size - 1)
                st.max_bytes = limit if st.max_bytes is None else min(st.max_bytes, limit)
            self._record(st, "short", value=limit, index=n)
            return None
        if action == "delay":
            seconds = rng.uniform(0.0, 0.005)
            self._record(st, "delay", value=seconds, index=n)
            _park_or_sleep(seconds)
            return None
        self._record(st, "eagain", errno=errno.EAGAIN, error="BlockingIOError", index=n)
        faults = self._faults
        if faults is not None:
            faults._post_ready(st.fd, _MODE_OF[kind])
        raise BlockingIOError(errno.EAGAIN, os.strerror(errno.EAGAIN))


# -- Faults --------------------------------------------------------------------------


class Faults:
    """A set of fault rules on a :class:`Switch` (context manager).

    With no ``switch`` it creates and installs its own for the ``with``
    block; with one, it adds a filter layer to it and leaves installing to
    its owner.  Leaving the block removes every rule (and stops the
    spurious-wakeup ticker).

    Nesting: an inner ``Faults()`` with its own Switch sees calls before
    the outer one, and what it fails before the syscall the outer Switch
    never sees; ``Faults(outer.switch)`` shares one Switch (see the module
    docstring).
    """

    def __init__(self, switch: Switch | None = None) -> None:
        self._own = switch is None
        self.switch = switch if switch is not None else Switch()
        self._lock = threading.Lock()
        # The rules in the order they apply, swapped whole under the lock: the
        # call path (_filter) reads a snapshot without it.
        self._rules: tuple[Rule, ...] = ()
        self._pending: list[tuple[object, int]] = []
        # (fd, thread ident) -> modes: wakeups for threads that park in the
        # kernel on their own fd (no M polls it), delivered by their netpollwait.
        self._thread_pending: dict[tuple[int, int], int] = {}
        #: Every call a rule changed, in order (see :class:`Injection`).
        self.log: list[Injection] = []

    # -- lifetime ----------------------------------------------------------------

    def install(self) -> Faults:
        """Install the owned Switch (a shared one is left as it is)."""
        if self._own:
            self.switch.install()
        return self

    def uninstall(self) -> None:
        """Remove every rule; uninstall the Switch if this object owns it."""
        self.clear()
        if self._own:
            self.switch.uninstall()

    def __enter__(self) -> Faults:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.uninstall()

    @property
    def rules(self) -> list[Rule]:
        """The active rules, in the order they apply."""
        with self._lock:
            return list(self._rules)

    def clear(self) -> None:
        """Remove every rule."""
        for rule in self.rules:
            self._remove(rule)
        with self._lock:
            self._thread_pending.clear()

    # -- declaring faults --------------------------------------------------------

    def fail(
        self,
        kind: str | Iterable[str],
        err: int | BaseException | type[BaseException],
        times: int | None = None,
        after: int = 0,
        where: Where | None = None,
        *,
        when: str = "before",
    ) -> Rule:
        """Fail calls of ``kind`` with ``err`` (an errno, exception class or instance).

        The first ``after`` matching calls run normally, then ``times`` of
        them fail (None, the default: all of them, until the rule is
        removed).  ``when="before"`` fails without running the syscall;
        ``when="after"`` runs it and replaces its result (a socket or
        accepted conn it created is closed, a close still closes).
        """
        return self._add(_Fail(_kinds(kind), err, when, times=times, after=after, where=where))

    def delay(
        self,
        kind: str | Iterable[str],
        seconds: float,
        times: int | None = None,
        after: int = 0,
        where: Where | None = None,
    ) -> Rule:
        """Sleep ``seconds`` before each matching call (the syscall then runs).

        ``times`` limits how many calls are delayed (None: all).
        """
        return self._add(_Delay(_kinds(kind), seconds, times=times, after=after, where=where))

    def short(
        self,
        kind: str | Iterable[str],
        max_bytes: int,
        times: int | None = None,
        after: int = 0,
        where: Where | None = None,
    ) -> Rule:
        """Make read/write/recvfrom/sendto see at most ``max_bytes`` of the buffer.

        Reads return fewer bytes (the caller sees it); writes take fewer and
        the net layer's write loop sends the rest (the caller does not).
        ``fired`` counts the shortened calls; ``times`` limits them (None: all).
        """
        return self._add(_Short(_kinds(kind), max_bytes, times=times, after=after, where=where))

    def eagain(
        self,
        kind: str | Iterable[str],
        times: int | None = None,
        after: int = 0,
        where: Where | None = None,
        *,
        wake: bool = True,
    ) -> Rule:
        """Answer matching calls with EAGAIN without running them (``times``: how many).

        With ``wake`` (default) a readiness event for the descriptor is
        posted to the wait that follows, so the parked operation retries at
        once, whether a goroutine (through its M's ``netpoll`` hook) or a
        plain thread (through its own ``netpollwait``) waits:
        ``times=50`` is an EAGAIN storm.  ``wake=False`` is a lost
        wakeup: the operation stays parked until real readiness, its
        deadline, or a close.
        """
        rule = _Eagain(_kinds(kind), wake, times=times, after=after, where=where)
        return self._add(rule)

    def blackhole_connect(
        self, match: Any = None, times: int | None = None, where: Where | None = None
    ) -> Rule:
        """Connects to ``match`` (None: all; see :func:`on_address`) never complete.

        ``times`` limits how many connects are blackholed (None: all).

        The dial waits until its deadline (an OpError that is a
        :class:`TimeoutError`) or cancel; no packet is sent and nothing
        outside loopback is needed.  The happy-eyeballs fallback, partial
        deadlines and cancel paths can be tested with it.
        """
        pred = _all(on_address(match) if match is not None else None, where)
        return self._add(_Blackhole(times=times, where=pred))

    def reset_after(
        self,
        nbytes: int,
        kind: str = "read",
        times: int | None = None,
        where: Where | None = None,
        *,
        err: int | BaseException | type[BaseException] = errno.ECONNRESET,
    ) -> Rule:
        """Matching connections reset after ``nbytes``: the next ``times`` (None: all).

        Their reads (``kind="write"``: writes) deliver exactly ``nbytes``
        (short calls at the boundary), then fail with ``ECONNRESET`` (or
        ``err``) from then on.  Unlike the other helpers, ``times`` counts
        *connections*; ``fired`` counts the calls that failed and ``seen``
        the matching calls looked at, as for every rule, and
        ``rule.connections`` the connections that were reset.
        """
        return self._add(_ResetAfter(kind, nbytes, err, times=times, where=where))

    def spurious_wakeups(
        self, rate: float, seed: int = 0, interval: float = 0.005, where: Where | None = None
    ) -> Rule:
        """Add fake readiness events: each poll reports each live fd with probability ``rate``.

        A ticker interrupts the poller every ``interval`` seconds so that it
        returns (and fakes) even when nothing happens.  ``fired`` counts the
        poller waits it added events to; ``rule.events`` the fake events.
        """
        rule = _Spurious(rate, seed, interval, times=None, where=where)
        self._add(rule)
        rule._start()
        return rule

    def chaos(
        self,
        seed: int | str,
        rate: float,
        kinds: Iterable[str] = ("connect", "accept", "read", "write"),
        where: Where | None = None,
        actions: dict[str, Sequence[int | str]] | None = None,
    ) -> Rule:
        """Seeded random faults over ``kinds`` (see :data:`CHAOS_ACTIONS`).

        Call ``i`` of kind ``k`` gets a fault with probability ``rate``,
        decided by ``(seed, k, i)`` alone, so the same sequence of calls gets
        the same faults for the same seed, whatever the timing.  The rule's
        ``log`` lists ``(kind, index, action)`` of each fault; each is also
        in :attr:`Faults.log` with its ``index``.
        """
        return self._add(_Chaos(seed, rate, tuple(kinds), actions, where=where))

    # -- the path of a rule: added here, called by the Switch ----------------------

    def _add(self, rule: _R) -> _R:
        rule._faults = self
        with self._lock:
            self._rules = (*self._rules, rule)
            self._sync_locked(rule.kinds + rule.watch)
        return rule

    def _remove(self, rule: Rule) -> None:
        rule._stop()
        with self._lock:
            if rule not in self._rules:
                return
            self._rules = tuple(r for r in self._rules if r is not rule)
            self._sync_locked(rule.kinds + rule.watch)

    def _sync_locked(self, kinds: tuple[str, ...]) -> None:
        """Set :meth:`_filter` on the Switch for each of ``kinds`` a rule names; unset the rest.

        This Faults is one layer of its Switch: one filter, the same for every
        kind.  The Switch registers its hook for the kind when the first
        filter arrives, and unregisters it when the last one leaves.
        """
        for kind in dict.fromkeys(kinds):
            named = any(kind in r.kinds or kind in r.watch for r in self._rules)
            self.switch.set_layer(self, kind, self._filter if named else None)

    def _filter(self, st: Status) -> AfterFilter | None:
        """This Faults' filter: what the Switch calls before each call of a kind a rule names.

        For the call ``st``, in this order: the delivery of readiness that
        :meth:`_post_ready` posted (``netpoll``, ``netpollwait``), then
        :meth:`Rule.observe` of the rules watching ``st.kind``, then
        :meth:`Rule.before` of the rules injecting into it, each in the order
        the rules were added (a rule that raises cancels the call).  Their
        after filters come back as one.
        """
        afters: list[AfterFilter] = []
        if st.kind == "netpoll":
            if self._pending:
                # Events are waiting: make this poll return at once to carry them.
                _break_poller()
            afters.append(self._drain)
        elif st.kind == "netpollwait" and self._thread_pending:
            deliver = self._take_thread_wakeup(st)
            if deliver is not None:
                afters.append(deliver)
        rules = self._rules  # a snapshot: rules come and go under the lock
        for rule in rules:
            if st.kind in rule.watch:
                after = rule.observe(st)
                if after is not None:
                    afters.append(after)
        for rule in rules:
            if st.kind in rule.kinds:
                after = rule.before(st)
                if after is not None:
                    afters.append(after)
        if len(afters) <= 1:
            return afters[0] if afters else None
        return lambda st: Switch._after(st, afters)

    def _take_thread_wakeup(self, st: Status) -> AfterFilter | None:
        """The after filter that adds a posted wakeup to a parked thread's ``netpollwait``."""
        key = (st.fd, threading.get_ident())
        want = int(st.args.get("mode") or 0)
        with self._lock:
            posted = self._thread_pending.get(key, 0)
            mode = posted & want
            if not mode:
                return None
            if posted & ~mode:
                self._thread_pending[key] = posted & ~mode
            else:
                del self._thread_pending[key]
        # The wait must return at once: poke the thread's own wake fd (the
        # real wait reports it and drains it), then add the event.
        _current_g().ready()

        def deliver(st: Status) -> None:
            if st.error is None:
                st.result = int(st.result or 0) | mode

        return deliver

    def _drain(self, st: Status) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        if pending and st.error is None:
            st.result = [*(st.result or ()), *pending]

    def _post_ready(self, fd: int, mode: int) -> None:
        """Deliver a readiness event for ``fd`` to the caller that is about to park on it.

        Called in the thread whose call got the EAGAIN.  A goroutine (or a
        thread that parks on a lock) is woken by a scheduler M: the event is
        added to the next ``netpoll`` result.  A plain thread waits in the
        kernel on the fd itself, where no M looks: the event goes to its own
        next ``netpollwait`` on that fd (:meth:`_take_thread_wakeup`).
        """
        if fd < 0:
            return
        g = _current_g()
        if g.waits_in_kernel:  # a thread with a wake fd: it parks in netpollwait
            key = (fd, threading.get_ident())
            with self._lock:
                self._thread_pending[key] = self._thread_pending.get(key, 0) | mode
            return
        token = _runtime().cache.token_of(fd)
        if token is None:
            return
        with self._lock:
            self._pending.append((token, mode))
        _break_poller()

    def _record(self, inj: Injection) -> None:
        with self._lock:
            self.log.append(inj)

    def injections(self, rule: Rule | None = None) -> list[Injection]:
        """A snapshot of :attr:`log`, or of the entries of one ``rule``."""
        with self._lock:
            return [i for i in self.log if rule is None or i.source is rule]

    def __repr__(self) -> str:
        return f"<Faults rules={self.rules!r}>"


def _kinds(kind: str | Iterable[str]) -> tuple[str, ...]:
    return (kind,) if isinstance(kind, str) else tuple(kind)
