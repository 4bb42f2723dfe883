"""The account figures (tickscope.shim.account): off by default, exporting nothing;
on, balances and open orders equal to what the simulator holds (real ccxt, sync and
async), positions from a stubbed Binance USD-M answer (the simulator has no
futures: the stub replaces ccxt's HTTP `fetch`, ccxt parses as it always does),
fills and slippage; no credential or account id in any of it; and the sidecar's
metric store taking these `trading_*` names from the shim's scope only, end to
end from a configure()d engine process."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import subprocess
import sys
import textwrap
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ccxt
import ccxt.async_support as ccxt_async
import pytest
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from prometheus_client import CollectorRegistry

from helpers.otlp_metrics import (
    FakeClock,
    gauge,
    histogram,
    histogram_point,
    number_point,
    request,
    sum_metric,
)
from helpers.shim_metrics import (  # noqa: F401  (fixtures)
    Metrics,
    SharedClock,
    attrs,
    shared_clock,
    shim_metrics,
)
from helpers.sidecar import ROOT, StartSidecar, sample_value
from tickscope import shim
from tickscope.exporters.otlpmetrics import MetricsConfig, MetricStore
from tickscope.exposition.text import Lines
from tickscope.shim import account, settings

BALANCE = "trading.balance"
OPEN = "trading.open_orders"
OLDEST = "trading.open_order.oldest_age"
FILLED = "trading.order.filled.ratio"
SLIPPAGE = "trading.order.slippage.ratio"
ACCOUNT_NAMES = {
    BALANCE, "trading.position.size", "trading.position.notional",
    "trading.position.entry_price", "trading.position.unrealized_pnl", OPEN, OLDEST, FILLED,
    SLIPPAGE,
}  # fmt: skip
START_BALANCES = {"USDT": 100_000.0, "BTC": 2.0}
# As in test_shim_secrets.py.
CREDENTIALS = ("apiKey", "secret", "password", "uid", "privateKey", "walletAddress", "token")


def encodings(value: str) -> set[str]:
    raw = value.encode()
    return {
        value,
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        raw.hex(),
        raw.hex().upper(),
        urllib.parse.quote(value),
        urllib.parse.quote_plus(value),
    }


def exact(value: float) -> Any:
    return pytest.approx(value, abs=1e-6)


@pytest.fixture(scope="module")
def sim() -> Iterator[Any]:
    from exchange_simulator import BinanceSimulator

    # ETH, SOL and BNB are listed (their markets exist) with nothing held.
    simulator = BinanceSimulator(seed=13, volatility=5e-4, balances=START_BALANCES)
    with simulator.running():
        yield simulator


@pytest.fixture
def switch() -> Iterator[None]:
    account.set_enabled(True)
    yield
    account.set_enabled(None)


def binance(sim: Any, metrics: Metrics, **config: Any) -> Any:
    sim.reset()
    ex = sim.point(ccxt.binance({**sim.ccxt_config("key-acct", "secret-acct"), **config}))
    ex.options["warnOnFetchOpenOrdersWithoutSymbol"] = False
    ex.timeout = 2000
    shim.instrument_exchange(
        ex, tracer_provider=metrics.tracer_provider, meter_provider=metrics.provider
    )
    return ex


def balances_of(found: dict[str, Any]) -> dict[str, dict[str, float]]:
    held: dict[str, dict[str, float]] = {}
    for key, value in found.get(BALANCE, {}).items():
        labels = dict(key)
        assert set(labels) == {"exchange", "currency", "kind"}
        assert labels["exchange"] == "binance"
        held.setdefault(labels["currency"], {})[labels["kind"]] = value
    return held


def simulator_balances(sim: Any) -> dict[str, dict[str, float]]:
    """What the simulator holds, as ccxt names it (locked is used), held only."""
    held = {}
    for asset, row in sim.state()["balances"].items():
        free, used = float(row["free"]), float(row["locked"])
        if free or used:
            held[asset] = {"free": free, "used": used, "total": free + used}
    return held


# -- the switch -----------------------------------------------------------------------


def test_off_by_default_nothing_is_recorded_or_exported(
    sim: Any,
    shim_metrics: Metrics,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(settings.ACCOUNT_METRICS_ENV, raising=False)
    account.set_enabled(None)
    assert not account.enabled()
    ex = binance(sim, shim_metrics)
    ex.load_markets()
    ex.fetch_ticker("BTC/USDT")
    ex.fetch_balance()
    order = ex.create_order("BTC/USDT", "limit", "buy", 0.01, 30000)
    ex.fetch_open_orders()
    ex.cancel_order(order["id"], "BTC/USDT")
    ex.create_market_buy_order("BTC/USDT", 0.01)
    ex.fetch_order(order["id"], "BTC/USDT")
    found = shim_metrics.collect()
    assert not ACCOUNT_NAMES & set(found)
    assert not [name for name in found if name.startswith("trading")]
    # The rest of the exchange metrics are there: the switch is the account's only.
    assert {"exchange.marketdata.age", "exchange.clock.skew"} <= set(found)
    # ... and nothing was held to be exported later either.
    account.set_enabled(True)
    try:
        assert not ACCOUNT_NAMES & set(shim_metrics.collect())
    finally:
        account.set_enabled(None)


def test_the_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    for value, expected in (("true", True), ("1", True), ("off", False), ("maybe", False)):
        monkeypatch.setenv(settings.ACCOUNT_METRICS_ENV, value)
        account.set_enabled(None)
        assert account.enabled() is expected, value
    monkeypatch.setenv(settings.ACCOUNT_METRICS_ENV, "true")
    account.set_enabled(False)  # configure()'s choice wins
    assert not account.enabled()
    account.set_enabled(None)
    monkeypatch.delenv(settings.ACCOUNT_METRICS_ENV)
    account.set_enabled(None)


# -- balances and open orders: what the simulator holds -------------------------------


def test_balances_equal_what_the_simulator_holds(
    sim: Any,
    shim_metrics: Metrics,  # noqa: F811
    switch: None,
) -> None:
    ex = binance(sim, shim_metrics)
    ex.load_markets()
    ex.fetch_balance()
    held = balances_of(shim_metrics.collect())
    assert (
        held
        == simulator_balances(sim)
        == {
            "USDT": {"free": 100_000.0, "used": 0.0, "total": 100_000.0},
            "BTC": {"free": 2.0, "used": 0.0, "total": 2.0},
        }
    )
    # Lock some USDT in an open order, buy ETH, sell every BTC.
    ex.create_order("BTC/USDT", "limit", "buy", 0.5, 30000)
    ex.create_market_buy_order("ETH/USDT", 1.0)
    ex.create_market_sell_order("BTC/USDT", 2.0)
    ex.fetch_balance()
    held = balances_of(shim_metrics.collect())
    now_held = simulator_balances(sim)
    assert set(now_held) == {"USDT", "ETH"}
    assert held["USDT"] == {k: exact(v) for k, v in now_held["USDT"].items()}
    assert held["USDT"]["used"] == 15_000.0
    assert held["ETH"] == {"free": 1.0, "used": 0.0, "total": 1.0}
    # BTC, held before, reads 0 (a drained balance, not a series that stops); SOL and
    # BNB, never held, have no series.
    assert held["BTC"] == {"free": 0.0, "used": 0.0, "total": 0.0}
    assert set(held) == {"USDT", "ETH", "BTC"}


def test_open_orders_equal_what_the_simulator_holds(
    sim: Any,
    shim_metrics: Metrics,  # noqa: F811
    shared_clock: SharedClock,  # noqa: F811
    switch: None,
) -> None:
    ex = binance(sim, shim_metrics)
    # ccxt stamps signed requests with its own (real) clock, which the simulator judges
    # against the shared one: kept 5 s ahead of it, inside the receive window.
    start = shared_clock.step() + 5_000
    shared_clock.step(start)
    ex.load_markets()
    placed = []
    for seconds, symbol, side, price in (
        (0, "BTC/USDT", "buy", 30000),
        (5, "BTC/USDT", "buy", 31000),
        (9, "BTC/USDT", "sell", 90000),
        (12, "ETH/USDT", "buy", 1000),
    ):
        shared_clock.step(start + seconds * 100)
        amount = 0.01 if symbol == "BTC/USDT" else 0.1
        placed.append(ex.create_order(symbol, "limit", side, amount, price))
    shared_clock.step(start + 2_000)
    orders = ex.fetch_open_orders()
    assert len(orders) == sim.state()["open_orders"] == 4
    found = shim_metrics.collect()
    assert found[OPEN] == {
        attrs(exchange="binance", symbol="BTC/USDT", side="buy"): 2,
        attrs(exchange="binance", symbol="BTC/USDT", side="sell"): 1,
        attrs(exchange="binance", symbol="ETH/USDT", side="buy"): 1,
    }
    # The oldest open order's age when the answer came: BTC's first, ETH's only.
    assert found[OLDEST] == {
        attrs(exchange="binance", symbol="BTC/USDT"): exact(2.0),
        attrs(exchange="binance", symbol="ETH/USDT"): exact(2.0 - 1.2),
    }
    for order in placed[:3]:
        ex.cancel_order(order["id"], "BTC/USDT")
    ex.fetch_open_orders("BTC/USDT")  # one symbol: the others are left as they were
    found = shim_metrics.collect()
    assert sim.state()["open_orders"] == 1
    assert found[OPEN] == {
        attrs(exchange="binance", symbol="BTC/USDT", side="buy"): 0,
        attrs(exchange="binance", symbol="BTC/USDT", side="sell"): 0,
        attrs(exchange="binance", symbol="ETH/USDT", side="buy"): 1,
    }
    assert set(found[OLDEST]) == {attrs(exchange="binance", symbol="ETH/USDT")}


def test_open_orders_past_the_symbol_limit_are_added_up(
    sim: Any,
    shim_metrics: Metrics,  # noqa: F811
    switch: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(settings.MAX_SYMBOLS_ENV, "1")
    account.reset()
    ex = binance(sim, shim_metrics)
    ex.load_markets()
    ex.create_order("BTC/USDT", "limit", "buy", 0.01, 30000)
    ex.create_order("ETH/USDT", "limit", "buy", 0.1, 1000)
    ex.create_order("SOL/USDT", "limit", "buy", 1.0, 50)
    ex.fetch_open_orders()
    found = shim_metrics.collect()[OPEN]
    assert found == {
        attrs(exchange="binance", symbol="BTC/USDT", side="buy"): 1,
        attrs(exchange="binance", side="buy", overflow=True): 2,
    }


def test_async_exchange(
    sim: Any,
    shim_metrics: Metrics,  # noqa: F811
    switch: None,
) -> None:
    sim.reset()

    async def scenario() -> None:
        ex = sim.point(ccxt_async.binance(sim.ccxt_config("key-async", "secret-async")))
        shim.instrument_exchange(
            ex, tracer_provider=shim_metrics.tracer_provider, meter_provider=shim_metrics.provider
        )
        try:
            await ex.load_markets()
            await asyncio.gather(
                ex.create_order("BTC/USDT", "limit", "buy", 0.02, 30000),
                ex.create_order("BTC/USDT", "limit", "sell", 0.5, 99000),
            )
            await asyncio.gather(ex.fetch_balance(), ex.fetch_open_orders("BTC/USDT"))
        finally:
            await ex.close()

    asyncio.run(scenario())
    found = shim_metrics.collect()
    assert balances_of(found) == {
        asset: {k: exact(v) for k, v in row.items()}
        for asset, row in simulator_balances(sim).items()
    }
    assert balances_of(found)["BTC"] == {"free": 1.5, "used": 0.5, "total": 2.0}
    assert found[OPEN] == {
        attrs(exchange="binance", symbol="BTC/USDT", side="buy"): 1,
        attrs(exchange="binance", symbol="BTC/USDT", side="sell"): 1,
    }


# -- positions: the simulator has none; a stubbed Binance USD-M answer ------------------


def _perpetual(symbol: str, base: str) -> dict[str, Any]:
    return {
        "symbol": symbol, "pair": symbol, "contractType": "PERPETUAL",
        "deliveryDate": 4133404800000, "onboardDate": 1569398400000, "status": "TRADING",
        "baseAsset": base, "quoteAsset": "USDT", "marginAsset": "USDT", "pricePrecision": 2,
        "quantityPrecision": 3, "baseAssetPrecision": 8, "quotePrecision": 8,
        "underlyingType": "COIN", "settlePlan": 0, "triggerProtect": "0.0500",
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": "0.10", "maxPrice": "1000000", "tickSize": "0.10"},
            {"filterType": "LOT_SIZE", "minQty": "0.001", "maxQty": "1000", "stepSize": "0.001"},
        ],
        "orderTypes": ["LIMIT", "MARKET"], "timeInForce": ["GTC"],
    }  # fmt: skip


def _risk(
    symbol: str, amount: str, entry: str, mark: str, pnl: str, notional: str
) -> dict[str, Any]:
    """A row of GET /fapi/v3/positionRisk (one-way mode)."""
    return {
        "symbol": symbol, "positionSide": "BOTH", "positionAmt": amount, "entryPrice": entry,
        "breakEvenPrice": entry, "markPrice": mark, "unRealizedProfit": pnl,
        "liquidationPrice": "0", "isolatedMargin": "0", "notional": notional,
        "marginAsset": "USDT", "isolatedWallet": "0", "initialMargin": "0", "maintMargin": "0",
        "positionInitialMargin": "0", "openOrderInitialMargin": "0", "adl": 1,
        "bidNotional": "0", "askNotional": "0", "updateTime": 1_700_000_000_000,
    }  # fmt: skip


class FuturesStub:
    """Binance USD-M's answers for load_markets and fetch_positions, in place of
    ccxt's HTTP `fetch` (what a signed request would have returned)."""

    def __init__(self) -> None:
        self.risk = [
            _risk("BTCUSDT", "0.250", "60000.0", "61000.0", "250.00000000", "15250.0"),
            _risk("ETHUSDT", "-2.000", "3000.0", "2950.0", "100.0", "-5900.0"),
        ]
        self.paths: list[str] = []

    def fetch(self, url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
        path = url.split("?")[0]
        self.paths.append(path.rsplit("/", 2)[-2] + "/" + path.rsplit("/", 1)[-1])
        if path.endswith("/exchangeInfo"):
            symbols = [_perpetual("BTCUSDT", "BTC"), _perpetual("ETHUSDT", "ETH")]
            return {
                "timezone": "UTC",
                "serverTime": 1,
                "rateLimits": [],
                "assets": [],
                "symbols": symbols,
            }
        if path.endswith("/leverageBracket"):
            bracket = {"bracket": 1, "initialLeverage": 125, "notionalCap": 50000,
                       "notionalFloor": 0, "maintMarginRatio": 0.004, "cum": 0}  # fmt: skip
            return [{"symbol": s, "brackets": [bracket]} for s in ("BTCUSDT", "ETHUSDT")]
        if path.endswith("/positionRisk"):
            return self.risk
        raise AssertionError(f"unexpected request {path}")


def test_positions_from_a_stubbed_futures_answer(
    shim_metrics: Metrics,  # noqa: F811
    switch: None,
) -> None:
    ex = ccxt.binanceusdm(
        {
            "apiKey": "key-futures",
            "secret": "secret-futures",
            "options": {"fetchMarkets": {"types": ["linear"]}, "fetchCurrencies": False},
        }
    )
    stub = FuturesStub()
    ex.fetch = stub.fetch
    shim.instrument_exchange(
        ex, tracer_provider=shim_metrics.tracer_provider, meter_provider=shim_metrics.provider
    )
    positions = ex.fetch_positions()
    assert stub.paths == ["v1/exchangeInfo", "v1/leverageBracket", "v3/positionRisk"]
    assert [(p["symbol"], p["side"], p["contracts"]) for p in positions] == [
        ("BTC/USDT:USDT", "long", 0.25),
        ("ETH/USDT:USDT", "short", 2.0),
    ]
    found = shim_metrics.collect()
    btc = attrs(exchange="binanceusdm", symbol="BTC/USDT:USDT", side="long")
    eth = attrs(exchange="binanceusdm", symbol="ETH/USDT:USDT", side="short")
    assert found["trading.position.size"] == {btc: 0.25, eth: 2.0}
    assert found["trading.position.notional"] == {btc: 15250.0, eth: 5900.0}
    assert found["trading.position.entry_price"] == {btc: 60000.0, eth: 3000.0}
    assert found["trading.position.unrealized_pnl"] == {btc: 250.0, eth: 100.0}
    # BTC's position is closed; asked for BTC only, ETH's figures stay.
    stub.risk = [_risk("BTCUSDT", "0.000", "0.0", "61000.0", "0.0", "0.0")]
    ex.fetch_positions(["BTC/USDT:USDT"])
    found = shim_metrics.collect()
    assert found["trading.position.size"] == {eth: 2.0}
    # A full answer with nothing open: no position series at all.
    stub.risk = []
    ex.fetch_positions()
    assert not {n for n in shim_metrics.collect() if n.startswith("trading.position")}


# -- fills ----------------------------------------------------------------------------


def test_filled_ratio_and_slippage_each_order_once(
    sim: Any,
    shim_metrics: Metrics,  # noqa: F811
    switch: None,
) -> None:
    ex = binance(sim, shim_metrics)
    ex.load_markets()
    resting = ex.create_order("BTC/USDT", "limit", "buy", 0.01, 30000)
    ex.cancel_order(resting["id"], "BTC/USDT")  # canceled, nothing filled: 0
    ex.fetch_order(resting["id"], "BTC/USDT")  # the same order again: not counted twice
    ticker = ex.fetch_ticker("ETH/USDT")
    time.sleep(0.35)  # the simulator's prices walk every 100 ms: the fill moves away
    bought = ex.create_market_buy_order("ETH/USDT", 0.5)
    ticker_btc = ex.fetch_ticker("BTC/USDT")
    time.sleep(0.35)
    sold = ex.create_market_sell_order("BTC/USDT", 0.1)
    ex.fetch_closed_orders("BTC/USDT")  # both BTC orders again: counted already
    # A market order with no price seen before it (SOL never fetched): no slippage.
    ex.create_market_buy_order("SOL/USDT", 1.0)
    assert (bought["status"], sold["status"]) == ("closed", "closed")
    found = shim_metrics.collect()
    limit_buy = attrs(exchange="binance", side="buy", type="limit")
    market_buy = attrs(exchange="binance", side="buy", type="market")
    market_sell = attrs(exchange="binance", side="sell", type="market")
    buckets = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0)
    zero = tuple(int(i == 0) for i in range(len(buckets) + 1))
    full = tuple(int(i == len(buckets) - 1) for i in range(len(buckets) + 1))
    assert found[FILLED] == {
        limit_buy: (1, 0.0, zero),
        market_buy: (2, 2.0, tuple(2 * c for c in full)),
        market_sell: (1, 1.0, full),
    }
    # Positive: worse for the engine; the histogram holds the size, the label the sign.
    buy_adverse = (bought["average"] - ticker["last"]) / ticker["last"]
    sell_adverse = -(sold["average"] - ticker_btc["last"]) / ticker_btc["last"]

    def direction(adverse: float) -> str:
        return "adverse" if adverse >= 0 else "favorable"

    slips = {key: (count, total) for key, (count, total, _) in found[SLIPPAGE].items()}
    assert slips == {
        attrs(exchange="binance", side="buy", direction=direction(buy_adverse)): (
            1,
            abs(buy_adverse),
        ),
        attrs(exchange="binance", side="sell", direction=direction(sell_adverse)): (
            1,
            abs(sell_adverse),
        ),
    }


# -- nothing secret -------------------------------------------------------------------


def test_no_credential_or_account_id_in_the_account_metrics(
    sim: Any,
    shim_metrics: Metrics,  # noqa: F811
    switch: None,
) -> None:
    canaries = {name: f"CANARY{name}{secrets.token_hex(12)}" for name in CREDENTIALS}
    ex = binance(sim, shim_metrics, **canaries)
    ex.load_markets()
    ex.fetch_ticker("BTC/USDT")
    ex.fetch_balance()  # Binance's account answer carries the account's uid
    order = ex.create_order("BTC/USDT", "limit", "buy", 0.01, 30000)
    ex.fetch_open_orders()
    ex.cancel_order(order["id"], "BTC/USDT")
    ex.create_market_buy_order("BTC/USDT", 0.01)
    data = shim_metrics.reader.get_metrics_data()
    assert data is not None
    encoded = encode_metrics(data).SerializeToString()
    text = "\n".join([repr(encoded), encoded.decode("latin-1"), data.to_json()])
    for name, canary in canaries.items():
        for form in encodings(canary):
            assert form not in text, f"{name} canary found ({form!r})"
    allowed = {"exchange", "currency", "kind", "symbol", "side", "type", "method", "direction"}
    for points in shim_metrics.collect().values():
        for key in points:
            assert set(dict(key)) <= allowed, key
    # The order id is no label value either.
    values = {str(v) for points in shim_metrics.collect().values() for k in points for _, v in k}
    assert str(order["id"]) not in values


# -- the sidecar's store: trading_* from the shim's scope only ------------------------


def store() -> MetricStore:
    return MetricStore(MetricsConfig(), CollectorRegistry(), clock=FakeClock())


def rendered(s: MetricStore) -> str:
    out = Lines()
    s.render(out, False, None)
    return "".join(out)


SHIM_SCOPE = ("tickscope.shim.ccxt", "0.1.0")


def account_metrics() -> list[Any]:
    point = number_point(
        1.5, 1.0, attributes={"exchange": "binance", "currency": "BTC", "kind": "free"}
    )
    fill = histogram_point([0.5, 1.0], [0, 0, 1], 1.0, time=1.0, attributes={"exchange": "binance"})
    return [
        gauge("trading.balance", point, unit="{currency}"),
        gauge("trading.open_order.oldest_age", number_point(3.0, 1.0), unit="s"),
        histogram("trading.order.filled.ratio", fill, unit="1"),
    ]


def test_the_store_takes_the_shims_account_names_from_its_scope() -> None:
    s = store()
    result = s.ingest(request(*account_metrics(), scope=SHIM_SCOPE))
    assert (result.accepted, dict(result.rejected)) == (3, {})
    text = rendered(s)
    assert (
        'trading_balance{currency="BTC",exchange="binance",kind="free",otel_scope_name="tickscope.shim.ccxt"'
        in text
    )
    assert "trading_open_order_oldest_age_seconds{" in text
    assert "trading_order_filled_ratio_bucket{" in text
    assert [labels for labels, _ in s.gauge_values("trading_balance")] == [
        {"currency": "BTC", "exchange": "binance", "kind": "free",
         "otel_scope_name": "tickscope.shim.ccxt", "otel_scope_version": "0.1.0"},
    ]  # fmt: skip
    assert s.gauge_values("trading_balance")[0][1] == 1.5
    assert s.gauge_values("trading_order_filled_ratio") == []  # a histogram
    assert s.gauge_values("no_such_metric") == []


@pytest.mark.parametrize(
    "scope", [None, ("engine.own", "1"), ("tickscope", "1"), ("other.tickscope.shim", "1")]
)
def test_the_store_refuses_them_from_any_other_scope(scope: tuple[str, str] | None) -> None:
    s = store()
    result = s.ingest(request(*account_metrics(), scope=scope))
    assert (result.accepted, dict(result.rejected)) == (0, {"name_conflict": 3})
    assert "trading_" not in rendered(s)


def sum_counter(name: str, value: float) -> Any:
    return sum_metric(name, number_point(value, 1.0))


def test_the_shims_scope_gets_those_names_only_and_with_their_types() -> None:
    s = store()
    refused = [
        # a trading_* name the shim does not own (the sidecar's own, from spans)
        sum_counter("trading.orders", 1.0),
        gauge("trading.order.latency", number_point(0.1, 1.0), unit="s"),
        # an owned name with another type
        sum_counter("trading.balance", 1.0),
        histogram(
            "trading.open_orders", histogram_point([1.0], [1, 0], 1.0, time=1.0), unit="{order}"
        ),
        # the sidecar's new counter
        sum_counter("exchange.timestamp.rejections", 1.0),
    ]
    result = s.ingest(request(*refused, scope=SHIM_SCOPE))
    assert (result.accepted, dict(result.rejected)) == (0, {"name_conflict": 5})
    assert rendered(s) == ""


# -- end to end: configure() in an engine process -> the sidecar's /metrics ------------

ENGINE = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, {examples!r})
    import ccxt
    from exchange_simulator import point_at
    from tickscope import shim

    kwargs = json.loads(sys.argv[3])
    early = kwargs.pop("early", False)

    def binance():
        return point_at(ccxt.binance({{"apiKey": "k", "secret": "s", "enableRateLimit": False,
            "options": {{"fetchMarkets": {{"types": ["spot"]}}, "fetchCurrencies": False,
                         "fetchMargins": False, "warnOnFetchOpenOrdersWithoutSymbol": False}}}}),
            sys.argv[1])

    if early:  # instrumented before any provider is set: through the API's proxy
        first = shim.instrument_exchange(binance())
    shim.configure(service_name=sys.argv[2], metric_export_interval_millis=600_000, **kwargs)
    ex = binance()  # instrumented by configure()
    ex.load_markets()
    ex.fetch_ticker("BTC/USDT")
    if early:
        first.load_markets()
        first.fetch_ticker("ETH/USDT")
    ex.fetch_time()
    ex.fetch_balance()
    order = ex.create_order("BTC/USDT", "limit", "buy", 0.01, 30000)
    ex.fetch_open_orders()
    ex.cancel_order(order["id"], "BTC/USDT")
    shim.shutdown()  # the last export
    print("done")
    """
)


def run_engine(
    tmp_path: Path, sim: Any, sidecar: Any, service: str, env: dict[str, str], **kwargs: Any
) -> None:
    script = tmp_path / "engine.py"
    script.write_text(ENGINE.format(examples=str(ROOT / "examples")))
    full = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TICKSCOPE_"))}
    full.update(env)
    full["OTEL_EXPORTER_OTLP_ENDPOINT"] = sidecar.otlp_http_url
    result = subprocess.run(
        [sys.executable, str(script), sim.url, service, json.dumps(kwargs)],
        env=full, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0 and result.stdout.strip() == "done", result.stderr[-3000:]
    # One set of instruments per provider, also when the first came through the proxy.
    assert "created already" not in result.stderr, result.stderr[-3000:]


def test_end_to_end_from_configure_to_metrics(
    tmp_path: Path, sim: Any, start_sidecar: StartSidecar
) -> None:
    sidecar = start_sidecar({"host": {"enabled": False}})
    sim.reset()
    run_engine(tmp_path, sim, sidecar, "acct-on", {}, account_metrics=True, early=True)
    run_engine(tmp_path, sim, sidecar, "acct-env", {settings.ACCOUNT_METRICS_ENV: "true"})
    run_engine(tmp_path, sim, sidecar, "acct-off", {})
    families = sidecar.families_when(
        lambda f: (
            "exchange_clock_skew_seconds" in f
            and len({s.labels.get("job") for s in f["exchange_clock_skew_seconds"].samples}) == 3
        ),
        "three engines' metrics",
    )
    balance = families["trading_balance"]
    assert {s.labels["job"] for s in balance.samples} == {"acct-on", "acct-env"}
    assert sample_value(balance, job="acct-on", currency="BTC", kind="total") == 2.0
    assert sample_value(balance, job="acct-env", currency="USDT", kind="used") == 0.0
    opened = families["trading_open_orders"]
    assert sample_value(opened, job="acct-on", symbol="BTC/USDT", side="buy") == 1
    assert "trading_open_order_oldest_age_seconds" in families
    assert "trading_order_filled_ratio" in families
    ages = families["exchange_marketdata_age_seconds"]
    assert {s.labels["job"] for s in ages.samples} == {"acct-on", "acct-env", "acct-off"}
    # The exchange instrumented before configure() reports through the same provider.
    assert {s.labels["symbol"] for s in ages.samples if s.labels["job"] == "acct-on"} == {
        "BTC/USDT",
        "ETH/USDT",
    }
    skew = families["exchange_clock_skew_seconds"]
    assert abs(sample_value(skew, job="acct-off", exchange="binance")) < 0.05
    assert "exchange_clock_skew_uncertainty_seconds" in families
    # Nothing was refused on the way in.
    rejected = families.get("tickscope_receiver_rejected_points")
    assert rejected is None or all(s.value == 0 for s in rejected.samples)
