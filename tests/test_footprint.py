"""What the sidecar loads: never ccxt or the shim (ccxt alone is ~80 MB of RSS),
and grpcio (~11 MiB with its threads) only when a gRPC receiver or forwarder is on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers.sidecar import ROOT, StartSidecar


def mapped(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def loaded_modules(s: object) -> str:
    proc = s.proc  # type: ignore[attr-defined]
    assert proc is not None
    return mapped(proc.pid)


def test_grpc_only_when_used(start_sidecar: StartSidecar) -> None:
    http_only = start_sidecar(
        {"host": {"enabled": False}, "receiver": {"grpc": {"enabled": False}}}
    )
    default = start_sidecar({"host": {"enabled": False}})
    forwarding = start_sidecar(
        {
            "host": {"enabled": False},
            "receiver": {"grpc": {"enabled": False}},
            "forward": {"enabled": True, "endpoint": "http://127.0.0.1:9", "protocol": "grpc"},
        }
    )
    assert "cygrpc" not in loaded_modules(http_only)
    assert "cygrpc" in loaded_modules(default)
    assert "cygrpc" in loaded_modules(forwarding)


def test_never_ccxt_or_the_shim() -> None:
    # Every module of the sidecar imported, as `tickscope run` would: none pulls in
    # ccxt, the shim or the OpenTelemetry SDK; grpc stays out until asked for.
    code = """
import importlib, pkgutil, sys
import tickscope
lazy = {"tickscope.receivers.otlp_grpc", "tickscope.exporters.forward.grpc"}
mains = {"tickscope.__main__", "tickscope.agent.__main__"}
for top in pkgutil.iter_modules(tickscope.__path__, "tickscope."):
    # tickscope.shim is the engine's distribution, installed beside it in the dev venv.
    if top.name == "tickscope.shim" or top.name in mains:
        continue
    package = importlib.import_module(top.name)
    for info in pkgutil.walk_packages(getattr(package, "__path__", []), top.name + "."):
        if info.name not in lazy and info.name not in mains:
            importlib.import_module(info.name)
print(" ".join(sys.modules))
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    modules = result.stdout.split()
    top_level = {m.split(".")[0] for m in modules}
    assert {"tickscope", "aiohttp", "prometheus_client", "psutil"} <= top_level
    assert not top_level & {"ccxt", "grpc"}
    assert "tickscope.receivers.otlp_http" in modules
    assert "tickscope.exporters.forward.http" in modules
    assert not [m for m in modules if m.startswith("tickscope.shim")]
    otel = [m for m in modules if m.startswith("opentelemetry.")]
    assert otel and all(m.startswith("opentelemetry.proto") for m in otel), otel
