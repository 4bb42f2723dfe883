"""Issue 11, defect 9: /healthz latency while clients flood GET /metrics and never read.

One sidecar (host collector on, the defaults otherwise, receivers on free ports), its
span metrics filled to the default 2,000-series limit first (distinct span names), so a
/metrics is a few MB and a render costs what it does in production. First
/healthz is polled for a few seconds with nothing else going on; then 200 clients each
pipeline 50 GET /metrics (34 bytes each: 340,000 bytes in all, the issue's figure) with a
4 KiB receive window and never read, and /healthz is polled the same way. Printed side by
side: /healthz latency p50/p99/max, the largest loop_lag_seconds it reported, and how
many probes were not 200 (or timed out). The goal: the flood column within a few ms of the
quiet one, and loop lag far below server.liveness_max_loop_lag (5 s).

    .venv/bin/python bench/bench_metrics_flood.py [--clients 200] [--pipelined 50] [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import free_port, percentile, sidecar
from otlp_batches import make_request

REQUEST = b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n"


@dataclass
class Probes:
    latencies: list[float] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)
    failures: int = 0

    def row(self, what: str) -> list[str]:
        if not self.latencies:
            return [what, "-", "-", "-", "-", str(self.failures)]
        return [
            what,
            f"{percentile(self.latencies, 50) * 1000:.1f}",
            f"{percentile(self.latencies, 99) * 1000:.1f}",
            f"{max(self.latencies) * 1000:.1f}",
            f"{max(self.lags, default=0.0):.3f}",
            str(self.failures),
        ]


def poll_healthz(port: int, seconds: float) -> Probes:
    probes = Probes()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.monotonic()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=20) as r:
                body = json.loads(r.read())
            probes.latencies.append(time.monotonic() - started)
            probes.lags.append(float(body["loop_lag_seconds"]))
        except (OSError, urllib.error.HTTPError):
            probes.failures += 1
        time.sleep(0.02)
    return probes


def flood(port: int, clients: int, pipelined: int) -> tuple[list[socket.socket], int]:
    sockets: list[socket.socket] = []
    sent = 0
    for _ in range(clients):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        payload = REQUEST * pipelined
        sock.sendall(payload)
        sent += len(payload)
        sockets.append(sock)
    return sockets, sent


def fill_span_metrics(otlp_port: int, names: int) -> None:
    """Spans with `names` distinct names, so span metrics reach their series limit."""
    for seed in range(4):
        body = make_request(names, seed, distinct_names=names).SerializeToString()
        request = urllib.request.Request(
            f"http://127.0.0.1:{otlp_port}/v1/traces",
            data=body,
            headers={"Content-Type": "application/x-protobuf"},
        )
        with urllib.request.urlopen(request, timeout=30) as r:
            r.read()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--pipelined", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--span-names", type=int, default=2000)
    args = parser.parse_args()
    otlp_port = free_port()
    config = {
        "receiver": {"http": {"port": otlp_port}, "grpc": {"port": free_port()}},
        "host": {"interval": "1s"},
    }
    with sidecar(config) as (_, port):
        fill_span_metrics(otlp_port, args.span_names)
        time.sleep(1.5)  # the first collections done, the spans processed
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
            size = len(r.read())
        print(f"/metrics: {size} bytes")
        quiet = poll_healthz(port, args.seconds)
        sockets, sent = flood(port, args.clients, args.pipelined)
        try:
            flooded = poll_healthz(port, args.seconds)
        finally:
            for sock in sockets:
                sock.close()
    print(
        f"/healthz every 20 ms for {args.seconds:g} s; flood: {args.clients} clients x "
        f"{args.pipelined} pipelined GET /metrics = {sent} bytes, never read"
    )
    header = ["", "p50 ms", "p99 ms", "max ms", "loop lag max s", "failed"]
    rows = [header, quiet.row("quiet"), flooded.row("under flood")]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        print("  ".join(cell.rjust(w) for cell, w in zip(r, widths, strict=True)))


if __name__ == "__main__":
    main()
