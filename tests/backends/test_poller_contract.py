"""The poller contract is stated once, as ``hookspecs.Poller``; the hooks follow it.

The poller hook specifications and the core's forwarding implementations are
made from :class:`~netpoll.core.hookspecs.Poller`'s methods, not written out
again.  These tests hold the derived pieces to the protocol (names,
parameters, order) and run every hook through the syscall table on each real
backend, so a forwarder that dropped or reordered an argument would fail.
"""

from __future__ import annotations

import inspect
import os

import pytest

from netpoll.core import hookspecs
from netpoll.core.hookspecs import MODE_R, MODE_W, MODE_WAKE, POLLER_HOOKS, Poller
from netpoll.core.plugins import NetpollPluginManager, PollerForwarder, SyscallTable
from tests.helpers.backends import SLOW, Backend, Pipe


def _method_params(name: str) -> tuple[str, ...]:
    return tuple(inspect.signature(getattr(Poller, name)).parameters)[1:]


def test_the_hooks_are_the_protocols_methods() -> None:
    methods = [n for n, v in vars(Poller).items() if callable(v) and not n.startswith("_")]
    assert methods == [*POLLER_HOOKS, "shutdown"]
    pm = NetpollPluginManager()
    for name in POLLER_HOOKS:
        spec = getattr(pm.hook, name).spec
        assert spec is not None and spec.opts["firstresult"], name
        assert spec.argnames == ("poller", *_method_params(name)), name
        assert getattr(Poller, name).__doc__.strip(), f"Poller.{name} states no contract"
    table_hooks = [n for n in SyscallTable.__annotations__ if n.startswith("netpoll")]
    assert table_hooks == list(POLLER_HOOKS)
    assert all(getattr(hookspecs, name).__doc__ for name in POLLER_HOOKS)


def test_the_forwarders_are_the_table_entries() -> None:
    """With no other implementation the table calls the forwarder itself, not pluggy."""
    pm = NetpollPluginManager()
    forwarder = pm.get_plugin("netpoll.poller")
    assert isinstance(forwarder, PollerForwarder)
    for name in POLLER_HOOKS:
        assert pm.table.wrapped[name] is False
        assert getattr(pm.table, name) is getattr(forwarder, name)
        impl = getattr(pm.hook, name).get_hookimpls()[0]
        assert impl.trylast and impl.argnames == ("poller", *_method_params(name))


def test_a_closed_poller_fails_every_hook_with_a_clear_error() -> None:
    table = NetpollPluginManager().table
    for name in POLLER_HOOKS:
        args = [0] * len(_method_params(name))
        with pytest.raises(RuntimeError, match="this M's poller is closed"):
            getattr(table, name)(None, *args)


def test_every_hook_reaches_the_backend_with_its_arguments(bk: Backend) -> None:
    table, poller = bk.pm.table, bk.poller
    pipe = Pipe()
    token = object()
    try:
        table.netpollinit(poller)  # a second init is harmless
        table.netpollopen(poller, pipe.r, token)
        table.netpollarm(poller, pipe.r, MODE_R)
        os.write(pipe.w, b"x")
        seen = 0
        for _ in range(20):
            for got, modes in table.netpoll(poller, 0.1):
                assert got is token
                seen |= modes
            if seen & MODE_R:
                break
        assert seen & MODE_R
        # netpollwait: fd, mode, wake fd and timeout each reach the backend.
        assert table.netpollwait(poller, pipe.r, MODE_R, -1, SLOW) & MODE_R
        assert table.netpollwait(poller, pipe.w, MODE_W, -1, SLOW) & MODE_W
        assert table.netpollwait(poller, -1, MODE_R, pipe.r, SLOW) == MODE_WAKE
        os.read(pipe.r, 1)
        assert table.netpollwait(poller, pipe.r, MODE_R, -1, 0.01) == 0
        # netpollbreak: the next wait returns at once, with nothing to report.
        table.netpollbreak(poller)
        assert table.netpoll(poller, SLOW) == []
        table.netpollclose(poller, pipe.r)
        os.write(pipe.w, b"x")
        assert all(got is not token for got, _ in table.netpoll(poller, 0.05))
    finally:
        pipe.close_r()
        pipe.close_w()
