"""From a misbehaving engine to a notification, with the real pieces: an engine
using the shim and real ccxt against the exchange simulator, the sidecar, the
Debian Prometheus evaluating alert-rules/ (only `for` shortened) and the Debian
Alertmanager with the example configuration's routes and inhibitions, whose
receivers all post to a local webhook.

Two real conditions: the exchange answers a share of calls with 503
(ExchangeErrorRate, routed to the trading desk), and the watched engine process
is killed (EngineDown, paged). Each must reach the webhook with its labels and
then resolve once the condition ends. And, with the demo engine (ccxt.pro
websockets, a heartbeat): a paused websocket stream pages as MarketDataStale and
resolves when it resumes; a frozen engine (SIGSTOP: the process is up, its loop is
not) turns /engine/healthz to 503 naming its loop, and back to 200 when it thaws.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import select
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
from alerts_table import rules

from helpers.alerting import (
    Alertmanager,
    Prometheus,
    Webhook,
    example_alertmanager_config,
    shorten_for,
)
from helpers.binaries import require_binary
from helpers.sidecar import ROOT, SidecarProcess, StartSidecar

RULES = ROOT / "alert-rules"
ENGINE = ROOT / "tests" / "engines" / "polling_engine.py"
DEMO_ENGINE = ROOT / "examples" / "demo_engine.py"
SERVICE = "alerting-e2e"
RATE = 400  # engine calls per second
ERROR_SHARE = 0.03  # of the calls Prometheus has seen: 3x the 1% threshold
DEADLINE = 90.0  # seconds for any one notification


class Processes:
    """The simulator and engine processes; all stopped at teardown."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.procs: list[subprocess.Popen[str]] = []
        self.logs: list[IO[str]] = []
        self.marker = f"tickscope-alerting-engine-{time.monotonic_ns()}"

    def _log(self, name: str) -> IO[str]:
        log = (self.directory / name).open("w")
        self.logs.append(log)
        return log

    def simulator(self, timeout: float = 30.0) -> str:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "examples" / "exchange_simulator.py"), "--port", "0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log("simulator.log"),
            text=True,
        )
        self.procs.append(proc)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        assert ready, f"the exchange simulator did not start within {timeout:.0f}s"
        line = proc.stdout.readline()
        assert "listening on" in line, line
        return line.rsplit(" ", 1)[1].strip()

    def engine(self, exchange_url: str, otlp_url: str) -> subprocess.Popen[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = otlp_url
        proc = subprocess.Popen(
            [sys.executable, str(ENGINE), self.marker, "--exchange-url", exchange_url,
             "--service", SERVICE, "--rate", str(RATE)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._log(f"engine-{len(self.procs)}.log"),
            text=True,
        )  # fmt: skip
        self.procs.append(proc)
        return proc

    def demo_engine(self, exchange_url: str, otlp_url: str) -> subprocess.Popen[str]:
        """examples/demo_engine.py: REST trading, websocket tickers, a heartbeat; its
        metrics exported every 0.5 s so that ages and beats move within the test."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = otlp_url
        proc = subprocess.Popen(
            [sys.executable, str(DEMO_ENGINE), "--exchange-url", exchange_url,
             "--metric-export-interval", "0.5"],
            cwd=ROOT / "examples",
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._log(f"demo-engine-{len(self.procs)}.log"),
            text=True,
        )  # fmt: skip
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGCONT)  # a frozen engine dies of SIGKILL too
                proc.kill()
                proc.wait(10)
        for log in self.logs:
            log.close()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    p = Processes(tmp_path)
    yield p
    p.stop_all()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    w = Webhook().start()
    yield w
    w.stop()


@contextlib.contextmanager
def alerting(tmp_path: Path, sidecar: SidecarProcess, webhook: Webhook) -> Iterator[Prometheus]:
    """The Debian Prometheus (the rules in tmp_path/rules) scraping `sidecar`, and
    Alertmanager with the example configuration posting to `webhook`; both stopped
    on exit."""
    prometheus_bin = require_binary("prometheus")
    alertmanager_bin = require_binary("prometheus-alertmanager")
    (tmp_path / "am").mkdir()
    (tmp_path / "prom").mkdir()
    alertmanager = Alertmanager(
        alertmanager_bin,
        tmp_path / "am",
        example_alertmanager_config(RULES / "alertmanager.example.yml", webhook.url),
    )
    prometheus = Prometheus(
        prometheus_bin,
        tmp_path / "prom",
        tmp_path / "rules",
        [f"127.0.0.1:{sidecar.port}"],
        f"127.0.0.1:{alertmanager.port}",
    )
    with contextlib.ExitStack() as stack:
        stack.callback(alertmanager.stop)
        alertmanager.start()
        stack.callback(prometheus.stop)
        prometheus.start()
        yield prometheus


def inject(exchange_url: str, count: int) -> None:
    """The next `count` ticker requests answer 503 Service Unavailable."""
    request = urllib.request.Request(
        exchange_url + "/_sim/faults",
        data=json.dumps({"path": "ticker", "status": 503, "count": count}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status in (200, 201)


def test_engine_failures_reach_alertmanager_webhook_and_resolve(
    tmp_path: Path,
    start_sidecar: StartSidecar,
    processes: Processes,
    webhook: Webhook,
) -> None:
    timings: dict[str, float] = {}

    # The rules exactly as shipped, but for `for`.
    shorten_for(RULES, tmp_path / "rules", "2s")
    shipped, shortened = rules(RULES), rules(tmp_path / "rules")
    assert len(shipped) == len(shortened) >= 20
    for rule, short in zip(shipped, shortened, strict=True):
        assert short == ({**rule, "for": "2s"} if "for" in rule else rule)

    exchange_url = processes.simulator()
    sidecar: SidecarProcess = start_sidecar(
        {
            "host": {"enabled": False},
            "engine": {
                "interval": "1s",
                "processes": [{"name": "engine", "cmdline": processes.marker}],
            },
            # Prometheus scrapes every second here, with `for: 2s`: a scrape served from
            # the 1 s exposition cache repeats the previous one, and the error burst,
            # spread over 3 s, is seen growing by fewer samples than the rule needs.
            # Real scrape intervals (15-60 s) are far from the cache's.
            "server": {"metrics_cache_ttl": 0},
        }
    )
    with alerting(tmp_path, sidecar, webhook) as prometheus:
        assert prometheus.rules_loaded() == len(shipped)
        engine = processes.engine(exchange_url, sidecar.otlp_http_url)

        # Prometheus sees the engine and its calls (first target discovery takes ~5s).
        calls = f'sum(increase(traces_span_metrics_calls_total{{service_name="{SERVICE}", exchange!=""}}[5m]))'
        prometheus.wait(
            lambda: (
                prometheus.value('engine_process_up{job="tickscope", process="engine"}') == 1
                and (prometheus.value(calls) or 0) > 2 * RATE
            ),
            DEADLINE,
            "engine and calls in Prometheus",
        )
        assert prometheus.query('ALERTS{alertname=~"ExchangeErrorRate|EngineDown"}') == []

        # 1. The exchange fails a few percent of calls, spread over ~3 seconds so
        # that several scrapes see the error series grow.
        seen = prometheus.value(calls) or 0.0
        errors = math.ceil(ERROR_SHARE * (seen + 3 * RATE))
        batches = 15
        timings["errors_start"] = time.monotonic()
        for _ in range(batches):
            inject(exchange_url, math.ceil(errors / batches))
            time.sleep(3 / batches)
        note, alert = webhook.wait_for(
            "ExchangeErrorRate", "firing", timings["errors_start"], DEADLINE
        )
        timings["error_rate_firing"] = note.received - timings["errors_start"]
        assert note.path == "/trading-desk"  # warning + exchange: the desk, not a page
        assert note.body["status"] == "firing"
        assert alert["labels"] == {
            "alertname": "ExchangeErrorRate",
            "severity": "warning",
            "component": "exchange",
            "job": "tickscope",
            "instance": f"127.0.0.1:{sidecar.port}",
            "service_name": SERVICE,
            "exchange": "binance",
        }
        assert alert["annotations"]["runbook_url"] == "docs/runbooks.md#exchangeerrorrate"
        assert (
            f"of the calls {SERVICE} makes to binance fail" in alert["annotations"]["description"]
        )
        # The failures were real ccxt errors, counted by type.
        families = sidecar.families()
        failed = [
            s.value
            for s in families["exchange_api_errors"].samples
            if s.name.endswith("_total") and s.labels.get("error_type") == "ExchangeNotAvailable"
        ]
        assert failed and failed[0] >= errors * 0.9

        # The errors stopped: successes dilute them below 1% and the alert resolves.
        note, alert = webhook.wait_for(
            "ExchangeErrorRate", "resolved", timings["errors_start"], DEADLINE * 2
        )
        timings["error_rate_resolved"] = note.received - timings["errors_start"]
        assert alert["labels"]["exchange"] == "binance"
        assert note.path == "/trading-desk"

        # 2. The engine process dies.
        timings["kill"] = time.monotonic()
        engine.kill()
        engine.wait(10)
        note, alert = webhook.wait_for("EngineDown", "firing", timings["kill"], DEADLINE)
        timings["engine_down_firing"] = note.received - timings["kill"]
        assert note.path == "/trading-desk-page"  # critical + engine: paged
        assert alert["labels"] == {
            "alertname": "EngineDown",
            "severity": "critical",
            "component": "engine",
            "job": "tickscope",
            "instance": f"127.0.0.1:{sidecar.port}",
            "process": "engine",
        }
        assert alert["annotations"]["runbook_url"] == "docs/runbooks.md#enginedown"

        # It comes back (a new PID): resolved, and counted as a restart.
        timings["restart"] = time.monotonic()
        processes.engine(exchange_url, sidecar.otlp_http_url)
        note, alert = webhook.wait_for("EngineDown", "resolved", timings["restart"], DEADLINE)
        timings["engine_down_resolved"] = note.received - timings["restart"]
        assert alert["labels"]["process"] == "engine"
        assert prometheus.value('engine_process_restarts_total{process="engine"}') == 1
    print(
        "\nalerting e2e, condition -> webhook: "
        + ", ".join(
            f"{k} {v:.1f}s" for k, v in timings.items() if k.endswith(("firing", "resolved"))
        )
    )


def simulator_ws(exchange_url: str, action: str, **control: object) -> None:
    request = urllib.request.Request(
        f"{exchange_url}/_sim/ws/{action}",
        data=json.dumps(control).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status in (200, 201)


def engine_health(sidecar: SidecarProcess) -> tuple[int, dict[str, object]]:
    response = sidecar.get("/engine/healthz")
    body: dict[str, object] = response.json()
    return response.status, body


def test_stale_market_data_and_a_frozen_engine_loop(
    tmp_path: Path,
    start_sidecar: StartSidecar,
    processes: Processes,
    webhook: Webhook,
) -> None:
    shorten_for(RULES, tmp_path / "rules", "2s")
    exchange_url = processes.simulator()
    sidecar: SidecarProcess = start_sidecar(
        {
            "host": {"enabled": False},
            "engine": {
                "interval": "1s",
                "processes": [
                    {
                        "name": "engine",
                        "cmdline": re.escape(f"demo_engine.py --exchange-url {exchange_url}"),
                    }
                ],
                # Beats arrive every 0.5 s here (the engine's export interval).
                "heartbeats": [{"loop": "main", "max_age": "3s", "grace": "60s"}],
            },
            "server": {"metrics_cache_ttl": 0},
        }
    )
    with alerting(tmp_path, sidecar, webhook) as prometheus:
        engine = processes.demo_engine(exchange_url, sidecar.otlp_http_url)
        age = 'exchange_ws_update_age_seconds{job="tickscope", method="watch_ticker", symbol="ETH/USDT"}'
        prometheus.wait(
            lambda: (prometheus.value(f"max({age})") or 99.0) < 5.0,
            DEADLINE,
            "the ETH/USDT ticker stream in Prometheus",
        )
        assert engine_health(sidecar)[0] == 200
        assert prometheus.query('ALERTS{alertname=~"MarketDataStale|EngineLoopStalled"}') == []

        # 1. The exchange stops one symbol's stream; the connection and the others go on.
        paused = time.monotonic()
        simulator_ws(exchange_url, "pause", symbol="ETH/USDT")
        note, alert = webhook.wait_for("MarketDataStale", "firing", paused, DEADLINE)
        stale_after = note.received - paused
        assert note.path == "/trading-desk-page"  # critical + exchange: paged
        assert alert["labels"] == {
            "alertname": "MarketDataStale",
            "severity": "critical",
            "component": "exchange",
            "job": "tickscope",
            "instance": f"127.0.0.1:{sidecar.port}",
            "exchange": "binance",
            "method": "watch_ticker",
            "symbol": "ETH/USDT",
        }
        assert alert["annotations"]["runbook_url"] == "docs/runbooks.md#marketdatastale"
        # 30 s of silence (the threshold), then the scrape, the rule and Alertmanager.
        assert 30.0 < stale_after < 30.0 + DEADLINE
        # The other stream was never stale.
        assert (prometheus.value('max(exchange_ws_update_age_seconds{symbol="BTC/USDT"})') or 0) < 5

        resumed = time.monotonic()
        simulator_ws(exchange_url, "resume", symbol="ETH/USDT")
        note, alert = webhook.wait_for("MarketDataStale", "resolved", resumed, DEADLINE)
        assert alert["labels"]["symbol"] == "ETH/USDT"

        # 2. The engine freezes: its process is still there, its loop and exports are not.
        frozen = time.monotonic()
        engine.send_signal(signal.SIGSTOP)
        while True:
            status, body = engine_health(sidecar)
            if status == 503:
                break
            assert time.monotonic() - frozen < 30, body
            time.sleep(0.2)
        stalled_after = time.monotonic() - frozen
        assert body["status"] == "unhealthy"
        assert body["stale"] == ["main"], body
        # max_age (3 s) after the last beat, which is up to a loop round (0.25 s) plus an
        # export interval (0.5 s) older than the freeze; plus a poll.
        assert 3.0 - 0.75 - 0.2 <= stalled_after < 3.0 + 10.0
        assert prometheus.value('engine_process_up{job="tickscope", process="engine"}') == 1

        thawed = time.monotonic()
        engine.send_signal(signal.SIGCONT)
        while engine_health(sidecar)[0] != 200:
            assert time.monotonic() - thawed < 30
            time.sleep(0.2)
        print(
            f"\nMarketDataStale paged {stale_after:.1f} s after the stream stopped; "
            f"/engine/healthz 503 {stalled_after:.1f} s after the engine froze, "
            f"200 {time.monotonic() - thawed:.1f} s after it thawed"
        )
