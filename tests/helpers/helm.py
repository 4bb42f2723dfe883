"""The Helm chart through the real helm binary (3.17, from scripts/install-helm.sh).

render(values) -> the rendered objects; lint(); template() for the text; and the few
facts about the chart the tests share (where it is, its value sets, kube versions).
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "tickscope"
SNIPPETS = ROOT / "helm" / "snippets"
VENV_BIN = ROOT / ".venv" / "bin"
INSTALL_SCRIPT = ROOT / "scripts" / "install-helm.sh"
HELM_VERSION = "v3.17"

# The chart-testing value sets, by name ("default" for ci/default-values.yaml).
CI_SETS = {
    p.name.removesuffix("-values.yaml"): p for p in sorted((CHART / "ci").glob("*-values.yaml"))
}
KUBE_VERSIONS = ("1.29.0", "1.31.0")
RELEASE = "t"
NAMESPACE = "trading"

Doc = dict[str, Any]


class HelmError(AssertionError):
    """helm exited non-zero; the message is its stderr."""


def _tool(name: str) -> str:
    """The project's helm or kubectl, installed by scripts/install-helm.sh when missing
    (as `make system-deps` does). Without it: a failure in CI, a skip elsewhere."""
    path = VENV_BIN / name
    if not path.exists():
        result = subprocess.run(
            ["sh", str(INSTALL_SCRIPT)], capture_output=True, text=True, timeout=300
        )
        if result.returncode != 0 or not path.exists():
            message = (
                f"{name} not installed and scripts/install-helm.sh failed: {result.stderr[-2000:]}"
            )
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
    return str(path)


def helm_binary() -> str:
    return _tool("helm")


def kubectl_binary() -> str:
    return _tool("kubectl")


def run_helm(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """helm with a throwaway home: no repositories, no cache, no plugins of the user."""
    with tempfile.TemporaryDirectory(prefix="helm-home-") as home:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": home,
            "HELM_CACHE_HOME": f"{home}/cache",
            "HELM_CONFIG_HOME": f"{home}/config",
            "HELM_DATA_HOME": f"{home}/data",
        }
        return subprocess.run(
            [helm_binary(), *args], capture_output=True, text=True, timeout=timeout, env=env
        )


def _value_args(
    values: Mapping[str, Any] | None, values_files: Iterable[Path], tmp: Path
) -> list[str]:
    args: list[str] = []
    for path in values_files:
        args += ["--values", str(path)]
    if values:
        path = tmp / "values.yaml"
        path.write_text(yaml.safe_dump(dict(values)))
        args += ["--values", str(path)]
    return args


def template(
    values: Mapping[str, Any] | None = None,
    *,
    values_files: Sequence[Path] = (),
    kube_version: str = "1.31.0",
    api_versions: Sequence[str] = (),
    release: str = RELEASE,
    namespace: str = NAMESPACE,
    chart: Path = CHART,
) -> str:
    """`helm template` output; raises HelmError with helm's stderr when it fails."""
    with tempfile.TemporaryDirectory(prefix="helm-values-") as tmp:
        args = ["template", release, str(chart), "--namespace", namespace]
        args += ["--kube-version", kube_version]
        for api in api_versions:
            args += ["--api-versions", api]
        args += _value_args(values, values_files, Path(tmp))
        result = run_helm(*args)
    if result.returncode != 0:
        raise HelmError(result.stderr.strip())
    return result.stdout


def parse(text: str) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def render(
    values: Mapping[str, Any] | None = None,
    *,
    values_files: Sequence[Path] = (),
    kube_version: str = "1.31.0",
    api_versions: Sequence[str] = (),
    release: str = RELEASE,
    namespace: str = NAMESPACE,
) -> list[Doc]:
    """The rendered objects, in helm's order."""
    return parse(
        template(
            values,
            values_files=values_files,
            kube_version=kube_version,
            api_versions=api_versions,
            release=release,
            namespace=namespace,
        )
    )


def lint(
    values: Mapping[str, Any] | None = None, *, values_files: Sequence[Path] = ()
) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="helm-values-") as tmp:
        args = ["lint", "--strict", str(CHART), *_value_args(values, values_files, Path(tmp))]
        return run_helm(*args)


def helm_version() -> str:
    result = run_helm("version", "--template", "{{.Version}}")
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def kustomize(directory: Path) -> list[Doc]:
    """`kubectl kustomize DIR` (client side, no cluster)."""
    result = subprocess.run(
        [kubectl_binary(), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {directory} failed: {result.stderr}")
    return parse(result.stdout)


# --- looking into rendered objects --------------------------------------------------------


def find(docs: Iterable[Doc], kind: str, name: str | None = None) -> list[Doc]:
    return [
        d for d in docs if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name)
    ]


def one(docs: Iterable[Doc], kind: str, name: str | None = None) -> Doc:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]


@dataclass(frozen=True)
class Pod:
    """The pod template of the Deployment, with its containers by name."""

    spec: Doc
    labels: dict[str, str]
    annotations: dict[str, str]

    @property
    def containers(self) -> dict[str, Doc]:
        every = self.spec.get("initContainers", []) + self.spec.get("containers", [])
        return {c["name"]: c for c in every}

    @property
    def sidecar(self) -> Doc:
        return self.containers["tickscope"]

    @property
    def engine(self) -> Doc:
        return self.containers["engine"]

    @property
    def sidecar_is_native(self) -> bool:
        return any(c["name"] == "tickscope" for c in self.spec.get("initContainers", []))


def pod(docs: Iterable[Doc]) -> Pod:
    template_ = one(docs, "Deployment")["spec"]["template"]
    meta = template_.get("metadata", {})
    return Pod(template_["spec"], meta.get("labels", {}), meta.get("annotations", {}))


def env_of(container: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in container.get("env", [])}


def sidecar_config(docs: Iterable[Doc]) -> dict[str, Any]:
    """The sidecar's config file as the chart's ConfigMap renders it."""
    config_maps = [d for d in find(docs, "ConfigMap") if "tickscope.yaml" in d.get("data", {})]
    assert len(config_maps) == 1, config_maps
    loaded: dict[str, Any] = yaml.safe_load(config_maps[0]["data"]["tickscope.yaml"])
    return loaded


def web_config(docs: Iterable[Doc]) -> dict[str, Any] | None:
    secrets = [d for d in find(docs, "Secret") if "web-config.yml" in d.get("stringData", {})]
    if not secrets:
        return None
    loaded: dict[str, Any] = yaml.safe_load(secrets[0]["stringData"]["web-config.yml"])
    return loaded


def rule_groups(docs: Iterable[Doc]) -> list[Doc]:
    groups: list[Doc] = one(docs, "PrometheusRule")["spec"]["groups"]
    return groups


def values_defaults() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return loaded


def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
    return loaded


def quantity(text: str) -> Decimal:
    """A Kubernetes quantity (500m, 2, 1Gi) as a number."""
    suffixes: dict[str, Decimal] = {
        "": Decimal(1),
        "m": Decimal("0.001"),
        "k": Decimal(1000),
        "M": Decimal(10**6),
        "G": Decimal(10**9),
        "Ki": Decimal(2**10),
        "Mi": Decimal(2**20),
        "Gi": Decimal(2**30),
    }
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(text))
    assert match, text
    return Decimal(match.group(1)) * suffixes[match.group(2)]


def resolved_env(
    env: list[Doc], pod_: Pod, pod_name: str, namespace: str = NAMESPACE, node: str = "node-1"
) -> dict[str, str]:
    """The values the kubelet would give these env entries: fieldRefs from the pod's
    name, namespace and node, a resourceFieldRef as the container's limit divided by its
    divisor and rounded up (as the kubelet does), plain values as they are."""
    fields = {"metadata.name": pod_name, "metadata.namespace": namespace, "spec.nodeName": node}
    out = {}
    for entry in env:
        if "value" in entry:
            out[entry["name"]] = str(entry["value"])
            continue
        source = entry["valueFrom"]
        if "fieldRef" in source:
            out[entry["name"]] = fields[source["fieldRef"]["fieldPath"]]
        elif "resourceFieldRef" in source:
            ref = source["resourceFieldRef"]
            limit = pod_.containers[ref["containerName"]]["resources"]["limits"][
                ref["resource"].removeprefix("limits.")
            ]
            out[entry["name"]] = str(math.ceil(quantity(limit) / quantity(ref.get("divisor", "1"))))
        else:
            raise AssertionError(f"unexpected env source {entry}")
    return out
