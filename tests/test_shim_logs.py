"""Secret-safe logs: with the root logger at DEBUG, instrumented ccxt (sync and
async) against the simulator, signed private endpoints included, logs no
credential in any form and no signature, in what any handler receives."""

from __future__ import annotations

import asyncio
import base64
import gc
import logging
import re
import secrets
import urllib.parse
import weakref
from collections.abc import Iterator
from typing import Any

import ccxt
import ccxt.async_support as ccxt_async
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tickscope import shim
from tickscope.shim import credentials, logredact

# The credential fields the issue names; the shim masks a few more (credentials.py).
FIELDS = ("apiKey", "secret", "password", "uid", "privateKey", "walletAddress", "token")
# The simulator runs in this process: its own loggers (the server side) are not the
# engine's and are left out of what is checked.
SIMULATOR_LOGGERS = (
    "tickscope.exchange_simulator",
    "aiohttp.access",
    "aiohttp.server",
    "aiohttp.web",
)
UNMASKED_SIGNATURE = re.compile(r"signature=(?!\*\*\*)[^&\s'\",]+", re.IGNORECASE)


def forms(value: str) -> set[str]:
    raw = value.encode()
    return {
        value,
        urllib.parse.quote(value, safe=""),
        urllib.parse.quote_plus(value),
        base64.b64encode(raw).decode(),
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        raw.hex(),
        raw.hex().upper(),
    }


def canaries() -> dict[str, str]:
    # Characters that URL-encoding and base64 change, so every form differs.
    return {name: f"CANARY/{name}+{secrets.token_hex(10)}=" for name in FIELDS}


class Everything(logging.Handler):
    """What a handler of the engine would get: every record, formatted as a
    handler would (message, arguments, exception text, stack) and as raw data."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.texts: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(SIMULATOR_LOGGERS):
            return
        self.records.append(record)
        self.texts.append(
            "\n".join(
                (
                    self.format(record),
                    record.getMessage(),
                    repr(record.msg),
                    repr(record.args),
                    repr(vars(record)),
                )
            )
        )

    def text(self) -> str:
        return "\n".join(self.texts)

    def names(self) -> list[str]:
        return [r.name for r in self.records]


@pytest.fixture
def capture() -> Iterator[Everything]:
    handler = Everything()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


@pytest.fixture
def provider() -> Iterator[TracerProvider]:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    yield tracer_provider
    tracer_provider.shutdown()


@pytest.fixture
def instrumented(provider: TracerProvider) -> Iterator[shim.CcxtInstrumentor]:
    instrumentor = shim.CcxtInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    yield instrumentor
    instrumentor.uninstrument()
    logredact.set_enabled(None)


def private_calls_sync(ex: Any) -> list[str]:
    errors: list[str] = []
    ex.load_markets()
    ex.fetch_balance()
    order = ex.create_order("BTC/USDT", "limit", "buy", 0.001, 30000)
    ex.fetch_open_orders("BTC/USDT")
    ex.cancel_order(order["id"], "BTC/USDT")
    try:  # a rejected private call: ccxt logs its signed request and the error body
        ex.create_order("BTC/USDT", "limit", "buy", 10_000, 60_000)
    except ccxt.InsufficientFunds as exc:
        errors.append(type(exc).__name__)
    return errors


async def private_calls_async(ex: Any) -> None:
    try:
        await ex.load_markets()
        await ex.fetch_balance()
        order = await ex.create_order("ETH/USDT", "limit", "sell", 0.01, 90000)
        await ex.cancel_order(order["id"], "ETH/USDT")
    finally:
        await ex.close()


def assert_clean(capture: Everything, secrets_by_field: dict[str, str]) -> None:
    text = capture.text()
    for field, value in secrets_by_field.items():
        for form in forms(value):
            assert form.lower() not in text.lower(), f"{field} found in logs as {form!r}"
    found = UNMASKED_SIGNATURE.findall(text)
    assert not found, found


def test_sync_and_async_ccxt_log_no_credential_and_no_signature(
    simulator: Any, capture: Everything, instrumented: shim.CcxtInstrumentor
) -> None:
    simulator.reset()
    sync_secrets, async_secrets = canaries(), canaries()
    sync_ex = simulator.point(ccxt.binance({**simulator.ccxt_config(), **sync_secrets}))
    sync_ex.timeout = 3000
    assert shim.is_instrumented(sync_ex)
    errors = private_calls_sync(sync_ex)
    assert errors == ["InsufficientFunds"]
    async_ex = simulator.point(ccxt_async.binance({**simulator.ccxt_config(), **async_secrets}))
    assert shim.is_instrumented(async_ex)
    asyncio.run(private_calls_async(async_ex))
    # The calls did log (so the test can fail): ccxt's request and response lines,
    # sync and async, and urllib3's request lines; the signed ones masked.
    # (Both log on ccxt.base.exchange; the async lines come from async_support's code.)
    ccxt_records = [r for r in capture.records if r.name == "ccxt.base.exchange"]
    async_records = [r for r in ccxt_records if "async_support" in r.pathname]
    assert len(ccxt_records) - len(async_records) >= 12, capture.names()
    assert len(async_records) >= 8, capture.names()
    assert any(name.startswith("urllib3.") for name in capture.names())
    text = capture.text()
    assert "signature=***" in text
    assert "'X-MBX-APIKEY': '***'" in text
    assert_clean(capture, {**sync_secrets, **{f"async {k}": v for k, v in async_secrets.items()}})


def test_without_the_filter_ccxt_logs_the_key_and_the_signature(
    simulator: Any, capture: Everything, provider: TracerProvider
) -> None:
    # The control: what the test above would find without the masking.
    instrumentor = shim.CcxtInstrumentor()
    instrumentor.instrument(tracer_provider=provider, redact_logs=False)
    try:
        assert not logredact.is_installed()
        simulator.reset()
        values = canaries()
        ex = simulator.point(ccxt.binance({**simulator.ccxt_config(), **values}))
        ex.load_markets()
        ex.fetch_balance()
    finally:
        instrumentor.uninstrument()
        logredact.set_enabled(None)
    text = capture.text()
    assert values["apiKey"] in text
    assert UNMASKED_SIGNATURE.search(text)


def test_the_environment_switch_turns_masking_off(
    monkeypatch: pytest.MonkeyPatch, provider: TracerProvider
) -> None:
    monkeypatch.setenv("TICKSCOPE_SHIM_REDACT_LOGS", "false")
    instrumentor = shim.CcxtInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        assert not logredact.is_installed()
    finally:
        instrumentor.uninstrument()
    monkeypatch.setenv("TICKSCOPE_SHIM_REDACT_LOGS", "ture")  # a typo keeps it on
    instrumentor.instrument(tracer_provider=provider)
    try:
        assert logredact.is_installed()
    finally:
        instrumentor.uninstrument()
    assert not logredact.is_installed()


def test_exception_text_child_loggers_and_the_exchanges_own_logger(
    simulator: Any, capture: Everything, instrumented: shim.CcxtInstrumentor
) -> None:
    values = canaries()
    ex = simulator.point(ccxt.binance({**simulator.ccxt_config(), **values}))
    ex.timeout = 800
    ex.load_markets()
    simulator.inject(path="account", count=1, latency=2.0)
    with pytest.raises(ccxt.RequestTimeout) as info:
        ex.fetch_balance()
    assert "signature=" in str(info.value)  # ccxt's message carries the signed URL
    # A traceback logged on ccxt's logger, a child logger made after the masking was
    # installed, and a logger the engine gave the exchange.
    logging.getLogger("ccxt.base.exchange").debug("call failed", exc_info=info.value)
    logging.getLogger("urllib3.made.later").debug("GET /x?%s", f"apiKey={values['apiKey']}")
    own = ccxt.binance({**simulator.ccxt_config(), **values})
    own.logger = logging.getLogger("bot.exchange")
    shim.uninstrument_exchange(own)  # instrumented by the instrumentor, before .logger was set
    shim.instrument_exchange(own)
    own.logger.debug("headers %s", {"X-MBX-APIKEY": values["apiKey"]})
    failed = [r for r in capture.records if r.getMessage() == "call failed"]
    assert len(failed) == 1 and failed[0].exc_info is None
    assert "RequestTimeout" in (failed[0].exc_text or "")
    assert "signature=***" in (failed[0].exc_text or "")
    assert any(r.name == "urllib3.made.later" for r in capture.records)
    assert any(r.name == "bot.exchange" for r in capture.records)
    assert_clean(capture, values)


# The SDK's LoggingHandler is deprecated for opentelemetry-instrumentation-logging's,
# but it is the one the SDK's configurator still installs
# (OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED=true).
@pytest.mark.filterwarnings("ignore:`LoggingHandler` in `opentelemetry-sdk` is deprecated")
def test_opentelemetry_log_bridge_exports_masked_records(
    simulator: Any, instrumented: shim.CcxtInstrumentor
) -> None:
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

    exporter = InMemoryLogRecordExporter()
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    bridge = LoggingHandler(level=logging.DEBUG, logger_provider=logger_provider)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(bridge)
    root.setLevel(logging.DEBUG)
    values = canaries()
    try:
        ex = simulator.point(ccxt.binance({**simulator.ccxt_config(), **values}))
        ex.load_markets()
        ex.fetch_balance()
        # The engine's own logger, which the record factory leaves alone: the bridge's
        # filter masks what it exports.
        logging.getLogger("bot").info(
            "using key %s", values["apiKey"], extra={"k": values["secret"]}
        )
    finally:
        root.removeHandler(bridge)
        root.setLevel(old_level)
        logger_provider.shutdown()
    exported = exporter.get_finished_logs()
    bodies = [str(item.log_record.body) for item in exported]
    assert any(body.startswith("using key ***") for body in bodies), bodies
    assert sum("Request:" in body for body in bodies) >= 2, bodies
    text = "\n".join(
        f"{item.log_record.body} {dict(item.log_record.attributes or {})}" for item in exported
    )
    for field, value in values.items():
        for form in forms(value):
            assert form not in text, f"{field} exported as {form!r}"
    assert not UNMASKED_SIGNATURE.search(text)


def test_credentials_are_forgotten_with_the_exchange(
    simulator: Any, instrumented: shim.CcxtInstrumentor
) -> None:
    values = canaries()
    ex = ccxt.binance({**simulator.ccxt_config(), **values})
    ref = weakref.ref(ex)
    assert ex in credentials.registered()
    assert credentials.mask(values["apiKey"]) == "***"
    del ex
    gc.collect()
    assert ref() is None
    assert all(getattr(e, "apiKey", None) != values["apiKey"] for e in credentials.registered())
    assert credentials.mask(values["apiKey"]) == values["apiKey"]  # nothing keeps it


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "GET http://h/api/v3/account?timestamp=1&recvWindow=5000&signature=0a1b2c",
            "GET http://h/api/v3/account?timestamp=1&recvWindow=5000&signature=***",
        ),
        (
            "{'X-MBX-APIKEY': 'abcd1234', 'Content-Type': 'x'}",
            "{'X-MBX-APIKEY': '***', 'Content-Type': 'x'}",
        ),
        (
            '{"OK-ACCESS-SIGN": "c2lnbg==", "OK-ACCESS-PASSPHRASE": "pp"}',
            '{"OK-ACCESS-SIGN": "***", "OK-ACCESS-PASSPHRASE": "***"}',
        ),
        ('{"listenKey": "pqrs9876"}', '{"listenKey": "***"}'),
        ("api_key=k123&symbol=BTCUSDT", "api_key=***&symbol=BTCUSDT"),
        ("Authorization: Bearer eyJhbGciOi.x.y", "Authorization: *** ***"),
        ("KEY: abcdef123 SIGN: 0f0f0f", "KEY: *** SIGN: ***"),
        ("symbol=BTCUSDT&side=BUY&quantity=0.001", "symbol=BTCUSDT&side=BUY&quantity=0.001"),
    ],
)
def test_signature_and_credential_patterns(text: str, expected: str) -> None:
    assert credentials.mask(text) == expected


def test_every_form_of_a_registered_credential_is_masked(
    simulator: Any, instrumented: shim.CcxtInstrumentor
) -> None:
    values = canaries()
    ex = ccxt.binance({**simulator.ccxt_config(), **values})
    ex.apiKey = "SET/AFTER+" + secrets.token_hex(8)  # keys set after creation count too
    for value in {**values, "apiKey": ex.apiKey}.values():
        for form in forms(value):
            assert credentials.mask(f"<{form}>") == "<***>", form
