"""Issue 15's engine-side scaling run: the shim's overhead with 1 and 8 engine threads.

As bench_shim.py's "wrapper alone" run (ccxt's HTTP session stubbed in memory, one
TracerProvider with a BatchSpanProcessor and a no-op exporter), but with the calls
made from 1 or from 8 threads at once, each thread with its own exchanges: an
uninstrumented fetch_ticker, the shim-instrumented one, and the uninstrumented call
inside a bare SDK span (the baseline). The variants alternate in rounds. Reported per
variant: wall time per call (median, p95, p99, as each thread sees it), the engine's
CPU per call (all threads), and calls/s in all. Then the export path: the stock
OpenTelemetry OTLP encoder's CPU per span (bench_shim.child_export), next to
tickscope's own encoder when the shim has one (tickscope.shim.fastexport).

    .venv/bin/python bench/bench_scaling_shim.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_shim import (  # bench_shim puts examples/ on the path
    ROOT,
    run_child,
    shim_shaped_batch,
    stubbed_exchanges,
)
from common import percentile


def child_threads(url: str, threads: int, calls: int, rounds: int) -> dict[str, Any]:
    """`calls` calls per variant in all, spread over `threads` threads."""
    from opentelemetry.trace import SpanKind

    provider, tracer, exchange = stubbed_exchanges(url)

    def variants() -> dict[str, Callable[[], Any]]:
        plain, wrapped = exchange(False), exchange(True)

        def bare() -> None:
            with tracer.start_as_current_span("ccxt.fetch_ticker", kind=SpanKind.CLIENT):
                plain.fetch_ticker("BTC/USDT")

        return {
            "plain": lambda: plain.fetch_ticker("BTC/USDT"),
            "wrapped": lambda: wrapped.fetch_ticker("BTC/USDT"),
            "bare_span": bare,
        }

    per_thread = [variants() for _ in range(threads)]
    names = list(per_thread[0])
    for fns in per_thread:
        for fn in fns.values():
            for _ in range(50):
                fn()
    times: dict[str, list[float]] = {k: [] for k in names}
    cpu: dict[str, float] = dict.fromkeys(names, 0.0)
    wall: dict[str, float] = dict.fromkeys(names, 0.0)
    block = max(1, calls // (rounds * threads))
    lock = threading.Lock()

    def worker(fn: Callable[[], Any], out: list[float]) -> None:
        local = []
        for _ in range(block):
            t = time.perf_counter()
            fn()
            local.append(time.perf_counter() - t)
        with lock:
            out.extend(local)

    for _ in range(rounds):
        for name in names:
            workers = [
                threading.Thread(target=worker, args=(fns[name], times[name])) for fns in per_thread
            ]
            cpu_start, wall_start = time.process_time(), time.perf_counter()
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            cpu[name] += time.process_time() - cpu_start
            wall[name] += time.perf_counter() - wall_start
    provider.shutdown()
    return {
        name: {
            "median_us": statistics.median(times[name]) * 1e6,
            "p95_us": percentile(times[name], 95) * 1e6,
            "p99_us": percentile(times[name], 99) * 1e6,
            "cpu_us_per_call": cpu[name] / len(times[name]) * 1e6,
            "calls_per_second": len(times[name]) / wall[name],
            "calls": len(times[name]),
        }
        for name in names
    }


def child_fast_export(spans: int) -> dict[str, Any]:
    """tickscope.shim.fastexport's encoder on the same spans as child_export, if the
    shim has one: its CPU per span, or why it was not measured."""

    try:
        from tickscope.shim import fastexport  # type: ignore[attr-defined,unused-ignore]

        encode: Callable[[Any], Any] = fastexport.SpanEncoder().encode
    except (ImportError, AttributeError) as exc:
        return {"encode_per_span": None, "note": f"not available ({exc})"}
    batch = shim_shaped_batch()
    rounds = max(1, spans // 512)
    started = time.process_time()
    for _ in range(rounds):
        out = encode(batch)
        if hasattr(out, "SerializePartialToString"):
            out.SerializePartialToString()
    return {"encode_per_span": (time.process_time() - started) / (rounds * 512), "note": ""}


def run_self(*args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, timeout=600
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


SIMULATOR = ROOT / "examples" / "exchange_simulator.py"


def simulator() -> tuple[subprocess.Popen[str], str]:
    sim = subprocess.Popen(
        [sys.executable, str(SIMULATOR), "--port", "0", "--volatility", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert sim.stdout is not None
    return sim, sim.stdout.readline().strip().rsplit(" ", 1)[1]


def shim_scaling(
    threads: tuple[int, ...] = (1, 8), calls: int = 4000, rounds: int = 5, export_spans: int = 51200
) -> dict[str, Any]:
    sim, url = simulator()
    try:
        by_threads = {
            str(n): run_self("threads", url, str(n), str(calls), str(rounds)) for n in threads
        }
    finally:
        sim.terminate()
        sim.wait(10)
    stock = run_child("export", "-", "-", str(export_spans))
    fast = run_self("fast", str(export_spans))
    return {
        "threads": by_threads,
        "export": {
            "stock_us_per_span": stock["encode_per_span"] * 1e6,
            "fast_us_per_span": (
                fast["encode_per_span"] * 1e6 if fast["encode_per_span"] is not None else None
            ),
            "fast_note": fast["note"],
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.child:
        if args.child[0] == "threads":
            _, url, n, calls, rounds = args.child
            result = child_threads(url, int(n), int(calls), int(rounds))
        else:
            result = child_fast_export(int(args.child[1]))
        print(json.dumps(result))
        return 0
    r = shim_scaling(calls=800, rounds=2, export_spans=5120) if args.quick else shim_scaling()
    for n, variants in r["threads"].items():
        base = variants["plain"]["cpu_us_per_call"]
        for name, v in variants.items():
            print(
                f"{n} thread(s) {name:<10} median {v['median_us']:7.1f} µs  p99 {v['p99_us']:7.1f} µs"
                f"  CPU {v['cpu_us_per_call']:6.1f} µs/call (+{v['cpu_us_per_call'] - base:5.1f})"
                f"  {v['calls_per_second']:7.0f} calls/s"
            )
    e = r["export"]
    print(
        f"export encoding: stock {e['stock_us_per_span']:.1f} µs/span; tickscope "
        + (f"{e['fast_us_per_span']:.1f} µs/span" if e["fast_us_per_span"] else e["fast_note"])
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
