"""`tickscope top`: the figures from two scrapes (exact, from fixture expositions), the
frame as text at 80x24, `--once` against a live sidecar fed by the demo engine (compared with
the /metrics bodies it read), and the live view in a real terminal (tmux: capture-pane,
send-keys q, the terminal's modes restored)."""

from __future__ import annotations

import argparse
import base64
import gzip
import http.server
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers.binaries import require_binary
from helpers.demo_stack import ENGINE_MEMORY_LIMIT, DemoStack
from helpers.sidecar import ROOT, http_get
from tickscope.agent import topdata
from tickscope.agent.top import Scraper, View, fetch_metrics, metrics_url, render

FIXTURES = ROOT / "tests" / "fixtures" / "top"


def scrape(name: str) -> topdata.Scrape:
    return topdata.parse_exposition((FIXTURES / name).read_text())


@pytest.fixture(scope="module")
def frame() -> topdata.Frame:
    return topdata.compute(scrape("before.prom"), scrape("after.prom"), 2.0)


# -- the figures ------------------------------------------------------------------


def reference_parse(text: str) -> topdata.Scrape:
    out: dict[str, dict[topdata.Labels, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = float(s.value)
    return out


@pytest.mark.parametrize(
    "path",
    [*sorted(FIXTURES.glob("*.prom")), ROOT / "tests" / "fixtures" / "host-e2e-output.prom"],
    ids=lambda p: p.name,
)
def test_parse_agrees_with_prometheus_client(path: Path) -> None:
    text = path.read_text()
    assert topdata.parse_exposition(text) == reference_parse(text)


def test_parse_escapes_timestamps_and_special_values() -> None:
    text = (
        "# HELP weird with a } in a value\n"
        'weird{b="} 5",a="q\\"uo\\\\te\\nx"} 1.5 1700000000000\n'
        "plain +Inf\n"
        "negative -Inf\n"
        "not a sample line\n"
    )
    assert topdata.parse_exposition(text) == {
        "weird": {(("a", 'q"uo\\te\nx'), ("b", "} 5")): 1.5},
        "plain": {(): math.inf},
        "negative": {(): -math.inf},
    }
    assert topdata.parse_exposition(text) == reference_parse(
        text.replace("not a sample line\n", "")
    )


def test_host_figures(frame: topdata.Frame) -> None:
    h = frame.host
    # CPU time in the window: idle 1.5 + 1.5, user 0.25, iowait 0.125, system 0.625 = 4 s.
    assert (h.cpus, h.cpu_busy, h.cpu_iowait) == (2, 1 - 3.0 / 4.0, 0.125 / 4.0)
    assert (h.load1, h.load5, h.load15) == (0.5, 0.25, 0.125)
    assert h.mem_used_ratio == 0.75
    # One line per device under its shortest mountpoint; a device_error filesystem left out.
    assert h.disks == (
        topdata.Disk("/", "/dev/sda1", 1000.0, 250.0),
        topdata.Disk("/data", "/dev/sdb", 400.0, 100.0),
    )
    assert [d.used_ratio for d in h.disks] == [0.75, 0.75]
    assert h.disk_io_busy == 1.5 / 2.0  # sdb, the busier: 1.5 s busy in 2 s


def test_engine_figures(frame: topdata.Frame) -> None:
    engine, hedger = frame.engines
    assert engine == topdata.Engine(
        name="engine",
        up=True,
        rss=256 * 2**20,
        memory_limit=512 * 2**20,
        cpu_cores=(0.5 + 0.25) / 2.0,
        cpu_limit=0.5,
        restarts=2.0,
        restarts_delta=1.0,
        threads=7.0,
        open_fds=31.0,
    )
    assert (engine.memory_ratio, engine.cpu_ratio) == (0.5, 0.75)
    assert (hedger.up, hedger.rss, hedger.cpu_cores, hedger.restarts, hedger.restarts_delta) == (
        False,
        None,
        None,
        3.0,
        0.0,
    )


def test_span_and_sidecar_figures(frame: topdata.Frame) -> None:
    assert frame.spans == topdata.Spans(
        received_total=1120.0,
        rejected_total=20.0,
        received_per_s=(100 + 20) / 2.0,
        accepted_per_s=(90 + 20) / 2.0,
        rejected_per_s=10 / 2.0,
        rejected_requests_per_s=1 / 2.0,
        rejected_by_reason={"invalid_span": 20.0, "malformed": 3.0},
    )
    assert frame.sidecar == topdata.Sidecar(
        version="9.9.9",
        rss=50 * 2**20,  # the unlabelled process_* (the engine's OTLP one has job/instance)
        cpu_cores=0.125 / 2.0,
        queue=12.0,
        queue_capacity=32768.0,
        spanmetrics_series=9.0,
        spanmetrics_limit=80.0,
        metrics_series=63.0,
        overflow_per_s=2.0,
        forward_buffer=45.0,
        forward_capacity=400.0,
        forward_sent_per_s=40.0,
        forward_dropped_per_s=3.0,
        dropped_total=6.0,
    )


def test_calls_rates_errors_and_p99(frame: topdata.Frame) -> None:
    ticker, balance, order = frame.calls  # by calls/s, the idle ones after
    # fetch_ticker: 40 ok + 10 errors from a series new in the second scrape (counted from 0).
    # Window buckets: ok 20/35/40/40 + errors 0/2/10/10 = 20/37/50/50; rank 0.99 * 50 = 49.5
    # falls in (0.1, 1]: 0.1 + 0.9 * (49.5 - 37) / (50 - 37).
    assert ticker == topdata.Call(
        "binance", "fetch_ticker", 150.0, 25.0, 5.0, 0.2, 0.1 + (1.0 - 0.1) * 12.5 / 13
    )
    # fetch_balance went from 5 to 3: a reset, so the increase is 3; all in (0, 0.01].
    rank = 0.99 * 3
    assert balance == topdata.Call("kraken", "fetch_balance", 3.0, 1.5, 0.0, 0.0, 0.01 * rank / 3)
    # No calls in the window: no error ratio and no p99, the total still shown.
    assert order == topdata.Call("binance", "create_order", 50.0, 0.0, 0.0, None, None)
    # strategy.step has no exchange: the engine's own code, not an API call.
    assert {c.method for c in frame.calls} == {"fetch_ticker", "fetch_balance", "create_order"}


def test_orders_rate_limits_and_market_data(frame: topdata.Frame) -> None:
    assert frame.orders == (
        topdata.Orders("accepted", 20.0, 2.5),
        topdata.Orders("rejected", 1.0, 0.0),
        topdata.Orders("error", 1.0, 0.5),  # new in the second scrape: from 0
    )
    assert frame.rate_limits == (
        topdata.RateLimit("binance", 0.85, 5.0, 3.0),
        topdata.RateLimit("kraken", None, 0.0, 0.0),
    )
    assert frame.streams == (  # the stalest first
        topdata.Stream("ws", "binance", "watch_ticker", "ETH/USDT", 42.0, 0.0),
        topdata.Stream("rest", "binance", "fetch_ticker", "BTC/USDT", 0.5, None),
        topdata.Stream("ws", "binance", "watch_ticker", "BTC/USDT", 0.25, 10.0),
    )


def test_first_scrape_has_no_rates() -> None:
    f = topdata.compute(None, scrape("after.prom"), None)
    assert f.elapsed is None
    assert (f.host.cpu_busy, f.host.disk_io_busy, f.engines[0].cpu_cores) == (None, None, None)
    assert (f.spans.received_per_s, f.sidecar.forward_sent_per_s) == (None, None)
    assert [(c.method, c.calls_per_s, c.error_ratio, c.p99) for c in f.calls] == [
        ("fetch_ticker", None, None, None),
        ("create_order", None, None, None),
        ("fetch_balance", None, None, None),
    ]  # by total when there are no rates
    assert f.orders[0] == topdata.Orders("accepted", 20.0, None)
    assert f.host.mem_used_ratio == 0.75  # gauges need one scrape


INF = math.inf


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        # Prometheus's own cases (promql/testdata/histograms.test, cumulative buckets).
        (0.5, [(0.1, 1), (0.2, 3), (INF, 4)], 0.1 + 0.1 * (2 - 1) / (3 - 1)),
        (0.99, [(0.1, 1), (0.2, 3), (INF, 4)], 0.2),  # in +Inf: the highest finite bound
        (0.25, [(1, 4), (INF, 4)], 0.25),  # the lowest bucket starts at 0
        (0.5, [(-1, 2), (INF, 4)], -1),  # ... unless its bound is not above 0
        (0.5, [(1, 0), (INF, 0)], None),  # no observations
        (0.5, [(1, 3), (2, 5)], None),  # no +Inf bucket
        (1.5, [(1, 3), (INF, 3)], INF),
        (-0.5, [(1, 3), (INF, 3)], -INF),
    ],
)
def test_histogram_quantile(
    q: float, buckets: list[tuple[float, float]], expected: float | None
) -> None:
    assert topdata.histogram_quantile(q, buckets) == expected


def test_alerts_firing_only_critical_first() -> None:
    alerts = topdata.parse_alerts(json.loads((FIXTURES / "alerts.json").read_text()))
    assert [(a.name, a.severity, a.summary) for a in alerts] == [
        ("EngineDown", "critical", "engine is not running"),
        ("Aardvark", "warning", ""),
        ("ExchangeErrorRate", "warning", "binance errors 12% of calls"),
    ]
    with pytest.raises(ValueError, match="not a successful"):
        topdata.parse_alerts({"status": "error", "error": "boom"})


# -- the frame as text ------------------------------------------------------------

FIXTURE_80X24 = """\
tickscope top 13:45:02  http://127.0.0.1:9464  v9.9.9  rates over 2s  q quits
host    cpu 25.0% of 2 (iowait 3.1%)  load 0.50 0.25 0.12  mem 75.0% of 8.0 GiB
disk    / 75.0% (250 B free)  /data 75.0% (100 B free)  io busy 75.0%
engine  up  rss 256.0 MiB/512.0 MiB (50.0%)  cpu 0.38/0.50 (75.0%)  restarts 2
hedger  DOWN  restarts 3
spans   60.0/s received  55.0/s accepted  5.0/s rejected  0.5/s bad requests
refused invalid_span 20, malformed 3 since start  overflow 2.0/s
sidecar rss 50.0 MiB  cpu 0.062  queue 12/32768  series 9/80  otlp series 63
forward buffer 45/400  sent 40.0/s  dropped 3.0/s (6 since start)
orders  accepted 20 (2.5/s)  rejected 1 (0.0/s)  error 1 (0.5/s)
limits  binance used 85.0% hits 5 (+3)  kraken used - hits 0
FIRING ALERTS            SEVERITY  SUMMARY
EngineDown               critical  engine is not running
Aardvark                 warning
ExchangeErrorRate        warning   binance errors 12% of calls
EXCHANGE     METHOD                  CALLS/S    ERR%       P99     TOTAL
binance      fetch_ticker               25.0   20.0%   965.4ms       150
kraken       fetch_balance               1.5    0.0%     9.9ms         3
binance      create_order                0.0       -         -        50
MARKET DATA  METHOD             SYMBOL               AGE   UPD/S
ws binance   watch_ticker       ETH/USDT           42.0s     0.0
rest binance fetch_ticker       BTC/USDT         500.0ms
ws binance   watch_ticker       BTC/USDT         250.0ms    10.0"""


def fixture_view(**kw: object) -> View:
    view = View(url="http://127.0.0.1:9464", interval=2.0, clock="13:45:02")
    for k, v in kw.items():
        setattr(view, k, v)
    return view


def test_frame_at_80x24(frame: topdata.Frame) -> None:
    alerts = topdata.parse_alerts(json.loads((FIXTURES / "alerts.json").read_text()))
    view = fixture_view(prometheus="http://127.0.0.1:9090", alerts=alerts)
    lines = render(frame, view, 80, 24).plain(80)
    assert "\n".join(lines) == FIXTURE_80X24
    assert len(lines) == 23


def test_the_header_shows_the_url_without_credentials_and_unverified_tls(
    frame: topdata.Frame,
) -> None:
    from tickscope.agent.top import _view, configure

    parser = argparse.ArgumentParser()
    configure(parser)
    args = parser.parse_args(
        [
            "https://ops:s%3Acret@127.0.0.1:9464",
            "--insecure-skip-verify",
            "--prometheus",
            "http://admin:pw@127.0.0.1:9090",
        ]
    )
    view = _view(args)
    assert (view.url, view.prometheus, view.insecure) == (
        "https://127.0.0.1:9464",
        "http://127.0.0.1:9090",
        True,
    )
    view.clock = "13:45:02"
    assert render(frame, view, 120, 24).plain(120)[0] == (
        "tickscope top 13:45:02  https://127.0.0.1:9464  TLS unverified  v9.9.9  rates over 2s"
        "  q quits"
    )


def test_a_small_screen_shares_rows_and_says_how_many_are_left(frame: topdata.Frame) -> None:
    lines = render(frame, fixture_view(), 80, 15).plain(80)
    assert len(lines) == 15
    # 4 lines left after the fixed ones: two headers, a row each (the last one "+N more").
    assert lines[11:] == [
        "EXCHANGE     METHOD                  CALLS/S    ERR%       P99     TOTAL",
        "  +3 more",
        "MARKET DATA  METHOD             SYMBOL               AGE   UPD/S",
        "  +3 more",
    ]


def test_demo_exposition_fits_80x24_and_wider_shows_more() -> None:
    """The demo engine's real /metrics (two scrapes 2 s apart): 24 lines of at most 80
    columns; every row at 120x40; the rich texts cut to the width too."""
    f = topdata.compute(scrape("demo-1.prom"), scrape("demo-2.prom"), 2.0)
    alerts = topdata.parse_alerts(json.loads((FIXTURES / "alerts-one.json").read_text()))
    view = fixture_view(prometheus="http://127.0.0.1:9090", alerts=alerts)
    small = render(f, view, 80, 20)
    lines = small.plain(80)
    assert len(lines) == 20 and max(map(len, lines)) <= 80
    assert [t.cell_len <= 80 for t in small.texts(80)] == [True] * 20
    assert lines[3].startswith("engine  up  rss 124.6 MiB/512.0 MiB (24.3%)  cpu 0.03/0.50")
    assert lines[9:] == [
        "FIRING ALERTS            SEVERITY  SUMMARY",
        "HostCpuBusy              warning   CPU busy above 90% on 127.0.0.1:33193",
        "EXCHANGE     METHOD                  CALLS/S    ERR%       P99     TOTAL",
        "binance      cancel_order               10.0    0.0%     2.0ms       130",
        "binance      create_order                8.0    0.0%     2.0ms       135",
        "binance      fetch_order_book            8.0    0.0%     2.0ms       134",
        "  +4 more",
        "MARKET DATA  METHOD             SYMBOL               AGE   UPD/S",
        "ws binance   watch_ticker       ETH/USDT          93.2ms     0.0",
        "ws binance   watch_ticker       BTC/USDT          93.2ms     0.0",
        "  +2 more",
    ]  # the 8 rows that fit shared out one at a time: calls 4, market data 3
    big = render(f, view, 120, 40).plain(120)
    assert len(big) == 24  # everything, with room to spare
    assert not any("more" in line for line in big)


def test_rates_over_the_window_not_just_the_last_refresh() -> None:
    before, after = ((FIXTURES / n).read_text() for n in ("before.prom", "after.prom"))
    scraper = Scraper("http://unused", 1.0, window=4.0)
    assert scraper.update(before, 100.0).elapsed is None
    assert scraper.update(before, 102.0).elapsed == 2.0
    third = scraper.update(after, 104.0)  # against the scrape at 100, 4 s back
    assert (third.elapsed, third.spans.received_per_s) == (4.0, 120 / 4.0)
    assert scraper.update(after, 106.0).elapsed == 4.0  # the one at 100 has left the window
    assert scraper.update(after, 116.0).elapsed == 10.0  # a late refresh: the previous one
    assert len(scraper.history) == 2


def test_waiting_and_failed_scrape_frames(frame: topdata.Frame) -> None:
    assert render(None, fixture_view(), 80, 24).plain() == [
        "tickscope top 13:45:02  http://127.0.0.1:9464  q quits",
        "waiting for the first scrape...",
    ]
    failed = render(frame, fixture_view(error="connection refused"), 80, 24).plain()
    assert failed[1] == "scrape failed: connection refused"  # the figures are the last ones
    no_prometheus = fixture_view(prometheus="http://127.0.0.1:9", alerts_error="refused")
    assert render(frame, no_prometheus, 80, 24).plain()[11:13] == [
        "FIRING ALERTS            SEVERITY  SUMMARY",
        "cannot read alerts: refused",
    ]
    quiet = render(frame, fixture_view(prometheus="http://127.0.0.1:9090"), 80, 24).plain()
    assert quiet[11:13] == ["FIRING ALERTS            SEVERITY  SUMMARY", "none"]
    bare = topdata.compute(None, {"tickscope_build_info": {(("version", "1.2.3"),): 1.0}}, None)
    assert render(bare, fixture_view(), 80, 24).plain()[3:8] == [
        "engine  no engine process configured",
        "spans   - received  - accepted  - rejected  - bad requests",
        "sidecar rss -  cpu -  queue -/-  series -/-  otlp series -",
        "orders  none yet",
        "EXCHANGE     METHOD                  CALLS/S    ERR%       P99     TOTAL",
    ]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:9464", "http://127.0.0.1:9464/metrics"),
        ("127.0.0.1:9464", "http://127.0.0.1:9464/metrics"),
        ("https://sidecar:9464/", "https://sidecar:9464/metrics"),
        ("http://sidecar/prefix/metrics", "http://sidecar/prefix/metrics"),
    ],
)
def test_metrics_url(url: str, expected: str) -> None:
    assert metrics_url(url) == expected


class FixtureServer(http.server.ThreadingHTTPServer):
    """/metrics as the fixture's after.prom, gzipped when asked; remembers the headers."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), FixtureHandler)
        self.seen: list[dict[str, str]] = []


class FixtureHandler(http.server.BaseHTTPRequestHandler):
    server: FixtureServer

    def do_GET(self) -> None:
        self.server.seen.append({"path": self.path, **dict(self.headers.items())})
        body = (FIXTURES / "after.prom").read_bytes()
        self.send_response(200)
        if "gzip" in self.headers.get("Accept-Encoding", ""):
            body = gzip.compress(body)
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def fixture_server() -> Iterator[FixtureServer]:
    server = FixtureServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_fetch_basic_auth_from_the_url_and_gzip(fixture_server: FixtureServer) -> None:
    port = fixture_server.server_address[1]
    text = fetch_metrics(f"http://ops:s%3Acret@127.0.0.1:{port}", 5.0)
    assert text == (FIXTURES / "after.prom").read_text()
    (seen,) = fixture_server.seen
    assert seen["path"] == "/metrics"
    assert seen["Authorization"] == "Basic " + base64.b64encode(b"ops:s:cret").decode()
    assert seen["Accept"].startswith("text/plain")


# -- against a live sidecar ---------------------------------------------------------


def top_command() -> list[str]:
    """`tickscope top` once the CLI has it, else the module's own entry point."""
    from tickscope.agent import cli

    parser = cli._parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if "top" in sub.choices:
        return [sys.executable, "-m", "tickscope", "top"]
    return [sys.executable, "-m", "tickscope.agent.top"]


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKSCOPE_")}
    env.pop("COLUMNS", None)
    return env


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoStack]:
    binary = require_binary("prometheus")
    with DemoStack(tmp_path_factory.mktemp("top"), prometheus_binary=binary) as s:
        s.wait_ready(90)
        yield s


def families(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
    return out


def total(fams: dict[str, list[tuple[dict[str, str], float]]], name: str, **want: str) -> float:
    return math.fsum(
        v for labels, v in fams.get(name, []) if all(labels.get(k) == x for k, x in want.items())
    )


@pytest.mark.system
def test_once_shows_the_figures_of_the_metrics_it_read(stack: DemoStack, tmp_path: Path) -> None:
    assert stack.sidecar is not None
    saved = tmp_path / "scrapes"
    started = time.monotonic()
    result = subprocess.run(
        [
            *top_command(),
            stack.sidecar.url,
            "--once",
            "--interval",
            "1",
            "--prometheus",
            stack.prometheus.url,
            "--save-scrapes",
            str(saved),
        ],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    took = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert out[0].startswith("tickscope top ") and f"  {stack.sidecar.url}  v" in out[0]
    assert 1.0 <= took < 15, took
    first = families((saved / "1.prom").read_text())
    second = families((saved / "2.prom").read_text())
    elapsed = float(json.loads((saved / "times.json").read_text())["elapsed"])
    assert 1.0 <= elapsed < 3.0

    def rate(name: str, **want: str) -> float:
        return (total(second, name, **want) - total(first, name, **want)) / elapsed

    # Each figure, worked out here from the two bodies top read.
    received = rate("tickscope_receiver_received_spans_total")
    accepted = rate("tickscope_receiver_accepted_spans_total")
    spans = f"spans   {received:.1f}/s received  {accepted:.1f}/s accepted  0.0/s rejected  "
    assert any(line.startswith(spans) for line in out), out
    rss = total(second, "engine_process_resident_memory_bytes", process="engine") / 2**20
    limit = int(ENGINE_MEMORY_LIMIT) / 2**20
    engine = next(line for line in out if line.startswith("engine  up  "))
    assert engine.startswith(f"engine  up  rss {rss:.1f} MiB/{limit:.1f} MiB (")
    cores = rate("engine_process_cpu_seconds_total", process="engine")
    assert f"  cpu {cores:.2f}/0.50 (" in engine
    capacity = total(second, "tickscope_pipeline_queue_capacity_spans")
    series = total(second, "tickscope_spanmetrics_series")
    assert (
        f"queue {total(second, 'tickscope_pipeline_queue_spans'):.0f}/{capacity:.0f}"
        in "\n".join(out)
    )
    assert f"series {series:.0f}/80" in "\n".join(out)
    accepted_orders = total(second, "trading_orders_total", outcome="accepted")
    assert any(
        line.startswith(
            f"orders  accepted {accepted_orders:.0f} "
            f"({rate('trading_orders_total', outcome='accepted'):.1f}/s)"
        )
        for line in out
    )
    methods = {
        labels["method"]
        for labels, _ in second["traces_span_metrics_calls_total"]
        if labels.get("exchange")
    }
    assert {"fetch_order_book", "create_order", "cancel_order"} <= methods
    for method in methods:
        calls = rate("traces_span_metrics_calls_total", exchange="binance", method=method)
        count = total(second, "traces_span_metrics_calls_total", exchange="binance", method=method)
        row = next(line for line in out if line.startswith(f"binance      {method} "))
        assert row.split()[2] == f"{calls:.1f}", row
        assert row.split()[-1] == f"{count:.0f}", row
    assert "FIRING ALERTS" in "\n".join(out)
    streams = [line for line in out if line.startswith("ws binance   watch_ticker")]
    assert len(streams) == 2, out
    # The stable figures are the sidecar's now, too.
    now = families(http_get(stack.sidecar.url + "/metrics").text)
    assert total(now, "engine_container_memory_limit_bytes") == int(ENGINE_MEMORY_LIMIT)
    assert total(now, "tickscope_pipeline_queue_capacity_spans") == capacity


def test_once_against_nothing_says_so_and_exits_1(tmp_path: Path) -> None:
    result = subprocess.run(
        [*top_command(), "http://127.0.0.1:9", "--once", "--interval", "0.1"],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith(
        "tickscope top: cannot read /metrics: http://127.0.0.1:9/metrics: "
    ), result.stderr


class Tmux:
    """A private tmux server (its own socket, no user config) running one command."""

    def __init__(self, directory: Path) -> None:
        self.binary = require_binary("tmux")
        self.socket = directory / "tmux.sock"

    def __call__(self, *args: str) -> str:
        result = subprocess.run(
            [self.binary, "-S", str(self.socket), "-f", "/dev/null", *args],
            capture_output=True,
            text=True,
            timeout=10,
            env=clean_env(),
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    def capture(self) -> list[str]:
        return self("capture-pane", "-p", "-t", "top").split("\n")[:-1]

    def kill(self) -> None:
        subprocess.run(
            [self.binary, "-S", str(self.socket), "kill-server"],
            capture_output=True,
            timeout=10,
        )


class LiveTop:
    """`tickscope top URL` in a detached tmux session of a given size, under `sh`, which
    records its exit code and then the terminal's modes (`stty -a`) once it has ended."""

    def __init__(self, tmux: Tmux, directory: Path, url: str, size: tuple[int, int]) -> None:
        self.tmux = tmux
        self.rc, self.modes = directory / "rc", directory / "stty"
        top = shlex.join([*top_command(), url, "--interval", "0.5"])
        script = (
            f"cd {shlex.quote(str(ROOT))} && {top}; echo $? > {self.rc}; stty -a > {self.modes}"
        )
        width, height = size
        tmux(
            "new-session",
            "-d",
            "-s",
            "top",
            "-x",
            str(width),
            "-y",
            str(height),
            "sh",
            "-c",
            script,
        )

    def frame_with_rates(self, timeout: float = 30.0) -> list[str]:
        """The screen once a frame has rates (the second): a calls/s in cancel_order's row."""
        deadline = time.monotonic() + timeout
        screen: list[str] = []
        while time.monotonic() < deadline:
            screen = self.tmux.capture()
            row = [line for line in screen if line.startswith("binance      cancel_order ")]
            if row and row[0].split()[2] != "-":
                return screen
            time.sleep(0.2)
        raise AssertionError(f"no frame with rates within {timeout}s:\n" + "\n".join(screen))

    def top_pid(self) -> int:
        shell = int(self.tmux("display-message", "-p", "-t", "top", "#{pane_pid}"))
        children = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(shell)], capture_output=True, text=True, timeout=10
        ).stdout.split()
        assert len(children) == 1, children
        return int(children[0])

    def ended(self, how: str, timeout: float = 10.0) -> tuple[int, list[str]]:
        """The exit code and the terminal's mode flags after top ended."""
        deadline = time.monotonic() + timeout
        while not (self.rc.exists() and self.modes.exists() and self.modes.stat().st_size):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"top did not end on {how}:\n" + "\n".join(self.tmux.capture())
                )
            time.sleep(0.1)
        return int(self.rc.read_text()), self.modes.read_text().split()


@pytest.mark.system
def test_live_view_in_an_80x24_terminal_and_q_quits(stack: DemoStack, tmp_path: Path) -> None:
    assert stack.sidecar is not None
    tmux = Tmux(tmp_path)
    try:
        top = LiveTop(tmux, tmp_path, stack.sidecar.url, (80, 24))
        screen = top.frame_with_rates()
        assert len(screen) == 24 and max(map(len, screen)) <= 80, screen
        text = "\n".join(screen)
        assert screen[0].startswith("tickscope top "), text
        assert f"  {stack.sidecar.url}  v" in screen[0], text
        for figure in ("host    cpu ", "engine  up  rss ", "/512.0 MiB (", "spans   ", "orders  "):
            assert figure in text, text
        assert "EXCHANGE     METHOD" in text and "MARKET DATA" in text, text
        assert tmux("display-message", "-p", "-t", "top", "#{alternate_on}").strip() == "1"
        # Wider: redrawn at the new size at once, every row shown.
        tmux("resize-window", "-t", "top", "-x", "132", "-y", "40")
        deadline = time.monotonic() + 5
        while len(screen := tmux.capture()) != 40 or "more" in "\n".join(screen):
            assert time.monotonic() < deadline, "\n".join(screen)
            time.sleep(0.1)
        assert screen[0].startswith("tickscope top "), screen
        tmux("send-keys", "-t", "top", "q")
        rc, flags = top.ended("q")
        assert rc == 0
        # cbreak undone: the line discipline echoes and edits lines again.
        assert "icanon" in flags and "echo" in flags, flags
    finally:
        tmux.kill()


@pytest.mark.system
def test_live_view_restores_the_terminal_on_sigterm(stack: DemoStack, tmp_path: Path) -> None:
    assert stack.sidecar is not None
    tmux = Tmux(tmp_path)
    try:
        top = LiveTop(tmux, tmp_path, stack.sidecar.url, (100, 30))
        top.frame_with_rates()
        os.kill(top.top_pid(), signal.SIGTERM)
        rc, flags = top.ended("SIGTERM")
        assert rc == 0
        assert "icanon" in flags and "echo" in flags, flags
    finally:
        tmux.kill()


def test_importing_top_loads_neither_rich_nor_the_http_client() -> None:
    """The CLI imports top.py for its parser, in the sidecar's process too: rich, the
    exposition parser and urllib.request load only when `top` runs."""
    code = (
        "import sys, tickscope.agent.top; "
        "print(sorted(m for m in ('rich', 'prometheus_client.parser', 'urllib.request') "
        "if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert result.stdout.strip() == "[]"


def run_once_in_background(stack: DemoStack, saved: Path, interval: float) -> subprocess.Popen[str]:
    assert stack.sidecar is not None
    command = [*top_command(), stack.sidecar.url, "--once", "--interval", str(interval)]
    return subprocess.Popen(
        [*command, "--save-scrapes", str(saved)],
        cwd=ROOT,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.system
def test_once_shows_the_error_ratio_of_exchange_errors(stack: DemoStack, tmp_path: Path) -> None:
    """503s on market data within the window: ERR% is the window's error calls over all
    calls, per method, as worked out from the two bodies top read."""
    saved = tmp_path / "scrapes"
    top = run_once_in_background(stack, saved, 5.0)
    try:
        time.sleep(1.0)  # top's first scrape is before the fault
        stack.inject("server_error")
        out, err = top.communicate(timeout=30)
    finally:
        if top.poll() is None:
            top.kill()
            top.wait(5)
    assert top.returncode == 0, err
    first = families((saved / "1.prom").read_text())
    second = families((saved / "2.prom").read_text())
    erred = 0
    for method in ("fetch_order_book", "fetch_ticker"):
        want = {"exchange": "binance", "method": method}
        calls = total(second, "traces_span_metrics_calls_total", **want) - total(
            first, "traces_span_metrics_calls_total", **want
        )
        error = {**want, "status_code": "STATUS_CODE_ERROR"}
        errors = total(second, "traces_span_metrics_calls_total", **error) - total(
            first, "traces_span_metrics_calls_total", **error
        )
        erred += errors > 0
        row = next(line for line in out.splitlines() if line.startswith(f"binance      {method} "))
        assert row.split()[3] == f"{100 * errors / calls:.1f}%", (row, errors, calls)
    assert erred, "no error within top's window:\n" + out


@pytest.mark.system
def test_once_shows_a_stopped_engine_down(stack: DemoStack, tmp_path: Path) -> None:
    """Last: the demo engine stops for good."""
    stack.inject("engine_down")
    top = run_once_in_background(stack, tmp_path / "scrapes", 0.5)
    out, err = top.communicate(timeout=30)
    assert top.returncode == 0, err
    assert "engine  DOWN  restarts 0" in out.splitlines(), out
