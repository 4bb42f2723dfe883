"""The two distributions as pip sees them: what each wheel holds, what each brings.

Both wheels are built here, offline (`pip wheel --no-build-isolation`, with the
hatchling of the dev environment). What `pip install` of each would bring is its
Requires-Dist resolved transitively against the distributions installed in this
environment, which holds both sides' dependencies: the same closure pip computes,
without an index.
"""

from __future__ import annotations

import email
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from helpers.sidecar import ROOT


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("wheels")
    for project in (ROOT, ROOT / "shim"):
        result = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
             "--disable-pip-version-check", "-q", "-w", str(out), str(project)],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
    found = {p.name.split("-")[0]: p for p in out.glob("*.whl")}
    assert set(found) == {"tickscope", "tickscope_shim"}, found
    return found


def wheel_metadata(wheel: Path) -> tuple[list[str], email.message.Message, str]:
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        entry_points = next((n for n in names if n.endswith(".dist-info/entry_points.txt")), None)
        meta = email.message_from_bytes(z.read(info))
        eps = z.read(entry_points).decode() if entry_points else ""
    return names, meta, eps


def closure(requirements: list[str], extras: frozenset[str] = frozenset()) -> set[str]:
    """Every distribution `pip install` would bring for these requirements (with the
    given extras of the top level), resolved against this environment."""
    seen: set[str] = set()
    todo = [(Requirement(r), extras) for r in requirements]
    while todo:
        req, wanted = todo.pop()
        env = {"extra": ""}
        if req.marker is not None and not any(
            req.marker.evaluate({**env, "extra": e}) for e in (wanted or {""})
        ):
            continue
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        seen.add(name)
        dist = metadata.distribution(req.name)
        for sub in dist.requires or []:
            todo.append((Requirement(sub), frozenset(req.extras)))
    return seen


def requires(meta: email.message.Message) -> list[str]:
    return meta.get_all("Requires-Dist") or []


def test_each_wheel_holds_only_its_part_of_the_tickscope_namespace(
    wheels: dict[str, Path],
) -> None:
    sidecar, _, _ = wheel_metadata(wheels["tickscope"])
    shim, _, _ = wheel_metadata(wheels["tickscope_shim"])
    for names in (sidecar, shim):
        outside = [n for n in names if not n.startswith(("tickscope/", "tickscope-", "tickscope_"))]
        assert outside == []
        # A namespace package: no tickscope/__init__.py in either, so both install side by side.
        assert "tickscope/__init__.py" not in names
    tops = {n.split("/")[1] for n in sidecar if n.startswith("tickscope/") and n.count("/") > 1}
    assert tops == {
        "agent", "core", "collectors", "receivers", "exposition", "connectors", "exporters",
    }  # fmt: skip
    assert "tickscope/__main__.py" in sidecar and "tickscope/pipeline.py" in sidecar
    assert {n.split("/")[1] for n in shim if n.startswith("tickscope/")} == {"shim"}


def test_each_wheel_is_the_version_its_code_reports(wheels: dict[str, Path]) -> None:
    # __version__ is a literal (importlib.metadata costs every sidecar process its
    # METADATA parse); it must be the version the wheel is built with, pyproject's.
    from tickscope.agent.version import __version__ as sidecar_version
    from tickscope.shim.version import __version__ as shim_version

    _, sidecar, _ = wheel_metadata(wheels["tickscope"])
    _, shim, _ = wheel_metadata(wheels["tickscope_shim"])
    assert sidecar["Version"] == sidecar_version
    assert shim["Version"] == shim_version


def test_the_sidecar_brings_no_ccxt_and_no_opentelemetry_sdk(wheels: dict[str, Path]) -> None:
    _, meta, entry_points = wheel_metadata(wheels["tickscope"])
    brings = closure([r for r in requires(meta) if "extra ==" not in r])
    assert {"aiohttp", "pydantic", "pyyaml", "prometheus-client", "psutil", "h2", "grpcio",
            "opentelemetry-proto", "googleapis-common-protos"} <= brings  # fmt: skip
    for absent in ("ccxt", "opentelemetry-sdk", "opentelemetry-api", "opentelemetry-instrumentation",
                   "opentelemetry-exporter-otlp-proto-http", "tickscope-shim"):  # fmt: skip
        assert absent not in brings
    assert "[console_scripts]\ntickscope = tickscope.agent.cli:main" in entry_points


def test_the_shim_brings_opentelemetry_and_none_of_the_sidecar(wheels: dict[str, Path]) -> None:
    _, meta, entry_points = wheel_metadata(wheels["tickscope_shim"])
    brings = closure([r for r in requires(meta) if "extra ==" not in r])
    assert {"opentelemetry-api", "opentelemetry-sdk", "opentelemetry-instrumentation",
            "opentelemetry-exporter-otlp-proto-http",
            "opentelemetry-exporter-otlp-proto-grpc"} <= brings  # fmt: skip
    for absent in ("pydantic", "pyyaml", "psutil", "prometheus-client", "aiohttp", "tickscope",
                   "ccxt"):  # fmt: skip
        assert absent not in brings
    # ccxt only through the `instruments` extra, as OpenTelemetry instrumentations declare it.
    ccxt = [Requirement(r) for r in requires(meta) if Requirement(r).name == "ccxt"]
    assert len(ccxt) == 1 and str(ccxt[0].specifier) == ">=4.3"
    assert ccxt[0].marker is not None
    assert ccxt[0].marker.evaluate({"extra": "instruments"})
    assert not ccxt[0].marker.evaluate({"extra": ""})
    assert "console_scripts" not in entry_points


def test_import_names() -> None:
    # The old generic top-level names are gone from the environment.
    code = "import importlib.util as u; print([n for n in ('agent', 'exporters', 'shim') if u.find_spec(n)])"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd="/"
    )
    assert result.stdout.strip() == "[]", result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "tickscope", "version"],
        capture_output=True, text=True, timeout=60, cwd="/",
    )  # fmt: skip
    assert result.returncode == 0 and result.stdout.startswith("tickscope "), result
