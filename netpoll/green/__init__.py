"""Green versions of the stdlib modules that libraries block in.

gevent calls these its cooperative modules (``gevent/socket.py``,
``gevent/_socket3.py``, ``gevent/ssl.py``, ``gevent/select.py``,
``gevent/lock.py``, ``gevent/queue.py``); eventlet calls them ``green``.
Each module here offers the stdlib module's whole API (every name is
re-exported) with the calls that would block replaced by ones that park the
calling goroutine, so the other goroutines of its M keep running, and that
still block an ordinary thread as before:

=================================  ============================================
:mod:`netpoll.green.socket`        sockets on netpoll's FD/pollDesc and syscall hooks
:mod:`netpoll.green.ssl`           ``SSLContext``/``SSLSocket`` parking on want-read/write
:mod:`netpoll.green.select`        ``select``/``poll`` that park a goroutine
:mod:`netpoll.green.selectors`     selectors built on those
:mod:`netpoll.green.time`          ``sleep`` = :func:`netpoll.sleep`
:mod:`netpoll.green.threading`     ``Lock``/``RLock``/``Condition``/``Event``/``Semaphore``
:mod:`netpoll.green.queue`         ``Queue``/``LifoQueue``/``PriorityQueue`` on those locks
=================================  ============================================

:mod:`netpoll.patch` puts them in place, for the whole process or for one
library.  The green modules import only :mod:`netpoll.core`.

Every green module captures the stdlib objects it builds on at import time
(``_orig`` names), so it keeps working after :func:`netpoll.patch.all`
replaced those attributes in the stdlib modules.
"""

from __future__ import annotations

#: The stdlib modules with a green counterpart here, by name.
GREEN_MODULES = ("socket", "ssl", "select", "selectors", "time", "threading", "queue")


def reexport(module: object, namespace: dict[str, object]) -> None:
    """Copy every attribute of ``module`` not yet in ``namespace`` (but dunders).

    A green module starts with this so it can stand in for the stdlib module,
    private names included (libraries use ``socket._GLOBAL_DEFAULT_TIMEOUT``).
    """
    for name, value in list(vars(module).items()):
        if not name.startswith("__") and name not in namespace:
            namespace[name] = value


def rebind_function(fn: object, namespace: dict[str, object]) -> object:
    """A copy of the Python function ``fn`` whose globals are ``namespace``.

    How a green module reuses a stdlib function that looks a class up by its
    global name (``ssl.create_default_context`` finds ``SSLContext``):
    the copy finds the green class instead.  The code object is shared.
    """
    import functools
    import types

    assert isinstance(fn, types.FunctionType)
    copy = types.FunctionType(fn.__code__, namespace, fn.__name__, fn.__defaults__, fn.__closure__)
    copy.__kwdefaults__ = fn.__kwdefaults__
    functools.update_wrapper(copy, fn)
    copy.__module__ = str(namespace.get("__name__", fn.__module__))
    return copy
