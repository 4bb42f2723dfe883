"""atheris entry points: raw bytes into the decoders and what consumes their output.

    python tests/fuzz/atheris_targets.py TARGET [libFuzzer flags] [corpus dirs or files]

TARGET is one of traces_pb, traces_json, metrics_pb, metrics_json (the corpus
directories under tests/fuzz/corpus/ are named the same). Traces are decoded into
the span view and run through the real span consumers (span metrics, trading
metrics); metrics are decoded and ingested into a MetricStore. After each input the
exposition is rendered in both formats and must parse with prometheus_client's text
and OpenMetrics parsers. A decoder may refuse the bytes with a RequestError (the
receivers answer 400 with it); any other exception, or an exposition that does not
parse, is a crash: its signature is printed as `FUZZ-SIGNATURE: ...` on stderr and
the exception is raised for libFuzzer to record.

TICKSCOPE_FUZZ_KNOWN (signatures, one a line) names crashes already known: those
are passed over, so a long run finds the next bug instead of the
same one again. atheris takes over the process, so tests run this in a subprocess.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fuzz.signatures import check_exposition, exception_signature

with atheris.instrument_imports(include=["tickscope"]):
    from prometheus_client import CollectorRegistry

    from tickscope.connectors.spanmetrics import SpanMetrics, SpanMetricsConfig
    from tickscope.connectors.spanstream import SpanStream
    from tickscope.connectors.trading import TradingConfig, TradingMetrics
    from tickscope.exporters.otlpmetrics import MetricsConfig
    from tickscope.exporters.otlpmetrics.store import MetricStore
    from tickscope.exporters.prometheus import render
    from tickscope.receivers.errors import RequestError
    from tickscope.receivers.otlp_http import decode_metrics, decode_protobuf
    from tickscope.receivers.otlp_json import decode_metrics_json, decode_traces_json

TARGETS = ("traces_pb", "traces_json", "metrics_pb", "metrics_json")
KNOWN = frozenset(s for s in os.environ.get("TICKSCOPE_FUZZ_KNOWN", "").splitlines() if s)
OPENMETRICS = "application/openmetrics-text; version=1.0.0"


class Components:
    """Fresh consumers and store, as a sidecar builds them (default config)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.spanmetrics = SpanMetrics(SpanMetricsConfig(), self.registry)
        self.trading = TradingMetrics(TradingConfig(), self.registry)
        self.stream = SpanStream(self.spanmetrics, self.trading)
        self.store = MetricStore(MetricsConfig(), self.registry)

    def check(self) -> None:
        rendered = [self.spanmetrics, self.trading, self.store]
        for accept, openmetrics in (("", False), (OPENMETRICS, True)):
            text = render(self.registry, accept=accept, rendered=rendered).body.decode()
            for failure in check_exposition(text, openmetrics):
                raise ExpositionError(failure.signature, failure.detail)


class ExpositionError(AssertionError):
    def __init__(self, signature: str, detail: str) -> None:
        super().__init__(f"{signature}\n{detail}")
        self.signature = signature


def _traces(components: Components, data: bytes, json: bool) -> None:
    try:
        payload = decode_traces_json(data).SerializeToString() if json else data
        view = decode_protobuf(payload)
    except RequestError:
        return
    components.stream.consume_view(view)


def _metrics(components: Components, data: bytes, json: bool) -> None:
    try:
        request = decode_metrics_json(data) if json else decode_metrics(data)
    except RequestError:
        return
    components.store.ingest(request)


def make_target(name: str) -> Callable[[bytes], None]:
    feed: Callable[[Components, bytes, bool], None] = (
        _traces if name.startswith("traces") else _metrics
    )
    json = name.endswith("json")

    def test_one_input(data: bytes) -> None:
        # Fresh components for every input: kept ones fill up to their series
        # limits (2,000 span-metric series) and rendering and parsing those made
        # a run 10 inputs/s (measured); state across requests is the harness's job.
        components = Components()
        try:
            feed(components, data, json)
            components.check()
        except Exception as exc:
            signature = (
                exc.signature
                if isinstance(exc, ExpositionError)
                else f"{name}: {exception_signature(exc)}"
            )
            if signature in KNOWN:
                return
            print(f"FUZZ-SIGNATURE: {signature}", file=sys.stderr, flush=True)
            raise

    return test_one_input


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(TARGETS)}}} [libFuzzer args]")
    target = sys.argv.pop(1)
    atheris.Setup(sys.argv, make_target(target))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
