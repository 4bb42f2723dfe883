"""The figures `tickscope top` shows, from two scrapes of a sidecar's /metrics (pure).

A scrape is the exposition parsed into `{metric: {labels: value}}`. `compute(prev, cur,
elapsed)` turns two of them into a `Frame`: gauges from `cur`, rates and ratios from the
counters' and histograms' increase between the two, as Prometheus's `rate()` and
`histogram_quantile()` would over that window, with two differences that fit a live view of
one process: a counter that went down counts from 0 (a reset, as Prometheus does), and a
series that is new in `cur` counts from 0 too (the sidecar creates a series with its first
observation, so its whole value is new). Without `prev` (the first refresh) rates are None.

No rich here, no I/O: tests feed it fixture expositions and check exact figures.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Alert",
    "Call",
    "Disk",
    "Engine",
    "Frame",
    "Host",
    "Labels",
    "Orders",
    "RateLimit",
    "Scrape",
    "Sidecar",
    "Spans",
    "Stream",
    "compute",
    "histogram_quantile",
    "parse_alerts",
    "parse_exposition",
]

Labels = tuple[tuple[str, str], ...]
Scrape = dict[str, dict[Labels, float]]
Match = Callable[[Mapping[str, str]], bool]

ERROR_STATUS = "STATUS_CODE_ERROR"
OUTCOMES = ("accepted", "rejected", "error")


_SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?[ \t]+(\S+)(?:[ \t]+\S+)?[ \t]*$")
_LABEL = re.compile(r'[ \t]*([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"((?:[^"\\]|\\.)*)"[ \t]*,?')
_ESCAPE = re.compile(r"\\(.)")


def _unescape(value: str) -> str:
    return _ESCAPE.sub(lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def parse_exposition(text: str) -> Scrape:
    """Prometheus text format → `{sample name: {sorted labels: value}}` (histograms as their
    `_bucket`, `_count` and `_sum` samples; timestamps dropped). Comments and lines that are
    not samples are skipped. Several times faster than prometheus_client's parser, which
    took 1.8 s for a 50,000-line exposition: top reads one every refresh."""
    out: Scrape = defaultdict(dict)
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        m = _SAMPLE.match(line)
        if m is None:
            continue
        name, labels, value = m.groups()
        try:
            number = float(value)
        except ValueError:
            continue
        if labels:
            pairs = _LABEL.findall(labels)
            key = tuple(sorted((k, _unescape(v) if "\\" in v else v) for k, v in pairs))
        else:
            key = ()
        out[name][key] = number
    return dict(out)


def _series(scrape: Scrape, name: str, match: Match | None = None) -> dict[Labels, float]:
    series = scrape.get(name, {})
    if match is None:
        return series
    return {k: v for k, v in series.items() if match(dict(k))}


def _gauge(scrape: Scrape, name: str, match: Match | None = None) -> float | None:
    """The sum of the matching series; None when there are none."""
    series = _series(scrape, name, match)
    return math.fsum(series.values()) if series else None


def _increase(prev: Scrape, cur: Scrape, name: str, labels: Labels) -> float:
    now = cur[name][labels]
    before = prev.get(name, {}).get(labels, 0.0)
    return now if now < before else now - before


def _total_increase(prev: Scrape, cur: Scrape, name: str, match: Match | None = None) -> float:
    return math.fsum(_increase(prev, cur, name, k) for k in _series(cur, name, match))


def _labels_are(**want: str) -> Match:
    return lambda labels: all(labels.get(k, "") == v for k, v in want.items())


def _unlabelled(labels: Mapping[str, str]) -> bool:
    return not labels


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """Prometheus's histogram_quantile over cumulative `(le, count)` buckets (the +Inf one
    among them): linear interpolation inside the bucket the rank falls in, the lowest bucket
    starting at 0, the highest finite bound when the rank falls in +Inf. None without
    observations or without a +Inf bucket."""
    ordered = sorted(buckets)
    if not ordered or not math.isinf(ordered[-1][0]):
        return None
    total = ordered[-1][1]
    if total <= 0 or math.isnan(q):
        return None
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for i, (le, count) in enumerate(ordered):
        if count >= rank:
            if math.isinf(le):
                return ordered[-2][0] if len(ordered) > 1 else None
            if i == 0 and le <= 0:
                return le
            start = prev_le if i > 0 else 0.0
            if count == prev_count:
                return le
            return start + (le - start) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return None


# -- the frame --------------------------------------------------------------------


@dataclass(frozen=True)
class Disk:
    mountpoint: str
    device: str
    size: float
    avail: float

    @property
    def used_ratio(self) -> float | None:
        return 1.0 - self.avail / self.size if self.size > 0 else None


@dataclass(frozen=True)
class Host:
    cpus: int
    cpu_busy: float | None  # 1 - idle share of all CPU time in the window
    cpu_iowait: float | None
    load1: float | None
    load5: float | None
    load15: float | None
    mem_total: float | None
    mem_available: float | None
    disks: tuple[Disk, ...]
    disk_io_busy: float | None  # the busiest whole disk's share of the window

    @property
    def mem_used_ratio(self) -> float | None:
        if not self.mem_total or self.mem_available is None:
            return None
        return 1.0 - self.mem_available / self.mem_total


@dataclass(frozen=True)
class Engine:
    name: str
    up: bool
    rss: float | None
    memory_limit: float | None
    cpu_cores: float | None  # CPU seconds per second in the window
    cpu_limit: float | None
    restarts: float
    restarts_delta: float | None
    threads: float | None
    open_fds: float | None

    @property
    def memory_ratio(self) -> float | None:
        if self.rss is None or not self.memory_limit:
            return None
        return self.rss / self.memory_limit

    @property
    def cpu_ratio(self) -> float | None:
        if self.cpu_cores is None or not self.cpu_limit:
            return None
        return self.cpu_cores / self.cpu_limit


@dataclass(frozen=True)
class Spans:
    received_total: float
    rejected_total: float
    received_per_s: float | None
    accepted_per_s: float | None
    rejected_per_s: float | None  # spans of decodable requests not taken
    rejected_requests_per_s: float | None  # whole requests turned away
    rejected_by_reason: Mapping[str, float]  # totals, spans and requests, reason -> count


@dataclass(frozen=True)
class Call:
    exchange: str
    method: str
    calls_total: float
    calls_per_s: float | None
    errors_per_s: float | None
    error_ratio: float | None  # errors / calls in the window; None without calls
    p99: float | None  # seconds, over the window's observations


@dataclass(frozen=True)
class Orders:
    outcome: str
    total: float
    per_s: float | None


@dataclass(frozen=True)
class RateLimit:
    exchange: str
    used_ratio: float | None
    hits_total: float
    hits_delta: float | None


@dataclass(frozen=True)
class Stream:
    kind: str  # "ws" (exchange_ws_update_age_seconds) or "rest" (exchange_marketdata_age_seconds)
    exchange: str
    method: str
    symbol: str
    age: float
    updates_per_s: float | None  # ws only


@dataclass(frozen=True)
class Sidecar:
    version: str | None
    rss: float | None
    cpu_cores: float | None
    queue: float | None
    queue_capacity: float | None
    spanmetrics_series: float | None
    spanmetrics_limit: float | None
    metrics_series: float | None
    overflow_per_s: float | None
    forward_buffer: float | None
    forward_capacity: float | None
    forward_sent_per_s: float | None
    forward_dropped_per_s: float | None
    dropped_total: float  # pipeline and forward drops since start


@dataclass(frozen=True)
class Alert:
    name: str
    severity: str
    summary: str
    active_at: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Frame:
    elapsed: float | None
    host: Host
    engines: tuple[Engine, ...]
    spans: Spans
    calls: tuple[Call, ...]
    orders: tuple[Orders, ...]
    rate_limits: tuple[RateLimit, ...]
    streams: tuple[Stream, ...]
    sidecar: Sidecar


def compute(prev: Scrape | None, cur: Scrape, elapsed: float | None) -> Frame:
    """The frame for `cur`, with rates over the `elapsed` seconds since `prev`."""
    window: tuple[Scrape, float] | None = None
    if prev is not None and elapsed is not None and elapsed > 0:
        window = (prev, elapsed)

    def rate(name: str, match: Match | None = None) -> float | None:
        if window is None:
            return None
        return _total_increase(window[0], cur, name, match) / window[1]

    def increase(name: str, match: Match | None = None) -> float | None:
        if window is None:
            return None
        return _total_increase(window[0], cur, name, match)

    return Frame(
        elapsed=window[1] if window else None,
        host=_host(cur, window),
        engines=_engines(cur, rate, increase),
        spans=_spans(cur, rate),
        calls=_calls(cur, window),
        orders=tuple(
            Orders(
                outcome,
                _gauge(cur, "trading_orders_total", _labels_are(outcome=outcome)) or 0.0,
                rate("trading_orders_total", _labels_are(outcome=outcome)),
            )
            for outcome in _values(cur, "trading_orders_total", "outcome", OUTCOMES)
        ),
        rate_limits=_rate_limits(cur, increase),
        streams=_streams(cur, rate),
        sidecar=_sidecar(cur, rate),
    )


def _values(scrape: Scrape, name: str, label: str, first: tuple[str, ...] = ()) -> list[str]:
    """The values `label` takes in `name`'s series: those of `first` present, in that
    order, then the others sorted."""
    seen = {dict(k).get(label, "") for k in scrape.get(name, {})}
    return [v for v in first if v in seen] + sorted(seen - set(first))


def _host(cur: Scrape, window: tuple[Scrape, float] | None) -> Host:
    cpu = cur.get("node_cpu_seconds_total", {})
    cpus = len({dict(k).get("cpu") for k in cpu})
    busy = iowait = None
    if window is not None and cpu:
        prev = window[0]
        by_mode: dict[str, float] = defaultdict(float)
        for labels in cpu:
            by_mode[dict(labels).get("mode", "")] += _increase(
                prev, cur, "node_cpu_seconds_total", labels
            )
        total = math.fsum(by_mode.values())
        if total > 0:
            busy = 1.0 - by_mode["idle"] / total
            iowait = by_mode["iowait"] / total
    disks: dict[str, Disk] = {}
    errors = {k for k, v in cur.get("node_filesystem_device_error", {}).items() if v != 0}
    sizes = cur.get("node_filesystem_size_bytes", {})
    avails = cur.get("node_filesystem_avail_bytes", {})
    # One line per device, under its shortest mountpoint (bind mounts repeat a device).
    for labels in sorted(sizes, key=lambda k: (len(dict(k).get("mountpoint", "")), k)):
        if labels in errors or labels not in avails:
            continue
        d = dict(labels)
        device = d.get("device", "")
        if device not in disks:
            disks[device] = Disk(d.get("mountpoint", ""), device, sizes[labels], avails[labels])
    io_busy = None
    if window is not None and "node_disk_io_time_seconds_total" in cur:
        io_busy = max(
            _increase(window[0], cur, "node_disk_io_time_seconds_total", k) / window[1]
            for k in cur["node_disk_io_time_seconds_total"]
        )
    return Host(
        cpus=cpus,
        cpu_busy=busy,
        cpu_iowait=iowait,
        load1=_gauge(cur, "node_load1"),
        load5=_gauge(cur, "node_load5"),
        load15=_gauge(cur, "node_load15"),
        mem_total=_gauge(cur, "node_memory_MemTotal_bytes"),
        mem_available=_gauge(cur, "node_memory_MemAvailable_bytes"),
        disks=tuple(sorted(disks.values(), key=lambda d: d.mountpoint)),
        disk_io_busy=io_busy,
    )


def _engines(
    cur: Scrape,
    rate: Callable[[str, Match | None], float | None],
    increase: Callable[[str, Match | None], float | None],
) -> tuple[Engine, ...]:
    names = sorted({dict(k).get("process", "") for k in cur.get("engine_process_up", {})})
    engines = []
    for name in names:
        match = _labels_are(process=name)
        up = _gauge(cur, "engine_process_up", match)
        engines.append(
            Engine(
                name=name,
                up=bool(up),
                rss=_gauge(cur, "engine_process_resident_memory_bytes", match),
                memory_limit=_gauge(cur, "engine_container_memory_limit_bytes", match),
                cpu_cores=rate("engine_process_cpu_seconds_total", match) if up else None,
                cpu_limit=_gauge(cur, "engine_container_cpu_limit_cores", match),
                restarts=_gauge(cur, "engine_process_restarts_total", match) or 0.0,
                restarts_delta=increase("engine_process_restarts_total", match),
                threads=_gauge(cur, "engine_process_threads", match),
                open_fds=_gauge(cur, "engine_process_open_fds", match),
            )
        )
    return tuple(engines)


def _spans(cur: Scrape, rate: Callable[[str, Match | None], float | None]) -> Spans:
    reasons: dict[str, float] = defaultdict(float)
    for name in (
        "tickscope_receiver_rejected_spans_total",
        "tickscope_receiver_rejected_requests_total",
    ):
        for labels, value in cur.get(name, {}).items():
            if value:
                reasons[dict(labels).get("reason", "")] += value
    return Spans(
        received_total=_gauge(cur, "tickscope_receiver_received_spans_total") or 0.0,
        rejected_total=_gauge(cur, "tickscope_receiver_rejected_spans_total") or 0.0,
        received_per_s=rate("tickscope_receiver_received_spans_total", None),
        accepted_per_s=rate("tickscope_receiver_accepted_spans_total", None),
        rejected_per_s=rate("tickscope_receiver_rejected_spans_total", None),
        rejected_requests_per_s=rate("tickscope_receiver_rejected_requests_total", None),
        rejected_by_reason=dict(sorted(reasons.items())),
    )


CALLS = "traces_span_metrics_calls_total"
DURATION_BUCKET = "traces_span_metrics_duration_seconds_bucket"


def _calls(cur: Scrape, window: tuple[Scrape, float] | None) -> tuple[Call, ...]:
    def key(labels: Labels) -> tuple[str, str]:
        d = dict(labels)
        return d.get("exchange", ""), d.get("method", "")

    totals: dict[tuple[str, str], float] = defaultdict(float)
    calls: dict[tuple[str, str], float] = defaultdict(float)
    errors: dict[tuple[str, str], float] = defaultdict(float)
    buckets: dict[tuple[str, str], dict[float, float]] = defaultdict(lambda: defaultdict(float))
    for labels, value in cur.get(CALLS, {}).items():
        k = key(labels)
        if not k[0]:  # spans of the engine's own code, not an exchange's API
            continue
        totals[k] += value
        if window is not None:
            d = _increase(window[0], cur, CALLS, labels)
            calls[k] += d
            if dict(labels).get("status_code") == ERROR_STATUS:
                errors[k] += d
    if window is not None:
        for labels in cur.get(DURATION_BUCKET, {}):
            k = key(labels)
            if k in totals:
                le = float(dict(labels).get("le", "nan"))
                buckets[k][le] += _increase(window[0], cur, DURATION_BUCKET, labels)
    out = []
    for k, total in totals.items():
        per_s = errors_per_s = ratio = p99 = None
        if window is not None:
            per_s = calls[k] / window[1]
            errors_per_s = errors[k] / window[1]
            ratio = errors[k] / calls[k] if calls[k] > 0 else None
            p99 = histogram_quantile(0.99, buckets[k].items())
        out.append(Call(k[0], k[1], total, per_s, errors_per_s, ratio, p99))
    out.sort(key=lambda c: (-(c.calls_per_s or 0.0), -c.calls_total, c.exchange, c.method))
    return tuple(out)


def _rate_limits(
    cur: Scrape, increase: Callable[[str, Match | None], float | None]
) -> tuple[RateLimit, ...]:
    exchanges = sorted(
        {dict(k).get("exchange", "") for k in cur.get("exchange_rate_limit_hits_total", {})}
        | {dict(k).get("exchange", "") for k in cur.get("exchange_rate_limit_used_ratio", {})}
    )
    out = []
    for exchange in exchanges:
        match = _labels_are(exchange=exchange)
        ratios = _series(cur, "exchange_rate_limit_used_ratio", match)
        out.append(
            RateLimit(
                exchange=exchange,
                used_ratio=max(ratios.values()) if ratios else None,
                hits_total=_gauge(cur, "exchange_rate_limit_hits_total", match) or 0.0,
                hits_delta=increase("exchange_rate_limit_hits_total", match),
            )
        )
    return tuple(out)


def _streams(cur: Scrape, rate: Callable[[str, Match | None], float | None]) -> tuple[Stream, ...]:
    out = []
    for kind, name in (
        ("ws", "exchange_ws_update_age_seconds"),
        ("rest", "exchange_marketdata_age_seconds"),
    ):
        for labels, age in cur.get(name, {}).items():
            d = dict(labels)
            exchange, method, symbol = (
                d.get("exchange", ""),
                d.get("method", ""),
                d.get("symbol", ""),
            )
            updates = None
            if kind == "ws":
                updates = rate(
                    "exchange_ws_updates_total",
                    _labels_are(exchange=exchange, method=method, symbol=symbol),
                )
            out.append(Stream(kind, exchange, method, symbol, age, updates))
    # The stalest first: what a look at the screen is for.
    out.sort(key=lambda s: (-s.age, s.kind, s.exchange, s.method, s.symbol))
    return tuple(out)


def _sidecar(cur: Scrape, rate: Callable[[str, Match | None], float | None]) -> Sidecar:
    build = cur.get("tickscope_build_info", {})
    version = dict(next(iter(build))).get("version") if build else None
    dropped = (_gauge(cur, "tickscope_pipeline_dropped_spans_total") or 0.0) + (
        _gauge(cur, "tickscope_forward_dropped_spans_total") or 0.0
    )
    forwarding = "tickscope_forward_sent_spans_total" in cur
    return Sidecar(
        version=version,
        # prometheus_client's own process_* carry no labels; the engine's OTLP ones do.
        rss=_gauge(cur, "process_resident_memory_bytes", _unlabelled),
        cpu_cores=rate("process_cpu_seconds_total", _unlabelled),
        queue=_gauge(cur, "tickscope_pipeline_queue_spans"),
        queue_capacity=_gauge(cur, "tickscope_pipeline_queue_capacity_spans"),
        spanmetrics_series=_gauge(cur, "tickscope_spanmetrics_series"),
        spanmetrics_limit=_gauge(cur, "tickscope_spanmetrics_series_limit"),
        metrics_series=_gauge(cur, "tickscope_metrics_series"),
        overflow_per_s=rate("tickscope_spanmetrics_overflow_total", None),
        forward_buffer=_gauge(cur, "tickscope_forward_buffer_spans") if forwarding else None,
        forward_capacity=_gauge(cur, "tickscope_forward_buffer_capacity_spans")
        if forwarding
        else None,
        forward_sent_per_s=rate("tickscope_forward_sent_spans_total", None) if forwarding else None,
        forward_dropped_per_s=rate("tickscope_forward_dropped_spans_total", None)
        if forwarding
        else None,
        dropped_total=dropped,
    )


def parse_alerts(payload: Any) -> tuple[Alert, ...]:
    """Prometheus's GET /api/v1/alerts answer → its firing alerts, critical first, then by
    name. Raises ValueError when the answer is not a success."""
    if not isinstance(payload, dict) or payload.get("status") != "success":
        raise ValueError(f"not a successful /api/v1/alerts answer: {str(payload)[:200]}")
    alerts = payload.get("data", {}).get("alerts", [])
    out = []
    for a in alerts:
        if a.get("state") != "firing":
            continue
        labels = {str(k): str(v) for k, v in (a.get("labels") or {}).items()}
        annotations = a.get("annotations") or {}
        out.append(
            Alert(
                name=labels.get("alertname", "?"),
                severity=labels.get("severity", ""),
                summary=str(annotations.get("summary", "")),
                active_at=str(a.get("activeAt", "")),
                labels=labels,
            )
        )
    order = {"critical": 0, "page": 0, "warning": 1, "info": 2}
    out.sort(key=lambda a: (order.get(a.severity, 3), a.name, sorted(a.labels.items())))
    return tuple(out)
