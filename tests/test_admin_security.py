"""The secured admin port: TLS and basic auth from an exporter-toolkit web config
(node_exporter's --web.config.file format), with a real TLS client and a real
Prometheus scraping it with tls_config + basic_auth."""

from __future__ import annotations

import base64
import http.client
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from helpers.alerting import Prometheus
from helpers.binaries import require_binary
from helpers.sidecar import SidecarProcess, StartSidecar, run_cli, sample_value
from helpers.tls import self_signed
from tickscope.agent.server import WebConfigError, load_web_config

PASSWORD = "s3cret-scrape"


def htpasswd_hash(password: str) -> str:
    # As `htpasswd -nBC 4` writes it ($2y$); cost 4 keeps the tests fast.
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode().replace("$2b$", "$2y$", 1)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("tls"))


def write_web_config(directory: Path, document: dict[str, Any]) -> Path:
    path = directory / "web-config.yml"
    path.write_text(yaml.safe_dump(document))
    return path


def secured_config(tls_files: tuple[Path, Path]) -> dict[str, Any]:
    cert, key = tls_files
    return {
        "tls_server_config": {"cert_file": str(cert), "key_file": str(key)},
        "basic_auth_users": {"prometheus": htpasswd_hash(PASSWORD)},
    }


def https(
    port: int, path: str, cafile: Path, auth: tuple[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    context = ssl.create_default_context(cafile=str(cafile))
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    headers = {}
    if auth is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


@pytest.fixture(scope="module")
def secured(
    start_module_sidecar: StartSidecar,
    tls_files: tuple[Path, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[SidecarProcess]:
    web_config = write_web_config(tmp_path_factory.mktemp("web"), secured_config(tls_files))
    s = start_module_sidecar(
        {
            "server": {"web_config_file": str(web_config), "metrics_cache_ttl": 0},
            "engine": {"processes": []},
        }
    )
    cert = tls_files[0]
    deadline = time.monotonic() + 15
    while https(s.port or 0, "/readyz", cert)[0] != 200:
        assert time.monotonic() < deadline, "not ready"
        time.sleep(0.1)
    yield s


def rejected(s: SidecarProcess, cert: Path, reason: str) -> float:
    status, _, body = https(s.port or 0, "/metrics", cert, ("prometheus", PASSWORD))
    assert status == 200
    families = {m.name: m for m in text_string_to_metric_families(body.decode())}
    return sample_value(families["tickscope_admin_rejected_requests"], reason=reason)


def test_basic_auth_over_tls(secured: SidecarProcess, tls_files: tuple[Path, Path]) -> None:
    cert = tls_files[0]
    port = secured.port or 0
    before = rejected(secured, cert, "unauthorized")
    status, headers, _ = https(port, "/metrics", cert)
    assert status == 401
    assert headers["www-authenticate"] == 'Basic realm="tickscope", charset="UTF-8"'
    assert https(port, "/metrics", cert, ("prometheus", "wrong"))[0] == 401
    assert https(port, "/metrics", cert, ("nobody", PASSWORD))[0] == 401
    assert https(port, "/", cert)[0] == 401
    status, headers, body = https(port, "/metrics", cert, ("prometheus", PASSWORD))
    assert status == 200 and b"node_cpu_seconds_total" in body
    # Probes answer without credentials (server.probes_without_auth defaults to true).
    assert https(port, "/healthz", cert)[0] == 200
    assert https(port, "/readyz", cert)[0] == 200
    assert rejected(secured, cert, "unauthorized") == before + 4
    # The password never reaches the logs, nor the hash.
    assert not any(PASSWORD in line for line in secured.raw_stderr)
    listening = secured.wait_for_log("admin server listening")
    assert listening["tls"] is True and listening["basic_auth_users"] == 1


def test_plain_http_to_the_tls_port_fails(secured: SidecarProcess) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", secured.port or 0, timeout=5)
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        connection.request("GET", "/healthz")
        connection.getresponse().read()
    connection.close()


def test_probes_need_credentials_when_configured(
    start_sidecar: StartSidecar, tls_files: tuple[Path, Path], tmp_path: Path
) -> None:
    web_config = write_web_config(tmp_path, secured_config(tls_files))
    s = start_sidecar(
        {
            "server": {"web_config_file": str(web_config), "probes_without_auth": False},
            "engine": {"processes": []},
        }
    )
    cert = tls_files[0]
    assert https(s.port or 0, "/healthz", cert)[0] == 401
    assert https(s.port or 0, "/readyz", cert)[0] == 401
    assert https(s.port or 0, "/healthz", cert, ("prometheus", PASSWORD))[0] == 200


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"tls_server_config": {"cert_fil": "x"}}, "tls_server_config.cert_fil: Extra inputs"),
        ({"basic_auth_user": {}}, "basic_auth_user: Extra inputs are not permitted"),
        ({"basic_auth_users": {"alice": "plain"}}, "user 'alice': not a bcrypt hash"),
        ({"tls_server_config": {"cert_file": "a.crt"}}, "a certificate needs its key"),
        (
            {"tls_server_config": {"cert_file": "a.crt", "key_file": "a.key"}},
            "web config tls_server_config: [Errno 2] No such file or directory",
        ),
        (
            {"tls_server_config": {"client_auth_type": "RequireAnyClientCert"}},
            "client_auth_type RequireAnyClientCert is not supported",
        ),
        ({"tls_server_config": {"min_version": "TLS9"}}, "tls_server_config.min_version"),
        (
            {"http_server_config": {"headers": {"X-Frame-Options": "allow"}}},
            "X-Frame-Options must be one of ['deny', 'sameorigin']",
        ),
    ],
)
def test_bad_web_config_is_refused_at_startup_with_exit_2(
    tmp_path: Path, document: dict[str, Any], message: str
) -> None:
    web_config = write_web_config(tmp_path, document)
    with pytest.raises(WebConfigError) as error:
        from tickscope.agent.server import tls_context

        tls_context(load_web_config(web_config).tls_server_config)
    assert message in str(error.value)
    config = tmp_path / "tickscope.yaml"
    config.write_text(yaml.safe_dump({"server": {"web_config_file": str(web_config)}}))
    checked = run_cli("check-config", str(config))
    assert checked.returncode == 2, checked.stderr
    assert "server.web_config_file" in checked.stderr and message in checked.stderr
    assert "Traceback" not in checked.stderr
    ran = run_cli("run", "--config", str(config), timeout=20)
    assert ran.returncode == 2 and message in ran.stderr, ran.stderr


def test_prometheus_scrapes_with_tls_config_and_basic_auth(
    secured: SidecarProcess, tls_files: tuple[Path, Path], tmp_path: Path
) -> None:
    """A scrape config written for node_exporter's web config works as it is."""
    cert = tls_files[0]
    prometheus = Prometheus(require_binary("prometheus"), tmp_path, tmp_path, [], "127.0.0.1:1")
    target = f"127.0.0.1:{secured.port}"

    def job(name: str, password: str) -> dict[str, Any]:
        return {
            "job_name": name,
            "scheme": "https",
            "tls_config": {"ca_file": str(cert)},
            "basic_auth": {"username": "prometheus", "password": password},
            "static_configs": [{"targets": [target]}],
        }

    prometheus.config_path.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
                "scrape_configs": [job("secured", PASSWORD), job("wrong_password", "nope")],
            }
        )
    )
    prometheus.start()
    try:
        prometheus.wait(
            lambda: (
                prometheus.value('up{job="secured"}') == 1
                and prometheus.value('up{job="wrong_password"}') == 0
            ),
            30,
            "both jobs scraped",
        )
        assert prometheus.value('up{job="secured"}') == 1
        assert prometheus.value('up{job="wrong_password"}') == 0
        assert prometheus.value('count(node_cpu_seconds_total{job="secured"}) > 0') is not None
        assert prometheus.value('count(node_cpu_seconds_total{job="wrong_password"})') is None
    finally:
        prometheus.stop()
