"""Clock skew per exchange (tickscope.shim.clock): the estimator's arithmetic with
exact values, then real ccxt (sync and async) against the simulator with its
server clock moved both ways: Date headers, fetch_time's server time and order
times, each to the precision it has."""

from __future__ import annotations

import asyncio
import email.utils
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
from tickscope.shim import clock
from tickscope.shim.clock import DATE, ORDER, SERVER_TIME, SkewEstimator

SKEW = "exchange.clock.skew"
UNCERTAINTY = "exchange.clock.skew.uncertainty"
BINANCE = attrs(exchange="binance")


def exact(value: float) -> Any:
    """Exact but for float rounding: Unix times as floats hold ~0.2 us."""
    return pytest.approx(value, abs=1e-6)


@pytest.fixture(scope="module")
def sim() -> Iterator[Any]:
    from exchange_simulator import BinanceSimulator

    simulator = BinanceSimulator(seed=11, volatility=0)
    with simulator.running():
        yield simulator


@pytest.fixture
def exchange(sim: Any, shim_metrics: Metrics) -> Iterator[Any]:  # noqa: F811
    sim.reset()
    ex = sim.point(ccxt.binance(sim.ccxt_config("key-c", "secret-c")))
    ex.timeout = 2000
    shim.instrument_exchange(
        ex, tracer_provider=shim_metrics.tracer_provider, meter_provider=shim_metrics.provider
    )
    yield ex
    sim.set_clock_offset(0)


def skew(metrics: Metrics) -> tuple[float, float]:
    found = metrics.collect()
    return found[SKEW][BINANCE], found[UNCERTAINTY][BINANCE]


# -- the estimator, exact ------------------------------------------------------------


def test_date_headers_at_different_phases_narrow_the_interval() -> None:
    e = SkewEstimator()
    # The exchange is 0.3 s ahead. A request sent at 100.0 and answered at 100.2: the
    # server stamped somewhere in 100.3..100.5, all in second 100 -> Date 100.
    e.add("x", DATE, 100 - 100.2, 101 - 100.0, 100.2)
    assert e.estimate("x", 100.2) == (pytest.approx(0.4), pytest.approx(0.6), DATE)
    # Sent at 100.8, answered at 100.9: stamped 101.1..101.2 -> Date 101.
    e.add("x", DATE, 101 - 100.9, 102 - 100.8, 100.9)
    # [-0.2, 1.0] and [0.1, 1.2] -> [0.1, 1.0]
    assert e.estimate("x", 101.0) == (pytest.approx(0.55), pytest.approx(0.45), DATE)
    # Sent at 101.6, answered at 101.65: stamped 101.9..101.95 -> Date 101: [-0.65, 0.4]
    e.add("x", DATE, 101 - 101.65, 102 - 101.6, 101.65)
    skew, uncertainty, _ = e.estimate("x", 102.0)  # type: ignore[misc]
    assert (skew - uncertainty, skew + uncertainty) == (pytest.approx(0.1), pytest.approx(0.4))


def test_a_sample_that_disagrees_with_the_newer_ones_ends_the_intersection() -> None:
    e = SkewEstimator()
    e.add("x", SERVER_TIME, 1.999, 2.001, 10.0)
    e.add("x", SERVER_TIME, 1.9995, 2.0015, 11.0)
    # [1.999, 2.001] and [1.9995, 2.0015] -> [1.9995, 2.001]
    assert e.estimate("x", 11.0) == (pytest.approx(2.00025), pytest.approx(0.00075), SERVER_TIME)
    # The clock is stepped: -3 s now. The old samples no longer count.
    e.add("x", SERVER_TIME, -3.001, -2.999, 12.0)
    assert e.estimate("x", 12.0) == (pytest.approx(-3.0), pytest.approx(0.001), SERVER_TIME)


def test_the_best_recent_source_wins_and_an_old_one_gives_way() -> None:
    e = SkewEstimator(recent=300)
    e.add("x", DATE, 0.5, 1.5, 1000.0)
    e.add("x", ORDER, 1.2, 1.21, 1000.0)
    assert e.estimate("x", 1000.0) == (pytest.approx(1.205), pytest.approx(0.005), ORDER)
    e.add("x", SERVER_TIME, 1.1, 1.102, 1000.0)
    assert e.estimate("x", 1000.0) == (pytest.approx(1.101), pytest.approx(0.001), SERVER_TIME)
    # Five minutes on, only Date headers keep coming: the Date estimate is current.
    e.add("x", DATE, 0.6, 1.6, 1301.0)
    assert e.estimate("x", 1301.0) == (pytest.approx(1.05), pytest.approx(0.45), DATE)
    # Nothing recent at all: the source heard from last.
    assert e.estimate("x", 5000.0) == (pytest.approx(1.05), pytest.approx(0.45), DATE)
    assert e.estimate("y", 5000.0) is None


def test_impossible_samples_are_ignored() -> None:
    e = SkewEstimator()
    e.add("x", DATE, 2.0, 1.0, 0.0)  # low above high
    e.add("x", DATE, float("nan"), 1.0, 0.0)
    e.add("x", DATE, 1e9, 1e9 + 1, 0.0)  # decades off: not a clock
    assert e.estimate("x", 0.0) is None


def test_date_header_parsing() -> None:
    clock.reset()
    date = email.utils.formatdate(1_700_000_000.7, usegmt=True)
    clock.note_date("x", {"Date": date}, started=1_699_999_999.0, received=1_700_000_001.0)
    # Server in [1_700_000_000, 1_700_000_001) at an engine time in [..999, ..001]:
    # the offset in [-1, 2].
    assert clock.estimator.estimate("x", 1_700_000_001.0) == (exact(0.5), exact(1.5), DATE)
    clock.note_date("y", {"Date": "not a date"}, 0.0, 1.0)
    clock.note_date("y", {}, 0.0, 1.0)
    assert clock.estimator.estimate("y", 1.0) is None
    clock.reset()


# -- real ccxt against the simulator, on a shared clock: exact -------------------------


@pytest.mark.parametrize("offset", [2.25, -2.75])
def test_date_headers_follow_the_server_clock(
    exchange: Any,
    sim: Any,
    shim_metrics: Metrics,  # noqa: F811
    shared_clock: SharedClock,  # noqa: F811
    offset: float,
) -> None:
    sim.set_clock_offset(offset)
    now = shared_clock.step(1_800_000_000_000)  # a whole second: Date is exact
    exchange.load_markets()
    exchange.fetch_ticker("BTC/USDT")
    # Server at now + offset; Date truncates to the second: D = floor(now + offset).
    date = (now + round(offset * 1000)) // 1000
    low, high = date - now / 1000, date + 1 - now / 1000
    value, uncertainty = skew(shim_metrics)
    assert (value, uncertainty) == (exact((low + high) / 2), exact(0.5))
    assert value == exact(offset + 0.25)  # the midpoint of the second


@pytest.mark.parametrize("offset", [1.5, -3.25])
def test_server_time_and_order_times_follow_the_server_clock(
    exchange: Any,
    sim: Any,
    shim_metrics: Metrics,  # noqa: F811
    shared_clock: SharedClock,  # noqa: F811
    offset: float,
) -> None:
    sim.set_clock_offset(offset)
    # Signed requests carry ccxt's own clock, which the simulator judges against its
    # (moved) one: told the difference as adjustForTimeDifference would tell it.
    exchange.options["timeDifference"] = round(-offset * 1000)
    shared_clock.step()
    exchange.load_markets()
    order = exchange.create_order("BTC/USDT", "limit", "buy", 0.001, 30000)
    # The order's transactTime is the server's clock to the millisecond.
    value, uncertainty = skew(shim_metrics)
    assert (value, uncertainty) == (exact(offset + 0.0005), exact(0.0005))
    assert clock.estimator.estimate("binance").source == ORDER  # type: ignore[union-attr]
    shared_clock.step()
    exchange.cancel_order(order["id"], "BTC/USDT")
    server_ms = exchange.fetch_time()
    assert server_ms == shared_clock.ms + round(offset * 1000)
    value, uncertainty = skew(shim_metrics)
    assert (value, uncertainty) == (exact(offset + 0.0005), exact(0.0005))
    assert clock.estimator.estimate("binance").source == SERVER_TIME  # type: ignore[union-attr]


def test_a_timestamp_rejection_still_tells_the_time(
    exchange: Any,
    sim: Any,
    shim_metrics: Metrics,  # noqa: F811
    shared_clock: SharedClock,  # noqa: F811
) -> None:
    # The server 2.5 s behind: every signed request is "1000ms ahead" (-1021), and
    # its error response's Date header is still a sample.
    sim.set_clock_offset(-2.5)
    shared_clock.step(1_800_000_000_000)
    exchange.load_markets()
    clock.reset()
    with pytest.raises(ccxt.InvalidNonce):
        exchange.fetch_balance()
    value, uncertainty = skew(shim_metrics)
    assert (value, uncertainty) == (exact(-2.5), exact(0.5))


# -- real clocks: within the precision each source has --------------------------------


@pytest.mark.parametrize("offset", [3.0, -1.75])
def test_sync_exchange_real_clock(
    exchange: Any,
    sim: Any,
    shim_metrics: Metrics,  # noqa: F811
    offset: float,
) -> None:
    sim.set_clock_offset(offset)
    exchange.load_markets()
    for _ in range(3):
        exchange.fetch_ticker("BTC/USDT")
    value, uncertainty = skew(shim_metrics)
    assert uncertainty <= 0.75  # Date headers: half a second and half a round trip
    assert value - uncertainty <= offset + 0.0005 <= value + uncertainty + 0.001
    exchange.fetch_time()
    value, uncertainty = skew(shim_metrics)
    assert uncertainty < 0.25  # a local round trip, halved
    assert abs(value - offset) < 0.25


@pytest.mark.parametrize("offset", [-4.5, 0.75])
def test_async_exchange_real_clock(
    sim: Any,
    shim_metrics: Metrics,  # noqa: F811
    offset: float,
) -> None:
    sim.reset()
    sim.set_clock_offset(offset)

    async def scenario() -> tuple[tuple[float, float], tuple[float, float]]:
        ex = sim.point(ccxt_async.binance(sim.ccxt_config("key-a", "secret-a")))
        ex.options["timeDifference"] = round(-offset * 1000)
        shim.instrument_exchange(
            ex, tracer_provider=shim_metrics.tracer_provider, meter_provider=shim_metrics.provider
        )
        try:
            await ex.load_markets()
            await asyncio.gather(*(ex.fetch_ticker("ETH/USDT") for _ in range(3)))
            by_date = skew(shim_metrics)
            order = await ex.create_order("ETH/USDT", "limit", "sell", 0.01, 9000)
            await ex.cancel_order(order["id"], "ETH/USDT")
            return by_date, skew(shim_metrics)
        finally:
            await ex.close()

    try:
        (date_value, date_uncertainty), (order_value, order_uncertainty) = asyncio.run(scenario())
    finally:
        sim.set_clock_offset(0)
    assert date_uncertainty <= 0.75
    assert date_value - date_uncertainty <= offset + 0.0005 <= date_value + date_uncertainty + 0.001
    assert order_uncertainty < 0.25
    assert abs(order_value - offset) < 0.25


def test_nothing_is_estimated_while_the_export_gate_is_closed(
    exchange: Any,
    shim_metrics: Metrics,  # noqa: F811
) -> None:
    from tickscope.shim import gate

    gate.set_hook(lambda: False)
    try:
        exchange.load_markets()
        exchange.fetch_time()
    finally:
        gate.set_hook(None)
    assert SKEW not in shim_metrics.collect()
