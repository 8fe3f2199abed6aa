"""netFD: a socket registered with the netpoller, and how it is built.

Go's ``net/fd_unix.go`` (``netFD``, ``netFD.connect``, ``netFD.accept``),
``net/sock_posix.go`` (``socket``: socket + default options + bind/listen or
connect, closing on any failure; ``netFD.dial``, ``listenStream``,
``listenDatagram``), ``net/sockopt_linux.go`` / ``sockopt_posix.go``
(``setDefaultSockopts``, ``setDefaultListenerSockopts``), ``net/tcpsockopt_*.go``
(no-delay, keep-alive), ``net/sock_linux.go`` (``maxListenerBacklog``) and
``net/rawconn.go`` (``RawConn``).

System calls that tests may hook go through the runtime's syscall table
(``socket``, ``connect``, ``listen``, ``getsockopt_int``, ``close``; ``accept``
and the I/O calls through :class:`netpoll.core.fd.FD`).  Errors leave this
module as plain :class:`OSError` tagged with the failing call
(:func:`~netpoll.net.errors.with_syscall`); the callers wrap them into
OpError with the operation and addresses.
"""

from __future__ import annotations

import errno
import math
import socket as _socket
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from netpoll.core.errors import DeadlineExceededError, NetClosingError
from netpoll.core.fd import FD
from netpoll.core.hookspecs import MODE_R, MODE_W
from netpoll.core.runtime import runtime
from netpoll.net.addr import (
    UNIX_NETWORKS,
    Addr,
    UnixAddr,
    sockaddr_to_addr,
)
from netpoll.net.context import DialContext
from netpoll.net.errors import op_error, with_syscall

_table = runtime.table

#: Go's ``defaultTCPKeepAlive``: idle time and probe interval when 0 is asked.
DEFAULT_TCP_KEEPALIVE = 15.0

#: A deadline long past: set to wake a parked connect (Go's ``aLongTimeAgo``).
A_LONG_TIME_AGO = 1.0

#: ``control(network, address, raw_conn)``: Go's ``Dialer.Control``.
ControlFn = Callable[[str, str, "RawConn"], None]

_backlog: int | None = None
_backlog_lock = threading.Lock()


def max_listener_backlog() -> int:
    """The listen backlog: ``/proc/sys/net/core/somaxconn`` (Go's ``maxListenerBacklog``).

    Falls back to ``SOMAXCONN`` (128) when the file is missing or unreadable;
    Linux keeps the backlog in a uint16, so larger values are capped at 65535.
    Read once per process.
    """
    global _backlog
    if _backlog is not None:
        return _backlog
    with _backlog_lock:
        if _backlog is None:
            _backlog = _read_backlog()
        return _backlog


def _read_backlog(path: str = "/proc/sys/net/core/somaxconn") -> int:
    fallback = int(getattr(_socket, "SOMAXCONN", 128)) or 128
    try:
        with open(path, encoding="ascii") as f:
            fields = f.readline().split()
        n = int(fields[0])
    except (OSError, ValueError, IndexError):
        return fallback
    if n <= 0:
        return fallback
    return min(n, (1 << 16) - 1)


class RawConn:
    """Access to the raw descriptor (Go's ``syscall.RawConn``, ``net/rawconn.go``).

    :meth:`control` runs ``fn(fileno)`` while the descriptor is held open, so
    a concurrent close cannot reuse the number under it.  :meth:`read` and
    :meth:`write` call ``fn(fileno)`` until it reports done, parking on the
    poller in between under the conn's deadlines: the way to run system
    calls netpoll does not wrap (``recvmsg``/``sendmsg`` with ancillary data,
    ``SCM_RIGHTS``, credentials) without a busy loop.  Handed to
    ``control`` callbacks of :class:`~netpoll.net.dial.Dialer` and
    :class:`~netpoll.net.listen.ListenConfig`, and returned by
    ``Conn.syscall_conn()``.
    """

    __slots__ = ("_fd", "_nfd")

    def __init__(self, fd: FD, nfd: NetFD | None = None) -> None:
        self._fd = fd
        self._nfd = nfd

    def control(self, fn: Callable[[int], Any]) -> None:
        """Call ``fn(fileno)``; raises ErrClosed-like OSError if closed."""
        self._fd.incref()
        try:
            fn(self._fd.sysfd)
        finally:
            self._fd.decref()

    def read(self, fn: Callable[[int], bool]) -> None:
        """Call ``fn(fileno)`` until it returns True, parking until readable in between.

        Go's ``RawConn.Read``: ``fn`` tries a non-blocking call and returns
        False when it got ``EAGAIN``; the read lock is held throughout, the
        read deadline bounds the wait (an OpError that is a
        :class:`TimeoutError`) and a close from another thread ends it
        (ErrClosed).  Exceptions raised by ``fn`` propagate unchanged.
        """
        self._raw("raw-read", MODE_R, fn)

    def write(self, fn: Callable[[int], bool]) -> None:
        """Call ``fn(fileno)`` until it returns True, parking until writable in between.

        Go's ``RawConn.Write``; see :meth:`read` (the write lock and the
        write deadline apply).
        """
        self._raw("raw-write", MODE_W, fn)

    def _raw(self, op: str, mode: int, fn: Callable[[int], bool]) -> None:
        failed: list[BaseException] = []

        def call(sysfd: int) -> bool:
            try:
                return bool(fn(sysfd))
            except BaseException as exc:
                failed.append(exc)
                raise

        try:
            self._fd.raw_io(mode, call)
        except OSError as exc:
            if failed and failed[0] is exc:
                raise  # fn's own error: unchanged
            nfd = self._nfd
            if nfd is None:
                raise
            raise op_error(op, nfd.net, nfd.laddr, nfd.raddr, exc) from None


class NetFD:
    """A socket plus what the net layer knows about it (Go's ``netFD``).

    ``fd`` is the core :class:`FD` (registered with the poller of the
    calling goroutine's M; made by a plain thread, it is registered when a
    goroutine first parks on it), ``sock`` the
    socket object, ``net`` the network name the user gave, ``laddr``/``raddr``
    the addresses once known.
    """

    __slots__ = (
        "_laddr",
        "_lsa",
        "_raddr",
        "_rsa",
        "accept_laddr",
        "family",
        "fd",
        "net",
        "sock",
        "sotype",
    )

    def __init__(self, sock: _socket.socket, family: int, sotype: int, net: str) -> None:
        # Registers with the poller (in a goroutine); on OSError the caller still owns sock.
        self.fd = FD(sock)
        self.sock = sock
        self.family = family
        self.sotype = sotype
        self.net = net
        self._laddr: Addr | None = None
        self._raddr: Addr | None = None
        #: Socket-module addresses not yet turned into Addr objects (accept
        #: records them; most conns of a server never ask for them).
        self._lsa: Any = None
        self._rsa: Any = None
        #: On a TCP listener bound to one address (not a wildcard) and made
        #: without a control function: the local address of every conn it
        #: accepts, shared (Addr objects are immutable), which spares each
        #: accept a getsockname and its tuple.  None: ask the kernel per conn
        #: (a wildcard listener, or a control that may have set
        #: IP_TRANSPARENT, where getsockname tells the original destination).
        self.accept_laddr: Addr | None = None

    @property
    def laddr(self) -> Addr | None:
        """The local address, once known."""
        if self._lsa is not None:
            self._laddr, self._lsa = self.addr_of(self._lsa), None
        return self._laddr

    @laddr.setter
    def laddr(self, addr: Addr | None) -> None:
        self._laddr, self._lsa = addr, None

    @property
    def raddr(self) -> Addr | None:
        """The remote address, once known."""
        if self._rsa is not None:
            self._raddr, self._rsa = self.addr_of(self._rsa), None
        return self._raddr

    @raddr.setter
    def raddr(self, addr: Addr | None) -> None:
        self._raddr, self._rsa = addr, None

    def set_sockaddrs(self, lsa: Any, rsa: Any) -> None:
        """Record socket-module addresses, turned into Addr objects when first read."""
        self._laddr = self._raddr = None
        self._lsa, self._rsa = lsa, rsa

    def ctrl_network(self) -> str:
        """The network named to ``control``: "tcp4"/"tcp6"/"udp4"/..., or the Unix one."""
        if self.net in UNIX_NETWORKS or self.net[-1] in "46":
            return self.net
        return self.net + ("4" if self.family == _socket.AF_INET else "6")

    def addr_of(self, sa: Any) -> Addr | None:
        """Turn a socket-module address into the package's address type."""
        if sa is None:
            return None
        return sockaddr_to_addr(self.net, sa)

    def close(self) -> None:
        """Close the FD (wakes parked operations; returns after the OS close)."""
        self.fd.close()

    def getsockname(self) -> Any:
        """getsockname on the held-open descriptor, or None if it fails."""
        try:
            self.fd.incref()
        except OSError:
            return None
        try:
            return self.sock.getsockname()
        except OSError:
            return None
        finally:
            self.fd.decref()

    # -- socket options ------------------------------------------------------

    def setsockopt(self, level: int, opt: int, value: int | bytes) -> None:
        """setsockopt with the descriptor held open; errors tagged "setsockopt"."""
        self.fd.incref()
        try:
            self.sock.setsockopt(level, opt, value)
        except OSError as exc:
            raise with_syscall(exc, "setsockopt") from None
        finally:
            self.fd.decref()

    def setsockopts(self, options: Iterable[tuple[int, int, int]]) -> None:
        """Several integer setsockopts under one reference; errors tagged "setsockopt"."""
        self.fd.incref()
        try:
            setsockopt = self.sock.setsockopt
            for level, opt, value in options:
                setsockopt(level, opt, value)
        except OSError as exc:
            raise with_syscall(exc, "setsockopt") from None
        finally:
            self.fd.decref()

    def set_no_delay(self, on: bool) -> None:
        """TCP_NODELAY (Go's ``setNoDelay``)."""
        self.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, int(on))

    def set_keep_alive(self, on: bool) -> None:
        """SO_KEEPALIVE (Go's ``setKeepAlive``)."""
        self.setsockopt(_socket.SOL_SOCKET, _socket.SO_KEEPALIVE, int(on))

    def set_keep_alive_period(self, seconds: float) -> None:
        """Keep-alive idle time and probe interval, rounded up to whole seconds.

        Go's ``setKeepAlivePeriod``: TCP_KEEPIDLE (macOS: TCP_KEEPALIVE) and
        TCP_KEEPINTVL where the platform has them; 0 is Go's default of 15 s.
        """
        self.setsockopts(keep_alive_period_options(seconds))

    def apply_keep_alive(self, keep_alive: float) -> None:
        """Go's keep-alive policy: 0 = 15 s default, negative = leave off."""
        if keep_alive < 0:
            return
        try:
            self.setsockopts(
                (
                    (_socket.SOL_SOCKET, _socket.SO_KEEPALIVE, 1),
                    *keep_alive_period_options(keep_alive or DEFAULT_TCP_KEEPALIVE),
                )
            )
        except OSError:
            pass  # Go ignores these errors too

    def setup_accepted_tcp(self, keep_alive: float) -> None:
        """What Go's TCP accept sets on a new conn, in one reference.

        TCP_NODELAY, then the keep-alive policy of :meth:`apply_keep_alive`;
        errors are ignored, as Go ignores them.
        """
        options = accepted_tcp_options(keep_alive)
        try:
            self.fd.incref()
        except OSError:
            return  # closed meanwhile: nothing to set (errors are ignored here)
        try:
            set_accepted_options(self.sock, options)
        finally:
            self.fd.decref()

    # -- connect (Go's netFD.connect) ---------------------------------------

    def connect(self, ctx: DialContext, sa: Any) -> Any:
        """Connect to ``sa`` under ``ctx``; returns the peer address if known.

        Non-blocking connect through the syscall table: EINPROGRESS → park
        until writable (under the context's deadline as the write deadline) →
        SO_ERROR → confirm with getpeername, since the poller may wake us
        spuriously.  Cancellation sets the write deadline to the past and is
        reported as the context's error.
        """
        fd, sock = self.fd, self.sock
        try:
            _table.connect(sock, sa)
        except InterruptedError:
            pass  # EINTR: the connect goes on; wait below
        except BlockingIOError as exc:
            # EINPROGRESS / EALREADY: wait below.  EAGAIN (a full Unix
            # listen queue) does not continue in the background: an error.
            if exc.errno not in (None, errno.EINPROGRESS, errno.EALREADY):
                raise with_syscall(exc, "connect") from None
        except OSError as exc:
            if exc.errno != errno.EISCONN:
                raise with_syscall(exc, "connect") from None
            return None
        else:
            err = ctx.err()
            if err is not None:
                raise err
            return None

        deadline = ctx.deadline
        if deadline is not None:
            fd.set_write_deadline(deadline)
        # The watcher: on cancel, make the parked connect time out now.
        state_lock = threading.Lock()
        state = {"finished": False, "interrupted": False}

        def interrupt() -> None:
            with state_lock:
                if state["finished"]:
                    return
                state["interrupted"] = True
                try:
                    fd.set_write_deadline(A_LONG_TIME_AGO)
                except OSError:
                    pass

        handle = ctx.on_cancel(interrupt)
        result: Any = None
        try:
            result = self._wait_connected(ctx)
        finally:
            ctx.remove(handle)
            with state_lock:
                state["finished"] = True
                interrupted = state["interrupted"]
            if not fd.closed:
                try:
                    fd.set_write_deadline(None)
                except OSError:
                    pass
        if interrupted:
            # Connected just as the cancel poisoned the write deadline (Go's
            # issue 16523): do not hand out this conn.
            raise ctx.err() or DeadlineExceededError()
        return result

    def _wait_connected(self, ctx: DialContext) -> Any:
        fd, sock = self.fd, self.sock
        while True:
            try:
                fd.wait_write()
            except (DeadlineExceededError, NetClosingError):
                err = ctx.err()
                if err is not None:
                    raise err from None
                raise
            try:
                nerr = int(_table.getsockopt_int(sock, _socket.SOL_SOCKET, _socket.SO_ERROR))
            except OSError as exc:
                raise with_syscall(exc, "getsockopt") from None
            if nerr in (errno.EINPROGRESS, errno.EALREADY, errno.EINTR):
                continue
            if nerr == errno.EISCONN:
                return None
            if nerr == 0:
                try:
                    return sock.getpeername()
                except OSError:
                    continue  # spurious wakeup: not connected yet
            raise with_syscall(OSError(nerr, _strerror(nerr)), "connect")


def _strerror(code: int) -> str:
    import os

    return os.strerror(code)


# --------------------------------------------------------------------------
# Building sockets (Go's sock_posix.go socket() and friends)
# --------------------------------------------------------------------------


def sys_socket(family: int, sotype: int, proto: int) -> _socket.socket:
    """socket() through the table; errors tagged "socket"."""
    try:
        sock: _socket.socket = _table.socket(family, sotype, proto)
    except OSError as exc:
        raise with_syscall(exc, "socket") from None
    return sock


def set_default_sockopts(sock: _socket.socket, family: int, sotype: int, ipv6only: bool) -> None:
    """IPV6_V6ONLY on IPv6 sockets, SO_BROADCAST on UDP (Go's ``setDefaultSockopts``)."""
    try:
        if family == _socket.AF_INET6 and sotype != _socket.SOCK_RAW:
            sock.setsockopt(_socket.IPPROTO_IPV6, _socket.IPV6_V6ONLY, int(ipv6only))
        if sotype == _socket.SOCK_DGRAM and family in (_socket.AF_INET, _socket.AF_INET6):
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_BROADCAST, 1)
    except OSError as exc:
        raise with_syscall(exc, "setsockopt") from None


def close_socket(sock: _socket.socket) -> None:
    """Close a socket that never became an FD, through the table (Go's ``poll.CloseFunc``)."""
    try:
        _table.close(sock)
    except OSError:
        pass


def new_netfd(net: str, family: int, sotype: int, proto: int, ipv6only: bool) -> NetFD:
    """socket + default options + poller registration (in a goroutine); closes it on failure."""
    sock = sys_socket(family, sotype, proto)
    try:
        set_default_sockopts(sock, family, sotype, ipv6only)
        return NetFD(sock, family, sotype, net)
    except BaseException:
        close_socket(sock)
        raise


def _run_control(nfd: NetFD, control: ControlFn | None, address: Any) -> None:
    if control is not None:
        control(nfd.ctrl_network(), "" if address is None else str(address), RawConn(nfd.fd))


def _bind(nfd: NetFD, laddr: Addr) -> None:
    try:
        nfd.sock.bind(laddr.sockaddr(nfd.family))
    except OSError as exc:
        raise with_syscall(exc, "bind") from None


def socket(
    ctx: DialContext | None,
    net: str,
    family: int,
    sotype: int,
    proto: int,
    ipv6only: bool,
    laddr: Addr | None,
    raddr: Addr | None,
    control: ControlFn | None,
    backlog: int | None = None,
) -> NetFD:
    """Go's ``socket()``: a ready listener, bound datagram socket or connected socket.

    With only ``laddr`` (listen), a stream socket listens and a datagram
    socket binds; with ``raddr`` the socket connects (binding ``laddr`` first
    if given).  Whatever fails, the descriptor is closed before the error
    propagates.
    """
    nfd = new_netfd(net, family, sotype, proto, ipv6only)
    try:
        if laddr is not None and raddr is None:
            if sotype in (_socket.SOCK_STREAM, _socket.SOCK_SEQPACKET):
                _listen_stream(
                    nfd, laddr, max_listener_backlog() if backlog is None else backlog, control
                )
            else:
                _listen_datagram(nfd, laddr, control)
            return nfd
        _dial(nfd, ctx or DialContext(), laddr, raddr, control)
        return nfd
    except BaseException:
        try:
            nfd.close()
        except OSError:
            pass
        raise


def _listen_stream(nfd: NetFD, laddr: Addr, backlog: int, control: ControlFn | None) -> None:
    """Go's ``listenStream``: SO_REUSEADDR, control, bind, listen, record the address."""
    if nfd.family in (_socket.AF_INET, _socket.AF_INET6):
        try:
            nfd.sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        except OSError as exc:
            raise with_syscall(exc, "setsockopt") from None
    _run_control(nfd, control, laddr)
    _bind(nfd, laddr)
    try:
        _table.listen(nfd.sock, backlog)
    except OSError as exc:
        raise with_syscall(exc, "listen") from None
    nfd.laddr = nfd.addr_of(nfd.getsockname()) or laddr


def _listen_datagram(nfd: NetFD, laddr: Addr, control: ControlFn | None) -> None:
    """Go's ``listenDatagram``: control, bind, record the address."""
    _run_control(nfd, control, laddr)
    _bind(nfd, laddr)
    nfd.laddr = nfd.addr_of(nfd.getsockname()) or laddr


def _dial(
    nfd: NetFD,
    ctx: DialContext,
    laddr: Addr | None,
    raddr: Addr | None,
    control: ControlFn | None,
) -> None:
    """Go's ``netFD.dial``: control, bind the local address, connect, record addresses."""
    _run_control(nfd, control, raddr if raddr is not None else laddr)
    if laddr is not None:
        _bind(nfd, laddr)
    peer: Any = None
    if raddr is not None:
        try:
            rsa = raddr.sockaddr(nfd.family)
        except OSError as exc:  # a Unix path too long for sun_path
            raise with_syscall(exc, "connect") from None
        peer = nfd.connect(ctx, rsa)
        if peer is None:
            peer = rsa
    lsa = nfd.getsockname()
    nfd.laddr = nfd.addr_of(lsa)
    if raddr is not None:
        addr = nfd.addr_of(peer)
        nfd.raddr = raddr if isinstance(raddr, UnixAddr) else addr
    if isinstance(nfd.laddr, UnixAddr) and laddr is not None and not nfd.laddr.name:
        nfd.laddr = laddr


def _keep_alive_option_names() -> tuple[int | None, int | None]:
    idle = getattr(_socket, "TCP_KEEPIDLE", None)
    if idle is None:  # macOS names the idle time TCP_KEEPALIVE
        idle = getattr(_socket, "TCP_KEEPALIVE", None)
    return idle, getattr(_socket, "TCP_KEEPINTVL", None)


_KEEPIDLE, _KEEPINTVL = _keep_alive_option_names()


def keep_alive_period_options(seconds: float) -> list[tuple[int, int, int]]:
    """The setsockopts of a keep-alive period: idle time and probe interval.

    Go's ``setKeepAlivePeriod``: rounded up to whole seconds, TCP_KEEPIDLE
    (macOS: TCP_KEEPALIVE) and TCP_KEEPINTVL where the platform has them; 0
    is Go's default of 15 s.
    """
    secs = max(1, math.ceil(seconds or DEFAULT_TCP_KEEPALIVE))
    return [(_socket.IPPROTO_TCP, opt, secs) for opt in (_KEEPIDLE, _KEEPINTVL) if opt is not None]


_accepted_options: dict[float, tuple[tuple[int, int, int], ...]] = {}


def accepted_tcp_options(keep_alive: float) -> tuple[tuple[int, int, int], ...]:
    """The setsockopts Go's TCP accept makes: TCP_NODELAY, then the keep-alive policy.

    ``keep_alive`` as :meth:`NetFD.apply_keep_alive` takes it (0: Go's 15 s
    default, negative: keep-alive left off).  Built once per value: a server
    asks for the same list for every conn it accepts.
    """
    options = _accepted_options.get(keep_alive)
    if options is None:
        opts: list[tuple[int, int, int]] = [(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)]
        if keep_alive >= 0:
            opts.append((_socket.SOL_SOCKET, _socket.SO_KEEPALIVE, 1))
            opts.extend(keep_alive_period_options(keep_alive or DEFAULT_TCP_KEEPALIVE))
        options = tuple(opts)
        if len(_accepted_options) < 64:  # a few values in practice; bounded anyway
            _accepted_options[keep_alive] = options
    return options


def set_accepted_options(sock: _socket.socket, options: Sequence[tuple[int, int, int]]) -> None:
    """Apply ``options`` to ``sock``, ignoring errors as Go does, each on its own.

    The caller keeps the descriptor open (an FD reference, or a conn not
    yet published).  One option the platform refuses must not cost the others.
    """
    setsockopt = sock.setsockopt
    try:
        for level, opt, value in options:
            setsockopt(level, opt, value)
    except OSError:
        for level, opt, value in options:
            try:
                setsockopt(level, opt, value)
            except OSError:
                pass


def accept_tcp(lnfd: NetFD, keep_alive: float) -> NetFD:
    """:func:`accept` plus what Go's TCP accept sets (:func:`accepted_tcp_options`)."""
    # Before accepting: a bad value loses no conn.  The cache lookup inline.
    options = _accepted_options.get(keep_alive) or accepted_tcp_options(keep_alive)
    nfd = accept(lnfd)
    # Not published yet: nobody else can close it, so no FD reference is
    # taken.  set_accepted_options's loop inline, falling back to it on error.
    sock = nfd.sock
    try:
        for level, opt, value in options:
            sock.setsockopt(level, opt, value)
    except OSError:
        set_accepted_options(sock, options)
    return nfd


def accept(lnfd: NetFD) -> NetFD:
    """Accept one connection on a listening NetFD (Go's ``netFD.accept``).

    The core FD retries ECONNABORTED and parks on EAGAIN.  A socket that
    cannot be registered with the poller is closed through the table.
    """
    sock, sa = lnfd.fd.accept()
    try:
        nfd = NetFD(sock, lnfd.family, lnfd.sotype, lnfd.net)
    except BaseException:
        close_socket(sock)
        raise
    shared = lnfd.accept_laddr
    if shared is not None:
        nfd._laddr, nfd._rsa = shared, sa
        return nfd
    # The new NetFD is not published yet, so no other thread can close it:
    # the socket is called directly, without the FD reference that
    # NetFD.getsockname takes (two Python calls per accepted conn).
    try:
        lsa = sock.getsockname()
    except OSError:
        lsa = None
    if lnfd.family != _socket.AF_UNIX:
        nfd._lsa, nfd._rsa = lsa, sa  # set_sockaddrs, on a NetFD with no Addr yet
        return nfd
    nfd.laddr = nfd.addr_of(lsa)
    nfd.raddr = nfd.addr_of(sa)
    if isinstance(nfd.laddr, UnixAddr) and not nfd.laddr.name and lnfd.laddr is not None:
        nfd.laddr = lnfd.laddr
    return nfd


def favorite_family(
    net: str, laddr: Addr | None, raddr: Addr | None, mode: str
) -> tuple[int, bool]:
    """Pick the address family and IPV6_V6ONLY for a socket (Go's ``favoriteAddrFamily``).

    "tcp4"/"udp4" → AF_INET; "tcp6"/"udp6" → AF_INET6 only; "tcp"/"udp"
    listening on a wildcard → a dual-stack AF_INET6 socket where IPv6 works;
    otherwise AF_INET when every given address is IPv4.
    """
    if net in UNIX_NETWORKS:
        return _socket.AF_UNIX, False
    last = net[-1]
    if last == "4":
        return _socket.AF_INET, False
    if last == "6":
        return _socket.AF_INET6, True
    if mode == "listen" and (laddr is None or _is_wildcard(laddr)):
        if supports_ipv4map() or not supports_ipv4():
            return _socket.AF_INET6, False
        if laddr is None:
            return _socket.AF_INET, False
        return _family_of(laddr), False
    if (laddr is None or _family_of(laddr) == _socket.AF_INET) and (
        raddr is None or _family_of(raddr) == _socket.AF_INET
    ):
        return _socket.AF_INET, False
    return _socket.AF_INET6, False


def _family_of(a: Addr) -> int:
    return _socket.AF_UNIX if isinstance(a, UnixAddr) else a.family()


def _is_wildcard(a: Addr) -> bool:
    return not isinstance(a, UnixAddr) and a.is_wildcard()


_probe: dict[str, bool] = {}


def _probe_stack() -> None:
    """Go's ``ipStackCapabilities``: try binding IPv4, IPv6 and a dual-stack socket."""
    if _probe:
        return

    def works(family: int, addr: Any, v6only: int | None) -> bool:
        try:
            s = _socket.socket(family, _socket.SOCK_STREAM)
        except OSError:
            return False
        try:
            if v6only is not None:
                s.setsockopt(_socket.IPPROTO_IPV6, _socket.IPV6_V6ONLY, v6only)
            s.bind(addr)
            return True
        except OSError:
            return False
        finally:
            s.close()

    has_v6 = _socket.has_ipv6
    _probe["ipv4"] = works(_socket.AF_INET, ("127.0.0.1", 0), None)
    _probe["ipv6"] = has_v6 and works(_socket.AF_INET6, ("::1", 0), 1)
    _probe["ipv4map"] = has_v6 and works(_socket.AF_INET6, ("::ffff:127.0.0.1", 0), 0)


def supports_ipv4() -> bool:
    """True when the machine can bind IPv4 loopback."""
    _probe_stack()
    return _probe["ipv4"]


def supports_ipv6() -> bool:
    """True when the machine can bind IPv6 loopback (``::1``)."""
    _probe_stack()
    return _probe["ipv6"]


def supports_ipv4map() -> bool:
    """True when an IPv6 socket can also carry IPv4 (dual stack)."""
    _probe_stack()
    return _probe["ipv4map"]


__all__ = [
    "A_LONG_TIME_AGO",
    "DEFAULT_TCP_KEEPALIVE",
    "ControlFn",
    "NetFD",
    "RawConn",
    "accept",
    "accept_tcp",
    "accepted_tcp_options",
    "close_socket",
    "favorite_family",
    "max_listener_backlog",
    "new_netfd",
    "set_accepted_options",
    "set_default_sockopts",
    "socket",
    "supports_ipv4",
    "supports_ipv4map",
    "supports_ipv6",
    "sys_socket",
]
