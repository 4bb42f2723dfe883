"""The operator's own account as metrics: balances, positions, open orders, fills.

Off unless turned on: `configure(account_metrics=True)`, or
TICKSCOPE_SHIM_ACCOUNT_METRICS=true (for opentelemetry-instrument). These are
the figures of the operator's own account, sent to the sidecar's /metrics (and
whatever scrapes it). Off, nothing here records or exports anything.

On, the results of these ccxt calls become metrics (labels: exchange id, symbol,
currency, side, order type; never an account id, an order id or a key):

- fetch_balance -> trading.balance{exchange, currency, kind} (kind free, used,
  total), trading_balance on /metrics, for currencies held (any of the three
  above zero); a currency held earlier in the process that is no longer held
  reads 0 (so a drained balance shows as 0, not as a series that stops);
- fetch_positions / fetch_position -> per (exchange, symbol, side: long|short):
  trading.position.size (ccxt's `contracts`, a number of contracts: times the
  market's contractSize for the base amount), trading.position.notional,
  trading.position.entry_price, trading.position.unrealized_pnl (in the market's
  settle currency, as ccxt reports them); open positions only (a closed one's
  series stop). fetch_positions(symbols) updates those symbols only;
- fetch_open_orders -> trading.open_orders{exchange, symbol, side} (0 for a
  (symbol, side) that had open orders before) and
  trading.open_order.oldest_age{exchange, symbol} (s: the oldest open order's
  age when the answer came); fetch_open_orders(symbol) updates that symbol only;
- orders seen done (status closed, canceled or expired) in the answer to
  create_order and its helpers, cancel_order, edit_order, fetch_order,
  fetch_orders, fetch_closed_orders, fetch_canceled_orders and
  fetch_canceled_and_closed_orders, each counted once:
  trading.order.filled.ratio{exchange, side, type}, a histogram of filled /
  amount; and for market orders with a fill price (average, else cost / filled)
  trading.order.slippage.ratio{exchange, side, direction}, a histogram of how far
  the fill price was from the last price the engine saw for the symbol before it
  sent the order (from fetch_ticker's last, else its bid/ask mid, fetch_tickers,
  the order book's mid, the newest of fetch_trades; at most REFERENCE_MAX_AGE
  old), relative to that price: |fill - reference| / reference, with
  direction="adverse" when the fill was worse for the engine (a buy above the
  reference, a sell below it; an exact fill is adverse 0) and "favorable" when
  better. (OpenTelemetry histograms take no negative values: the sign is the
  label.)

Limits: at most TICKSCOPE_SHIM_MAX_SYMBOLS (default 100) symbols and as many
currencies per exchange; open orders of further symbols are added up in one
series without `symbol`, marked otel.metric.overflow=true; positions and
currencies beyond the limit are left out. Several accounts on one exchange id in
one engine process overwrite each other's figures (there is no account label,
by design).

watch_balance / watch_positions / watch_orders (ccxt.pro) feed the same figures
through `record_balance`, `record_positions`, `record_orders` and `note_price`.
OpenTelemetry API only.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.metrics import CallbackOptions, Histogram, Meter, Observation

from tickscope.shim import clock, settings
from tickscope.shim.redact import safe_text

__all__ = [
    "DONE_STATUSES",
    "REFERENCE_MAX_AGE",
    "enabled",
    "hook_for",
    "note_price",
    "record_balance",
    "record_open_orders",
    "record_orders",
    "record_positions",
    "register",
    "reset",
    "set_enabled",
]

Hook = Callable[[str, Any, Mapping[str, Any], float, float], None]

OVERFLOW = "otel.metric.overflow"
DONE_STATUSES = frozenset({"closed", "canceled", "expired"})
REFERENCE_MAX_AGE = 60.0  # seconds: an older last price is no reference for a fill
SIDES = frozenset({"buy", "sell"})
POSITION_SIDES = frozenset({"long", "short"})
MAX_ORDER_TYPES = 16  # distinct order type labels; others are "other"
SEEN_ORDERS = 10_000  # order ids remembered, so that an order counts once
PENDING_REFERENCES = 1_000
MAX_PRICES = 10_000
FILLED_BUCKETS = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0)
SLIPPAGE_BUCKETS = (0.0, 0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05)

_explicit: bool | None = None
_from_env: bool | None = None


def enabled() -> bool:
    """Whether account figures are recorded: configure()'s choice, else the env var."""
    global _from_env
    if _explicit is not None:
        return _explicit
    if _from_env is None:
        _from_env = settings.env_flag(settings.ACCOUNT_METRICS_ENV, False)
    return _from_env


def set_enabled(on: bool | None) -> None:
    """Turn account figures on or off; None: as TICKSCOPE_SHIM_ACCOUNT_METRICS says
    (read again). Turning them off forgets every figure held."""
    global _explicit, _from_env
    _explicit = on
    _from_env = None
    if not enabled():
        _state.clear()


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _side(value: Any, allowed: frozenset[str]) -> str:
    return value if isinstance(value, str) and value in allowed else "unknown"


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.max_symbols = settings.env_int(settings.MAX_SYMBOLS_ENV, settings.DEFAULT_MAX_SYMBOLS)
        self.clear()

    def clear(self) -> None:
        # exchange -> currency -> (free, used, total)
        self.balances: dict[str, dict[str, tuple[float | None, ...]]] = {}
        self.held: dict[str, set[str]] = {}
        # exchange -> (symbol, side) -> (size, notional, entry price, unrealized pnl)
        self.positions: dict[str, dict[tuple[str, str], tuple[float | None, ...]]] = {}
        # exchange -> symbol (None: overflow) -> side -> count; and oldest ages
        self.open_orders: dict[str, dict[str | None, dict[str, int]]] = {}
        self.oldest: dict[str, dict[str | None, float]] = {}
        self.order_symbols: dict[str, set[str]] = {}
        self.position_symbols: dict[str, set[str]] = {}
        # (exchange, symbol) -> ((price, at), previous (price, at))
        self.prices: dict[tuple[str, str], tuple[tuple[float, float], tuple[float, float]]] = {}
        self.seen: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        self.references: OrderedDict[tuple[str, str], float] = OrderedDict()
        self.order_types: set[str] = set()

    def admit(self, table: dict[str, set[str]], exchange: str, symbol: str) -> bool:
        admitted = table.setdefault(exchange, set())
        if symbol in admitted:
            return True
        if len(admitted) >= self.max_symbols:
            return False
        admitted.add(symbol)
        return True

    def once(self, key: tuple[str, str, str]) -> bool:
        """True the first time `key` is seen (of the last SEEN_ORDERS)."""
        if key in self.seen:
            return False
        self.seen[key] = None
        if len(self.seen) > SEEN_ORDERS:
            self.seen.popitem(last=False)
        return True

    def order_type(self, value: Any) -> str:
        text = safe_text(value)
        if text is None:
            return "unknown"
        text = text.lower()
        if text in self.order_types:
            return text
        if len(self.order_types) >= MAX_ORDER_TYPES:
            return "other"
        self.order_types.add(text)
        return text


_state = _State()
# meter provider -> its (filled ratio, slippage) histograms
_histograms: weakref.WeakKeyDictionary[Any, tuple[Histogram, Histogram]] = (
    weakref.WeakKeyDictionary()
)


def reset() -> None:
    """Forget every figure (tests); the symbol limit is read again."""
    global _state
    _state = _State()


# -- balances -------------------------------------------------------------------------


def record_balance(exchange: str, balance: Any) -> None:
    """A ccxt balance structure (fetch_balance, watch_balance): the new figures of
    `exchange`'s currencies."""
    if not enabled() or not isinstance(balance, Mapping):
        return
    kinds = [balance.get(kind) for kind in ("free", "used", "total")]
    state = _state
    currencies: set[str] = set()
    for table in kinds:
        if isinstance(table, Mapping):
            currencies.update(c for c in table if isinstance(c, str))
    figures: dict[str, tuple[float | None, ...]] = {}
    with state.lock:
        held = state.held.setdefault(exchange, set())
        for currency in sorted(currencies):
            values = tuple(
                _number(table.get(currency)) if isinstance(table, Mapping) else None
                for table in kinds
            )
            if not any(v for v in values if v is not None):
                continue
            name = safe_text(currency)
            if name is None:
                continue
            if name not in held:
                if len(held) >= state.max_symbols:
                    continue
                held.add(name)
            figures[name] = values
        for name in held - figures.keys():
            figures[name] = (0.0, 0.0, 0.0)  # held before, not now
        state.balances[exchange] = figures


# -- positions ------------------------------------------------------------------------


def record_positions(exchange: str, positions: Any, symbols: Any = None) -> None:
    """ccxt position structures (fetch_positions, watch_positions): they replace
    the exchange's positions, or only those of `symbols` when given."""
    if not enabled() or not isinstance(positions, Sequence):
        return
    only: set[str] | None = None
    if isinstance(symbols, str):
        only = {symbols}
    elif isinstance(symbols, Sequence) and symbols:
        only = {s for s in symbols if isinstance(s, str)}
    state = _state
    with state.lock:
        previous = state.positions.get(exchange, {})
        figures = (
            {}
            if only is None
            else {key: value for key, value in previous.items() if key[0] not in only}
        )
        for position in positions:
            if not isinstance(position, Mapping):
                continue
            contracts = _number(position.get("contracts"))
            symbol = safe_text(position.get("symbol"))
            if not contracts or symbol is None:
                continue  # no position held
            if only is not None and symbol not in only:
                continue
            if not state.admit(state.position_symbols, exchange, symbol):
                continue
            side = _side(position.get("side"), POSITION_SIDES)
            figures[(symbol, side)] = (
                abs(contracts),
                _number(position.get("notional")),
                _number(position.get("entryPrice")),
                _number(position.get("unrealizedPnl")),
            )
        state.positions[exchange] = figures


# -- open orders ----------------------------------------------------------------------


def record_open_orders(
    exchange: str, orders: Any, symbol: Any = None, at: float | None = None
) -> None:
    """ccxt order structures (fetch_open_orders): the exchange's open orders, or
    only those of `symbol` when given; `at` is when the answer came (engine time)."""
    if not enabled() or not isinstance(orders, Sequence):
        return
    at = clock.now() if at is None else at
    state = _state
    with state.lock:
        counts = {k: dict(v) for k, v in state.open_orders.get(exchange, {}).items()}
        oldest = dict(state.oldest.get(exchange, {}))
        only = safe_text(symbol) if symbol is not None else None
        if symbol is None:
            for sides in counts.values():
                for side in sides:
                    sides[side] = 0
            oldest.clear()
        elif only is not None:
            # The overflow series (symbol None) is re-counted only by a full answer.
            for side in counts.get(only, {}):
                counts[only][side] = 0
            oldest.pop(only, None)
        else:
            return
        for order in orders:
            if not isinstance(order, Mapping):
                continue
            name = safe_text(order.get("symbol"))
            if name is None or (only is not None and name != only):
                continue
            key: str | None = name if state.admit(state.order_symbols, exchange, name) else None
            side = _side(order.get("side"), SIDES)
            sides = counts.setdefault(key, {})
            sides[side] = sides.get(side, 0) + 1
            stamp = _number(order.get("timestamp"))
            if stamp is not None:
                age = at - stamp / 1000
                if age > oldest.get(key, -math.inf):
                    oldest[key] = age
        # An overflow series that no longer counts anything is dropped.
        if None in counts and not any(counts[None].values()):
            del counts[None]
        state.open_orders[exchange] = counts
        state.oldest[exchange] = oldest


# -- fills ----------------------------------------------------------------------------


def note_price(exchange: str, symbol: Any, price: Any, at: float | None = None) -> None:
    """The last price the engine saw for `symbol`: the reference for market
    orders' slippage (fed by the market-data calls; ccxt.pro's watchers may call it)."""
    if not enabled():
        return
    value = _number(price)
    name = safe_text(symbol)
    if value is None or value <= 0 or name is None:
        return
    at = clock.now() if at is None else at
    state = _state
    key = (exchange, name)
    held = state.prices.get(key)
    if held is None and len(state.prices) >= MAX_PRICES:
        state.prices.clear()
    state.prices[key] = ((value, at), held[0] if held is not None else (value, at))


def _reference(exchange: str, symbol: str, before: float) -> float | None:
    """The newest price seen for `symbol` at or before `before`, if recent enough."""
    held = _state.prices.get((exchange, symbol))
    if held is None:
        return None
    for price, at in held:
        if at <= before:
            return price if before - at <= REFERENCE_MAX_AGE else None
    return None


def _fill_price(order: Mapping[str, Any]) -> float | None:
    average = _number(order.get("average"))
    if average is not None and average > 0:
        return average
    cost, filled = _number(order.get("cost")), _number(order.get("filled"))
    if cost is not None and filled:
        return cost / filled
    return None


def record_orders(
    exchange: str, orders: Any, sent: float | None = None, placed: bool = False
) -> None:
    """ccxt order structures from any answer: each order seen done counts once in the
    filled ratio, and a market order with a fill price once in the slippage.
    `placed`: the answer to an order just placed at `sent` (engine time), whose
    reference price is the one seen before `sent`."""
    if not enabled():
        return
    if isinstance(orders, Mapping):
        orders = [orders]
    if not isinstance(orders, Sequence):
        return
    state = _state
    for order in orders:
        if not isinstance(order, Mapping):
            continue
        order_id = order.get("id")
        if not isinstance(order_id, str | int) or isinstance(order_id, bool):
            continue
        order_id = str(order_id)
        symbol = safe_text(order.get("symbol"))
        kind = order.get("type")
        if placed and sent is not None and symbol is not None and kind == "market":
            reference = _reference(exchange, symbol, sent)
            if reference is not None:
                with state.lock:
                    state.references[(exchange, order_id)] = reference
                    if len(state.references) > PENDING_REFERENCES:
                        state.references.popitem(last=False)
        if order.get("status") not in DONE_STATUSES:
            continue
        side = _side(order.get("side"), SIDES)
        with state.lock:
            first = state.once((exchange, order_id, "filled"))
            order_type = state.order_type(kind)
        amount, filled = _number(order.get("amount")), _number(order.get("filled"))
        if first and amount and amount > 0 and filled is not None:
            ratio = min(max(filled / amount, 0.0), 1.0)
            attributes = {"exchange": exchange, "side": side, "type": order_type}
            for filled_ratio, _ in list(_histograms.values()):
                filled_ratio.record(ratio, attributes)
        if kind != "market" or not filled:
            continue
        with state.lock:
            reference = state.references.pop((exchange, order_id), None)
        fill = _fill_price(order)
        if reference is None or fill is None:
            continue
        with state.lock:
            if not state.once((exchange, order_id, "slippage")):
                continue
        if side not in SIDES:
            continue
        # Positive: worse for the engine (paid more, or got less, than the reference).
        adverse = (fill - reference) / reference
        if side == "sell":
            adverse = -adverse
        attributes = {
            "exchange": exchange,
            "side": side,
            "direction": "adverse" if adverse >= 0 else "favorable",
        }
        for _, slippage_ratio in list(_histograms.values()):
            slippage_ratio.record(abs(adverse), attributes)


# -- hooks on ccxt results ------------------------------------------------------------


def _balance(
    exchange: str, result: Any, arguments: Mapping[str, Any], started: float, ended: float
) -> None:
    record_balance(exchange, result)


def _positions(
    exchange: str, result: Any, arguments: Mapping[str, Any], started: float, ended: float
) -> None:
    record_positions(exchange, result, arguments.get("symbols"))


def _position(
    exchange: str, result: Any, arguments: Mapping[str, Any], started: float, ended: float
) -> None:
    symbol = arguments.get("symbol")
    if isinstance(symbol, str):
        record_positions(exchange, [result] if isinstance(result, Mapping) else [], [symbol])


def _open_orders(
    exchange: str, result: Any, arguments: Mapping[str, Any], started: float, ended: float
) -> None:
    record_open_orders(exchange, result, arguments.get("symbol"), ended)


def _placed(
    exchange: str, result: Any, arguments: Mapping[str, Any], started: float, ended: float
) -> None:
    record_orders(exchange, result, started, placed=True)


def _orders(
    exchange: str, result: Any, arguments: Mapping[str, Any], started: float, ended: float
) -> None:
    record_orders(exchange, result)


def _ticker_price(
    exchange: str, result: Any, arguments: Mapping[str, Any], started: float, ended: float
) -> None:
    if enabled() and isinstance(result, Mapping):
        _note_ticker(exchange, result, ended)


def _note_ticker(exchange: str, ticker: Mapping[str, Any], at: float) -> None:
    price = _number(ticker.get("last"))
    if price is None:
        bid, ask = _number(ticker.get("bid")), _number(ticker.get("ask"))
        if bid is not None and ask is not None:
            price = (bid + ask) / 2
    note_price(exchange, ticker.get("symbol"), price, at)


def _tickers_price(
    exchange: str, result: Any, arguments: Mapping[str, Any], started: float, ended: float
) -> None:
    if enabled() and isinstance(result, Mapping):
        for ticker in result.values():
            if isinstance(ticker, Mapping):
                _note_ticker(exchange, ticker, ended)


def _book_price(
    exchange: str, result: Any, arguments: Mapping[str, Any], started: float, ended: float
) -> None:
    if not enabled() or not isinstance(result, Mapping):
        return
    bids, asks = result.get("bids"), result.get("asks")
    try:
        bid, ask = _number(bids[0][0]), _number(asks[0][0])  # type: ignore[index]
    except (TypeError, IndexError, KeyError):
        return
    if bid is not None and ask is not None:
        symbol = arguments.get("symbol") or result.get("symbol")
        note_price(exchange, symbol, (bid + ask) / 2, ended)


def _trades_price(
    exchange: str, result: Any, arguments: Mapping[str, Any], started: float, ended: float
) -> None:
    if not enabled() or not isinstance(result, Sequence) or not result:
        return
    newest = result[-1]
    if isinstance(newest, Mapping):
        note_price(exchange, newest.get("symbol"), newest.get("price"), ended)


_ORDER_RESULTS = (
    "cancel_order", "edit_order", "fetch_order", "fetch_orders", "fetch_closed_orders",
    "fetch_canceled_orders", "fetch_canceled_and_closed_orders", "cancel_orders",
    "cancel_all_orders",
)  # fmt: skip
METHODS: dict[str, Hook] = {
    "fetch_balance": _balance,
    "fetch_positions": _positions,
    "fetch_position": _position,
    "fetch_open_orders": _open_orders,
    "fetch_ticker": _ticker_price,
    "fetch_tickers": _tickers_price,
    "fetch_order_book": _book_price,
    "fetch_trades": _trades_price,
    **dict.fromkeys(_ORDER_RESULTS, _orders),
}


def places_orders(method: str) -> bool:
    """create_order, create_orders and helpers such as create_market_buy_order."""
    return method.startswith("create_") and (
        method.endswith("_order") or method.endswith("_orders")
    )


def hook_for(method: str) -> Hook | None:
    if places_orders(method):
        return _placed
    return METHODS.get(method)


# -- the instruments ------------------------------------------------------------------


def _observe_balances(_: CallbackOptions) -> Iterable[Observation]:
    if not enabled():
        return []
    found = []
    for exchange, figures in sorted(_state.balances.copy().items()):
        for currency, values in sorted(figures.items()):
            for kind, value in zip(("free", "used", "total"), values, strict=True):
                if value is not None:
                    attributes = {"exchange": exchange, "currency": currency, "kind": kind}
                    found.append(Observation(value, attributes))
    return found


def _position_gauge(index: int) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def observe(_: CallbackOptions) -> Iterable[Observation]:
        if not enabled():
            return []
        found = []
        for exchange, figures in sorted(_state.positions.copy().items()):
            for (symbol, side), values in sorted(figures.items()):
                value = values[index]
                if value is not None:
                    attributes = {"exchange": exchange, "symbol": symbol, "side": side}
                    found.append(Observation(value, attributes))
        return found

    return observe


def _attributes(exchange: str, symbol: str | None) -> dict[str, str | bool]:
    if symbol is None:
        return {"exchange": exchange, OVERFLOW: True}
    return {"exchange": exchange, "symbol": symbol}


def _observe_open_orders(_: CallbackOptions) -> Iterable[Observation]:
    if not enabled():
        return []
    found = []
    for exchange, counts in sorted(_state.open_orders.copy().items()):
        for symbol, sides in sorted(counts.items(), key=lambda item: item[0] or ""):
            for side, count in sorted(sides.items()):
                attributes = _attributes(exchange, symbol)
                attributes["side"] = side
                found.append(Observation(count, attributes))
    return found


def _observe_oldest(_: CallbackOptions) -> Iterable[Observation]:
    if not enabled():
        return []
    found = []
    for exchange, ages in sorted(_state.oldest.copy().items()):
        for symbol, age in sorted(ages.items(), key=lambda item: item[0] or ""):
            found.append(Observation(age, _attributes(exchange, symbol)))
    return found


def register(meter: Meter, owner: Any) -> None:
    """The account instruments, on `meter` of the meter provider `owner`; they report
    nothing while switched off."""
    money = "{currency}"
    meter.create_observable_gauge(
        "trading.balance",
        [_observe_balances],
        unit=money,
        description="Balance of a currency held on an exchange (kind free, used or total), "
        "from fetch_balance.",
    )
    for index, (name, unit, what) in enumerate(
        (
            ("trading.position.size", "{contract}", "Open position size, in contracts"),
            ("trading.position.notional", money, "Open position notional value"),
            ("trading.position.entry_price", money, "Open position entry price"),
            ("trading.position.unrealized_pnl", money, "Open position unrealised PnL"),
        )
    ):
        meter.create_observable_gauge(
            name, [_position_gauge(index)], unit=unit, description=f"{what}, from fetch_positions."
        )
    meter.create_observable_gauge(
        "trading.open_orders",
        [_observe_open_orders],
        unit="{order}",
        description="Open orders by symbol and side, from fetch_open_orders.",
    )
    meter.create_observable_gauge(
        "trading.open_order.oldest_age",
        [_observe_oldest],
        unit="s",
        description="Age of the oldest open order of a symbol when fetch_open_orders answered.",
    )
    filled = meter.create_histogram(
        "trading.order.filled.ratio",
        unit="1",
        description="Filled share (filled / amount) of orders seen done (closed, canceled, "
        "expired).",
        explicit_bucket_boundaries_advisory=FILLED_BUCKETS,
    )
    slippage = meter.create_histogram(
        "trading.order.slippage.ratio",
        unit="1",
        description="Market orders' fill price against the last price seen before sending "
        "them: |fill - reference| / reference, direction adverse (worse for the engine) "
        "or favorable.",
        explicit_bucket_boundaries_advisory=SLIPPAGE_BUCKETS,
    )
    _histograms[owner] = (filled, slippage)
