"""A test engine for the two-provider cases: an engine with OpenTelemetry of its
own, and the shim's configure(), in the orders docs/shim.md describes. Run as
its own process (global providers are set once per process), possibly under
opentelemetry-instrument.

Prints one JSON line: configure()'s mode, whether the global provider, configure's
and the ccxt spans' provider are one, the spans the engine's own exporter got,
and what configure() logged.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))

from exchange_simulator import point_at
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tickscope import shim

OPTIONS = {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False, "fetchMargins": False}
TICKERS = 3


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append({"logger": record.name, "msg": record.getMessage()})


def engine_provider(service: str) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--exchange-url", required=True)
    parser.add_argument(
        "--case", choices=["engine-first", "engine-first-as-is", "configure-first", "auto"]
    )
    parser.add_argument("--service", required=True)
    parser.add_argument("--endpoint")
    args = parser.parse_args()
    lines = Lines()
    for name in ("tickscope.shim", "opentelemetry.trace"):
        logging.getLogger(name).addHandler(lines)
        logging.getLogger(name).setLevel(logging.INFO)

    own: TracerProvider | None = None
    exporter: InMemorySpanExporter | None = None
    if args.case in ("engine-first", "engine-first-as-is"):
        own, exporter = engine_provider(args.service)
        trace.set_tracer_provider(own)
    telemetry = shim.configure(
        service_name=args.service,
        endpoint=args.endpoint,
        schedule_delay_millis=100,
        add_to_existing=False if args.case == "engine-first-as-is" else None,
    )
    if args.case == "configure-first":
        # The engine sets its own afterwards: OpenTelemetry refuses a second global
        # provider (and logs so), and everything stays on configure()'s.
        own, exporter = engine_provider(args.service)
        trace.set_tracer_provider(own)

    import ccxt

    ex = point_at(ccxt.binance({"enableRateLimit": False, "options": OPTIONS}), args.exchange_url)
    with shim.traced("strategy.step"):
        ex.load_markets()
        for _ in range(TICKERS):
            ex.fetch_ticker("BTC/USDT")
    report = {
        "mode": telemetry.mode,
        "instrumented": shim.is_instrumented(ex),
        "global_is_configures": trace.get_tracer_provider() is telemetry.tracer_provider,
        "global_is_engines": own is not None and trace.get_tracer_provider() is own,
        "engine_spans": sorted(s.name for s in exporter.get_finished_spans()) if exporter else [],
        "processor_added": telemetry.span_processor is not None,
        "lines": lines.lines,
    }
    shim.shutdown(timeout_millis=5000)
    if own is not None:
        own.shutdown()
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
