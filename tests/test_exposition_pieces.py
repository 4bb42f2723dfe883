"""/metrics rendered in pieces and held gzipped: what a render holds, and that text
and gzip clients get the same bytes from one cached copy."""

from __future__ import annotations

import asyncio
import gzip
import logging
import time
import tracemalloc
from collections.abc import Iterator

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_families
from prometheus_client.registry import Collector

from tickscope.agent.server import AdminServer, ServerConfig
from tickscope.agent.status import Status
from tickscope.connectors.spanmetrics import SpanMetrics, SpanMetricsConfig
from tickscope.core.health import Health, LoopMonitor
from tickscope.exporters.prometheus import render
from tickscope.exposition.text import SPILL_LINES, Lines

OM = "application/openmetrics-text; version=1.0.0"


def test_lines_hand_on_full_pieces_between_series_and_the_rest_at_flush() -> None:
    pieces: list[str] = []
    lines = Lines(pieces.append)
    for i in range(2 * SPILL_LINES + 7):
        lines.append(f"{i}\n")
        lines.spill()
    assert [p.count("\n") for p in pieces] == [SPILL_LINES, SPILL_LINES]
    assert len(lines) == 7
    lines.flush()
    assert [p.count("\n") for p in pieces] == [SPILL_LINES, SPILL_LINES, 7]
    assert "".join(pieces) == "".join(f"{i}\n" for i in range(2 * SPILL_LINES + 7))
    assert lines == []
    # Without a sink it is a list that keeps every line.
    kept = Lines()
    for _ in range(SPILL_LINES + 1):
        kept.append("x\n")
        kept.spill()
    kept.flush()
    assert len(kept) == SPILL_LINES + 1


def filled(label_sets: int) -> tuple[CollectorRegistry, SpanMetrics]:
    registry = CollectorRegistry()
    metrics = SpanMetrics(SpanMetricsConfig(max_series=label_sets), registry)
    now = time.monotonic()
    for i in range(label_sets):
        slot = metrics.new_series(("svc", f"ccxt.bench.{i}", 3, 0, "binance", "fetch", ""), now)
        slot.counts[i % 17] += 1
        slot.sum += 0.003
        slot.exemplars[i % 17] = ("ab" * 16, "cd" * 8, 0.003, 1_700_000_000.0 + i)
    return registry, metrics


def test_a_gzipped_render_is_the_text_render_compressed_and_inflates_in_bounded_pieces() -> None:
    registry, metrics = filled(300)
    for accept in ("", OM):
        plain = render(registry, accept=accept, rendered=[metrics], gzipped=False)
        packed = render(registry, accept=accept, rendered=[metrics], gzipped=True)
        text = plain.body
        assert plain.size == len(text) == packed.size
        series_lines = [ln for ln in text.split(b"\n") if ln.startswith(b"traces_span_metrics")]
        assert len(series_lines) == 300 * 20
        assert gzip.decompress(packed.body) == text
        assert packed.content_encoding == "gzip" and plain.content_encoding is None
        pieces = list(packed.text(piece=4096))
        assert b"".join(pieces) == text
        assert max(len(p) for p in pieces) == 4096
        assert list(plain.text()) == list(plain.parts)
    # Parsed by client_python: every label set's count and its exemplar.
    families = {
        f.name: f
        for f in om_families(render(registry, accept=OM, rendered=[metrics]).body.decode())
    }
    calls = families["traces_span_metrics_calls"].samples
    assert len(calls) == 300
    assert {s.value for s in calls} == {1.0}
    exemplar = calls[5].exemplar
    assert exemplar is not None and float(exemplar.timestamp) == 1_700_000_005.0


def test_a_render_holds_a_small_part_of_its_text() -> None:
    """At 4,000 label sets (80,000 lines, ~17 MB of text) a gzipped render's peak
    allocation is the compressed output and one piece: rendering into one list,
    as before, peaked at ~3x the text (the lines, their join, the bytes)."""
    registry, metrics = filled(4000)
    text_size = render(registry, accept=OM, rendered=[metrics], gzipped=False).size
    assert text_size > 16_000_000
    tracemalloc.start()
    try:
        exposition = render(registry, accept=OM, rendered=[metrics], gzipped=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert exposition.size == text_size
    assert exposition.length < text_size / 10
    assert peak < text_size / 10, f"peak {peak:,} B for {text_size:,} B of text"


class CountingCollector(Collector):
    def __init__(self) -> None:
        self.collects = 0

    def collect(self) -> Iterator[Metric]:
        self.collects += 1
        yield GaugeMetricFamily("renders", "How often this was collected.", value=self.collects)


def admin_server(registry: CollectorRegistry, metrics: SpanMetrics) -> AdminServer:
    """An in-process admin server on a free port, its /metrics cached for a minute."""
    return AdminServer(
        ServerConfig(bind="127.0.0.1", port=0, metrics_cache_ttl=60.0),
        registry,
        Health(),
        LoopMonitor(),
        lambda: Status(version="test", uptime_seconds=0.0, ready=True),
        rendered=[metrics],
    )


def test_text_and_gzip_clients_share_one_cached_copy_with_exact_lengths() -> None:
    async def body() -> None:
        registry, metrics = filled(500)
        counting = CountingCollector()
        registry.register(counting)
        server = admin_server(registry, metrics)
        await server.start()
        url = f"http://127.0.0.1:{server.port}/metrics"
        try:
            async with aiohttp.ClientSession(auto_decompress=False) as session:
                async with session.get(url, headers={"Accept-Encoding": "gzip"}) as r:
                    zipped = await r.read()
                    assert r.headers["Content-Encoding"] == "gzip"
                    assert int(r.headers["Content-Length"]) == len(zipped)
                async with session.get(url, headers={"Accept-Encoding": "identity"}) as r:
                    plain = await r.read()
                    assert "Content-Encoding" not in r.headers
                    assert int(r.headers["Content-Length"]) == len(plain)
            assert gzip.decompress(zipped) == plain
            expected = render(registry, rendered=[metrics], gzipped=False).body
            # The same text as a render now, but for the counting collector's value.
            assert plain == expected.replace(b"renders 2.0\n", b"renders 1.0\n")
            assert plain.count(b"\ntraces_span_metrics") == 500 * 20
            assert counting.collects == 2  # the server's one render and the one above
        finally:
            await server.stop()

    asyncio.run(body())


def test_a_scraper_that_goes_away_mid_body_is_no_error(caplog: pytest.LogCaptureFixture) -> None:
    """A text scrape of ~4 MB cut after its first KB: no 'Error handling request'
    traceback from aiohttp, and the next scrape is whole."""

    async def body() -> None:
        registry, metrics = filled(20000)
        server = admin_server(registry, metrics)
        await server.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: identity\r\n\r\n")
            await writer.drain()
            assert len(await reader.read(1000)) == 1000
            writer.transport.abort()
            await asyncio.sleep(0.5)
            url = f"http://127.0.0.1:{server.port}/metrics"
            async with aiohttp.ClientSession() as session, session.get(url) as r:
                text = await r.read()
            assert text.count(b"\ntraces_span_metrics") == 20000 * 20
        finally:
            await server.stop()

    with caplog.at_level(logging.DEBUG):
        asyncio.run(body())
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert errors == []
    assert [r.getMessage() for r in caplog.records if r.name == "tickscope.server"][-1:] == [
        "/metrics client went away before the body was sent"
    ]
