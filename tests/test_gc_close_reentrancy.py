"""Sockets closed by a finalizer while a lock their close takes is held in the same thread.

The garbage collector runs on whatever allocation crosses its threshold,
and runs finalizers there: urllib3 closes a dropped pool's connections from a
``weakref.finalize``.  Registering a Switch's hook wrapper allocates while the
Switch's lock is held; a collection there closed a netpoll socket through the
Switch's ``close`` wrapper, which took the same lock: a non-reentrant lock
deadlocked the thread (seen in tests/libs/test_requests.py).  The child makes
that collection happen at that point, deterministically.  The same held for
the green socket's lock around the lazy creation of its FD.
"""

from __future__ import annotations

import sys

import pytest

from tests.helpers import proc

CHILD = r"""
import gc, weakref
import netpoll
from netpoll.core.runtime import runtime
from netpoll.testing import Switch

ln = netpoll.listen("tcp", "127.0.0.1:0")
conn = netpoll.dial("tcp", str(ln.addr()))
peer = ln.accept()

class Cycle:
    pass

junk = Cycle()
junk.me = junk
closed = []

def close_conn():
    conn.close()
    closed.append(True)

weakref.finalize(junk, close_conn)  # runs when the collector frees the cycle
del junk

real_register = runtime.pm.register

def register_after_gc(plugin, name=None):
    gc.collect()  # as an allocation inside the locked section would
    return real_register(plugin, name)

sw = Switch().install()  # its close wrapper is in the syscall table from now on
runtime.pm.register = register_after_gc
try:
    sw.set("read", lambda st: None)  # registers the read wrapper under the lock
finally:
    runtime.pm.register = real_register
    sw.uninstall()
print("closed" if closed else "not collected")
peer.close()
ln.close()
"""


def test_finalizer_close_while_switch_lock_is_held_does_not_deadlock() -> None:
    res = proc.run([sys.executable, "-c", CHILD], timeout=30)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip() == "closed"


GREEN_CHILD = r"""
import gc, socket as std, weakref
from netpoll.green import socket as gs

ls = std.socket()
ls.bind(("127.0.0.1", 0))
ls.listen()
a = gs.socket()  # no FD yet: it is made at the first call that may park
b = gs.create_connection(ls.getsockname())
b._get_fd()

class Cycle:
    pass

junk = Cycle()
junk.me = junk
closed = []

def close_b():
    b.close()
    closed.append(True)

weakref.finalize(junk, close_b)
del junk

real_fd = gs.FD

def fd_after_gc(*args, **kw):
    gc.collect()  # as an allocation while _fd_lock is held would
    return real_fd(*args, **kw)

gs.FD = fd_after_gc
try:
    a._get_fd()  # makes a's FD under the lock
finally:
    gs.FD = real_fd
a.close()
ls.close()
print("closed" if closed else "not collected")
"""


def test_finalizer_close_while_green_fd_lock_is_held_does_not_deadlock() -> None:
    res = proc.run([sys.executable, "-c", GREEN_CHILD], timeout=30)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip() == "closed"


LOCK_CHILD = r"""
import gc, sys, time, weakref
import netpoll
from netpoll.core import finalizer
from netpoll.core.runtime import runtime

which = sys.argv[1]
netpoll.use_backend("poll")  # level-triggered: its netpoll and netpollclose take its lock
ln = netpoll.listen("tcp", "127.0.0.1:0")
conn = netpoll.dial("tcp", str(ln.addr()))
peer = ln.accept()
reader = netpoll.go(conn.read, 10)  # parks: conn's fd is registered with an M's poller
while conn._fd.pd.m is None:
    netpoll.sleep(0.001)

class Cycle:
    pass

junk = Cycle()
junk.me = junk
weakref.finalize(junk, conn.close)  # as urllib3 closes a dropped pool's sockets
del junk

# The locks conn's close takes, held by this thread as a collection starts
# at an allocation inside their critical sections.
lock = conn._fd._mu.state_lock if which == "state" else conn._fd.pd.m.poller.lock
with lock:
    gc.collect()
assert finalizer.drain(10), "the queued close never ran"
assert conn.closed
try:
    reader.result(10)
except netpoll.ErrClosed:
    pass
peer.set_read_deadline(time.time() + 10)
print("eof" if peer.read(1) == b"" else "no eof")
peer.close()
ln.close()
"""


@pytest.mark.parametrize("which", ["state", "poller"])
def test_finalizer_close_while_a_close_lock_is_held_does_not_deadlock(which: str) -> None:
    """The fdMutex state lock (taken by every close) and a level-triggered
    poller's lock (taken by netpollclose), held in the thread whose allocation
    starts a collection: the close a finalizer makes there is queued for the
    finalizer thread and runs once the lock is free."""
    res = proc.run([sys.executable, "-c", LOCK_CHILD, which], timeout=30)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip() == "eof"
