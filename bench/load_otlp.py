"""OTLP load generator, run as its own process by bench_otlp.py.

Posts pre-encoded batches as fast as the server takes them over `connections`
concurrent connections for `seconds`, and prints one JSON line: requests by
status, spans sent and accepted, and the latency of every accepted request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from otlp_batches import make_batches


async def http_load(url: str, batches: list[bytes], connections: int, seconds: float) -> dict:
    import aiohttp

    latencies: list[float] = []
    statuses: dict[str, int] = {}
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=connections)
    headers = {"Content-Type": "application/x-protobuf"}
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker(offset: int) -> None:
            i = offset
            while time.monotonic() < deadline:
                body = batches[i % len(batches)]
                i += connections
                started = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as r:
                    await r.read()
                    status = str(r.status)
                statuses[status] = statuses.get(status, 0) + 1
                if status == "200":
                    latencies.append(time.perf_counter() - started)
                else:
                    await asyncio.sleep(0.01)

        await asyncio.gather(*(worker(k) for k in range(connections)))
    return {"latencies": latencies, "statuses": statuses}


async def grpc_load(target: str, batches: list[bytes], connections: int, seconds: float) -> dict:
    import grpc

    latencies: list[float] = []
    statuses: dict[str, int] = {}
    deadline = time.monotonic() + seconds
    channels = [grpc.aio.insecure_channel(target) for _ in range(connections)]
    calls = [
        ch.unary_unary(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            request_serializer=None,
            response_deserializer=None,
        )
        for ch in channels
    ]

    async def worker(k: int) -> None:
        i = k
        while time.monotonic() < deadline:
            body = batches[i % len(batches)]
            i += connections
            started = time.perf_counter()
            try:
                await calls[k](body, timeout=10)
                status = "OK"
            except grpc.aio.AioRpcError as exc:
                status = exc.code().name
            statuses[status] = statuses.get(status, 0) + 1
            if status == "OK":
                latencies.append(time.perf_counter() - started)
            else:
                await asyncio.sleep(0.01)

    await asyncio.gather(*(worker(k) for k in range(connections)))
    for ch in channels:
        await ch.close()
    return {"latencies": latencies, "statuses": statuses}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("protocol", choices=["http", "grpc"])
    parser.add_argument("target")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--batches", type=int, default=16)
    parser.add_argument("--spans", type=int, default=512)
    parser.add_argument("--signal", choices=["traces", "metrics"], default="traces")
    args = parser.parse_args()
    if args.signal == "metrics":
        from otlp_batches import make_metrics_request

        batches = [make_metrics_request(args.spans, seed) for seed in range(args.batches)]
    else:
        batches = make_batches(args.batches, args.spans)
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.readline()  # start together with the measurement
    load = http_load if args.protocol == "http" else grpc_load
    result = asyncio.run(load(args.target, batches, args.connections, args.seconds))
    result["spans_per_request"] = args.spans
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
