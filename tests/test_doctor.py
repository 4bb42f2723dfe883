"""`tickscope doctor`: the checks as pure functions over exact inputs, then broken setups
made on purpose (real sidecar processes, the Debian Prometheus and Alertmanager)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import otlp, otlp_metrics
from helpers.alerting import Alertmanager, Prometheus, free_port
from helpers.binaries import require_binary
from helpers.sidecar import ROOT, SidecarProcess, StartSidecar, http_post
from tickscope.agent import doctor
from tickscope.agent.doctor import (
    FAIL,
    OK,
    SKIP,
    WARN,
    Fetched,
    Options,
    ProbeOutcome,
    ProcessInfo,
    Result,
    Samples,
)
from tickscope.agent.version import __version__

# --- unit tests of the checks --------------------------------------------------------


def samples(text: str) -> Samples:
    return doctor.parse_metrics(text)


def test_expected_alerts_are_the_shipped_rules() -> None:
    names = sorted(
        rule["alert"]
        for path in (ROOT / "alert-rules").glob("*.rules.yml")
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    )
    assert list(doctor.EXPECTED_ALERTS) == names


def test_reachable() -> None:
    assert doctor.check_reachable("http://h:1", Fetched(200)) == Result(
        "sidecar reachable", OK, "http://h:1 answers"
    )
    assert doctor.check_reachable("http://h:1", Fetched(503)).verdict == OK
    down = doctor.check_reachable("http://h:1", Fetched(None, error="[Errno 111] refused"))
    assert (down.verdict, down.detail) == (FAIL, "http://h:1 does not answer: [Errno 111] refused")
    assert down.fix is not None and "tickscope run" in down.fix
    other = doctor.check_reachable("http://h:1", Fetched(404, b"no such page"))
    assert (other.verdict, other.detail) == (
        FAIL,
        "http://h:1/readyz answered HTTP 404: no such page",
    )


def test_reachable_over_tls_and_behind_basic_auth() -> None:
    verify = Fetched(
        None,
        error="certificate verify failed: self-signed certificate",
        fix="pass --ca-file with the CA certificate that signed the admin port's certificate",
        kind="tls_verify",
    )
    assert doctor.check_reachable("https://h:1", verify) == Result(
        "sidecar reachable",
        FAIL,
        "https://h:1: certificate verify failed: self-signed certificate",
        "pass --ca-file with the CA certificate that signed the admin port's certificate",
    )
    odd = doctor.check_reachable("https://h:1", Fetched(None, error="TLS: boom", kind="tls"))
    assert (odd.detail, odd.fix) == ("https://h:1: TLS: boom", doctor.TLS_FIX)
    # Probes behind basic auth (server.probes_without_auth: false).
    locked = doctor.check_reachable("https://h:1", Fetched(401, b"401 Unauthorized\n"))
    assert locked == Result(
        "sidecar basic auth",
        FAIL,
        "https://h:1/readyz answered HTTP 401 Unauthorized: no user:password in the URL",
        "basic auth required: put user:password@ in the URL "
        "(tickscope doctor https://USER:PASSWORD@HOST:9464)",
    )


def test_refused() -> None:
    assert doctor.refused("https://h:1/metrics", Fetched(200, b"")) is None
    wrong = doctor.refused("https://h:1/metrics", Fetched(401, b""), user="ops")
    assert wrong == Result(
        "sidecar basic auth",
        FAIL,
        "https://h:1/metrics answered HTTP 401 Unauthorized: user 'ops' and its password refused",
        "basic auth required: put user:password@ in the URL: check the user and password "
        "against the web config's basic_auth_users",
    )
    sans = Fetched(403, b"403 Forbidden: client certificate not allowed\n")
    assert doctor.refused("https://h:1/metrics", sans) == Result(
        "sidecar client certificate",
        FAIL,
        "https://h:1/metrics answered HTTP 403: client certificate not allowed",
        "none of the --cert-file certificate's subjectAltNames is in the web config's "
        "client_allowed_sans: use a certificate issued for an allowed name, or add its name",
    )
    assert doctor.refused("https://h:1/metrics", Fetched(403, b"elsewhere")) is None


def test_tls() -> None:
    from tickscope.agent.httpclient import TLSInfo, TLSOptions

    now = 1_800_000_000.0
    ca = TLSOptions(ca_file=Path("/etc/ca.crt"))
    info = TLSInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384", now + 30 * 86400)
    assert doctor.check_tls("https://h:1", ca, info, True, now) == Result(
        "sidecar TLS",
        OK,
        "TLSv1.3, certificate verified against --ca-file /etc/ca.crt; expires 2027-02-14 08:00 UTC",
    )
    mtls = TLSOptions(None, Path("c.crt"), Path("c.key"))
    soon = doctor.check_tls("https://h:1", mtls, info, True, now + 20 * 86400)
    assert (soon.verdict if soon else None, soon.detail if soon else None) == (
        WARN,
        "TLSv1.3, certificate verified against the system's CAs; client certificate c.crt; "
        "it expires 2027-02-14 08:00 UTC (in 10 days)",
    )
    hours = doctor.check_tls("https://h:1", ca, info, False, now + 29 * 86400, renew_days=2)
    assert hours is not None and hours.detail.endswith("(in 24 hours)")
    insecure = doctor.check_tls(
        "https://h:1",
        TLSOptions(insecure_skip_verify=True),
        TLSInfo("TLSv1.2", "x", None),
        False,
        now,
    )
    assert insecure is not None and (insecure.verdict, insecure.detail) == (
        WARN,
        "TLSv1.2; the certificate is not verified (--insecure-skip-verify)",
    )
    failed = doctor.check_tls("https://h:1", ca, "https://h:1: timed out after 5s", False, now)
    assert failed is not None and (failed.verdict, failed.detail) == (
        WARN,
        "the handshake for this check failed: https://h:1: timed out after 5s",
    )
    # Plain HTTP: a password sent in clear is worth a warning, unless to this machine.
    clear = doctor.check_tls("http://sidecar:9464", TLSOptions(), None, True, now)
    assert clear == Result(
        "sidecar TLS",
        WARN,
        "basic auth over plain HTTP: the password crosses the network readable",
        "serve the admin port over TLS (tls_server_config in the web config, docs/security.md) "
        "and use https://",
    )
    assert doctor.check_tls("http://127.0.0.1:9464", TLSOptions(), None, True, now) is None
    assert doctor.check_tls("http://sidecar:9464", TLSOptions(), None, False, now) is None


FIRST = "first collection not done yet"


def test_ready() -> None:
    ready = {"status": "ready", "checks": [{"name": "a", "ready": True}]}
    assert doctor.check_ready(ready) == Result("sidecar ready", OK, "ready (1 checks pass)")
    not_ready: dict[str, Any] = {
        "status": "not ready",
        "checks": [
            {"name": "admin_server", "ready": True},
            {"name": "engine:bot", "ready": False, "reason": "engine process 'bot' not running"},
        ],
    }
    starting = {
        "status": "not ready",
        "checks": [{"name": "collector:host", "ready": False, "reason": FIRST}],
    }
    assert doctor.check_ready(starting).detail == "starting: collector:host"
    assert doctor.check_ready(starting).verdict == WARN
    not_ready["checks"].append({"name": "collector:host", "ready": False, "reason": FIRST})
    result = doctor.check_ready(not_ready)
    assert (result.verdict, result.detail, result.notes) == (
        FAIL,
        "not ready: engine:bot, collector:host",
        ("engine:bot: engine process 'bot' not running", f"collector:host: {FIRST}"),
    )


PROCS = [
    ProcessInfo(10, "python3", "python3 /srv/tradebot-alfa.py --live"),
    ProcessInfo(11, "sshd", "sshd: /usr/sbin/sshd -D"),
    ProcessInfo(12, "tradebotd", "/usr/bin/tradebotd"),
    ProcessInfo(13, "bash", "bash"),
]


def test_near_matches() -> None:
    near = doctor.near_matches("command line matching 'tradebot-alpha\\.py'", PROCS)
    assert [p.pid for p in near] == [10]
    by_name = doctor.near_matches("process name 'tradebot'", PROCS)
    assert [p.pid for p in by_name] == [12, 10]  # closest first
    assert doctor.near_matches("pid file /run/bot.pid", PROCS) == []
    assert doctor.near_matches("process name 'zzzzzz'", PROCS) == []


def test_engines() -> None:
    status: dict[str, Any] = {
        "engine_processes": [
            {"name": "a", "up": True, "pid": 7, "required": True, "match": "process name 'a'"},
            {
                "name": "b",
                "up": False,
                "pid": None,
                "required": True,
                "match": "command line matching 'tradebot-alpha'",
            },
            {
                "name": "c",
                "up": False,
                "pid": None,
                "required": False,
                "match": "process name 'zz'",
            },
        ]
    }
    a, b, c = doctor.check_engines(status, PROCS)
    assert a == Result("engine process 'a'", OK, "found: pid 7 (process name 'a')")
    assert (b.verdict, b.detail) == (FAIL, "not running (command line matching 'tradebot-alpha')")
    assert b.notes == ("pid 10 python3: python3 /srv/tradebot-alfa.py --live",)
    assert (c.verdict, c.notes) == (WARN, ())
    assert c.fix is not None and c.fix.endswith("no process on this machine nearly matches")
    assert doctor.check_engines({"engine_processes": []}, PROCS) == [
        Result("engine processes", SKIP, "none configured (engine.processes)")
    ]


def test_receiver() -> None:
    on = {"spans": {"receivers": {"otlp_http": 4318, "otlp_grpc": 4317}}}
    url = "http://127.0.0.1:4318/v1/traces"
    assert doctor.check_receiver(on, ProbeOutcome(url, 200, None, True)).verdict == OK
    assert doctor.check_receiver(on, ProbeOutcome(url, 200, None, False)).verdict == FAIL
    refused = doctor.check_receiver(on, ProbeOutcome(url, None, "refused", False))
    assert (refused.verdict, refused.detail) == (
        FAIL,
        f"test span to {url} not delivered: refused",
    )
    grpc_only = doctor.check_receiver({"spans": {"receivers": {"otlp_grpc": 4317}}}, None)
    assert (grpc_only.verdict, grpc_only.detail) == (
        WARN,
        "the OTLP/HTTP receiver is off (receiving on otlp_grpc :4317); no test span sent",
    )
    none = doctor.check_receiver({}, None)
    assert (none.verdict, none.detail) == (
        FAIL,
        "no span receiver is on: spans cannot reach the sidecar",
    )


ACCEPTED = 'tickscope_receiver_accepted_spans_total{{receiver="otlp_http"}} {}\n'
OURS = 'traces_span_metrics_calls_total{{service_name="tickscope-doctor"}} {}\n'


def test_arrivals() -> None:
    zero = samples(ACCEPTED.format(0))
    assert doctor.check_arrivals(zero, samples(ACCEPTED.format(5)), 2.0) == Result(
        "spans arriving", OK, "5 spans in the last 2s (5 in all)"
    )
    idle = doctor.check_arrivals(zero, zero, 2.0)
    assert (idle.verdict, idle.detail) == (WARN, "no span received since the sidecar started")
    # The doctor's own earlier test span does not count as the engine's.
    own = samples(ACCEPTED.format(1) + OURS.format(1))
    assert doctor.check_arrivals(own, own, 2.0).detail == (
        "no span received since the sidecar started"
    )
    old = samples(ACCEPTED.format(9))
    assert doctor.check_arrivals(old, old, 1.5).detail == (
        "no span in the last 1.5s (9 since the sidecar started)"
    )
    assert doctor.check_arrivals(samples(""), samples(""), 2.0).verdict == SKIP


BUILD = 'tickscope_build_info{{version="{}"}} 1\n'


def test_versions() -> None:
    same = samples(
        BUILD.format("0.3.0") + 'target_info{job="bot",telemetry_distro_version="0.3.0"} 1\n'
    )
    assert doctor.check_versions(same) == Result("shim version", OK, "shim 0.3.0 = sidecar 0.3.0")
    differs = doctor.check_versions(
        samples(
            BUILD.format("0.3.0")
            + 'target_info{job="bot",telemetry_distro_version="0.2.1"} 1\n'
            + 'target_info{job="mm",telemetry_distro_version="0.3.0"} 1\n'
        )
    )
    assert (differs.verdict, differs.detail) == (
        WARN,
        "shim 0.2.1 (bot) differs from sidecar 0.3.0",
    )
    assert doctor.check_versions(samples(BUILD.format("0.3.0"))).verdict == SKIP


def test_rejections() -> None:
    clean = samples(
        'tickscope_receiver_rejected_spans_total{reason="invalid_span",receiver="otlp_http"} 0\n'
        'tickscope_pipeline_dropped_spans_total{reason="shutdown"} 0\n'
    )
    assert doctor.check_rejections(clean) == Result(
        "rejected or dropped", OK, "none since the sidecar started"
    )
    text = (
        'tickscope_receiver_rejected_spans_total{{reason="invalid_span",receiver="otlp_http"}} 2\n'
        'tickscope_receiver_rejected_spans_total{{reason="invalid_span",receiver="otlp_grpc"}} 1\n'
        'tickscope_receiver_rejected_requests_total{{reason="malformed",receiver="otlp_http"}} 4\n'
        'tickscope_forward_dropped_spans_total{{reason="buffer_full"}} {}\n'
    )
    bad = doctor.check_rejections(samples(text.format(10)))
    assert (bad.verdict, bad.detail) == (
        WARN,
        "17 since the sidecar started: 3 invalid_span, 4 malformed, 10 buffer_full",
    )
    assert bad.notes[2].startswith("10 spans not forwarded (buffer_full): the forward upstream")
    rising = doctor.check_rejections(samples(text.format(10)), samples(text.format(4)), 2.0)
    assert rising.detail.endswith("; still rising")
    assert rising.notes[2].startswith("10 spans not forwarded (buffer_full, 6 in the last 2s): ")
    assert rising.notes[0].startswith("3 spans rejected (invalid_span): ")
    past = doctor.check_rejections(samples(text.format(10)), samples(text.format(10)), 2.0)
    assert (past.verdict, past.detail) == (
        WARN,
        "17 since the sidecar started: 3 invalid_span, 4 malformed, 10 buffer_full; "
        "none in the watch window",
    )


def test_cardinality() -> None:
    base = "tickscope_spanmetrics_series_limit 100\ntickscope_spanmetrics_overflow_total {}\n"
    fine = samples("tickscope_spanmetrics_series 10\n" + base.format(0))
    assert doctor.check_cardinality(fine) == Result(
        "cardinality", OK, "span metrics 10/100 series, no overflow"
    )
    near = doctor.check_cardinality(samples("tickscope_spanmetrics_series 85\n" + base.format(0)))
    assert (near.verdict, near.detail) == (
        WARN,
        "span metrics 85/100 series; span metrics at 85% of spanmetrics.max_series",
    )
    over = doctor.check_cardinality(
        samples(
            "tickscope_spanmetrics_series 100\n"
            + base.format(7)
            + 'tickscope_trading_overflow_total{metric="trading_orders_total"} 3\n'
        )
    )
    assert over.detail == (
        "span metrics 100/100 series; span metrics overflowed 7 times; "
        "trading metrics overflowed: trading_orders_total 3"
    )


def test_clock_skew() -> None:
    def skew(value: float, uncertainty: float = 0.0) -> Result:
        return doctor.check_clock_skew(
            samples(
                f'exchange_clock_skew_seconds{{exchange="binance"}} {value}\n'
                f'exchange_clock_skew_uncertainty_seconds{{exchange="binance"}} {uncertainty}\n'
            )
        )

    assert skew(0.05) == Result("clock skew", OK, "binance +0.050s")
    assert (skew(-0.7).verdict, skew(-0.7).detail) == (WARN, "beyond 0.5s: binance -0.700s")
    assert (skew(1.6).verdict, skew(1.6).detail) == (FAIL, "beyond 1s: binance +1.600s")
    assert skew(1.6, uncertainty=0.9).verdict == WARN  # 0.7 s for certain
    assert doctor.check_clock_skew(samples("")).verdict == SKIP


def test_config(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("server: {port: 9464}\n")
    assert doctor.check_config(str(good)) == Result("config file", OK, f"{good}: valid")
    bad = tmp_path / "bad.yaml"
    bad.write_text("server: {port: 9464, prot: 1}\nspanmetrics: {max_series: -1}\n")
    result = doctor.check_config(str(bad))
    assert (result.verdict, result.detail) == (FAIL, f"{bad}: invalid (2 problems)")
    # The same lines check-config prints.
    checked = subprocess.run(
        [sys.executable, "-m", "tickscope", "check-config", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert checked.returncode == 2
    assert [line.strip() for line in checked.stderr.splitlines()[1:]] == list(result.notes)


def target(url: str, health: str = "up", job: str = "tickscope", error: str = "") -> dict[str, Any]:
    return {"scrapeUrl": url, "health": health, "labels": {"job": job}, "lastError": error}


def test_prometheus_target() -> None:
    def check(*targets: dict[str, Any]) -> Result:
        answer = {"data": {"activeTargets": list(targets)}}
        return doctor.check_prometheus_target(answer, "http://localhost:9464")

    assert check(target("http://127.0.0.1:9464/metrics")).verdict == OK
    missing = check(target("http://127.0.0.1:9100/metrics", job="node"))
    assert (missing.verdict, missing.detail) == (
        FAIL,
        "127.0.0.1:9464 is not among its 1 targets (jobs: node)",
    )
    down = check(target("http://127.0.0.1:9464/metrics", "down", error="connection refused"))
    assert (down.verdict, down.detail) == (
        FAIL,
        "target http://127.0.0.1:9464/metrics is down: connection refused",
    )
    wrong_job = check(target("http://127.0.0.1:9464/metrics", job="sidecar"))
    assert (wrong_job.verdict, wrong_job.detail) == (WARN, "up, but under job 'sidecar'")
    # An HTTPS admin port: the scrape config needs its scheme, CA and credentials too.
    https = doctor.check_prometheus_target(
        {"data": {"activeTargets": []}}, "https://ops:pw@localhost:9464"
    )
    assert https.fix is not None and https.fix.endswith(
        "serviceMonitor.enabled=true); the admin port serves HTTPS: also scheme: https, "
        "tls_config: {ca_file: CA} and basic_auth as its web config needs (docs/security.md)"
    )
    assert "pw" not in https.detail + https.fix


def rules(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"data": {"groups": [{"name": "g", "rules": list(entries)}]}}


def test_rules_loaded_and_health() -> None:
    every = [{"name": n, "type": "alerting", "health": "ok"} for n in doctor.EXPECTED_ALERTS]
    assert doctor.check_rules_loaded(rules(*every)).verdict == OK
    some = doctor.check_rules_loaded(rules(*every[2:]))
    missing = ", ".join(doctor.EXPECTED_ALERTS[:2])
    n = len(doctor.EXPECTED_ALERTS)
    assert (some.verdict, some.detail) == (FAIL, f"2 of {n} tickscope alerts missing: {missing}")
    assert doctor.check_rules_loaded({}).detail == f"none of the {n} tickscope alerts loaded"
    assert doctor.check_rule_health(rules(*every)).verdict == OK
    broken = {**every[0], "health": "err", "lastError": "many-to-many matching not allowed"}
    unrelated = {"name": "Theirs", "type": "alerting", "health": "err", "lastError": "x"}
    result = doctor.check_rule_health(rules(broken, unrelated, *every[1:]))
    assert (result.verdict, result.detail, result.notes) == (
        FAIL,
        f"1 rules fail to evaluate: {every[0]['name']}",
        (f"{every[0]['name']}: many-to-many matching not allowed",),
    )


def test_alertmanagers() -> None:
    url = "http://127.0.0.1:9093/api/v2/alerts"
    answer = {"data": {"activeAlertmanagers": [{"url": url}], "droppedAlertmanagers": []}}
    assert doctor.check_alertmanagers(answer, {url: None}) == Result(
        "alertmanager connected", OK, url
    )
    down = doctor.check_alertmanagers(answer, {url: "connection refused"})
    assert (down.verdict, down.detail) == (
        FAIL,
        f"configured but not answering: {url} (connection refused)",
    )
    none = doctor.check_alertmanagers({"data": {"activeAlertmanagers": []}})
    assert (none.verdict, none.detail) == (FAIL, "Prometheus has no Alertmanager")


def test_exit_code_and_render() -> None:
    ok = Result("a", OK, "fine")
    warn = Result("b", WARN, "meh", "do x")
    fail = Result("c", FAIL, "broken", "do y", ("note 1",))
    skip = Result("d", SKIP, "n/a")
    assert doctor.exit_code([ok, skip]) == 0
    assert doctor.exit_code([ok, warn, skip]) == 1
    assert doctor.exit_code([warn, fail]) == 2
    assert doctor.render([ok, warn, fail, skip]) == (
        "ok    a: fine\n"
        "WARN  b: meh\n"
        "      fix: do x\n"
        "FAIL  c: broken\n"
        "      fix: do y\n"
        "        note 1\n"
        "SKIP  d: n/a\n"
        "\n"
        "1 ok, 1 warnings, 1 failures, 1 skipped\n"
    )


# --- broken setups made on purpose ---------------------------------------------------


def verdicts(results: list[Result]) -> list[tuple[str, str]]:
    return [(r.check, r.verdict) for r in results]


def by_check(results: list[Result]) -> dict[str, Result]:
    return {r.check: r for r in results}


def options(sidecar: SidecarProcess, **kw: Any) -> Options:
    return Options(url=sidecar.url, window=1.0, timeout=5.0, **kw)


@contextlib.contextmanager
def process(word: str) -> Iterator[subprocess.Popen[bytes]]:
    """A stand-in engine whose command line ends with `word`."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", word],
        stdin=subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(5)


@contextlib.contextmanager
def engine_traffic(sidecar: SidecarProcess) -> Iterator[None]:
    """An engine's spans, every 0.1 s, and once its shim's metrics (the shim's
    version in the resource, a measured exchange clock)."""
    metrics = otlp_metrics.request(
        otlp_metrics.gauge(
            "exchange.clock.skew",
            otlp_metrics.number_point(0.05, time.time(), attributes={"exchange": "binance"}),
            unit="s",
        ),
        resource={"service.name": "bot", "telemetry.distro.version": __version__},
        scope=("tickscope.shim.ccxt", __version__),
    )
    answer = http_post(
        sidecar.otlp_http_url + "/v1/metrics",
        metrics.SerializeToString(),
        {"Content-Type": "application/x-protobuf"},
    )
    assert answer.status == 200, answer.text
    stop = threading.Event()

    def send() -> None:
        while not stop.is_set():
            body = otlp.request("bot", [{"name": "fetch_ticker"}]).SerializeToString()
            http_post(
                sidecar.otlp_http_url + "/v1/traces",
                body,
                {"Content-Type": "application/x-protobuf"},
            )
            stop.wait(0.1)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


ENGINE = {"engine": {"processes": [{"name": "engine", "cmdline": "tradebot-alpha"}]}}

HEALTHY_SIDECAR = [
    ("sidecar reachable", OK),
    ("sidecar ready", OK),
    ("engine process 'engine'", OK),
    ("receivers accepting", OK),
    ("spans arriving", OK),
    ("shim version", OK),
    ("rejected or dropped", OK),
    ("cardinality", OK),
    ("clock skew", OK),
]


def test_healthy_sidecar_exits_0(
    start_sidecar: StartSidecar, capsys: pytest.CaptureFixture[str]
) -> None:
    with process("tradebot-alpha") as engine:
        sidecar = start_sidecar(ENGINE)
        sidecar.wait_until(lambda: sidecar.get("/readyz").status == 200, what="the engine found")
        with engine_traffic(sidecar):
            results = doctor.run_checks(options(sidecar))
            assert verdicts(results) == HEALTHY_SIDECAR, doctor.render(results)
            found = by_check(results)
            assert found["engine process 'engine'"].detail == (
                f"found: pid {engine.pid} (command line matching 'tradebot-alpha')"
            )
            assert found["shim version"].detail == f"shim {__version__} = sidecar {__version__}"
            assert found["clock skew"].detail == "binance +0.050s"
            # The command line: the same checks, the exit code.
            assert doctor.main([sidecar.url, "--window", "1"]) == 0
    out = capsys.readouterr().out
    assert out.endswith("9 ok, 0 warnings, 0 failures, 0 skipped\n"), out


def test_sidecar_down(start_sidecar: StartSidecar) -> None:
    sidecar = start_sidecar()
    url = sidecar.url
    assert sidecar.stop() == 0
    results = doctor.run_checks(Options(url=url, window=1.0, timeout=5.0))
    assert verdicts(results) == [("sidecar reachable", FAIL)]
    assert results[0].detail == f"{url} does not answer: [Errno 111] Connection refused"
    assert doctor.exit_code(results) == 2


def test_engine_missing_names_the_near_match(start_sidecar: StartSidecar) -> None:
    with process("tradebot-alfa") as lookalike:
        sidecar = start_sidecar(ENGINE)
        sidecar.wait_until(
            lambda: (
                "engine:engine" in sidecar.get("/readyz").text
                and "first collection" not in sidecar.get("/readyz").text
            ),
            what="the first collections",
        )
        results = doctor.run_checks(options(sidecar))
    found = by_check(results)
    assert verdicts(results) == [
        ("sidecar reachable", OK),
        ("sidecar ready", FAIL),
        ("engine process 'engine'", FAIL),
        ("receivers accepting", OK),
        ("spans arriving", WARN),
        ("shim version", SKIP),
        ("rejected or dropped", OK),
        ("cardinality", OK),
        ("clock skew", SKIP),
    ]
    assert found["sidecar ready"].notes == (
        "engine:engine: engine process 'engine' (command line matching 'tradebot-alpha') "
        "not running",
    )
    missing = found["engine process 'engine'"]
    assert missing.detail == "not running (command line matching 'tradebot-alpha')"
    assert len(missing.notes) == 1 and missing.notes[0].startswith(f"pid {lookalike.pid} ")
    assert missing.notes[0].endswith("import time; time.sleep(120) tradebot-alfa")
    assert doctor.exit_code(results) == 2


@pytest.mark.parametrize(
    ("receiver", "verdict", "code"),
    [
        ({"http": {"enabled": False}}, WARN, 1),
        ({"http": {"enabled": False}, "grpc": {"enabled": False}}, FAIL, 2),
    ],
    ids=["http-off", "both-off"],
)
def test_receiver_off(
    start_sidecar: StartSidecar, receiver: dict[str, Any], verdict: str, code: int
) -> None:
    sidecar = start_sidecar({"receiver": receiver})
    results = doctor.run_checks(options(sidecar))
    found = by_check(results)
    assert found["receivers accepting"].verdict == verdict
    assert [r for r in verdicts(results) if r[1] != OK and r[1] != SKIP] == (
        [("receivers accepting", WARN), ("spans arriving", WARN)]
        if verdict == WARN
        else [("receivers accepting", FAIL)]
    )
    assert doctor.exit_code(results) == code


# --- with Prometheus -----------------------------------------------------------------


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Alertmanager]:
    binary = require_binary("prometheus-alertmanager")
    config = {"route": {"receiver": "null"}, "receivers": [{"name": "null"}]}
    am = Alertmanager(binary, tmp_path_factory.mktemp("am"), config)
    am.start()
    yield am
    am.stop()


@contextlib.contextmanager
def prometheus(
    directory: Path,
    targets: list[str],
    alertmanager: Alertmanager,
    with_rules: bool,
    broken: dict[str, str] | None = None,
) -> Iterator[Prometheus]:
    """Prometheus scraping `targets` with the shipped rules (or none), an alert's
    expression replaced where `broken` says."""
    rules = directory / "rules"
    rules.mkdir()
    if with_rules:
        for path in (ROOT / "alert-rules").glob("*.rules.yml"):
            document = yaml.safe_load(path.read_text())
            for group in document["groups"]:
                for rule in group["rules"]:
                    rule["expr"] = (broken or {}).get(rule.get("alert"), rule["expr"])
            (rules / path.name).write_text(yaml.safe_dump(document, sort_keys=False))
    prom = Prometheus(
        require_binary("prometheus"),
        directory,
        rules,
        targets,
        f"127.0.0.1:{alertmanager.port}",
    )
    try:
        prom.start()
        yield prom
    finally:
        prom.stop()


def _until_scraped(prom: Prometheus, sidecar: SidecarProcess) -> None:
    prom.wait(
        lambda: prom.value(f'up{{instance="127.0.0.1:{sidecar.port}"}}') == 1,
        30,
        "the sidecar scraped",
    )
    _until_alertmanager(prom)


def _until_alertmanager(prom: Prometheus) -> None:
    prom.wait(
        lambda: (
            (prom.get("/api/v1/alertmanagers") or {}).get("data", {}).get("activeAlertmanagers")
        ),
        30,
        "the Alertmanager discovered",
    )


PROM_CHECKS = [
    "prometheus scrapes the sidecar",
    "prometheus rules loaded",
    "prometheus rule evaluation",
    "alertmanager connected",
]


def test_with_prometheus_healthy(
    start_sidecar: StartSidecar, tmp_path: Path, alertmanager: Alertmanager
) -> None:
    sidecar = start_sidecar()
    with prometheus(tmp_path, [f"127.0.0.1:{sidecar.port}"], alertmanager, True) as prom:
        _until_scraped(prom, sidecar)
        results = doctor.run_checks(options(sidecar, prometheus=prom.url))
    tail = results[-4:]
    assert verdicts(tail) == [(name, OK) for name in PROM_CHECKS], doctor.render(results)
    assert tail[0].detail == f"target http://127.0.0.1:{sidecar.port}/metrics up (job tickscope)"
    assert tail[1].detail == f"all {len(doctor.EXPECTED_ALERTS)} tickscope alerts loaded"
    assert tail[3].detail == f"http://127.0.0.1:{alertmanager.port}/api/v2/alerts"


def test_prometheus_not_scraping_the_sidecar(
    start_sidecar: StartSidecar, tmp_path: Path, alertmanager: Alertmanager
) -> None:
    sidecar = start_sidecar()
    elsewhere = free_port()
    with prometheus(tmp_path, [f"127.0.0.1:{elsewhere}"], alertmanager, True) as prom:
        _until_alertmanager(prom)
        results = doctor.run_checks(options(sidecar, prometheus=prom.url))
    tail = results[-4:]
    assert verdicts(tail) == list(zip(PROM_CHECKS, [FAIL, OK, OK, OK], strict=True))
    assert (
        tail[0].detail == f"127.0.0.1:{sidecar.port} is not among its 1 targets (jobs: tickscope)"
    )
    assert tail[0].fix is not None and f"['127.0.0.1:{sidecar.port}']" in tail[0].fix
    assert doctor.exit_code(results) == 2


def test_prometheus_without_the_rules(
    start_sidecar: StartSidecar, tmp_path: Path, alertmanager: Alertmanager
) -> None:
    sidecar = start_sidecar()
    with prometheus(tmp_path, [f"127.0.0.1:{sidecar.port}"], alertmanager, False) as prom:
        _until_scraped(prom, sidecar)
        results = doctor.run_checks(options(sidecar, prometheus=prom.url))
    tail = results[-4:]
    assert verdicts(tail) == list(zip(PROM_CHECKS, [OK, FAIL, OK, OK], strict=True))
    n = len(doctor.EXPECTED_ALERTS)
    assert tail[1].detail == f"none of the {n} tickscope alerts loaded"
    assert doctor.exit_code(results) == 2


def test_prometheus_down(start_sidecar: StartSidecar) -> None:
    sidecar = start_sidecar()
    url = f"http://127.0.0.1:{free_port()}"
    results = doctor.run_checks(options(sidecar, prometheus=url))
    assert verdicts(results[-1:]) == [("prometheus reachable", FAIL)]
    assert doctor.exit_code(results) == 2


def test_prometheus_rule_failing_to_evaluate(
    start_sidecar: StartSidecar, tmp_path: Path, alertmanager: Alertmanager
) -> None:
    sidecar = start_sidecar()
    # Dropping the metric name leaves two series with one label set: a runtime error
    # ("vector cannot contain metrics with the same labelset") at every evaluation.
    broken = {"TickscopeDown": '{__name__=~"up|scrape_samples_scraped"} * 1 > 0'}
    target = [f"127.0.0.1:{sidecar.port}"]
    with prometheus(tmp_path, target, alertmanager, True, broken) as prom:
        _until_scraped(prom, sidecar)
        prom.wait(
            lambda: any(
                r.get("health") == "err"
                for g in prom.get("/api/v1/rules")["data"]["groups"]
                for r in g["rules"]
            ),
            30,
            "the broken rule evaluated",
        )
        results = doctor.run_checks(options(sidecar, prometheus=prom.url))
    tail = results[-4:]
    assert verdicts(tail) == list(zip(PROM_CHECKS, [OK, OK, FAIL, OK], strict=True))
    assert tail[2].detail == "1 rules fail to evaluate: TickscopeDown"
    assert tail[2].notes == ("TickscopeDown: vector cannot contain metrics with the same labelset",)


def test_rejected_requests_named_with_their_reason(start_sidecar: StartSidecar) -> None:
    sidecar = start_sidecar()
    answer = http_post(
        sidecar.otlp_http_url + "/v1/traces",
        b"\xff\xff not OTLP",
        {"Content-Type": "application/x-protobuf"},
    )
    assert answer.status == 400
    results = doctor.run_checks(options(sidecar))
    found = by_check(results)["rejected or dropped"]
    assert (found.verdict, found.detail) == (
        WARN,
        "1 since the sidecar started: 1 malformed; none in the watch window",
    )
    assert found.notes == (
        "1 requests rejected (malformed): a client sends bodies that are not OTLP; "
        "the sidecar's log names the peer",
    )
    assert doctor.exit_code(results) == 1
