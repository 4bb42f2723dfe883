"""A local stand-in for Binance's spot API (REST v3 and websockets), for tickscope's demo and tests.

It speaks enough of the API that the unmodified ccxt client, sync or async, can
load markets, read tickers, order books, candles and trades, read the balance
and place, read, list and cancel orders; that unmodified ccxt.pro can watch
tickers, order books (diff depth stream over the REST snapshot), trades, candles,
orders and the balance over websockets on the same port (see
exchange_simulator_ws.py); and it can be told to misbehave (rate limits, bans,
outages, slowness; paused, dropped and lagging streams; a server clock that is
off) so the metrics tickscope derives from those calls can be checked end to end.

ccxt is pointed at it by rewriting its API URLs, `https://HOST/PATH` becoming
`http://127.0.0.1:PORT/HOST/PATH` and `wss://HOST/PATH` becoming
`ws://127.0.0.1:PORT/HOST/PATH` (see `point_at`), so requests arrive with the
original host as the first path segment; any host is accepted.

    python examples/exchange_simulator.py [--port N] [--ws-rate R]

prints `exchange simulator listening on http://127.0.0.1:PORT` once it accepts
connections. It can then be driven over HTTP, from another process:

    POST   /_sim/faults      {"path": "ticker", "status": 429, "count": 3}
    DELETE /_sim/faults
    GET    /_sim/state       requests, orders, balances, websockets, clock
    POST   /_sim/reset
    POST   /_sim/ws/pause    {"stream": "btcusdt@ticker"} | {"symbol": "BTC/USDT"} | {}
    POST   /_sim/ws/resume   (the same selectors; {} resumes everything)
    POST   /_sim/ws/drop     {"mode": "close" | "abort", "code": 1001, "refuse_seconds": 0}
    POST   /_sim/ws/lag      {"seconds": 2.5, "delay": 0.0, "stream" | "symbol": ...}
    POST   /_sim/ws/rate     {"rate": 10, "stream": ...}
    POST   /_sim/ws/push     {"stream": "btcusdt@ticker", "count": 5, "interval": 0.02}
    GET    /_sim/clock
    POST   /_sim/clock       {"offset": -2.5}

The clock offset moves everything the simulator stamps: serverTime, order
times, ticker and candle times, the HTTP Date header and websocket event
times; signed requests are then judged against it like Binance does (-1021
outside recvWindow, or more than 1 s ahead).

Credentials are never checked, stored, logged or echoed: private calls only
need an `X-MBX-APIKEY` header and a `signature` parameter to be present.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email.utils
import http
import json
import logging
import math
import random
import re
import secrets
import signal
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, ROUND_UP, Decimal, InvalidOperation
from types import TracebackType
from typing import TYPE_CHECKING, Any

from aiohttp import web

# examples/ is not a package: at run time its folder is on sys.path (a script's
# own folder, or a test's conftest), while mypy, run from the repository root
# with explicit package bases, names the module by its path.
if TYPE_CHECKING:
    from examples.exchange_simulator_ws import DEFAULT_RATE, USER_DATA, StreamSpec, WsHub
else:
    from exchange_simulator_ws import DEFAULT_RATE, USER_DATA, StreamSpec, WsHub

log = logging.getLogger("tickscope.exchange_simulator")

HOST = "127.0.0.1"
DEFAULT_SYMBOLS: dict[str, float] = {
    "BTC/USDT": 60000.0,
    "ETH/USDT": 3000.0,
    "SOL/USDT": 150.0,
    "BNB/USDT": 600.0,
}
DEFAULT_BALANCES: dict[str, float] = {
    "USDT": 100000.0,
    "BTC": 10.0,
    "ETH": 100.0,
    "SOL": 1000.0,
    "BNB": 100.0,
}
# An injected latency is a way to make clients time out, never to park a handler
# for ever: a forgotten fault must not keep the server from shutting down.
MAX_LATENCY_S = 60.0
# Binance's spot limit; only enforced when a `weight_limit` is given.
WEIGHT_LIMIT_1M = 6000


def _too_many_requests(limit: int) -> str:
    return (
        f"Too many requests; current limit is {limit} request weight per 1 MINUTE. "
        "Please use the websocket for live updates to avoid polling the API."
    )


TOO_MANY_REQUESTS_MSG = _too_many_requests(WEIGHT_LIMIT_1M)
INSUFFICIENT_BALANCE_MSG = "Account has insufficient balance for requested action."
UNKNOWN_ERROR_MSG = "An unknown error occured while processing the request."  # Binance's spelling
BAN_SECONDS = 2  # short, so a test that honours Retry-After does not stall

EIGHT_DP = Decimal("0.00000001")
HALF_SPREAD = Decimal("0.00005")  # 1 bp spread: tight enough that a demo quotes
PRICE_STEP_S = 0.1  # one random-walk step per 100 ms of wall time
MAX_WALK_STEPS = 600  # after a long idle period, catch up at most a minute's worth

INTERVALS_MS: dict[str, int] = {
    "1s": 1_000,
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "6h": 21_600_000,
    "8h": 28_800_000,
    "12h": 43_200_000,
    "1d": 86_400_000,
    "3d": 259_200_000,
    "1w": 604_800_000,
    "1M": 2_592_000_000,  # a 30-day month: candles need not match the calendar here
}

SECURITY_NONE = "NONE"
SECURITY_API_KEY = "API_KEY"  # MARKET_DATA endpoints: key header, no signature
SECURITY_SIGNED = "SIGNED"  # TRADE and USER_DATA endpoints

OPEN_STATUSES = frozenset({"NEW", "PARTIALLY_FILLED"})
FAULT_FIELDS = frozenset({"path", "status", "count", "latency", "body", "headers"})

BOOK_LEVELS = 200  # per side, in the REST snapshot and the streamed book alike
BOOK_HISTORY = 10_000  # diffs kept, so that a paused depth stream can catch up
BOOK_GRID = Decimal("0.0001")  # levels about one step of the price walk apart
# Binance's rule for signed requests: timestamp < serverTime + 1000 and
# serverTime - timestamp <= recvWindow (default 5000 ms, at most 60000).
RECV_WINDOW_MS = 5_000
MAX_RECV_WINDOW_MS = 60_000
AHEAD_LIMIT_MS = 1_000
MAX_CLOCK_OFFSET_S = 30 * 86_400.0
LISTEN_KEY_TTL_S = 3_600.0


class BinanceError(Exception):
    """An error answered the way Binance answers it: `{"code": ..., "msg": ...}`."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status = status
        self.code = code
        self.msg = msg


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _fmt(value: Decimal) -> str:
    # Binance sends every price and quantity as a string with 8 decimals.
    return f"{value:.8f}"


def _to_decimal(value: float) -> Decimal:
    return Decimal(str(value))


def _floor_to(value: Decimal, step: Decimal) -> Decimal:
    return (value / step).to_integral_value(ROUND_DOWN) * step


def _round_to(value: Decimal, step: Decimal, rounding: str = ROUND_HALF_EVEN) -> Decimal:
    return (value / step).to_integral_value(rounding) * step


def _cost(price: Decimal, qty: Decimal) -> Decimal:
    return (price * qty).quantize(EIGHT_DP)


def _filters_for(price: float) -> tuple[Decimal, Decimal]:
    """Tick and step sizes like Binance's: about six significant digits of price
    (never finer than a cent above 1), a lot worth roughly 0.1-1 quote unit."""
    magnitude = math.floor(math.log10(price))
    tick = Decimal(1).scaleb(min(-2, magnitude - 4))
    step = Decimal(1).scaleb(-min(8, max(0, magnitude + 1)))
    return tick, step


def _mandatory(name: str) -> BinanceError:
    return BinanceError(
        400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
    )


def _illegal(name: str) -> BinanceError:
    # The message names the parameter, never its value: values may be credentials.
    return BinanceError(400, -1100, f"Illegal characters found in parameter '{name}'.")


def _required(params: Mapping[str, str], name: str) -> str:
    value = params.get(name)
    if value is None or value == "":
        raise _mandatory(name)
    return value


def _opt_decimal(params: Mapping[str, str], name: str) -> Decimal | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise _illegal(name) from None
    if not value.is_finite() or value < 0:
        raise _illegal(name)
    return value


def _req_decimal(params: Mapping[str, str], name: str) -> Decimal:
    value = _opt_decimal(params, name)
    if value is None:
        raise _mandatory(name)
    return value


def _opt_int(params: Mapping[str, str], name: str) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise _illegal(name) from None


def _int_value(raw: Any, name: str) -> int:
    """An integer parameter sent as a string (REST) or a JSON number (WebSocket API)."""
    if isinstance(raw, bool):
        raise _illegal(name)
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str):
        try:
            return int(raw)
        except ValueError:
            pass
    raise _illegal(name)


def _limit(params: Mapping[str, str], default: int, maximum: int) -> int:
    value = _opt_int(params, "limit")
    if value is None:
        return default
    if value < 1:
        raise _illegal("limit")
    return min(value, maximum)


def _json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        text=json.dumps(data, separators=(",", ":")),
        status=status,
        headers=dict(headers or {}),
        content_type="application/json",
    )


def _error_response(error: BinanceError, headers: Mapping[str, str]) -> web.Response:
    return _json_response({"code": error.code, "msg": error.msg}, error.status, headers)


@dataclass
class _Market:
    symbol: str  # unified, "BTC/USDT"
    id: str  # Binance's, "BTCUSDT"
    base: str
    quote: str
    tick: Decimal
    step: Decimal
    initial_mid: float
    mid: float = 0.0
    high: float = 0.0
    low: float = 0.0
    volume: Decimal = Decimal(0)
    quote_volume: Decimal = Decimal(0)
    trades: int = 0
    ws_trade_id: int = 1  # the trade stream's own ids; they keep growing across reset()

    def reset(self) -> None:
        self.mid = self.high = self.low = self.initial_mid
        # A plausible day of volume (about 50M quote), so tickers do not look dead.
        self.volume = _to_decimal(50_000_000 / self.initial_mid).quantize(EIGHT_DP)
        self.quote_volume = Decimal(50_000_000)
        self.trades = 86_400


@dataclass
class _Order:
    order_id: int
    client_order_id: str
    market: _Market
    side: str
    type: str
    time_in_force: str
    price: Decimal
    orig_qty: Decimal
    orig_quote_qty: Decimal
    time: int
    status: str = "NEW"
    executed_qty: Decimal = Decimal(0)
    cum_quote: Decimal = Decimal(0)
    update_time: int = 0
    reserved_asset: str = ""
    reserved: Decimal = Decimal(0)
    fills: list[dict[str, Any]] = field(default_factory=list)
    cancel_client_id: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "symbol": self.market.id,
            "orderId": self.order_id,
            "orderListId": -1,
            "clientOrderId": self.client_order_id,
            "price": _fmt(self.price),
            "origQty": _fmt(self.orig_qty),
            "executedQty": _fmt(self.executed_qty),
            "cummulativeQuoteQty": _fmt(self.cum_quote),  # Binance's spelling
            "status": self.status,
            "timeInForce": self.time_in_force,
            "type": self.type,
            "side": self.side,
            "stopPrice": _fmt(Decimal(0)),
            "icebergQty": _fmt(Decimal(0)),
            "time": self.time,
            "updateTime": self.update_time,
            "isWorking": True,
            "workingTime": self.time,
            "origQuoteOrderQty": _fmt(self.orig_quote_qty),
            "selfTradePreventionMode": "EXPIRE_MAKER",
        }


@dataclass
class _Trade:
    trade_id: int
    order_id: int
    market: _Market
    is_buyer: bool
    price: Decimal
    qty: Decimal
    time: int

    def as_json(self) -> dict[str, Any]:
        return {
            "symbol": self.market.id,
            "id": self.trade_id,
            "orderId": self.order_id,
            "orderListId": -1,
            "price": _fmt(self.price),
            "qty": _fmt(self.qty),
            "quoteQty": _fmt(_cost(self.price, self.qty)),
            "commission": _fmt(Decimal(0)),
            # Binance charges the asset received; the simulator charges nothing.
            "commissionAsset": self.market.base if self.is_buyer else self.market.quote,
            "time": self.time,
            "isBuyer": self.is_buyer,
            "isMaker": False,
            "isBestMatch": True,
        }


@dataclass
class _BookDiff:
    first: int  # Binance's "U"
    last: int  # and "u"
    bids: dict[int, int]  # price in ticks -> quantity in lots; 0 removes the level
    asks: dict[int, int]


class _Book:
    """One market's order book, on a grid of prices, in ticks and lots.

    Every change is a diff with consecutive update ids, kept in `history`: the
    REST snapshot (`lastUpdateId`) and the diff depth stream (`U`, `u`) read the
    same book, so a client that follows Binance's recipe keeps a valid copy.
    """

    def __init__(self, m: _Market, rng: random.Random, update_id: int) -> None:
        self.market = m
        self.rng = rng
        self.grid = max(1, int(_to_decimal(m.initial_mid) * BOOK_GRID / m.tick))
        self.lot = max(1, int(_to_decimal(10_000 / m.initial_mid) / m.step))  # ~10k quote a level
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.update_id = update_id
        self.history: deque[_BookDiff] = deque(maxlen=BOOK_HISTORY)

    def _qty(self) -> int:
        return max(1, round(self.lot * self.rng.uniform(0.1, 2.0)))

    def _move(self, side: dict[int, int], wanted: set[int]) -> dict[int, int]:
        changes: dict[int, int] = {}
        for price in [p for p in side if p not in wanted]:
            del side[price]
            changes[price] = 0
        for price in wanted - side.keys():
            side[price] = changes[price] = self._qty()
        return changes

    def step(self, bid: int, ask: int) -> _BookDiff:
        """Move the book to the touch `bid`/`ask` (in ticks): levels that crossed
        or fell off the far end go, new ones come in at the grid, and a couple of
        quantities change on each side."""
        g, n = self.grid, BOOK_LEVELS - 1
        top = (bid - 1) // g * g
        bids = self._move(self.bids, {p for p in (bid, *range(top, top - g * n, -g)) if p > 0})
        low = (ask // g + 1) * g
        asks = self._move(self.asks, {ask, *range(low, low + g * n, g)})
        for side, changes in ((self.bids, bids), (self.asks, asks)):
            for price in self.rng.sample(list(side), min(2, len(side))):
                side[price] = changes[price] = self._qty()
        count = len(bids) + len(asks)
        diff = _BookDiff(self.update_id + 1, self.update_id + count, bids, asks)
        self.update_id += count
        self.history.append(diff)
        return diff

    def since(self, cursor: int) -> tuple[int, int, dict[int, int], dict[int, int]]:
        """Every change after update id `cursor`, merged: (U, u, bids, asks)."""
        diffs: list[_BookDiff] = []
        for diff in reversed(self.history):
            if diff.last <= cursor:
                break
            diffs.append(diff)
        bids: dict[int, int] = {}
        asks: dict[int, int] = {}
        for diff in reversed(diffs):
            bids.update(diff.bids)
            asks.update(diff.asks)
        first = diffs[-1].first if diffs else cursor + 1
        return first, self.update_id, bids, asks

    def price(self, ticks: int) -> str:
        return _fmt(self.market.tick * ticks)

    def qty(self, lots: int) -> str:
        return _fmt(self.market.step * lots)

    def levels(self, side: dict[int, int], prices: list[int]) -> list[list[str]]:
        return [[self.price(p), self.qty(side.get(p, 0))] for p in prices]

    def snapshot(self, limit: int) -> dict[str, Any]:
        bids = sorted(self.bids, reverse=True)[:limit]
        asks = sorted(self.asks)[:limit]
        return {
            "lastUpdateId": self.update_id,
            "bids": self.levels(self.bids, bids),
            "asks": self.levels(self.asks, asks),
        }


@dataclass
class Fault:
    """One injected misbehaviour; see `BinanceSimulator.inject`."""

    id: int
    path: str
    pattern: re.Pattern[str]
    status: int | None
    remaining: int | None
    latency: float
    body: dict[str, Any] | None
    headers: dict[str, str]
    fired: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": self.path,
            "status": self.status,
            "remaining": self.remaining,
            "latency": self.latency,
            "body": self.body,
            "headers": self.headers,
            "fired": self.fired,
        }


_Handler = Callable[[dict[str, str]], Any]


@dataclass(frozen=True)
class _Endpoint:
    handler: _Handler
    security: str


class BinanceSimulator:
    """An in-memory Binance spot exchange served over HTTP and websockets on 127.0.0.1.

    Use it from asyncio (`await start()` / `await stop()`, or `async with`), or
    from synchronous code with `running()`, which serves from a background
    thread. `inject`, `clear_faults`, `state`, `reset` and the websocket and
    clock controls (`pause_streams`, `resume_streams`, `drop_connections`,
    `set_lag`, `set_stream_rate`, `push`, `set_clock_offset`) may be called from
    any thread while it runs.
    """

    def __init__(
        self,
        port: int = 0,
        symbols: dict[str, float] | None = None,
        balances: dict[str, float] | None = None,
        *,
        seed: int | None = None,
        volatility: float = 1e-4,
        weight_limit: int | None = None,
        ws_rate: float = DEFAULT_RATE,
        clock_offset: float = 0.0,
    ) -> None:
        """`symbols` maps unified symbols to mid prices; `balances` assets to
        free amounts. `volatility` is the standard deviation of each 100 ms
        random-walk step (0 keeps prices still); `weight_limit`, if given, makes
        the simulator answer 429 once a minute's request weight exceeds it.
        `ws_rate` is every websocket stream's updates per second (0: only
        `push` sends; the price walk steps every 100 ms of wall time, so at the
        default 10/s each update carries a new price, and the depth stream
        changes a few levels every update); `clock_offset` the server clock's
        offset in seconds."""
        if not 0 <= port <= 65535:
            raise ValueError("port must be in 0..65535")
        if volatility < 0:
            raise ValueError("volatility must not be negative")
        self.port = port
        self._volatility = volatility
        self._weight_limit = weight_limit
        self._rng = random.Random(seed)
        # The streams draw from their own generators, so that watching a market
        # does not change the price walk a seed gives.
        self._ws_rng = random.Random(None if seed is None else f"{seed}:ws")
        self._markets: dict[str, _Market] = {}
        for symbol, price in (DEFAULT_SYMBOLS if symbols is None else symbols).items():
            base, sep, quote = symbol.partition("/")
            if not sep or not base or not quote or "/" in quote:
                raise ValueError(f"symbol {symbol!r} is not BASE/QUOTE")
            if not price > 0 or not math.isfinite(price):
                raise ValueError(f"price of {symbol!r} must be positive")
            tick, step = _filters_for(price)
            market = _Market(symbol, base + quote, base, quote, tick, step, float(price))
            market.reset()
            self._markets[market.id] = market
        if not self._markets:
            raise ValueError("at least one symbol is needed")
        # balances={} is a real choice (an empty account), unlike symbols={}.
        initial = DEFAULT_BALANCES if balances is None else balances
        self._initial_balances = {asset: _to_decimal(amount) for asset, amount in initial.items()}
        # One lock for all state: handlers run on the server's loop, while tests
        # call inject/state/reset from their own thread. It is never held across
        # an await, so it cannot stall the loop for longer than a handler runs.
        self._lock = threading.RLock()
        self._free: dict[str, Decimal] = {}
        self._locked: dict[str, Decimal] = {}
        self._orders: dict[int, _Order] = {}
        self._my_trades: list[_Trade] = []
        self._faults: list[Fault] = []
        self._request_counts: Counter[str] = Counter()
        self._weight_window = 0
        self._weight_used = 0
        self._order_window_10s = 0
        self._orders_10s = 0
        self._order_window_1d = 0
        self._orders_1d = 0
        self._faults_fired = 0
        self._last_step = time.monotonic()
        # Ids keep growing across reset(): a client holding an id from before a
        # reset must get "unknown order", never somebody else's order.
        self._next_order_id = 1
        self._next_trade_id = 1
        self._next_fault_id = 1
        self._clock_offset_ms = 0
        self.set_clock_offset(clock_offset)
        self._initial_clock_offset_ms = self._clock_offset_ms
        self._books: dict[str, _Book] = {}
        for market in self._markets.values():
            rng = random.Random(None if seed is None else f"{seed}:{market.id}:book")
            book = self._books[market.id] = _Book(market, rng, 1_000_000)
            self._book_step(market)
            book.history.clear()  # the initial fill is nobody's update
        self._listen_keys: dict[str, float] = {}  # key -> expiry (time.monotonic())
        self._ws = WsHub(self, ws_rate)
        self._reset_state()
        self._routes = self._build_routes()
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ----- lifecycle -------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL of the running server, e.g. `http://127.0.0.1:54321`."""
        if self._runner is None:
            raise RuntimeError("the simulator is not running")
        return f"http://{HOST}:{self.port}"

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("the simulator is already running")
        self._stopping = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # aiohttp stamps Date itself; this runs after it, so that the header
        # follows the simulator's clock.
        app.on_response_prepare.append(self._stamp_date)
        # access_log=None: an access log would record query strings, which carry
        # the signature of every private call. handler_cancellation: a client
        # that gives up on an injected latency frees its handler at once.
        runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=5.0
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, HOST, self.port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        self._ws.start(asyncio.get_running_loop())

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        if self._stopping is not None:
            self._stopping.set()  # wakes injected-latency sleeps so cleanup is prompt
        # Websockets first: aiohttp's shutdown would wait for their handlers.
        await self._ws.stop()
        await runner.cleanup()

    async def _stamp_date(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers["Date"] = email.utils.formatdate(self._now_ms() / 1000, usegmt=True)

    async def __aenter__(self) -> BinanceSimulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def start_in_thread(self, timeout: float = 10.0) -> None:
        """Serve from a background thread with its own event loop (for sync code)."""
        if self._thread is not None:
            raise RuntimeError("the simulator thread is already running")
        loop = asyncio.new_event_loop()
        started = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:  # re-raised in the thread that asked
                failure.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            try:
                loop.run_forever()
            finally:
                _drain(loop)
                loop.close()

        # daemon: a test that forgets to stop the simulator must not hang the
        # interpreter at exit.
        thread = threading.Thread(target=serve, name="exchange-simulator", daemon=True)
        thread.start()
        if not started.wait(timeout):
            raise TimeoutError("the exchange simulator did not start in time")
        if failure:
            thread.join(timeout)
            raise failure[0]
        self._thread, self._loop = thread, loop

    def stop_in_thread(self, timeout: float = 10.0) -> None:
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        self._thread = self._loop = None
        try:
            asyncio.run_coroutine_threadsafe(self.stop(), loop).result(timeout)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)

    @contextlib.contextmanager
    def running(self) -> Iterator[BinanceSimulator]:
        """`with BinanceSimulator().running() as sim:` serves in a background thread."""
        self.start_in_thread()
        try:
            yield self
        finally:
            self.stop_in_thread()

    # ----- pointing ccxt at it ---------------------------------------------

    def point(self, exchange: Any) -> Any:
        """Rewrite `exchange.urls['api']` so every call comes here; returns `exchange`.

        `https://api.binance.com/api/v3` becomes
        `http://127.0.0.1:PORT/api.binance.com/api/v3`, and the websocket ones
        (`urls['api']['ws']`, ccxt.pro) `wss://stream.binance.com:9443/ws`
        `ws://127.0.0.1:PORT/stream.binance.com:9443/ws`. URLs already pointed at
        a simulator are re-pointed, not nested.
        """
        return point_at(exchange, self.url)

    def ccxt_config(self, api_key: str | None = None, secret: str | None = None) -> dict[str, Any]:
        """Constructor config for `ccxt.binance`: spot markets only, so that
        load_markets needs just /api/v3/exchangeInfo, and no client-side throttle."""
        config: dict[str, Any] = {
            "options": {
                "fetchMarkets": {"types": ["spot"]},
                "fetchCurrencies": False,
                "fetchMargins": False,
            },
            "enableRateLimit": False,
        }
        if api_key is not None:
            config["apiKey"] = api_key
        if secret is not None:
            config["secret"] = secret
        return config

    # ----- websockets and the clock ----------------------------------------

    def pause_streams(self, stream: str | None = None, symbol: str | None = None) -> None:
        """Pause one stream (`"btcusdt@ticker"`, `"btcusdt@depth@100ms"`,
        `"userData"`), every stream of `symbol` (`"BTC/USDT"` or `"BTCUSDT"`), or
        everything. A paused stream generates nothing (user data events are
        dropped); its connections stay open, so the client sees silence."""
        self._ws.pause(stream, symbol)

    def resume_streams(self, stream: str | None = None, symbol: str | None = None) -> None:
        """Undo `pause_streams` for the same selector; with neither, every pause."""
        self._ws.resume(stream, symbol)

    def drop_connections(
        self, mode: str = "close", code: int = 1001, refuse_seconds: float = 0.0
    ) -> int:
        """Drop every websocket: `"close"` with a close frame (`code`), `"abort"`
        by resetting the TCP connection. New handshakes are refused (503,
        Retry-After) for `refuse_seconds`. Returns how many were dropped."""
        return self._ws.drop(mode, code, refuse_seconds)

    def set_lag(
        self,
        seconds: float = 0.0,
        delay: float = 0.0,
        stream: str | None = None,
        symbol: str | None = None,
    ) -> None:
        """Websocket events stamped `seconds` behind the simulator's clock, and/or
        delivered `delay` seconds late, for a stream, a symbol or everything (the
        most specific setting wins; 0, 0 removes one)."""
        self._ws.set_lag(seconds, delay, stream, symbol)

    def set_stream_rate(self, rate: float, stream: str | None = None) -> None:
        """Updates per second of a stream, or the default; 0: only `push` sends."""
        self._ws.set_rate(rate, stream)

    def push(self, stream: str, count: int = 1, interval: float = 0.0) -> int:
        """Send exactly `count` events of `stream` (`interval` seconds apart) to
        its subscribers, whatever its rate or pause; returns how many
        connections get them (LookupError if none is subscribed)."""
        return self._ws.push(stream, count, interval)

    def subscribers(self, stream: str) -> int:
        """How many connections receive `stream` now (`"userData"` included)."""
        return self._ws.subscribers(stream)

    def order_book(self, symbol: str, limit: int = BOOK_LEVELS) -> dict[str, Any]:
        """The book as the simulator holds it now, best levels first, prices and
        quantities as strings. Unlike GET /api/v3/depth, reading it changes nothing."""
        with self._lock:
            return self._books[self.ws_market_id(symbol)].snapshot(limit)

    @property
    def clock_offset(self) -> float:
        """The server clock's offset from this machine's, in seconds."""
        return self._clock_offset_ms / 1000

    def set_clock_offset(self, seconds: float) -> None:
        """Move the server clock `seconds` (either sign) from this machine's:
        serverTime, order times, tickers, candles, trades, the Date header and
        websocket events all follow, and signed requests are judged by it."""
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise TypeError("offset must be a number of seconds")
        if not math.isfinite(seconds) or abs(seconds) > MAX_CLOCK_OFFSET_S:
            raise ValueError(f"offset must be within ±{MAX_CLOCK_OFFSET_S:g} seconds")
        self._clock_offset_ms = round(seconds * 1000)

    def server_time_ms(self) -> int:
        """The simulator's clock: what /api/v3/time answers now."""
        return self._now_ms()

    def _now_ms(self) -> int:
        return _wall_ms() + self._clock_offset_ms

    @property
    def lock(self) -> threading.RLock:
        return self._lock

    # ----- faults and state ------------------------------------------------

    def inject(
        self,
        path: str = ".*",
        status: int | None = None,
        count: int | None = 1,
        latency: float = 0.0,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> int:
        """Make the next `count` requests (None: all) whose path after the host
        segment matches the regex `path` wait `latency` seconds (capped at 60)
        and then answer `status` (None: answer normally).

        Without a `body`, 429 answers Binance's -1003 JSON with Retry-After: 1,
        418 a -1003 "IP banned" JSON, 5xx a plain-text reason, anything else a
        -1000 JSON. `headers` are added last. Returns the fault's id.
        """
        if not isinstance(path, str):
            raise TypeError("path must be a string")
        try:
            pattern = re.compile(path)
        except re.error as exc:
            raise ValueError(f"path is not a valid regular expression: {exc}") from None
        if status is not None and (
            isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599
        ):
            raise ValueError("status must be an HTTP status code (100-599) or null")
        if count is not None and (isinstance(count, bool) or not isinstance(count, int)):
            raise TypeError("count must be an integer or null")
        if count is not None and count < 1:
            raise ValueError("count must be at least 1, or null for ever")
        if isinstance(latency, bool) or not isinstance(latency, int | float):
            raise TypeError("latency must be a number of seconds")
        if not math.isfinite(latency) or latency < 0:
            raise ValueError("latency must be a non-negative number of seconds")
        if body is not None and not isinstance(body, dict):
            raise TypeError("body must be a JSON object or null")
        if headers is not None and (
            not isinstance(headers, dict)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())
        ):
            raise TypeError("headers must map strings to strings")
        with self._lock:
            fault = Fault(
                id=self._next_fault_id,
                path=path,
                pattern=pattern,
                status=status,
                remaining=count,
                latency=min(float(latency), MAX_LATENCY_S),
                body=body,
                headers=dict(headers or {}),
            )
            self._next_fault_id += 1
            self._faults.append(fault)
        return fault.id

    def clear_faults(self) -> int:
        """Remove every fault; returns how many were active."""
        with self._lock:
            cleared = len(self._faults)
            self._faults.clear()
        return cleared

    def state(self) -> dict[str, Any]:
        """Request counts per endpoint, weight used, orders, active faults, prices."""
        with self._lock:
            return {
                "requests": dict(sorted(self._request_counts.items())),
                "requests_total": sum(self._request_counts.values()),
                "weight_used_1m": self._current_weight(),
                "open_orders": sum(o.status in OPEN_STATUSES for o in self._orders.values()),
                "orders_total": len(self._orders),
                "faults_active": len(self._faults),
                "faults_fired": self._faults_fired,
                "faults": [f.as_json() for f in self._faults],
                "prices": {m.symbol: m.mid for m in self._markets.values()},
                "book_update_ids": {
                    m.symbol: self._books[m.id].update_id for m in self._markets.values()
                },
                "balances": {
                    asset: {
                        "free": _fmt(self._free.get(asset, Decimal(0))),
                        "locked": _fmt(self._locked.get(asset, Decimal(0))),
                    }
                    for asset in sorted(set(self._free) | set(self._locked))
                },
                "clock": {"offset_s": self.clock_offset, "server_time": self._now_ms()},
                "listen_keys_active": sum(
                    expiry > time.monotonic() for expiry in self._listen_keys.values()
                ),
                "ws": self._ws.state(),
            }

    def reset(self) -> None:
        """Back to the initial prices and balances: no orders, counts or faults;
        no stream paused or lagging, every stream at the constructor's rate, the
        clock offset the constructor's. Websocket connections stay open."""
        with self._lock:
            self._reset_state()
            self._clock_offset_ms = self._initial_clock_offset_ms
            self._listen_keys.clear()
            self._ws.reset()

    def _reset_state(self) -> None:
        for market in self._markets.values():
            market.reset()
        self._free = dict(self._initial_balances)
        self._locked = {}
        self._orders.clear()
        self._my_trades.clear()
        self._faults.clear()
        self._request_counts.clear()
        self._weight_used = self._orders_10s = self._orders_1d = 0
        self._faults_fired = 0
        self._last_step = time.monotonic()

    def _take_fault(self, route: str) -> Fault | None:
        for fault in self._faults:
            if fault.pattern.search(route):
                fault.fired += 1
                self._faults_fired += 1
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                return fault
        return None

    # ----- request weight --------------------------------------------------

    def _current_weight(self) -> int:
        # Binance's weight window is the wall-clock minute, not a sliding one.
        return self._weight_used if self._weight_window == int(time.time() // 60) else 0

    def _add_weight(self, weight: int) -> int:
        window = int(time.time() // 60)
        if window != self._weight_window:
            self._weight_window, self._weight_used = window, 0
        self._weight_used += weight
        return self._weight_used

    def _count_order(self) -> None:
        now = time.time()
        if int(now // 10) != self._order_window_10s:
            self._order_window_10s, self._orders_10s = int(now // 10), 0
        if int(now // 86400) != self._order_window_1d:
            self._order_window_1d, self._orders_1d = int(now // 86400), 0
        self._orders_10s += 1
        self._orders_1d += 1

    def _rate_headers(self, order_post: bool) -> dict[str, str]:
        with self._lock:
            used = str(self._current_weight())
            headers = {"x-mbx-used-weight": used, "x-mbx-used-weight-1m": used}
            if order_post:
                now = time.time()
                in_10s = self._orders_10s if self._order_window_10s == int(now // 10) else 0
                in_1d = self._orders_1d if self._order_window_1d == int(now // 86400) else 0
                headers["x-mbx-order-count-10s"] = str(in_10s)
                headers["x-mbx-order-count-1d"] = str(in_1d)
        return headers

    @staticmethod
    def _weight(method: str, route: str, query: Mapping[str, str]) -> int:
        """Roughly Binance's published request weights."""
        has_symbol = "symbol" in query
        if route in ("/api/v3/ticker/24hr", "/api/v3/ticker/price", "/api/v3/ticker/bookTicker"):
            many = 80 if route == "/api/v3/ticker/24hr" else 4
            if has_symbol:
                return 2
            raw = query.get("symbols")
            if raw is None:
                return many
            try:
                n = len(json.loads(raw))
            except (ValueError, TypeError):
                return 2
            if route != "/api/v3/ticker/24hr":
                return 4
            return 2 if n <= 20 else 40 if n <= 100 else 80
        if route == "/api/v3/depth":
            try:
                limit = int(query.get("limit", "100"))
            except ValueError:
                limit = 100
            return 5 if limit <= 100 else 25 if limit <= 500 else 50 if limit <= 1000 else 250
        if route == "/api/v3/openOrders":
            return 6 if has_symbol or method == "DELETE" else 80
        if route == "/api/v3/order":
            return 4 if method == "GET" else 1
        return {
            "/api/v3/exchangeInfo": 20,
            "/api/v3/klines": 2,
            "/api/v3/uiKlines": 2,
            "/api/v3/avgPrice": 2,
            "/api/v3/aggTrades": 4,
            "/api/v3/trades": 25,
            "/api/v3/historicalTrades": 25,
            "/api/v3/account": 20,
            "/api/v3/allOrders": 20,
            "/api/v3/myTrades": 20,
            "/api/v3/userDataStream": 2,
        }.get(route, 1)

    # ----- prices ----------------------------------------------------------

    def _advance_prices(self) -> None:
        """Lazy random walk: catch up on the steps due since the last request."""
        now = time.monotonic()
        steps = int((now - self._last_step) / PRICE_STEP_S)
        if steps <= 0:
            return
        self._last_step = now if steps > MAX_WALK_STEPS else self._last_step + steps * PRICE_STEP_S
        if self._volatility <= 0:
            return
        sigma = self._volatility * math.sqrt(min(steps, MAX_WALK_STEPS))
        for m in self._markets.values():
            mid = m.mid * math.exp(self._rng.gauss(0.0, sigma))
            # Bounded, so a simulator left running for days still looks like its
            # configuration and resting test orders stay far from the market.
            m.mid = min(max(mid, m.initial_mid * 0.5), m.initial_mid * 2.0)
            m.high = max(m.high, m.mid)
            m.low = min(m.low, m.mid)

    @staticmethod
    def _mid(m: _Market) -> Decimal:
        return _round_to(_to_decimal(m.mid), m.tick)

    def _touch(self, m: _Market) -> tuple[Decimal, Decimal]:
        mid = self._mid(m)
        half = max(m.tick, _round_to(mid * HALF_SPREAD, m.tick, ROUND_UP))
        return mid - half, mid + half

    def _market(self, market_id: str) -> _Market:
        market = self._markets.get(market_id)
        if market is None:
            raise BinanceError(400, -1121, "Invalid symbol.")
        return market

    def _symbol_param(self, params: Mapping[str, str]) -> _Market:
        return self._market(_required(params, "symbol"))

    def _markets_param(self, params: Mapping[str, str]) -> list[_Market]:
        """`symbol=X`, `symbols=["X","Y"]`, or neither for every market."""
        if "symbol" in params:
            return [self._symbol_param(params)]
        raw = params.get("symbols")
        if raw is None:
            return list(self._markets.values())
        try:
            ids = json.loads(raw)
        except ValueError:
            raise _illegal("symbols") from None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise _illegal("symbols")
        return [self._market(i) for i in ids]

    # ----- routing ---------------------------------------------------------

    def _build_routes(self) -> dict[tuple[str, str], _Endpoint]:
        v3 = "/api/v3"
        public, keyed, signed = SECURITY_NONE, SECURITY_API_KEY, SECURITY_SIGNED
        table: list[tuple[str, str, _Handler, str]] = [
            ("GET", "/ping", lambda p: {}, public),
            ("GET", "/time", lambda p: {"serverTime": self._now_ms()}, public),
            ("GET", "/exchangeInfo", self._h_exchange_info, public),
            ("GET", "/ticker/24hr", self._h_ticker_24hr, public),
            ("GET", "/ticker/price", self._h_ticker_price, public),
            ("GET", "/ticker/bookTicker", self._h_book_ticker, public),
            ("GET", "/avgPrice", self._h_avg_price, public),
            ("GET", "/depth", self._h_depth, public),
            ("GET", "/klines", self._h_klines, public),
            ("GET", "/uiKlines", self._h_klines, public),
            ("GET", "/aggTrades", self._h_agg_trades, public),
            ("GET", "/trades", self._h_trades, public),
            ("GET", "/historicalTrades", self._h_trades, keyed),
            ("GET", "/account", self._h_account, signed),
            ("POST", "/order", self._h_new_order, signed),
            ("POST", "/order/test", self._h_test_order, signed),
            ("GET", "/order", self._h_get_order, signed),
            ("DELETE", "/order", self._h_cancel_order, signed),
            ("GET", "/openOrders", self._h_open_orders, signed),
            ("DELETE", "/openOrders", self._h_cancel_open_orders, signed),
            ("GET", "/allOrders", self._h_all_orders, signed),
            ("GET", "/myTrades", self._h_my_trades, signed),
            ("POST", "/userDataStream", self._h_listen_key_new, keyed),
            ("PUT", "/userDataStream", self._h_listen_key_keepalive, keyed),
            ("DELETE", "/userDataStream", self._h_listen_key_close, keyed),
        ]
        return {(method, v3 + path): _Endpoint(h, sec) for method, path, h, sec in table}

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        parts = request.path.split("/", 2)
        first = parts[1] if len(parts) > 1 else ""
        rest = "/" + parts[2] if len(parts) > 2 else "/"
        if first == "_sim":
            return await self._handle_control(request, rest)
        if request.method == "GET" and request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._ws.handle(request, rest)
        return await self._handle_exchange(request, rest)

    async def _handle_exchange(self, request: web.Request, route: str) -> web.StreamResponse:
        arrival_ms = self._now_ms()  # Binance judges a request's timestamp on receipt
        method = request.method
        endpoint = self._routes.get((method, route))
        order_post = method == "POST" and route == "/api/v3/order"
        with self._lock:
            self._advance_prices()
            self._request_counts[f"{method} {route}" if endpoint else f"{method} (unrouted)"] += 1
            used = self._add_weight(self._weight(method, route, request.query))
            fault = self._take_fault(route)
        if fault is not None:
            if fault.latency > 0 and await self._sleep_unless_stopping(fault.latency):
                return web.Response(
                    status=503, text="simulator stopping", headers={"Connection": "close"}
                )
            if fault.status is not None:
                return self._fault_response(fault, self._rate_headers(order_post))
        if self._weight_limit is not None and used > self._weight_limit:
            headers = self._rate_headers(order_post)
            headers["Retry-After"] = str(60 - int(time.time()) % 60)
            error = BinanceError(429, -1003, _too_many_requests(self._weight_limit))
            return _error_response(error, headers)
        if endpoint is None:
            # Method and path only: the query string may hold a signature.
            log.warning("exchange simulator: no such endpoint %s %s", method, route)
            return web.Response(status=404, text="Not Found", headers=self._rate_headers(False))
        try:
            params = await self._params(request)
            self._check_credentials(request, params, endpoint.security)
            if endpoint.security == SECURITY_SIGNED:
                self._check_timestamp(params, arrival_ms)
            with self._lock:
                if order_post:
                    self._count_order()
                data = endpoint.handler(params)
        except BinanceError as error:
            return _error_response(error, self._rate_headers(order_post))
        except web.HTTPException:
            raise
        except Exception as exc:
            # The type only: a message could quote a parameter's value.
            log.error("exchange simulator: %s failed: %s", route, type(exc).__name__)
            internal = BinanceError(500, -1000, UNKNOWN_ERROR_MSG)
            return _error_response(internal, self._rate_headers(order_post))
        return _json_response(data, 200, self._rate_headers(order_post))

    @staticmethod
    async def _params(request: web.Request) -> dict[str, str]:
        # Signed GET/DELETE calls carry their parameters in the query string,
        # signed POSTs in a form-encoded body; accept both everywhere.
        params = {k: v for k, v in request.query.items()}
        if request.can_read_body and request.content_type == "application/x-www-form-urlencoded":
            form = await request.post()
            params.update((k, v) for k, v in form.items() if isinstance(v, str))
        return params

    @staticmethod
    def _check_credentials(request: web.Request, params: dict[str, str], security: str) -> None:
        if security == SECURITY_NONE:
            return
        if not request.headers.get("X-MBX-APIKEY"):
            raise BinanceError(401, -2015, "Invalid API-key, IP, or permissions for action.")
        if security == SECURITY_SIGNED and not params.get("signature"):
            raise _mandatory("signature")

    @staticmethod
    def _check_timestamp(params: Mapping[str, Any], server_ms: int, required: bool = False) -> None:
        """Binance's recvWindow rule against the simulator's clock. REST calls
        without a timestamp pass (the simulator has always taken them); the
        WebSocket API requires one."""
        raw = params.get("timestamp")
        if raw is None or raw == "":
            if required:
                raise _mandatory("timestamp")
            return
        timestamp = _int_value(raw, "timestamp")
        window = params.get("recvWindow")
        recv_window = RECV_WINDOW_MS if window in (None, "") else _int_value(window, "recvWindow")
        if not 0 < recv_window <= MAX_RECV_WINDOW_MS:
            raise BinanceError(400, -1131, "recvWindow must be less than 60000")
        if timestamp >= server_ms + AHEAD_LIMIT_MS:
            raise BinanceError(
                400, -1021, "Timestamp for this request was 1000ms ahead of the server's time."
            )
        if server_ms - timestamp > recv_window:
            raise BinanceError(
                400, -1021, "Timestamp for this request is outside of the recvWindow."
            )

    async def _sleep_unless_stopping(self, seconds: float) -> bool:
        """Sleep; True if the simulator began stopping meanwhile."""
        stopping = self._stopping
        if stopping is None:
            return True
        try:
            await asyncio.wait_for(stopping.wait(), timeout=min(seconds, MAX_LATENCY_S))
        except TimeoutError:
            return False
        return True

    def _fault_response(self, fault: Fault, rate_headers: dict[str, str]) -> web.Response:
        status = fault.status if fault.status is not None else 200
        headers = dict(rate_headers)
        if status == 429:
            headers["Retry-After"] = "1"
            default: dict[str, Any] | None = {"code": -1003, "msg": TOO_MANY_REQUESTS_MSG}
        elif status == 418:
            headers["Retry-After"] = str(BAN_SECONDS)
            until = self._now_ms() + BAN_SECONDS * 1000
            default = {
                "code": -1003,
                "msg": f"Way too many requests; IP banned until {until}. "
                "Please use the websocket for live updates to avoid bans.",
            }
        elif status >= 500:
            default = None
        elif status >= 400:
            default = {"code": -1000, "msg": UNKNOWN_ERROR_MSG}
        else:
            default = {}
        headers.update(fault.headers)
        body = fault.body if fault.body is not None else default
        if body is None:
            try:
                reason = http.HTTPStatus(status).phrase
            except ValueError:
                reason = "Server Error"
            return web.Response(status=status, text=reason, headers=headers)
        return _json_response(body, status, headers)

    async def _handle_control(self, request: web.Request, route: str) -> web.StreamResponse:
        method = request.method
        if route == "/faults" and method == "POST":
            try:
                payload = await request.json()
            except (ValueError, UnicodeDecodeError):
                return _json_response({"error": "body must be a JSON object"}, 400)
            if not isinstance(payload, dict):
                return _json_response({"error": "body must be a JSON object"}, 400)
            unknown = sorted(set(payload) - FAULT_FIELDS)
            if unknown:
                return _json_response({"error": f"unknown fields: {', '.join(unknown)}"}, 400)
            try:
                fault_id = self.inject(**payload)
            except (TypeError, ValueError) as exc:
                return _json_response({"error": str(exc)}, 400)
            return _json_response({"id": fault_id}, 201)
        if route == "/faults" and method == "DELETE":
            return _json_response({"cleared": self.clear_faults()})
        if route == "/faults" and method == "GET":
            return _json_response(self.state()["faults"])
        if route == "/state" and method == "GET":
            return _json_response(self.state())
        if route == "/reset" and method == "POST":
            self.reset()
            return _json_response({"ok": True})
        if route == "/clock" and method == "GET":
            return _json_response({"offset": self.clock_offset, "server_time": self._now_ms()})
        if route == "/clock" and method == "POST":
            return await self._control_call(request, {"offset"}, self._control_clock)
        action = WS_CONTROLS.get(route) if method == "POST" else None
        if action is not None:
            fields, call = action
            return await self._control_call(request, fields, lambda p: call(self, p))
        return _json_response({"error": "no such control endpoint"}, 404)

    def _control_clock(self, payload: dict[str, Any]) -> Any:
        if "offset" not in payload:
            raise ValueError("offset is required")
        self.set_clock_offset(payload["offset"])
        return {"offset": self.clock_offset, "server_time": self._now_ms()}

    @staticmethod
    async def _control_call(
        request: web.Request,
        fields: frozenset[str] | set[str],
        call: Callable[[dict[str, Any]], Any],
    ) -> web.Response:
        """A JSON-object body with only `fields`, handed to `call`; its errors as 4xx."""
        try:
            payload = await request.json() if request.can_read_body else {}
        except (ValueError, UnicodeDecodeError):
            return _json_response({"error": "body must be a JSON object"}, 400)
        if not isinstance(payload, dict):
            return _json_response({"error": "body must be a JSON object"}, 400)
        unknown = sorted(set(payload) - set(fields))
        if unknown:
            return _json_response({"error": f"unknown fields: {', '.join(unknown)}"}, 400)
        try:
            result = call(payload)
        except (TypeError, ValueError) as exc:
            return _json_response({"error": str(exc)}, 400)
        except LookupError as exc:
            return _json_response({"error": str(exc)}, 409)
        except RuntimeError as exc:
            return _json_response({"error": str(exc)}, 503)
        return _json_response({"ok": True} if result is None else result)

    # ----- market data -----------------------------------------------------

    def _h_exchange_info(self, params: dict[str, str]) -> Any:
        symbols = []
        for m in self._markets_param(params):
            symbols.append(
                {
                    "symbol": m.id,
                    "status": "TRADING",
                    "baseAsset": m.base,
                    "baseAssetPrecision": 8,
                    "quoteAsset": m.quote,
                    "quotePrecision": 8,
                    "quoteAssetPrecision": 8,
                    "baseCommissionPrecision": 8,
                    "quoteCommissionPrecision": 8,
                    "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"],
                    "icebergAllowed": False,
                    "ocoAllowed": False,
                    "otoAllowed": False,
                    "quoteOrderQtyMarketAllowed": True,
                    "allowTrailingStop": False,
                    "cancelReplaceAllowed": False,
                    "isSpotTradingAllowed": True,
                    "isMarginTradingAllowed": False,
                    # ccxt derives price and amount precision from these two.
                    "filters": [
                        {
                            "filterType": "PRICE_FILTER",
                            "minPrice": _fmt(m.tick),
                            "maxPrice": _fmt(Decimal(1_000_000)),
                            "tickSize": _fmt(m.tick),
                        },
                        {
                            "filterType": "LOT_SIZE",
                            "minQty": _fmt(m.step),
                            "maxQty": _fmt(Decimal(9_000_000)),
                            "stepSize": _fmt(m.step),
                        },
                    ],
                    "permissions": [],
                    "permissionSets": [["SPOT"]],
                    "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
                    "allowedSelfTradePreventionModes": ["EXPIRE_MAKER"],
                }
            )
        return {
            "timezone": "UTC",
            "serverTime": self._now_ms(),
            "rateLimits": [
                {
                    "rateLimitType": "REQUEST_WEIGHT",
                    "interval": "MINUTE",
                    "intervalNum": 1,
                    "limit": self._weight_limit or WEIGHT_LIMIT_1M,
                },
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
                {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
            ],
            "exchangeFilters": [],
            "symbols": symbols,
        }

    def _ticker(self, m: _Market, now: int | None = None) -> dict[str, Any]:
        now = self._now_ms() if now is None else now
        bid, ask = self._touch(m)
        last = self._mid(m)
        open_ = _round_to(_to_decimal(m.initial_mid), m.tick)
        high = max(_round_to(_to_decimal(m.high), m.tick), last)
        low = min(_round_to(_to_decimal(m.low), m.tick), last)
        lot = m.step * 100
        last_id = now // 1000
        return {
            "symbol": m.id,
            "priceChange": _fmt(last - open_),
            "priceChangePercent": f"{(last - open_) / open_ * 100:.3f}",
            "weightedAvgPrice": _fmt((open_ + last) / 2),
            "prevClosePrice": _fmt(open_),
            "lastPrice": _fmt(last),
            "lastQty": _fmt(lot),
            "bidPrice": _fmt(bid),
            "bidQty": _fmt(lot * 3),
            "askPrice": _fmt(ask),
            "askQty": _fmt(lot * 2),
            "openPrice": _fmt(open_),
            "highPrice": _fmt(high),
            "lowPrice": _fmt(low),
            "volume": _fmt(m.volume),
            "quoteVolume": _fmt(m.quote_volume),
            "openTime": now - 86_400_000,
            "closeTime": now,
            "firstId": last_id - m.trades + 1,
            "lastId": last_id,
            "count": m.trades,
        }

    def _h_ticker_24hr(self, params: dict[str, str]) -> Any:
        if "symbol" in params:
            return self._ticker(self._symbol_param(params))
        return [self._ticker(m) for m in self._markets_param(params)]

    def _h_ticker_price(self, params: dict[str, str]) -> Any:
        prices = [
            {"symbol": m.id, "price": _fmt(self._mid(m))} for m in self._markets_param(params)
        ]
        return prices[0] if "symbol" in params else prices

    def _h_book_ticker(self, params: dict[str, str]) -> Any:
        rows = []
        for m in self._markets_param(params):
            t = self._ticker(m)
            rows.append({k: t[k] for k in ("symbol", "bidPrice", "bidQty", "askPrice", "askQty")})
        return rows[0] if "symbol" in params else rows

    def _h_avg_price(self, params: dict[str, str]) -> Any:
        m = self._symbol_param(params)
        return {"mins": 5, "price": _fmt(self._mid(m)), "closeTime": self._now_ms()}

    def _book_step(self, m: _Market) -> _Book:
        """Bring the market's book to the current touch (one more diff)."""
        book = self._books[m.id]
        bid, ask = self._touch(m)
        book.step(int(bid / m.tick), int(ask / m.tick))
        return book

    def _h_depth(self, params: dict[str, str]) -> Any:
        m = self._symbol_param(params)
        # At most BOOK_LEVELS a side, whatever the limit: the book is that deep.
        limit = _limit(params, 100, 5000)
        return self._book_step(m).snapshot(limit)

    def _h_klines(self, params: dict[str, str]) -> Any:
        m = self._symbol_param(params)
        interval = INTERVALS_MS.get(_required(params, "interval"))
        if interval is None:
            raise BinanceError(400, -1120, "Invalid interval.")
        limit = _limit(params, 500, 1000)
        start, end = _opt_int(params, "startTime"), _opt_int(params, "endTime")
        current = self._now_ms() // interval * interval
        last = current if end is None else min(end // interval * interval, current)
        if start is not None:
            first = -(-start // interval) * interval
            opens = [t for t in range(first, last + 1, interval)][:limit]
        else:
            opens = [t for t in range(last - (limit - 1) * interval, last + 1, interval) if t >= 0]
        return self._kline_rows(m, interval, opens, current)

    def _kline_rows(
        self, m: _Market, interval: int, opens: list[int], current: int
    ) -> list[list[Any]]:
        mid = float(self._mid(m))
        rows: list[list[Any]] = []
        close = None
        for t in opens:
            # Seeded by symbol, interval and time: the same candle reads the same
            # on every call (only the still-open one follows the live price).
            rng = random.Random(f"{m.id}:{interval}:{t}")
            open_ = close if close is not None else mid * (1 + rng.uniform(-0.003, 0.003))
            close = mid if t == current else mid * (1 + rng.uniform(-0.003, 0.003))
            high = max(open_, close) * (1 + rng.uniform(0, 0.001))
            low = min(open_, close) * (1 - rng.uniform(0, 0.001))
            volume = 1_000_000 / mid * rng.uniform(0.5, 1.5) * interval / 3_600_000
            rows.append(
                [
                    t,
                    *(_fmt(_round_to(_to_decimal(p), m.tick)) for p in (open_, high, low, close)),
                    _fmt(_to_decimal(volume).quantize(EIGHT_DP)),
                    t + interval - 1,
                    _fmt(_to_decimal(volume * mid).quantize(EIGHT_DP)),
                    rng.randint(10, 1000),
                    _fmt(_to_decimal(volume / 2).quantize(EIGHT_DP)),
                    _fmt(_to_decimal(volume * mid / 2).quantize(EIGHT_DP)),
                    "0",
                ]
            )
        return rows

    def _synthetic_trades(
        self, m: _Market, params: dict[str, str]
    ) -> list[tuple[int, int, Decimal, Decimal, bool]]:
        """(id, time, price, qty, buyer is maker): one trade a second, its id the
        second since the epoch, so fromId/startTime/endTime all mean something."""
        limit = _limit(params, 500, 1000)
        now_id = self._now_ms() // 1000
        from_id = _opt_int(params, "fromId")
        start, end = _opt_int(params, "startTime"), _opt_int(params, "endTime")
        if from_id is not None:
            ids = range(max(0, from_id), min(from_id + limit, now_id + 1))
        elif start is not None:
            first = -(-start // 1000)
            last = min(now_id, first + 3600 if end is None else end // 1000)
            ids = range(first, min(last + 1, first + limit))
        else:
            last = now_id if end is None else min(now_id, end // 1000)
            ids = range(max(0, last - limit + 1), last + 1)
        mid = self._mid(m)
        trades = []
        for i in ids:
            rng = random.Random(f"{m.id}:trade:{i}")
            price = mid + m.tick * rng.randint(-5, 5)
            qty = max(m.step, _floor_to(m.step * rng.randint(1, 500), m.step))
            trades.append((i, i * 1000 + rng.randint(0, 999), price, qty, rng.random() < 0.5))
        return trades

    def _h_agg_trades(self, params: dict[str, str]) -> Any:
        m = self._symbol_param(params)
        return [
            {
                "a": i,
                "p": _fmt(price),
                "q": _fmt(qty),
                "f": i,
                "l": i,
                "T": t,
                "m": maker,
                "M": True,
            }
            for i, t, price, qty, maker in self._synthetic_trades(m, params)
        ]

    def _h_trades(self, params: dict[str, str]) -> Any:
        m = self._symbol_param(params)
        return [
            {
                "id": i,
                "price": _fmt(price),
                "qty": _fmt(qty),
                "quoteQty": _fmt(_cost(price, qty)),
                "time": t,
                "isBuyerMaker": maker,
                "isBestMatch": True,
            }
            for i, t, price, qty, maker in self._synthetic_trades(m, params)
        ]

    # ----- account and orders ----------------------------------------------

    def _h_account(self, params: dict[str, str]) -> Any:
        assets = set(self._free) | set(self._locked)
        for m in self._markets.values():
            assets.update((m.base, m.quote))
        balances = [
            {
                "asset": asset,
                "free": _fmt(self._free.get(asset, Decimal(0))),
                "locked": _fmt(self._locked.get(asset, Decimal(0))),
            }
            for asset in sorted(assets)
        ]
        if params.get("omitZeroBalances") == "true":
            balances = [b for b in balances if Decimal(b["free"]) or Decimal(b["locked"])]
        rates = {"maker": "0.00000000", "taker": "0.00000000", "buyer": "0.00000000"}
        return {
            "makerCommission": 0,
            "takerCommission": 0,
            "buyerCommission": 0,
            "sellerCommission": 0,
            "commissionRates": {**rates, "seller": "0.00000000"},
            "canTrade": True,
            "canWithdraw": True,
            "canDeposit": True,
            "brokered": False,
            "requireSelfTradePrevention": False,
            "preventSor": False,
            "updateTime": self._now_ms(),
            "accountType": "SPOT",
            "balances": balances,
            "permissions": ["SPOT"],
            "uid": 1,
        }

    def _move(self, asset: str, free_delta: Decimal, locked_delta: Decimal = Decimal(0)) -> None:
        self._free[asset] = self._free.get(asset, Decimal(0)) + free_delta
        if locked_delta:
            self._locked[asset] = self._locked.get(asset, Decimal(0)) + locked_delta

    def _h_test_order(self, params: dict[str, str]) -> Any:
        self._place(params, test=True)
        return {}

    def _h_new_order(self, params: dict[str, str]) -> Any:
        order = self._place(params, test=False)
        if order is None:  # only a test order is not placed
            raise BinanceError(500, -1000, UNKNOWN_ERROR_MSG)
        resp_type = params.get("newOrderRespType", "FULL")
        ack = {
            "symbol": order.market.id,
            "orderId": order.order_id,
            "orderListId": -1,
            "clientOrderId": order.client_order_id,
            "transactTime": order.time,
        }
        if resp_type == "ACK":
            return ack
        full = order.as_json()
        result = {
            **ack,
            **{k: full[k] for k in ("price", "origQty", "executedQty", "origQuoteOrderQty")},
            **{k: full[k] for k in ("cummulativeQuoteQty", "status", "timeInForce", "type")},
            "side": order.side,
            "workingTime": order.time,
            "selfTradePreventionMode": "EXPIRE_MAKER",
        }
        if resp_type == "RESULT":
            return result
        return {**result, "fills": order.fills}

    def _place(self, params: dict[str, str], test: bool) -> _Order | None:
        m = self._symbol_param(params)
        side = _required(params, "side")
        if side not in ("BUY", "SELL"):
            raise BinanceError(400, -1117, "Invalid side.")
        order_type = _required(params, "type")
        if order_type not in ("LIMIT", "LIMIT_MAKER", "MARKET"):
            raise BinanceError(400, -1116, "Invalid orderType.")
        bid, ask = self._touch(m)
        quote_qty = Decimal(0)
        fill_price: Decimal | None
        if order_type == "MARKET":
            quantity = _opt_decimal(params, "quantity")
            if quantity is None:
                quote = _opt_decimal(params, "quoteOrderQty")
                if quote is None:
                    raise BinanceError(
                        400,
                        -1102,
                        "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty/null!",
                    )
                quote_qty = quote
                quantity = _floor_to(quote / self._mid(m), m.step)
            price = Decimal(0)
            fill_price = self._mid(m)  # market orders fill at the mid: no slippage model
            time_in_force = "GTC"
            commit_price = fill_price
        else:
            quantity = _req_decimal(params, "quantity")
            price = _req_decimal(params, "price")
            if price <= 0 or price % m.tick != 0:
                raise BinanceError(400, -1013, "Filter failure: PRICE_FILTER")
            time_in_force = params.get("timeInForce") or "GTC"
            if time_in_force not in ("GTC", "IOC", "FOK"):
                raise BinanceError(400, -1115, "Invalid timeInForce.")
            marketable = price >= ask if side == "BUY" else price <= bid
            if order_type == "LIMIT_MAKER" and marketable:
                raise BinanceError(400, -2010, "Order would immediately match and take.")
            # A marketable limit takes the touch, which is at least as good as its price.
            fill_price = (ask if side == "BUY" else bid) if marketable else None
            commit_price = price
        if quantity < m.step or quantity % m.step != 0:
            raise BinanceError(400, -1013, "Filter failure: LOT_SIZE")
        if side == "BUY":
            asset, needed = m.quote, _cost(commit_price, quantity)
        else:
            asset, needed = m.base, quantity
        if self._free.get(asset, Decimal(0)) < needed:
            raise BinanceError(400, -2010, INSUFFICIENT_BALANCE_MSG)
        if test:
            return None
        now = self._now_ms()
        order = _Order(
            order_id=self._next_order_id,
            client_order_id=params.get("newClientOrderId") or f"sim_{uuid.uuid4().hex[:20]}",
            market=m,
            side=side,
            type=order_type,
            time_in_force=time_in_force,
            price=price,
            orig_qty=quantity,
            orig_quote_qty=quote_qty,
            time=now,
            update_time=now,
        )
        self._next_order_id += 1
        self._report(order, "NEW", now)
        if fill_price is not None:
            trade = self._fill(order, fill_price, now)
            self._report(order, "TRADE", now, trade)
        elif time_in_force != "GTC":
            order.status = "EXPIRED"  # IOC/FOK that cannot trade now never rest
            self._report(order, "EXPIRED", now)
        else:
            order.reserved_asset, order.reserved = asset, needed
            self._move(asset, -needed, needed)
        self._orders[order.order_id] = order
        self._account_position((m.base, m.quote), now)
        return order

    def _report(self, order: _Order, execution: str, now: int, trade: _Trade | None = None) -> None:
        """The user data stream's executionReport for what just happened to `order`."""
        cancel_id = order.cancel_client_id if execution == "CANCELED" else ""
        self._ws.user_event(
            {
                "e": "executionReport",
                "s": order.market.id,
                "c": cancel_id or order.client_order_id,
                "S": order.side,
                "o": order.type,
                "f": order.time_in_force,
                "q": _fmt(order.orig_qty),
                "p": _fmt(order.price),
                "P": _fmt(Decimal(0)),
                "F": _fmt(Decimal(0)),
                "g": -1,
                "C": order.client_order_id if cancel_id else "",
                "x": execution,
                "X": "NEW" if execution == "NEW" else order.status,
                "r": "NONE",
                "i": order.order_id,
                "l": _fmt(trade.qty if trade else Decimal(0)),
                "z": _fmt(order.executed_qty if execution != "NEW" else Decimal(0)),
                "L": _fmt(trade.price if trade else Decimal(0)),
                "n": _fmt(Decimal(0)),
                "N": None,
                "T": now,
                "t": trade.trade_id if trade else -1,
                "v": -1,
                "I": order.order_id * 10 + len(order.fills),
                "w": execution == "NEW" and order.status in OPEN_STATUSES,
                "m": False,
                "M": trade is not None,
                "O": order.time,
                "Z": _fmt(order.cum_quote if execution != "NEW" else Decimal(0)),
                "Y": _fmt(_cost(trade.price, trade.qty) if trade else Decimal(0)),
                "Q": _fmt(order.orig_quote_qty),
                "W": order.time,
                "V": "EXPIRE_MAKER",
            }
        )

    def _account_position(self, assets: Collection[str], now: int) -> None:
        """outboundAccountPosition: the balances of `assets` after a change."""
        self._ws.user_event(
            {
                "e": "outboundAccountPosition",
                "u": now,
                "B": [
                    {
                        "a": asset,
                        "f": _fmt(self._free.get(asset, Decimal(0))),
                        "l": _fmt(self._locked.get(asset, Decimal(0))),
                    }
                    for asset in assets
                ],
            }
        )

    def _fill(self, order: _Order, price: Decimal, now: int) -> _Trade:
        m, qty = order.market, order.orig_qty
        cost = _cost(price, qty)
        if order.side == "BUY":
            self._move(m.quote, -cost)
            self._move(m.base, qty)
        else:
            self._move(m.base, -qty)
            self._move(m.quote, cost)
        trade = _Trade(self._next_trade_id, order.order_id, m, order.side == "BUY", price, qty, now)
        self._next_trade_id += 1
        self._my_trades.append(trade)
        order.status = "FILLED"
        order.executed_qty, order.cum_quote, order.update_time = qty, cost, now
        order.fills.append(
            {
                "price": _fmt(price),
                "qty": _fmt(qty),
                "commission": _fmt(Decimal(0)),
                "commissionAsset": trade.as_json()["commissionAsset"],
                "tradeId": trade.trade_id,
            }
        )
        m.volume += qty
        m.quote_volume += cost
        m.trades += 1
        return trade

    def _find_order(self, params: dict[str, str], missing: BinanceError) -> _Order:
        m = self._symbol_param(params)
        order_id = _opt_int(params, "orderId")
        client_id = params.get("origClientOrderId")
        if order_id is None and not client_id:
            raise BinanceError(
                400,
                -1102,
                "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!",
            )
        for order in self._orders.values():
            if order.market is not m:
                continue
            if order_id is not None and order.order_id != order_id:
                continue
            if client_id and order.client_order_id != client_id:
                continue
            return order
        raise missing

    def _h_get_order(self, params: dict[str, str]) -> Any:
        return self._find_order(params, BinanceError(400, -2013, "Order does not exist.")).as_json()

    def _cancel(self, order: _Order, params: dict[str, str]) -> dict[str, Any]:
        now = self._now_ms()
        if order.reserved:
            self._move(order.reserved_asset, order.reserved, -order.reserved)
            order.reserved = Decimal(0)
        order.status, order.update_time = "CANCELED", now
        order.cancel_client_id = params.get("newClientOrderId") or f"sim_{uuid.uuid4().hex[:20]}"
        self._report(order, "CANCELED", now)
        self._account_position((order.market.base, order.market.quote), now)
        full = order.as_json()
        keep = ("price", "origQty", "executedQty", "origQuoteOrderQty", "cummulativeQuoteQty")
        return {
            "symbol": order.market.id,
            "origClientOrderId": order.client_order_id,
            "orderId": order.order_id,
            "orderListId": -1,
            "clientOrderId": order.cancel_client_id,
            "transactTime": now,
            **{k: full[k] for k in keep},
            **{k: full[k] for k in ("status", "timeInForce", "type", "side")},
            "selfTradePreventionMode": "EXPIRE_MAKER",
        }

    def _h_cancel_order(self, params: dict[str, str]) -> Any:
        unknown = BinanceError(400, -2011, "Unknown order sent.")
        order = self._find_order(params, unknown)
        if order.status not in OPEN_STATUSES:
            raise unknown  # what Binance answers for an order already filled or cancelled
        return self._cancel(order, params)

    def _h_cancel_open_orders(self, params: dict[str, str]) -> Any:
        m = self._symbol_param(params)
        orders = [o for o in self._orders.values() if o.market is m and o.status in OPEN_STATUSES]
        if not orders:
            raise BinanceError(400, -2011, "Unknown order sent.")
        return [self._cancel(o, {}) for o in orders]

    def _h_open_orders(self, params: dict[str, str]) -> Any:
        market = self._symbol_param(params) if "symbol" in params else None
        return [
            o.as_json()
            for o in self._orders.values()
            if o.status in OPEN_STATUSES and (market is None or o.market is market)
        ]

    def _h_all_orders(self, params: dict[str, str]) -> Any:
        m = self._symbol_param(params)
        limit = _limit(params, 500, 1000)
        from_id = _opt_int(params, "orderId")
        start, end = _opt_int(params, "startTime"), _opt_int(params, "endTime")
        rows = [
            o
            for o in self._orders.values()
            if o.market is m
            and (from_id is None or o.order_id >= from_id)
            and (start is None or o.time >= start)
            and (end is None or o.time <= end)
        ]
        # Binance returns the most recent `limit` unless told where to start.
        rows = rows[:limit] if from_id is not None or start is not None else rows[-limit:]
        return [o.as_json() for o in rows]

    def _h_my_trades(self, params: dict[str, str]) -> Any:
        m = self._symbol_param(params)
        limit = _limit(params, 500, 1000)
        order_id = _opt_int(params, "orderId")
        from_id = _opt_int(params, "fromId")
        start, end = _opt_int(params, "startTime"), _opt_int(params, "endTime")
        rows = [
            t
            for t in self._my_trades
            if t.market is m
            and (order_id is None or t.order_id == order_id)
            and (from_id is None or t.trade_id >= from_id)
            and (start is None or t.time >= start)
            and (end is None or t.time <= end)
        ]
        rows = rows[:limit] if from_id is not None or start is not None else rows[-limit:]
        return [t.as_json() for t in rows]

    # ----- listen keys (the older user data stream) -------------------------

    def _live_listen_key(self, params: Mapping[str, str]) -> str:
        key = _required(params, "listenKey")
        expiry = self._listen_keys.get(key)
        if expiry is None or expiry <= time.monotonic():
            raise BinanceError(400, -1125, "This listenKey does not exist.")
        return key

    def _h_listen_key_new(self, params: dict[str, str]) -> Any:
        # One account, so one key: Binance hands out the active key again, extended.
        now = time.monotonic()
        live = [k for k, expiry in self._listen_keys.items() if expiry > now]
        key = live[0] if live else secrets.token_hex(30)
        self._listen_keys = {key: now + LISTEN_KEY_TTL_S}
        return {"listenKey": key}

    def _h_listen_key_keepalive(self, params: dict[str, str]) -> Any:
        self._listen_keys[self._live_listen_key(params)] = time.monotonic() + LISTEN_KEY_TTL_S
        return {}

    def _h_listen_key_close(self, params: dict[str, str]) -> Any:
        del self._listen_keys[self._live_listen_key(params)]
        return {}

    # ----- what the websocket hub asks (WsBackend; the lock is held) --------

    def ws_now_ms(self) -> int:
        return self._now_ms()

    def ws_market_ids(self) -> Collection[str]:
        return self._markets.keys()

    def ws_intervals(self) -> Collection[str]:
        return INTERVALS_MS.keys()

    def ws_market_id(self, symbol: str) -> str:
        for m in self._markets.values():
            if symbol in (m.symbol, m.id, m.id.lower()):
                return m.id
        raise ValueError("unknown symbol (examples: BTC/USDT, BTCUSDT)")

    def ws_listen_key_ok(self, key: str) -> bool:
        expiry = self._listen_keys.get(key)
        return expiry is not None and expiry > time.monotonic()

    def ws_check_signed(self, params: Mapping[str, Any]) -> tuple[int, str] | None:
        try:
            for name in ("apiKey", "signature"):
                value = params.get(name)
                if not isinstance(value, str) or not value:
                    raise _mandatory(name)
            self._check_timestamp(params, self._now_ms(), required=True)
        except BinanceError as error:
            return error.code, error.msg
        return None

    def ws_cursor(self, spec: StreamSpec) -> int:
        if spec.kind == "depth" and spec.market_id is not None:
            return self._books[spec.market_id].update_id
        return 0

    def ws_payload(self, spec: StreamSpec, event_ms: int, cursor: int) -> tuple[Any, int]:
        self._advance_prices()
        if spec.kind == "allTickers":
            return [self._ws_ticker(m, event_ms) for m in self._markets.values()], cursor
        if spec.kind == "allMiniTickers":
            return [self._ws_mini_ticker(m, event_ms) for m in self._markets.values()], cursor
        if spec.market_id is None or spec.kind == USER_DATA:
            raise ValueError(f"stream kind {spec.kind} has no payload")
        m = self._markets[spec.market_id]
        if spec.kind == "ticker":
            return self._ws_ticker(m, event_ms), cursor
        if spec.kind == "miniTicker":
            return self._ws_mini_ticker(m, event_ms), cursor
        if spec.kind == "depth":
            book = self._book_step(m)
            first, last, bids, asks = book.since(cursor)
            return {
                "e": "depthUpdate",
                "E": event_ms,
                "s": m.id,
                "U": first,
                "u": last,
                "b": book.levels(bids, sorted(bids, reverse=True)),
                "a": book.levels(asks, sorted(asks)),
            }, last
        if spec.kind == "bookTicker":
            book = self._book_step(m)
            bid, ask = max(book.bids), min(book.asks)
            return {
                "u": book.update_id,
                "s": m.id,
                "b": book.price(bid),
                "B": book.qty(book.bids[bid]),
                "a": book.price(ask),
                "A": book.qty(book.asks[ask]),
            }, cursor
        if spec.kind in ("trade", "aggTrade"):
            return self._ws_trade(m, spec.kind, event_ms), cursor
        if spec.kind == "kline" and spec.interval is not None:
            return self._ws_kline(m, spec.interval, event_ms), cursor
        raise ValueError(f"stream kind {spec.kind} has no payload")

    def _ws_ticker(self, m: _Market, event_ms: int) -> dict[str, Any]:
        t = self._ticker(m, event_ms)
        return {
            "e": "24hrTicker",
            "E": event_ms,
            "s": m.id,
            "p": t["priceChange"],
            "P": t["priceChangePercent"],
            "w": t["weightedAvgPrice"],
            "x": t["prevClosePrice"],
            "c": t["lastPrice"],
            "Q": t["lastQty"],
            "b": t["bidPrice"],
            "B": t["bidQty"],
            "a": t["askPrice"],
            "A": t["askQty"],
            "o": t["openPrice"],
            "h": t["highPrice"],
            "l": t["lowPrice"],
            "v": t["volume"],
            "q": t["quoteVolume"],
            "O": t["openTime"],
            "C": t["closeTime"],
            "F": t["firstId"],
            "L": t["lastId"],
            "n": t["count"],
        }

    def _ws_mini_ticker(self, m: _Market, event_ms: int) -> dict[str, Any]:
        t = self._ticker(m, event_ms)
        return {
            "e": "24hrMiniTicker",
            "E": event_ms,
            "s": m.id,
            "c": t["lastPrice"],
            "o": t["openPrice"],
            "h": t["highPrice"],
            "l": t["lowPrice"],
            "v": t["volume"],
            "q": t["quoteVolume"],
        }

    def _ws_trade(self, m: _Market, kind: str, event_ms: int) -> dict[str, Any]:
        rng = self._ws_rng
        price = _fmt(self._mid(m) + m.tick * rng.randint(-5, 5))
        qty = _fmt(m.step * rng.randint(1, 500))
        trade_id, m.ws_trade_id = m.ws_trade_id, m.ws_trade_id + 1
        maker = rng.random() < 0.5
        if kind == "aggTrade":
            return {
                "e": "aggTrade",
                "E": event_ms,
                "s": m.id,
                "a": trade_id,
                "p": price,
                "q": qty,
                "f": trade_id,
                "l": trade_id,
                "T": event_ms,
                "m": maker,
                "M": True,
            }
        return {
            "e": "trade",
            "E": event_ms,
            "s": m.id,
            "t": trade_id,
            "p": price,
            "q": qty,
            "T": event_ms,
            "m": maker,
            "M": True,
        }

    def _ws_kline(self, m: _Market, name: str, event_ms: int) -> dict[str, Any]:
        interval = INTERVALS_MS[name]
        current = event_ms // interval * interval
        # The previous candle too, so that the open is its close, as over REST.
        row = self._kline_rows(m, interval, [current - interval, current], current)[-1]
        return {
            "e": "kline",
            "E": event_ms,
            "s": m.id,
            "k": {
                "t": row[0],
                "T": row[6],
                "s": m.id,
                "i": name,
                "f": -1,
                "L": -1,
                "o": row[1],
                "c": row[4],
                "h": row[2],
                "l": row[3],
                "v": row[5],
                "n": row[8],
                "x": False,
                "q": row[7],
                "V": row[9],
                "Q": row[10],
                "B": "0",
            },
        }


WsControl = Callable[[BinanceSimulator, dict[str, Any]], Any]
WS_CONTROLS: dict[str, tuple[frozenset[str], WsControl]] = {
    "/ws/pause": (frozenset({"stream", "symbol"}), lambda sim, p: sim.pause_streams(**p)),
    "/ws/resume": (frozenset({"stream", "symbol"}), lambda sim, p: sim.resume_streams(**p)),
    "/ws/drop": (
        frozenset({"mode", "code", "refuse_seconds"}),
        lambda sim, p: {"dropped": sim.drop_connections(**p)},
    ),
    "/ws/lag": (
        frozenset({"seconds", "delay", "stream", "symbol"}),
        lambda sim, p: sim.set_lag(**p),
    ),
    "/ws/rate": (frozenset({"rate", "stream"}), lambda sim, p: sim.set_stream_rate(**p)),
    "/ws/push": (
        frozenset({"stream", "count", "interval"}),
        lambda sim, p: {"receivers": sim.push(**p)},
    ),
}


def point_at(exchange: Any, base_url: str) -> Any:
    """Rewrite a ccxt exchange's API URLs, REST and websocket (ccxt.pro), to a
    simulator at `base_url` (from another process: `BinanceSimulator.point`
    when you hold the simulator)."""
    urls = dict(exchange.urls)  # a fresh dict: never edit one ccxt may share
    urls["api"] = _rewrite_urls(urls.get("api"), base_url.rstrip("/"))
    exchange.urls = urls
    return exchange


def _rewrite_urls(value: Any, base: str) -> Any:
    if isinstance(value, dict):
        return {key: _rewrite_urls(item, base) for key, item in value.items()}
    if not isinstance(value, str):
        return value
    # http://127.0.0.1:PORT -> ws://127.0.0.1:PORT (https -> wss) for websockets.
    ws_base = "ws" + base[len("http") :] if base.startswith("http") else base
    pointed = re.match(r"^(https?|wss?)://127\.0\.0\.1:\d+/(.+)$", value)
    if pointed is None:
        pointed = re.match(r"^(https?|wss?)://(.+)$", value)
    if pointed is not None:
        scheme_base = ws_base if pointed.group(1).startswith("ws") else base
        return f"{scheme_base}/{pointed.group(2)}"
    return value


def _drain(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel whatever is still scheduled, so the loop closes without warnings."""
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())


async def _serve(port: int, seed: int | None, volatility: float, ws_rate: float) -> None:
    simulator = BinanceSimulator(port=port, seed=seed, volatility=volatility, ws_rate=ws_rate)
    await simulator.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        # One line, flushed: a parent process reads the port from it.
        print(f"exchange simulator listening on {simulator.url}", flush=True)
        await stop.wait()
    finally:
        await simulator.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Local Binance spot API simulator (REST and websockets) for tickscope's demo and tests."
    )
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free one)")
    parser.add_argument("--seed", type=int, default=None, help="random seed for the price walk")
    parser.add_argument(
        "--volatility", type=float, default=1e-4, help="std dev of each 100 ms price step"
    )
    parser.add_argument(
        "--ws-rate",
        type=float,
        default=DEFAULT_RATE,
        help="updates per second of every websocket stream (0: only /_sim/ws/push sends)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        asyncio.run(_serve(args.port, args.seed, args.volatility, args.ws_rate))
    except KeyboardInterrupt:  # a second Ctrl-C while shutting down
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
