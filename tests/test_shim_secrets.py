"""Canary credentials must appear in no span, attribute, event, status, exported
byte or log record the shim (or the OpenTelemetry SDK under it) produces, not even
encoded (base64, hex, URL-encoding), including on failing private calls."""

from __future__ import annotations

import base64
import logging
import secrets
import urllib.parse
from typing import Any

import ccxt
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tickscope import shim

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


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        # ccxt and urllib3 log signed URLs and request headers themselves at DEBUG
        # (their behaviour, documented in docs/shim.md); everything else counts.
        if record.name.startswith(("ccxt", "urllib3")):
            return
        self.lines.append(f"{record.name} {record.getMessage()} {record.__dict__}")


def test_canaries_appear_nowhere(simulator: Any) -> None:
    canaries = {name: f"CANARY{name}{secrets.token_hex(12)}" for name in CREDENTIALS}
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    capture = Capture()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    errors: list[str] = []
    try:
        simulator.reset()
        ex = simulator.point(ccxt.binance({**simulator.ccxt_config(), **canaries}))
        ex.timeout = 800
        shim.instrument_exchange(ex, tracer_provider=provider)

        def attempt(fn: Any, *args: Any) -> None:
            try:
                fn(*args)
            except ccxt.BaseError as exc:
                errors.append(type(exc).__name__)

        attempt(ex.load_markets)
        attempt(ex.fetch_ticker, "BTC/USDT")
        attempt(ex.fetch_tickers)
        attempt(ex.fetch_order_book, "BTC/USDT")
        attempt(ex.fetch_trades, "BTC/USDT")
        attempt(ex.fetch_balance)
        order = ex.create_order("BTC/USDT", "limit", "buy", 0.001, 30000)
        attempt(ex.fetch_order, order["id"], "BTC/USDT")
        attempt(ex.fetch_open_orders, "BTC/USDT")
        attempt(ex.fetch_my_trades, "BTC/USDT")
        attempt(ex.cancel_order, order["id"], "BTC/USDT")
        # Failing private calls: their ccxt exceptions carry the signed URL.
        attempt(ex.create_order, "BTC/USDT", "limit", "buy", 10_000, 60_000)  # insufficient funds
        attempt(ex.cancel_order, "424242", "BTC/USDT")  # unknown order
        for fault in (
            {"status": 401, "body": {"code": -2015, "msg": "Invalid API-key."}},
            {"status": 503},
            {"latency": 2.0},
            {"status": 429},
        ):
            simulator.inject(path="account", count=1, **fault)
            attempt(ex.fetch_balance)
        simulator.inject(path="order", count=1, latency=2.0)
        attempt(ex.create_order, "BTC/USDT", "limit", "buy", 0.001, 30000)
    finally:
        root.removeHandler(capture)
        root.setLevel(old_level)
        provider.shutdown()
    # (ccxt maps the injected 401 to AuthenticationError or DDoSProtection depending on
    # its state; either way the private call failed.)
    assert {
        "InsufficientFunds",
        "OrderNotFound",
        "ExchangeNotAvailable",
        "RequestTimeout",
        "DDoSProtection",
    } <= set(errors), errors
    assert len(errors) == 7, errors
    finished = exporter.get_finished_spans()
    assert len(finished) >= 17
    haystacks = [repr(s.to_json()) for s in finished]
    haystacks.append(repr(encode_spans(finished).SerializeToString()))
    haystacks.append(encode_spans(finished).SerializeToString().decode("latin-1"))
    haystacks.extend(capture.lines)
    text = "\n".join(haystacks)
    for name, canary in canaries.items():
        for form in encodings(canary):
            assert form not in text, f"{name} canary found ({form!r})"
    # No URL, query string or signature reached a span either.
    for span in finished:
        for key, value in (span.attributes or {}).items():
            assert (
                "?" not in str(value)
                and "signature" not in str(value)
                and "timestamp=" not in str(value)
            ), (key, value)
        assert "signature" not in (span.status.description or "")
        assert not span.events
    # ... although ccxt's own exception message does carry the signed URL: the
    # reason the shim never records one.
    simulator.inject(path="account", count=1, latency=2.0)
    with pytest.raises(ccxt.RequestTimeout) as info:
        ex.fetch_balance()
    assert "signature=" in str(info.value)
