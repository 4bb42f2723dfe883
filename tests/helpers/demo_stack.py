"""The whole demo on 127.0.0.1, with a real Prometheus scraping it, and every fault
the dashboards' empty panels wait for.

    with DemoStack(tmp_dir) as stack:
        stack.wait_for_data(45)
        stack.prometheus.query("up")
        stack.inject("rate_limit")

Started, in this order, each on a free port: the exchange simulator
(examples/exchange_simulator.py, a child process driven over /_sim/faults), an OTLP
sink the sidecar forwards spans to (tests/helpers/otlp_sink.py), the sidecar
(examples/demo.yaml plus small series limits and forward buffer, no exposition
cache, a hwmon sensor, the engine's container limits in its env as the Helm chart's
downward API sets them), Prometheus (the Debian package: 1 s scrape and evaluation,
exemplar storage, alert-rules/ with `for` shortened) and the demo engine
(examples/demo_engine.py: real ccxt through the shim, OTLP to the sidecar). All of
them are stopped when the block ends, however it ends.

Every wait is bounded; a fault's `inject` returns once Prometheus has seen its effect.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import yaml
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from . import otlp
from .alerting import Prometheus, shorten_for
from .otlp_sink import HTTPSink
from .sidecar import ROOT, SidecarProcess, http_post, merge

__all__ = ["FAULTS", "DemoStack", "LivePrometheus", "QueryError", "host_sysfs"]

EXAMPLES = ROOT / "examples"
RULES = ROOT / "alert-rules"
SENSOR_FIXTURE = ROOT / "tests" / "fixtures" / "sys-live"
# The fault keys of the dashboards' catalog, in the order `inject_all` runs them:
# the engine is stopped last, and the alerts are what the others set off.
FAULTS = (
    "bad_otlp",
    "ws_drop",
    "ws_pause",
    "rate_limit",
    "server_error",
    "rejected_order",
    "overflow",
    "upstream_down",
    "engine_down",
    "alerts",
)
# The alerts each fault sets off (alert-rules/, `for` shortened); `alerts` waits for
# those of the faults injected so far.
ALERTS_OF: dict[str, tuple[str, ...]] = {
    "bad_otlp": ("TickscopeRejectingSpans",),
    "ws_pause": ("MarketDataStale",),
    "rate_limit": ("ExchangeRateLimited",),
    "server_error": ("ExchangeErrorRate",),
    "overflow": ("TickscopeSpanMetricsOverflow",),
    "upstream_down": ("TickscopeForwarderFailing",),
    "engine_down": ("EngineDown",),
}
# As the downward API writes them for limits.memory: 512Mi (divisor 1: bytes) and
# limits.cpu: 500m with `divisor: 1m` (millicores), read back with cpu_limit_divisor 1m.
ENGINE_MEMORY_LIMIT = str(512 * 1024 * 1024)
ENGINE_CPU_LIMIT = "500"
CUMULATIVE = metrics_pb2.AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
INSUFFICIENT_BALANCE = {
    "code": -2010,
    "msg": "Account has insufficient balance for requested action.",
}


class QueryError(AssertionError):
    """Prometheus refused a query (status error): its errorType and error."""


def host_sysfs() -> Path:
    """/sys when this machine has a hwmon temperature sensor, else the fixture tree
    with one (containers and most VMs have none)."""
    if list(Path("/sys/class/hwmon").glob("hwmon*/temp*_input")):
        return Path("/sys")
    return SENSOR_FIXTURE


def _deadline_loop(timeout: float, interval: float = 0.25) -> Iterator[None]:
    deadline = time.monotonic() + timeout
    while True:
        yield
        if time.monotonic() >= deadline:
            return
        time.sleep(interval)


class LivePrometheus(Prometheus):
    """The Debian Prometheus scraping the sidecar as job `tickscope` every second,
    evaluating the rules every second, with exemplar storage; no Alertmanager (the
    ALERTS series is what the dashboards read)."""

    name = "prometheus"

    def __init__(self, binary: str, directory: Path, rules: Path, targets: list[str]) -> None:
        super().__init__(binary, directory, rules, targets, alertmanager="")
        config = yaml.safe_load(self.config_path.read_text())
        del config["alerting"]
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def args(self) -> list[str]:
        return [*super().args(), "--enable-feature=exemplar-storage"]

    def api(self, path: str, params: dict[str, str]) -> Any:
        """POST to the HTTP API; the `data` of a success, QueryError for an error."""
        body = urllib.parse.urlencode(params).encode()
        request = urllib.request.Request(
            self.url + path,
            data=body,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                answer = json.load(response)
        except urllib.error.HTTPError as e:
            try:
                answer = json.load(e)
            except ValueError:
                raise QueryError(f"HTTP {e.code} from {path}") from None
        if answer.get("status") != "success":
            raise QueryError(f"{answer.get('errorType')}: {answer.get('error')}")
        return answer["data"]

    def instant(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self.api("/api/v1/query", params)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        data = self.api(
            "/api/v1/query_range",
            {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": str(step)},
        )
        result: list[dict[str, Any]] = data["result"]
        return result

    def exemplars(self, expr: str, start: float, end: float) -> list[dict[str, Any]]:
        data = self.api(
            "/api/v1/query_exemplars", {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}"}
        )
        result: list[dict[str, Any]] = data
        return result

    def holds(self, expr: str) -> bool:
        """Whether an instant query of `expr` returns anything now."""
        return bool(self.instant(expr))

    def wait_for(self, expr: str, timeout: float, what: str | None = None) -> None:
        for _ in _deadline_loop(timeout):
            if self.holds(expr):
                return
        raise AssertionError(f"{what or expr}: not seen in Prometheus within {timeout:.0f}s")


@dataclass(frozen=True)
class Limits:
    """The test sidecar's small limits, so that overflow and a full forward buffer
    can be produced in seconds."""

    spanmetrics_max_series: int = 80
    trading_max_series: int = 40
    metrics_max_series_per_metric: int = 40
    forward_buffer_spans: int = 400
    forward_max_elapsed: str = "2s"


class DemoStack:
    """The demo (simulator, sidecar, demo engine), an upstream sink and Prometheus."""

    def __init__(
        self,
        directory: Path,
        limits: Limits = Limits(),
        rule_for: str = "2s",
        prometheus_binary: str = "prometheus",
    ) -> None:
        self.directory = directory
        self.limits = limits
        self.rule_for = rule_for
        self.prometheus_binary = prometheus_binary
        self._stack = contextlib.ExitStack()
        self._logs: list[IO[bytes]] = []
        self.simulator: subprocess.Popen[bytes] | None = None
        self.simulator_url = ""
        self.sink: HTTPSink | None = None
        self.upstream_up = False
        self.sidecar: SidecarProcess | None = None
        self.engine: subprocess.Popen[bytes] | None = None
        self._prometheus: LivePrometheus | None = None
        self.started_at = 0.0  # wall clock, when Prometheus began scraping
        self.injected: dict[str, float] = {}  # fault -> wall clock when it took effect
        # (PromQL, monotonic deadline, what): conditions earlier faults started that need
        # the engine running; stop_engine waits for them first.
        self._before_engine_stops: list[tuple[str, float, str]] = []

    # -- lifecycle ----------------------------------------------------------------

    def __enter__(self) -> DemoStack:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.close()

    @property
    def prometheus(self) -> LivePrometheus:
        assert self._prometheus is not None, "the stack is not running"
        return self._prometheus

    def _log(self, name: str) -> IO[bytes]:
        log = (self.directory / name).open("wb")
        self._stack.callback(log.close)
        return log

    def _start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._start_simulator()
        self.sink = HTTPSink().start()
        self.upstream_up = True
        self._stack.callback(self.stop_upstream)
        self._start_sidecar()
        self._start_prometheus()
        self._start_engine()

    def _start_simulator(self, timeout: float = 30.0) -> None:
        proc = subprocess.Popen(
            [sys.executable, str(EXAMPLES / "exchange_simulator.py"), "--port", "0", "--seed", "7"],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log("simulator.log"),
        )
        self.simulator = proc
        self._stack.callback(_stop_process, proc)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        if not ready:
            raise AssertionError(f"the exchange simulator did not start within {timeout:.0f}s")
        line = proc.stdout.readline().decode()
        if "listening on " not in line:
            raise AssertionError(f"the exchange simulator did not start: {line!r}")
        self.simulator_url = line.rsplit(" ", 1)[1].strip()

    def engine_cmdline_regex(self) -> str:
        """What the sidecar finds the engine by: its script and this simulator's URL,
        so that no other demo on the machine is taken for it."""
        return re.escape(f"demo_engine.py --exchange-url {self.simulator_url}")

    def sidecar_config(self) -> dict[str, Any]:
        assert self.sink is not None
        demo: dict[str, Any] = yaml.safe_load((EXAMPLES / "demo.yaml").read_text())
        ours: dict[str, Any] = {
            "server": {"bind": "127.0.0.1", "port": 0, "metrics_cache_ttl": 0},
            "logging": {"format": "json"},  # SidecarProcess reads its JSON log lines
            "host": {"sysfs": str(host_sysfs())},
            "engine": {
                "interval": "0.5s",
                "processes": [
                    {
                        "name": "engine",
                        "cmdline": self.engine_cmdline_regex(),
                        "cpu_limit_divisor": "1m",
                    }
                ],
            },
            "spanmetrics": {"max_series": self.limits.spanmetrics_max_series},
            "trading": {"max_series": self.limits.trading_max_series},
            "metrics": {"max_series_per_metric": self.limits.metrics_max_series_per_metric},
            "forward": {
                "enabled": True,
                "endpoint": f"http://127.0.0.1:{self.sink.port}",
                "buffer_spans": self.limits.forward_buffer_spans,
                "retry": {
                    "initial_interval": "0.2s",
                    "max_interval": "0.5s",
                    "max_elapsed": self.limits.forward_max_elapsed,
                },
            },
        }
        return merge(demo, ours)

    def _start_sidecar(self) -> None:
        directory = self.directory / "sidecar"
        directory.mkdir()
        config = SidecarProcess.write_config(directory, self.sidecar_config())
        env = {"ENGINE_MEMORY_LIMIT": ENGINE_MEMORY_LIMIT, "ENGINE_CPU_LIMIT": ENGINE_CPU_LIMIT}
        sidecar = SidecarProcess(config, env)
        self.sidecar = sidecar
        self._stack.callback(self._stop_sidecar)
        sidecar.start()

    def _stop_sidecar(self) -> None:
        if self.sidecar is not None:
            self.sidecar.stop()
            (self.directory / "sidecar.log").write_text("\n".join(self.sidecar.raw_stderr))

    def _start_prometheus(self) -> None:
        assert self.sidecar is not None
        rules = self.directory / "rules"
        shorten_for(RULES, rules, self.rule_for)
        directory = self.directory / "prometheus"
        directory.mkdir()
        prometheus = LivePrometheus(
            self.prometheus_binary, directory, rules, [f"127.0.0.1:{self.sidecar.port}"]
        )
        self._prometheus = prometheus
        self._stack.callback(prometheus.stop)
        prometheus.start()
        self.started_at = time.time()

    def _start_engine(self) -> None:
        assert self.sidecar is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TICKSCOPE_"))}
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = self.sidecar.otlp_http_url
        # Engine metrics every second (the shim's default is 10 s): rates over a 4 s
        # $__rate_interval then see them move.
        env["OTEL_METRIC_EXPORT_INTERVAL"] = "1000"
        proc = subprocess.Popen(
            [
                sys.executable,
                str(EXAMPLES / "demo_engine.py"),
                "--exchange-url",
                self.simulator_url,
            ],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log("engine.log"),
            stderr=subprocess.STDOUT,
        )
        self.engine = proc
        self._stack.callback(_stop_process, proc)

    # -- waiting for data ---------------------------------------------------------

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Prometheus has scraped the sidecar, which sees the engine and its calls."""
        self.prometheus.wait_for('up{job="tickscope"} == 1', timeout, "the sidecar scraped")
        self.prometheus.wait_for(
            'engine_process_up{job="tickscope", process="engine"} == 1', timeout, "the engine up"
        )
        self.prometheus.wait_for(
            'traces_span_metrics_calls_total{service_name="demo-engine", exchange="binance"}',
            timeout,
            "the engine's ccxt calls",
        )
        self.prometheus.wait_for("engine_cache_lookups_total", timeout, "the engine's metrics")

    def wait_for_data(self, seconds: float, timeout: float = 120.0) -> None:
        """Until Prometheus holds `seconds` of the sidecar's samples."""
        self.wait_ready(timeout)
        first = self.prometheus.instant('min_over_time(timestamp(up{job="tickscope"})[10m:1s])')
        since = float(first[0]["value"][1]) if first else time.time()
        remaining = since + seconds - time.time()
        if remaining > timeout:
            raise AssertionError(f"{seconds}s of data would take longer than {timeout}s")
        if remaining > 0:
            time.sleep(remaining)

    # -- faults -------------------------------------------------------------------

    def inject(self, fault: str, timeout: float = 30.0) -> None:
        """Cause `fault` (one of FAULTS) and wait until Prometheus shows it."""
        methods: dict[str, Callable[[float], None]] = {
            "rate_limit": self.inject_rate_limit,
            "server_error": self.inject_server_error,
            "rejected_order": self.inject_rejected_order,
            "bad_otlp": self.inject_bad_otlp,
            "ws_drop": self.inject_ws_drop,
            "ws_pause": self.inject_ws_pause,
            "overflow": self.inject_overflow,
            "upstream_down": self.stop_upstream_and_fill,
            "engine_down": self.stop_engine,
            "alerts": self.wait_for_alerts,
        }
        if fault not in methods:
            raise KeyError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")
        methods[fault](timeout)
        self.injected[fault] = time.time()

    def inject_all(self, timeout: float = 30.0) -> None:
        for fault in FAULTS:
            self.inject(fault, timeout)

    def simulator_fault(self, **fault: Any) -> None:
        """POST /_sim/faults (see BinanceSimulator.inject)."""
        r = http_post(
            self.simulator_url + "/_sim/faults",
            json.dumps(fault).encode(),
            {"Content-Type": "application/json"},
            timeout=5,
        )
        if r.status != 201:
            raise AssertionError(f"the simulator refused fault {fault}: {r.status} {r.text}")

    def _simulator_faults_left(self) -> int:
        with urllib.request.urlopen(self.simulator_url + "/_sim/faults", timeout=5) as r:
            return len(json.load(r))

    def _until_consumed(self, timeout: float) -> None:
        for _ in _deadline_loop(timeout):
            if self._simulator_faults_left() == 0:
                return
        raise AssertionError(f"the engine did not meet the injected faults within {timeout:.0f}s")

    def simulator_ws(self, action: str, **control: Any) -> None:
        """POST /_sim/ws/<action> (pause, resume, drop, lag, rate, push)."""
        r = http_post(
            f"{self.simulator_url}/_sim/ws/{action}",
            json.dumps(control).encode(),
            {"Content-Type": "application/json"},
            timeout=5,
        )
        if r.status not in (200, 201):
            raise AssertionError(
                f"the simulator refused ws {action} {control}: {r.status} {r.text}"
            )

    def inject_ws_drop(self, timeout: float = 30.0) -> None:
        """The exchange drops every websocket: the pending watch_ticker calls fail with
        NetworkError (an error by class), and the engine's next calls reconnect."""
        self.simulator_ws("drop")
        self.prometheus.wait_for(
            'sum(exchange_ws_errors_total{error_type="NetworkError"}) > 0',
            timeout,
            "websocket errors",
        )
        self.prometheus.wait_for("sum(exchange_ws_reconnects_total) > 0", timeout, "reconnects")

    def inject_ws_pause(self, timeout: float = 30.0) -> None:
        """One symbol's ticker stream stops (the connection stays up): its age grows
        past MarketDataStale's threshold (30 s). The faults after it run meanwhile
        (the wait was a third of phase 2's time); the engine is stopped only once
        Prometheus has seen the stale stream (`stop_engine`)."""
        self.simulator_ws("pause", symbol="ETH/USDT")
        self._before_engine_stops.append(
            (
                'max(exchange_ws_update_age_seconds{symbol="ETH/USDT"}) > 30',
                time.monotonic() + timeout + 30,
                "a stale stream",
            )
        )

    def inject_rate_limit(self, timeout: float = 30.0) -> None:
        """Binance's 429 with code -1003 on market data: ccxt's DDoSProtection (the
        simulator is not the real host), a rate-limit hit; the engine backs off 2 s."""
        self.simulator_fault(path="^/api/v3/(depth|ticker)", status=429, count=3)
        self._until_consumed(timeout)
        self.prometheus.wait_for(
            'sum(exchange_rate_limit_hits_total{exchange="binance"}) > 0', timeout, "rate limit"
        )

    def inject_server_error(self, timeout: float = 30.0) -> None:
        """503 on market data: ExchangeNotAvailable. 40 of them: the demo engine makes
        ~15 calls/s, ~2,200 in ExchangeErrorRate's 5-minute window by this point of
        the live tests, and the alert asks for more than 1% (12 made 0.78%)."""
        self.simulator_fault(path="^/api/v3/(depth|ticker)", status=503, count=40)
        self._until_consumed(timeout)
        self.prometheus.wait_for(
            'exchange_api_errors_total{error_type="ExchangeNotAvailable"} > 0',
            timeout,
            "server errors",
        )

    def inject_rejected_order(self, timeout: float = 30.0) -> None:
        """POST /api/v3/order answers Binance's 400 -2010 "insufficient balance":
        ccxt's InsufficientFunds, an order rejected. (The fault matches the path
        only, so a cancel may meet it too: the engine logs and goes on.)"""
        self.simulator_fault(path="^/api/v3/order$", status=400, count=8, body=INSUFFICIENT_BALANCE)
        self._until_consumed(timeout)
        self.prometheus.wait_for(
            'trading_orders_total{outcome="rejected"} > 0', timeout, "rejected orders"
        )

    def _post_otlp(self, path: str, body: bytes, expect: int) -> None:
        assert self.sidecar is not None
        r = http_post(self.sidecar.otlp_http_url + path, body, otlp.PROTOBUF, timeout=10)
        if r.status != expect:
            raise AssertionError(f"POST {path}: {r.status} {r.text!r}, expected {expect}")

    def inject_bad_otlp(self, timeout: float = 30.0) -> None:
        """A body that is no OTLP (rejected request, malformed), a span with an
        8-byte trace id (rejected span, invalid_span) and a counter point with a
        negative value (rejected point, invalid_value)."""
        self._post_otlp("/v1/traces", b"\xff\xff\xff\xff not protobuf", 400)
        bad_span = otlp.request(
            "tickscope-live-bad", [{"name": "bad.span", "trace_id": os.urandom(8)}]
        )
        self._post_otlp("/v1/traces", bad_span.SerializeToString(), 200)
        bad_point = metrics_request("tickscope-live-bad")
        counter = bad_point.resource_metrics[0].scope_metrics[0].metrics.add(name="live.bad")
        counter.sum.is_monotonic = True
        counter.sum.aggregation_temporality = CUMULATIVE
        counter.sum.data_points.add(as_double=-1.0, start_time_unix_nano=1, time_unix_nano=2)
        self._post_otlp("/v1/metrics", bad_point.SerializeToString(), 200)
        p = self.prometheus
        p.wait_for('tickscope_receiver_rejected_requests_total{reason="malformed"} > 0', timeout)
        p.wait_for('tickscope_receiver_rejected_spans_total{reason="invalid_span"} > 0', timeout)
        p.wait_for('tickscope_receiver_rejected_points_total{reason="invalid_value"} > 0', timeout)

    def inject_overflow(self, timeout: float = 30.0) -> None:
        """ccxt order spans from more exchanges than the span-metric and trading
        series limits hold (accepted and rejected orders, so every trading metric
        overflows), and an engine gauge with more label sets than
        metrics.max_series_per_metric."""
        exchanges = max(self.limits.spanmetrics_max_series, self.limits.trading_max_series) + 20
        spans: list[dict[str, Any]] = []
        for i in range(exchanges):
            attributes = {
                "exchange.id": f"overflow{i}",
                "ccxt.method": "create_order",
                "trading.order.side": "buy",
                "trading.order.type": "limit",
            }
            spans.append({"name": "ccxt.create_order", "seconds": 0.01, "attributes": attributes})
            spans.append(
                {
                    "name": "ccxt.create_order",
                    "seconds": 0.02,
                    "attributes": {**attributes, "error.type": "InsufficientFunds"},
                    "status": Status.STATUS_CODE_ERROR,
                }
            )
        request = otlp.request("tickscope-live-overflow", spans)
        self._post_otlp("/v1/traces", request.SerializeToString(), 200)
        gauge = metrics_request("tickscope-live-overflow")
        slots = gauge.resource_metrics[0].scope_metrics[0].metrics.add(name="live.slots")
        for i in range(self.limits.metrics_max_series_per_metric + 10):
            point = slots.gauge.data_points.add(as_double=float(i), time_unix_nano=2)
            point.attributes.append(otlp.kv("slot", str(i)))
        self._post_otlp("/v1/metrics", gauge.SerializeToString(), 200)
        p = self.prometheus
        p.wait_for("tickscope_spanmetrics_overflow_total > 0", timeout)
        p.wait_for('tickscope_trading_overflow_total{metric="trading_orders_total"} > 0', timeout)
        p.wait_for("tickscope_metrics_overflow_points_total > 0", timeout)

    def stop_upstream(self, timeout: float = 10.0) -> None:
        if self.sink is not None and self.upstream_up:
            self.upstream_up = False
            self.sink.stop()

    def stop_upstream_and_fill(self, timeout: float = 30.0) -> None:
        """The forward upstream stops; the spans that keep coming (the engine's, and
        bursts larger than the forward buffer) are dropped (buffer_full) and the batch
        being retried is given up after retry.max_elapsed (failed)."""
        self.stop_upstream()
        burst = otlp.request("tickscope-live-burst", otlp.many("burst", 100, seconds=0.001))
        body = burst.SerializeToString()
        for _ in range(self.limits.forward_buffer_spans // 100 + 2):
            self._post_otlp("/v1/traces", body, 200)
        p = self.prometheus
        p.wait_for('tickscope_forward_dropped_spans_total{reason="buffer_full"} > 0', timeout)
        p.wait_for("tickscope_forward_failed_spans_total > 0", timeout)

    def stop_engine(self, timeout: float = 30.0) -> None:
        """The demo engine stops (SIGTERM: it flushes its spans): engine_process_up 0,
        once what earlier faults wait for from the running engine has shown."""
        for query, deadline, what in self._before_engine_stops:
            self.prometheus.wait_for(query, max(1.0, deadline - time.monotonic()), what)
        self._before_engine_stops.clear()
        if self.engine is not None:
            _stop_process(self.engine)
        self.prometheus.wait_for(
            'engine_process_up{job="tickscope", process="engine"} == 0', timeout, "engine down"
        )

    def wait_for_alerts(self, timeout: float = 30.0) -> None:
        """The faults injected so far fire their alerts (the rules' `for` is
        shortened): waits for all of them, and fails naming those that did not fire."""
        expected = {a for fault in self.injected for a in ALERTS_OF.get(fault, ())}
        firing: set[str] = set()
        for _ in _deadline_loop(timeout, 0.5):
            firing = set(self.firing_alerts())
            if firing and expected <= firing:
                return
        raise AssertionError(
            f"alerts that did not fire within {timeout:.0f}s: {sorted(expected - firing)} "
            f"(firing: {sorted(firing)})"
        )

    def firing_alerts(self) -> list[str]:
        return sorted(
            {
                r["metric"]["alertname"]
                for r in self.prometheus.instant('ALERTS{alertstate="firing"}')
            }
        )


def metrics_request(service: str) -> ExportMetricsServiceRequest:
    """An OTLP metrics request with one resource (`service`) and one empty scope."""
    request = ExportMetricsServiceRequest()
    resource = request.resource_metrics.add()
    resource.resource.attributes.append(otlp.kv("service.name", service))
    resource.scope_metrics.add().scope.name = "tickscope.tests.live"
    return request


def _stop_process(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
