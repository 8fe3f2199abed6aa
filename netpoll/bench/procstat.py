"""Per-process measurements and limits for the benchmark, without psutil.

On Linux everything comes from ``/proc/<pid>/status`` (VmRSS, VmHWM, Threads)
and ``/proc/<pid>/stat`` (utime + stime).  Elsewhere the readers return
``None`` for another process, and :func:`cpu_seconds` falls back to
:func:`os.times` for the calling process, so the benchmark still runs and
simply leaves those columns empty.
"""

from __future__ import annotations

import os
import sys
import time

_CLK_TCK: int | None = None


def _clock_ticks() -> int:
    global _CLK_TCK
    if _CLK_TCK is None:
        try:
            _CLK_TCK = int(os.sysconf("SC_CLK_TCK"))
        except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
            _CLK_TCK = 100
    return _CLK_TCK


def _status_fields(pid: int) -> dict[str, str] | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key] = value.strip()
    return fields


def _kib_field(fields: dict[str, str] | None, name: str) -> int | None:
    if fields is None or name not in fields:
        return None
    try:
        return int(fields[name].split()[0]) * 1024
    except (ValueError, IndexError):
        return None


def rss_bytes(pid: int) -> int | None:
    """Resident set size of ``pid`` in bytes (VmRSS), or None if unknown."""
    return _kib_field(_status_fields(pid), "VmRSS")


def peak_rss_bytes(pid: int) -> int | None:
    """Peak resident set size of ``pid`` in bytes (VmHWM), or None if unknown."""
    return _kib_field(_status_fields(pid), "VmHWM")


def thread_count(pid: int) -> int | None:
    """Number of threads of ``pid``, or None if unknown."""
    fields = _status_fields(pid)
    if fields is None or "Threads" not in fields:
        return None
    try:
        return int(fields["Threads"])
    except ValueError:
        return None


def cpu_seconds(pid: int | None = None) -> float | None:
    """User + system CPU seconds consumed by ``pid`` (None: this process).

    Reads ``/proc/<pid>/stat``; for the calling process it falls back to
    :func:`os.times` when ``/proc`` is missing.  None when unknown.
    """
    target = os.getpid() if pid is None else pid
    try:
        with open(f"/proc/{target}/stat", encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        if pid is None or pid == os.getpid():
            t = os.times()
            return t.user + t.system
        return None
    # The command name (field 2) may contain spaces and parentheses: split
    # after the last ')'.  utime and stime are fields 14 and 15.
    rest = text[text.rfind(")") + 2 :].split()
    try:
        return (int(rest[11]) + int(rest[12])) / _clock_ticks()
    except (IndexError, ValueError):
        return None


def system_busy_seconds() -> float | None:
    """CPU seconds all CPUs spent busy since boot (``/proc/stat``), or None.

    Busy is everything but idle and iowait: user, nice, system, irq, softirq
    and steal.  The benchmark subtracts its own server and client from the
    busy time of a window to see how much other processes (and the kernel's
    network processing) took.
    """
    try:
        with open("/proc/stat", encoding="ascii") as f:
            line = f.readline()
    except OSError:
        return None
    fields = line.split()
    if not fields or fields[0] != "cpu" or len(fields) < 9:
        return None
    try:
        v = [int(x) for x in fields[1:9]]
    except ValueError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = v
    return (user + nice + system + irq + softirq + steal) / _clock_ticks()


def busy_fraction(interval: float = 0.3) -> float | None:
    """Percent of one CPU the whole machine was busy over ``interval`` s."""
    a = system_busy_seconds()
    if a is None:
        return None
    time.sleep(interval)
    b = system_busy_seconds()
    return None if b is None else 100.0 * (b - a) / interval


def raise_nofile_limit() -> int | None:
    """Raise the soft RLIMIT_NOFILE to the hard limit.

    Returns the resulting soft limit (-1 for unlimited), or None where
    resource limits do not exist.
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if sys.platform == "darwin" and target == resource.RLIM_INFINITY:  # pragma: no cover
        target = 10240  # macOS refuses RLIM_INFINITY for the soft limit (OPEN_MAX)
    if target != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return -1 if soft == resource.RLIM_INFINITY else int(soft)


def pin_to_cpu(cpu: int | None) -> bool:
    """Pin the calling process to one CPU; False if unsupported or refused."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return False
    try:
        os.sched_setaffinity(0, {cpu})
    except (OSError, ValueError):
        return False
    return True


def pinning_plan() -> tuple[int, int] | None:
    """(server CPU, client CPU) when this machine allows pinning, else None.

    Needs :func:`os.sched_setaffinity` and at least two CPUs in this process's
    affinity mask; picks the first two.
    """
    if not hasattr(os, "sched_getaffinity") or not hasattr(os, "sched_setaffinity"):
        return None
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except OSError:
        return None
    if len(cpus) < 2:
        return None
    return cpus[0], cpus[1]
