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

import http.client
import shutil
import statistics
import subprocess
import sys
import time
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
    engine = subprocess.Popen(["sleep", "3600"])
    ne_port = free_port()
    ne = subprocess.Popen(
        [node_exporter, f"--web.listen-address=127.0.0.1:{ne_port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{ne_port}/metrics")
        config = {
            "host": {"interval": "2s"},
            "engine": {
                "interval": "2s",
                "processes": [{"name": "engine", "process_name": "sleep"}],
            },
        }
        with sidecar(config, env={"ENGINE_MEMORY_LIMIT": "1Gi"}) as (ts, ts_port):
            procs = {"node_exporter": psutil.Process(ne.pid), "tickscope": psutil.Process(ts.pid)}
            conns = {
                "node_exporter": http.client.HTTPConnection("127.0.0.1", ne_port, timeout=10),
                "tickscope": http.client.HTTPConnection("127.0.0.1", ts_port, timeout=10),
            }
            series = {"node_exporter": series_count(ne_port), "tickscope": series_count(ts_port)}
            for _ in range(WARMUP):
                for conn in conns.values():
                    scrape(conn, PROMETHEUS_HEADERS)
            times: dict[str, list[float]] = {name: [] for name in conns}
            sizes: dict[str, int] = {}
            cpu_before = {name: cpu_seconds(p) for name, p in procs.items()}
            for _ in range(SCRAPES):
                for name, conn in conns.items():
                    elapsed, size = scrape(conn, PROMETHEUS_HEADERS)
                    times[name].append(elapsed)
                    sizes[name] = size
            cpu = {name: cpu_seconds(p) - cpu_before[name] for name, p in procs.items()}
            rss = {name: p.memory_info().rss for name, p in procs.items()}
            imported = psutil.Process(ts.pid)
            maps = " ".join(m.path for m in imported.memory_maps())
            for conn in conns.values():
                conn.close()
        collect = collection_times()  # while the watched process is alive
        feature_rss = {
            name: steady_rss({**config, "receiver": receivers}, {"ENGINE_MEMORY_LIMIT": "1Gi"})
            for name, receivers in RSS_CONFIGS.items()
        }
    finally:
        ne.terminate()
        ne.wait(10)
        engine.kill()
        engine.wait(5)

    print(
        f"/metrics, {SCRAPES} sequential scrapes each, alternating, Prometheus's headers (OpenMetrics, gzip)"
    )
    for name in ("node_exporter", "tickscope"):
        print(
            f"  {name:<14} {series[name]:4d} series  {sizes[name]:6d} B gzipped   {summary_ms(times[name])}"
            f"   CPU {cpu[name] / SCRAPES * 100:.3f} s/100 scrapes   RSS {rss[name] / 2**20:5.1f} MiB"
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
