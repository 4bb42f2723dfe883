"""Issue 4's benchmark: what the shim costs an engine, per ccxt call.

1. The same ccxt call (sync binance.fetch_ticker) against the local exchange
   simulator (its own process), 2,000 calls each: uninstrumented; instrumented
   with the shim configured and the sidecar up (real OTLP/HTTP export); and with
   the shim configured and the sidecar down. Median, p99, calls/s, and the
   engine's CPU per call (all threads, export included).
2. The wrapper alone: the same call with ccxt's HTTP session stubbed in memory,
   uninstrumented vs instrumented (SDK TracerProvider + BatchSpanProcessor with a
   no-op exporter), next to a bare `start_as_current_span` around the stubbed
   call with the same provider: the wrapper's overhead over the bare span.

Each configuration runs in its own process (OpenTelemetry's global providers are
set once per process); the configurations are interleaved in rounds so that
machine noise spreads over all of them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "examples"))

CALLS = 2000
ROUNDS = 4


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


OPTIONS = {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False, "fetchMargins": False}


# -- child: one configuration against the simulator ---------------------------


def child_rate(shim_mode: str, url: str, endpoint: str, calls: int) -> dict[str, Any]:
    """In one process with the shim configured: a plain exchange and an
    instrumented one, called in alternating blocks, so that both see the same
    process, the same machine noise and the same background threads."""
    import ccxt
    from exchange_simulator import point_at

    from tickscope import shim

    telemetry = shim.configure(
        service_name="bench-engine", endpoint=endpoint, runtime_metrics=False, instrument_ccxt=False
    )
    plain = point_at(ccxt.binance({"enableRateLimit": False, "options": OPTIONS}), url)
    wrapped = point_at(ccxt.binance({"enableRateLimit": False, "options": OPTIONS}), url)
    shim.instrument_exchange(wrapped)
    plain.load_markets()
    wrapped.load_markets()
    # Eight seconds of calls first: the span processor's first exports, the exporter's
    # connection (or, with the sidecar down, its first failed export, after the 5 s
    # export timeout) happen once per process, not per call.
    warm_until = time.perf_counter() + 8.0
    while time.perf_counter() < warm_until:
        plain.fetch_ticker("BTC/USDT")
        wrapped.fetch_ticker("BTC/USDT")
    block = 100
    times: dict[str, list[float]] = {"plain": [], "wrapped": []}
    cpu: dict[str, float] = {"plain": 0.0, "wrapped": 0.0}
    wall: dict[str, float] = {"plain": 0.0, "wrapped": 0.0}
    for _ in range(calls // block):
        for name, exchange in (("plain", plain), ("wrapped", wrapped)):
            cpu_start, wall_start = time.process_time(), time.perf_counter()
            for _ in range(block):
                t = time.perf_counter()
                exchange.fetch_ticker("BTC/USDT")
                times[name].append(time.perf_counter() - t)
            if name == "wrapped" and shim_mode == "up":
                # The export of this block's spans is part of its cost.
                telemetry.tracer_provider.force_flush(10_000)
            cpu[name] += time.process_time() - cpu_start
            wall[name] += time.perf_counter() - wall_start
    closed = telemetry.export_gate is not None and not telemetry.export_gate.open
    shim.shutdown(timeout_millis=2000)
    return {
        "times": times,
        "cpu_per_call": {k: v / len(times[k]) for k, v in cpu.items()},
        "rate": {k: len(times[k]) / v for k, v in wall.items()},
        "gate_closed": closed,
    }


def shim_shaped_batch(size: int = 512) -> Any:
    """`size` finished SDK spans with the attributes the shim gives a ccxt call."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("bench")
    attributes = {
        "exchange.id": "binance", "ccxt.method": "fetch_ticker", "trading.symbol": "BTC/USDT",
        "server.address": "api.binance.com", "http.request.method": "GET",
        "http.response.status_code": 200, "trading.ratelimit.used": 120.0, "trading.ratelimit.limit": 6000.0,
    }  # fmt: skip
    for _ in range(size):
        tracer.start_span("ccxt.fetch_ticker", attributes=attributes).end()
    return exporter.get_finished_spans()


def child_export(url: str, spans: int) -> dict[str, Any]:
    """The export path alone: encoding shim-shaped spans to OTLP protobuf."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    batch = shim_shaped_batch()
    rounds = max(1, spans // 512)
    started = time.process_time()
    for _ in range(rounds):
        encode_spans(batch).SerializePartialToString()
    per_span = (time.process_time() - started) / (rounds * 512)
    return {"encode_per_span": per_span}


# -- child: the wrapper alone ----------------------------------------------------


class _Response:
    def __init__(self, text: str) -> None:
        from requests.structures import CaseInsensitiveDict

        self.status_code = 200
        self.reason = "OK"
        self.text = text
        self.encoding = "utf-8"
        self.headers = CaseInsensitiveDict(
            {"Content-Type": "application/json", "x-mbx-used-weight-1m": "42"}
        )

    def raise_for_status(self) -> None:
        pass


class _Session:
    """Stands in for requests.Session: every request answers at once from memory."""

    def __init__(self, bodies: dict[str, str]) -> None:
        import requests

        self.bodies = bodies
        self.cookies = requests.cookies.RequestsCookieJar()
        self.headers: dict[str, str] = {}

    def request(self, method: str, url: str, **_: Any) -> _Response:
        path = url.split("?", 1)[0]
        for suffix, body in self.bodies.items():
            if path.endswith(suffix):
                return _Response(body)
        raise AssertionError(f"no canned answer for {path}")


def stubbed_exchanges(url: str) -> tuple[Any, Any, Callable[[bool], Any]]:
    """A TracerProvider exporting to nowhere, its tracer, and a maker of ccxt.binance
    exchanges (instrumented or not) answered from the simulator's canned bodies with
    no network: the call's own CPU, nothing else."""
    import urllib.request

    import ccxt
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from tickscope import shim

    class Discard(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    def fetch(path: str) -> str:
        with urllib.request.urlopen(f"{url}/api.binance.com{path}") as r:  # loopback
            return str(r.read().decode())

    bodies = {
        "/api/v3/exchangeInfo": fetch("/api/v3/exchangeInfo"),
        "/api/v3/ticker/24hr": fetch("/api/v3/ticker/24hr?symbol=BTCUSDT"),
    }
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Discard(), max_queue_size=65536))
    tracer = provider.get_tracer("bench")

    def exchange(instrumented: bool) -> Any:
        ex = ccxt.binance({"enableRateLimit": False, "options": OPTIONS})
        ex.session = _Session(bodies)
        if instrumented:
            shim.instrument_exchange(ex, tracer_provider=provider)
        ex.load_markets()
        return ex

    return provider, tracer, exchange


def child_overhead(url: str, calls: int) -> dict[str, Any]:
    from opentelemetry.trace import SpanKind

    provider, tracer, exchange = stubbed_exchanges(url)
    plain, wrapped = exchange(False), exchange(True)

    def bare() -> None:
        with tracer.start_as_current_span("ccxt.fetch_ticker", kind=SpanKind.CLIENT):
            plain.fetch_ticker("BTC/USDT")

    variants = {
        "plain": lambda: plain.fetch_ticker("BTC/USDT"),
        "wrapped": lambda: wrapped.fetch_ticker("BTC/USDT"),
        "bare_span": bare,
    }
    results: dict[str, list[float]] = {k: [] for k in variants}
    for fn in variants.values():
        for _ in range(200):
            fn()
    for _ in range(ROUNDS * 5):
        for name, fn in variants.items():
            for _ in range(calls // (ROUNDS * 5)):
                t = time.perf_counter()
                fn()
                results[name].append(time.perf_counter() - t)
    provider.shutdown()
    return {name: times for name, times in results.items()}


# -- parent ------------------------------------------------------------------------


def run_child(*args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, timeout=600
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    from common import free_port, sidecar

    sim = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "examples" / "exchange_simulator.py"),
            "--port",
            "0",
            "--volatility",
            "0",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert sim.stdout is not None
    url = sim.stdout.readline().strip().rsplit(" ", 1)[1]
    try:
        http_port = free_port()
        config = {
            "receiver": {"http": {"port": http_port}, "grpc": {"enabled": False}},
            "host": {"enabled": False},
        }
        with sidecar(config) as _:
            up = run_child("rate", "up", url, f"http://127.0.0.1:{http_port}", str(CALLS))
        down = run_child("rate", "down", url, f"http://127.0.0.1:{free_port()}", str(CALLS))
        overhead = run_child("overhead", url, "-", str(CALLS))
        export = run_child("export", url, "-", "51200")
    finally:
        sim.terminate()
        sim.wait(10)

    print(
        f"sync ccxt fetch_ticker against the local simulator, {CALLS} calls each, a plain and an "
        "instrumented exchange in alternating blocks of 100, in one process with the shim configured:"
    )
    ratios = {}
    for label, run in (("sidecar up", up), ("sidecar down", down)):
        for name in ("plain", "wrapped"):
            times = run["times"][name]
            print(
                f"  {label:<13} {'uninstrumented' if name == 'plain' else 'instrumented':<15}"
                f" median {statistics.median(times) * 1e6:6.0f} µs  p99 {percentile(times, 99) * 1e6:6.0f} µs"
                f"  {run['rate'][name]:6.0f} calls/s  engine CPU {run['cpu_per_call'][name] * 1e6:5.0f} µs/call"
            )
        ratios[label] = run["rate"]["wrapped"] / run["rate"]["plain"]
        extra_cpu = (run["cpu_per_call"]["wrapped"] - run["cpu_per_call"]["plain"]) * 1e6
        print(
            f"  {label:<13} call rate instrumented/plain {ratios[label]:.3f}; CPU per call +{extra_cpu:.0f} µs"
            + (
                " (span, export and the sidecar's share of the machine)"
                if label == "sidecar up"
                else f" (gate closed: {run['gate_closed']})"
            )
        )
    print(f"  target: sidecar down rate ratio > 0.95 -> {ratios['sidecar down']:.3f}")
    print(
        f"export path: the stock OpenTelemetry encoder costs {export['encode_per_span'] * 1e6:.1f} µs/span "
        "of shim spans in the engine (the shim exports with its own encoder, "
        "tickscope.shim.fastexport: bench_exporter.py)"
    )
    plain = statistics.median(overhead["plain"])
    wrapped = statistics.median(overhead["wrapped"])
    bare = statistics.median(overhead["bare_span"])
    print(
        f"wrapper alone (ccxt's HTTP session stubbed in memory), {CALLS} calls each, interleaved:"
    )
    print(f"  stubbed call, uninstrumented      median {plain * 1e6:6.1f} µs")
    print(
        f"  stubbed call, shim-instrumented   median {wrapped * 1e6:6.1f} µs  -> wrapper costs {(wrapped - plain) * 1e6:5.1f} µs"
    )
    print(
        f"  stubbed call in a bare SDK span   median {bare * 1e6:6.1f} µs  -> a bare span costs {(bare - plain) * 1e6:5.1f} µs"
    )
    ratio = (wrapped - plain) / (bare - plain)
    print(f"  wrapper / bare span: {ratio:.2f} (target <= 1.3)")
    ok = ratio <= 1.3 and ratios["sidecar down"] > 0.95
    print("targets met" if ok else "TARGETS MISSED")
    return 0


def child_main(argv: list[str]) -> None:
    if argv[0] == "rate":
        _, mode, url, endpoint, calls = argv
        result = child_rate(mode, url, endpoint, int(calls))
    elif argv[0] == "export":
        _, url, _, spans = argv
        result = child_export(url, int(spans))
    else:
        _, url, _, calls = argv
        result = child_overhead(url, int(calls))
    print(json.dumps(result))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.child:
        child_main(args.child)
    else:
        raise SystemExit(main())
