"""The stdlib :mod:`time` with a :func:`sleep` that parks a goroutine.

gevent's counterpart is ``gevent.sleep`` patched in as ``time.sleep``.  In
a goroutine :func:`sleep` is :func:`netpoll.sleep` (the M runs other
goroutines meanwhile; ``sleep(0)`` yields); in a plain thread it is the
stdlib's.  Everything else is the stdlib module's.
"""

from __future__ import annotations

import time as _std
from typing import TYPE_CHECKING, Any

from netpoll.core.g import current_goroutine as _current_goroutine
from netpoll.core.sched import sleep as _netpoll_sleep
from netpoll.green import reexport as _reexport

_reexport(_std, globals())

if TYPE_CHECKING:
    # Every other name is the stdlib module's (copied above at run time).
    def __getattr__(name: str) -> Any: ...


_orig_sleep = _std.sleep


def sleep(secs: float) -> None:
    """Pause the caller ``secs`` seconds: a goroutine parks, a thread sleeps.

    Errors as the stdlib's: ``ValueError`` for a negative duration.
    """
    if _current_goroutine() is None:
        _orig_sleep(secs)
        return
    secs = float(secs)
    if secs != secs or secs < 0:
        raise ValueError("sleep length must be non-negative")
    _netpoll_sleep(secs)


#: The names this module replaces in the stdlib's.
GREEN_NAMES = ("sleep",)

__all__ = sorted({n for n in dir(_std) if not n.startswith("_")} | set(GREEN_NAMES))
