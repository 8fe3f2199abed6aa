"""The built-in poller backends, one pluggy plugin module per OS mechanism.

Each module (:mod:`~netpoll.backends.epoll`, :mod:`~netpoll.backends.kqueue`,
:mod:`~netpoll.backends.poll`, :mod:`~netpoll.backends.select`) implements the
``netpoll_backends`` hook, answering with one
:class:`~netpoll.core.hookspecs.BackendSpec`.  The spec's ``create`` builds a
poller object whose methods implement the poller hooks (``netpollinit``,
``netpollopen``, ``netpollclose``, ``netpoll``, ``netpollbreak`` and, for the
level-triggered backends, ``netpollarm``); the core registers that object
with its plugin manager while it is the active backend.

epoll and kqueue are edge-triggered, like Go's pollers: every descriptor is
registered once, for both directions.  poll and select are level-triggered and
one-shot: interest is added by ``netpollarm`` just before a waiter parks and
dropped once reported, so a descriptor nobody waits on costs nothing.

Backends import only :mod:`netpoll.core.hookspecs` and the OS module they wrap.
"""
