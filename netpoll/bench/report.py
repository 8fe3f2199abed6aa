"""Summaries of the measurements: medians, ranges, ratios, table and JSON."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from netpoll.bench.runner import Measurement, Scenario, Server

#: The kinds every netpoll row is compared with (gevent and floor when they ran).
BASELINES = ("threads", "asyncio", "gevent", "floor")
#: The kinds that are netpoll (and get ratio columns).
NETPOLL_KINDS = ("netpoll-g", "netpoll")


@dataclass
class Summary:
    """One server's figures in one scenario, over the rounds."""

    scenario: Scenario
    server: Server
    values: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    p50: float | None = None
    p99: float | None = None
    peak_rss: int | None = None
    client_cpu: float | None = None
    server_cpu: float | None = None
    other_cpu: float | None = None
    incomplete: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    #: baseline kind -> this median / the baseline's median (netpoll rows only)
    ratios: dict[str, float] = field(default_factory=dict)

    @property
    def median(self) -> float | None:
        """Median of the rounds' headline values."""
        return statistics.median(self.values) if self.values else None


def _median(xs: list[Any]) -> Any:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize(measurements: list[Measurement]) -> list[Summary]:
    """Group measurements by (scenario, server), in run order, with ratios."""
    table: dict[tuple[str, Server], Summary] = {}
    by: dict[tuple[str, Server], list[Measurement]] = {}
    for m in measurements:
        key = (m.scenario.key, m.server)
        if key not in table:
            table[key] = Summary(m.scenario, m.server)
            by[key] = []
        by[key].append(m)
    for key, ms in by.items():
        s = table[key]
        ok = [m for m in ms if m.error is None and m.value is not None]
        s.errors = [f"round {m.round}: {m.error}" for m in ms if m.error is not None]
        s.values = [m.value for m in ok if m.value is not None]
        s.p50 = _median([m.result.get("p50") for m in ok])
        s.p99 = _median([m.result.get("p99") for m in ok])
        s.peak_rss = _median([m.peak_rss for m in ok])
        s.client_cpu = _median([m.result.get("client_cpu_pct") for m in ok])
        s.server_cpu = _median([m.result.get("server_cpu_pct") for m in ok])
        s.other_cpu = _median([m.result.get("other_cpu_pct") for m in ok])
        s.incomplete = any(m.result.get("complete") is False for m in ok)
        if s.scenario.mode == "idle":
            s.extra["server_threads"] = _median([m.result.get("server_threads") for m in ok])
            s.extra["open_rate"] = _median([m.result.get("rate") for m in ok])
            s.extra["answered"] = min((m.result.get("answered", 0) for m in ok), default=0)
            s.extra["echo_p99"] = _median([m.result.get("echo_p99") for m in ok])
            s.extra["echo_max"] = _median([m.result.get("echo_max") for m in ok])
            # The latency columns of an idle row: one echo on each idle conn
            # afterwards, one after another ("*" if some did not answer).
            s.p99 = s.extra["echo_p99"]
        if s.scenario.mode == "connect":
            errs: dict[str, int] = {}
            for m in ok:
                for k, v in (m.result.get("errors") or {}).items():
                    errs[k] = errs.get(k, 0) + v
            if errs:
                s.extra["connect_errors"] = errs
    summaries = list(table.values())
    for s in summaries:
        if s.server.kind not in NETPOLL_KINDS or s.median is None:
            continue
        for b in summaries:
            if b.scenario.key == s.scenario.key and b.server.kind in BASELINES and b.median:
                s.ratios[b.server.kind] = s.median / b.median
    return summaries


def _num(v: float, unit: str) -> str:
    if unit in ("KB/conn",):
        return f"{v:,.1f}"
    if unit == "MiB/s":
        return f"{v:,.0f}"
    return f"{v:,.0f}"


def _lat(v: float | None) -> str:
    if v is None:
        return "-"
    if v < 1e-3:
        return f"{v * 1e6:.0f} us"
    return f"{v * 1e3:.2f} ms"


def _mib(v: int | None) -> str:
    return "-" if v is None else f"{v / (1024 * 1024):.1f} MiB"


#: Client CPU at or above this (percent of one CPU) is flagged as saturated.
CLIENT_SATURATED = 90.0


def _pct(v: float | None, flag_at: float | None = None) -> str:
    if v is None:
        return "-"
    mark = "!" if flag_at is not None and v >= flag_at else ""
    return f"{v:.0f}%{mark}"


def format_table(summaries: list[Summary], baselines: list[str]) -> str:
    """The side-by-side text table, one block of rows per scenario."""
    head = ["scenario", "server", "median", "min-max"]
    head += [f"vs {b}" for b in baselines]
    head += ["p50 lat", "p99 lat", "peak RSS", "srv CPU", "cli CPU", "other"]
    rows: list[list[str]] = []
    last = None
    for s in summaries:
        unit = s.scenario.unit
        if s.median is None:
            cells = ["error", "-"]
        else:
            mark = "*" if s.incomplete else ""
            cells = [
                f"{_num(s.median, unit)} {unit}{mark}",
                f"{_num(min(s.values), unit)}-{_num(max(s.values), unit)}"
                if len(s.values) > 1
                else "-",
            ]
        ratios = [f"{s.ratios[b]:.2f}x" if b in s.ratios else "" for b in baselines]
        label = s.scenario.label if s.scenario.key != last else ""
        last = s.scenario.key
        rows.append(
            [
                label,
                s.server.name,
                *cells,
                *ratios,
                _lat(s.p50),
                _lat(s.p99),
                _mib(s.peak_rss),
                _pct(s.server_cpu),
                _pct(s.client_cpu, CLIENT_SATURATED),
                _pct(s.other_cpu),
            ]
        )
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    right = set(range(2, len(head)))

    def line(r: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()

    out = [line(head), line(["-" * w for w in widths])]
    prev = None
    for s, r in zip(summaries, rows, strict=True):
        if prev is not None and s.scenario.key != prev:
            out.append("")
        prev = s.scenario.key
        out.append(line(r))
    return "\n".join(out)


def to_json(summaries: list[Summary], measurements: list[Measurement]) -> list[dict[str, Any]]:
    """JSON-ready scenarios, each with its servers' summaries and raw rounds."""
    out: list[dict[str, Any]] = []
    index: dict[str, dict[str, Any]] = {}
    for s in summaries:
        sc = s.scenario
        if sc.key not in index:
            index[sc.key] = {
                "key": sc.key,
                "label": sc.label,
                "mode": sc.mode,
                "unit": sc.unit,
                "higher_is_better": sc.higher_is_better,
                "conns": sc.conns,
                "size": sc.size,
                "seconds": sc.seconds,
                "total": sc.total,
                "servers": [],
            }
            out.append(index[sc.key])
        rounds = [
            {
                "round": m.round,
                "value": m.value,
                "peak_rss": m.peak_rss,
                "error": m.error,
                "busy_before_pct": m.busy_before,
                "settle_wait_s": m.settle_wait,
                "client": m.result,
            }
            for m in measurements
            if m.scenario.key == sc.key and m.server == s.server
        ]
        index[sc.key]["servers"].append(
            {
                "name": s.server.name,
                "kind": s.server.kind,
                "backend": s.server.backend,
                "median": s.median,
                "min": min(s.values) if s.values else None,
                "max": max(s.values) if s.values else None,
                "values": s.values,
                "ratios": s.ratios,
                "p50_latency_s": s.p50,
                "p99_latency_s": s.p99,
                "peak_rss_bytes": s.peak_rss,
                "server_cpu_pct": s.server_cpu,
                "client_cpu_pct": s.client_cpu,
                "other_cpu_pct": s.other_cpu,
                "incomplete": s.incomplete,
                "extra": s.extra,
                "errors": s.errors,
                "rounds": rounds,
            }
        )
    return out
