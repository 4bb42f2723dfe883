"""A test engine that runs until it is killed: `shim.configure`, then real async
ccxt polling the exchange simulator, `--concurrency` calls at a time, as a
market-data loop does, paced to `--rate` calls a second. Failed calls are counted
and the loop goes on.

The marker argument is only there for the sidecar's engine collector to find
this process by its command line. Every second it prints one JSON line with the
calls made and failed so far.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))

from exchange_simulator import point_at
from shim_engine import config

from tickscope import shim


async def poll(url: str, concurrency: int, rate: float) -> None:
    import ccxt.async_support as ccxt

    exchange = point_at(ccxt.binance(config()), url)
    calls = failed = 0
    last_report = started = time.monotonic()
    try:
        await exchange.load_markets()
        while True:
            # Pacing against the start keeps the rate when a round runs late.
            ahead = started + calls / rate - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
            results = await asyncio.gather(
                *(exchange.fetch_ticker("BTC/USDT") for _ in range(concurrency)),
                return_exceptions=True,
            )
            calls += len(results)
            failed += sum(isinstance(r, Exception) for r in results)
            if time.monotonic() - last_report >= 1:
                last_report = time.monotonic()
                print(json.dumps({"calls": calls, "failed": failed}), flush=True)
    finally:
        await exchange.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("marker")
    parser.add_argument("--exchange-url", required=True)
    parser.add_argument("--service", default="polling-engine")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rate", type=float, default=400.0, help="calls per second")
    args = parser.parse_args()
    # 400 calls a second is 24,000 request weight a minute, four times Binance's 6,000:
    # with the real budget, ExchangeRateLimitNearlyExhausted (critical) fires within
    # ~14 s of each wall-clock minute and inhibits the alerts the tests wait for. The
    # tests are about errors and a dead engine, so the budget is set out of reach.
    shim.configure(
        service_name=args.service,
        schedule_delay_millis=200,
        export_timeout=1.0,
        rate_limits={"binance": 10_000_000},
    )
    asyncio.run(poll(args.exchange_url, args.concurrency, args.rate))


if __name__ == "__main__":
    main()
