"""Issue 5's benchmark: OTLP metrics ingested end to end over HTTP.

A load generator in its own process posts pre-encoded 1,000-point
ExportMetricsServiceRequests (counters, gauges, histograms) as fast as the
sidecar takes them; reported: data points/s translated, next to the decode-only
ceiling (ExportMetricsServiceRequest.FromString of the same batches) measured
in this run; then the sidecar's RSS holding 5,000 streams.
"""

from __future__ import annotations

import http.client
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_otlp import scrape_value
from common import LoadGenerator, free_port, percentile, sidecar
from otlp_batches import make_metrics_request

POINTS = 999  # three metrics of 333 points


def decode_ceiling(batches: list[bytes], seconds: float = 3.0) -> float:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )

    points = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        for body in batches:
            ExportMetricsServiceRequest.FromString(body)
            points += POINTS
    return points / (time.perf_counter() - started)


def main() -> int:
    batches = [make_metrics_request(POINTS, seed) for seed in range(16)]
    ceiling = decode_ceiling(batches)
    port = free_port()
    config = {
        "receiver": {"http": {"port": port}, "grpc": {"enabled": False}},
        "host": {"enabled": False},
    }
    with sidecar(config) as (proc, admin):
        process = psutil.Process(proc.pid)
        gen = LoadGenerator(
            "http", f"http://127.0.0.1:{port}/v1/metrics", "--signal", "metrics",
            "--spans", str(POINTS), "--seconds", "10", "--connections", "4",
        )  # fmt: skip
        # Points received and translated (the same pre-encoded batches are sent again
        # and again, so most are then refused as out of order: the same work).
        before = scrape_value(admin, "tickscope_receiver_received_points_total")
        cpu = process.cpu_times()
        started = time.perf_counter()
        result = gen.run()
        elapsed = time.perf_counter() - started
        after_cpu = process.cpu_times()
        points = scrape_value(admin, "tickscope_receiver_received_points_total") - before
        rss_load = process.memory_info().rss
        series = scrape_value(admin, "tickscope_metrics_series")
    rate = points / elapsed
    print(
        f"decode-only ceiling (FromString, {POINTS}-point batches of ~{len(batches[0]) // 1024} KiB): {ceiling:,.0f} points/s"
    )
    print(
        f"OTLP/HTTP metrics end to end: {rate:,.0f} points/s = {rate / ceiling:.1%} of the ceiling; "
        f"sidecar CPU {(after_cpu.user + after_cpu.system - cpu.user - cpu.system) / elapsed:.2f} cores; "
        f"latency p99 {percentile(result['latencies'], 99) * 1000:.1f} ms; {series:.0f} series held; "
        f"RSS {rss_load / 2**20:.0f} MiB; responses {result['statuses']}"
    )
    # RSS with 5,000 streams: 5 requests whose points all differ in labels.
    port = free_port()
    with sidecar({"receiver": {"http": {"port": port}, "grpc": {"enabled": False}}, "host": {"enabled": False},
                  "metrics": {"max_series_per_metric": 10000}}) as (proc, admin):  # fmt: skip
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for seed in range(5):
            conn.request("POST", "/v1/metrics", body=make_metrics_request(POINTS + 3, seed, streams=5001),
                         headers={"Content-Type": "application/x-protobuf"})  # fmt: skip
            conn.getresponse().read()
        conn.close()
        series = scrape_value(admin, "tickscope_metrics_series")
        scrape = http.client.HTTPConnection("127.0.0.1", admin, timeout=30)
        started = time.perf_counter()
        scrape.request("GET", "/metrics")
        size = len(scrape.getresponse().read())
        scrape_ms = (time.perf_counter() - started) * 1000
        rss = psutil.Process(proc.pid).memory_info().rss
    print(
        f"{series:.0f} streams: RSS {rss / 2**20:.0f} MiB; /metrics {scrape_ms:.0f} ms ({size // 1024} KiB)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
