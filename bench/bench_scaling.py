"""Issue 15's scaling runs: how the sidecar's cost grows.

1. Span ingest over OTLP/HTTP at 1, 4 and 16 concurrent connections (and OTLP/gRPC
   at 4), each next to the decode-only ceiling measured in a fresh process on either
   side of it (bench_otlp.fresh_ceiling), with the span-metric totals reconciled
   against the spans the receivers accepted.
2. /metrics render time and RSS at 100, 1,000, 10,000 and 50,000 span-metric label
   sets (20 exposition lines each): µs per line, and RSS per label set over the
   same sidecar's RSS before it held any. The render cache is off
   (server.metrics_cache_ttl 0, max_render_percent 100) so that every scrape renders.
3. The sidecar's footprint with the default configuration (2 s host collection, both
   receivers): RSS after 50 scrapes, CPU (millicores) idle and at 100, 1,000 and
   10,000 spans/s sent in batches the way an engine's BatchSpanProcessor sends them.

    .venv/bin/python bench/bench_scaling.py [--quick]

bench/report.py runs these functions and writes docs/performance.md from them.
"""

from __future__ import annotations

import argparse
import compileall
import gzip
import http.client
import json
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_otlp import fresh_ceiling, post_batches, scrape_value
from bench_scrape import PROMETHEUS_HEADERS
from common import ROOT, LoadGenerator, free_port, percentile, sidecar
from otlp_batches import make_batches, make_request
from prometheus_client.parser import text_string_to_metric_families


def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def scrape_sum(port: int, name: str) -> float:
    """The sum of every sample of `name` (all its label sets)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics?name[]={name}", timeout=30) as r:
        text = r.read().decode()
    return sum(
        float(s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    )


def wait_queue(port: int) -> None:
    deadline = time.monotonic() + 60
    while scrape_value(port, "tickscope_pipeline_queue_spans") > 0:
        if time.monotonic() > deadline:
            raise RuntimeError("the pipeline queue did not drain")
        time.sleep(0.05)


def latency_summary(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        nan = float("nan")
        return {"p50_ms": nan, "p95_ms": nan, "p99_ms": nan}
    return {
        "p50_ms": statistics.median(latencies) * 1000,
        "p95_ms": percentile(latencies, 95) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
    }


# -- 1. span ingest at 1, 4, 16 connections ----------------------------------------


def load_run(
    protocol: str, target: str, admin: int, pid: int, connections: int, seconds: float
) -> dict[str, Any]:
    proc = psutil.Process(pid)
    gen = LoadGenerator(
        protocol, target, "--connections", str(connections), "--seconds", str(seconds)
    )
    before = scrape_value(admin, "tickscope_pipeline_processed_spans_total")
    cpu = cpu_seconds(proc)
    started = time.perf_counter()
    result = gen.run()
    wait_queue(admin)
    elapsed = time.perf_counter() - started
    cpu_used = cpu_seconds(proc) - cpu
    spans = scrape_value(admin, "tickscope_pipeline_processed_spans_total") - before
    ok = result["statuses"].get("200", 0) + result["statuses"].get("OK", 0)
    return {
        "protocol": protocol,
        "connections": connections,
        "spans_per_second": spans / elapsed,
        "cpu_cores": cpu_used / elapsed,
        "cpu_us_per_span": cpu_used / spans * 1e6 if spans else float("nan"),
        **latency_summary(result["latencies"]),
        "statuses": result["statuses"],
        "accepted_spans": ok * result["spans_per_request"],
        "processed_spans": spans,
        "rss_mib": proc.memory_info().rss / 2**20,
    }


def ingest_scaling(
    connections: tuple[int, ...] = (1, 4, 16), seconds: float = 8.0, ceiling_seconds: float = 2.0
) -> dict[str, Any]:
    http_port, grpc_port = free_port(), free_port()
    config = {"receiver": {"http": {"port": http_port}, "grpc": {"port": grpc_port}}}
    ceilings = [fresh_ceiling(ceiling_seconds)]
    runs: list[dict[str, Any]] = []
    with sidecar(config) as (proc, admin):
        plan = [("http", f"http://127.0.0.1:{http_port}/v1/traces", n) for n in connections]
        plan.append(("grpc", f"127.0.0.1:{grpc_port}", 4))
        for protocol, target, n in plan:
            run = load_run(protocol, target, admin, proc.pid, n, seconds)
            ceilings.append(fresh_ceiling(ceiling_seconds))
            run["ceiling"] = (ceilings[-2] + ceilings[-1]) / 2
            run["ratio"] = run["spans_per_second"] / run["ceiling"]
            runs.append(run)
        processed = scrape_value(admin, "tickscope_pipeline_processed_spans_total")
        calls = scrape_sum(admin, "traces_span_metrics_calls_total")
        counts = scrape_sum(admin, "traces_span_metrics_duration_seconds_count")
    accepted = sum(r["accepted_spans"] for r in runs)
    return {
        "runs": runs,
        "ceilings": ceilings,
        "reconcile": {
            "accepted": accepted,
            "processed": processed,
            "calls_total": calls,
            "duration_count": counts,
            "exact": accepted == processed == calls == counts,
        },
    }


# -- 2. /metrics at 100 .. 50,000 label sets -----------------------------------------


def label_set_batches(label_sets: int) -> list[bytes]:
    """Shim-shaped spans, each with its own span name and none failed: exactly
    `label_sets` span-metric label sets, every one seen once."""
    bodies = []
    for seed in range((label_sets + 511) // 512):
        count = min(512, label_sets - seed * 512)
        request = make_request(count, seed)
        for i, span in enumerate(request.resource_spans[0].scope_spans[0].spans):
            span.name = f"ccxt.bench.{seed * 512 + i}"
            span.status.Clear()
            kept = [kv for kv in span.attributes if kv.key != "error.type"]
            del span.attributes[:]
            span.attributes.extend(kept)
        bodies.append(request.SerializeToString())
    return bodies


# Renders of the empty sidecar, and of each row up to 1,000 label sets: a few ms
# each, so enough of them for a median that the difference of two stays within ~5%.
SMALL_RENDERS = 21


def scrape_once(conn: http.client.HTTPConnection) -> tuple[float, bytes]:
    """One /metrics as Prometheus asks for it (OpenMetrics, gzip): seconds until
    the whole body is in, and the body inflated."""
    started = time.perf_counter()
    conn.request("GET", "/metrics", headers=PROMETHEUS_HEADERS)
    response = conn.getresponse()
    body = response.read()
    elapsed = time.perf_counter() - started
    if response.getheader("Content-Encoding") == "gzip":
        body = gzip.decompress(body)
    return elapsed, body


def metrics_run(label_sets: int, rounds: int = 5) -> dict[str, Any]:
    http_port = free_port()
    config = {
        "receiver": {"http": {"port": http_port}, "grpc": {"enabled": False}},
        "spanmetrics": {"max_series": max(label_sets, 2000)},
        # Every scrape rendered: no cached copy, no render budget (defaults 1 s and 25%).
        "server": {"metrics_cache_ttl": 0, "max_render_percent": 100},
    }
    batches = label_set_batches(label_sets)
    with sidecar(config) as (proc, admin):
        process = psutil.Process(proc.pid)
        conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=120)
        # The render without span metrics (~390 lines of host, process and sidecar
        # metrics by prometheus_client, ~1.4 ms): the baseline each row's added
        # lines are measured over; its buffers count in the base RSS.
        empty = [scrape_once(conn) for _ in range(SMALL_RENDERS)]
        empty_s = statistics.median(t for t, _ in empty)
        empty_lines = empty[-1][1].count(b"\n")
        rss_empty = process.memory_info().rss
        post_batches(http_port, batches)
        wait_queue(admin)
        rss_held = process.memory_info().rss
        series = scrape_value(admin, "tickscope_spanmetrics_series")
        times: list[float] = []
        lines = 0
        cpu = cpu_seconds(process)
        for _ in range(rounds):
            elapsed, body = scrape_once(conn)
            times.append(elapsed)
            lines = body.count(b"\n")
        cpu_per_render = (cpu_seconds(process) - cpu) / rounds
        conn.close()
        rss_after = process.memory_info().rss
    median = statistics.median(times)
    return {
        "label_sets": series,
        "lines": lines,
        "renders": rounds,
        "render_ms": median * 1000,
        "render_p95_ms": percentile(times, 95) * 1000,
        "render_p99_ms": percentile(times, 99) * 1000,
        "render_cpu_ms": cpu_per_render * 1000,
        "us_per_line": median / lines * 1e6,
        "empty_ms": empty_s * 1000,
        "empty_lines": empty_lines,
        # The cost of the lines the label sets add, over the empty render.
        "us_per_added_line": (median - empty_s) / (lines - empty_lines) * 1e6,
        "rss_empty_mib": rss_empty / 2**20,
        "rss_mib": rss_held / 2**20,
        "rss_after_scrape_mib": rss_after / 2**20,
        "kb_per_label_set": (rss_held - rss_empty) / 1000 / series if series else float("nan"),
    }


def metrics_scaling(
    label_sets: tuple[int, ...] = (100, 1000, 10000, 40000, 50000), rounds: int = 5
) -> list[dict[str, Any]]:
    def renders(n: int) -> int:
        if n <= 1000:
            return SMALL_RENDERS
        return rounds if n <= 10000 else max(2, rounds // 2)

    return [metrics_run(n, renders(n)) for n in label_sets]


# -- 3. footprint idle and at a span rate ----------------------------------------------


class PacedSender(threading.Thread):
    """Posts `rate` spans/s as an engine's BatchSpanProcessor would: batches of up to
    500 spans, evenly spaced, on one keep-alive connection."""

    def __init__(self, port: int, rate: int) -> None:
        super().__init__(daemon=True)
        self.batch = min(500, rate)
        self.interval = self.batch / rate
        self.bodies = make_batches(8, self.batch)
        self.port = port
        self.stop = threading.Event()
        self.sent = 0
        self.failed = 0

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {"Content-Type": "application/x-protobuf"}
        due = time.perf_counter()
        i = 0
        while not self.stop.is_set():
            conn.request("POST", "/v1/traces", body=self.bodies[i % 8], headers=headers)
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                self.sent += self.batch
            else:
                self.failed += 1
            i += 1
            due += self.interval
            delay = due - time.perf_counter()
            if delay > 0:
                self.stop.wait(delay)
        conn.close()


def rss_kinds(pid: int) -> dict[str, float]:
    """The process's RSS by kind (/proc/PID/status), MiB: anonymous memory (the Python
    heap, native allocations, thread stacks) and file-backed pages (the interpreter
    and the extension modules' shared libraries, as far as they were touched)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("RssAnon", "RssFile", "RssShmem"):
            fields[name] = int(value.split()[0]) / 1024
    return {"anonymous": fields["RssAnon"], "file": fields["RssFile"] + fields["RssShmem"]}


# What the sidecar imports, in the order it first imports them, grouped by what
# pulls each in (tickscope's own modules after their dependencies).
IMPORT_STEPS = (
    ("asyncio, ssl", "asyncio, ssl"),
    ("pydantic", "pydantic"),
    ("PyYAML", "yaml"),
    ("prometheus_client (with http.server, wsgiref)", "prometheus_client"),
    ("aiohttp (its package imports the client too)", "aiohttp.web"),
    ("protobuf and the OTLP classes", "opentelemetry.proto.collector.trace.v1.trace_service_pb2, "
     "opentelemetry.proto.collector.metrics.v1.metrics_service_pb2"),
    ("psutil", "psutil"),
    ("tickscope's sidecar modules", "tickscope.agent.cli, tickscope.agent.app"),
    ("h2 (the gRPC receiver)", "tickscope.receivers.otlp_grpc"),
)  # fmt: skip

_IMPORT_PROBE = """
import importlib, json, sys
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
steps = json.loads(sys.argv[1])
out = [["Python 3 interpreter", rss()]]
for label, modules in steps:
    before = rss()
    for name in modules.split(", "):
        importlib.import_module(name)
    out.append([label, rss() - before])
print(json.dumps(out))
"""


def import_costs() -> list[tuple[str, float]]:
    """RSS each step of the sidecar's imports adds, MiB, in a fresh interpreter."""
    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROBE, json.dumps(IMPORT_STEPS)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return [(label, mib) for label, mib in json.loads(result.stdout)]


def compile_sources() -> None:
    """Byte-compile tickscope's source folders, as `pip install` does for the image.

    From a checkout with PYTHONDONTWRITEBYTECODE set (as here and in CI), every module
    would be compiled from source at each start, and the compiler's transient memory
    stays in the heap's high-water mark: 1.1-1.6 MB more RSS than the installed
    sidecar holds (measured both ways). The .pyc files go to __pycache__ (gitignored).
    """
    for folder in ("agent", "exporters"):
        compileall.compile_dir(str(ROOT / folder), quiet=1)


def footprint(
    rates: tuple[int, ...] = (100, 1000, 10000), idle_seconds: float = 30.0, seconds: float = 12.0
) -> dict[str, Any]:
    compile_sources()
    http_port, grpc_port = free_port(), free_port()
    # The default configuration; only the receivers' ports are free ones.
    config = {"receiver": {"http": {"port": http_port}, "grpc": {"port": grpc_port}}}
    with sidecar(config) as (proc, admin):
        process = psutil.Process(proc.pid)
        conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=30)
        for _ in range(50):
            conn.request("GET", "/metrics")
            conn.getresponse().read()
        conn.close()
        time.sleep(2.5)  # past one collection after the scrapes
        default_rss = process.memory_info().rss
        kinds = rss_kinds(proc.pid)
        cpu, started = cpu_seconds(process), time.perf_counter()
        time.sleep(idle_seconds)
        idle = {
            "rate": 0,
            "sent_per_second": 0.0,
            "millicores": (cpu_seconds(process) - cpu) / (time.perf_counter() - started) * 1000,
            "rss_mib": process.memory_info().rss / 2**20,
        }
        points = [idle]
        for rate in rates:
            sender = PacedSender(http_port, rate)
            sender.start()
            time.sleep(1.5)  # the first batches in
            sent, cpu, started = sender.sent, cpu_seconds(process), time.perf_counter()
            time.sleep(seconds)
            elapsed = time.perf_counter() - started
            used, got = cpu_seconds(process) - cpu, sender.sent - sent
            sender.stop.set()
            sender.join(30)
            points.append(
                {
                    "rate": rate,
                    "sent_per_second": got / elapsed,
                    "millicores": used / elapsed * 1000,
                    "rss_mib": process.memory_info().rss / 2**20,
                    "failed_requests": sender.failed,
                }
            )
            time.sleep(1.0)
    return {
        "default_rss_mib": default_rss / 2**20,
        "default_rss_mb": default_rss / 1e6,
        "default_rss_kinds_mib": kinds,
        "imports": import_costs(),
        "idle_seconds": idle_seconds,
        "seconds": seconds,
        "points": points,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        ingest = ingest_scaling(seconds=2.0, ceiling_seconds=1.0)
        metrics = metrics_scaling((100, 1000, 5000), rounds=3)
        foot = footprint(idle_seconds=5.0, seconds=3.0)
    else:
        ingest, metrics, foot = ingest_scaling(), metrics_scaling(), footprint()
    for r in ingest["runs"]:
        print(
            f"OTLP/{r['protocol']:<4} {r['connections']:>2} connections: {r['spans_per_second']:>9,.0f} spans/s"
            f" = {r['ratio']:5.1%} of the ceiling ({r['ceiling']:,.0f});  CPU {r['cpu_cores']:.2f} cores"
            f"  p50 {r['p50_ms']:.1f} p95 {r['p95_ms']:.1f} p99 {r['p99_ms']:.1f} ms  RSS {r['rss_mib']:.0f} MiB"
        )
    print(f"span metrics reconcile: {ingest['reconcile']}")
    for m in metrics:
        print(
            f"{m['label_sets']:>7,.0f} label sets {m['lines']:>9,} lines: /metrics {m['render_ms']:8.1f} ms"
            f" ({m['us_per_line']:.2f} µs/line)  RSS {m['rss_mib']:.0f} MiB ({m['kb_per_label_set']:.1f} KB/label set)"
        )
    print(f"default-config RSS {foot['default_rss_mb']:.1f} MB")
    for p in foot["points"]:
        print(
            f"{p['rate']:>6} spans/s (sent {p['sent_per_second']:,.0f}/s): {p['millicores']:6.1f} millicores"
            f"  RSS {p['rss_mib']:.0f} MiB"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
