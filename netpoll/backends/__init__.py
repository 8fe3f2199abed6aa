"""The built-in poller backends, one pluggy plugin module per OS mechanism.

Each module (:mod:`~netpoll.backends.epoll`, :mod:`~netpoll.backends.kqueue`,
:mod:`~netpoll.backends.poll`, :mod:`~netpoll.backends.select`) implements the
``netpoll_backends`` hook, answering with one
:class:`~netpoll.core.hookspecs.BackendSpec` whose ``create`` makes a poller
instance (one per scheduler M) whose methods implement the poller hooks.
What they share, the wakeup channel and the edge- and level-triggered logic,
is :mod:`netpoll.backends.base` (Go's ``runtime/netpoll_*.go`` files, minus
the repetition).

epoll and kqueue are edge-triggered, like Go's pollers: every descriptor is
registered once, for both directions.  poll and select are level-triggered and
one-shot: interest is added by ``netpollarm`` just before a waiter parks and
dropped once reported, so a descriptor nobody waits on costs nothing.

Backends import only :mod:`netpoll.core.hookspecs`, :mod:`netpoll.backends.base`
and the OS module they wrap; a substitute OS module (the kqueue emulation)
comes in through the ``os_api`` argument of ``netpoll_backends``.
"""
