"""The exchange simulator's websockets and server clock, driven by unmodified ccxt.pro.

Each test runs its own simulator on 127.0.0.1 (in the test's event loop, or in
a background thread where the controls are called from another thread) and
closes every exchange and simulator it started. Counts are exact where the
simulator controls them: a stream at rate 0 sends only what `push` asks for.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import ccxt
import ccxt.pro as ccxtpro
import pytest
from exchange_simulator import BinanceSimulator, point_at

from helpers.aio import run, until
from helpers.watcher import Watcher

# watch_ticker asks for the miniTicker stream: ccxt.pro's watchTickers drops the
# callerMethodName before it reads options['watchTicker']['name'].
BTC_TICKER = "btcusdt@miniTicker"
ETH_TICKER = "ethusdt@miniTicker"
BTC_DEPTH = "btcusdt@depth@100ms"
API_KEY = "CANARYKEY-ws-7f3a9c"
SECRET = "CANARYSECRET-ws-e1d2c3"


@asynccontextmanager
async def session(**kwargs: Any) -> AsyncIterator[tuple[BinanceSimulator, Any]]:
    """A simulator in this event loop and a ccxt.pro binance pointed at it."""
    async with BinanceSimulator(seed=3, **kwargs) as sim:
        exchange = sim.point(ccxtpro.binance(sim.ccxt_config(api_key=API_KEY, secret=SECRET)))
        try:
            await exchange.load_markets()
            yield sim, exchange
        finally:
            await exchange.close()


def sent(sim: BinanceSimulator, stream: str) -> int:
    return int(sim.state()["ws"]["messages_sent"].get(stream, 0))


def test_point_at_rewrites_rest_and_websocket_urls() -> None:
    exchange = point_at(ccxtpro.binance(), "http://127.0.0.1:5555")
    ws = exchange.urls["api"]["ws"]
    assert ws["spot"] == "ws://127.0.0.1:5555/stream.binance.com:9443/ws"
    assert ws["ws-api"]["spot"] == "ws://127.0.0.1:5555/ws-api.binance.com:443/ws-api/v3"
    assert exchange.urls["api"]["public"] == "http://127.0.0.1:5555/api.binance.com/api/v3"
    again = point_at(exchange, "http://127.0.0.1:6666")  # re-pointed, not nested
    assert again.urls["api"]["ws"]["spot"] == "ws://127.0.0.1:6666/stream.binance.com:9443/ws"
    assert all(
        not isinstance(url, str)
        or url.startswith(("http://127.0.0.1:6666/", "ws://127.0.0.1:6666/"))
        for url in again.urls["api"].values()
    )


def test_watch_ticker_returns_once_per_pushed_update() -> None:
    async def main() -> None:
        async with session(ws_rate=0) as (sim, exchange):
            watcher = Watcher(lambda: exchange.watch_ticker("BTC/USDT"), time.monotonic)
            try:
                await until(lambda: sim.subscribers(BTC_TICKER) == 1, what="the subscription")
                assert sim.push(BTC_TICKER, count=25, interval=0.02) == 1
                await until(lambda: watcher.count == 25, what="25 tickers")
                await asyncio.sleep(0.2)  # nothing more arrives: the rate is 0
                assert watcher.count == 25 and sent(sim, BTC_TICKER) == 25
                ticker = watcher.results[-1][1]
                assert ticker["symbol"] == "BTC/USDT" and ticker["last"] > 0
                # Paced by the rate instead: whatever was sent, ccxt returned.
                sim.set_stream_rate(40, BTC_TICKER)
                await asyncio.sleep(0.5)
                sim.set_stream_rate(0, BTC_TICKER)
                await asyncio.sleep(0.1)
                total = sent(sim, BTC_TICKER)
                assert 25 + 10 <= total <= 25 + 25
                assert watcher.count == total
                assert not watcher.errors
            finally:
                await watcher.stop()

    run(main())


def test_order_book_follows_the_diff_stream_over_the_rest_snapshot() -> None:
    async def main() -> None:
        async with session(ws_rate=50, volatility=5e-4) as (sim, exchange):
            nonces: list[int] = []
            for i in range(30):
                book = await exchange.watch_order_book("BTC/USDT")
                nonces.append(book["nonce"])
                bids, asks = book["bids"], book["asks"]
                assert bids == sorted(bids, key=lambda level: -level[0])
                assert asks == sorted(asks)
                assert bids[0][0] < asks[0][0]
                if i == 10:  # a REST snapshot moves the book too: the stream carries it
                    rest = await exchange.fetch_order_book("BTC/USDT", 5)
                    assert rest["nonce"] > nonces[-1]
            assert nonces == sorted(nonces) and len(set(nonces)) == len(nonces)
            # Stop the stream and let the last diff land: ccxt's copy is the simulator's book.
            sim.pause_streams(stream=BTC_DEPTH)
            await asyncio.sleep(0.1)
            book = exchange.orderbooks["BTC/USDT"]
            held = sim.order_book("BTC/USDT")
            assert book["nonce"] == held["lastUpdateId"]
            assert book["bids"][:200] == [[float(p), float(q)] for p, q in held["bids"]]
            assert book["asks"][:200] == [[float(p), float(q)] for p, q in held["asks"]]
            # The first return is the snapshot itself; each later one is a diff.
            assert sim.state()["ws"]["events_generated"][BTC_DEPTH] >= len(nonces) - 1

    run(main())


def test_a_paused_stream_is_silent_while_another_keeps_going() -> None:
    async def main() -> None:
        async with session(ws_rate=40) as (sim, exchange):
            btc = Watcher(lambda: exchange.watch_ticker("BTC/USDT"), time.monotonic)
            eth = Watcher(lambda: exchange.watch_ticker("ETH/USDT"), time.monotonic)
            try:
                await until(lambda: btc.count > 2 and eth.count > 2, what="both tickers")
                sim.pause_streams(stream=BTC_TICKER)
                await asyncio.sleep(0.1)  # what was in flight lands
                btc_paused, eth_paused = btc.count, eth.count
                await asyncio.sleep(0.5)
                assert btc.count == btc_paused
                assert eth.count >= eth_paused + 10
                paused = sim.state()["ws"]
                assert paused["paused"]["streams"] == [BTC_TICKER]
                assert paused["events_suppressed"][BTC_TICKER] >= 10
                sim.resume_streams(stream=BTC_TICKER)
                await until(lambda: btc.count >= btc_paused + 5, what="BTC again")
                # By symbol: every stream of ETH stops, BTC's go on.
                sim.pause_streams(symbol="ETH/USDT")
                await asyncio.sleep(0.1)
                eth_paused, btc_running = eth.count, btc.count
                await asyncio.sleep(0.4)
                assert eth.count == eth_paused and btc.count >= btc_running + 8
                sim.resume_streams()
                await until(lambda: eth.count >= eth_paused + 3, what="ETH again")
                assert not btc.errors and not eth.errors
            finally:
                await btc.stop()
                await eth.stop()

    run(main())


@pytest.mark.parametrize(
    ("mode", "refuse_seconds"), [("close", 0.0), ("abort", 0.0), ("close", 1.0)]
)
def test_ccxt_pro_reconnects_after_a_drop(mode: str, refuse_seconds: float) -> None:
    async def main() -> None:
        async with session(ws_rate=20) as (sim, exchange):
            watcher = Watcher(lambda: exchange.watch_ticker("BTC/USDT"), time.monotonic)
            try:
                await until(lambda: watcher.count >= 3, what="tickers")
                dropped_at = time.monotonic()
                assert sim.drop_connections(mode, refuse_seconds=refuse_seconds) == 1
                await until(
                    lambda: bool(watcher.results) and watcher.results[-1][0] > dropped_at,
                    within=refuse_seconds + 3,
                    what="an update after the reconnect",
                )
                first = next(t for t, _ in watcher.results if t > dropped_at)
                took = first - dropped_at
                print(f"reconnect after {mode} (refusing {refuse_seconds}s): {took * 1000:.0f} ms")
                assert refuse_seconds <= took < refuse_seconds + 1.5
                failure = watcher.errors[0][1]
                assert isinstance(failure, ccxt.NetworkError)
                closing = "1006" if mode == "abort" else "1001"
                assert closing in str(failure)
                ws = sim.state()["ws"]
                assert ws["connections_dropped"] == 1 and ws["connections_open"] == 1
                assert ws["connections_total"] == 2
                assert ws["handshakes_refused"] == (1 if refuse_seconds else 0)
            finally:
                await watcher.stop()

    run(main())


def test_lag_shows_in_the_timestamps_ccxt_returns_and_delay_in_arrival() -> None:
    async def main() -> None:
        async with session(ws_rate=0) as (sim, exchange):
            watcher = Watcher(lambda: exchange.watch_ticker("BTC/USDT"), time.monotonic)
            trades = Watcher(lambda: exchange.watch_trades("ETH/USDT"), time.monotonic)
            try:
                await until(lambda: sim.subscribers(BTC_TICKER) == 1, what="ticker subscription")
                await until(lambda: sim.subscribers("ethusdt@trade") == 1, what="trades")
                sim.set_lag(seconds=5.0, stream=BTC_TICKER)
                sim.set_lag(seconds=2.0, symbol="ETH/USDT")
                sim.push(BTC_TICKER)
                sim.push("ethusdt@trade")
                await until(lambda: watcher.count == 1 and trades.count == 1)
                now = exchange.milliseconds()
                assert 4_800 <= now - watcher.results[0][1]["timestamp"] <= 5_500
                assert 1_800 <= now - trades.results[0][1][-1]["timestamp"] <= 2_500
                # Delivery delay: the event is stamped when generated, and arrives late.
                sim.set_lag(delay=0.3, stream=BTC_TICKER)
                pushed = time.monotonic()
                sim.push(BTC_TICKER)
                await until(lambda: watcher.count == 2)
                arrived, ticker = watcher.results[1]
                assert 0.28 <= arrived - pushed < 1.0
                assert 250 <= exchange.milliseconds() - ticker["timestamp"] <= 1_000
                lags = sim.state()["ws"]["lag"]
                assert lags == {
                    f"stream:{BTC_TICKER}": {"seconds": 0.0, "delay": 0.3},
                    "symbol:ETHUSDT": {"seconds": 2.0, "delay": 0.0},
                }
            finally:
                await watcher.stop()
                await trades.stop()

    run(main())


@pytest.mark.parametrize("offset", [7.5, -7.5])
def test_the_clock_offset_moves_server_time_the_date_header_and_ws_times(offset: float) -> None:
    async def main() -> None:
        async with session(ws_rate=0, clock_offset=offset) as (sim, exchange):
            watcher = Watcher(lambda: exchange.watch_ticker("BTC/USDT"), time.monotonic)
            ohlcv = Watcher(lambda: exchange.watch_ohlcv("BTC/USDT", "1s"), time.monotonic)
            try:
                expected_ms = offset * 1000
                server = await exchange.fetch_time()
                assert abs(server - exchange.milliseconds() - expected_ms) < 300
                ping = sim.url + "/api.binance.com/api/v3/ping"
                async with aiohttp.ClientSession() as http, http.get(ping) as response:
                    date = email.utils.parsedate_to_datetime(response.headers["Date"])
                assert abs(date.timestamp() - time.time() - offset) <= 1.5
                await until(lambda: sim.subscribers(BTC_TICKER) == 1)
                await until(lambda: sim.subscribers("btcusdt@kline_1s") == 1)
                sim.push(BTC_TICKER)
                sim.push("btcusdt@kline_1s")
                await until(lambda: watcher.count == 1 and ohlcv.count == 1)
                now = exchange.milliseconds()
                assert abs(watcher.results[0][1]["timestamp"] - now - expected_ms) < 300
                candle_open = ohlcv.results[0][1][-1][0]
                assert abs(candle_open - now - expected_ms) < 1_300
                # Order times follow it too; ccxt's own remedy for a skewed server
                # clock (nonce = local time - measured difference) gets the order in.
                await exchange.load_time_difference()
                order = await exchange.create_order("BTC/USDT", "market", "buy", 0.001)
                assert abs(order["timestamp"] - exchange.milliseconds() - expected_ms) < 300
                assert sim.state()["clock"]["offset_s"] == offset
            finally:
                await watcher.stop()
                await ohlcv.stop()

    run(main())


@pytest.mark.parametrize("offset", [30.0, -30.0])
def test_signed_requests_outside_the_recv_window_fail_as_invalid_nonce(offset: float) -> None:
    async def main() -> None:
        async with session(ws_rate=0, clock_offset=offset) as (sim, exchange):
            with pytest.raises(ccxt.InvalidNonce):
                await exchange.fetch_balance()
            # The WebSocket API judges the subscription's timestamp the same way...
            api = sim.url.replace("http", "ws") + "/ws-api.binance.com:443/ws-api/v3"
            params = {"apiKey": API_KEY, "signature": "x", "timestamp": exchange.milliseconds()}
            request = {"id": 1, "method": "userDataStream.subscribe.signature", "params": params}
            async with aiohttp.ClientSession() as http, http.ws_connect(api) as ws:
                await ws.send_json(request)
                reply = await ws.receive_json()
            assert reply["status"] == 400 and reply["error"]["code"] == -1021
            # ...but ccxt.pro 4.5 loses the InvalidNonce there: handle_ws_error already
            # deletes client.subscriptions['spot'], and the subscriber's own except
            # deletes it again, raising KeyError.
            with pytest.raises((ccxt.InvalidNonce, KeyError)):
                await exchange.watch_balance()
            sim.set_clock_offset(0)
            balance = await exchange.fetch_balance()
            assert balance["USDT"]["free"] == 100_000

    run(main())


def test_watch_orders_and_watch_balance_see_orders_placed_over_rest() -> None:
    async def main() -> None:
        async with session(ws_rate=0) as (sim, exchange):
            orders = Watcher(lambda: exchange.watch_orders(), time.monotonic)
            balances = Watcher(lambda: exchange.watch_balance(), time.monotonic)
            try:
                await until(lambda: sim.subscribers("userData") == 1, what="user data")
                placed = await exchange.create_order("BTC/USDT", "limit", "buy", 0.01, 50_000)
                await until(lambda: orders.count >= 1 and balances.count >= 1)
                seen = orders.results[-1][1][-1]
                assert (seen["id"], seen["status"], seen["side"]) == (placed["id"], "open", "buy")
                assert (seen["price"], seen["amount"], seen["filled"]) == (50_000, 0.01, 0)
                held = sim.state()["balances"]["USDT"]
                usdt = balances.results[-1][1]["USDT"]
                assert (usdt["free"], usdt["used"]) == (float(held["free"]), float(held["locked"]))
                assert usdt["used"] == 500

                await exchange.cancel_order(placed["id"], "BTC/USDT")
                await until(lambda: orders.results[-1][1][-1]["status"] == "canceled")
                await until(lambda: balances.results[-1][1]["USDT"]["used"] == 0)

                filled = await exchange.create_order("ETH/USDT", "market", "sell", 1)
                await until(lambda: orders.results[-1][1][-1]["id"] == filled["id"])
                await until(lambda: orders.results[-1][1][-1]["status"] == "closed")
                last = orders.results[-1][1][-1]
                assert last["filled"] == 1 and last["symbol"] == "ETH/USDT"
                await until(lambda: balances.results[-1][1].get("ETH", {}).get("free") == 99)
                assert sim.state()["ws"]["events_generated"]["userData"] == 2 + 2 + 3
                assert not orders.errors and not balances.errors
            finally:
                await orders.stop()
                await balances.stop()

    run(main())


def test_listen_key_stream_and_raw_protocol() -> None:
    async def main() -> None:
        async with BinanceSimulator(seed=3, ws_rate=0) as sim, aiohttp.ClientSession() as http:
            rest = sim.url + "/api.binance.com/api/v3/userDataStream"
            headers = {"X-MBX-APIKEY": API_KEY}
            async with http.post(rest, headers=headers) as response:
                key = (await response.json())["listenKey"]
            async with http.put(rest, params={"listenKey": key}, headers=headers) as response:
                assert response.status == 200
            async with http.put(rest, params={"listenKey": "nope"}, headers=headers) as response:
                assert (await response.json())["code"] == -1125
            stream = sim.url.replace("http", "ws") + "/stream.binance.com:9443"
            async with (
                http.ws_connect(f"{stream}/ws/{key}") as user,
                http.ws_connect(f"{stream}/ws") as market,
            ):
                await market.send_json({"method": "SUBSCRIBE", "params": [BTC_DEPTH], "id": 1})
                assert await market.receive_json() == {"result": None, "id": 1}
                await market.send_json({"method": "SUBSCRIBE", "params": ["xyz@ticker"], "id": 2})
                error = await market.receive_json()
                assert error["id"] == 2 and error["error"]["code"] == 2
                await market.send_json({"method": "LIST_SUBSCRIPTIONS", "id": 3})
                assert await market.receive_json() == {"result": [BTC_DEPTH], "id": 3}
                sim.push(BTC_DEPTH, count=3)
                diffs = [await market.receive_json() for _ in range(3)]
                assert [d["U"] for d in diffs[1:]] == [d["u"] + 1 for d in diffs[:-1]]
                route = next(c for c in sim.state()["ws"]["connections"] if c["id"] == 1)
                assert route["route"] == "/ws/<listenKey>" and key not in json.dumps(sim.state())

                order = {"symbol": "BTCUSDT", "side": "SELL", "type": "MARKET", "quantity": "0.5"}
                async with http.post(
                    sim.url + "/api.binance.com/api/v3/order",
                    data={**order, "signature": "x"},
                    headers=headers,
                ) as response:
                    assert response.status == 200
                events = [await user.receive_json() for _ in range(3)]
                assert [e["e"] for e in events] == ["executionReport"] * 2 + [
                    "outboundAccountPosition"
                ]
                assert [e["x"] for e in events[:2]] == ["NEW", "TRADE"]
                assert events[1]["X"] == "FILLED" and events[1]["z"] == "0.50000000"
            async with http.delete(rest, params={"listenKey": key}, headers=headers) as response:
                assert response.status == 200
            assert sim.state()["listen_keys_active"] == 0

    run(main())


def test_http_controls_from_another_thread() -> None:
    def call(base: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            base + path, data=data, method="GET" if body is None else "POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:  # loopback only
                return response.status, json.load(response)
        except urllib.error.HTTPError as error:
            return error.code, json.load(error)

    with BinanceSimulator(seed=3, ws_rate=0).running() as sim:
        base = sim.url + "/_sim"

        async def main() -> None:
            exchange = sim.point(ccxtpro.binance(sim.ccxt_config()))
            watcher = Watcher(lambda: exchange.watch_ticker("BTC/USDT"), time.monotonic)
            try:
                await until(lambda: sim.subscribers(BTC_TICKER) == 1)
                status, body = await asyncio.to_thread(
                    call, base, "/ws/push", {"stream": BTC_TICKER, "count": 4, "interval": 0.02}
                )
                assert (status, body) == (200, {"receivers": 1})
                await until(lambda: watcher.count == 4)
                # The Python controls from this thread (the simulator's loop is another).
                assert sim.push(BTC_TICKER, count=2, interval=0.02) == 1
                await until(lambda: watcher.count == 6)
                checks: list[tuple[str, dict[str, Any], int]] = [
                    ("/ws/pause", {"symbol": "BTC/USDT"}, 200),
                    ("/ws/lag", {"seconds": 1.5, "stream": BTC_TICKER}, 200),
                    ("/ws/rate", {"rate": 5}, 200),
                    ("/clock", {"offset": -2.5}, 200),
                    ("/ws/push", {"stream": ETH_TICKER}, 409),  # nobody listens
                    ("/ws/pause", {"stream": "nope@ticker"}, 400),
                    ("/ws/lag", {"seconds": -1}, 400),
                    ("/ws/drop", {"mode": "explode"}, 400),
                    ("/ws/rate", {"rate": 5, "bogus": 1}, 400),
                    ("/clock", {"offset": "soon"}, 400),
                ]
                for path, payload, expected in checks:
                    status, body = await asyncio.to_thread(call, base, path, payload)
                    assert status == expected, (path, payload, body)
                _, state = await asyncio.to_thread(call, base, "/state")
                ws = state["ws"]
                assert ws["paused"]["symbols"] == ["BTCUSDT"]
                assert ws["lag"] == {f"stream:{BTC_TICKER}": {"seconds": 1.5, "delay": 0.0}}
                assert ws["rate"]["default"] == 5 and ws["subscriptions"] == {BTC_TICKER: 1}
                assert ws["messages_sent"] == {BTC_TICKER: 6}
                assert state["clock"]["offset_s"] == -2.5
                _, clock = await asyncio.to_thread(call, base, "/clock")
                assert abs(clock["server_time"] - time.time() * 1000 + 2_500) < 500
                status, body = await asyncio.to_thread(call, base, "/ws/drop", {"mode": "close"})
                assert (status, body) == (200, {"dropped": 1})
                await until(lambda: bool(watcher.errors), what="the drop")
                await until(
                    lambda: (
                        sim.state()["ws"]["connections_total"] == 2
                        and sim.subscribers(BTC_TICKER) == 1
                    ),
                    what="the reconnect",
                )
                await asyncio.to_thread(call, base, "/reset", {})
                reset = sim.state()
                assert reset["clock"]["offset_s"] == 0 and reset["ws"]["lag"] == {}
                assert reset["ws"]["paused"] == {"all": False, "streams": [], "symbols": []}
            finally:
                await watcher.stop()
                await exchange.close()

        run(main())
    assert sim.state()["ws"]["connections_open"] == 0


def test_no_credential_reaches_the_state_the_wire_or_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="tickscope.exchange_simulator")

    async def main() -> None:
        async with session(ws_rate=0) as (sim, exchange):
            balances = Watcher(lambda: exchange.watch_balance(), time.monotonic)
            try:
                await until(lambda: sim.subscribers("userData") == 1)
                await exchange.create_order("BTC/USDT", "market", "buy", 0.001)
                await until(lambda: balances.count == 1)
                # A bad request on the WebSocket API: its error names no value.
                async with aiohttp.ClientSession() as http:
                    api = sim.url.replace("http", "ws") + "/ws-api.binance.com:443/ws-api/v3"
                    async with http.ws_connect(api) as ws:
                        request = {"apiKey": API_KEY, "signature": SECRET}  # no timestamp
                        await ws.send_json(
                            {
                                "id": "x",
                                "method": "userDataStream.subscribe.signature",
                                "params": request,
                            }
                        )
                        reply = await ws.receive_str()
                assert json.loads(reply)["error"]["code"] == -1102
                for text in (reply, json.dumps(sim.state())):
                    assert API_KEY not in text and SECRET not in text
            finally:
                await balances.stop()

    run(main())
    assert all(
        API_KEY not in r.getMessage() and SECRET not in r.getMessage() for r in caplog.records
    )


def test_stop_closes_open_websockets_promptly() -> None:
    async def main() -> None:
        sim = BinanceSimulator(seed=3)
        await sim.start()
        exchange = sim.point(ccxtpro.binance(sim.ccxt_config()))
        watcher = Watcher(lambda: exchange.watch_order_book("BTC/USDT"), time.monotonic)
        try:
            await until(lambda: watcher.count >= 2)
            started = time.monotonic()
            await sim.stop()
            assert time.monotonic() - started < 2.0
            await until(lambda: bool(watcher.errors), what="ccxt to notice")
            assert "1001" in str(watcher.errors[0][1])
        finally:
            await watcher.stop()
            await exchange.close()
            await sim.stop()

    run(main())
