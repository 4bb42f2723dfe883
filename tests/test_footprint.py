"""What the sidecar loads: never ccxt or the shim (ccxt alone is ~80 MB of RSS),
grpcio (~11 MiB with its threads) only when the forwarder speaks gRPC (the OTLP/gRPC
receiver is h2), and what only some configs need (google-re2, bcrypt, the operator
tools' modules) only when the config asks for it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import bcrypt
import yaml

from helpers.sidecar import ROOT, SidecarProcess, StartSidecar


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
    # Both receivers on: the OTLP/gRPC receiver is h2, not grpcio.
    default = start_sidecar({"host": {"enabled": False}})
    forwarding = start_sidecar(
        {
            "host": {"enabled": False},
            "receiver": {"grpc": {"enabled": False}},
            "forward": {"enabled": True, "endpoint": "http://127.0.0.1:9", "protocol": "grpc"},
        }
    )
    assert "cygrpc" not in loaded_modules(http_only)
    assert "cygrpc" not in loaded_modules(default)
    assert "cygrpc" in loaded_modules(forwarding)


# Imported only by what needs them (each lazy import says what it saves):
# google-re2 by the first regex from the config file, bcrypt by basic_auth_users,
# the operator tools by `tickscope doctor` and `tickscope top`. (importlib.metadata
# stays: pydantic's plugin loader imports it when the first model is built.)
OPTIONAL = {
    "re2",
    "bcrypt",
    "tickscope.agent.doctor",
    "tickscope.agent.top",
    "tickscope.agent.topdata",
    "tickscope.agent.httpclient",
}


def imported(sidecar: SidecarProcess) -> set[str]:
    """Every module the sidecar has imported so far: PYTHONPROFILEIMPORTTIME makes
    the interpreter write one `import time: ... | name` line per import to stderr."""
    return {
        line.rsplit("|", 1)[1].strip()
        for line in sidecar.raw_stderr
        if line.startswith("import time:") and "|" in line
    }


def collected(sidecar: SidecarProcess) -> set[str]:
    # Once the host collector has run (its device filters are regexes) and /metrics
    # has been served, as a default sidecar does in its first seconds.
    sidecar.families_when(lambda f: "node_network_receive_bytes" in f, "a host collection")
    return imported(sidecar)


def test_optional_dependencies_only_when_configured(
    start_sidecar: StartSidecar, tmp_path: Path
) -> None:
    env = {"PYTHONPROFILEIMPORTTIME": "1"}
    default = start_sidecar({}, env)
    modules = collected(default)
    assert {"tickscope.agent.app", "tickscope.core.configtypes", "yaml"} <= modules
    assert not modules & OPTIONAL, modules & OPTIONAL
    # Nor their extensions (RE2 and abseil are linked into re2's).
    maps = loaded_modules(default)
    assert "/re2/_re2." not in maps and "/bcrypt/_bcrypt." not in maps

    web_config = tmp_path / "web-config.yml"
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    web_config.write_text(yaml.safe_dump({"basic_auth_users": {"prometheus": hashed}}))
    with_auth = start_sidecar(
        {"host": {"enabled": False}, "server": {"web_config_file": str(web_config)}}, env
    )
    assert "bcrypt" in imported(with_auth)
    assert "re2" not in imported(with_auth)

    with_regex = start_sidecar({"host": {"network": {"devices": {"include": "^e"}}}}, env)
    assert "re2" in collected(with_regex)
    assert "bcrypt" not in imported(with_regex)


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
