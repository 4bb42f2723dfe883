"""The shim's defaults and its own environment variables, in one place.

Both ways of setting the shim up read these: `configure()` (the two-line path)
and the distro that `opentelemetry-instrument` loads (tickscope.shim.distro),
so that an engine gets the same telemetry whichever it uses. Standard library
only: the instrumentation side reads the TICKSCOPE_SHIM_* switches too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = [
    "ACCOUNT_METRICS_ENV",
    "DEFAULT_GRPC_ENDPOINT",
    "DEFAULT_HTTP_ENDPOINT",
    "DEFAULT_SERVICE_NAME",
    "K8S_ENV",
    "MAX_SYMBOLS_ENV",
    "RATE_LIMITS_ENV",
    "REDACT_LOGS_ENV",
    "RUNTIME_METRICS_ENV",
    "env",
    "env_flag",
    "env_int",
    "env_rate_limits",
    "otel_env_defaults",
]

# The sidecar's receivers (DESIGN.md "Ports"). 127.0.0.1, not localhost: localhost may
# resolve to ::1 first, where the sidecar does not listen.
DEFAULT_HTTP_ENDPOINT = "http://127.0.0.1:4318"
DEFAULT_GRPC_ENDPOINT = "http://127.0.0.1:4317"
DEFAULT_SERVICE_NAME = "trading-engine"

# The span processor and metric reader settings configure() uses by default; the
# distro gives opentelemetry-instrument the same through the OTEL_* variables.
MAX_QUEUE_SIZE = 4096
MAX_EXPORT_BATCH_SIZE = 512
SCHEDULE_DELAY_MILLIS = 1000
METRIC_EXPORT_INTERVAL_MILLIS = 10_000

# Kubernetes downward-API variables the Helm chart sets -> resource attributes.
K8S_ENV: dict[str, tuple[str, ...]] = {
    "k8s.pod.name": ("K8S_POD_NAME", "POD_NAME"),
    "k8s.namespace.name": ("K8S_NAMESPACE", "POD_NAMESPACE"),
    "k8s.node.name": ("K8S_NODE_NAME", "NODE_NAME"),
    "k8s.container.name": ("K8S_CONTAINER_NAME",),
}

# The shim's own switches (the OTEL_* variables configure everything else).
REDACT_LOGS_ENV = "TICKSCOPE_SHIM_REDACT_LOGS"
RUNTIME_METRICS_ENV = "TICKSCOPE_SHIM_RUNTIME_METRICS"
RATE_LIMITS_ENV = "TICKSCOPE_SHIM_RATE_LIMITS"
# The operator's own balances, positions and orders as metrics (tickscope.shim.account):
# off unless turned on here or with configure(account_metrics=True).
ACCOUNT_METRICS_ENV = "TICKSCOPE_SHIM_ACCOUNT_METRICS"
# Symbols per exchange that get a `symbol` label in the REST market-data and account
# metrics; the rest share one series marked otel.metric.overflow=true.
MAX_SYMBOLS_ENV = "TICKSCOPE_SHIM_MAX_SYMBOLS"
DEFAULT_MAX_SYMBOLS = 100

_FALSE = frozenset({"0", "false", "no", "off"})
_TRUE = frozenset({"1", "true", "yes", "on"})


def env(*names: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The first of `names` set to something other than blanks."""
    source = os.environ if environ is None else environ
    for name in names:
        value = source.get(name, "").strip()
        if value:
            return value
    return None


def env_flag(name: str, default: bool) -> bool:
    """A boolean switch; a value that is neither true nor false keeps the default
    (a typo must not turn log redaction off)."""
    value = (env(name) or "").lower()
    if value in _FALSE:
        return False
    if value in _TRUE:
        return True
    return default


def env_int(name: str, default: int, minimum: int = 0) -> int:
    """A whole number of at least `minimum`; anything else keeps the default."""
    value = env(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        return default
    return number if number >= minimum else default


def env_rate_limits() -> dict[str, float]:
    """TICKSCOPE_SHIM_RATE_LIMITS="binance=6000,bybit=120": request budgets per
    exchange id, for opentelemetry-instrument, where no code passes rate_limits.
    Entries that do not parse are left out."""
    limits: dict[str, float] = {}
    for item in (env(RATE_LIMITS_ENV) or "").split(","):
        exchange, sep, value = item.partition("=")
        if not sep or not exchange.strip():
            continue
        try:
            number = float(value)
        except ValueError:
            continue
        if number > 0:
            limits[exchange.strip()] = number
    return limits


_SIGNALS = ("TRACES", "METRICS")


def otel_env_defaults(environ: Mapping[str, str]) -> dict[str, str]:
    """The OTEL_* values the distro sets where the operator set none: OTLP/HTTP
    (protobuf) to the sidecar on 127.0.0.1, traces and metrics, and configure()'s
    batch and export settings. Returned, not applied: the caller setdefaults them.
    """
    defaults = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "otlp",
        # The sidecar has no logs receiver: exporting logs to it would fail every time.
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_BSP_MAX_QUEUE_SIZE": str(MAX_QUEUE_SIZE),
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": str(MAX_EXPORT_BATCH_SIZE),
        "OTEL_BSP_SCHEDULE_DELAY": str(SCHEDULE_DELAY_MILLIS),
        "OTEL_METRIC_EXPORT_INTERVAL": str(METRIC_EXPORT_INTERVAL_MILLIS),
        # The span processor counts what it drops (queue full) only with these on.
        "OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED": "true",
    }
    protocol = env("OTEL_EXPORTER_OTLP_PROTOCOL", environ=environ) or "http/protobuf"
    if env("OTEL_EXPORTER_OTLP_ENDPOINT", environ=environ) is None:
        # The SDK's own default is localhost, and :4317 or :4318 by protocol; the
        # sidecar's port follows the protocol the same way.
        defaults["OTEL_EXPORTER_OTLP_ENDPOINT"] = (
            DEFAULT_GRPC_ENDPOINT if protocol == "grpc" else DEFAULT_HTTP_ENDPOINT
        )
        # A signal given a protocol of its own needs the port of that protocol.
        for signal in _SIGNALS:
            own = env(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL", environ=environ)
            if own is None or own == protocol:
                continue
            defaults[f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT"] = (
                DEFAULT_GRPC_ENDPOINT
                if own == "grpc"
                else f"{DEFAULT_HTTP_ENDPOINT}/v1/{signal.lower()}"
            )
    return {name: value for name, value in defaults.items() if env(name, environ=environ) is None}
