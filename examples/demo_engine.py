"""A small, realistic trading loop, instrumented with tickscope's shim.

What it does, over and over: polls a ticker through a short-lived cache, checks
the order book's spread, runs a risk check, places a limit order a little away
from the market, and cancels it a moment later; now and then it fetches its
balance and its open orders; beside it, it watches each symbol's ticker over the
websocket (ccxt.pro). REST calls go through the exchange's unified API, so every
call becomes a `ccxt.<method>` span; websocket updates become metrics (updates,
age, gaps, reconnects). The engine's own steps use `shim.traced`, its cache
`shim.cache_metrics`, its order queue `shim.queue_gauge`, its main loop
`shim.heartbeat` (the sidecar's /engine/healthz).

The two lines that matter are `import shim` and `shim.configure(...)`.

    python examples/demo_engine.py --exchange-url http://127.0.0.1:PORT
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import signal
import time
from typing import Any

from exchange_simulator import point_at

from tickscope import shim

log = logging.getLogger("demo_engine")


class TickerCache:
    """Tickers kept for `ttl` seconds: most polls are answered without a call."""

    def __init__(self, exchange: Any, ttl: float) -> None:
        self.exchange = exchange
        self.ttl = ttl
        self._entries: dict[str, tuple[float, dict[str, Any]]] = {}
        self.metrics = shim.cache_metrics("tickers")

    async def get(self, symbol: str) -> dict[str, Any]:
        entry = self._entries.get(symbol)
        if entry is not None and time.monotonic() - entry[0] < self.ttl:
            self.metrics.hit()
            return entry[1]
        self.metrics.miss()
        ticker: dict[str, Any] = await self.exchange.fetch_ticker(symbol)
        self._entries[symbol] = (time.monotonic(), ticker)
        return ticker


@shim.traced("risk.check")
async def risk_check(balance_usdt: float, price: float, amount: float) -> bool:
    """Never commit more than 2% of the quote balance to one order."""
    await asyncio.sleep(0)  # stands for a call to the engine's risk service
    return price * amount <= 0.02 * balance_usdt


class Engine:
    def __init__(self, exchange: Any, symbols: list[str], period: float) -> None:
        self.exchange = exchange
        self.symbols = symbols
        self.period = period
        self.tickers = TickerCache(exchange, ttl=1.0)
        self.pending: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        shim.queue_gauge("pending_cancels", self.pending.qsize)
        self.balance_usdt = 0.0
        self.ws_prices: dict[str, float] = {}
        self.running = True

    async def refresh_balance(self) -> None:
        balance = await self.exchange.fetch_balance()
        self.balance_usdt = float(balance.get("free", {}).get("USDT") or 0.0)

    async def step(self, symbol: str) -> None:
        ticker = await self.tickers.get(symbol)
        book = await self.exchange.fetch_order_book(symbol, 10)
        with shim.traced("strategy.step", {"trading.symbol": symbol}):
            if not book["bids"] or not book["asks"]:
                return
            bid, ask = book["bids"][0][0], book["asks"][0][0]
            spread = (ask - bid) / ((ask + bid) / 2)
            if spread > 0.01:
                return  # too wide to quote
            side = random.choice(("buy", "sell"))
            last = float(ticker.get("last") or (bid + ask) / 2)
            price = last * (0.99 if side == "buy" else 1.01)
            amount = round(50.0 / price, 5)
        if not await risk_check(self.balance_usdt, price, amount):
            return
        order = await self.exchange.create_order(symbol, "limit", side, amount, price)
        await self.pending.put((order["id"], symbol))

    async def cancel_pending(self) -> None:
        while not self.pending.empty():
            order_id, symbol = self.pending.get_nowait()
            try:
                await self.exchange.cancel_order(order_id, symbol)
            except Exception as exc:  # already filled, or the exchange is unhappy
                log.info("cancel failed: %s", type(exc).__name__)

    async def rebalance(self, symbol: str, side: str) -> None:
        """A small market order now and then, bought and sold back in turn: inventory
        kept near flat (and the fills' slippage measured)."""
        ticker = await self.tickers.get(symbol)
        last = float(ticker.get("last") or 0.0)
        if last > 0:
            await self.exchange.create_order(symbol, "market", side, round(20.0 / last, 5))

    async def watch(self, symbol: str) -> None:
        """Market data over the websocket (ccxt.pro): the prices the strategy would
        quote from. A dropped connection fails the pending watch with NetworkError;
        the next call reconnects and resubscribes."""
        import ccxt.pro as ccxtpro

        while self.running:
            try:
                ticker = await self.exchange.watch_ticker(symbol)
                self.ws_prices[symbol] = float(ticker.get("last") or 0.0)
            except ccxtpro.NetworkError as exc:
                log.info("websocket for %s dropped (%s): reconnecting", symbol, type(exc).__name__)
                await asyncio.sleep(0.5)
            except ccxtpro.BaseError as exc:
                log.warning("websocket error for %s: %s", symbol, type(exc).__name__)
                await asyncio.sleep(1.0)

    async def run(self) -> None:

        await self.exchange.load_markets()
        await self.refresh_balance()
        watchers = [asyncio.create_task(self.watch(symbol)) for symbol in self.symbols]
        try:
            await self.trade()
        finally:
            for task in watchers:
                task.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)

    async def trade(self) -> None:
        import ccxt.async_support as ccxt

        rounds = 0
        while self.running:
            # /engine/healthz turns 503 (and Kubernetes restarts the engine) when this
            # loop stops turning, though the process is still up.
            shim.heartbeat("main")
            started = time.monotonic()
            try:
                for symbol in self.symbols:
                    await self.step(symbol)
                if rounds % 5 == 4:
                    await self.exchange.fetch_open_orders(self.symbols[0])
                    await self.cancel_pending()
                if rounds % 20 == 19:
                    await self.refresh_balance()
                if rounds % 40 == 39:
                    await self.rebalance(self.symbols[0], "buy" if rounds % 80 == 39 else "sell")
            except ccxt.DDoSProtection:  # 429/418; RateLimitExceeded is a subclass
                log.warning("rate limited: backing off")
                await asyncio.sleep(2.0)
            except ccxt.BaseError as exc:
                log.warning("exchange error: %s", type(exc).__name__)
                await asyncio.sleep(0.5)
            rounds += 1
            await asyncio.sleep(max(0.0, self.period - (time.monotonic() - started)))
        await self.cancel_pending()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exchange-url", required=True, help="base URL of the exchange simulator")
    parser.add_argument("--symbols", default="BTC/USDT,ETH/USDT")
    parser.add_argument("--period", type=float, default=0.25, help="seconds per round")
    parser.add_argument(
        "--metric-export-interval", type=float, default=10.0, help="seconds between metric exports"
    )
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    # Spans and metrics go to the sidecar on 127.0.0.1 (or where OTEL_EXPORTER_OTLP_* point);
    # every ccxt exchange created from here on is instrumented.
    # account_metrics: the demo's own (simulated) balances, open orders and fills as
    # trading_* metrics; off by default, since they are an account's financial figures.
    shim.configure(
        service_name="demo-engine",
        service_version="1.0.0",
        account_metrics=True,
        metric_export_interval_millis=round(args.metric_export_interval * 1000),
    )

    # ccxt.pro's exchange: the REST API of ccxt.async_support, and websockets (watch_*).
    import ccxt.pro as ccxtpro

    exchange = ccxtpro.binance(
        {
            "apiKey": "demo-api-key",
            "secret": "demo-secret",
            "enableRateLimit": False,
            "options": {
                "fetchMarkets": {"types": ["spot"]},
                "fetchCurrencies": False,
                "fetchMargins": False,
            },
        }
    )
    point_at(exchange, args.exchange_url)
    engine = Engine(exchange, args.symbols.split(","), args.period)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: setattr(engine, "running", False))
    try:
        await engine.run()
    finally:
        await exchange.close()
        shim.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
