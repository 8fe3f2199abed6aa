"""The net layer's errors: OpError and friends (Go's ``net/net.go`` error types).

Go reports every failure of a net operation as an ``*OpError`` carrying the
operation (``dial``, ``read``, ``accept`` ...), the network, the local and
remote addresses and the underlying error, and prints it as
``dial tcp 127.0.0.1:1: connect: connection refused``.

Python code catches exceptions by class, so an :class:`OpError` here is also
an instance of the builtin class matching its cause: the raised object's
class is a subclass of both :class:`OpError` and, say,
:class:`ConnectionRefusedError` or :class:`TimeoutError`, made once per
builtin class and cached (:func:`op_error`).  ``except netpoll.OpError``,
``except ConnectionRefusedError`` and ``except OSError`` all see it, and
``errno`` is the cause's errno.

The causes Go names are classes here too: :class:`AddrError`,
:class:`UnknownNetworkError` and :class:`DNSError` for bad input and failed
resolution, :class:`CanceledError` for a canceled dial.  Use of a closed conn
or listener raises :class:`ErrClosed` (Go's ``net.ErrClosed``), a plain
:class:`OpError` subclass that is not a timeout.
"""

from __future__ import annotations

import errno as _errno
import socket as _socket
import threading
from typing import Any

from netpoll.core.errors import DeadlineExceededError, NetClosingError, PollRegistrationError


def error_text(err: BaseException) -> str:
    """How Go would print ``err``: strerror in lower case, no ``[Errno n]``."""
    if isinstance(err, OSError) and not isinstance(
        err, (NetError, NetClosingError, DeadlineExceededError)
    ):
        text = err.strerror
        if text:
            if len(text) > 1 and text[0].isupper() and not text[1].isupper():
                text = text[0].lower() + text[1:]
            return str(text)
    return str(err)


class NetError(OSError):
    """Base of the causes the net layer defines itself (Go's ``net.Error`` values)."""

    def __str__(self) -> str:
        return str(self.strerror)

    def timeout(self) -> bool:
        """True if this error is a timeout (Go's ``Timeout()``)."""
        return False


class AddrError(NetError, ValueError):
    """A malformed or unusable address (Go's ``*AddrError``).

    ``err`` says what was wrong, ``addr`` is the offending text.  Also a
    :class:`ValueError`: it is bad input.
    """

    def __init__(self, err: str, addr: str = "") -> None:
        super().__init__(_errno.EINVAL, err)
        self.err = err
        self.addr = addr

    def __str__(self) -> str:
        if self.addr:
            return f"address {self.addr}: {self.err}"
        return self.err


class UnknownNetworkError(NetError, ValueError):
    """A network name the package does not know (Go's ``UnknownNetworkError``)."""

    def __init__(self, network: str) -> None:
        super().__init__(_errno.EINVAL, f"unknown network {network}")
        self.network = network


class DNSError(NetError, _socket.gaierror):
    """Name resolution failed (Go's ``*DNSError``); also a :class:`socket.gaierror`.

    ``name`` is the name looked up, ``err`` the reason ("no such host"),
    ``is_not_found`` and ``is_timeout`` classify it.
    """

    def __init__(
        self, err: str, name: str, *, is_not_found: bool = False, is_timeout: bool = False
    ) -> None:
        super().__init__(_errno.ETIMEDOUT if is_timeout else _errno.ENOENT, err)
        self.err = err
        self.name = name
        self.is_not_found = is_not_found
        self.is_timeout = is_timeout

    def __str__(self) -> str:
        return f"lookup {self.name}: {self.err}"

    def timeout(self) -> bool:
        """True when the lookup ran out of time."""
        return self.is_timeout


class CanceledError(NetError):
    """The operation was canceled by the caller (Go's ``errCanceled``)."""

    def __init__(self) -> None:
        super().__init__(_errno.ECANCELED, "operation was canceled")


class OpError(OSError):
    """A failed net operation with Go's context (Go's ``*OpError``).

    Attributes: ``op`` ("dial", "listen", "accept", "read", "write", "close",
    "set" ...), ``net`` ("tcp", "unix" ...), ``source`` (local address or
    None), ``addr`` (remote address, or the listener's address, or None),
    ``err`` (the cause, an exception), ``syscall`` (the system call that
    failed, or ""), and for writes ``written`` (bytes that went out first).
    ``str()`` reads like Go: ``read tcp 127.0.0.1:5->127.0.0.1:6: i/o timeout``.

    Raised objects are instances of a subclass that also derives from the
    cause's builtin class; build them with :func:`op_error`.
    """

    def __init__(
        self,
        op: str,
        net: str,
        source: Any,
        addr: Any,
        err: BaseException,
        syscall: str = "",
    ) -> None:
        code = err.errno if isinstance(err, OSError) else None
        # Not super(): the next class in a dynamic subclass's MRO is the
        # mixin (say AddrError), whose __init__ takes other arguments.
        OSError.__init__(self, code if code is not None else _errno.EIO, error_text(err))
        self.op = op
        self.net = net
        self.source = source
        self.addr = addr
        self.err = err
        self.syscall = syscall
        self.written = int(getattr(err, "written", 0) or 0)

    def __str__(self) -> str:
        s = self.op
        if self.net:
            s += " " + self.net
        if self.source is not None:
            s += " " + str(self.source)
        if self.addr is not None:
            s += ("->" if self.source is not None else " ") + str(self.addr)
        s += ": "
        if self.syscall:
            s += self.syscall + ": "
        return s + error_text(self.err)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"

    def __reduce__(self) -> Any:
        return (op_error, (self.op, self.net, self.source, self.addr, self.err, self.syscall))

    def timeout(self) -> bool:
        """True when the cause is a timeout (Go's ``Timeout()``)."""
        return isinstance(self, TimeoutError)


class ErrClosed(OpError):
    """Use of a closed network connection or listener (Go's ``net.ErrClosed``).

    Also what a parked operation raises when another thread closes the conn.
    Not a :class:`TimeoutError`.
    """


class ErrCanceled(OpError):
    """A dial aborted through its ``cancel`` event ("operation was canceled")."""


_cache: dict[type[BaseException], type[OpError]] = {}
_cache_lock = threading.Lock()
_KNOWN_MODULES = frozenset({"builtins", "socket", __name__})


def _mixin_for(err: BaseException) -> type[BaseException] | None:
    """The builtin (or net) exception class an OpError for ``err`` also derives from."""
    if isinstance(err, DeadlineExceededError):
        return TimeoutError
    if isinstance(err, DNSError) and err.is_timeout:
        return TimeoutError
    for cls in type(err).__mro__:
        if cls.__module__ in _KNOWN_MODULES and issubclass(cls, OSError):
            if cls is OSError or issubclass(cls, OpError):
                return None
            return cls
    return None


def op_error_class(err: BaseException) -> type[OpError]:
    """The (cached) OpError subclass used to report ``err``."""
    if isinstance(err, NetClosingError):
        return ErrClosed
    if isinstance(err, CanceledError):
        return ErrCanceled
    mixin = _mixin_for(err)
    if mixin is None:
        return OpError
    cls = _cache.get(mixin)
    if cls is None:
        with _cache_lock:
            cls = _cache.get(mixin)
            if cls is None:
                # Named "OpError", so repr() and type().__name__ read like the
                # documented class; the qualified name, which tracebacks print
                # with the module, says which builtin it also is:
                # "netpoll.OpError[TimeoutError]: read tcp ...: i/o timeout".
                cls = type("OpError", (OpError, mixin), {"__module__": "netpoll"})
                cls.__qualname__ = f"OpError[{mixin.__name__}]"
                _cache[mixin] = cls
    return cls


def op_error(
    op: str,
    net: str,
    source: Any,
    addr: Any,
    err: BaseException,
    syscall: str = "",
) -> OpError:
    """Wrap ``err`` as an OpError that is also an instance of ``err``'s builtin class.

    An ``err`` that already is an OpError is returned unchanged (Go never
    nests them either).
    """
    if isinstance(err, OpError):
        return err
    if isinstance(err, SyscallError):
        syscall, err = err.syscall, err.err
    elif isinstance(err, PollRegistrationError):
        syscall, err = "", err.err  # Go reports a failed registration bare
    elif isinstance(err, _BARE):
        syscall = ""
    return op_error_class(err)(op, net, source, addr, err, syscall)


class SyscallError(OSError):
    """An OS error and the system call that failed (Go's ``os.SyscallError``).

    The net layer raises it between the call and the operation that wraps it:
    :func:`op_error` unwraps it, so the OpError is an instance of the
    original error's builtin class and reads ``connect: connection refused``.
    ``errno`` and ``strerror`` are the original error's.
    """

    def __init__(self, syscall: str, err: OSError) -> None:
        super().__init__(err.errno, err.strerror)
        self.syscall = syscall
        self.err = err

    def __str__(self) -> str:
        return f"{self.syscall}: {error_text(self.err)}"


#: Errors reported without a system call's name (Go reports them bare).
_BARE = (NetClosingError, DeadlineExceededError, NetError, OpError)


def with_syscall(err: OSError, name: str) -> OSError:
    """``err`` as a :class:`SyscallError` of ``name`` (Go's ``os.NewSyscallError``).

    Poll-layer errors (timeouts, closes) and the net layer's own errors are
    returned unchanged: Go reports them without a call's name.
    """
    if isinstance(err, (*_BARE, SyscallError, PollRegistrationError)):
        return err
    return SyscallError(name, err)


__all__ = [
    "AddrError",
    "CanceledError",
    "DNSError",
    "ErrCanceled",
    "ErrClosed",
    "NetError",
    "OpError",
    "SyscallError",
    "UnknownNetworkError",
    "error_text",
    "op_error",
    "op_error_class",
    "with_syscall",
]
