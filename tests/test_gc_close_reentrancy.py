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
import gc, socket as std, sys, weakref
import netpoll
from netpoll.core import finalizer
from netpoll.green import socket as gs

which, kind = sys.argv[1], sys.argv[2]
netpoll.use_backend("poll")  # level-triggered: its netpoll and netpollclose take its lock
ls = std.socket()
ls.bind(("127.0.0.1", 0))
ls.listen()
if kind == "conn":
    conn = netpoll.dial("tcp", "127.0.0.1:%d" % ls.getsockname()[1])
    fd, read = conn._fd, conn.read
else:  # a green socket, as a patched library makes: no Conn starts the finalizer thread
    conn = gs.create_connection(ls.getsockname())
    fd, read = conn._get_fd(), conn.recv
peer, _ = ls.accept()
reader = netpoll.go(read, 10)  # parks: the fd is registered with an M's poller
while fd.pd.m is None:
    netpoll.sleep(0.001)

class Cycle:
    pass

junk = Cycle()
junk.me = junk
weakref.finalize(junk, conn.close)  # as urllib3 closes a dropped pool's sockets
del junk

# The locks the close takes, held by this thread as a collection starts at
# an allocation inside their critical sections.
lock = fd._mu.state_lock if which == "state" else fd.pd.m.poller.lock
with lock:
    gc.collect()
assert finalizer.drain(10), "the queued close never ran"
assert fd.closed
try:
    reader.result(10)
except OSError:
    pass  # ErrClosed (a Conn) or EBADF (a socket): the parked read woke
peer.settimeout(10)
print("eof" if peer.recv(1) == b"" else "no eof")
peer.close()
ls.close()
"""


@pytest.mark.parametrize("kind", ["conn", "green"])
@pytest.mark.parametrize("which", ["state", "poller"])
def test_finalizer_close_while_a_close_lock_is_held_does_not_deadlock(
    which: str, kind: str
) -> None:
    """The fdMutex state lock (taken by every close) and a level-triggered
    poller's lock (taken by netpollclose), held in the thread whose allocation
    starts a collection: the close a finalizer makes there, of a Conn or of a
    green socket, is queued for the finalizer thread and runs once the lock is
    free."""
    res = proc.run([sys.executable, "-c", LOCK_CHILD, which, kind], timeout=30)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip() == "eof"
