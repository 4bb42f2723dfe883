"""Issue 2's benchmark: serving /metrics, tickscope next to the real node_exporter.

Both run on this machine at the same time and are scraped alternately (one
request to each in turn, over keep-alive connections, with the headers
Prometheus sends), so that machine noise hits both alike. Reported: median and
p95 time to serve /metrics over 200 scrapes, CPU seconds per 100 scrapes and
RSS of each process, and tickscope's median host+process collection time
measured in this process.

tickscope's RSS is also measured, one after the other, as a host+process
exporter (issue 2's scope, receivers off), with the OTLP/HTTP receiver, and with
both receivers (the default): what each feature costs in memory.
"""

from __future__ import annotations

import contextlib
import http.client
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import psutil
from common import free_port, percentile, sidecar, summary_ms, wait_http

SCRAPES = 200
WARMUP = 20
PROMETHEUS_HEADERS = {
    "Accept": "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
    "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "Accept-Encoding": "gzip",
    "X-Prometheus-Scrape-Timeout-Seconds": "10",
}


def scrape(conn: http.client.HTTPConnection, headers: dict[str, str]) -> tuple[float, int]:
    started = time.perf_counter()
    conn.request("GET", "/metrics", headers=headers)
    response = conn.getresponse()
    body = response.read()
    elapsed = time.perf_counter() - started
    assert response.status == 200, response.status
    return elapsed, len(body)


# The sidecar's host and engine-process collectors as both side-by-side runs (this
# script and bench/report.py) set them, watching a `sleep` that stands in for the engine.
WATCHING_SLEEP: dict[str, Any] = {
    "host": {"interval": "2s"},
    "engine": {"interval": "2s", "processes": [{"name": "engine", "process_name": "sleep"}]},
}
ENGINE_ENV = {"ENGINE_MEMORY_LIMIT": "1Gi"}


@contextlib.contextmanager
def beside_node_exporter(node_exporter: str) -> Iterator[tuple[psutil.Process, int]]:
    """While the block runs: a `sleep` for the sidecar to watch as its engine, and
    node_exporter on a free loopback port. Yields node_exporter's process and port."""
    engine = subprocess.Popen(["sleep", "3600"])
    ne_port = free_port()
    ne = subprocess.Popen(
        [node_exporter, f"--web.listen-address=127.0.0.1:{ne_port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{ne_port}/metrics")
        yield psutil.Process(ne.pid), ne_port
    finally:
        ne.terminate()
        ne.wait(10)
        engine.kill()
        engine.wait(5)


def scrape_side_by_side(
    exporters: dict[str, tuple[psutil.Process, int]], scrapes: int, warmup: int
) -> dict[str, dict[str, Any]]:
    """Scrape each exporter (name -> process, port) in turn with Prometheus's headers,
    `warmup` rounds and then `scrapes`, so that machine noise hits all alike. Per
    exporter: series, times (s per scrape), size (B gzipped, the last), cpu (s over the
    measured scrapes), rss (B after them)."""
    conns = {
        name: http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for name, (_, port) in exporters.items()
    }
    series = {name: series_count(port) for name, (_, port) in exporters.items()}
    for _ in range(warmup):
        for conn in conns.values():
            scrape(conn, PROMETHEUS_HEADERS)
    times: dict[str, list[float]] = {name: [] for name in conns}
    sizes: dict[str, int] = {}
    cpu_before = {name: cpu_seconds(proc) for name, (proc, _) in exporters.items()}
    for _ in range(scrapes):
        for name, conn in conns.items():
            elapsed, size = scrape(conn, PROMETHEUS_HEADERS)
            times[name].append(elapsed)
            sizes[name] = size
    for conn in conns.values():
        conn.close()
    return {
        name: {
            "series": series[name],
            "times": times[name],
            "size": sizes[name],
            "cpu": cpu_seconds(proc) - cpu_before[name],
            "rss": proc.memory_info().rss,
        }
        for name, (proc, _) in exporters.items()
    }


def series_count(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


RSS_CONFIGS = {
    "host+process (receivers off)": {"http": {"enabled": False}, "grpc": {"enabled": False}},
    "+ OTLP/HTTP receiver": {"grpc": {"enabled": False}},
    "+ OTLP/gRPC receiver (default)": {},
}
TARGET_RSS = 60e6  # bytes: "under 60 MB"


def steady_rss(config: dict[str, Any], env: dict[str, str]) -> int:
    """RSS of a sidecar with `config` after 50 scrapes."""
    with sidecar(config, env=env) as (proc, port):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for _ in range(50):
            scrape(conn, PROMETHEUS_HEADERS)
        conn.close()
        rss: int = psutil.Process(proc.pid).memory_info().rss
        return rss


def collection_times(rounds: int = 500) -> list[float]:
    """Full host + engine-process collection, in this process, as the sidecar runs it."""
    from tickscope.collectors.engine import EngineConfig, EngineProcessCollector
    from tickscope.collectors.host import HostCollector, HostConfig

    engine = EngineConfig(processes=[{"name": "engine", "process_name": "sleep"}])
    host = HostCollector(HostConfig())
    proc = EngineProcessCollector(engine, {"ENGINE_MEMORY_LIMIT": "1Gi"})
    for _ in range(20):
        host.collect()
        proc.collect()
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        h = host.collect()
        p = proc.collect()
        times.append(time.perf_counter() - started)
        assert not h.errors and not p.errors, (h.errors, p.errors)
    host.close()
    return times


def main() -> int:
    node_exporter = shutil.which("prometheus-node-exporter")
    if node_exporter is None:
        print("prometheus-node-exporter is not installed (make bench installs it)", file=sys.stderr)
        return 1
    config = WATCHING_SLEEP
    with beside_node_exporter(node_exporter) as exporter:
        with sidecar(config, env=ENGINE_ENV) as (ts, ts_port):
            tickscope = psutil.Process(ts.pid)
            run = scrape_side_by_side(
                {"node_exporter": exporter, "tickscope": (tickscope, ts_port)}, SCRAPES, WARMUP
            )
            maps = " ".join(m.path for m in tickscope.memory_maps())
        collect = collection_times()  # while the watched process is alive
        feature_rss = {
            name: steady_rss({**config, "receiver": receivers}, ENGINE_ENV)
            for name, receivers in RSS_CONFIGS.items()
        }
    times = {name: r["times"] for name, r in run.items()}
    cpu = {name: r["cpu"] for name, r in run.items()}

    print(
        f"/metrics, {SCRAPES} sequential scrapes each, alternating, Prometheus's headers (OpenMetrics, gzip)"
    )
    for name in ("node_exporter", "tickscope"):
        print(
            f"  {name:<14} {run[name]['series']:4d} series  {run[name]['size']:6d} B gzipped   {summary_ms(times[name])}"
            f"   CPU {cpu[name] / SCRAPES * 100:.3f} s/100 scrapes   RSS {run[name]['rss'] / 2**20:5.1f} MiB"
        )
    ratio = statistics.median(times["tickscope"]) / statistics.median(times["node_exporter"])
    p95_ratio = percentile(times["tickscope"], 95) / percentile(times["node_exporter"], 95)
    cpu_ratio = cpu["tickscope"] / cpu["node_exporter"] if cpu["node_exporter"] else float("inf")
    print(
        f"  ratio tickscope/node_exporter: median {ratio:.2f}  p95 {p95_ratio:.2f}  CPU {cpu_ratio:.2f}  (target: median <= 1.0)"
    )
    print(f"  ccxt loaded by tickscope: {'ccxt' in maps}")
    print("tickscope RSS after 50 scrapes, by features enabled:")
    for name, value in feature_rss.items():
        print(f"  {name:<32} {value / 2**20:5.1f} MiB = {value / 1e6:5.1f} MB")
    host_only = feature_rss["host+process (receivers off)"]
    print(f"  target (issue 2, host+process exporter): < {TARGET_RSS / 1e6:.0f} MB")
    print(
        f"host+process collection in-process, {len(collect)} rounds: {summary_ms(collect)}"
        f"   (target: median < 2 ms)"
    )
    ok = (
        ratio <= 1.0
        and host_only < TARGET_RSS
        and "ccxt" not in maps
        and statistics.median(collect) < 0.002
    )
    print("targets met" if ok else "TARGETS MISSED")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
