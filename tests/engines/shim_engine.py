"""A test engine: `shim.configure` (the real thing, global providers), then real
ccxt calls against the exchange simulator. Run as its own process, because
OpenTelemetry's global providers can be set once per process.

Prints one JSON line: calls made per method, the time the calls took, and the
span accounting: spans made (ended, counted by a span processor of its own),
spans the export gate skipped, spans the SDK's queue dropped (queue_full) and
spans it handed to the exporter (exported or failed), read after a flush, so
that made == dropped + handed_over exactly.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))

from exchange_simulator import point_at
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

from tickscope import shim

OPTIONS = {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False, "fetchMargins": False}


def config() -> dict[str, Any]:
    return {
        "apiKey": "engine-key",
        "secret": "engine-secret",
        "enableRateLimit": False,
        "options": OPTIONS,
        "timeout": 3000,
    }


def run_sync(url: str, rounds: int, calls: dict[str, int]) -> None:
    import ccxt

    exchange = point_at(ccxt.binance(config()), url)
    exchange.load_markets()
    calls["load_markets"] = calls.get("load_markets", 0) + 1
    for _ in range(rounds):
        exchange.fetch_ticker("BTC/USDT")
        exchange.fetch_order_book("BTC/USDT", 5)
        order = exchange.create_order("BTC/USDT", "limit", "buy", 0.001, 30000)
        exchange.cancel_order(order["id"], "BTC/USDT")
        for method in ("fetch_ticker", "fetch_order_book", "create_order", "cancel_order"):
            calls[method] = calls.get(method, 0) + 1


async def run_async(url: str, rounds: int, calls: dict[str, int]) -> None:
    import ccxt.async_support as ccxt

    exchange = point_at(ccxt.binance(config()), url)
    try:
        await exchange.load_markets()
        calls["load_markets"] = calls.get("load_markets", 0) + 1
        for _ in range(rounds):
            await asyncio.gather(exchange.fetch_ticker("ETH/USDT"), exchange.fetch_balance())
            for method in ("fetch_ticker", "fetch_balance"):
                calls[method] = calls.get(method, 0) + 1
    finally:
        await exchange.close()


class CountEnded(SpanProcessor):
    """Counts the spans made (every one ends; the calls are sequential)."""

    def __init__(self) -> None:
        self.ended = 0

    def on_end(self, span: ReadableSpan) -> None:
        self.ended += 1


def processed(reader: InMemoryMetricReader) -> tuple[int, int]:
    """(dropped with queue_full, handed to the exporter) from the SDK's processor metric."""
    dropped = handed_over = 0
    data = reader.get_metrics_data()
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name != "otel.sdk.processor.span.processed":
                    continue
                for point in metric.data.data_points:
                    error = point.attributes.get("error.type")
                    if error == "queue_full":
                        dropped += int(point.value)
                    elif error is None:
                        handed_over += int(point.value)
    return dropped, handed_over


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--exchange-url", required=True)
    parser.add_argument("--mode", choices=["sync", "async", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--service", default="test-engine")
    parser.add_argument("--max-queue-size", type=int, default=4096)
    parser.add_argument(
        "--flush-first",
        action="store_true",
        help="export the first span before any ccxt call (with the sidecar down, the "
        "gate is closed from the first call on)",
    )
    args = parser.parse_args()
    reader = InMemoryMetricReader()
    made = CountEnded()
    telemetry = shim.configure(
        service_name=args.service,
        metric_readers=[reader],
        span_processors=[made],
        max_queue_size=args.max_queue_size,
        schedule_delay_millis=200,
        export_timeout=1.0,
    )
    calls: dict[str, int] = {}
    # The engine helpers: 3 hits and 2 misses, and a queue of depth 4.
    cache = shim.cache_metrics("tickers")
    for hit in (True, True, False, True, False):
        cache.record(hit)
    queue = [1, 2, 3, 4]
    shim.queue_gauge("orders", lambda: len(queue))
    with shim.traced("strategy.step"):
        pass
    if args.flush_first:
        telemetry.force_flush(10_000)
    started = time.perf_counter()
    if args.mode in ("sync", "both"):
        run_sync(args.exchange_url, args.rounds, calls)
    if args.mode in ("async", "both"):
        asyncio.run(run_async(args.exchange_url, args.rounds, calls))
    elapsed = time.perf_counter() - started
    # Everything queued goes to the exporter now, so that nothing is in between.
    telemetry.force_flush(30_000)
    dropped, handed_over = processed(reader)
    skipped = telemetry.export_gate.skipped if telemetry.export_gate is not None else 0
    shim.shutdown(timeout_millis=3000)
    report = {
        "calls": calls,
        "elapsed": elapsed,
        "made": made.ended,
        "skipped": skipped,
        "dropped": dropped,
        "handed_over": handed_over,
    }
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
