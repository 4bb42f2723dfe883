"""The Helm chart (helm/tickscope), checked by every real validator that runs offline.

- helm 3.17 itself: `helm lint --strict`, `helm template` with the defaults and every
  ci/*-values.yaml at --kube-version 1.29 and 1.31, values.schema.json refusing bad values;
- kubernetes-validate --strict on every built-in object (a missing schema counts as a
  failure), the prometheus-operator CRD models (cloudcoil) on ServiceMonitor and
  PrometheusRule, with unknown fields found by a round trip, promtool on the rule groups
  and the alert-rules unit tests run against the rendered rules;
- what only an API server or the kubelet would catch: selectors, port names, DNS-1123
  names, the downward-API names the shim and the sidecar read, volumes and references;
- the sidecar started with exactly the config the chart's ConfigMap renders and the env
  the chart sets, next to an engine process started with the chart's command and env:
  /healthz and /readyz answer on the probes' port and path.

No cluster exists here; helm, kubectl (kustomize only) come from scripts/install-helm.sh.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import helm
from helpers.binaries import require_binary
from helpers.helm import CHART, CI_SETS, KUBE_VERSIONS, NAMESPACE, RELEASE, ROOT, Doc
from helpers.sidecar import SidecarProcess, http_get, merge, sample_value
from helpers.tls import self_signed
from tickscope.collectors.engine.config import EngineProcessConfig
from tickscope.shim import settings as shim_settings

BUILTIN_API_GROUPS = ("v1", "apps/v1", "policy/v1", "networking.k8s.io/v1")
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
ALERT_RULES = ROOT / "alert-rules"
DASHBOARDS = ROOT / "dashboards"

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
IANA_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


# --- renders, cached: helm is fast, but every test reads the same few ---------------------


@functools.cache
def _render_text(set_name: str, kube_version: str, extra: str = "") -> str:
    values = json.loads(extra) if extra else None
    return helm.template(values, values_files=[CI_SETS[set_name]], kube_version=kube_version)


def rendered(set_name: str, kube_version: str = "1.31.0", **values: Any) -> list[Doc]:
    """The objects of a ci/ value set (plus `values` on top), freshly parsed."""
    extra = json.dumps(values, sort_keys=True) if values else ""
    return helm.parse(_render_text(set_name, kube_version, extra))


SETS = sorted(CI_SETS)
SET_VERSIONS = [(s, k) for s in SETS for k in KUBE_VERSIONS]


def test_value_sets_exist() -> None:
    # chart-testing's names: defaults, everything for kube-prometheus-stack, TLS, a minimal engine.
    assert SETS == ["default", "minimal-engine", "monitoring", "tls"]


def test_helm_is_3_17() -> None:
    assert helm.helm_version().startswith(helm.HELM_VERSION + "."), helm.helm_version()


def test_app_version_is_the_sidecars_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == pyproject["project"]["version"]
    # The snippet for pods made without the chart pins the same image.
    patch = (helm.SNIPPETS / "tickscope-sidecar" / "sidecar-patch.yaml").read_text()
    assert f'image: "tickscope:{chart["appVersion"]}"' in patch


def test_chart_files_are_copies_of_the_sources() -> None:
    """files/alert-rules and files/dashboards are alert-rules/ and dashboards/ byte for
    byte, and values.schema.json's sidecar-config part is current."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "sync-chart-files.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    for source, pattern, target in (
        (ALERT_RULES, "*.rules.yml", CHART / "files" / "alert-rules"),
        (DASHBOARDS, "tickscope-*.json", CHART / "files" / "dashboards"),
    ):
        names = sorted(p.name for p in source.glob(pattern))
        assert names and names == sorted(p.name for p in target.glob(pattern))
        for name in names:
            assert (source / name).read_bytes() == (target / name).read_bytes(), name


# --- helm lint and template ---------------------------------------------------------------


@pytest.mark.parametrize("set_name", SETS)
def test_lint_strict(set_name: str) -> None:
    result = helm.lint(values_files=[CI_SETS[set_name]])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


EXPECTED_KINDS = {
    "default": ["ConfigMap", "Deployment", "Service", "ServiceAccount"],
    "minimal-engine": ["ConfigMap", "Deployment", "Service"],
    "monitoring": [
        "ConfigMap",
        "ConfigMap",
        "ConfigMap",
        "ConfigMap",
        "Deployment",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "PrometheusRule",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
    ],
    "tls": ["ConfigMap", "Deployment", "Secret", "Service", "ServiceAccount", "ServiceMonitor"],
}


@pytest.mark.parametrize(("set_name", "kube_version"), SET_VERSIONS)
def test_template_renders_the_expected_objects(set_name: str, kube_version: str) -> None:
    docs = rendered(set_name, kube_version)
    kinds = sorted(d["kind"] for d in docs)
    print(
        f"{set_name} @ {kube_version}: "
        + ", ".join(f"{d['kind']}/{d['metadata']['name']}" for d in docs)
    )
    assert kinds == EXPECTED_KINDS[set_name]
    for doc in docs:
        assert doc["metadata"].get("namespace") in (NAMESPACE, "monitoring"), doc["metadata"]


# --- kubernetes-validate on the built-in kinds ----------------------------------------------


def kubernetes_validate(docs: list[Doc], kube_version: str, tmp_path: Path) -> str:
    """kubernetes-validate --strict on the docs; returns its output (warnings included)."""
    path = tmp_path / f"objects-{kube_version}.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    binary = Path(sys.executable).parent / "kubernetes-validate"
    result = subprocess.run(
        [str(binary), "--strict", "--quiet", "-k", kube_version, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0, output
    return output


@pytest.mark.parametrize(("set_name", "kube_version"), SET_VERSIONS)
def test_kubernetes_validate_strict(set_name: str, kube_version: str, tmp_path: Path) -> None:
    docs = rendered(set_name, kube_version)
    builtin = [d for d in docs if d["kind"] not in CRD_KINDS]
    assert all(d["apiVersion"] in BUILTIN_API_GROUPS for d in builtin)
    output = kubernetes_validate(builtin, kube_version, tmp_path)
    # --quiet prints only warnings and failures: a "Couldn't find schema" on a built-in
    # kind would mean it was not validated at all.
    assert output == "", output


def test_kubernetes_validate_catches_a_typo(tmp_path: Path) -> None:
    """The validator is strict enough to matter: a misspelt field fails."""
    docs = rendered("default")
    deployment = helm.one(docs, "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(deployment))
    binary = Path(sys.executable).parent / "kubernetes-validate"
    result = subprocess.run(
        [str(binary), "--strict", "-k", "1.31.0", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "imagePullPolicyy" in result.stdout + result.stderr


def test_before_1_29_the_sidecar_is_a_plain_container(tmp_path: Path) -> None:
    docs = rendered("default", "1.28.0")
    p = helm.pod(docs)
    assert not p.sidecar_is_native and "initContainers" not in p.spec
    assert [c["name"] for c in p.spec["containers"]] == ["engine", "tickscope"]
    assert "restartPolicy" not in p.sidecar
    assert (
        kubernetes_validate([d for d in docs if d["kind"] not in CRD_KINDS], "1.28.0", tmp_path)
        == ""
    )
    assert helm.pod(rendered("default", "1.29.0")).sidecar_is_native


# --- the prometheus-operator CRD models ----------------------------------------------------


def unknown_fields(given: Any, known: Any, path: str = "") -> list[str]:
    """Keys of `given` that the model's dump (`known`) lost: fields the CRD does not have
    (the models ignore them instead of failing)."""
    problems: list[str] = []
    if isinstance(given, dict):
        known_map = known if isinstance(known, dict) else {}
        for key, value in given.items():
            if key not in known_map:
                problems.append(f"{path}.{key}")
            else:
                problems += unknown_fields(value, known_map[key], f"{path}.{key}")
    elif isinstance(given, list) and isinstance(known, list):
        for i, (a, b) in enumerate(zip(given, known, strict=False)):
            problems += unknown_fields(a, b, f"{path}[{i}]")
    return problems


def validate_crd(doc: Doc) -> None:
    from cloudcoil.models.prometheus_operator import v1

    model = {"ServiceMonitor": v1.ServiceMonitor, "PrometheusRule": v1.PrometheusRule}[doc["kind"]]
    parsed = model.model_validate(doc)
    dumped = parsed.model_dump(by_alias=True, exclude_unset=True, mode="json")
    assert unknown_fields(doc, dumped) == [], f"{doc['kind']}: fields the CRD does not know"


@pytest.mark.parametrize(
    ("set_name", "kind"),
    [("monitoring", "ServiceMonitor"), ("monitoring", "PrometheusRule"), ("tls", "ServiceMonitor")],
)
def test_crd_objects_match_the_prometheus_operator_schema(set_name: str, kind: str) -> None:
    for kube_version in KUBE_VERSIONS:
        validate_crd(helm.one(rendered(set_name, kube_version), kind))


def test_crd_validation_catches_mistakes() -> None:
    from pydantic import ValidationError

    monitor = helm.one(rendered("monitoring"), "ServiceMonitor")
    bad = json.loads(json.dumps(monitor))
    bad["spec"]["endpoints"][0]["interval"] = "15 seconds"
    with pytest.raises(ValidationError, match="interval"):
        validate_crd(bad)
    bad = json.loads(json.dumps(monitor))
    bad["spec"]["endpoints"][0]["schemee"] = "https"
    with pytest.raises(AssertionError, match="fields the CRD does not know"):
        validate_crd(bad)


def test_servicemonitor_names_the_job_tickscope() -> None:
    """sidecar.rules.yml's TickscopeDown and TickscopeMetricsAbsent select job="tickscope"."""
    assert 'up{job="tickscope"}' in (ALERT_RULES / "sidecar.rules.yml").read_text()
    for set_name in ("monitoring", "tls"):
        endpoint = helm.one(rendered(set_name), "ServiceMonitor")["spec"]["endpoints"][0]
        first = endpoint["relabelings"][0]
        assert first == {"action": "replace", "targetLabel": "job", "replacement": "tickscope"}
    monitor = helm.one(rendered("monitoring"), "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert (
        helm.one(rendered("monitoring"), "PrometheusRule")["metadata"]["labels"]["release"]
        == "kube-prometheus-stack"
    )


# --- ServiceMonitor / PrometheusRule / scrape annotations: on, off, auto ---------------------

MONITORING_APIS = (
    "monitoring.coreos.com/v1/ServiceMonitor",
    "monitoring.coreos.com/v1/PrometheusRule",
)


def test_monitoring_objects_follow_the_cluster_by_default() -> None:
    plain = helm.render()
    assert not helm.find(plain, "ServiceMonitor") and not helm.find(plain, "PrometheusRule")
    assert helm.pod(plain).annotations["prometheus.io/scrape"] == "true"
    assert helm.pod(plain).annotations["prometheus.io/port"] == "9464"
    operator = helm.render(api_versions=MONITORING_APIS)
    assert len(helm.find(operator, "ServiceMonitor")) == 1
    assert len(helm.find(operator, "PrometheusRule")) == 1
    # With a ServiceMonitor the annotations would make a second, differently named job.
    assert not [k for k in helm.pod(operator).annotations if k.startswith("prometheus.io/")]
    off = helm.render(
        {"serviceMonitor": {"enabled": False}, "prometheusRule": {"enabled": False}},
        api_versions=MONITORING_APIS,
    )
    assert not helm.find(off, "ServiceMonitor") and not helm.find(off, "PrometheusRule")
    forced = helm.render({"scrapeAnnotations": {"enabled": False}})
    assert not [k for k in helm.pod(forced).annotations if k.startswith("prometheus.io/")]


# --- the alert rules --------------------------------------------------------------------------


def source_groups() -> list[Doc]:
    groups: list[Doc] = []
    for path in sorted(ALERT_RULES.glob("*.rules.yml")):
        groups += yaml.safe_load(path.read_text())["groups"]
    return groups


def chart_meta() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / "Chart.yaml").read_text())
    return loaded


def runbook_base() -> str:
    meta = chart_meta()
    return f"{meta['home']}/blob/v{meta['appVersion']}/"


def test_rendered_rules_equal_alert_rules_but_the_urls() -> None:
    groups = helm.rule_groups(helm.render({"prometheusRule": {"enabled": True}}))
    expected = source_groups()
    for group in expected:
        for rule in group["rules"]:
            rule["annotations"]["runbook_url"] = runbook_base() + rule["annotations"]["runbook_url"]
    assert groups == expected
    assert [g["name"] for g in groups] == [
        "tickscope-account",
        "tickscope-engine",
        "tickscope-exchange",
        "tickscope-host",
        "tickscope-marketdata",
        "tickscope-sidecar",
    ]
    alerts = [r["alert"] for g in groups for r in g["rules"]]
    assert len(alerts) == len(set(alerts)) == 34


def test_urls_against_configured_bases() -> None:
    groups = helm.rule_groups(
        helm.render(
            {
                "prometheusRule": {
                    "enabled": True,
                    "runbookBaseURL": "https://wiki.example.com/ops/",
                    "grafanaURL": "https://grafana.example.com/",
                }
            }
        )
    )
    source = {r["alert"]: r for g in source_groups() for r in g["rules"]}
    for rule in (r for g in groups for r in g["rules"]):
        original = source[rule["alert"]]["annotations"]
        assert (
            rule["annotations"]["runbook_url"]
            == "https://wiki.example.com/ops/" + original["runbook_url"]
        )
        assert (
            rule["annotations"]["dashboard_url"]
            == "https://grafana.example.com" + original["dashboard_url"]
        )
    relative = helm.rule_groups(
        helm.render({"prometheusRule": {"enabled": True, "runbookBaseURL": ""}})
    )
    assert relative == source_groups()


THRESHOLDS = {
    # key: (alert, value to set, text expected in the expression, in the summary)
    "hostCpuBusyRatio": ("HostCpuBusy", 0.8, ") > 0.8\n", "above 80%"),
    "hostMemoryAvailableLowRatio": ("HostMemoryLow", 0.2, "< 0.2", "below 20%"),
    "hostMemoryAvailableCriticalRatio": ("HostMemoryCritical", 0.025, "< 0.025", "below 2.5%"),
    "hostFilesystemUsedWarningRatio": (
        "HostFilesystemAlmostFull",
        0.8,
        ") > 0.8\n",
        "more than 80% full",
    ),
    "hostFilesystemUsedCriticalRatio": (
        "HostFilesystemFull",
        0.97,
        ") > 0.97\n",
        "more than 97% full",
    ),
    "engineMemoryLimitRatio": (
        "EngineOOMImminent",
        0.85,
        "> 0.85",
        "more than 85% of its memory limit",
    ),
    "exchangeLatencyP99Seconds": (
        "ExchangeHighLatency",
        0.75,
        ") > 0.75\n",
        "p99 latency above 0.75s",
    ),
    "exchangeErrorRatio": ("ExchangeErrorRate", 0.05, "\n> 0.05\n", "API errors above 5%"),
    "orderRejectionRatio": (
        "OrderRejectionRate",
        0.1,
        "\n> 0.1\n",
        "rejects more than 10% of orders",
    ),
    "marketDataStaleSeconds": ("MarketDataStale", 10, ") > 10\n", "market data older than 10s"),
    "exchangeClockSkewSeconds": ("ExchangeClockSkew", 4.5, ") > 4.5\n", "by more than 4.5s"),
    "balanceDrawdownRatio": ("BalanceDrawdown", 0.05, "\n> 0.05\n", "by more than 5%"),
}


def test_every_threshold_is_overridable() -> None:
    """Each threshold replaces exactly its number in the expression and the summary; the
    rules stay otherwise as they are (and valid for promtool, below)."""
    assert set(THRESHOLDS) == set(helm.values_defaults()["prometheusRule"]["thresholds"])
    values = {key: value for key, (_, value, _, _) in THRESHOLDS.items()}
    groups = helm.rule_groups(
        helm.render(
            {"prometheusRule": {"enabled": True, "runbookBaseURL": "", "thresholds": values}}
        )
    )
    rendered_rules = {r["alert"]: r for g in groups for r in g["rules"]}
    source = {r["alert"]: r for g in source_groups() for r in g["rules"]}
    changed = set()
    for alert, _, expr_text, summary_text in THRESHOLDS.values():
        rule, original = rendered_rules[alert], source[alert]
        assert expr_text in rule["expr"], (alert, rule["expr"])
        assert summary_text in rule["annotations"]["summary"], (
            alert,
            rule["annotations"]["summary"],
        )
        assert rule["expr"] != original["expr"]
        assert {k: v for k, v in rule.items() if k not in ("expr", "annotations")} == {
            k: v for k, v in original.items() if k not in ("expr", "annotations")
        }
        changed.add(alert)
    for alert, rule in rendered_rules.items():
        if alert not in changed:
            assert rule == source[alert], alert


def test_disabled_alerts_and_extra_labels() -> None:
    groups = helm.rule_groups(
        helm.render(
            {
                "prometheusRule": {
                    "enabled": True,
                    "disabledAlerts": ["HostHighLoad", "EngineTooManyThreads"],
                    "additionalRuleLabels": {"team": "desk", "severity": "ignored"},
                }
            }
        )
    )
    rules = [r for g in groups for r in g["rules"]]
    assert {r["alert"] for r in rules}.isdisjoint({"HostHighLoad", "EngineTooManyThreads"})
    assert len(rules) == 32
    assert all(r["labels"]["team"] == "desk" for r in rules)
    assert all(r["labels"]["severity"] in ("warning", "critical") for r in rules)


def write_rule_files(groups: list[Doc], directory: Path) -> list[Path]:
    """The rendered groups as alert-rules/'s files (one per group, same names), so the
    unit tests' `rule_files: [../x.rules.yml]` read them."""
    by_group = {}
    for path in ALERT_RULES.glob("*.rules.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            by_group[group["name"]] = path.name
    paths = []
    for group in groups:
        path = directory / by_group[group["name"]]
        path.write_text(yaml.safe_dump({"groups": [group]}, sort_keys=False))
        paths.append(path)
    return paths


@pytest.mark.system
@pytest.mark.parametrize("set_name", ["default", "monitoring"])
def test_promtool_check_rules(set_name: str, tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    docs = rendered(set_name, prometheusRule={"enabled": True})
    paths = write_rule_files(helm.rule_groups(docs), tmp_path)
    result = subprocess.run(
        [promtool, "check", "rules", *map(str, paths)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == 6, result.stdout


@pytest.mark.system
@pytest.mark.parametrize(
    "values",
    [
        {"prometheusRule": {"enabled": True}},
        {"prometheusRule": {"enabled": True, "grafanaURL": "https://grafana.example.com"}},
    ],
    ids=["defaults", "grafana-url"],
)
def test_alert_rules_unit_tests_pass_on_the_rendered_rules(
    values: dict[str, Any], tmp_path: Path
) -> None:
    """alert-rules/tests/*.test.yml against the PrometheusRule's groups: the same alerts
    fire at the same times with the same labels; the expected URLs are rewritten as the
    chart rewrites them (the only difference the chart makes by default)."""
    promtool = require_binary("promtool")
    grafana = values["prometheusRule"].get("grafanaURL", "")
    write_rule_files(helm.rule_groups(helm.render(values)), tmp_path)
    tests_dir = tmp_path / "tests"
    tests_dir.mkdir()
    for path in sorted((ALERT_RULES / "tests").glob("*.test.yml")):
        document = yaml.safe_load(path.read_text())
        for case in document["tests"]:
            for check in case.get("alert_rule_test", []):
                for alert in check.get("exp_alerts", []):
                    annotations = alert.get("exp_annotations", {})
                    if "runbook_url" in annotations:
                        annotations["runbook_url"] = runbook_base() + annotations["runbook_url"]
                    if "dashboard_url" in annotations:
                        annotations["dashboard_url"] = grafana + annotations["dashboard_url"]
        (tests_dir / path.name).write_text(yaml.safe_dump(document, sort_keys=False))
    files = sorted(str(p) for p in tests_dir.glob("*.test.yml"))
    assert len(files) == 6
    result = subprocess.run(
        [promtool, "test", "rules", *files],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tests_dir,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAILED" not in result.stdout


# --- the dashboards -------------------------------------------------------------------------


def test_dashboard_configmaps_carry_every_dashboard() -> None:
    docs = rendered("monitoring")
    maps = [d for d in helm.find(docs, "ConfigMap") if "-dashboard-" in d["metadata"]["name"]]
    sources = sorted(DASHBOARDS.glob("tickscope-*.json"))
    assert len(sources) == 3 and len(maps) == len(sources)
    carried = {}
    for cm in maps:
        assert cm["metadata"]["namespace"] == "monitoring"
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert cm["metadata"]["annotations"]["grafana_folder"] == "tickscope"
        (key,) = cm["data"]
        carried[key] = json.loads(cm["data"][key])
        # One dashboard per ConfigMap, far below the 1 MiB object limit.
        assert len(json.dumps(cm)) < 512 * 1024
    assert carried == {p.name: json.loads(p.read_text()) for p in sources}
    names = sorted(cm["metadata"]["name"] for cm in maps)
    assert names == [f"{RELEASE}-tickscope-dashboard-{n}" for n in ("host", "sidecar", "trading")]


def test_dashboard_label_and_folder_are_configurable() -> None:
    docs = helm.render(
        {
            "dashboards": {
                "enabled": True,
                "label": "grafana.io/dashboard",
                "labelValue": "tickscope",
                "folderAnnotation": "k8s-sidecar-target-directory",
                "folder": "/tmp/dashboards/trading",
            }
        }
    )
    maps = [d for d in helm.find(docs, "ConfigMap") if "-dashboard-" in d["metadata"]["name"]]
    assert len(maps) == 3
    for cm in maps:
        assert cm["metadata"]["labels"]["grafana.io/dashboard"] == "tickscope"
        assert "grafana_dashboard" not in cm["metadata"]["labels"]
        assert cm["metadata"]["annotations"] == {
            "k8s-sidecar-target-directory": "/tmp/dashboards/trading"
        }
    assert not [d for d in helm.render() if "-dashboard-" in d["metadata"]["name"]]


# --- checks of our own: what an API server or the kubelet would catch -------------------------


def pod_problems(docs: list[Doc]) -> list[str]:
    """Everything wrong that the schemas cannot see."""
    problems: list[str] = []
    deployment = helm.one(docs, "Deployment")
    p = helm.pod(docs)
    selector = deployment["spec"]["selector"]["matchLabels"]
    if not selector.items() <= p.labels.items():
        problems.append(f"Deployment selector {selector} does not match the pod labels {p.labels}")
    ports = {
        c["name"]: {port["name"]: port["containerPort"] for port in c.get("ports", [])}
        for c in p.containers.values()
    }
    all_ports = {name: number for byname in ports.values() for name, number in byname.items()}
    for container in p.containers.values():
        name = container["name"]
        if not DNS1123_LABEL.match(name) or len(name) > 63:
            problems.append(f"container name {name!r} is not a DNS-1123 label")
        for port in container.get("ports", []):
            if not (
                IANA_SVC_NAME.match(port["name"])
                and len(port["name"]) <= 15
                and re.search("[a-z]", port["name"])
                and "--" not in port["name"]
            ):
                problems.append(
                    f"port name {port['name']!r} of {name} is not an IANA_SVC_NAME (<= 15 chars)"
                )
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            probe = container.get(kind)
            if not probe:
                continue
            action = probe.get("httpGet") or probe.get("tcpSocket") or {}
            port = action.get("port")
            if isinstance(port, str) and port not in ports[name]:
                problems.append(f"{name}.{kind} port {port!r} is not a port of {name}")
            if isinstance(port, int) and port not in all_ports.values():
                problems.append(f"{name}.{kind} port {port} is no container port of the pod")
        if "restartPolicy" in container and container not in p.spec.get("initContainers", []):
            problems.append(f"{name}: restartPolicy is only allowed on init containers")
        volumes = {v["name"] for v in p.spec.get("volumes", [])}
        for mount in container.get("volumeMounts", []):
            if mount["name"] not in volumes:
                problems.append(f"{name} mounts the volume {mount['name']!r}, which the pod lacks")
        for env in container.get("env", []):
            field = env.get("valueFrom", {}).get("resourceFieldRef")
            if field:
                target = p.containers.get(field.get("containerName", name))
                if target is None:
                    problems.append(
                        f"{name}.env {env['name']}: no container {field.get('containerName')!r}"
                    )
                elif field["resource"].removeprefix("limits.") not in target.get(
                    "resources", {}
                ).get("limits", {}):
                    problems.append(
                        f"{name}.env {env['name']}: {field['containerName']} has no {field['resource']} (the node's allocatable would be reported)"
                    )
    for volume in p.spec.get("volumes", []):
        if not DNS1123_LABEL.match(volume["name"]):
            problems.append(f"volume name {volume['name']!r} is not a DNS-1123 label")
        sources = [*volume.get("projected", {}).get("sources", []), volume]
        for source in sources:
            config_map = source.get("configMap", {}).get("name")
            if (
                config_map
                and config_map.startswith(RELEASE + "-")
                and not helm.find(docs, "ConfigMap", config_map)
            ):
                problems.append(
                    f"volume {volume['name']} reads ConfigMap {config_map!r}, not rendered"
                )
            secret = (source.get("secret") or {}).get("name") or (source.get("secret") or {}).get(
                "secretName"
            )
            if secret and secret.endswith("-web-config") and not helm.find(docs, "Secret", secret):
                problems.append(f"volume {volume['name']} reads Secret {secret!r}, not rendered")
    for doc in docs:
        meta = doc["metadata"]
        pattern = DNS1035_LABEL if doc["kind"] == "Service" else DNS1123_SUBDOMAIN
        if not pattern.match(meta["name"]) or len(meta["name"]) > 63:
            problems.append(
                f"{doc['kind']} name {meta['name']!r} is not valid (DNS-1123, at most 63)"
            )
        for key, value in meta.get("labels", {}).items():
            prefix, _, name_part = key.rpartition("/")
            if (
                (prefix and not DNS1123_SUBDOMAIN.match(prefix))
                or not LABEL_NAME.match(name_part)
                or len(name_part) > 63
            ):
                problems.append(f"{doc['kind']} label key {key!r} is invalid")
            if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.match(value):
                problems.append(f"{doc['kind']} label {key}={value!r}: invalid value")
        for key, value in (meta.get("annotations") or {}).items():
            if not isinstance(value, str):
                problems.append(f"{doc['kind']} annotation {key} is not a string: {value!r}")
    for service in helm.find(docs, "Service"):
        if not service["spec"]["selector"].items() <= p.labels.items():
            problems.append(
                f"Service selector {service['spec']['selector']} does not match the pod"
            )
        for port in service["spec"]["ports"]:
            if port["targetPort"] not in all_ports:
                problems.append(f"Service targetPort {port['targetPort']!r} is no container port")
            if all_ports.get(port["targetPort"]) != port["port"]:
                problems.append("the Service's port differs from the container's admin port")
    for monitor in helm.find(docs, "ServiceMonitor"):
        (service,) = helm.find(docs, "Service")
        if (
            not monitor["spec"]["selector"]["matchLabels"].items()
            <= service["metadata"]["labels"].items()
        ):
            problems.append("the ServiceMonitor does not select the Service")
        if (
            service["metadata"]["namespace"]
            not in monitor["spec"]["namespaceSelector"]["matchNames"]
        ):
            problems.append("the ServiceMonitor does not look in the Service's namespace")
        for endpoint in monitor["spec"]["endpoints"]:
            if endpoint["port"] not in {port["name"] for port in service["spec"]["ports"]}:
                problems.append(f"ServiceMonitor port {endpoint['port']!r} is no Service port")
    for kind in ("PodDisruptionBudget",):
        for doc in helm.find(docs, kind):
            if not doc["spec"]["selector"]["matchLabels"].items() <= p.labels.items():
                problems.append(f"{kind} does not select the pod")
    for policy in helm.find(docs, "NetworkPolicy"):
        if not policy["spec"]["podSelector"]["matchLabels"].items() <= p.labels.items():
            problems.append("NetworkPolicy does not select the pod")
        for rule in policy["spec"]["ingress"]:
            for port in rule.get("ports", []):
                if isinstance(port["port"], str) and port["port"] not in all_ports:
                    problems.append(f"NetworkPolicy port {port['port']!r} is no container port")
    return problems


@pytest.mark.parametrize(("set_name", "kube_version"), SET_VERSIONS)
def test_what_only_an_api_server_would_catch(set_name: str, kube_version: str) -> None:
    assert pod_problems(rendered(set_name, kube_version)) == []


def test_own_checks_catch_mistakes() -> None:
    docs = rendered("monitoring")
    p = helm.pod(docs)
    p.sidecar["livenessProbe"]["httpGet"]["port"] = "metrics"
    p.sidecar["ports"][0]["name"] = "admin-port-too-long"
    p.spec["volumes"] = [v for v in p.spec["volumes"] if v["name"] != "tickscope-tmp"]
    p.engine["resources"]["limits"].pop("cpu")
    p.engine["livenessProbe"]["httpGet"]["port"] = 9465
    helm.one(docs, "Deployment")["spec"]["selector"]["matchLabels"]["extra"] = "x"
    problems = "\n".join(pod_problems(docs))
    for expected in (
        "Deployment selector",
        "livenessProbe port 'metrics'",
        "'admin-port-too-long'",
        "volume 'tickscope-tmp'",
        "has no limits.cpu",
        "engine.livenessProbe port 9465 is no container port of the pod",
        "Service targetPort 'admin' is no container port",
    ):
        assert expected in problems, problems


def test_downward_api_names_are_the_ones_the_shim_and_sidecar_read() -> None:
    docs = rendered("monitoring")
    p = helm.pod(docs)
    engine_env = helm.env_of(p.engine)
    # The shim's names (first choice of each) -> exactly the chart's, with the right sources.
    expected = {names[0]: key for key, names in shim_settings.K8S_ENV.items()}
    assert set(expected) == {"K8S_POD_NAME", "K8S_NAMESPACE", "K8S_NODE_NAME", "K8S_CONTAINER_NAME"}
    fields = {
        "K8S_POD_NAME": "metadata.name",
        "K8S_NAMESPACE": "metadata.namespace",
        "K8S_NODE_NAME": "spec.nodeName",
    }
    for name in expected:
        assert name in engine_env, name
        if name in fields:
            assert engine_env[name]["valueFrom"] == {"fieldRef": {"fieldPath": fields[name]}}
    assert engine_env["K8S_CONTAINER_NAME"]["value"] == p.engine["name"] == "engine"
    downward = {e["name"] for e in p.engine["env"] if "fieldRef" in e.get("valueFrom", {})}
    assert downward <= set(expected)
    # The sidecar's: the env names its config reads, with the divisors it expects.
    config = helm.sidecar_config(docs)
    (process,) = config["engine"]["processes"]
    sidecar_env = helm.env_of(p.sidecar)
    memory_env = process.get(
        "memory_limit_env", EngineProcessConfig.model_fields["memory_limit_env"].default
    )
    cpu_env = process.get(
        "cpu_limit_env", EngineProcessConfig.model_fields["cpu_limit_env"].default
    )
    assert (memory_env, cpu_env) == ("ENGINE_MEMORY_LIMIT", "ENGINE_CPU_LIMIT")
    memory = sidecar_env[memory_env]["valueFrom"]["resourceFieldRef"]
    cpu = sidecar_env[cpu_env]["valueFrom"]["resourceFieldRef"]
    assert memory == {"containerName": "engine", "resource": "limits.memory", "divisor": "1"}
    assert cpu == {"containerName": "engine", "resource": "limits.cpu", "divisor": "1m"}
    assert process["cpu_limit_divisor"] == cpu["divisor"]
    # The OTLP endpoint is the sidecar's receiver for the protocol.
    assert (
        engine_env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"]
        == f"http://127.0.0.1:{config['receiver']['http']['port']}"
    )
    assert engine_env["OTEL_EXPORTER_OTLP_PROTOCOL"]["value"] == "http/protobuf"
    grpc = helm.pod(rendered("minimal-engine"))
    assert (
        helm.env_of(grpc.engine)["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == "http://127.0.0.1:4317"
    )
    # engine.env overrides the chart's entry of the same name instead of duplicating it.
    assert engine_env["OTEL_SERVICE_NAME"]["value"] == "market-maker"
    assert [e["name"] for e in p.engine["env"]].count("OTEL_SERVICE_NAME") == 1


def test_no_engine_limit_no_limit_env() -> None:
    """Without a limit the downward API reports the node's allocatable: no env then."""
    p = helm.pod(rendered("default"))
    assert "ENGINE_MEMORY_LIMIT" not in helm.env_of(p.sidecar)
    assert "ENGINE_CPU_LIMIT" not in helm.env_of(p.sidecar)
    only_memory = helm.pod(helm.render({"engine": {"resources": {"limits": {"memory": "1Gi"}}}}))
    assert set(helm.env_of(only_memory.sidecar)) == {"ENGINE_MEMORY_LIMIT"}


def test_secure_defaults() -> None:
    docs = rendered("default")
    p = helm.pod(docs)
    assert p.spec["shareProcessNamespace"] is True
    assert p.spec["automountServiceAccountToken"] is False
    assert p.spec["enableServiceLinks"] is False
    assert p.spec["securityContext"] == {
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert helm.one(docs, "ServiceAccount")["automountServiceAccountToken"] is False
    for container in (p.sidecar, p.engine):
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["runAsNonRoot"] is True
        assert context["capabilities"] == {"drop": ["ALL"]}
    assert (
        p.sidecar["securityContext"]["runAsUser"],
        p.sidecar["securityContext"]["runAsGroup"],
    ) == (10001, 10001)
    assert p.sidecar["resources"] == {
        "requests": {"cpu": "25m", "memory": "96Mi"},
        "limits": {"cpu": "500m", "memory": "256Mi"},
    }
    mounts = {m["mountPath"] for m in p.sidecar["volumeMounts"]}
    assert mounts == {"/etc/tickscope", "/tmp"}
    assert helm.one(docs, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}
    assert helm.one(docs, "Service")["spec"]["publishNotReadyAddresses"] is True


def test_probes() -> None:
    for set_name, scheme in (("default", "HTTP"), ("tls", "HTTPS")):
        sidecar = helm.pod(rendered(set_name)).sidecar
        assert sidecar["args"] == ["run", "--config", "/etc/tickscope/tickscope.yaml"]
        assert sidecar["ports"] == [{"name": "admin", "containerPort": 9464, "protocol": "TCP"}]
        expected = {
            "startupProbe": (
                "/healthz",
                {"periodSeconds": 1, "timeoutSeconds": 2, "failureThreshold": 60},
            ),
            "livenessProbe": (
                "/healthz",
                {"periodSeconds": 10, "timeoutSeconds": 6, "failureThreshold": 3},
            ),
            "readinessProbe": (
                "/readyz",
                {"periodSeconds": 5, "timeoutSeconds": 4, "failureThreshold": 2},
            ),
        }
        for kind, (path, timing) in expected.items():
            assert sidecar[kind] == {
                "httpGet": {"path": path, "port": "admin", "scheme": scheme},
                **timing,
            }
    # The liveness timeout stays above the lag limit at which /healthz itself says 503.
    from tickscope.agent.server import ServerConfig

    assert (
        helm.pod(rendered("default")).sidecar["livenessProbe"]["timeoutSeconds"]
        > ServerConfig().liveness_max_loop_lag
    )


HEARTBEATS = {"sidecar": {"config": {"engine": {"heartbeats": [{"loop": "main"}]}}}}


def test_engine_liveness_from_heartbeats() -> None:
    """With engine.heartbeats in the sidecar's config the engine container's liveness
    probe is the sidecar's /engine/healthz, by port number (a named port must be the
    probed container's own), with the admin port's scheme and the probes' headers."""
    assert "livenessProbe" not in helm.pod(rendered("default")).engine
    expected = {
        "httpGet": {"path": "/engine/healthz", "port": 9464, "scheme": "HTTP"},
        "initialDelaySeconds": 60,
        "periodSeconds": 10,
        "timeoutSeconds": 5,
        "failureThreshold": 3,
    }
    for kube_version in KUBE_VERSIONS:  # a native sidecar or a second container: same network
        assert helm.pod(rendered("monitoring", kube_version)).engine["livenessProbe"] == expected
    assert helm.pod(helm.render(HEARTBEATS)).engine["livenessProbe"] == expected
    # TLS, the probes' headers, another admin port and other timings go along.
    headers = [{"name": "Authorization", "value": "Basic cDpwdw=="}]
    tls = helm.pod(
        rendered(
            "tls",
            sidecar={
                "port": 9100,
                "probes": {"httpHeaders": headers},
                "config": {"engine": {"heartbeats": [{"loop": "main", "max_age": "2m"}]}},
            },
            engine={"heartbeatProbe": {"initialDelaySeconds": 300, "failureThreshold": 5}},
        )
    )
    assert tls.engine["livenessProbe"] == {
        "httpGet": {
            "path": "/engine/healthz",
            "port": 9100,
            "scheme": "HTTPS",
            "httpHeaders": headers,
        },
        "initialDelaySeconds": 300,
        "periodSeconds": 10,
        "timeoutSeconds": 5,
        "failureThreshold": 5,
    }
    # Off on request; the engine's own probe when it is off.
    off = merge(HEARTBEATS, {"engine": {"heartbeatProbe": {"enabled": False}}})
    assert "livenessProbe" not in helm.pod(helm.render(off)).engine
    own = {"exec": {"command": ["/bin/true"]}, "periodSeconds": 30}
    mine = helm.pod(helm.render(merge(off, {"engine": {"livenessProbe": own}}))).engine
    assert mine["livenessProbe"] == own


def test_engine_heartbeat_probe_timings_fit_the_shim_and_the_sidecar() -> None:
    """The defaults against what they must cover: the first exported beat after a start
    (the shim exports every 10 s), the sidecar's own grace and max_age, and the time a
    stuck loop runs before the kubelet restarts it."""
    from tickscope.collectors.engine.heartbeat import HeartbeatConfig

    probe = helm.pod(rendered("monitoring")).engine["livenessProbe"]
    export = shim_settings.METRIC_EXPORT_INTERVAL_MILLIS / 1000
    hb = HeartbeatConfig(loop="main")
    assert probe["initialDelaySeconds"] >= 2 * export  # a start, then one export at worst
    assert probe["initialDelaySeconds"] >= hb.grace  # the same allowance as the sidecar's
    assert hb.max_age >= 3 * export  # one export may fail without a 503
    # A stuck loop: 503 after max_age, restarted after failureThreshold periods more.
    restart_after = hb.max_age + probe["failureThreshold"] * probe["periodSeconds"]
    assert restart_after == 60
    assert probe["timeoutSeconds"] < probe["periodSeconds"]


def test_checksum_rolls_the_pod_on_config_changes() -> None:
    docs = rendered("default")
    text = next(d for d in helm.find(docs, "ConfigMap"))["data"]["tickscope.yaml"]
    checksum = helm.pod(docs).annotations["checksum/config"]
    assert checksum == hashlib.sha256(text.rstrip("\n").encode()).hexdigest()
    other = helm.pod(helm.render({"sidecar": {"config": {"host": {"interval": "5s"}}}}))
    assert other.annotations["checksum/config"] != checksum
    tls = helm.pod(rendered("tls"))
    assert "checksum/web-config" in tls.annotations


# --- the rendered sidecar config: the sidecar's own validator --------------------------------


@pytest.mark.parametrize("set_name", SETS)
def test_rendered_config_passes_check_config(set_name: str, tmp_path: Path) -> None:
    docs = rendered(set_name)
    path = tmp_path / "tickscope.yaml"
    config = helm.sidecar_config(docs)
    web = helm.web_config(docs)
    if web is not None:
        # The paths the pod mounts do not exist here: the same file in tmp_path.
        config["server"]["web_config_file"] = str(write_web_config(tmp_path, web))
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "-m", "tickscope", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("TICKSCOPE_")},
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_config_merges_over_the_charts() -> None:
    config = helm.sidecar_config(rendered("monitoring"))
    assert config["server"] == {"bind": "0.0.0.0", "port": 9464}
    assert config["host"] == {"interval": "5s"}
    assert config["limits"] == {"queue_capacity_spans": 1000000}
    assert config["engine"]["processes"] == [
        {"name": "engine", "cmdline": "mm\\.main", "required": True, "cpu_limit_divisor": "1m"}
    ]
    default = helm.sidecar_config(rendered("default"))
    assert default["engine"]["processes"][0]["cmdline"] == r"(^|[\s/])bot\.py(\s|$)"
    # A process list of one's own replaces the chart's; the divisor is added.
    own = helm.sidecar_config(
        helm.render(
            {
                "sidecar": {
                    "config": {
                        "engine": {
                            "processes": [
                                {"name": "a", "process_name": "a"},
                                {"name": "b", "pid_file": "/run/b.pid", "cpu_limit_divisor": "1"},
                            ]
                        }
                    }
                }
            }
        )
    )
    assert own["engine"]["processes"] == [
        {"name": "a", "process_name": "a", "cpu_limit_divisor": "1m"},
        {"name": "b", "pid_file": "/run/b.pid", "cpu_limit_divisor": "1"},
    ]


# --- bad values -----------------------------------------------------------------------------

BAD_VALUES = [
    ({"sidecar": {"prot": 9464}}, "sidecar: Additional property prot is not allowed"),
    ({"sidecar": {"port": "9464"}}, "sidecar.port: Invalid type. Expected: integer, given: string"),
    ({"sidecar": {"port": 70000}}, "sidecar.port: Must be less than or equal to 65535"),
    ({"engin": {}}, "Additional property engin is not allowed"),
    (
        {"sidecar": {"config": {"server": {"prot": 1}}}},
        "sidecar.config.server: Additional property prot is not allowed",
    ),
    (
        {"sidecar": {"config": {"engine": {"processes": [{"name": "e", "cmdlin": "x"}]}}}},
        "Additional property cmdlin is not allowed",
    ),
    (
        {"prometheusRule": {"thresholds": {"hostCpuBusyRatio": 90}}},
        "hostCpuBusyRatio: Must be less than or equal to 1",
    ),
    (
        {"serviceMonitor": {"interval": "15 seconds"}},
        "serviceMonitor.interval: Does not match pattern",
    ),
    ({"serviceMonitor": {"enabled": "yes"}}, "serviceMonitor.enabled: Invalid type"),
    (
        {"engine": {"otlpProtocol": "http/json"}},
        "engine.otlpProtocol: engine.otlpProtocol must be one of",
    ),
    (
        {"engine": {"resources": {"limit": {"memory": "1Gi"}}}},
        "engine.resources: Additional property limit is not allowed",
    ),
    (
        {"engine": {"resources": {"limits": {"memory": "1 GB"}}}},
        "engine.resources.limits.memory: Does not match pattern",
    ),
    (
        {"sidecar": {"webConfig": {"basicAuthUsers": {"prometheus": "plaintext"}}}},
        "basicAuthUsers.prometheus: Does not match pattern",
    ),
    (
        {"engine": {"heartbeatProbe": {"enabld": True}}},
        "engine.heartbeatProbe: Additional property enabld is not allowed",
    ),
    (
        {"engine": {"heartbeatProbe": {"timeoutSeconds": 0}}},
        "engine.heartbeatProbe.timeoutSeconds: Must be greater than or equal to 1",
    ),
    (
        {"sidecar": {"config": {"engine": {"heartbeats": [{"lop": "main"}]}}}},
        "Additional property lop is not allowed",
    ),
]


@pytest.mark.parametrize(
    ("values", "message"), BAD_VALUES, ids=[m.split(":")[0] for _, m in BAD_VALUES]
)
def test_schema_rejects_bad_values(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmError) as failure:
        helm.render(values)
    assert "values don't meet the specifications of the schema" in str(failure.value)
    assert message in str(failure.value), str(failure.value)


CHART_FAILURES = [
    (
        {"sidecar": {"engineProcess": {"cmdline": "x", "processName": "x"}}},
        "set one of cmdline, processName and pidFile",
    ),
    ({"engine": {"command": [], "args": []}}, "cannot tell how the engine's process looks"),
    ({"sidecar": {"config": {"server": {"port": 9100}}}}, "differs from sidecar.port"),
    (
        {"sidecar": {"webConfig": {"tls": {"enabled": True}}}},
        "sidecar.webConfig.tls.existingSecret",
    ),
    (
        {
            "sidecar": {
                "webConfig": {
                    "basicAuthUsers": {
                        "p": "$2y$10$X0h1gDsPszWURQaxFh.zoubFi6DXncSjhoQNJgRrnGs7EsimhC7zG"
                    }
                },
                "config": {"server": {"probes_without_auth": False}},
            }
        },
        "the kubelet's probes would get 401",
    ),
    ({"podDisruptionBudget": {"enabled": True, "maxUnavailable": 1}}, "not both"),
    (
        {
            "engine": {"otlpProtocol": "grpc"},
            "sidecar": {"config": {"receiver": {"grpc": {"enabled": False}}}},
        },
        "receiver.grpc is disabled",
    ),
    (
        {"engine": {"heartbeatProbe": {"enabled": True}}},
        "sidecar.config.engine.heartbeats is empty: /engine/healthz would always answer 200",
    ),
    (
        {
            "engine": {"livenessProbe": {"exec": {"command": ["/bin/true"]}}},
            "sidecar": {"config": {"engine": {"heartbeats": [{"loop": "main"}]}}},
        },
        "Set engine.heartbeatProbe.enabled=false to keep your own",
    ),
    (
        {
            "engine": {
                "livenessProbe": {"exec": {"command": ["/bin/true"]}},
                "heartbeatProbe": {"enabled": True},
            },
            "sidecar": {"config": {"engine": {"heartbeats": [{"loop": "main"}]}}},
        },
        "a container has one liveness probe; set only one of them",
    ),
]


@pytest.mark.parametrize(
    ("values", "message"), CHART_FAILURES, ids=[m[:30] for _, m in CHART_FAILURES]
)
def test_chart_refuses_inconsistent_values(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmError, match=re.escape(message)):
        helm.render(values)


def schema_paths(
    schema: dict[str, Any], root: dict[str, Any], prefix: str = ""
) -> dict[str, dict[str, Any]]:
    out = {}
    for key, node in schema.get("properties", {}).items():
        path = prefix + key
        if "$ref" in node:
            target: Any = root
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        out[path] = node
        if path != "sidecar.config":
            out.update(schema_paths(node, root, path + "."))
    return out


def value_paths(values: Any, prefix: str = "") -> list[str]:
    out = []
    for key, value in values.items():
        path = prefix + key
        out.append(path)
        if isinstance(value, dict) and value and path not in OPAQUE_VALUES:
            out += value_paths(value, path + ".")
    return out


OPAQUE_VALUES = {
    "strategy",
    "podSecurityContext",
    "engine.resources",
    "engine.securityContext",
    "sidecar.resources",
    "sidecar.securityContext",
    "sidecar.config",
    "networkPolicy.prometheus",
    "sidecar.probes.startup",
    "sidecar.probes.liveness",
    "sidecar.probes.readiness",
}


def test_schema_covers_every_value() -> None:
    schema = helm.schema()
    assert schema["additionalProperties"] is False
    described = schema_paths(schema, schema)
    for path in value_paths(helm.values_defaults()):
        assert path in described, f"{path} has no schema"
        assert described[path].get("description"), f"{path} has no description"
    # Objects the chart owns refuse unknown keys.
    for path, node in described.items():
        if node.get("properties") and path != "sidecar.config":
            assert node.get("additionalProperties") is False, path


# --- the snippet for pods made without the chart ---------------------------------------------

SAMPLE_DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "my-bot", "labels": {"tickscope/sidecar": "true"}},
    "spec": {
        "selector": {"matchLabels": {"app": "my-bot"}},
        "template": {
            "metadata": {"labels": {"app": "my-bot"}},
            "spec": {
                "containers": [
                    {
                        "name": "engine",
                        "image": "registry.example.com/my-bot:1.0",
                        "command": ["opentelemetry-instrument", "python", "bot.py"],
                        "env": [{"name": "OTEL_SERVICE_NAME", "value": "my-bot"}],
                        "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
                    }
                ]
            },
        },
    },
}


def test_snippet_adds_the_charts_sidecar_to_a_pod(tmp_path: Path) -> None:
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "deployment.yaml").write_text(yaml.safe_dump(SAMPLE_DEPLOYMENT))
    component = os.path.relpath(helm.SNIPPETS / "tickscope-sidecar", overlay)
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump({"resources": ["deployment.yaml"], "components": [component]})
    )
    docs = helm.kustomize(overlay)
    assert sorted(d["kind"] for d in docs) == ["ConfigMap", "Deployment"]
    assert kubernetes_validate(docs, "1.31.0", tmp_path) == ""
    assert pod_problems(docs) == []
    config_map = helm.one(docs, "ConfigMap")
    assert re.fullmatch(r"tickscope-config-[a-z0-9]{10}", config_map["metadata"]["name"])

    # The same sidecar, config and engine env as the chart renders for that engine.
    chart_docs = helm.render({"engine": {"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}})
    chart_pod, snippet_pod = helm.pod(chart_docs), helm.pod(docs)
    assert snippet_pod.sidecar == chart_pod.sidecar
    assert snippet_pod.sidecar_is_native
    assert yaml.safe_load(config_map["data"]["tickscope.yaml"]) == helm.sidecar_config(chart_docs)
    chart_env = helm.env_of(chart_pod.engine)
    snippet_env = helm.env_of(snippet_pod.engine)
    assert {k: v for k, v in chart_env.items() if k != "OTEL_SERVICE_NAME"} == {
        k: v for k, v in snippet_env.items() if k != "OTEL_SERVICE_NAME"
    }
    assert snippet_env["OTEL_SERVICE_NAME"]["value"] == "my-bot"  # the engine's own stays
    for key in ("shareProcessNamespace", "enableServiceLinks"):
        assert snippet_pod.spec[key] == chart_pod.spec[key]
    volumes = {v["name"]: v for v in snippet_pod.spec["volumes"]}
    chart_volumes = {
        v["name"]: v for v in chart_pod.spec["volumes"] if v["name"].startswith("tickscope-")
    }
    sources = volumes["tickscope-config"]["projected"]["sources"]
    assert sources[0]["configMap"]["name"] == config_map["metadata"]["name"]  # renamed by kustomize
    sources[0]["configMap"]["name"] = chart_volumes["tickscope-config"]["projected"]["sources"][0][
        "configMap"
    ]["name"]
    assert volumes == chart_volumes
    scrape = {
        k: v
        for k, v in chart_pod.annotations.items()
        if k.startswith(("prometheus.io/", "kubectl."))
    }
    assert {k: v for k, v in snippet_pod.annotations.items()} == scrape
    # The engine's own fields are untouched.
    assert snippet_pod.engine["image"] == "registry.example.com/my-bot:1.0"
    assert snippet_pod.engine["command"] == ["opentelemetry-instrument", "python", "bot.py"]


# --- the docs ---------------------------------------------------------------------------------


def test_values_reference_in_docs_is_current() -> None:
    import chart_values_doc

    current = chart_values_doc.DOC.read_text()
    assert chart_values_doc.render(current) == current, "run: python scripts/chart_values_doc.py"
    # Every value of the chart has its row.
    table = current[current.index(chart_values_doc.BEGIN) : current.index(chart_values_doc.END)]
    for path in (
        "sidecar.port",
        "sidecar.config",
        "engine.image",
        "sidecar.resources",
        "sidecar.probes.liveness",
        "serviceMonitor.enabled",
        "prometheusRule.thresholds.hostCpuBusyRatio",
        "dashboards.enabled",
    ):
        assert f"| `{path}` |" in table, path


# --- the sidecar, started with the chart's config and env --------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def write_web_config(directory: Path, web: dict[str, Any]) -> Path:
    """The chart's web config with its certificate paths moved to `directory` (a
    throwaway certificate there), as the pod would have it under /etc/tickscope/tls."""
    web = json.loads(json.dumps(web))
    tls = web.get("tls_server_config")
    if tls:
        assert tls == {
            "cert_file": "/etc/tickscope/tls/tls.crt",
            "key_file": "/etc/tickscope/tls/tls.key",
        }
        cert, key = self_signed(directory, "tls")
        web["tls_server_config"] = {"cert_file": str(cert), "key_file": str(key)}
    path = directory / "web-config.yml"
    path.write_text(yaml.safe_dump(web))
    return path


BOT = """\
# A stand-in engine: one span now and then, through whatever OpenTelemetry setup
# opentelemetry-instrument (with tickscope-shim's distro) made from the env, and a
# heartbeat of its main loop.
import time
from opentelemetry import trace
from tickscope import shim

tracer = trace.get_tracer("chart-test-engine")
while True:
    shim.heartbeat("main")
    with tracer.start_as_current_span("engine.step"):
        time.sleep(0.01)
    time.sleep(0.2)
"""


def start_engine(
    set_name: str, p: helm.Pod, env: dict[str, str], workdir: Path
) -> subprocess.Popen[bytes]:
    """A process that looks as the chart's engine does to the sidecar's matcher: the
    chart's command and args where they can run here, with the chart's env."""
    bin_dir = Path(sys.executable).parent
    full_env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(workdir), **env}
    if set_name == "minimal-engine":
        # The image's own entrypoint, found by process name: a program named arb-bot.
        program = workdir / "arb-bot"
        shutil.copy("/bin/sleep", program)
        return subprocess.Popen(
            [str(program), "300"], cwd=workdir, env=full_env, stderr=subprocess.DEVNULL
        )
    command = p.engine["command"] + p.engine.get("args", [])
    if set_name == "monitoring":
        (workdir / "mm").mkdir()
        (workdir / "mm" / "__init__.py").write_text("")
        (workdir / "mm" / "main.py").write_text(BOT)
    else:
        (workdir / command[-1]).write_text(BOT)
    # Faster metric export than the shim's 10 s, so the resource shows up in time.
    full_env["OTEL_METRIC_EXPORT_INTERVAL"] = "500"
    return subprocess.Popen(command, cwd=workdir, env=full_env, stderr=subprocess.DEVNULL)


def probe(scheme: str, port: int, path: str) -> tuple[int, dict[str, Any]]:
    """As the kubelet probes: HTTP or HTTPS without verifying the certificate, no credentials."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    request = urllib.request.Request(f"{scheme}://127.0.0.1:{port}{path}")
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read()
    try:
        return status, json.loads(body)
    except ValueError:
        return status, {"text": body.decode(errors="replace")}


@pytest.fixture
def stopper() -> Iterator[list[Any]]:
    started: list[Any] = []
    yield started
    for thing in reversed(started):
        if isinstance(thing, SidecarProcess):
            thing.stop()
        else:
            thing.terminate()
            try:
                thing.wait(10)
            except subprocess.TimeoutExpired:
                thing.kill()
                thing.wait(5)


@pytest.mark.parametrize("set_name", SETS)
def test_sidecar_serves_probes_with_the_charts_config_and_env(
    set_name: str, tmp_path: Path, stopper: list[Any]
) -> None:
    docs = rendered(set_name)
    p = helm.pod(docs)
    config = helm.sidecar_config(docs)
    changed = []
    # Loopback only in tests: the admin port's 0.0.0.0 becomes 127.0.0.1.
    config["server"]["bind"] = "127.0.0.1"
    changed.append("server.bind 0.0.0.0 -> 127.0.0.1")
    for key, section in (
        ("server.port", config["server"]),
        ("receiver.http.port", config["receiver"]["http"]),
        ("receiver.grpc.port", config["receiver"]["grpc"]),
    ):
        if not port_is_free(section["port"]):
            new = free_port()
            changed.append(f"{key} {section['port']} (in use here) -> {new}")
            section["port"] = new
    if config.get("forward", {}).get("enabled"):
        # The upstream collector is a cluster address: nothing to reach here.
        config["forward"]["endpoint"] = f"http://127.0.0.1:{free_port()}"
        changed.append("forward.endpoint -> a closed 127.0.0.1 port")
    web = helm.web_config(docs)
    if web is not None:
        config["server"]["web_config_file"] = str(write_web_config(tmp_path, web))
        changed.append(
            "server.web_config_file and the certificate paths -> tmp_path (throwaway certificate)"
        )
    print(f"{set_name}: changed from the ConfigMap: {'; '.join(changed)}")
    config_path = tmp_path / "tickscope.yaml"
    config_path.write_text(yaml.safe_dump(config))

    pod_name = f"{RELEASE}-tickscope-7d9f5-x2x4q"
    sidecar_env = helm.resolved_env(p.sidecar.get("env", []), p, pod_name)
    engine_env = helm.resolved_env(p.engine["env"], p, pod_name)
    protocol = engine_env["OTEL_EXPORTER_OTLP_PROTOCOL"]
    receiver = config["receiver"]["grpc" if protocol == "grpc" else "http"]
    engine_env["OTEL_EXPORTER_OTLP_ENDPOINT"] = (
        f"http://127.0.0.1:{receiver['port']}"  # moved with the port
    )

    engine = start_engine(set_name, p, engine_env, tmp_path)
    stopper.append(engine)
    sidecar = SidecarProcess(config_path, sidecar_env)
    stopper.append(sidecar)
    sidecar.start()
    port = sidecar.port
    assert port is not None and port == config["server"]["port"]

    scheme = p.sidecar["readinessProbe"]["httpGet"]["scheme"].lower()
    started = time.monotonic()
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        action = p.sidecar[kind]["httpGet"]
        assert action["port"] == "admin"
        deadline = time.monotonic() + 20
        status, body = probe(scheme, port, action["path"])
        while status != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
            status, body = probe(scheme, port, action["path"])
        assert status == 200, (kind, body, sidecar.raw_stderr[-20:])
    print(
        f"{set_name}: ready {time.monotonic() - started:.2f} s after the sidecar listened; /readyz {body}"
    )
    checks = {c["name"]: c["ready"] for c in body["checks"]}
    assert checks[f"engine:{config['engine']['processes'][0]['name']}"] is True

    # The engine container's liveness probe, where the chart makes one from heartbeats:
    # the sidecar's admin port by number, answered 200 once the engine's beats arrive.
    engine_probe = p.engine.get("livenessProbe", {}).get("httpGet")
    if engine_probe is not None:
        assert engine_probe["path"] == "/engine/healthz"
        assert engine_probe["port"] == p.sidecar["ports"][0]["containerPort"]
        assert engine_probe["scheme"].lower() == scheme
        loops = [h["loop"] for h in config["engine"]["heartbeats"]]
        deadline = time.monotonic() + 20
        status, body = probe(scheme, port, engine_probe["path"])
        while not (status == 200 and all(h["status"] == "ok" for h in body["loops"])):
            assert time.monotonic() < deadline, (status, body)
            time.sleep(0.2)
            status, body = probe(scheme, port, engine_probe["path"])
        assert [h["loop"] for h in body["loops"]] == loops
        print(f"{set_name}: the engine's liveness probe {body}")
    else:
        assert not config.get("engine", {}).get("heartbeats")

    # What the sidecar made of the downward API and of the engine it found.
    if scheme == "https":
        status, _ = probe(scheme, port, "/metrics")
        assert status == 401  # basic auth: only the probes are open
        return
    engine_limits = p.engine.get("resources", {}).get("limits", {})
    families = sidecar.families()
    assert sample_value(families["engine_process_up"], process="engine") == 1
    if "memory" in engine_limits:
        memory = sample_value(families["engine_container_memory_limit_bytes"], process="engine")
        cpu = sample_value(families["engine_container_cpu_limit_cores"], process="engine")
        assert (memory, cpu) == (
            float(helm.quantity(engine_limits["memory"])),
            float(helm.quantity(engine_limits["cpu"])),
        )
    else:
        assert "engine_container_memory_limit_bytes" not in families

    def metrics() -> str:
        return http_get(f"http://127.0.0.1:{port}/metrics").text

    if set_name == "minimal-engine":
        return
    # The engine's OTLP reached the sidecar under OTEL_SERVICE_NAME, with the k8s.*
    # attributes the shim made of the downward-API env.
    service = engine_env["OTEL_SERVICE_NAME"]
    target = f'k8s_container_name="engine",k8s_namespace_name="{NAMESPACE}",k8s_node_name="node-1",k8s_pod_name="{pod_name}"'
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = metrics()
        if f'service_name="{service}",span_name="engine.step"' in text and target in text:
            break
        time.sleep(0.3)
    assert f'service_name="{service}",span_name="engine.step"' in text
    assert target in text, [line for line in text.splitlines() if line.startswith("target_info")]


# --- NOTES.txt and the plain-Prometheus scrape config of the docs -----------------------------


def render_notes(
    values_files: list[Path], tmp_path: Path, api_versions: tuple[str, ...] = ()
) -> str:
    """NOTES.txt as `helm install` prints it (helm template skips it, and install needs a
    cluster): a copy of the chart renders it through tpl into a ConfigMap."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    shutil.copy(chart / "templates" / "NOTES.txt", chart / "notes.txt")
    (chart / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n"
        'data:\n  notes: {{ tpl (.Files.Get "notes.txt") . | quote }}\n'
    )
    args: dict[str, Any] = {
        "values_files": values_files,
        "chart": chart,
        "api_versions": api_versions,
    }
    docs = helm.parse(helm.template(None, **args))
    notes: str = helm.one(docs, "ConfigMap", "notes")["data"]["notes"]
    return notes


def test_notes_say_where_metrics_dashboards_and_alerts_are(tmp_path: Path) -> None:
    default = render_notes([CI_SETS["default"]], tmp_path / "a")
    assert f"kubectl -n {NAMESPACE} port-forward svc/{RELEASE}-tickscope 9464" in default
    assert "curl http://127.0.0.1:9464/metrics" in default
    assert "No ServiceMonitor" in default and "prometheus.io/scrape" in default
    assert "No PrometheusRule: load alert-rules/*.rules.yml" in default
    assert "Import dashboards/tickscope-*.json" in default
    assert "WARNING: engine.image is the chart's placeholder" in default
    assert "the engine has no memory limit" in default
    monitoring = render_notes([CI_SETS["monitoring"]], tmp_path / "b")
    assert (
        f'ServiceMonitor {NAMESPACE}/{RELEASE}-tickscope scrapes the admin port as job "tickscope"'
        in monitoring
    )
    assert f"PrometheusRule {NAMESPACE}/{RELEASE}-tickscope holds the groups" in monitoring
    assert "in namespace monitoring" in monitoring and "grafana_dashboard=1" in monitoring
    assert "WARNING" not in monitoring and "NOTE:" not in monitoring
    tls = render_notes([CI_SETS["tls"]], tmp_path / "c")
    assert "curl -k https://127.0.0.1:9464/readyz" in tls
    assert "It has no additionalLabels" in tls


@pytest.mark.system
def test_docs_scrape_config_for_plain_prometheus(tmp_path: Path) -> None:
    """The scrape config docs/kubernetes.md gives for Prometheus without the operator:
    job tickscope, relabelings promtool accepts. (Debian's Prometheus is built without
    Kubernetes discovery: the check swaps it for a static target.)"""
    promtool = require_binary("promtool")
    text = (ROOT / "docs" / "kubernetes.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    (block,) = [b for b in blocks if "kubernetes_sd_configs" in b]
    config = yaml.safe_load(block)
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "tickscope"
    keep = job["relabel_configs"][0]
    assert keep["action"] == "keep" and keep["regex"] == "tickscope;admin"
    # The labels it keeps on are the chart's: part-of on the pod, the port's name.
    p = helm.pod(rendered("default"))
    assert p.labels["app.kubernetes.io/part-of"] == "tickscope"
    assert p.sidecar["ports"][0]["name"] == "admin"
    job.pop("kubernetes_sd_configs")
    job["static_configs"] = [{"targets": ["127.0.0.1:9464"]}]
    config["rule_files"] = [str(tmp_path / "*.rules.yml")]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [promtool, "check", "config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_long_release_names_stay_valid() -> None:
    release = "desk-" + "x" * 48  # 53 characters, Helm's longest release name
    docs = helm.render(
        {
            "dashboards": {"enabled": True},
            "sidecar": {"webConfig": {"basicAuthUsers": {"p": BCRYPT}}},
        },
        release=release,
        api_versions=MONITORING_APIS,
    )
    names = [d["metadata"]["name"] for d in docs]
    assert all(len(n) <= 63 and DNS1123_SUBDOMAIN.match(n) for n in names), names
    assert len({(d["kind"], d["metadata"]["name"]) for d in docs}) == len(docs)
    problems = [p for p in pod_problems(docs) if f"{RELEASE}-" not in p]
    assert problems == []


def test_admin_port_moves_everywhere_together() -> None:
    docs = helm.render({"sidecar": {"port": 9100}}, api_versions=MONITORING_APIS)
    p = helm.pod(docs)
    assert helm.sidecar_config(docs)["server"]["port"] == 9100
    assert p.sidecar["ports"] == [{"name": "admin", "containerPort": 9100, "protocol": "TCP"}]
    assert helm.one(docs, "Service")["spec"]["ports"][0]["port"] == 9100
    assert helm.one(docs, "ServiceMonitor")["spec"]["endpoints"][0]["port"] == "admin"
    assert pod_problems(docs) == []
    plain = helm.pod(helm.render({"sidecar": {"port": 9100}}))
    assert plain.annotations["prometheus.io/port"] == "9100"


BCRYPT = "$2y$10$X0h1gDsPszWURQaxFh.zoubFi6DXncSjhoQNJgRrnGs7EsimhC7zG"
