"""The websocket metrics of tickscope.shim.ccxt_pro: unmodified ccxt.pro binance
against the exchange simulator's websockets, and the pure parts on a stand-in
exchange with injected clocks.

Every test has its own MeterProvider with an in-memory reader (so its own
instruments, symbol limits and counts), its own simulator on 127.0.0.1 where it
needs one, and closes every exchange and simulator it started. Counts are exact:
a simulator stream at rate 0 sends only what `push` asks for, and what ccxt.pro
returned is compared with what was counted.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import ccxt
import ccxt.async_support as ccxt_async
import ccxt.pro as ccxtpro
import pytest
from exchange_simulator import BinanceSimulator
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from helpers.aio import run, until
from helpers.sidecar import StartSidecar, sample_value
from helpers.watcher import Watcher
from tickscope.shim import ccxt_pro
from tickscope.shim.ccxt_pro import instrument_pro, is_pro, is_pro_instrumented, uninstrument_pro

BTC_TICKER = "btcusdt@miniTicker"  # what watch_ticker subscribes to
ETH_TICKER = "ethusdt@miniTicker"
API_KEY = "CANARYKEY-shimws-5b1e"
SECRET = "CANARYSECRET-shimws-0c7d"
OVERFLOW = "otel.metric.overflow"


class Metrics:
    """An SDK MeterProvider read in memory: points by metric name and attributes."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[self.reader])

    def collect(self) -> dict[str, dict[frozenset[tuple[str, Any]], Any]]:
        found: dict[str, dict[frozenset[tuple[str, Any]], Any]] = {}
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                assert scope.scope.name == "tickscope.shim.ccxt_pro"
                for metric in scope.metrics:
                    points = found.setdefault(metric.name, {})
                    for point in metric.data.data_points:
                        points[frozenset(point.attributes.items())] = point
        return found

    def values(self, name: str) -> dict[frozenset[tuple[str, Any]], float]:
        return {key: point.value for key, point in self.collect().get(name, {}).items()}

    def updates(self) -> dict[frozenset[tuple[str, Any]], float]:
        return self.values("exchange.ws.updates")

    def ages(self) -> dict[frozenset[tuple[str, Any]], float]:
        return self.values("exchange.ws.update.age")


def key(method: str, symbol: str | None = None, **extra: Any) -> frozenset[tuple[str, Any]]:
    attributes: dict[str, Any] = {"exchange": "binance", "method": method, **extra}
    if symbol is not None:
        attributes["symbol"] = symbol
    return frozenset(attributes.items())


class Clock:
    """time.time, unless the test holds it at `value`."""

    def __init__(self) -> None:
        self.value: float | None = None

    def __call__(self) -> float:
        return time.time() if self.value is None else self.value


@contextmanager
def metrics() -> Iterator[Metrics]:
    found = Metrics()
    try:
        yield found
    finally:
        found.provider.shutdown()


@asynccontextmanager
async def session(
    meter: Metrics, ws_rate: float = 0.0, **options: Any
) -> AsyncIterator[tuple[BinanceSimulator, Any]]:
    """A simulator in this event loop and an instrumented ccxt.pro binance pointed at it."""
    async with BinanceSimulator(seed=5, ws_rate=ws_rate) as sim:
        exchange = sim.point(ccxtpro.binance(sim.ccxt_config(api_key=API_KEY, secret=SECRET)))
        assert instrument_pro(exchange, meter.provider, **options)
        try:
            await exchange.load_markets()
            yield sim, exchange
        finally:
            await exchange.close()


# -- against the simulator -------------------------------------------------------------


def test_every_update_is_counted_once_per_stream() -> None:
    async def main() -> None:
        with metrics() as meter:
            async with session(meter) as (sim, exchange):
                tickers = Watcher(lambda: exchange.watch_ticker("BTC/USDT"))
                trades = Watcher(lambda: exchange.watch_trades("ETH/USDT"))
                try:
                    await until(lambda: sim.subscribers(BTC_TICKER) == 1, what="tickers")
                    await until(lambda: sim.subscribers("ethusdt@trade") == 1, what="trades")
                    sim.push(BTC_TICKER, count=25, interval=0.01)
                    sim.push("ethusdt@trade", count=7, interval=0.01)
                    await until(lambda: tickers.count == 25 and trades.count == 7)
                    await asyncio.sleep(0.1)  # nothing more comes: the rate is 0
                    # watch_ticker calls watch_tickers, and watch_trades
                    # watch_trades_for_symbols: each update counts once, as the
                    # engine's call.
                    assert meter.updates() == {
                        key("watch_ticker", "BTC/USDT"): 25,
                        key("watch_trades", "ETH/USDT"): 7,
                    }
                    assert not tickers.errors and not trades.errors
                finally:
                    await tickers.stop()
                    await trades.stop()

    run(main())


def test_order_books_candles_and_many_symbol_watches() -> None:
    async def main() -> None:
        clock = Clock()
        with metrics() as meter:
            async with session(meter, clock=clock) as (sim, exchange):
                books = Watcher(lambda: exchange.watch_order_book("BTC/USDT"))
                candles = Watcher(lambda: exchange.watch_ohlcv("ETH/USDT", "1m"))
                many = Watcher(lambda: exchange.watch_tickers(["SOL/USDT", "BNB/USDT"]))
                try:
                    streams = ("btcusdt@depth@100ms", "ethusdt@kline_1m")
                    streams += ("solusdt@miniTicker", "bnbusdt@miniTicker")
                    await until(lambda: all(sim.subscribers(s) == 1 for s in streams))
                    # One stream after the other: two tickers arriving together would
                    # be one return of watch_tickers.
                    for n, stream in enumerate(streams[1:]):
                        sim.push(stream, count=4, interval=0.01)
                        await until(lambda n=n: candles.count == 4 and many.count == 4 * max(n, 0))
                    sim.push(streams[0], count=6, interval=0.01)
                    # The first diff may come before the REST snapshot: the book is
                    # returned once per diff after it.
                    await until(lambda: books.count >= 5)
                    await asyncio.sleep(0.1)
                    assert meter.updates() == {
                        key("watch_order_book", "BTC/USDT"): books.count,
                        key("watch_ohlcv", "ETH/USDT"): 4,
                        key("watch_tickers", "SOL/USDT"): 4,
                        key("watch_tickers", "BNB/USDT"): 4,
                    }
                    # Ages: the book's and the tickers' own timestamps; candles carry
                    # their open time, so theirs is the arrival.
                    clock.value = time.time() + 60
                    ages = meter.ages()
                    book = books.results[-1][1]
                    assert ages[key("watch_order_book", "BTC/USDT")] == pytest.approx(
                        clock.value - book["timestamp"] / 1000, abs=1e-6
                    )
                    arrived = candles.results[-1][0]
                    assert (
                        60
                        <= ages[key("watch_ohlcv", "ETH/USDT")]
                        < 60 + time.time() - arrived + 0.1
                    )
                    sol = [
                        t for _, r in many.results for t in r.values() if t["symbol"] == "SOL/USDT"
                    ]
                    assert ages[key("watch_tickers", "SOL/USDT")] == pytest.approx(
                        clock.value - sol[-1]["timestamp"] / 1000, abs=1e-6
                    )
                finally:
                    for watcher in (books, candles, many):
                        await watcher.stop()

    run(main())


def test_age_follows_an_injected_lag() -> None:
    async def main() -> None:
        clock = Clock()
        with metrics() as meter:
            async with session(meter, clock=clock) as (sim, exchange):
                tickers = Watcher(lambda: exchange.watch_ticker("BTC/USDT"))
                try:
                    await until(lambda: sim.subscribers(BTC_TICKER) == 1)
                    for n, lag in enumerate((3.0, 0.0, 7.5), start=1):
                        sim.set_lag(seconds=lag, stream=BTC_TICKER)
                        sim.push(BTC_TICKER)
                        await until(lambda n=n: tickers.count == n)
                        arrived, ticker = tickers.results[-1]
                        clock.value = arrived  # collected as it arrived
                        age = meter.ages()[key("watch_ticker", "BTC/USDT")]
                        assert age == pytest.approx(arrived - ticker["timestamp"] / 1000, abs=1e-6)
                        assert lag <= age < lag + 0.5
                finally:
                    await tickers.stop()

    run(main())


def test_age_grows_while_a_stream_is_paused_and_the_other_keeps_updating() -> None:
    async def main() -> None:
        clock = Clock()
        with metrics() as meter:
            async with session(meter, ws_rate=20, clock=clock) as (sim, exchange):
                btc = Watcher(lambda: exchange.watch_ticker("BTC/USDT"))
                eth = Watcher(lambda: exchange.watch_ticker("ETH/USDT"))
                try:
                    await until(lambda: btc.count >= 3 and eth.count >= 3)
                    sim.pause_streams(stream=BTC_TICKER)
                    await asyncio.sleep(0.2)  # what was on the way has arrived
                    paused_at = btc.count
                    clock.value = time.time()
                    before = meter.ages()
                    eth_before = eth.count
                    await until(lambda: eth.count >= eth_before + 6, what="ETH going on")
                    clock.value += 10
                    after = meter.ages()
                    assert btc.count == paused_at
                    btc_key, eth_key = (
                        key("watch_ticker", "BTC/USDT"),
                        key("watch_ticker", "ETH/USDT"),
                    )
                    assert after[btc_key] == pytest.approx(before[btc_key] + 10, abs=1e-6)
                    # ETH's newest update is newer than it was: its age grew less.
                    assert after[eth_key] < before[eth_key] + 10 - 0.1
                    assert meter.updates()[btc_key] == paused_at
                    sim.resume_streams(stream=BTC_TICKER)
                    await until(lambda: btc.count > paused_at, what="BTC again")
                    clock.value = None
                    assert meter.ages()[btc_key] < 1.0
                finally:
                    await btc.stop()
                    await eth.stop()

    run(main())


def test_reconnects_are_counted_after_forced_drops_and_the_drops_as_errors() -> None:
    async def main() -> None:
        with metrics() as meter:
            async with session(meter, ws_rate=20) as (sim, exchange):
                # Two streams: ccxt.pro binance opens one connection for each.
                tickers = Watcher(lambda: exchange.watch_ticker("BTC/USDT"))
                trades = Watcher(lambda: exchange.watch_trades("BTC/USDT"))
                try:
                    await until(lambda: tickers.count >= 2 and trades.count >= 2)
                    reconnects = meter.values("exchange.ws.reconnects")
                    assert reconnects == {frozenset({("exchange", "binance")}): 0}
                    for drop in (1, 2):
                        seen = (tickers.count, trades.count)
                        assert sim.drop_connections() == 2
                        await until(
                            lambda seen=seen: (
                                tickers.count > seen[0] + 1 and trades.count > seen[1] + 1
                            ),
                            what="updates after the reconnect",
                        )
                        reconnects = meter.values("exchange.ws.reconnects")
                        assert reconnects == {frozenset({("exchange", "binance")}): 2 * drop}
                    errors = meter.values("exchange.ws.errors")
                    assert errors == {
                        frozenset(
                            {
                                ("exchange", "binance"),
                                ("method", method),
                                ("error_type", "NetworkError"),
                            }
                        ): len(watcher.errors)
                        for method, watcher in (("watch_ticker", tickers), ("watch_trades", trades))
                    }
                    assert len(tickers.errors) >= 2 and len(trades.errors) >= 2
                    assert all(isinstance(e, ccxt.NetworkError) for _, e in tickers.errors)
                finally:
                    await tickers.stop()
                    await trades.stop()

    run(main())


def test_errors_are_counted_by_ccxt_class_without_their_message() -> None:
    async def main() -> None:
        with metrics() as meter:
            async with session(meter) as (_, exchange):
                for _ in range(2):
                    with pytest.raises(ccxt.BadSymbol):
                        await exchange.watch_ticker("NOPE/USDT")
                with pytest.raises(ccxt.BadSymbol):
                    await exchange.watch_order_book("NOPE/USDT")
                points = meter.collect()
                errors = {k: p.value for k, p in points["exchange.ws.errors"].items()}
                assert errors == {
                    frozenset(
                        {
                            ("exchange", "binance"),
                            ("method", "watch_ticker"),
                            ("error_type", "BadSymbol"),
                        }
                    ): 2,
                    frozenset(
                        {
                            ("exchange", "binance"),
                            ("method", "watch_order_book"),
                            ("error_type", "BadSymbol"),
                        }
                    ): 1,
                }
                assert "exchange.ws.updates" not in points
                text = repr(points)
                assert "NOPE" not in text and API_KEY not in text and SECRET not in text

    run(main())


def test_symbols_past_the_limit_share_one_overflow_series(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ccxt_pro.MAX_SYMBOLS_ENV, "2")

    async def main() -> None:
        clock = Clock()
        with metrics() as meter:
            async with session(meter, clock=clock) as (sim, exchange):
                symbols = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT"]
                watchers = []
                for symbol in symbols:  # one at a time: the first two get the labels
                    watchers.append(Watcher(lambda s=symbol: exchange.watch_ticker(s)))
                    stream = symbol.replace("/", "").lower() + "@miniTicker"
                    await until(lambda s=stream: sim.subscribers(s) == 1)
                    sim.push(stream, count=3, interval=0.01)
                    await until(lambda w=watchers[-1]: w.count == 3)
                try:
                    overflow = key("watch_ticker", **{OVERFLOW: True})
                    assert meter.updates() == {
                        key("watch_ticker", "BTC/USDT"): 3,
                        key("watch_ticker", "ETH/USDT"): 3,
                        overflow: 6,
                    }
                    # The overflow series' age is its newest update's.
                    clock.value = time.time() + 5
                    newest = max(w.results[-1][1]["timestamp"] for w in watchers[2:]) / 1000
                    assert meter.ages()[overflow] == pytest.approx(clock.value - newest, abs=1e-6)
                finally:
                    for watcher in watchers:
                        await watcher.stop()

    run(main())


def test_private_streams_count_what_the_simulator_sends() -> None:
    async def main() -> None:
        with metrics() as meter:
            async with session(meter) as (sim, exchange):
                orders = Watcher(lambda: exchange.watch_orders())
                balances = Watcher(lambda: exchange.watch_balance())
                try:
                    await until(lambda: sim.subscribers("userData") == 1, what="user data")
                    placed = await exchange.create_order("BTC/USDT", "limit", "buy", 0.01, 50_000)
                    await exchange.cancel_order(placed["id"], "BTC/USDT")
                    await until(
                        lambda: (
                            bool(orders.results)
                            and orders.results[-1][1][-1]["status"] == "canceled"
                        )
                    )
                    await until(lambda: balances.count >= 2)
                    await asyncio.sleep(0.2)
                    assert meter.updates() == {
                        # watch_orders() has no symbol argument: the order's symbol
                        key("watch_orders", "BTC/USDT"): orders.count,
                        key("watch_balance"): balances.count,
                    }
                    assert orders.count >= 2
                    assert meter.collect()["exchange.ws.reconnects"]  # the ws-api connection
                finally:
                    await orders.stop()
                    await balances.stop()

    run(main())


def test_un_watch_and_close_end_streams_but_keep_their_counts() -> None:
    async def main() -> None:
        with metrics() as meter:
            async with session(meter) as (sim, exchange):
                for symbol, stream in (("BTC/USDT", BTC_TICKER), ("ETH/USDT", ETH_TICKER)):
                    waiting = asyncio.ensure_future(exchange.watch_ticker(symbol))
                    await until(lambda s=stream: sim.subscribers(s) == 1)
                    sim.push(stream)
                    await waiting
                btc, eth = key("watch_ticker", "BTC/USDT"), key("watch_ticker", "ETH/USDT")
                assert set(meter.ages()) == {btc, eth}
                await exchange.un_watch_ticker("BTC/USDT")
                assert set(meter.ages()) == {eth}
                await exchange.close()
                assert meter.ages() == {}
                assert meter.updates() == {btc: 1, eth: 1}

    run(main())


def test_only_ccxt_pro_exchanges_are_instrumented_and_uninstrument_restores() -> None:
    with metrics() as meter:
        for plain in (ccxt.binance(), ccxt_async.binance()):
            assert not is_pro(plain)
            before = dict(plain.__dict__)
            assert not instrument_pro(plain, meter.provider)
            assert plain.__dict__ == before
        exchange = ccxtpro.binance()
        before = dict(exchange.__dict__)
        assert is_pro(exchange) and instrument_pro(exchange, meter.provider)
        assert is_pro_instrumented(exchange)
        assert not instrument_pro(exchange, meter.provider)  # once
        wrapped = {name for name in exchange.__dict__ if name not in before}
        assert {"watch_ticker", "watchTicker", "watch_order_book", "un_watch_ticker"} <= wrapped
        assert {"close", "on_connected"} <= wrapped
        assert not any(name in wrapped for name in ("watch", "watch_multiple", "fetch_ticker"))
        uninstrument_pro(exchange)
        assert exchange.__dict__ == before and not is_pro_instrumented(exchange)
        uninstrument_pro(exchange)  # a no-op now
        asyncio.run(exchange.close())


# -- the pure parts, on a stand-in exchange --------------------------------------------


class Fake:
    """What instrument_pro uses of a ccxt.pro exchange: `id`, `has`, watch_* coroutines
    (one calling another, as binance's watch_ticker does), un_watch_*, close and
    on_connected. Each watch returns the next value of `feed`."""

    id = "binance"
    has = {
        "watchTicker": True,
        "watchTickers": True,
        "watchTrades": True,
        "watchOrders": True,
        "watchBalance": True,
        "watchOHLCV": True,
        "unWatchTicker": True,
        "watchPositions": False,  # not supported: left alone
    }

    def __init__(self) -> None:
        self.feed: list[Any] = []
        self.connected: list[Any] = []

    async def watch_ticker(self, symbol: str, params: dict[str, Any] | None = None) -> Any:
        tickers = await self.watch_tickers([symbol])
        return tickers[symbol]

    async def watch_tickers(self, symbols: list[str] | None = None, params: Any = None) -> Any:
        return self._next()

    async def watch_trades(self, symbol: str, since: Any = None, limit: Any = None) -> Any:
        return self._next()

    async def watch_orders(self, symbol: str | None = None, since: Any = None) -> Any:
        return self._next()

    async def watch_balance(self, params: Any = None) -> Any:
        return self._next()

    async def watch_ohlcv(self, symbol: str, timeframe: str = "1m") -> Any:
        return self._next()

    async def watch_positions(self, symbols: Any = None) -> Any:
        return self._next()

    async def un_watch_ticker(self, symbol: str) -> None:
        pass

    async def close(self) -> None:
        pass

    def on_connected(self, client: Any, message: Any = None) -> None:
        self.connected.append(client)

    def _next(self) -> Any:
        value = self.feed.pop(0)
        if isinstance(value, BaseException):
            raise value
        return value


class Client:
    def __init__(self, url: str) -> None:
        self.url = url


class Ticks:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def ticker(symbol: str, ts: int | None = 1_700_000_000_000) -> dict[str, Any]:
    return {"symbol": symbol, "timestamp": ts, "last": 1.0}


def gaps(meter: Metrics) -> dict[frozenset[tuple[str, Any]], tuple[int, float]]:
    return {
        k: (p.count, round(p.sum, 9))
        for k, p in meter.collect().get("exchange.ws.update.gap", {}).items()
    }


def test_gaps_fold_into_the_longest_of_each_window_and_long_gaps_stand_alone() -> None:
    async def main(window: float | None) -> dict[frozenset[tuple[str, Any]], tuple[int, float]]:
        with metrics() as meter:
            fake, ticks = Fake(), Ticks()
            instrument_pro(fake, meter.provider, gap_window=window, monotonic=ticks)
            arrivals = [0.0, 0.2, 0.3, 0.6, 0.8, 1.0, 3.5, 3.6, 3.75]
            for at in arrivals:
                ticks.now = 100.0 + at
                fake.feed.append({"BTC/USDT": ticker("BTC/USDT")})
                await fake.watch_ticker("BTC/USDT")
            assert meter.updates() == {key("watch_ticker", "BTC/USDT"): len(arrivals)}
            return gaps(meter)

    btc = key("watch_ticker", "BTC/USDT")
    # 1 s windows: the longest gap up to 1.0 (0.3), then the 2.5 s gap; 3.6 and 3.75
    # are in a window still open.
    assert asyncio.run(main(None)) == {btc: (2, 2.8)}
    # gap_window=0: every gap.
    assert asyncio.run(main(0.0)) == {btc: (8, 3.75)}


def test_results_of_every_shape_give_their_symbol_and_timestamp() -> None:
    async def main() -> None:
        with metrics() as meter:
            fake, clock = Fake(), Clock()
            clock.value = 1_700_000_100.0
            instrument_pro(fake, meter.provider, clock=clock)
            fake.feed = [
                {
                    "BTC/USDT": ticker("BTC/USDT", 1_700_000_090_000),
                    "ETH/USDT": ticker("ETH/USDT", None),
                },
                [{"symbol": "SOL/USDT", "timestamp": 1_700_000_095_000}],  # trades, newest last
                [  # orders: the last update, not the creation
                    {
                        "symbol": "BNB/USDT",
                        "timestamp": 1_700_000_000_000,
                        "lastUpdateTimestamp": 1_700_000_098_000,
                    }
                ],
                {"info": {}, "USDT": {"free": 1.0}, "timestamp": 1_700_000_099_000},  # a balance
                [
                    [1_700_000_040_000, 1.0, 2.0, 0.5, 1.5, 10.0]
                ],  # candles: open time, not the update's
                [],  # nothing new: still one update of the call's symbol
            ]
            await fake.watch_tickers(["BTC/USDT", "ETH/USDT"])
            await fake.watch_trades("SOL/USDT")
            await fake.watch_orders()
            await fake.watch_balance()
            await fake.watch_ohlcv("BTC/USDT")
            await fake.watch_trades("XRP/USDT")
            clock.value += 1
            assert meter.ages() == {
                key("watch_tickers", "BTC/USDT"): 11.0,
                key("watch_tickers", "ETH/USDT"): 1.0,  # no timestamp: the arrival
                key("watch_trades", "SOL/USDT"): 6.0,
                key("watch_orders", "BNB/USDT"): 3.0,
                key("watch_balance"): 2.0,
                key("watch_ohlcv", "BTC/USDT"): 1.0,
                key("watch_trades", "XRP/USDT"): 1.0,
            }
            assert set(meter.updates().values()) == {1}

    asyncio.run(main())


def test_nested_watches_count_once_and_errors_by_class() -> None:
    async def main() -> None:
        with metrics() as meter:
            fake = Fake()
            instrument_pro(fake, meter.provider, max_symbols=1)
            fake.feed = [{"BTC/USDT": ticker("BTC/USDT")}, {"ETH/USDT": ticker("ETH/USDT")}]
            await fake.watch_ticker("BTC/USDT")
            await fake.watch_tickers(["ETH/USDT"])  # past the limit of 1
            fake.feed = [ccxt.NetworkError("wss://x/?signature=abc closed"), ValueError("boom")]
            with pytest.raises(ccxt.NetworkError):
                await fake.watch_ticker("BTC/USDT")
            with pytest.raises(ValueError):
                await fake.watch_trades("BTC/USDT")
            fake.feed = [asyncio.CancelledError()]
            with pytest.raises(asyncio.CancelledError):  # the engine stopping: no error
                await fake.watch_balance()
            points = meter.collect()
            assert {k: p.value for k, p in points["exchange.ws.updates"].items()} == {
                key("watch_ticker", "BTC/USDT"): 1,
                key("watch_tickers", **{OVERFLOW: True}): 1,
            }
            assert {k: p.value for k, p in points["exchange.ws.errors"].items()} == {
                frozenset({("exchange", "binance"), ("method", m), ("error_type", e)}): 1
                for m, e in (("watch_ticker", "NetworkError"), ("watch_trades", "ValueError"))
            }
            assert "signature" not in repr(points)

    asyncio.run(main())


def test_reconnects_are_connections_to_a_url_seen_before() -> None:
    with metrics() as meter:
        fake = Fake()
        assert meter.values("exchange.ws.reconnects") == {}
        instrument_pro(fake, meter.provider)
        first, other = Client("wss://stream/ws/0"), Client("wss://stream/ws/1")
        for client in (first, other):
            fake.on_connected(client)
        assert fake.connected == [first, other]  # ccxt's own hook still runs
        assert meter.values("exchange.ws.reconnects") == {frozenset({("exchange", "binance")}): 0}
        fake.on_connected(Client("wss://stream/ws/0"))
        fake.on_connected(Client("wss://stream/ws/1"))
        fake.on_connected(Client("wss://stream/ws/0"))
        assert meter.values("exchange.ws.reconnects") == {frozenset({("exchange", "binance")}): 3}


def test_counts_outlive_the_exchange_and_ages_leave_with_it() -> None:
    async def main() -> None:
        with metrics() as meter:
            for _ in range(2):  # two exchanges one after the other, the first collected
                fake = Fake()
                instrument_pro(fake, meter.provider)
                fake.feed = [{"BTC/USDT": ticker("BTC/USDT")}] * 3
                for _ in range(3):
                    await fake.watch_ticker("BTC/USDT")
                fake.on_connected(Client("wss://a"))
                fake.on_connected(Client("wss://a"))
                del fake
                gc.collect()
            assert meter.updates() == {key("watch_ticker", "BTC/USDT"): 6}
            assert meter.ages() == {}
            assert meter.values("exchange.ws.reconnects") == {
                frozenset({("exchange", "binance")}): 2
            }
            # uninstrument_pro too: counts stay, ages go.
            fake = Fake()
            instrument_pro(fake, meter.provider)
            fake.feed = [{"BTC/USDT": ticker("BTC/USDT")}]
            await fake.watch_ticker("BTC/USDT")
            assert len(meter.ages()) == 1
            uninstrument_pro(fake)
            assert meter.updates() == {key("watch_ticker", "BTC/USDT"): 7}
            assert meter.ages() == {}
            assert "watch_ticker" not in fake.__dict__

    asyncio.run(main())


def test_one_set_of_instruments_per_provider_through_the_global_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Exchanges instrumented before a provider is set (through the API's proxy) and
    after (the provider itself, given or global) report through one set of
    instruments: the SDK keeps the first instrument of a name and would drop the
    callbacks of a second."""
    from opentelemetry.metrics._internal import _ProxyMeterProvider

    proxy = _ProxyMeterProvider()
    current: list[Any] = [proxy]
    monkeypatch.setattr(ccxt_pro.metrics, "get_meter_provider", lambda: current[0])
    monkeypatch.setattr(ccxt_pro, "_proxy_registry", None)

    async def main() -> None:
        with metrics() as meter:
            fakes = [Fake(), Fake(), Fake()]
            instrument_pro(fakes[0])  # no provider yet: the proxy
            proxy.on_set_meter_provider(meter.provider)  # what set_meter_provider does
            current[0] = meter.provider
            instrument_pro(fakes[1])
            instrument_pro(fakes[2], meter.provider)
            for n, fake in enumerate(fakes, start=1):
                fake.feed = [{"BTC/USDT": ticker("BTC/USDT")}] * n
                for _ in range(n):
                    await fake.watch_ticker("BTC/USDT")
            assert meter.updates() == {key("watch_ticker", "BTC/USDT"): 6}

    asyncio.run(main())


def test_the_names_on_the_sidecars_metrics(start_sidecar: StartSidecar) -> None:
    """Through the OTLP/HTTP exporter to a running sidecar: the names, types and
    labels on /metrics."""
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource

    sidecar = start_sidecar({"host": {"enabled": False}})
    exporter = OTLPMetricExporter(endpoint=f"{sidecar.otlp_http_url}/v1/metrics")
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=60_000)
    provider = MeterProvider(
        metric_readers=[reader], resource=Resource.create({"service.name": "ws-e2e"})
    )

    async def main() -> None:
        async with BinanceSimulator(seed=5, ws_rate=20) as sim:
            exchange = sim.point(ccxtpro.binance(sim.ccxt_config()))
            instrument_pro(exchange, provider, max_symbols=1, gap_window=0)
            try:
                btc = Watcher(lambda: exchange.watch_ticker("BTC/USDT"))
                eth = Watcher(lambda: exchange.watch_ticker("ETH/USDT"))
                await until(lambda: btc.count >= 5 and eth.count >= 2, what="tickers")
                with pytest.raises(ccxt.BadSymbol):
                    await exchange.watch_ticker("NOPE/USDT")
                seen = btc.count
                sim.drop_connections()
                await until(lambda: btc.count > seen + 1, what="a reconnect")
                await btc.stop()
                await eth.stop()
                # Exported before close(): a closed exchange's streams have no age.
                assert provider.force_flush(10_000)
            finally:
                await exchange.close()

    try:
        run(main())
    finally:
        provider.shutdown()
    families = sidecar.families_when(
        lambda f: "exchange_ws_updates" in f and "exchange_ws_reconnects" in f, "ws metrics"
    )
    job = {"job": "ws-e2e", "exchange": "binance", "method": "watch_ticker"}
    updates = families["exchange_ws_updates"]
    assert updates.type == "counter"
    assert sample_value(updates, "exchange_ws_updates_total", symbol="BTC/USDT", **job) >= 5
    assert sample_value(updates, otel_metric_overflow="true", **job) >= 2  # ETH, past 1 symbol
    ages = families["exchange_ws_update_age_seconds"]
    assert ages.type == "gauge"
    assert 0 <= sample_value(ages, symbol="BTC/USDT", **job) < 5
    gaps = families["exchange_ws_update_gap_seconds"]
    assert gaps.type == "histogram"
    assert sample_value(gaps, "exchange_ws_update_gap_seconds_count", symbol="BTC/USDT", **job) >= 4
    assert (
        sample_value(
            gaps, "exchange_ws_update_gap_seconds_bucket", symbol="BTC/USDT", le="300.0", **job
        )
        >= 4
    )
    reconnects = families["exchange_ws_reconnects"]
    assert reconnects.type == "counter"
    assert (
        sample_value(reconnects, "exchange_ws_reconnects_total", job="ws-e2e", exchange="binance")
        >= 1
    )
    errors = families["exchange_ws_errors"]
    assert sample_value(errors, "exchange_ws_errors_total", error_type="BadSymbol", **job) == 1
    assert sample_value(errors, "exchange_ws_errors_total", error_type="NetworkError", **job) >= 1
    # The attribute past the symbol limit, as the sidecar writes it.
    assert 'otel_metric_overflow="true"' in sidecar.metrics_text()
