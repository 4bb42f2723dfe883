"""`opentelemetry-instrument python bot.py`: an unmodified ccxt bot (no tickscope,
no OpenTelemetry in its code), run under OpenTelemetry's auto-instrumentation with
tickscope-shim installed, reaches a real sidecar: its ccxt calls (sync and async)
are counted in the span metrics, its resource carries the pod's downward-API
attributes and the distro's name, and its runtime metrics arrive. With OTEL_*
variables pointing elsewhere, everything goes there and nothing to the default."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.metrics_core import Metric

from helpers.sidecar import ROOT, SidecarProcess, StartSidecar
from helpers.spanmetrics import calls as span_calls

BIN = Path(sys.executable).parent
DEFAULT_PORT = 4318  # the distro's default endpoint, http://127.0.0.1:4318

BOT = '''
"""A trading bot that knows nothing of tickscope or OpenTelemetry."""
import asyncio
import json
import sys

# The tests' plumbing, not tickscope: rewrite the exchange's URLs to the simulator.
sys.path.insert(0, {examples!r})
from exchange_simulator import point_at

import ccxt
import ccxt.async_support

URL = sys.argv[1]
CONFIG = {{
    "apiKey": "bot-key-0001",
    "secret": "bot-secret-0001",
    "enableRateLimit": False,
    "options": {{"fetchMarkets": {{"types": ["spot"]}}, "fetchCurrencies": False, "fetchMargins": False}},
}}
calls = {{}}


def count(method, n=1):
    calls[method] = calls.get(method, 0) + n


exchange = point_at(ccxt.binance(CONFIG), URL)
exchange.load_markets()
count("load_markets")
for _ in range(4):
    exchange.fetch_ticker("BTC/USDT")
count("fetch_ticker", 4)
exchange.fetch_balance()
count("fetch_balance")
order = exchange.create_order("BTC/USDT", "limit", "buy", 0.001, 30000)
count("create_order")
exchange.cancel_order(order["id"], "BTC/USDT")
count("cancel_order")


async def run_async():
    exchange = point_at(ccxt.async_support.binance(CONFIG), URL)
    try:
        await exchange.load_markets()
        await asyncio.gather(*(exchange.fetch_ticker("ETH/USDT") for _ in range(3)))
        await exchange.fetch_balance()
    finally:
        await exchange.close()


asyncio.run(run_async())
count("load_markets")
count("fetch_ticker", 3)
count("fetch_balance")
print(json.dumps(calls))
'''
EXPECTED = {
    "load_markets": 2,
    "fetch_ticker": 7,
    "fetch_balance": 2,
    "create_order": 1,
    "cancel_order": 1,
}


def write_bot(directory: Path) -> Path:
    path = directory / "bot.py"
    path.write_text(BOT.format(examples=str(ROOT / "examples")))
    return path


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a fresh shell: none of the OTEL_*, shim or pod variables
    this process may have, then `extra`."""
    dropped = ("OTEL_", "TICKSCOPE_", "K8S_", "POD_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped) and k != "NODE_NAME"}
    env.update(extra)
    return env


def run_instrumented(bot: Path, simulator: Any, env: dict[str, str]) -> dict[str, int]:
    result = subprocess.run(
        [str(BIN / "opentelemetry-instrument"), sys.executable, str(bot), simulator.url],
        env=env,
        cwd=bot.parent,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    calls: dict[str, int] = json.loads(result.stdout.strip().splitlines()[-1])
    assert calls == EXPECTED
    return calls


def assert_span_metrics(s: SidecarProcess, service: str) -> dict[str, Metric]:
    total = sum(EXPECTED.values())
    families = s.families_when(
        lambda f: span_calls(f, service) >= total, f"{total} spans from {service}", timeout=30
    )
    assert span_calls(families, service) == total
    for method, count in EXPECTED.items():
        assert (
            span_calls(
                families,
                service,
                span_name=f"ccxt.{method}",
                method=method,
                exchange="binance",
                span_kind="SPAN_KIND_CLIENT",
                status_code="STATUS_CODE_UNSET",
            )
            == count
        ), method
    return families


def received(s: SidecarProcess) -> tuple[float, float]:
    """(spans, metric points) the sidecar's receivers have taken in, all receivers."""
    families = s.families()
    return (
        sum(x.value for x in families["tickscope_receiver_received_spans"].samples),
        sum(x.value for x in families["tickscope_receiver_received_points"].samples),
    )


def of_job(families: dict[str, Metric], name: str, job: str) -> list[Any]:
    family = families.get(name)
    return [x for x in family.samples if x.labels.get("job") == job] if family else []


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture(scope="module")
def default_sidecar(start_module_sidecar: StartSidecar) -> tuple[SidecarProcess, bool]:
    """A sidecar on the distro's default endpoint, 127.0.0.1:4318, when that port is
    free here; else on a port of its own (and the tests then point
    OTEL_EXPORTER_OTLP_ENDPOINT at it, the one variable the defaults test sets)."""
    on_default = port_free(DEFAULT_PORT)
    s = start_module_sidecar(
        {
            "host": {"enabled": False},
            "receiver": {"http": {"port": DEFAULT_PORT if on_default else 0}},
        }
    )
    s.wait_until(lambda: s.get("/readyz").status == 200, what="ready")
    if on_default:
        assert s.receivers["otlp_http"] == DEFAULT_PORT
    return s, on_default


def test_an_unmodified_bot_under_opentelemetry_instrument_reaches_the_sidecar(
    default_sidecar: tuple[SidecarProcess, bool], simulator: Any, tmp_path: Path
) -> None:
    sidecar, on_default = default_sidecar
    service = "auto-default"
    env = clean_env(
        OTEL_SERVICE_NAME=service,
        K8S_POD_NAME="bot-pod-1",
        K8S_NAMESPACE="trading",
        K8S_NODE_NAME="node-7",
    )
    if not on_default:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = sidecar.otlp_http_url
    simulator.reset()
    run_instrumented(write_bot(tmp_path), simulator, env)
    assert_span_metrics(sidecar, service)
    # The configurator's resource and runtime metrics (metrics are exported at exit).
    families = sidecar.families_when(
        lambda f: bool(
            of_job(f, "target_info", service) and of_job(f, "process_memory_usage_bytes", service)
        ),
        "the bot's metrics",
        timeout=30,
    )
    [target] = of_job(families, "target_info", service)
    assert target.labels["k8s_pod_name"] == "bot-pod-1"
    assert target.labels["k8s_namespace_name"] == "trading"
    assert target.labels["k8s_node_name"] == "node-7"
    assert target.labels["telemetry_distro_name"] == "tickscope-shim"
    [memory] = of_job(families, "process_memory_usage_bytes", service)
    assert memory.value > 10_000_000


def test_otel_variables_send_it_elsewhere_and_nothing_to_the_default(
    default_sidecar: tuple[SidecarProcess, bool],
    start_sidecar: StartSidecar,
    simulator: Any,
    tmp_path: Path,
) -> None:
    default, _ = default_sidecar
    elsewhere = start_sidecar({"host": {"enabled": False}})
    elsewhere.wait_until(lambda: elsewhere.get("/readyz").status == 200, what="ready")
    service = "auto-elsewhere"
    before = received(default)
    simulator.reset()
    run_instrumented(
        write_bot(tmp_path),
        simulator,
        clean_env(
            OTEL_SERVICE_NAME=service,
            # gRPC, to the other sidecar's gRPC receiver: the protocol and the endpoint
            # are both the operator's choice, and both win over the distro's defaults.
            OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://{elsewhere.otlp_grpc_target}",
        ),
    )
    assert_span_metrics(elsewhere, service)
    # The bot has exited: every export it made is over. The default sidecar took in
    # nothing since, neither spans nor metric points.
    assert received(default) == before
    assert span_calls(default.families(), service) == 0
