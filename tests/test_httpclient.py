"""The operator tools' HTTP client (agent/httpclient.py): credentials in URLs, the TLS options
and their one-line errors, gzip, redirects; then `tickscope top` and `tickscope doctor`
against real sidecars whose admin port serves HTTPS with basic auth, and one that requires a
client certificate (web configs as in docs/security.md, certificates from helpers.tls)."""

from __future__ import annotations

import base64
import gzip
import http.server
import os
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from helpers import otlp
from helpers.sidecar import ROOT, SidecarProcess, StartSidecar, http_post
from helpers.tls import self_signed
from tickscope.agent import doctor, top
from tickscope.agent.doctor import FAIL, OK, SKIP, WARN, Options, Result
from tickscope.agent.httpclient import (
    Client,
    OptionError,
    RequestError,
    TLSOptions,
    redact,
    split_credentials,
)
from tickscope.agent.version import __version__

PASSWORD = "s3cret-ops"

# --- URLs and credentials ------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "plain", "credentials"),
    [
        ("http://127.0.0.1:9464", "http://127.0.0.1:9464", None),
        (
            "http://ops:s%3Acret@127.0.0.1:9464/metrics",
            "http://127.0.0.1:9464/metrics",
            ("ops", "s:cret"),
        ),
        ("https://ops@sidecar:9464", "https://sidecar:9464", ("ops", "")),
        ("https://u:p@[::1]:9464/x?y=1", "https://[::1]:9464/x?y=1", ("u", "p")),
        (
            "http://%C3%A9l%C3%A8ve:p%40ss%2Fw%23rd@Sidecar",
            "http://sidecar",
            ("élève", "p@ss/w#rd"),
        ),
    ],
)
def test_credentials_are_taken_out_of_the_url(
    url: str, plain: str, credentials: tuple[str, str] | None
) -> None:
    assert split_credentials(url) == (plain, credentials)
    assert redact(url) == plain


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://ops:pa/ss@127.0.0.1:9464/metrics", "https://127.0.0.1:9464/metrics"),
        ("http://ops:pass@127.0.0.1:x", "http://127.0.0.1:x"),
    ],
)
def test_a_url_that_does_not_parse_is_refused_without_echoing_it(url: str, shown: str) -> None:
    with pytest.raises(OptionError) as error:
        split_credentials(url)
    assert str(error.value) == (
        "the host or port does not parse (in a password, write / ? # @ as %2F %3F %23 %40)"
    )
    assert redact(url) == shown  # everything up to the last @ is cut
    with pytest.raises(RequestError) as failed:
        Client().request(url)
    assert str(failed.value) == f"{shown}: {error.value}"


# --- against local HTTP servers -------------------------------------------------------


class Recorder(http.server.ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.seen: list[dict[str, str]] = []
        self.redirect_to = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(http.server.BaseHTTPRequestHandler):
    server: Recorder

    def do_GET(self) -> None:
        self.server.seen.append({"path": self.path, **dict(self.headers.items())})
        if self.path == "/401":
            self.answer(401, b"401 Unauthorized\n")
        elif self.path == "/same":
            self.answer(302, b"", {"Location": "/echo"})
        elif self.path == "/elsewhere":
            self.answer(302, b"", {"Location": self.server.redirect_to + "/echo"})
        elif self.path == "/gzip":
            self.answer(200, gzip.compress(b"x" * 2000), {"Content-Encoding": "gzip"})
        else:
            self.answer(200, b"ok")

    def answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def servers() -> Iterator[tuple[Recorder, Recorder]]:
    pair = (Recorder(), Recorder())
    threads = [threading.Thread(target=s.serve_forever, args=(0.05,), daemon=True) for s in pair]
    for t in threads:
        t.start()
    pair[0].redirect_to = pair[1].url
    yield pair
    for s, t in zip(pair, threads, strict=True):
        s.shutdown()
        s.server_close()
        t.join(5)


def auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_basic_auth_gzip_and_a_401(servers: tuple[Recorder, Recorder]) -> None:
    one, _ = servers
    port = one.server_address[1]
    client = Client(user_agent="tickscope-test")
    answer = client.request(f"http://ops:p%40ss@127.0.0.1:{port}/gzip")
    assert (answer.status, answer.body) == (200, b"x" * 2000)
    assert "content-encoding" not in answer.headers  # the body handed on is inflated
    (seen,) = one.seen
    assert (seen["Authorization"], seen["User-Agent"], seen["Accept-Encoding"]) == (
        auth("ops", "p@ss"),
        "tickscope-test",
        "gzip",
    )
    with pytest.raises(RequestError) as error:
        client.get(f"http://ops:p%40ss@127.0.0.1:{port}/401")
    assert (error.value.status, str(error.value)) == (
        401,
        f"http://127.0.0.1:{port}/401: HTTP 401 Unauthorized; basic auth required: put "
        "user:password@ in the URL; the ones given were refused",
    )
    with pytest.raises(RequestError) as error:
        client.get(f"http://127.0.0.1:{port}/401")
    assert error.value.hint == "basic auth required: put user:password@ in the URL"
    small = Client(max_body_bytes=1000)
    with pytest.raises(RequestError) as error:
        small.request(f"http://127.0.0.1:{port}/gzip")
    assert str(error.value) == f"http://127.0.0.1:{port}/gzip: answer inflates past 1000 bytes"


def test_redirects_keep_the_credentials_only_on_their_origin(
    servers: tuple[Recorder, Recorder],
) -> None:
    one, other = servers
    port = one.server_address[1]
    client = Client()
    assert client.request(f"http://ops:pw@127.0.0.1:{port}/same").status == 200
    assert client.request(f"http://ops:pw@127.0.0.1:{port}/elsewhere").status == 200
    assert [(s["path"], s.get("Authorization")) for s in one.seen] == [
        ("/same", auth("ops", "pw")),
        ("/echo", auth("ops", "pw")),
        ("/elsewhere", auth("ops", "pw")),
    ]
    assert [(s["path"], s.get("Authorization")) for s in other.seen] == [("/echo", None)]


def test_https_to_a_plain_http_port_says_use_http(servers: tuple[Recorder, Recorder]) -> None:
    port = servers[0].server_address[1]
    with pytest.raises(RequestError) as error:
        Client().request(f"https://127.0.0.1:{port}/metrics")
    assert (error.value.kind, error.value.hint) == (
        "tls_on_http",
        "the admin port serves plain HTTP: use http://",
    )


@pytest.mark.parametrize(
    ("name", "days", "reason", "hint"),
    [
        (
            "elsewhere.test",
            1,
            "certificate verify failed: IP address mismatch, certificate is not valid for "
            "'127.0.0.1'",
            "the certificate is not issued for 127.0.0.1: connect by a name or address in its "
            "subjectAltName",
        ),
        (
            "127.0.0.1",
            -1,
            "certificate verify failed: certificate has expired",
            "the admin port's certificate is outside its validity period (or this machine's "
            "clock is wrong): renew it",
        ),
    ],
    ids=["not-for-this-address", "expired"],
)
def test_certificates_that_do_not_verify(
    tmp_path: Path, name: str, days: float, reason: str, hint: str
) -> None:
    cert, key = self_signed(tmp_path, name, (name,), days)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        client = Client.for_sidecar(TLSOptions(ca_file=cert), timeout=5)
        with pytest.raises(RequestError) as error:
            client.request(f"https://127.0.0.1:{server.server_address[1]}/metrics")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert (error.value.kind, error.value.reason, error.value.hint) == ("tls_verify", reason, hint)


def test_connection_refused() -> None:
    with pytest.raises(RequestError) as error:
        Client().request("http://ops:pw@127.0.0.1:9/metrics")
    assert str(error.value) == "http://127.0.0.1:9/metrics: [Errno 111] Connection refused"
    assert error.value.kind == "connect"


# --- the TLS options ----------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The server's certificate (its own CA), a client's, and one more key pair."""
    directory = tmp_path_factory.mktemp("pki")
    server_crt, server_key = self_signed(directory, "server")
    client_crt, client_key = self_signed(directory, "client")
    encrypted = directory / "encrypted.key"
    encrypted.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    return {
        "dir": directory,
        "server.crt": server_crt,
        "server.key": server_key,
        "client.crt": client_crt,
        "client.key": client_key,
        "encrypted.key": encrypted,
    }


def test_tls_options_that_cannot_be_used(pki: dict[str, Path]) -> None:
    missing = pki["dir"] / "missing.crt"
    cases: list[tuple[TLSOptions, str]] = [
        (
            TLSOptions(ca_file=missing),
            f"--ca-file {missing}: cannot read: No such file or directory",
        ),
        (TLSOptions(ca_file=pki["dir"]), f"--ca-file {pki['dir']}: cannot read: Is a directory"),
        (
            TLSOptions(ca_file=pki["server.key"]),
            f"--ca-file {pki['server.key']}: no PEM certificate in it",
        ),
        (
            TLSOptions(ca_file=pki["server.crt"], insecure_skip_verify=True),
            "--ca-file and --insecure-skip-verify contradict each other",
        ),
        (TLSOptions(key_file=pki["client.key"]), "--key-file needs --cert-file"),
        (
            TLSOptions(cert_file=pki["client.crt"], key_file=pki["server.key"]),
            f"--key-file {pki['server.key']} is not the key of --cert-file {pki['client.crt']}",
        ),
        (
            TLSOptions(cert_file=pki["client.crt"]),
            f"--cert-file {pki['client.crt']}: no PEM private key in it: give --key-file",
        ),
        (
            TLSOptions(cert_file=pki["client.key"], key_file=pki["client.key"]),
            f"--cert-file {pki['client.key']}: no PEM certificate in it",
        ),
        (
            TLSOptions(cert_file=pki["client.crt"], key_file=pki["encrypted.key"]),
            f"--key-file {pki['encrypted.key']}: the key is encrypted: give an unencrypted copy "
            "(openssl pkey -in KEY -out PLAIN.key)",
        ),
    ]
    for options, message in cases:
        with pytest.raises(OptionError) as error:
            options.context()
        assert str(error.value) == message


def test_tls_options_that_can(pki: dict[str, Path]) -> None:
    verified = TLSOptions(ca_file=pki["server.crt"]).context()
    assert (verified.verify_mode, verified.check_hostname) == (ssl.CERT_REQUIRED, True)
    # Only the CA given is trusted, not the system's too.
    assert [c["subject"] for c in verified.get_ca_certs()] == [
        ((("commonName", "tickscope-test"),),)
    ]
    insecure = TLSOptions(insecure_skip_verify=True).context()
    assert (insecure.verify_mode, insecure.check_hostname) == (ssl.CERT_NONE, False)
    combined = pki["dir"] / "combined.pem"
    combined.write_bytes(pki["client.crt"].read_bytes() + pki["client.key"].read_bytes())
    TLSOptions(cert_file=combined).context()  # the key may sit in the certificate's file


def test_bad_options_exit_2_with_one_line_before_anything_is_fetched(
    servers: tuple[Recorder, Recorder], pki: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    url = servers[0].url
    missing = pki["dir"] / "missing.crt"
    mismatch = ["--cert-file", str(pki["client.crt"]), "--key-file", str(pki["server.key"])]
    for argv, message in [
        (
            ["--ca-file", str(missing)],
            f"--ca-file {missing}: cannot read: No such file or directory",
        ),
        (
            mismatch,
            f"--key-file {pki['server.key']} is not the key of --cert-file {pki['client.crt']}",
        ),
    ]:
        assert top.main([url, "--once", "--interval", "0.1", *argv]) == 2
        assert doctor.main([url, "--window", "0.1", *argv]) == 2
        out, err = capsys.readouterr()
        assert out == ""
        assert err == f"tickscope top: {message}\ntickscope doctor: {message}\n"
    assert top.main(["http://ops:pa/ss@127.0.0.1:1", "--once"]) == 2
    assert capsys.readouterr().err == (
        "tickscope top: URL: the host or port does not parse (in a password, write / ? # @ as "
        "%2F %3F %23 %40)\n"
    )
    assert servers[0].seen == []


def test_help_says_the_tls_options_are_the_sidecars(capsys: pytest.CaptureFixture[str]) -> None:
    for main in (top.main, doctor.main):
        with pytest.raises(SystemExit):
            main(["--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "TLS to the sidecar's admin port:" in text
        assert "These apply to the sidecar only: --prometheus is verified against the " in text
        for flag in (
            "--ca-file FILE",
            "--cert-file FILE",
            "--key-file FILE",
            "--insecure-skip-verify",
        ):
            assert flag in text


# --- real sidecars with a web config ---------------------------------------------------


def htpasswd_hash(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode().replace("$2b$", "$2y$", 1)


def secured_sidecar(
    start: StartSidecar, directory: Path, pki: dict[str, Path], tls: dict[str, Any]
) -> SidecarProcess:
    web_config = directory / "web-config.yml"
    document = {
        "tls_server_config": {
            "cert_file": str(pki["server.crt"]),
            "key_file": str(pki["server.key"]),
            **tls,
        },
        "basic_auth_users": {"ops": htpasswd_hash(PASSWORD)},
    }
    web_config.write_text(yaml.safe_dump(document))
    # No /metrics cache: the doctor's two scrapes 0.5 s apart must both be fresh.
    server = {"web_config_file": str(web_config), "metrics_cache_ttl": 0}
    sidecar = start({"server": server, "engine": {"processes": []}})
    client = Client.for_sidecar(
        TLSOptions(pki["server.crt"], pki["client.crt"], pki["client.key"]), timeout=5
    )
    deadline = time.monotonic() + 15
    while client.request(f"https://127.0.0.1:{sidecar.port}/readyz").status != 200:
        assert time.monotonic() < deadline, "not ready"
        time.sleep(0.1)
    return sidecar


@pytest.fixture(scope="module")
def secured(
    start_module_sidecar: StartSidecar,
    pki: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> SidecarProcess:
    """TLS and basic auth (probes answer without credentials, the default)."""
    return secured_sidecar(start_module_sidecar, tmp_path_factory.mktemp("web"), pki, {})


@pytest.fixture(scope="module")
def mutual(
    start_module_sidecar: StartSidecar,
    pki: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> SidecarProcess:
    """As `secured`, and a client certificate signed by the client CA, with an allowed SAN."""
    tls = {
        "client_auth_type": "RequireAndVerifyClientCert",
        "client_ca_file": str(pki["client.crt"]),
        "client_allowed_sans": ["localhost"],
    }
    return secured_sidecar(start_module_sidecar, tmp_path_factory.mktemp("web"), pki, tls)


def https_url(sidecar: SidecarProcess, user: str | None = "ops", password: str = PASSWORD) -> str:
    who = f"{user}:{password}@" if user is not None else ""
    return f"https://{who}127.0.0.1:{sidecar.port}"


def verdicts(results: list[Result]) -> list[tuple[str, str]]:
    return [(r.check, r.verdict) for r in results]


def check(sidecar: SidecarProcess, url: str | None = None, **tls: Any) -> dict[str, Result]:
    results = doctor.run_checks(
        Options(url=url or https_url(sidecar), window=0.5, timeout=5.0, tls=TLSOptions(**tls))
    )
    return {r.check: r for r in results}


class Spans:
    """An engine's spans to the sidecar's (plain, loopback) OTLP receiver every 0.1 s."""

    def __init__(self, sidecar: SidecarProcess) -> None:
        self.sidecar = sidecar
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.send, daemon=True)

    def send(self) -> None:
        while not self.stop.is_set():
            body = otlp.request("bot", [{"name": "fetch_ticker"}]).SerializeToString()
            http_post(
                self.sidecar.otlp_http_url + "/v1/traces",
                body,
                {"Content-Type": "application/x-protobuf"},
            )
            self.stop.wait(0.1)

    def __enter__(self) -> Spans:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)


SECURED_HEALTHY = [
    ("sidecar reachable", OK),
    ("sidecar TLS", OK),
    ("sidecar ready", OK),
    ("engine processes", SKIP),
    ("receivers accepting", OK),
    ("spans arriving", OK),
    ("shim version", SKIP),
    ("rejected or dropped", OK),
    ("cardinality", OK),
    ("clock skew", SKIP),
]


def expiry(pki: dict[str, Path]) -> float:
    cert = x509.load_pem_x509_certificate(pki["server.crt"].read_bytes())
    return cert.not_valid_after_utc.timestamp()


def test_doctor_over_tls_with_basic_auth(
    secured: SidecarProcess, pki: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    ca = pki["server.crt"]
    with Spans(secured):
        results = doctor.run_checks(
            Options(
                url=https_url(secured),
                window=0.5,
                timeout=5.0,
                tls=TLSOptions(ca_file=ca),
                renew_days=0.5,  # helpers.tls certificates last a day
            )
        )
        assert verdicts(results) == SECURED_HEALTHY, doctor.render(results)
        ends = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(expiry(pki)))
        assert results[0].detail == f"https://127.0.0.1:{secured.port} answers"
        assert (
            results[1].detail
            == f"TLSv1.3, certificate verified against --ca-file {ca}; expires {ends}"
        )
        # The command line, with the default renewal horizon (14 days): a certificate
        # that ends tomorrow is a warning, the rest passes.
        started = time.time()
        code = doctor.main([https_url(secured), "--ca-file", str(ca), "--window", "0.5"])
        ended = time.time()
    out = capsys.readouterr().out
    assert code == 1, out
    tls_lines = [line for line in out.splitlines() if "sidecar TLS" in line]
    assert tls_lines in [
        [
            f"WARN  sidecar TLS: TLSv1.3, certificate verified against --ca-file {ca}; it expires "
            f"{ends} (in {(expiry(pki) - at) / 3600:.0f} hours)"
        ]
        for at in (started, ended)
    ], out
    assert out.endswith("6 ok, 1 warnings, 0 failures, 3 skipped\n"), out
    assert PASSWORD not in out


def test_doctor_without_the_ca_file_names_it(secured: SidecarProcess) -> None:
    results = doctor.run_checks(Options(url=https_url(secured), window=0.5, timeout=5.0))
    assert verdicts(results) == [("sidecar reachable", FAIL)]
    assert results[0].detail == (
        f"https://127.0.0.1:{secured.port}: certificate verify failed: self-signed certificate"
    )
    assert results[0].fix == (
        "pass --ca-file with the CA certificate that signed the admin port's certificate"
    )


def test_doctor_insecure_skip_verify_warns(secured: SidecarProcess) -> None:
    found = check(secured, insecure_skip_verify=True)
    assert (found["sidecar TLS"].verdict, found["sidecar TLS"].detail) == (
        WARN,
        "TLSv1.3; the certificate is not verified (--insecure-skip-verify)",
    )
    assert found["sidecar ready"].verdict == OK


@pytest.mark.parametrize(
    ("user", "password", "detail", "fix"),
    [
        (
            "ops",
            "wrong",
            "user 'ops' and its password refused",
            ": check the user and password against the web config's basic_auth_users",
        ),
        (
            None,
            "",
            "no user:password in the URL",
            " (tickscope doctor https://USER:PASSWORD@HOST:9464)",
        ),
    ],
    ids=["wrong-password", "no-credentials"],
)
def test_doctor_401_says_put_user_password_in_the_url(
    secured: SidecarProcess,
    pki: dict[str, Path],
    user: str | None,
    password: str,
    detail: str,
    fix: str,
) -> None:
    results = doctor.run_checks(
        Options(
            url=https_url(secured, user, password),
            window=0.5,
            timeout=5.0,
            tls=TLSOptions(ca_file=pki["server.crt"]),
            renew_days=0.5,
        )
    )
    # /readyz answers without credentials (probes_without_auth); the status page does not.
    assert verdicts(results) == [
        ("sidecar reachable", OK),
        ("sidecar TLS", OK),
        ("sidecar ready", OK),
        ("sidecar basic auth", FAIL),
    ]
    assert results[-1].detail == (
        f"https://127.0.0.1:{secured.port}/?format=json answered HTTP 401 Unauthorized: {detail}"
    )
    assert results[-1].fix == "basic auth required: put user:password@ in the URL" + fix
    assert doctor.exit_code(results) == 2


def test_doctor_plain_http_to_the_tls_port_says_use_https(secured: SidecarProcess) -> None:
    results = doctor.run_checks(
        Options(url=f"http://ops:{PASSWORD}@127.0.0.1:{secured.port}", window=0.5, timeout=5.0)
    )
    assert verdicts(results) == [("sidecar reachable", FAIL)]
    assert results[0].detail == (
        f"http://127.0.0.1:{secured.port}: the port answers in TLS, not plain HTTP"
    )
    assert results[0].fix == "the admin port serves HTTPS: use https://"


def run_top(url: str, *options: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKSCOPE_")}
    env.pop("COLUMNS", None)
    result = subprocess.run(
        [sys.executable, "-m", "tickscope", "top", url, "--once", "--interval", "0.5", *options],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    return result.returncode, result.stdout, result.stderr


def test_top_once_over_tls_with_basic_auth(secured: SidecarProcess, pki: dict[str, Path]) -> None:
    code, out, err = run_top(https_url(secured), "--ca-file", str(pki["server.crt"]))
    assert (code, err) == (0, "")
    head = out.splitlines()[0]
    assert head.startswith("tickscope top ") and head.endswith("q quits"), out
    assert f"  https://127.0.0.1:{secured.port}  v{__version__}  rates over " in head
    assert "sidecar rss " in out and PASSWORD not in out
    code, out, err = run_top(
        https_url(secured, "ops", "wrong"), "--ca-file", str(pki["server.crt"])
    )
    assert (code, out) == (1, "")
    assert err == (
        f"tickscope top: cannot read /metrics: https://127.0.0.1:{secured.port}/metrics: HTTP 401 "
        "Unauthorized; basic auth required: put user:password@ in the URL; the ones given were "
        "refused\n"
    )
    code, out, err = run_top(https_url(secured))
    assert (code, out) == (1, "")
    assert err == (
        f"tickscope top: cannot read /metrics: https://127.0.0.1:{secured.port}/metrics: "
        "certificate verify failed: self-signed certificate; pass --ca-file with the CA "
        "certificate that signed the admin port's certificate\n"
    )


def test_client_certificate_required(mutual: SidecarProcess, pki: dict[str, Path]) -> None:
    ca = pki["server.crt"]
    without = doctor.run_checks(
        Options(url=https_url(mutual), window=0.5, timeout=5.0, tls=TLSOptions(ca_file=ca))
    )
    assert verdicts(without) == [("sidecar reachable", FAIL)]
    assert without[0].detail == (
        f"https://127.0.0.1:{mutual.port}: the connection was closed right after the TLS handshake"
    )
    assert without[0].fix == (
        "the admin port requires a client certificate: pass --cert-file and --key-file"
    )
    # A certificate the client CA did not sign (the server's own).
    stranger = check(mutual, ca_file=ca, cert_file=pki["server.crt"], key_file=pki["server.key"])[
        "sidecar reachable"
    ]
    assert (stranger.verdict, stranger.fix) == (
        FAIL,
        "the admin port refused the client certificate: it must be signed by a CA in the web "
        "config's client_ca_file",
    )
    found = check(mutual, ca_file=ca, cert_file=pki["client.crt"], key_file=pki["client.key"])
    assert [(r.check, r.verdict) for r in found.values() if r.verdict == FAIL] == []
    assert found["sidecar TLS"].detail.startswith(
        f"TLSv1.3, certificate verified against --ca-file {ca}; client certificate "
        f"{pki['client.crt']}; it expires "
    )
    assert found["receivers accepting"].verdict == OK
    client = ["--cert-file", str(pki["client.crt"]), "--key-file", str(pki["client.key"])]
    code, out, err = run_top(https_url(mutual), "--ca-file", str(ca), *client)
    assert (code, err) == (0, "")
    assert f"  https://127.0.0.1:{mutual.port}  v{__version__}  " in out.splitlines()[0]
    code, out, err = run_top(https_url(mutual), "--insecure-skip-verify", *client)
    assert (code, err) == (0, "")
    assert f"  https://127.0.0.1:{mutual.port}  TLS unverified  v{__version__}  " in out
