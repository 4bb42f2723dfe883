"""The websocket half of the exchange simulator (see exchange_simulator.py).

Binance serves spot market data on `wss://stream.binance.com:9443`: `/ws` and
`/ws/<stream>` send raw events, `/stream?streams=a/b` wraps each one as
`{"stream": ..., "data": ...}`, and both take `SUBSCRIBE` / `UNSUBSCRIBE` /
`LIST_SUBSCRIPTIONS` requests. Its WebSocket API (`wss://ws-api.binance.com/ws-api/v3`)
carries the user data stream: ccxt.pro subscribes with
`userDataStream.subscribe.signature` and reads `{"subscriptionId": N, "event": ...}`.
The older listen-key stream (`POST /api/v3/userDataStream`, then `/ws/<listenKey>`)
works too.

This module holds the connections, the subscriptions, one feed per stream name
(a task that ticks at the stream's rate while anybody listens) and the controls:
pause, drop, lag, rate and push. The simulator builds the events themselves
(`WsBackend.ws_payload`), so that the REST and websocket views of a market agree.

Nothing a client sends is logged or echoed: the WebSocket API's requests carry
an API key and a signature, and errors name parameters, never their values.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from aiohttp import WSMsgType, web

log = logging.getLogger("tickscope.exchange_simulator")

USER_DATA = "userData"
DEFAULT_RATE = 10.0  # updates per second per stream
MAX_RATE = 10_000.0
MAX_LAG_S = 86_400.0
MAX_DELAY_S = 60.0
MAX_PUSH = 100_000
MAX_QUEUE = 50_000  # per connection; a client that cannot keep up is dropped, as Binance does
MAX_REQUEST_BYTES = 64 * 1024
CLOSE_TIMEOUT_S = 2.0  # for the client's close frame; then the connection is aborted
ALL_MARKET_STREAMS = {"!ticker@arr": "allTickers", "!miniTicker@arr": "allMiniTickers"}
SYMBOL_CHANNELS = {
    "ticker": "ticker",
    "miniTicker": "miniTicker",
    "bookTicker": "bookTicker",
    "trade": "trade",
    "aggTrade": "aggTrade",
    "depth": "depth",
    "depth@100ms": "depth",
    "depth@1000ms": "depth",
}
DROP_MODES = frozenset({"close", "abort"})

T = TypeVar("T")


@dataclass(frozen=True)
class StreamSpec:
    """A stream the simulator can serve: `btcusdt@depth@100ms` is kind "depth"
    of market "BTCUSDT"; `!ticker@arr` has no market; `userData` is the
    user data stream, whatever way it was subscribed."""

    name: str
    kind: str
    market_id: str | None = None
    interval: str | None = None


USER_SPEC = StreamSpec(USER_DATA, USER_DATA)


def parse_stream(
    name: str, market_ids: Collection[str], intervals: Collection[str]
) -> StreamSpec | None:
    """The spec of a Binance stream name, or None if the simulator does not serve it."""
    if name == USER_DATA:
        return USER_SPEC
    if name in ALL_MARKET_STREAMS:
        return StreamSpec(name, ALL_MARKET_STREAMS[name])
    symbol, sep, channel = name.partition("@")
    market_id = symbol.upper()
    if not sep or market_id not in market_ids:
        return None
    canonical = f"{symbol.lower()}@{channel}"
    kind = SYMBOL_CHANNELS.get(channel)
    if kind is not None:
        return StreamSpec(canonical, kind, market_id)
    if channel.startswith("kline_") and channel[len("kline_") :] in intervals:
        return StreamSpec(canonical, "kline", market_id, channel[len("kline_") :])
    return None


class WsBackend(Protocol):
    """What the hub needs from the simulator. Every method but `ws_now_ms` is
    called with `lock` held."""

    @property
    def lock(self) -> threading.RLock: ...

    def ws_now_ms(self) -> int: ...

    def ws_market_ids(self) -> Collection[str]: ...

    def ws_intervals(self) -> Collection[str]: ...

    def ws_cursor(self, spec: StreamSpec) -> int:
        """Where a new feed starts: the order book's update id for depth."""
        ...

    def ws_payload(self, spec: StreamSpec, event_ms: int, cursor: int) -> tuple[Any, int]:
        """One event of `spec` stamped `event_ms`, and the feed's next cursor."""
        ...

    def ws_listen_key_ok(self, key: str) -> bool: ...

    def ws_check_signed(self, params: Mapping[str, Any]) -> tuple[int, str] | None:
        """None if a WebSocket API request's signature parameters are acceptable,
        else Binance's (code, msg)."""
        ...

    def ws_market_id(self, symbol: str) -> str:
        """A market id from `BTC/USDT`, `BTCUSDT` or `btcusdt`; ValueError if unknown."""
        ...


@dataclass(eq=False)
class _Conn:
    id: int
    ws: web.WebSocketResponse
    kind: str  # "stream" (market streams, listen keys) or "api" (WebSocket API)
    route: str  # for state(): never a listen key
    combined: bool
    transport: asyncio.Transport | None
    opened: float
    queue: asyncio.Queue[tuple[float, str, str]] = field(default_factory=asyncio.Queue)
    streams: dict[str, StreamSpec] = field(default_factory=dict)
    listen_keys: set[str] = field(default_factory=set)
    user_subs: list[int] = field(default_factory=list)  # WebSocket API subscription ids
    sent: Counter[str] = field(default_factory=Counter)
    writer: asyncio.Task[None] | None = None
    closing: bool = False

    @property
    def user_data(self) -> bool:
        return bool(self.listen_keys or self.user_subs)


@dataclass(eq=False)
class _Feed:
    spec: StreamSpec
    cursor: int
    subscribers: dict[int, _Conn] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


def _dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))


def _check_seconds(name: str, value: Any, maximum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds")
    if not math.isfinite(value) or not 0 <= value <= maximum:
        raise ValueError(f"{name} must be between 0 and {maximum:g} seconds")
    return float(value)


class WsHub:
    """Connections, feeds and controls of the simulator's websocket endpoints.

    Controls (`pause`, `resume`, `set_lag`, `set_rate`, `push`, `drop`, `state`)
    may be called from any thread; the rest runs on the server's event loop.
    """

    def __init__(self, backend: WsBackend, rate: float = DEFAULT_RATE) -> None:
        self._backend = backend
        self._lock = backend.lock
        self._initial_rate = self._default_rate = self._check_rate(rate)
        self._rates: dict[str, float] = {}
        self._paused_all = False
        self._paused_streams: set[str] = set()
        self._paused_symbols: set[str] = set()
        self._lags: dict[str, tuple[float, float]] = {}
        self._conns: dict[int, _Conn] = {}
        self._feeds: dict[str, _Feed] = {}
        self._generated: Counter[str] = Counter()
        self._sent: Counter[str] = Counter()
        self._suppressed: Counter[str] = Counter()
        self._next_conn_id = 1
        self._next_sub_id = 0  # Binance's WebSocket API numbers subscriptions from 0
        self._connections_total = 0
        self._dropped_total = 0
        self._refused_total = 0
        self._overflowed_total = 0
        self._refuse_until = 0.0  # time.monotonic()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._background: set[asyncio.Task[Any]] = set()

    # ----- lifecycle (event loop) -------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    async def stop(self) -> None:
        """Close every connection (1001, going away) and stop every feed."""
        conns = list(self._conns.values())
        closes = [self._close(conn, 1001) for conn in conns]
        if closes:
            # _close aborts a connection whose client does not answer in time.
            await asyncio.gather(*closes, return_exceptions=True)
        for feed in list(self._feeds.values()):
            if feed.task is not None:
                feed.task.cancel()
        tasks = [f.task for f in self._feeds.values() if f.task is not None]
        tasks += list(self._background)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        with self._lock:
            self._feeds.clear()
        self._loop = None

    def reset(self) -> None:
        """Back to the defaults: no pause, no lag, the constructor's rate, zero counts.
        Connections stay open."""
        with self._lock:
            self._default_rate = self._initial_rate
            self._rates.clear()
            self._paused_all = False
            self._paused_streams.clear()
            self._paused_symbols.clear()
            self._lags.clear()
            self._generated.clear()
            self._sent.clear()
            self._suppressed.clear()
            self._dropped_total = self._refused_total = self._overflowed_total = 0
            self._refuse_until = 0.0
            for conn in self._conns.values():
                conn.sent.clear()
        self._wake_feeds()

    # ----- controls (any thread) --------------------------------------------

    def stream_spec(self, stream: str) -> StreamSpec:
        """The spec of a stream name the simulator serves; ValueError otherwise."""
        if not isinstance(stream, str):
            raise TypeError("stream must be a string")
        with self._lock:
            spec = parse_stream(stream, self._backend.ws_market_ids(), self._backend.ws_intervals())
        if spec is None:
            raise ValueError("unknown stream (examples: btcusdt@ticker, btcusdt@depth@100ms)")
        return spec

    def _selector(self, stream: str | None, symbol: str | None) -> tuple[str, str]:
        if stream is not None and symbol is not None:
            raise ValueError("give a stream or a symbol, not both")
        if stream is not None:
            return "stream", self.stream_spec(stream).name
        if symbol is not None:
            if not isinstance(symbol, str):
                raise TypeError("symbol must be a string")
            with self._lock:
                return "symbol", self._backend.ws_market_id(symbol)
        return "all", "*"

    def pause(self, stream: str | None = None, symbol: str | None = None) -> None:
        """Stop one stream (`btcusdt@ticker`, `userData`), every stream of a
        symbol, or (neither given) everything: no events are generated while
        paused, and user data events are dropped. Connections stay open."""
        kind, key = self._selector(stream, symbol)
        with self._lock:
            if kind == "stream":
                self._paused_streams.add(key)
            elif kind == "symbol":
                self._paused_symbols.add(key)
            else:
                self._paused_all = True

    def resume(self, stream: str | None = None, symbol: str | None = None) -> None:
        """Undo `pause` for the same selector; with neither, undo every pause."""
        kind, key = self._selector(stream, symbol)
        with self._lock:
            if kind == "stream":
                self._paused_streams.discard(key)
            elif kind == "symbol":
                self._paused_symbols.discard(key)
            else:
                self._paused_all = False
                self._paused_streams.clear()
                self._paused_symbols.clear()

    def set_lag(
        self,
        seconds: float = 0.0,
        delay: float = 0.0,
        stream: str | None = None,
        symbol: str | None = None,
    ) -> None:
        """Stamp events `seconds` behind the simulator's clock ("E", "T", ticker
        "C", kline times) and/or deliver them `delay` seconds after they are
        generated, for one stream, a symbol's streams or (neither) all. The most
        specific setting wins; (0, 0) removes the setting of that selector."""
        lag = _check_seconds("seconds", seconds, MAX_LAG_S)
        late = _check_seconds("delay", delay, MAX_DELAY_S)
        kind, key = self._selector(stream, symbol)
        with self._lock:
            name = key if kind == "all" else f"{kind}:{key}"
            if lag == 0 and late == 0:
                self._lags.pop(name, None)
            else:
                self._lags[name] = (lag, late)

    def set_rate(self, rate: float, stream: str | None = None) -> None:
        """Updates per second of one stream, or the default of every stream
        without its own rate. 0: only `push` sends."""
        value = self._check_rate(rate)
        key = None if stream is None else self.stream_spec(stream).name
        if key == USER_DATA:
            raise ValueError("user data events follow the orders; they have no rate")
        with self._lock:
            if key is None:
                self._default_rate = value
            else:
                self._rates[key] = value
        self._wake_feeds()

    def push(self, stream: str, count: int = 1, interval: float = 0.0) -> int:
        """Generate `count` events of `stream` now (`interval` seconds apart),
        whatever its rate and even if it is paused. Returns how many connections
        receive them; LookupError if none is subscribed."""
        spec = self.stream_spec(stream)
        if spec.kind == USER_DATA:
            raise ValueError("user data events follow the orders; place or cancel one")
        if isinstance(count, bool) or not isinstance(count, int):
            raise TypeError("count must be an integer")
        if not 1 <= count <= MAX_PUSH:
            raise ValueError(f"count must be between 1 and {MAX_PUSH}")
        gap = _check_seconds("interval", interval, 10.0)
        return self._in_loop(lambda: self._push_now(spec, count, gap))

    def drop(self, mode: str = "close", code: int = 1001, refuse_seconds: float = 0.0) -> int:
        """Drop every websocket connection: "close" sends a close frame with
        `code`, "abort" resets the TCP connection without one. For
        `refuse_seconds` afterwards new handshakes are answered 503 with a
        Retry-After. Returns how many connections were dropped."""
        if mode not in DROP_MODES:
            raise ValueError("mode must be 'close' or 'abort'")
        if isinstance(code, bool) or not isinstance(code, int) or not 1000 <= code <= 4999:
            raise ValueError("code must be a websocket close code (1000-4999)")
        refuse = _check_seconds("refuse_seconds", refuse_seconds, 300.0)
        with self._lock:
            self._refuse_until = time.monotonic() + refuse if refuse else 0.0
        if self._loop is None:
            return 0
        return self._in_loop(lambda: self._drop_now(mode, code))

    def subscribers(self, stream: str) -> int:
        """How many connections receive `stream` now (`userData`: user data subscriptions)."""
        name = self.stream_spec(stream).name
        with self._lock:
            if name == USER_DATA:
                return sum(len(c.user_subs) + len(c.listen_keys) for c in self._conns.values())
            feed = self._feeds.get(name)
            return 0 if feed is None else len(feed.subscribers)

    def state(self) -> dict[str, Any]:
        now = time.monotonic()
        with self._lock:
            subscriptions = {name: len(f.subscribers) for name, f in sorted(self._feeds.items())}
            users = sum(len(c.user_subs) + len(c.listen_keys) for c in self._conns.values())
            if users:
                subscriptions[USER_DATA] = users
            return {
                "connections_open": len(self._conns),
                "connections_total": self._connections_total,
                "connections_dropped": self._dropped_total,
                "handshakes_refused": self._refused_total,
                "slow_consumers_dropped": self._overflowed_total,
                "refusing_for_s": round(max(0.0, self._refuse_until - now), 3),
                "connections": [
                    {
                        "id": c.id,
                        "kind": c.kind,
                        "route": c.route,
                        "streams": sorted(c.streams) + ([USER_DATA] if c.user_data else []),
                        "queued": c.queue.qsize(),
                        "messages_sent": dict(sorted(c.sent.items())),
                        "age_s": round(now - c.opened, 3),
                    }
                    for c in self._conns.values()
                ],
                "subscriptions": subscriptions,
                "events_generated": dict(sorted(self._generated.items())),
                "events_suppressed": dict(sorted(self._suppressed.items())),
                "messages_sent": dict(sorted(self._sent.items())),
                "paused": {
                    "all": self._paused_all,
                    "streams": sorted(self._paused_streams),
                    "symbols": sorted(self._paused_symbols),
                },
                "lag": {
                    key: {"seconds": lag, "delay": delay}
                    for key, (lag, delay) in sorted(self._lags.items())
                },
                "rate": {
                    "default": self._default_rate,
                    "streams": dict(sorted(self._rates.items())),
                },
            }

    # ----- the simulator's user data events (event loop, lock held) ----------

    def user_event(self, payload: dict[str, Any]) -> None:
        """Send one user data event (executionReport, outboundAccountPosition);
        "E" is stamped here. Called by the REST handlers, on the event loop."""
        if self._loop is None:
            return
        with self._lock:
            targets = [c for c in self._conns.values() if c.user_data and not c.closing]
            if not targets:
                return
            if self._is_paused(USER_SPEC):
                self._suppressed[USER_DATA] += 1
                return
            lag, delay = self._lag_for(USER_SPEC)
            event = {"e": payload["e"], "E": self._backend.ws_now_ms() - round(lag * 1000)}
            event.update(payload)
            self._generated[USER_DATA] += 1
        deliver_at = self._loop.time() + delay
        raw = _dumps(event)
        for conn in targets:
            for sub_id in conn.user_subs:
                self._enqueue(
                    conn, deliver_at, USER_DATA, _dumps({"subscriptionId": sub_id, "event": event})
                )
            for key in conn.listen_keys:
                text = _dumps({"stream": key, "data": event}) if conn.combined else raw
                self._enqueue(conn, deliver_at, USER_DATA, text)

    # ----- connections (event loop) -----------------------------------------

    async def handle(self, request: web.Request, route: str) -> web.StreamResponse:
        """Serve one websocket: `route` is the path after the host segment."""
        if route.startswith("/ws-api/"):
            kind, combined = "api", False
        elif route == "/ws" or route.startswith("/ws/"):
            kind, combined = "stream", False
        elif route == "/stream" or route.startswith("/stream/"):
            kind, combined = "stream", True
        else:
            return web.Response(status=404, text="Not Found")
        with self._lock:
            wait = self._refuse_until - time.monotonic()
            if wait > 0:
                self._refused_total += 1
        if wait > 0:
            return web.Response(
                status=503,
                text="Service Unavailable",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
        # Binance does not negotiate permessage-deflate; its server pings, and
        # ccxt answers them itself (autoping is off in ccxt's client).
        ws = web.WebSocketResponse(autoping=True, compress=False, max_msg_size=MAX_REQUEST_BYTES)
        await ws.prepare(request)
        transport = request.transport
        with self._lock:
            conn = _Conn(
                id=self._next_conn_id,
                ws=ws,
                kind=kind,
                route=self._route_label(route),
                combined=combined,
                transport=transport if isinstance(transport, asyncio.Transport) else None,
                opened=time.monotonic(),
            )
            self._next_conn_id += 1
            self._connections_total += 1
            self._conns[conn.id] = conn
        conn.writer = asyncio.get_running_loop().create_task(self._write(conn))
        try:
            if kind == "stream":
                for name in self._path_streams(route, request.query.get("streams")):
                    self._subscribe_name(conn, name)
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self._on_text(conn, msg.data)
                elif msg.type == WSMsgType.BINARY:
                    self._reply(conn, self._stream_error(None, 3, "Invalid JSON: binary frame"))
                else:
                    break
        finally:
            self._unregister(conn)
            if conn.writer is not None:
                conn.writer.cancel()
                await asyncio.gather(conn.writer, return_exceptions=True)
        return ws

    def _route_label(self, route: str) -> str:
        # A listen key in the path is a bearer token for the user data stream:
        # state() shows where a client connected, never the key.
        head, _, rest = route.partition("/ws/")
        if not rest:
            return route
        with self._lock:
            parts = [
                "<listenKey>" if self._backend.ws_listen_key_ok(p) else p for p in rest.split("/")
            ]
        return f"{head}/ws/{'/'.join(parts)}"

    @staticmethod
    def _path_streams(route: str, streams: str | None) -> list[str]:
        names: list[str] = []
        if route.startswith("/ws/"):
            names += [p for p in route[len("/ws/") :].split("/") if p]
        if streams:
            names += [p for p in streams.split("/") if p]
        return names

    def _subscribe_name(self, conn: _Conn, name: str) -> bool:
        """Subscribe to a stream or listen key named in the URL; ccxt's `/ws/0`
        style connection indexes name neither and are ignored."""
        with self._lock:
            if self._backend.ws_listen_key_ok(name):
                conn.listen_keys.add(name)
                return True
            spec = parse_stream(name, self._backend.ws_market_ids(), self._backend.ws_intervals())
        if spec is None or spec.kind == USER_DATA:
            return False
        self._subscribe(conn, spec)
        return True

    def _subscribe(self, conn: _Conn, spec: StreamSpec) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            if spec.name in conn.streams or conn.closing:
                return
            conn.streams[spec.name] = spec
            feed = self._feeds.get(spec.name)
            if feed is None:
                feed = _Feed(spec, self._backend.ws_cursor(spec))
                self._feeds[spec.name] = feed
                feed.task = loop.create_task(self._run_feed(feed))
            feed.subscribers[conn.id] = conn

    def _unsubscribe(self, conn: _Conn, name: str) -> None:
        with self._lock:
            conn.streams.pop(name, None)
            feed = self._feeds.get(name)
            if feed is None:
                return
            feed.subscribers.pop(conn.id, None)
            if feed.subscribers:
                return
            del self._feeds[name]
        if feed.task is not None:
            feed.task.cancel()

    def _unregister(self, conn: _Conn) -> None:
        conn.closing = True
        for name in list(conn.streams):
            self._unsubscribe(conn, name)
        with self._lock:
            conn.listen_keys.clear()
            conn.user_subs.clear()
            self._conns.pop(conn.id, None)

    def _enqueue(self, conn: _Conn, deliver_at: float, stream: str, text: str) -> None:
        if conn.closing:
            return
        if conn.queue.qsize() >= MAX_QUEUE:
            with self._lock:
                self._overflowed_total += 1
            self._spawn(self._close(conn, 1008))
            return
        conn.queue.put_nowait((deliver_at, stream, text))

    def _reply(self, conn: _Conn, data: Any) -> None:
        self._enqueue(conn, 0.0, "", _dumps(data))

    async def _write(self, conn: _Conn) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                deliver_at, stream, text = await conn.queue.get()
                wait = deliver_at - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                await conn.ws.send_str(text)
                if stream:
                    with self._lock:
                        self._sent[stream] += 1
                        conn.sent[stream] += 1
        except (ConnectionError, RuntimeError) as exc:
            log.debug(
                "exchange simulator: websocket %d write ended: %s", conn.id, type(exc).__name__
            )

    async def _close(self, conn: _Conn, code: int) -> None:
        if conn.closing:
            return
        conn.closing = True
        try:
            await asyncio.wait_for(conn.ws.close(code=code, message=b"simulator"), CLOSE_TIMEOUT_S)
        except (TimeoutError, ConnectionError, RuntimeError):
            if conn.transport is not None:
                conn.transport.abort()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _drop_now(self, mode: str, code: int) -> int:
        conns = [c for c in self._conns.values() if not c.closing]
        with self._lock:
            self._dropped_total += len(conns)
        for conn in conns:
            if mode == "abort" and conn.transport is not None:
                conn.closing = True
                conn.transport.abort()
            else:
                self._spawn(self._close(conn, code))
        return len(conns)

    # ----- requests (event loop) --------------------------------------------

    def _on_text(self, conn: _Conn, data: str) -> None:
        try:
            request = json.loads(data)
        except ValueError:
            request = None
        if not isinstance(request, dict):
            if conn.kind == "api":
                self._reply(conn, self._api_error(None, 400, -1100, "Malformed request."))
            else:
                self._reply(conn, self._stream_error(None, 3, "Invalid JSON: expected an object"))
            return
        request_id = request.get("id")
        if request_id is not None and (
            isinstance(request_id, bool) or not isinstance(request_id, int | str)
        ):
            request_id = None
        if conn.kind == "api":
            self._reply(conn, self._api_request(conn, request_id, request))
        else:
            self._reply(conn, self._stream_request(conn, request_id, request))

    @staticmethod
    def _stream_error(request_id: Any, code: int, msg: str) -> dict[str, Any]:
        return {"error": {"code": code, "msg": msg}, "id": request_id}

    def _stream_request(self, conn: _Conn, rid: Any, request: dict[str, Any]) -> dict[str, Any]:
        method = request.get("method")
        params = request.get("params", [])
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
                return self._stream_error(rid, 1, "Invalid value type: expected array of strings")
            specs: list[StreamSpec | str] = []
            with self._lock:
                ids, intervals = self._backend.ws_market_ids(), self._backend.ws_intervals()
                for i, name in enumerate(params):
                    if self._backend.ws_listen_key_ok(name) or name in conn.listen_keys:
                        specs.append(name)
                        continue
                    spec = parse_stream(name, ids, intervals)
                    if spec is None or spec.kind == USER_DATA:
                        # The position only: a listen key or anything else a client
                        # sends is not echoed.
                        return self._stream_error(
                            rid, 2, f"Invalid request: unknown stream params[{i}]"
                        )
                    specs.append(spec)
            for item in specs:
                if isinstance(item, str):
                    with self._lock:
                        if method == "SUBSCRIBE":
                            conn.listen_keys.add(item)
                        else:
                            conn.listen_keys.discard(item)
                elif method == "SUBSCRIBE":
                    self._subscribe(conn, item)
                else:
                    self._unsubscribe(conn, item.name)
            return {"result": None, "id": rid}
        if method == "LIST_SUBSCRIPTIONS":
            with self._lock:
                names = sorted(conn.streams) + sorted(conn.listen_keys)
            return {"result": names, "id": rid}
        if method in ("SET_PROPERTY", "GET_PROPERTY"):
            if not isinstance(params, list) or not params or params[0] != "combined":
                return self._stream_error(rid, 0, "Unknown property")
            if method == "GET_PROPERTY":
                return {"result": conn.combined, "id": rid}
            if len(params) != 2 or not isinstance(params[1], bool):
                return self._stream_error(rid, 1, "Invalid value type: expected Boolean")
            conn.combined = params[1]
            return {"result": None, "id": rid}
        return self._stream_error(rid, 2, "Invalid request: unknown method")

    @staticmethod
    def _api_error(rid: Any, status: int, code: int, msg: str) -> dict[str, Any]:
        return {"id": rid, "status": status, "error": {"code": code, "msg": msg}}

    def _api_request(self, conn: _Conn, rid: Any, request: dict[str, Any]) -> dict[str, Any]:
        method = request.get("method")
        params = request.get("params", {})
        if not isinstance(params, dict):
            return self._api_error(rid, 400, -1100, "Malformed request: params must be an object.")
        if method == "ping":
            return {"id": rid, "status": 200, "result": {}}
        if method == "time":
            return {"id": rid, "status": 200, "result": {"serverTime": self._backend.ws_now_ms()}}
        if method == "userDataStream.subscribe.signature":
            with self._lock:
                error = self._backend.ws_check_signed(params)
                if error is not None:
                    return self._api_error(rid, 400, error[0], error[1])
                sub_id = self._next_sub_id
                self._next_sub_id += 1
                conn.user_subs.append(sub_id)
            return {"id": rid, "status": 200, "result": {"subscriptionId": sub_id}}
        if method == "userDataStream.unsubscribe":
            wanted = params.get("subscriptionId")
            with self._lock:
                if wanted is None:
                    conn.user_subs.clear()
                elif wanted in conn.user_subs:
                    conn.user_subs.remove(wanted)
                else:
                    return self._api_error(rid, 400, -1100, "Invalid subscriptionId.")
            return {"id": rid, "status": 200, "result": {}}
        return self._api_error(rid, 400, -1020, "This operation is not supported.")

    # ----- feeds (event loop) -----------------------------------------------

    async def _run_feed(self, feed: _Feed) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            with self._lock:
                rate = self._rates.get(feed.spec.name, self._default_rate)
            feed.wake.clear()
            if rate <= 0:
                await feed.wake.wait()
                next_at = loop.time()
                continue
            next_at += 1.0 / rate
            wait = next_at - loop.time()
            if wait > 0:
                try:
                    await asyncio.wait_for(feed.wake.wait(), wait)
                except TimeoutError:
                    pass
                else:  # the rate changed: start over from now at the new one
                    next_at = loop.time()
                    continue
            elif wait < -1.0:
                next_at = loop.time()  # far behind (a stalled loop): no burst to catch up
            with self._lock:
                paused = self._is_paused(feed.spec)
                if paused:
                    self._suppressed[feed.spec.name] += 1
            if not paused:
                self._tick(feed)

    def _tick(self, feed: _Feed) -> None:
        spec = feed.spec
        with self._lock:
            lag, delay = self._lag_for(spec)
            event_ms = self._backend.ws_now_ms() - round(lag * 1000)
            payload, feed.cursor = self._backend.ws_payload(spec, event_ms, feed.cursor)
            self._generated[spec.name] += 1
            subscribers = list(feed.subscribers.values())
        deliver_at = asyncio.get_running_loop().time() + delay
        raw = _dumps(payload)
        wrapped: str | None = None
        for conn in subscribers:
            if conn.combined:
                if wrapped is None:
                    wrapped = _dumps({"stream": spec.name, "data": payload})
                self._enqueue(conn, deliver_at, spec.name, wrapped)
            else:
                self._enqueue(conn, deliver_at, spec.name, raw)

    def _push_now(self, spec: StreamSpec, count: int, interval: float) -> int:
        with self._lock:
            feed = self._feeds.get(spec.name)
            if feed is None or not feed.subscribers:
                raise LookupError("no connection is subscribed to that stream")
            receivers = len(feed.subscribers)
        if interval == 0:
            for _ in range(count):
                self._tick(feed)
        else:
            self._spawn(self._push_paced(feed, count, interval))
        return receivers

    async def _push_paced(self, feed: _Feed, count: int, interval: float) -> None:
        for i in range(count):
            if i:
                await asyncio.sleep(interval)
            if self._feeds.get(feed.spec.name) is not feed:
                return  # every subscriber left
            self._tick(feed)

    def _wake_feeds(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        def wake() -> None:
            for feed in list(self._feeds.values()):
                feed.wake.set()

        if self._on_loop(loop):
            wake()
        else:
            loop.call_soon_threadsafe(wake)

    # ----- helpers ----------------------------------------------------------

    def _is_paused(self, spec: StreamSpec) -> bool:
        return (
            self._paused_all
            or spec.name in self._paused_streams
            or (spec.market_id is not None and spec.market_id in self._paused_symbols)
        )

    def _lag_for(self, spec: StreamSpec) -> tuple[float, float]:
        for key in (f"stream:{spec.name}", f"symbol:{spec.market_id}", "*"):
            setting = self._lags.get(key)
            if setting is not None:
                return setting
        return 0.0, 0.0

    @staticmethod
    def _check_rate(rate: Any) -> float:
        if isinstance(rate, bool) or not isinstance(rate, int | float):
            raise TypeError("rate must be a number of updates per second")
        if not math.isfinite(rate) or not 0 <= rate <= MAX_RATE:
            raise ValueError(f"rate must be between 0 and {MAX_RATE:g} updates per second")
        return float(rate)

    @staticmethod
    def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
        try:
            return asyncio.get_running_loop() is loop
        except RuntimeError:
            return False

    def _in_loop(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the server's loop and return its result, from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            raise RuntimeError("the simulator is not running")
        if self._on_loop(loop):
            return fn()
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                done.set_result(fn())
            except BaseException as exc:  # re-raised in the calling thread
                done.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return done.result(timeout=10.0)
