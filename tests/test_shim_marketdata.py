"""Market-data age on REST (tickscope.shim.marketdata) with real ccxt, sync and
async, against the simulator: ages that follow the data's lag behind the engine's
clock, exact on a clock the simulator and the shim share: a server clock behind
(or ahead), answers served stale from a cache (an injected 200 with old data),
candles that stopped; the symbol limit; what has no timestamp gets no series."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import ccxt
import ccxt.async_support as ccxt_async
import pytest

from helpers.shim_metrics import (  # noqa: F401  (fixtures)
    Metrics,
    SharedClock,
    attrs,
    shared_clock,
    shim_metrics,
)
from tickscope import shim
from tickscope.shim import marketdata

AGE = "exchange.marketdata.age"
NOW_MS = 1_800_000_000_000  # a whole second, for candles


def exact(value: float) -> Any:
    return pytest.approx(value, abs=1e-6)


def age(method: str, symbol: str | None = None, **more: Any) -> Any:
    if symbol is None:
        return attrs(exchange="binance", method=method, **more)
    return attrs(exchange="binance", method=method, symbol=symbol, **more)


@pytest.fixture(scope="module")
def sim() -> Iterator[Any]:
    from exchange_simulator import BinanceSimulator

    simulator = BinanceSimulator(seed=12, volatility=0)
    with simulator.running():
        yield simulator


@pytest.fixture
def exchange(sim: Any, shim_metrics: Metrics) -> Iterator[Any]:  # noqa: F811
    sim.reset()
    ex = sim.point(ccxt.binance(sim.ccxt_config()))
    ex.timeout = 2000
    shim.instrument_exchange(
        ex, tracer_provider=shim_metrics.tracer_provider, meter_provider=shim_metrics.provider
    )
    yield ex
    sim.reset()


@pytest.mark.parametrize("offset", [-2.5, 0.0, 1.25])
def test_ages_follow_the_server_clock(
    exchange: Any,
    sim: Any,
    shim_metrics: Metrics,  # noqa: F811
    shared_clock: SharedClock,  # noqa: F811
    offset: float,
) -> None:
    """The simulator stamps its data with its own clock: `offset` s from the
    engine's, the data looks -offset s old (negative: from the engine's future)."""
    sim.set_clock_offset(offset)
    now = shared_clock.step(NOW_MS) / 1000
    exchange.load_markets()
    ticker = exchange.fetch_ticker("BTC/USDT")
    exchange.fetch_tickers(["BTC/USDT", "ETH/USDT"])
    everything = exchange.fetch_tickers()
    trades = exchange.fetch_trades("BTC/USDT", limit=5)
    candles = exchange.fetch_ohlcv("BTC/USDT", "1s", limit=3)
    exchange.fetch_order_book("BTC/USDT", 5)
    found = shim_metrics.collect()[AGE]
    assert ticker["timestamp"] == NOW_MS + offset * 1000
    assert found[age("fetch_ticker", "BTC/USDT")] == exact(-offset)
    assert found[age("fetch_tickers", "BTC/USDT")] == exact(-offset)
    assert found[age("fetch_tickers", "ETH/USDT")] == exact(-offset)
    assert len(everything) == 4
    assert found[age("fetch_tickers")] == exact(-offset)  # all symbols: one series
    # The newest trade's time (one trade a second, somewhere in its second).
    assert found[age("fetch_trades", "BTC/USDT")] == exact(now - trades[-1]["timestamp"] / 1000)
    # 1 s candles: the newest ended when its second did by the server's clock; from
    # the engine's that is in the future (0: still open), or 2 s ago with the server
    # 2.5 s behind.
    assert candles[-1][0] == (NOW_MS + offset * 1000) // 1000 * 1000
    expected = {-2.5: 2.0, 0.0: 0.0, 1.25: 0.0}[offset]
    assert found[age("fetch_ohlcv", "BTC/USDT")] == exact(expected)
    # Binance spot's REST depth carries no timestamp: no series for it.
    assert set(found) == {
        age("fetch_ticker", "BTC/USDT"),
        age("fetch_tickers", "BTC/USDT"),
        age("fetch_tickers", "ETH/USDT"),
        age("fetch_tickers"),
        age("fetch_trades", "BTC/USDT"),
        age("fetch_ohlcv", "BTC/USDT"),
    }


def test_stale_answers_from_a_cache(
    exchange: Any,
    sim: Any,
    shim_metrics: Metrics,  # noqa: F811
    shared_clock: SharedClock,  # noqa: F811
) -> None:
    """A cache in front of the API answers 200 with data from a while ago."""
    shared_clock.step(NOW_MS)
    exchange.load_markets()
    exchange.fetch_ticker("ETH/USDT")
    stale_ticker = {
        "symbol": "ETHUSDT", "lastPrice": "3000.00", "bidPrice": "2999.90", "askPrice": "3000.10",
        "openTime": NOW_MS - 86_400_000 - 42_500, "closeTime": NOW_MS - 42_500, "count": 1,
    }  # fmt: skip
    sim.inject(path="ticker/24hr", status=200, body=stale_ticker, count=1)
    assert exchange.fetch_ticker("ETH/USDT")["timestamp"] == NOW_MS - 42_500
    # A futures-style depth answer with its transaction time (spot's has none).
    stale_book = {
        "lastUpdateId": 7, "E": NOW_MS - 7_000, "T": NOW_MS - 7_250,
        "bids": [["2999.90", "1.0"]], "asks": [["3000.10", "2.0"]],
    }  # fmt: skip
    sim.inject(path="depth", status=200, body=stale_book, count=1)
    exchange.fetch_order_book("ETH/USDT")
    # Candles that stopped ten minutes ago (an endTime the exchange honoured, as a
    # stuck feed would answer): the newest 1m candle ended 9 minutes ago.
    candles = exchange.fetch_ohlcv("ETH/USDT", "1m", params={"endTime": NOW_MS - 600_000})
    found = shim_metrics.collect()[AGE]
    assert found[age("fetch_ticker", "ETH/USDT")] == exact(42.5)
    assert found[age("fetch_order_book", "ETH/USDT")] == exact(7.25)
    assert candles[-1][0] == NOW_MS - 600_000
    assert found[age("fetch_ohlcv", "ETH/USDT")] == exact(540.0)
    # The next answer is fresh again: the gauge holds the newest call's figure.
    exchange.fetch_ticker("ETH/USDT")
    assert shim_metrics.collect()[AGE][age("fetch_ticker", "ETH/USDT")] == 0.0


def test_symbols_past_the_limit_share_an_overflow_series(
    exchange: Any,
    sim: Any,
    shim_metrics: Metrics,  # noqa: F811
    shared_clock: SharedClock,  # noqa: F811
) -> None:
    marketdata.reset(max_symbols=2)
    sim.set_clock_offset(-1.0)
    shared_clock.step(NOW_MS)
    exchange.load_markets()
    for symbol in ("BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT"):
        exchange.fetch_ticker(symbol)
    exchange.fetch_trades("BTC/USDT", limit=1)  # an admitted symbol, another method
    found = shim_metrics.collect()[AGE]
    assert {key: found[key] for key in found if dict(key)["method"] == "fetch_ticker"} == {
        age("fetch_ticker", "BTC/USDT"): exact(1.0),
        age("fetch_ticker", "ETH/USDT"): exact(1.0),
        age("fetch_ticker", overflow=True): exact(1.0),
    }
    assert age("fetch_trades", "BTC/USDT") in found


def test_async_exchange_real_clock(sim: Any, shim_metrics: Metrics) -> None:  # noqa: F811
    sim.reset()
    sim.set_clock_offset(-3.0)

    async def scenario() -> tuple[list[list[float]], float, float]:
        ex = sim.point(ccxt_async.binance(sim.ccxt_config()))
        shim.instrument_exchange(
            ex, tracer_provider=shim_metrics.tracer_provider, meter_provider=shim_metrics.provider
        )
        try:
            await ex.load_markets()
            sent = time.time()
            _, _, _, candles = await asyncio.gather(
                ex.fetch_ticker("BTC/USDT"),
                ex.fetch_ticker("SOL/USDT"),
                ex.fetch_trades("SOL/USDT", limit=3),
                ex.fetch_ohlcv("SOL/USDT", "1m", limit=2),
            )
            return candles, sent, time.time()
        finally:
            await ex.close()

    try:
        candles, sent, answered = asyncio.run(scenario())
    finally:
        sim.reset()
    found = shim_metrics.collect()[AGE]
    for symbol in ("BTC/USDT", "SOL/USDT"):
        # 3 s behind, plus the time from the server's stamp to the response (< 250 ms here).
        assert 3.0 <= found[age("fetch_ticker", symbol)] < 3.25
    assert 2.0 < found[age("fetch_trades", "SOL/USDT")] < 4.25  # a trade within its second
    # The newest 1m candle by the server's clock (3 s behind) ended up to 3 s ago: its age
    # is taken when the answer arrives, between the calls going out and all answering.
    ended = candles[-1][0] / 1000 + 60
    assert (
        max(0.0, sent - ended)
        <= found[age("fetch_ohlcv", "SOL/USDT")]
        <= max(0.0, answered - ended)
    )


def test_results_without_timestamps_or_failed_calls_record_nothing(
    exchange: Any,
    sim: Any,
    shim_metrics: Metrics,  # noqa: F811
) -> None:
    exchange.load_markets()
    sim.inject(path="ticker/24hr", status=503, count=1)
    with pytest.raises(ccxt.ExchangeNotAvailable):
        exchange.fetch_ticker("BTC/USDT")
    exchange.fetch_order_book("BTC/USDT")
    assert AGE not in shim_metrics.collect()


def test_timeframes() -> None:
    assert [marketdata.timeframe_seconds(t) for t in ("1s", "1m", "4h", "1d", "1w", "1M")] == [
        1, 60, 14_400, 86_400, 604_800, 2_592_000,
    ]  # fmt: skip
    assert [marketdata.timeframe_seconds(t) for t in ("", "m", "0m", "1x", "-1m", 5)] == [None] * 6
