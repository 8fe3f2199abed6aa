"""Go's package net: listen, dial, conns with deadlines, addresses, errors.

The modules mirror Go's files: :mod:`~netpoll.net.addr` (addresses and
host:port parsing), :mod:`~netpoll.net.lookup` (resolution),
:mod:`~netpoll.net.context` (a dial's deadline and cancellation),
:mod:`~netpoll.net.sock` (netFD: socket/bind/listen/connect on the
netpoller), :mod:`~netpoll.net.conn` (Conn, TCPConn, UnixConn, UDPConn),
:mod:`~netpoll.net.listen` (ListenConfig and listeners),
:mod:`~netpoll.net.dial` (Dialer, happy eyeballs) and
:mod:`~netpoll.net.errors` (OpError and friends).
"""

from __future__ import annotations

from netpoll.net.addr import (
    Addr,
    TCPAddr,
    UDPAddr,
    UnixAddr,
    join_host_port,
    split_host_port,
)
from netpoll.net.conn import Conn, TCPConn, UDPConn, UnixConn
from netpoll.net.dial import Dialer, dial
from netpoll.net.errors import (
    AddrError,
    CanceledError,
    DNSError,
    ErrCanceled,
    ErrClosed,
    OpError,
    UnknownNetworkError,
)
from netpoll.net.listen import (
    ListenConfig,
    Listener,
    TCPListener,
    UnixListener,
    listen,
    listen_packet,
)
from netpoll.net.lookup import resolve_tcp_addr, resolve_udp_addr
from netpoll.net.sock import RawConn

__all__ = [
    "Addr",
    "AddrError",
    "CanceledError",
    "Conn",
    "DNSError",
    "Dialer",
    "ErrCanceled",
    "ErrClosed",
    "ListenConfig",
    "Listener",
    "OpError",
    "RawConn",
    "TCPAddr",
    "TCPConn",
    "TCPListener",
    "UDPAddr",
    "UDPConn",
    "UnixAddr",
    "UnixConn",
    "UnixListener",
    "UnknownNetworkError",
    "dial",
    "join_host_port",
    "listen",
    "listen_packet",
    "resolve_tcp_addr",
    "resolve_udp_addr",
    "split_host_port",
]
