"""The stdlib :mod:`selectors` on :mod:`netpoll.green.select`.

gevent's counterpart is ``gevent/selectors.py``.  :class:`SelectSelector`
and :class:`PollSelector` are the stdlib classes waiting through the green
``select``/``poll``, so a goroutine's ``selector.select()`` parks instead of
blocking its M.  ``DefaultSelector`` is the green ``PollSelector`` where the
OS has ``poll``; ``EpollSelector``/``KqueueSelector``/``DevpollSelector``
name it too (their one extra method, ``fileno``, is missing), as a stdlib
selector of those kinds would block the M.
"""

from __future__ import annotations

import selectors as _std
from typing import TYPE_CHECKING, Any

from netpoll.green import reexport as _reexport
from netpoll.green import select as _green_select

_reexport(_std, globals())

if TYPE_CHECKING:
    # Every other name is the stdlib module's (copied above at run time).
    def __getattr__(name: str) -> Any: ...


class SelectSelector(_std.SelectSelector):
    """``selectors.SelectSelector`` waiting through the green ``select``."""

    def _select(self, r: Any, w: Any, x: Any, timeout: float | None = None) -> Any:
        return _green_select.select(r, w, x, timeout)


_GreenDefault: type[_std.BaseSelector] = SelectSelector

if hasattr(_std, "PollSelector") and hasattr(_green_select, "poll"):

    class PollSelector(_std.PollSelector):
        """``selectors.PollSelector`` waiting through the green ``poll``."""

        _selector_cls = _green_select.poll

    _GreenDefault = PollSelector

DefaultSelector = _GreenDefault

#: The names this module replaces in the stdlib's.
GREEN_NAMES: tuple[str, ...] = tuple(
    n
    for n in (
        "SelectSelector",
        "PollSelector",
        "EpollSelector",
        "KqueueSelector",
        "DevpollSelector",
        "DefaultSelector",
    )
    if n in ("SelectSelector", "DefaultSelector") or hasattr(_std, n)
)
for _name in ("EpollSelector", "KqueueSelector", "DevpollSelector"):
    if hasattr(_std, _name):
        globals()[_name] = _GreenDefault
del _name

__all__ = sorted({n for n in dir(_std) if not n.startswith("_")} | set(GREEN_NAMES))
