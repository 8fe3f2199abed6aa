"""Fault injection for code that uses netpoll: Go's ``net/internal/socktest``, made public.

* :class:`Switch` (:mod:`netpoll.testing.switch`, Go's ``socktest/switch.go``
  and ``sys_unix.go``): a pluggy plugin wrapping the socket system call hooks
  and the poller hooks; per-kind filters fail or alter calls, statistics count
  them per socket kind, and the socket table says which sockets are still
  open and where they were opened.
* :class:`Faults` (:mod:`netpoll.testing.faults`): declarative fault rules on
  a Switch — ``fail``, ``delay``, ``short``, ``eagain``,
  ``blackhole_connect``, ``reset_after``, ``spurious_wakeups``, ``chaos``.
* :mod:`netpoll.testing.pytest_plugin`: the ``netpoll_switch`` and
  ``netpoll_faults`` fixtures, the ``netpoll_backend`` marker and the
  ``--netpoll-backend`` option (loaded through the ``pytest11`` entry point).

Names are imported lazily, so importing a submodule (the kqueue emulation,
say) does not load the rest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from netpoll.testing.faults import Faults, Injection, Rule, on_address, on_fd, on_thread
    from netpoll.testing.switch import Cookie, SocketInfo, Stat, Status, Switch

_EXPORTS = {
    "Cookie": "netpoll.testing.switch",
    "SocketInfo": "netpoll.testing.switch",
    "Stat": "netpoll.testing.switch",
    "Status": "netpoll.testing.switch",
    "Switch": "netpoll.testing.switch",
    "Faults": "netpoll.testing.faults",
    "Injection": "netpoll.testing.faults",
    "Rule": "netpoll.testing.faults",
    "on_address": "netpoll.testing.faults",
    "on_fd": "netpoll.testing.faults",
    "on_thread": "netpoll.testing.faults",
}

__all__ = [
    "Cookie",
    "Faults",
    "Injection",
    "Rule",
    "SocketInfo",
    "Stat",
    "Status",
    "Switch",
    "on_address",
    "on_fd",
    "on_thread",
]


def __getattr__(name: str) -> Any:
    modname = _EXPORTS.get(name)
    if modname is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(modname), name)
    globals()[name] = value
    return value
