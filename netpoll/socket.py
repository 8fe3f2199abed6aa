"""``netpoll.socket``: the stdlib :mod:`socket` API on netpoll's poller.

This is :mod:`netpoll.green.socket` under its public name: use it where you
would use :mod:`socket` (``import netpoll.socket as socket``), or let
:mod:`netpoll.patch` put it in place for a library or the whole process.
The module docstring of :mod:`netpoll.green.socket` says how it works.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from netpoll.green import reexport as _reexport
from netpoll.green import socket as _impl
from netpoll.green.socket import *  # noqa: F403
from netpoll.green.socket import __all__ as __all__

_reexport(_impl, globals())

if TYPE_CHECKING:
    # Every other name is the stdlib module's (copied above at run time).
    def __getattr__(name: str) -> Any: ...
