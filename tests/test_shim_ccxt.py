"""The ccxt instrumentation, with real ccxt (sync and async) against the exchange
simulator; spans captured in memory."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import ccxt
import ccxt.async_support as ccxt_async
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tickscope import shim


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


@pytest.fixture
def exchange(simulator: Any, spans: tuple[TracerProvider, InMemorySpanExporter]) -> Iterator[Any]:
    simulator.reset()
    ex = simulator.point(ccxt.binance(simulator.ccxt_config("key-1", "secret-1")))
    ex.timeout = 1000
    shim.instrument_exchange(ex, tracer_provider=spans[0])
    yield ex


def by_method(exporter: InMemorySpanExporter) -> dict[str, list[ReadableSpan]]:
    found: dict[str, list[ReadableSpan]] = {}
    for span in exporter.get_finished_spans():
        found.setdefault(span.attributes["ccxt.method"], []).append(span)
    return found


def test_every_call_is_one_client_span_with_the_contract_attributes(
    exchange: Any, spans: Any
) -> None:
    _, exporter = spans
    exchange.load_markets()
    exchange.fetch_ticker("BTC/USDT")
    exchange.fetchTicker("ETH/USDT")  # the camelCase alias is the same method
    exchange.fetch_tickers(["BTC/USDT", "ETH/USDT"])
    exchange.fetch_order_book("BTC/USDT", 5)
    exchange.fetch_ohlcv("BTC/USDT", "1m", limit=5)
    exchange.fetch_trades("BTC/USDT", limit=5)
    exchange.fetch_balance()
    order = exchange.create_order("BTC/USDT", "limit", "buy", 0.001, 30000)
    exchange.fetch_order(order["id"], "BTC/USDT")
    exchange.fetch_open_orders("BTC/USDT")
    exchange.cancel_order(order["id"], "BTC/USDT")
    helper = exchange.create_limit_sell_order("ETH/USDT", 0.01, 9000)
    exchange.cancel_order(helper["id"], "ETH/USDT")
    exchange.create_market_buy_order("ETH/USDT", 0.01)
    found = by_method(exporter)
    assert {m: len(s) for m, s in found.items()} == {
        "load_markets": 1, "fetch_ticker": 2, "fetch_tickers": 1, "fetch_order_book": 1,
        "fetch_ohlcv": 1, "fetch_trades": 1, "fetch_balance": 1, "create_order": 1, "fetch_order": 1,
        "fetch_open_orders": 1, "cancel_order": 2, "create_limit_sell_order": 1, "create_market_buy_order": 1,
    }  # fmt: skip
    for method, group in found.items():
        for span in group:
            assert span.name == f"ccxt.{method}"
            assert span.kind == SpanKind.CLIENT
            assert span.status.status_code == StatusCode.UNSET
            a = span.attributes
            assert a["exchange.id"] == "binance"
            assert a["server.address"] == "127.0.0.1"
            assert a["http.response.status_code"] == 200
            assert a["http.request.method"] in ("GET", "POST", "DELETE")
            assert a["trading.ratelimit.limit"] == 6000
            assert 0 < a["trading.ratelimit.used"] <= 6000
    order_span = found["create_order"][0].attributes
    assert (
        order_span["trading.symbol"],
        order_span["trading.order.side"],
        order_span["trading.order.type"],
    ) == ("BTC/USDT", "buy", "limit")
    assert found["create_order"][0].attributes["http.request.method"] == "POST"
    helper_span = found["create_limit_sell_order"][0].attributes
    assert (helper_span["trading.order.side"], helper_span["trading.order.type"]) == (
        "sell",
        "limit",
    )
    market = found["create_market_buy_order"][0].attributes
    assert (market["trading.order.side"], market["trading.order.type"]) == ("buy", "market")
    assert found["cancel_order"][0].attributes["trading.symbol"] == "BTC/USDT"
    assert found["fetch_ticker"][1].attributes["trading.symbol"] == "ETH/USDT"
    # create_limit_sell_order calls create_order inside: still one span, the outer one.
    assert len(exporter.get_finished_spans()) == 15


def test_async_exchange(simulator: Any, spans: Any) -> None:
    provider, exporter = spans

    async def scenario() -> None:
        ex = simulator.point(ccxt_async.binance(simulator.ccxt_config("key-2", "secret-2")))
        shim.instrument_exchange(ex, tracer_provider=provider)
        try:
            await ex.load_markets()
            await asyncio.gather(
                ex.fetch_ticker("BTC/USDT"), ex.fetch_ticker("ETH/USDT"), ex.fetch_balance()
            )
            order = await ex.create_order("BTC/USDT", "limit", "sell", 0.001, 90000)
            await ex.cancel_order(order["id"], "BTC/USDT")
        finally:
            await ex.close()

    asyncio.run(scenario())
    found = by_method(exporter)
    assert {m: len(s) for m, s in found.items()} == {
        "load_markets": 1,
        "fetch_ticker": 2,
        "fetch_balance": 1,
        "create_order": 1,
        "cancel_order": 1,
    }
    symbols = sorted(s.attributes["trading.symbol"] for s in found["fetch_ticker"])
    assert symbols == ["BTC/USDT", "ETH/USDT"]
    # Concurrent calls got their own spans and their own HTTP attributes.
    assert all(
        s.attributes["http.response.status_code"] == 200 for s in exporter.get_finished_spans()
    )
    assert len({s.context.span_id for s in exporter.get_finished_spans()}) == 6


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ({"status": 429}, ccxt.DDoSProtection),  # ccxt's binance maps 429 and 418 alike
        ({"status": 418}, ccxt.DDoSProtection),
        ({"status": 503}, ccxt.ExchangeNotAvailable),
        ({"status": 500}, ccxt.ExchangeNotAvailable),
        ({"latency": 3.0}, ccxt.RequestTimeout),
    ],
    ids=["429", "418", "503", "500", "timeout"],
)
def test_injected_faults_map_to_ccxt_exceptions(
    exchange: Any, spans: Any, simulator: Any, fault: dict[str, Any], error: type
) -> None:
    _, exporter = spans
    exchange.load_markets()
    simulator.inject(path="ticker", count=1, **fault)
    with pytest.raises(error) as info:
        exchange.fetch_ticker("BTC/USDT")
    assert type(info.value) is error  # reaches the caller unchanged
    span = by_method(exporter)["fetch_ticker"][0]
    assert span.status.status_code == StatusCode.ERROR
    assert span.status.description == error.__name__
    assert span.attributes["error.type"] == error.__name__
    assert not span.events  # no exception event: ccxt messages carry signed URLs
    if "status" in fault:
        assert span.attributes["http.response.status_code"] == fault["status"]
    # The next call is fine again.
    exchange.fetch_ticker("BTC/USDT")


def test_order_rejections(exchange: Any, spans: Any) -> None:
    _, exporter = spans
    exchange.load_markets()
    with pytest.raises(ccxt.InsufficientFunds):
        exchange.create_order("BTC/USDT", "limit", "buy", 1000, 60000)
    with pytest.raises(ccxt.OrderNotFound):
        exchange.cancel_order("999999", "BTC/USDT")
    found = by_method(exporter)
    assert found["create_order"][0].attributes["error.type"] == "InsufficientFunds"
    assert found["create_order"][0].attributes["http.response.status_code"] == 400
    assert found["cancel_order"][0].attributes["error.type"] == "OrderNotFound"


def test_uninstrument_restores_the_exchange(simulator: Any, spans: Any) -> None:
    provider, exporter = spans
    ex = simulator.point(ccxt.binance(simulator.ccxt_config("k", "s")))
    before = dict(ex.__dict__)
    shim.instrument_exchange(ex, tracer_provider=provider)
    assert shim.is_instrumented(ex)
    assert shim.instrument_exchange(ex, tracer_provider=provider) is ex  # idempotent
    assert "fetch_ticker" in ex.__dict__ and "fetchTicker" in ex.__dict__
    shim.uninstrument_exchange(ex)
    assert not shim.is_instrumented(ex)
    assert set(ex.__dict__) == set(before)
    assert ex.fetch_ticker.__func__ is type(ex).fetch_ticker
    ex.load_markets()
    ex.fetch_ticker("BTC/USDT")
    assert exporter.get_finished_spans() == ()


def test_instrument_ccxt_covers_new_exchanges_only_until_uninstrumented(
    simulator: Any, spans: Any
) -> None:
    provider, exporter = spans
    shim.instrument_ccxt(tracer_provider=provider)
    try:
        sync_ex = ccxt.binance(simulator.ccxt_config("k", "s"))
        async_ex = ccxt_async.binance(simulator.ccxt_config("k", "s"))
        assert shim.is_instrumented(sync_ex) and shim.is_instrumented(async_ex)
        simulator.point(sync_ex).load_markets()
        asyncio.run(async_ex.close())
    finally:
        shim.uninstrument_ccxt()
    assert not shim.is_instrumented(ccxt.binance())
    assert [s.name for s in exporter.get_finished_spans()] == ["ccxt.load_markets"]


def test_the_global_tracer_provider_is_used_by_default(simulator: Any) -> None:
    # With no provider given (and none configured), spans go to the global one:
    # the API's no-op default here, so the calls simply work.
    ex = simulator.point(ccxt.binance(simulator.ccxt_config("k", "s")))
    shim.instrument_exchange(ex)
    ex.load_markets()
    assert ex.fetch_ticker("BTC/USDT")["symbol"] == "BTC/USDT"
