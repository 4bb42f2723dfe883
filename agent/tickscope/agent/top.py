"""`tickscope top [URL]`: a live terminal view of one sidecar's key figures.

It reads the sidecar's /metrics every `--interval` seconds (and, with `--prometheus URL`,
Prometheus's firing alerts), computes rates, ratios and p99 from the increase between two
scrapes (topdata.py) and draws them with rich in the terminal's alternate screen, cut to
fit (80x24 and up). `q` quits; the terminal's modes and screen are restored however it ends.
`--once` (and any output that is not a terminal) prints one plain-text frame from two scrapes
`--interval` apart, for scripts. Requests go through httpclient.py: basic auth from
`user:password@` in the URL, and `--ca-file`, `--cert-file`/`--key-file`,
`--insecure-skip-verify` for an admin port that serves HTTPS.

rich and urllib.request are imported only when `top` runs: importing this module for the
CLI's parser loads neither into the sidecar.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import select
import sys
import time
import urllib.parse
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tickscope.agent import httpclient, topdata
from tickscope.agent.httpclient import Client, OptionError, RequestError, TLSOptions
from tickscope.agent.topdata import Alert, Frame

if TYPE_CHECKING:
    from rich.text import Text

__all__ = ["FetchError", "add_parser", "fetch_alerts", "fetch_metrics", "main", "render", "run"]

DEFAULT_URL = "http://127.0.0.1:9464"
EXIT_OK = 0
EXIT_UNREACHABLE = 1
EXIT_USAGE = 2
STALE_WARN_S = 5.0
STALE_CRIT_S = 30.0  # MarketDataStale's default threshold


# -- arguments --------------------------------------------------------------------


def _interval(text: str) -> float:
    try:
        value = float(text.removesuffix("s"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0.1 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"must be between 0.1 and 3600 seconds, got {text}")
    return value


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """`top` on the CLI's subparsers."""
    top: argparse.ArgumentParser = sub.add_parser(
        "top",
        help="a live terminal view of a running sidecar's figures (q quits)",
        description=(
            "A live view of one sidecar's /metrics: host, engine processes, spans, exchange "
            "calls (rate, error ratio, p99), orders, rate limits, market-data freshness, the "
            "sidecar itself, and with --prometheus the firing alerts. q quits. When the output "
            "is not a terminal, or with --once, one plain-text frame is printed."
        ),
    )
    configure(top)
    return top


def configure(top: argparse.ArgumentParser) -> None:
    top.add_argument(
        "url",
        nargs="?",
        default=DEFAULT_URL,
        metavar="URL",
        help="the sidecar's admin address (default: %(default)s): https:// when its web config "
        "has tls_server_config; user:password@ for basic auth (percent-encoded)",
    )
    top.add_argument(
        "--interval",
        "-n",
        type=_interval,
        default=2.0,
        metavar="SECONDS",
        help="refresh interval (default: %(default)s)",
    )
    top.add_argument(
        "--window",
        type=_interval,
        default=10.0,
        metavar="SECONDS",
        help="rates, error ratios and p99 over the last SECONDS, or since the previous refresh "
        "when that is longer ago; --once: over --interval (default: %(default)s)",
    )
    top.add_argument(
        "--prometheus",
        metavar="URL",
        help="also show the firing alerts from this Prometheus (GET /api/v1/alerts); "
        "user:password@ for basic auth; the TLS options below do not apply to it",
    )
    top.add_argument(
        "--once",
        action="store_true",
        help="print one plain-text frame (two scrapes --interval apart) and exit",
    )
    top.add_argument(
        "--timeout",
        type=_interval,
        default=5.0,
        metavar="SECONDS",
        help="HTTP timeout per request (default: %(default)s)",
    )
    top.add_argument(
        "--save-scrapes",
        type=Path,
        metavar="DIR",
        help="with --once: write the two /metrics bodies read and their times (for bug reports)",
    )
    httpclient.add_arguments(top)


# -- fetching ---------------------------------------------------------------------


# What a failed request raises: the URL (without credentials), the reason and a hint.
FetchError = RequestError


def metrics_url(url: str) -> str:
    """The /metrics URL for an admin address: a scheme added when missing, /metrics when
    no path is given."""
    if "://" not in url:
        url = "http://" + url
    parts = urllib.parse.urlsplit(url)
    path = parts.path if parts.path not in ("", "/") else "/metrics"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def fetch_metrics(url: str, timeout: float, client: Client | None = None) -> str:
    body = (client or Client(user_agent="tickscope-top")).get(
        metrics_url(url), "text/plain; version=0.0.4", timeout
    )
    return body.decode("utf-8", "replace")


def fetch_alerts(url: str, timeout: float, client: Client | None = None) -> tuple[Alert, ...]:
    client = client or alerts_client()
    base = httpclient.with_scheme(url).rstrip("/")
    body = client.get(base + "/api/v1/alerts", "application/json", timeout)
    try:
        return topdata.parse_alerts(json.loads(body))
    except ValueError as e:
        raise FetchError(httpclient.redact(base), str(e), kind="body") from None


def alerts_client(timeout: float = 5.0) -> Client:
    """Prometheus's client: the system's CAs (or SSL_CERT_FILE), credentials from its URL;
    the sidecar's TLS options are the sidecar's, not Prometheus's."""
    return Client(timeout=timeout, user_agent="tickscope-top", peer="Prometheus", tls_flags=False)


# -- formatting -------------------------------------------------------------------


def _bytes(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return "-"  # pragma: no cover


def _pct(ratio: float | None) -> str:
    return "-" if ratio is None else f"{100 * ratio:.1f}%"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}/s"


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if value == int(value) else f"{value:.2f}"


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) < 1:
        return f"{value * 1000:.1f}ms"
    if abs(value) < 120:
        return f"{value:.1f}s"
    return f"{value / 60:.0f}m"


def _level(ratio: float | None, warn: float, crit: float) -> str:
    if ratio is None:
        return ""
    return "bold red" if ratio >= crit else "yellow" if ratio >= warn else "green"


@dataclass
class View:
    """What a frame shows besides the figures."""

    url: str
    interval: float
    prometheus: str | None = None
    alerts: tuple[Alert, ...] = ()
    alerts_error: str | None = None
    error: str | None = None  # the last scrape failed: the figures are the previous ones
    clock: str = ""
    insecure: bool = False  # --insecure-skip-verify: said on every frame


class Lines:
    """Lines of styled text; `plain` and rich's Text out of the same calls."""

    def __init__(self) -> None:
        self.lines: list[list[tuple[str, str]]] = []

    def add(self, *parts: str | tuple[str, str]) -> None:
        self.lines.append([(p, "") if isinstance(p, str) else p for p in parts])

    def extend(self, other: Lines) -> None:
        self.lines.extend(other.lines)

    def __len__(self) -> int:
        return len(self.lines)

    def plain(self, width: int | None = None) -> list[str]:
        """The lines as text, cut to `width` with "…" (None: whole)."""
        out = []
        for line in self.lines:
            text = "".join(part for part, _ in line).rstrip()
            if width is not None and len(text) > width:
                text = text[: width - 1] + "…"
            out.append(text)
        return out

    def texts(self, width: int) -> Iterator[Text]:
        from rich.text import Text

        for line in self.lines:
            text = Text(no_wrap=True, overflow="ellipsis")
            for part, style in line:
                text.append(part, style=style or None)
            text.truncate(width, overflow="ellipsis")
            yield text


def _head(lines: Lines, frame: Frame | None, view: View) -> None:
    version = frame.sidecar.version if frame else None
    lines.add(
        ("tickscope top", "bold"),
        f" {view.clock}" if view.clock else "",
        f"  {view.url}",
        ("  TLS unverified", "yellow") if view.insecure else "",
        f"  v{version}" if version else "",
        f"  rates over {frame.elapsed:.0f}s" if frame and frame.elapsed else "",
        ("  q quits", "dim"),
    )
    if view.error:
        lines.add(("scrape failed: " + view.error, "bold red"))


def _host(lines: Lines, frame: Frame) -> None:
    h = frame.host
    lines.add(
        ("host    ", "bold"),
        ("cpu ", ""),
        (_pct(h.cpu_busy), _level(h.cpu_busy, 0.8, 0.95)),
        f" of {h.cpus}" if h.cpus else "",
        f" (iowait {_pct(h.cpu_iowait)})" if h.cpu_iowait else "",
        f"  load {_num(h.load1)} {_num(h.load5)} {_num(h.load15)}",
        "  mem ",
        (_pct(h.mem_used_ratio), _level(h.mem_used_ratio, 0.8, 0.9)),
        f" of {_bytes(h.mem_total)}",
    )
    parts: list[str | tuple[str, str]] = [("disk    ", "bold")]
    for disk in h.disks:
        parts += [
            f"{disk.mountpoint} ",
            (_pct(disk.used_ratio), _level(disk.used_ratio, 0.8, 0.9)),
            f" ({_bytes(disk.avail)} free)  ",
        ]
    if not h.disks:
        parts.append("-  ")
    parts.append(f"io busy {_pct(h.disk_io_busy)}")
    lines.add(*parts)


def _engines(lines: Lines, frame: Frame) -> None:
    if not frame.engines:
        lines.add(("engine  ", "bold"), ("no engine process configured", "dim"))
    for e in frame.engines:
        name = (f"{e.name[:7]:<7} ", "bold")
        restarts: tuple[str, str] = (
            f"restarts {_num(e.restarts)}",
            "bold red" if e.restarts_delta else "",
        )
        if not e.up:
            lines.add(name, ("DOWN", "bold red"), "  ", restarts)
            continue
        memory: list[str | tuple[str, str]] = [f"  rss {_bytes(e.rss)}"]
        if e.memory_limit:
            memory += [
                f"/{_bytes(e.memory_limit)} ",
                (f"({_pct(e.memory_ratio)})", _level(e.memory_ratio, 0.8, 0.9)),
            ]
        cpu: list[str | tuple[str, str]] = [
            "  cpu " + ("-" if e.cpu_cores is None else f"{e.cpu_cores:.2f}")
        ]
        if e.cpu_limit:
            cpu += [
                f"/{e.cpu_limit:.2f} ",
                (f"({_pct(e.cpu_ratio)})", _level(e.cpu_ratio, 0.8, 0.95)),
            ]
        else:
            cpu.append(" cores")
        lines.add(name, ("up", "green"), *memory, *cpu, "  ", restarts)


def _spans(lines: Lines, frame: Frame) -> None:
    s = frame.spans
    bad = bool(s.rejected_per_s) or bool(s.rejected_requests_per_s)
    lines.add(
        ("spans   ", "bold"),
        f"{_rate(s.received_per_s)} received  {_rate(s.accepted_per_s)} accepted  ",
        (f"{_rate(s.rejected_per_s)} rejected", "bold red" if bad else ""),
        f"  {_rate(s.rejected_requests_per_s)} bad requests",
    )
    c = frame.sidecar
    if s.rejected_by_reason or c.overflow_per_s:
        reasons = ", ".join(f"{k} {_num(v)}" for k, v in s.rejected_by_reason.items())
        lines.add(
            ("refused ", "bold"),
            (reasons, "yellow") if reasons else "",
            " since start" if reasons else "",
            ("  " if reasons else "") + "overflow " + _rate(c.overflow_per_s)
            if c.overflow_per_s
            else "",
        )
    queue_ratio = c.queue / c.queue_capacity if c.queue is not None and c.queue_capacity else None
    series_ratio = (
        c.spanmetrics_series / c.spanmetrics_limit
        if c.spanmetrics_series is not None and c.spanmetrics_limit
        else None
    )
    lines.add(
        ("sidecar ", "bold"),
        f"rss {_bytes(c.rss)}  cpu " + ("-" if c.cpu_cores is None else f"{c.cpu_cores:.3f}"),
        "  queue ",
        (f"{_num(c.queue)}/{_num(c.queue_capacity)}", _level(queue_ratio, 0.5, 0.9)),
        "  series ",
        (
            f"{_num(c.spanmetrics_series)}/{_num(c.spanmetrics_limit)}",
            _level(series_ratio, 0.8, 1.0),
        ),
        f"  otlp series {_num(c.metrics_series)}",
    )
    if c.forward_capacity is not None:
        lines.add(
            ("forward ", "bold"),
            f"buffer {_num(c.forward_buffer)}/{_num(c.forward_capacity)}",
            f"  sent {_rate(c.forward_sent_per_s)}  ",
            (
                f"dropped {_rate(c.forward_dropped_per_s)}",
                "bold red" if c.forward_dropped_per_s else "",
            ),
            f" ({_num(c.dropped_total)} since start)" if c.dropped_total else "",
        )


def _orders(lines: Lines, frame: Frame) -> None:
    parts: list[str | tuple[str, str]] = [("orders  ", "bold")]
    if not frame.orders:
        parts.append(("none yet", "dim"))
    for o in frame.orders:
        style = "" if o.outcome == "accepted" or not o.per_s else "bold red"
        parts += [(f"{o.outcome} {_num(o.total)}", style), f" ({_rate(o.per_s)})  "]
    lines.add(*parts)
    if frame.rate_limits:
        parts = [("limits  ", "bold")]
        for r in frame.rate_limits:
            parts += [
                f"{r.exchange} used ",
                (_pct(r.used_ratio), _level(r.used_ratio, 0.8, 0.9)),
                (
                    f" hits {_num(r.hits_total)}"
                    + (f" (+{_num(r.hits_delta)})" if r.hits_delta else ""),
                    "bold red" if r.hits_delta else "",
                ),
                "  ",
            ]
        lines.add(*parts)


def _calls_section(frame: Frame, width: int) -> tuple[Lines, list[Lines]]:
    method_w = max(16, min(32, width - 58))
    header = Lines()
    header.add(
        (
            f"{'EXCHANGE':<12} {'METHOD':<{method_w}} {'CALLS/S':>8} {'ERR%':>7} "
            f"{'P99':>9} {'TOTAL':>9}",
            "bold reverse",
        )
    )
    rows = []
    for c in frame.calls:
        row = Lines()
        row.add(
            f"{c.exchange[:12]:<12} {c.method[:method_w]:<{method_w}} ",
            f"{_rate(c.calls_per_s).removesuffix('/s'):>8} ",
            (f"{_pct(c.error_ratio):>7}", _level(c.error_ratio, 0.001, 0.05)),
            f" {_seconds(c.p99):>9} {_num(c.calls_total):>9}",
        )
        rows.append(row)
    return header, rows


def _streams_section(frame: Frame, width: int) -> tuple[Lines, list[Lines]]:
    header = Lines()
    header.add(
        (
            f"{'MARKET DATA':<12} {'METHOD':<18} {'SYMBOL':<14} {'AGE':>9} {'UPD/S':>7}",
            "bold reverse",
        )
    )
    rows = []
    for s in frame.streams:
        row = Lines()
        label = f"{s.kind} {s.exchange}"
        row.add(
            f"{label[:12]:<12} {s.method[:18]:<18} {s.symbol[:14]:<14} ",
            (f"{_seconds(s.age):>9}", _level(s.age, STALE_WARN_S, STALE_CRIT_S)),
            f" {_rate(s.updates_per_s).removesuffix('/s'):>7}" if s.kind == "ws" else "",
        )
        rows.append(row)
    return header, rows


def _alerts_section(view: View) -> tuple[Lines, list[Lines]]:
    header = Lines()
    header.add((f"{'FIRING ALERTS':<24} {'SEVERITY':<9} SUMMARY", "bold reverse"))
    rows = []
    if view.alerts_error:
        row = Lines()
        row.add(("cannot read alerts: " + view.alerts_error, "bold red"))
        rows.append(row)
    elif not view.alerts:
        row = Lines()
        row.add(("none", "green"))
        rows.append(row)
    for a in view.alerts:
        row = Lines()
        style = "bold red" if a.severity in ("critical", "page") else "yellow"
        row.add((f"{a.name[:24]:<24} {a.severity[:9]:<9}", style), f" {a.summary}")
        rows.append(row)
    return header, rows


def _fit(sections: list[tuple[Lines, list[Lines]]], room: int | None) -> Lines:
    """The sections' headers and as many rows as fit in `room` lines, shared out one row
    at a time in order; a cut section ends with "+N more". `room` None: everything."""
    shown = [len(rows) if room is None else 0 for _, rows in sections]
    if room is not None:
        left = room - len(sections)
        progress = True
        while left > 0 and progress:
            progress = False
            for i, (_, rows) in enumerate(sections):
                if left > 0 and shown[i] < len(rows):
                    shown[i] += 1
                    left -= 1
                    progress = True
    out = Lines()
    for (header, rows), n in zip(sections, shown, strict=True):
        if room is not None and room - len(out) <= 0:
            break
        out.extend(header)
        if n < len(rows) and n > 0:
            out.lines.extend(r for row in rows[: n - 1] for r in row.lines)
            out.add((f"  +{len(rows) - n + 1} more", "dim"))
        else:
            out.lines.extend(r for row in rows[:n] for r in row.lines)
    return out


def render(frame: Frame | None, view: View, width: int = 80, height: int | None = None) -> Lines:
    """The frame as lines for a `width` x `height` screen (`height` None: every row)."""
    lines = Lines()
    _head(lines, frame, view)
    if frame is None:
        lines.add(("waiting for the first scrape...", "dim"))
        return lines
    _host(lines, frame)
    _engines(lines, frame)
    _spans(lines, frame)
    _orders(lines, frame)
    sections = [_calls_section(frame, width)]
    if frame.streams:
        sections.append(_streams_section(frame, width))
    if view.prometheus:
        sections.insert(0, _alerts_section(view))
    room = None if height is None else max(0, height - len(lines))
    lines.extend(_fit(sections, room))
    if height is not None:
        lines.lines = lines.lines[:height]
    return lines


# -- running ----------------------------------------------------------------------


@dataclass
class Scraper:
    """Scrapes, and the frame of the newest against the oldest within `window` seconds
    (the previous one when refreshes are further apart): batched span exports and engine
    metrics exported every few seconds then read as steady rates, not bursts and zeros."""

    url: str
    timeout: float
    window: float = 0.0
    history: deque[tuple[float, topdata.Scrape]] = field(default_factory=deque)
    frame: Frame | None = None
    client: Client | None = None  # the sidecar's (TLS options); None: plain defaults

    def scrape(self) -> tuple[str, float]:
        text = fetch_metrics(self.url, self.timeout, self.client)
        return text, time.monotonic()

    def update(self, text: str, at: float) -> Frame:
        cur = topdata.parse_exposition(text)
        # The scrapes older than the window go, one always kept to compare with; a little
        # slack, so that refreshes `window` apart by the timer still pair up.
        while len(self.history) > 1 and at - self.history[0][0] > self.window * 1.02:
            self.history.popleft()
        prev_at, prev = self.history[0] if self.history else (None, None)
        elapsed = None if prev_at is None else at - prev_at
        self.frame = topdata.compute(prev, cur, elapsed)
        self.history.append((at, cur))
        return self.frame


@dataclass(frozen=True)
class Clients:
    sidecar: Client
    prometheus: Client


def clients(args: argparse.Namespace) -> Clients:
    """The clients for the sidecar and Prometheus; OptionError (one line) when a TLS option
    or a URL cannot be used: checked before anything is fetched."""
    tls = TLSOptions.from_args(args)
    httpclient.check_url("URL", args.url)
    httpclient.check_url("--prometheus", args.prometheus)
    return Clients(
        Client.for_sidecar(tls, timeout=args.timeout, user_agent="tickscope-top"),
        alerts_client(args.timeout),
    )


def _view(args: argparse.Namespace) -> View:
    return View(
        url=httpclient.redact(args.url),
        interval=args.interval,
        prometheus=httpclient.redact(args.prometheus) if args.prometheus else None,
        insecure=bool(getattr(args, "insecure_skip_verify", False)),
    )


def _read_alerts(args: argparse.Namespace, view: View, client: Client) -> None:
    if not args.prometheus:
        return
    try:
        view.alerts, view.alerts_error = fetch_alerts(args.prometheus, args.timeout, client), None
    except FetchError as e:
        view.alerts, view.alerts_error = (), str(e)


def once(args: argparse.Namespace, use: Clients) -> int:
    scraper = Scraper(args.url, args.timeout, client=use.sidecar)
    bodies = []
    try:
        for i in range(2):
            if i:
                time.sleep(args.interval)
            text, at = scraper.scrape()
            bodies.append((text, at))
            scraper.update(text, at)
    except FetchError as e:
        print(f"tickscope top: cannot read /metrics: {e}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if args.save_scrapes is not None:
        args.save_scrapes.mkdir(parents=True, exist_ok=True)
        for i, (text, _) in enumerate(bodies, 1):
            (args.save_scrapes / f"{i}.prom").write_text(text)
        times = {"monotonic": [at for _, at in bodies], "elapsed": bodies[1][1] - bodies[0][1]}
        (args.save_scrapes / "times.json").write_text(json.dumps(times))
    view = _view(args)
    _read_alerts(args, view, use.prometheus)
    view.clock = datetime.now().strftime("%H:%M:%S")
    width = _columns()
    sys.stdout.write("\n".join(render(scraper.frame, view, width).plain()) + "\n")
    sys.stdout.flush()
    return EXIT_OK


def _columns() -> int:
    """The terminal's width ($COLUMNS, else the terminal's), at least 80."""
    import shutil

    return max(80, shutil.get_terminal_size((80, 24)).columns)


@contextlib.contextmanager
def _keys() -> Iterator[Any]:
    """stdin in cbreak mode (keys one at a time, no echo; Ctrl-C still interrupts) while
    the block runs, its modes restored after; yields a function reading a key within a
    timeout (None when none came, or stdin is no terminal)."""
    fd = sys.stdin.fileno() if sys.stdin is not None and sys.stdin.isatty() else None
    if fd is None:

        def no_key(timeout: float) -> str | None:
            time.sleep(max(0.0, timeout))
            return None

        yield no_key
        return
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)

        def key(timeout: float) -> str | None:
            ready, _, _ = select.select([fd], [], [], max(0.0, timeout))
            if not ready:
                return None
            data = os.read(fd, 32)
            return data.decode(errors="replace") if data else "q"  # EOF: quit

        yield key
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def live(args: argparse.Namespace, use: Clients) -> int:
    from rich.console import Console, Group
    from rich.live import Live

    console = Console(highlight=False)
    scraper = Scraper(args.url, args.timeout, args.window, client=use.sidecar)
    view = _view(args)

    def draw() -> Group:
        width, height = console.size
        return Group(*render(scraper.frame, view, width, height).texts(width))

    with (
        _keys() as read_key,
        Live(console=console, screen=True, auto_refresh=False, transient=True) as screen,
    ):
        next_at = time.monotonic()
        size = console.size
        while True:
            now = time.monotonic()
            if now >= next_at:
                try:
                    text, at = scraper.scrape()
                    scraper.update(text, at)
                    view.error = None
                except FetchError as e:
                    view.error = str(e)
                _read_alerts(args, view, use.prometheus)
                view.clock = datetime.now().strftime("%H:%M:%S")
                screen.update(draw(), refresh=True)
                next_at = max(next_at + args.interval, time.monotonic() + 0.05)
            pressed = read_key(min(0.25, next_at - time.monotonic()))
            if pressed and "q" in pressed.lower():
                return EXIT_OK
            if console.size != size:  # the terminal was resized: redraw at once
                size = console.size
                screen.update(draw(), refresh=True)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    if args.save_scrapes is not None and not args.once:
        print("tickscope top: --save-scrapes needs --once", file=sys.stderr)
        return EXIT_USAGE
    try:
        use = clients(args)
    except OptionError as e:
        print(f"tickscope top: {e}", file=sys.stderr)
        return EXIT_USAGE
    if args.once or not sys.stdout.isatty():
        return once(args, use)
    import signal

    # SIGTERM and SIGHUP unwind as Ctrl-C does, so the terminal is restored on the way out.
    saved = {s: signal.signal(s, _interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        return live(args, use)
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tickscope top")
    configure(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":  # python -m tickscope.agent.top (the CLI wires `tickscope top`)
    sys.exit(main())
