"""`tickscope doctor [URL]`: check a running setup and say what is wrong and how to fix it.

Each check is a small pure function over data fetched once (the sidecar's /readyz,
status JSON and /metrics, this machine's processes, Prometheus' API answers), so
that the tests give it exact inputs; `run_checks` does the fetching (through httpclient.py:
basic auth from `user:password@` in the URL, and the TLS options for an admin port that serves
HTTPS). Verdicts: ok, warn, fail, and skip (the check does not apply: no shim metrics to
compare, no exchange clock measured). Exit code 0 (all ok or skipped), 1 (warnings),
2 (failures, or a TLS option or URL that cannot be used).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tickscope.agent import httpclient
from tickscope.agent.httpclient import Client, OptionError, RequestError, TLSInfo, TLSOptions

__all__ = [
    "EXPECTED_ALERTS",
    "Fetched",
    "ProbeOutcome",
    "ProcessInfo",
    "Result",
    "Samples",
    "add_parser",
    "check_alertmanagers",
    "check_arrivals",
    "check_cardinality",
    "check_clock_skew",
    "check_config",
    "check_engines",
    "check_prometheus_target",
    "check_reachable",
    "check_ready",
    "check_receiver",
    "check_rejections",
    "check_rule_health",
    "check_rules_loaded",
    "check_tls",
    "check_versions",
    "exit_code",
    "main",
    "near_matches",
    "parse_metrics",
    "render",
    "run",
    "run_checks",
]

DEFAULT_URL = "http://127.0.0.1:9464"
DOCTOR_SERVICE = "tickscope-doctor"
DOCTOR_SPAN = "tickscope.doctor.probe"

# The alerts alert-rules/*.rules.yml define (tests/test_doctor.py keeps this in step).
EXPECTED_ALERTS: tuple[str, ...] = (
    "BalanceDrawdown",
    "EngineDown",
    "EngineFileDescriptorsHigh",
    "EngineLoopStalled",
    "EngineMemoryLeakSuspected",
    "EngineOOMImminent",
    "EngineRestarting",
    "EngineTooManyThreads",
    "ExchangeClockSkew",
    "ExchangeErrorRate",
    "ExchangeHighLatency",
    "ExchangeRateLimitNearlyExhausted",
    "ExchangeRateLimited",
    "ExchangeTimestampRejections",
    "ExchangeUnreachable",
    "HostCpuBusy",
    "HostFileDescriptorsHigh",
    "HostFilesystemAlmostFull",
    "HostFilesystemFillingUp",
    "HostFilesystemFull",
    "HostHighLoad",
    "HostMemoryCritical",
    "HostMemoryLow",
    "HostSwapUsage",
    "MarketDataStale",
    "OrderRejectionRate",
    "OrdersOpenTooLong",
    "TickscopeDown",
    "TickscopeDroppingSpans",
    "TickscopeForwarderFailing",
    "TickscopeMetricsAbsent",
    "TickscopeRejectingSpans",
    "TickscopeSpanMetricsOverflow",
    "WebsocketReconnectStorm",
)

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
_RANK = {OK: 0, SKIP: 0, WARN: 1, FAIL: 2}


@dataclass(frozen=True, slots=True)
class Result:
    check: str
    verdict: str  # ok | warn | fail | skip
    detail: str
    fix: str | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Fetched:
    """One HTTP GET: the status and body, or why there was none (`kind`, httpclient's:
    connect, timeout, tls_verify, http_on_tls, ...; `fix`: what to do, when it is known)."""

    status: int | None
    body: bytes = b""
    error: str | None = None
    fix: str | None = None
    kind: str | None = None

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    pid: int
    name: str
    cmdline: str


@dataclass(frozen=True, slots=True)
class ProbeOutcome:
    """The test span: where it went, how the receiver answered, whether it was counted."""

    url: str
    status: int | None
    error: str | None
    counted: bool


# sample name -> [(labels, value)]
Samples = dict[str, list[tuple[dict[str, str], float]]]


# --- parsing -----------------------------------------------------------------------


def parse_metrics(text: str) -> Samples:
    from prometheus_client.parser import text_string_to_metric_families

    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
    return samples


def _total(samples: Samples, name: str, **labels: str) -> float:
    return sum(
        v
        for lab, v in samples.get(name, [])
        if all(lab.get(k) == want for k, want in labels.items())
    )


def _by(samples: Samples, name: str, *keys: str) -> dict[tuple[str, ...], float]:
    out: dict[tuple[str, ...], float] = {}
    for lab, v in samples.get(name, []):
        key = tuple(lab.get(k, "") for k in keys)
        out[key] = out.get(key, 0.0) + v
    return out


def _n(value: float) -> str:
    return f"{value:.0f}" if value == int(value) else f"{value:g}"


# --- the sidecar -------------------------------------------------------------------


AUTH_FIX = "basic auth required: put user:password@ in the URL"
AUTH_EXAMPLE = " (tickscope doctor https://USER:PASSWORD@HOST:9464)"
TLS_FIX = (
    "check the TLS options (--ca-file, --cert-file, --key-file) against the web config's "
    "tls_server_config"
)


def refused(where: str, answer: Fetched, user: str | None = None) -> Result | None:
    """The admin port's guard said no: 401 (basic auth) or 403 (a client certificate not in
    client_allowed_sans). `user`: the one in the URL, None when it had none."""
    if answer.status == 401:
        if user is None:
            return Result(
                "sidecar basic auth",
                FAIL,
                f"{where} answered HTTP 401 Unauthorized: no user:password in the URL",
                AUTH_FIX + AUTH_EXAMPLE,
            )
        return Result(
            "sidecar basic auth",
            FAIL,
            f"{where} answered HTTP 401 Unauthorized: user {user!r} and its password refused",
            AUTH_FIX + ": check the user and password against the web config's basic_auth_users",
        )
    if answer.status == 403 and b"client certificate" in answer.body:
        return Result(
            "sidecar client certificate",
            FAIL,
            f"{where} answered HTTP 403: client certificate not allowed",
            "none of the --cert-file certificate's subjectAltNames is in the web config's "
            "client_allowed_sans: use a certificate issued for an allowed name, or add its name",
        )
    return None


def check_reachable(url: str, readyz: Fetched, user: str | None = None) -> Result:
    name = "sidecar reachable"
    guard = refused(f"{url}/readyz", readyz, user)
    if guard is not None:
        return guard
    if readyz.status is None and (readyz.fix or readyz.kind not in (None, "connect", "timeout")):
        # It answered, but not in a way HTTP can use: TLS refused or not spoken.
        return Result(name, FAIL, f"{url}: {readyz.error}", readyz.fix or TLS_FIX)
    if readyz.status is None:
        return Result(
            name,
            FAIL,
            f"{url} does not answer: {readyz.error}",
            "start the sidecar (`tickscope run --config FILE`, or check the pod: "
            "`kubectl logs POD -c tickscope`), or give its admin address: "
            "`tickscope doctor http://HOST:9464`",
        )
    if readyz.status in (200, 503):
        return Result(name, OK, f"{url} answers")
    return Result(
        name,
        FAIL,
        f"{url}/readyz answered HTTP {readyz.status}: {readyz.body[:200].decode(errors='replace')}",
        "is this the sidecar's admin address (server.port, 9464 by default)?",
    )


_LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _when(seconds: float) -> str:
    hours = seconds / 3600
    return f"in {hours / 24:.0f} days" if hours >= 48 else f"in {hours:.0f} hours"


def check_tls(
    url: str,
    tls: TLSOptions,
    info: TLSInfo | str | None,
    credentials: bool,
    now: float,
    renew_days: float = 14.0,
) -> Result | None:
    """How the admin port was reached. `info`: the handshake (a str: why it failed; None for
    plain HTTP); `credentials`: the URL had user:password@. None when there is nothing to
    say (plain HTTP without a password, or to this machine)."""
    name = "sidecar TLS"
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https":
        if credentials and (parts.hostname or "").lower() not in _LOOPBACK:
            return Result(
                name,
                WARN,
                "basic auth over plain HTTP: the password crosses the network readable",
                "serve the admin port over TLS (tls_server_config in the web config, "
                "docs/security.md) and use https://",
            )
        return None
    if info is None or isinstance(info, str):
        return Result(name, WARN, f"the handshake for this check failed: {info}", TLS_FIX)
    if tls.insecure_skip_verify:
        return Result(
            name,
            WARN,
            f"{info.version}; the certificate is not verified (--insecure-skip-verify)",
            "pass --ca-file with the CA certificate that signed the admin port's certificate, "
            "so that a wrong or swapped one is noticed",
        )
    detail = f"{info.version}, certificate {tls.describe()}"
    if info.not_after is None:
        return Result(name, OK, detail)
    ends = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(info.not_after))
    left = info.not_after - now
    if left < renew_days * 86400:
        return Result(
            name,
            WARN,
            f"{detail}; it expires {ends} ({_when(left)})",
            "renew tls_server_config's certificate and restart the sidecar (it reads the web "
            "config once, at startup)",
        )
    return Result(name, OK, f"{detail}; expires {ends}")


def check_ready(readyz: Mapping[str, Any]) -> Result:
    name = "sidecar ready"
    checks = readyz.get("checks") or []
    failing = [c for c in checks if not c.get("ready")]
    if readyz.get("status") == "ready" and not failing:
        return Result(name, OK, f"ready ({len(checks)} checks pass)")
    notes = tuple(f"{c.get('name')}: {c.get('reason') or 'not ready'}" for c in failing)
    if failing and all("first collection not done yet" in str(c.get("reason")) for c in failing):
        return Result(
            name,
            WARN,
            "starting: " + ", ".join(str(c.get("name")) for c in failing),
            "the first collections run within a collection interval of startup: run the "
            "doctor again in a few seconds",
            notes,
        )
    return Result(
        name,
        FAIL,
        "not ready: " + ", ".join(str(c.get("name")) for c in failing),
        "see the reasons below and the checks that follow (an engine process that is not "
        "running keeps /readyz at 503 while it is required)",
        notes,
    )


_MATCH = re.compile(r"^(process name|command line matching) '(.*)'$")


def _needle(match: str) -> str | None:
    """The text to look for: the process name, or the longest literal run of the
    command-line pattern (escapes read, metacharacters and classes as breaks)."""
    found = _MATCH.match(match)
    if found is None:
        return None
    text = found.group(2)
    if found.group(1) == "process name":
        return text or None
    runs, run, chars = [], [], iter(text)
    for ch in chars:
        if ch == "\\":
            nxt = next(chars, "")
            if nxt and not nxt.isalnum():
                run.append(nxt)
                continue
        elif ch not in "^$.*+?()[]{}|":
            run.append(ch)
            continue
        runs.append("".join(run))
        run = []
    runs.append("".join(run))
    longest = max(runs, key=len).strip()
    return longest or None


def near_matches(
    match: str, processes: Iterable[ProcessInfo], limit: int = 5, cutoff: float = 0.7
) -> list[ProcessInfo]:
    """The processes whose name or a command-line word nearly matches the configured
    process name or command-line pattern (`match`, as the status JSON describes it)."""
    import difflib

    needle = _needle(match)
    if needle is None:
        return []
    low = needle.lower()
    scored: list[tuple[float, int, ProcessInfo]] = []
    for proc in processes:
        words = {proc.name, *proc.cmdline.split()}
        words |= {os.path.basename(w) for w in list(words)}
        best = 0.0
        for word in words:
            w = word.lower()
            if not w:
                continue
            if low in w or (len(w) >= 3 and w in low):
                best = max(best, 0.9)
            best = max(best, difflib.SequenceMatcher(None, low, w).ratio())
        if best >= cutoff:
            scored.append((best, proc.pid, proc))
    scored.sort(key=lambda t: (-t[0], t[1]))
    return [p for _, _, p in scored[:limit]]


def check_engines(status: Mapping[str, Any], processes: Sequence[ProcessInfo]) -> list[Result]:
    configured = status.get("engine_processes") or []
    if not configured:
        return [
            Result(
                "engine processes",
                SKIP,
                "none configured (engine.processes)",
            )
        ]
    results = []
    for p in configured:
        name = f"engine process {p.get('name')!r}"
        match = str(p.get("match", ""))
        if p.get("up"):
            results.append(Result(name, OK, f"found: pid {p.get('pid')} ({match})"))
            continue
        near = near_matches(match, processes)
        notes = tuple(f"pid {q.pid} {q.name}: {q.cmdline[:100]}" for q in near)
        reason = f"; {p['reason']}" if p.get("reason") else ""
        fix = (
            "start the engine, or correct engine.processes["
            f"name={p.get('name')}] ({match}) to match it"
        )
        if near:
            fix += "; nearly matching processes on this machine are listed below"
        else:
            fix += "; no process on this machine nearly matches"
        results.append(
            Result(
                name,
                FAIL if p.get("required", True) else WARN,
                f"not running ({match}){reason}",
                fix,
                notes,
            )
        )
    return results


def check_receiver(status: Mapping[str, Any], probe: ProbeOutcome | None) -> Result:
    name = "receivers accepting"
    receivers = (status.get("spans") or {}).get("receivers") or {}
    if "otlp_http" not in receivers:
        others = ", ".join(f"{k} :{v}" for k, v in receivers.items())
        if others:
            return Result(
                name,
                WARN,
                f"the OTLP/HTTP receiver is off (receiving on {others}); no test span sent",
                "the shim's exporter sends OTLP/HTTP: set receiver.http.enabled: true, or send "
                "OTLP/gRPC from every engine (OTEL_EXPORTER_OTLP_PROTOCOL=grpc)",
            )
        return Result(
            name,
            FAIL,
            "no span receiver is on: spans cannot reach the sidecar",
            "set receiver.http.enabled: true (the shim sends OTLP/HTTP)",
        )
    if probe is None:
        return Result(name, SKIP, "no test span sent")
    if probe.status is None:
        return Result(
            name,
            FAIL,
            f"test span to {probe.url} not delivered: {probe.error}",
            "the receiver binds receiver.http.bind (127.0.0.1 by default): run the doctor "
            "where the engine runs, or set the bind address the engine reaches",
        )
    if probe.status != 200:
        return Result(
            name,
            FAIL,
            f"test span to {probe.url} answered HTTP {probe.status}: {probe.error or ''}".rstrip(),
            "see the sidecar's log and the rejections check",
        )
    if not probe.counted:
        return Result(
            name,
            FAIL,
            f"test span to {probe.url} answered 200 but was not counted in "
            "tickscope_receiver_accepted_spans_total",
            "the sidecar's pipeline may be stuck: see its log and tickscope_pipeline_queue_spans",
        )
    return Result(name, OK, f"test span (service.name {DOCTOR_SERVICE}) accepted and counted")


def _accepted(samples: Samples) -> float:
    """Spans accepted, less the doctor's own test spans (as span metrics counted them)."""
    ours = _total(samples, "traces_span_metrics_calls_total", service_name=DOCTOR_SERVICE)
    return _total(samples, "tickscope_receiver_accepted_spans_total") - ours


def check_arrivals(before: Samples, after: Samples, window: float) -> Result:
    name = "spans arriving"
    if "tickscope_receiver_accepted_spans_total" not in after:
        return Result(name, SKIP, "no span receivers")
    total = _accepted(after)
    new = total - _accepted(before)
    if new > 0:
        return Result(name, OK, f"{_n(new)} spans in the last {window:g}s ({_n(total)} in all)")
    fix = (
        "check the engine exports to this sidecar: OTEL_EXPORTER_OTLP_ENDPOINT (the shim's "
        "default http://127.0.0.1:4318), and that tickscope.shim.configure() runs at startup"
    )
    if total == 0:
        return Result(name, WARN, "no span received since the sidecar started", fix)
    return Result(
        name,
        WARN,
        f"no span in the last {window:g}s ({_n(total)} since the sidecar started)",
        fix + "; an idle engine that makes no calls sends none",
    )


def check_versions(samples: Samples) -> Result:
    name = "shim version"
    builds = [lab.get("version", "") for lab, _ in samples.get("tickscope_build_info", [])]
    sidecar = builds[0] if builds else "?"
    shims: dict[str, list[str]] = {}
    for lab, _ in samples.get("target_info", []):
        version = lab.get("telemetry_distro_version")
        if version:
            shims.setdefault(version, []).append(lab.get("job", "?"))
    if not shims:
        return Result(name, SKIP, f"no shim has sent metrics (sidecar {sidecar})")
    other = {v: jobs for v, jobs in shims.items() if v != sidecar}
    if not other:
        return Result(name, OK, f"shim {sidecar} = sidecar {sidecar}")
    described = ", ".join(f"{v} ({', '.join(sorted(j))})" for v, j in sorted(other.items()))
    return Result(
        name,
        WARN,
        f"shim {described} differs from sidecar {sidecar}",
        "install the shim and the sidecar from the same release "
        f"(pip install 'tickscope-shim=={sidecar}' in the engine's environment)",
    )


_REASON_FIXES = {
    "invalid_span": "a client sends spans that break OTLP (a trace id not 16 bytes, ...); "
    "the sidecar's log names the service",
    "queue_full": "the pipeline queue overflowed: raise limits.queue_capacity_spans, give "
    "the sidecar more CPU, or send fewer spans",
    "malformed": "a client sends bodies that are not OTLP; the sidecar's log names the peer",
    "unsupported_media_type": "send Content-Type application/x-protobuf or application/json",
    "unsupported_encoding": "send gzip or no Content-Encoding",
    "too_large": "requests past receiver.http.max_body_bytes: export smaller batches "
    "(OTEL_BSP_MAX_EXPORT_BATCH_SIZE) or raise the limit",
    "shutting_down": "requests during a shutdown: harmless after a restart",
    "client_disconnected": "clients hung up mid-request: check the exporter's timeout",
    "read_timeout": "clients too slow to send a request: check the network to the sidecar",
    "internal": "a sidecar bug: report it with the sidecar's log",
    "buffer_full": "the forward upstream (forward.endpoint) is down or slow: fix it or raise "
    "forward.buffer_spans",
    "shutdown": "spans still queued at a shutdown: harmless after a restart",
    "invalid_value": "a client sends metric points with impossible values (a negative "
    "count, NaN in a sum)",
    "invalid_buckets": "a client sends histograms whose bucket counts do not add up",
    "invalid_name": "a metric name with no valid Prometheus form",
    "name_conflict": "two metrics map to one Prometheus name with different types",
    "out_of_order": "a cumulative series went back in time: two exporters share a "
    "service.instance.id",
    "cardinality_limit": "past metrics.max_series_per_metric: see the cardinality check",
}


_DROPS = (
    ("tickscope_receiver_rejected_spans_total", "spans rejected"),
    ("tickscope_receiver_rejected_requests_total", "requests rejected"),
    ("tickscope_receiver_rejected_points_total", "metric points rejected"),
    ("tickscope_pipeline_dropped_spans_total", "spans dropped by the pipeline"),
    ("tickscope_forward_dropped_spans_total", "spans not forwarded"),
)


def _drops(samples: Samples) -> dict[tuple[str, str], float]:
    """(what, reason) -> count since the sidecar started."""
    found: dict[tuple[str, str], float] = {}
    for metric, what in _DROPS:
        for (reason,), count in sorted(_by(samples, metric, "reason").items()):
            if count > 0:
                found[(what, reason or "unknown")] = count
    failed = _total(samples, "tickscope_spanstream_failed_spans_total")
    if failed > 0:
        found[("spans the span stream failed", "failed")] = failed
    return found


def check_rejections(
    samples: Samples, before: Samples | None = None, window: float | None = None
) -> Result:
    """Counts since the sidecar started, each marked when it rose between `before`
    and `samples` (the doctor's watch window)."""
    name = "rejected or dropped"
    found = _drops(samples)
    if not found:
        return Result(name, OK, "none since the sidecar started")
    earlier = _drops(before) if before is not None else {}
    rising = {k: c - earlier.get(k, 0.0) for k, c in found.items() if c > earlier.get(k, 0.0)}
    notes = []
    for (what, reason), c in found.items():
        now = (
            f", {_n(rising[(what, reason)])} in the last {window:g}s"
            if (what, reason) in rising and before is not None and window is not None
            else ""
        )
        fix = _REASON_FIXES.get(reason, "see the sidecar log")
        notes.append(f"{_n(c)} {what} ({reason}{now}): {fix}")
    total = sum(found.values())
    detail = f"{_n(total)} since the sidecar started: " + ", ".join(
        f"{_n(c)} {reason}" for (_, reason), c in found.items()
    )
    if before is not None:
        detail += "; still rising" if rising else "; none in the watch window"
    return Result(name, WARN, detail, "per reason below", tuple(notes))


def check_cardinality(samples: Samples, near: float = 0.8) -> Result:
    name = "cardinality"
    problems: list[str] = []
    fixes: list[str] = []
    series = _total(samples, "tickscope_spanmetrics_series")
    limit = _total(samples, "tickscope_spanmetrics_series_limit")
    overflow = _total(samples, "tickscope_spanmetrics_overflow_total")
    detail = f"span metrics {_n(series)}/{_n(limit)} series" if limit else "span metrics off"
    if overflow > 0:
        problems.append(f"span metrics overflowed {_n(overflow)} times")
    elif limit and series >= near * limit:
        problems.append(f"span metrics at {series / limit:.0%} of spanmetrics.max_series")
    if problems:
        fixes.append(
            "raise spanmetrics.max_series, or stop a high-cardinality attribute (an order id, "
            "a URL with ids) reaching span names or labels"
        )
    trading = {
        m: c
        for (m,), c in _by(samples, "tickscope_trading_overflow_total", "metric").items()
        if c > 0
    }
    if trading:
        problems.append(
            "trading metrics overflowed: " + ", ".join(f"{m} {_n(c)}" for m, c in trading.items())
        )
        fixes.append("raise trading.max_series (too many exchanges, symbols or methods)")
    points = _total(samples, "tickscope_metrics_overflow_points_total")
    if points > 0:
        problems.append(f"{_n(points)} OTLP metric points overflowed")
        fixes.append("raise metrics.max_series_per_metric, or drop a high-cardinality attribute")
    if not problems:
        return Result(name, OK, detail + ", no overflow")
    return Result(name, WARN, detail + "; " + "; ".join(problems), "; ".join(fixes))


def check_clock_skew(samples: Samples, warn_at: float = 0.5, fail_at: float = 1.0) -> Result:
    name = "clock skew"
    skew = _by(samples, "exchange_clock_skew_seconds", "exchange")
    if not skew:
        return Result(name, SKIP, "no exchange clock measured (the shim sends it)")
    uncertainty = _by(samples, "exchange_clock_skew_uncertainty_seconds", "exchange")
    worst = {}
    for key, value in skew.items():
        worst[key[0]] = max(0.0, abs(value) - uncertainty.get(key, 0.0))
    parts = ", ".join(f"{ex} {skew[(ex,)]:+.3f}s" for ex in sorted(worst))
    top = max(worst.values())
    fix = (
        "sync this host's clock (`timedatectl`, `chronyc tracking`); Binance refuses a signed "
        "request stamped more than 1 s ahead of its clock"
    )
    if top > fail_at:
        return Result(name, FAIL, f"beyond {fail_at:g}s: {parts}", fix)
    if top > warn_at:
        return Result(name, WARN, f"beyond {warn_at:g}s: {parts}", fix)
    return Result(name, OK, parts)


def check_config(path: str, max_bytes: int | None = None, max_depth: int | None = None) -> Result:
    """The validation `tickscope check-config FILE` does (with TICKSCOPE_* overrides)."""
    from tickscope.agent.config import (
        DEFAULT_MAX_CONFIG_BYTES,
        DEFAULT_MAX_CONFIG_DEPTH,
        ConfigError,
        load_config,
    )

    name = "config file"
    try:
        load_config(
            path,
            max_bytes=max_bytes or DEFAULT_MAX_CONFIG_BYTES,
            max_depth=max_depth or DEFAULT_MAX_CONFIG_DEPTH,
        )
    except ConfigError as exc:
        noun = "problem" if len(exc.problems) == 1 else "problems"
        return Result(
            name,
            FAIL,
            f"{path}: invalid ({len(exc.problems)} {noun})",
            f"correct the keys below (`tickscope check-config {path}` says the same)",
            tuple(exc.problems),
        )
    return Result(name, OK, f"{path}: valid")


# --- Prometheus --------------------------------------------------------------------


def _hostport(url: str) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(url)
    host = (parts.hostname or "").lower()
    if host in ("localhost", "::1", "ip6-localhost"):
        host = "127.0.0.1"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return host, port


def check_prometheus_target(targets: Mapping[str, Any], sidecar_url: str) -> Result:
    name = "prometheus scrapes the sidecar"
    want = _hostport(sidecar_url)
    active = (targets.get("data") or {}).get("activeTargets") or []
    mine = [t for t in active if _hostport(str(t.get("scrapeUrl", ""))) == want]
    if not mine:
        jobs = sorted({str((t.get("labels") or {}).get("job", "?")) for t in active})
        secured = (
            "; the admin port serves HTTPS: also scheme: https, tls_config: {ca_file: CA} and "
            "basic_auth as its web config needs (docs/security.md)"
            if urllib.parse.urlsplit(sidecar_url).scheme == "https"
            else ""
        )
        return Result(
            name,
            FAIL,
            f"{want[0]}:{want[1]} is not among its {len(active)} targets"
            + (f" (jobs: {', '.join(jobs)})" if jobs else ""),
            "add a scrape config: job_name: tickscope, static_configs: [{targets: "
            f"['{want[0]}:{want[1]}']}}] (or the chart's ServiceMonitor, "
            "serviceMonitor.enabled=true)" + secured,
        )
    t = mine[0]
    job = str((t.get("labels") or {}).get("job", ""))
    if t.get("health") != "up":
        return Result(
            name,
            FAIL,
            f"target {t.get('scrapeUrl')} is {t.get('health')}: {t.get('lastError') or '-'}",
            "the sidecar must answer Prometheus: see the sidecar-reachable check, "
            "credentials (server.web_config_file) and network policies",
        )
    if job != "tickscope":
        return Result(
            name,
            WARN,
            f"up, but under job {job!r}",
            'the rules and dashboards expect job="tickscope": rename the scrape job',
        )
    return Result(name, OK, f"target {t.get('scrapeUrl')} up (job tickscope)")


def _rules(rules: Mapping[str, Any]) -> list[dict[str, Any]]:
    groups = (rules.get("data") or {}).get("groups") or []
    return [r for g in groups for r in g.get("rules") or []]


def check_rules_loaded(
    rules: Mapping[str, Any], expected: Sequence[str] = EXPECTED_ALERTS
) -> Result:
    name = "prometheus rules loaded"
    loaded = {str(r.get("name")) for r in _rules(rules) if r.get("type") == "alerting"}
    missing = [a for a in expected if a not in loaded]
    if not missing:
        return Result(name, OK, f"all {len(expected)} tickscope alerts loaded")
    fix = (
        "add alert-rules/*.rules.yml to rule_files in prometheus.yml and reload "
        "(or the chart's PrometheusRule, prometheusRule.enabled=true)"
    )
    if len(missing) == len(expected):
        return Result(name, FAIL, f"none of the {len(expected)} tickscope alerts loaded", fix)
    return Result(
        name,
        FAIL,
        f"{len(missing)} of {len(expected)} tickscope alerts missing: " + ", ".join(missing),
        fix,
    )


def check_rule_health(rules: Mapping[str, Any]) -> Result:
    name = "prometheus rule evaluation"
    ours = set(EXPECTED_ALERTS)
    bad = [
        r
        for r in _rules(rules)
        if r.get("health") == "err" and (r.get("name") in ours or r.get("type") == "recording")
    ]
    if not bad:
        return Result(name, OK, "no evaluation errors")
    return Result(
        name,
        FAIL,
        f"{len(bad)} rules fail to evaluate: " + ", ".join(str(r.get("name")) for r in bad),
        "see each rule's error below; `promtool check rules alert-rules/*.rules.yml`",
        tuple(f"{r.get('name')}: {r.get('lastError')}" for r in bad),
    )


def check_alertmanagers(
    answer: Mapping[str, Any], reachable: Mapping[str, str | None] | None = None
) -> Result:
    """`reachable`: each active Alertmanager URL -> None when it answered, else the error."""
    name = "alertmanager connected"
    data = answer.get("data") or {}
    active = [str(a.get("url")) for a in data.get("activeAlertmanagers") or []]
    if not active:
        dropped = len(data.get("droppedAlertmanagers") or [])
        return Result(
            name,
            FAIL,
            "Prometheus has no Alertmanager" + (f" ({dropped} dropped)" if dropped else ""),
            "add alerting: alertmanagers: [{static_configs: [{targets: ['HOST:9093']}]}] "
            "to prometheus.yml: without it alerts fire but nobody is paged",
        )
    down = {u: e for u, e in (reachable or {}).items() if e is not None}
    if down:
        return Result(
            name,
            FAIL,
            "configured but not answering: "
            + ", ".join(f"{u} ({e})" for u, e in sorted(down.items())),
            "start Alertmanager, or correct alerting.alertmanagers in prometheus.yml",
        )
    return Result(name, OK, ", ".join(active))


# --- verdicts ----------------------------------------------------------------------


def exit_code(results: Iterable[Result]) -> int:
    return max((_RANK[r.verdict] for r in results), default=0)


def render(results: Sequence[Result]) -> str:
    lines = []
    for r in results:
        lines.append(f"{r.verdict.upper() if r.verdict != OK else 'ok':<5} {r.check}: {r.detail}")
        if r.fix and r.verdict in (WARN, FAIL):
            lines.append(f"      fix: {r.fix}")
        for note in r.notes:
            lines.append(f"        {note}")
    counts = {v: sum(1 for r in results if r.verdict == v) for v in (OK, WARN, FAIL, SKIP)}
    lines.append("")
    lines.append(
        f"{counts[OK]} ok, {counts[WARN]} warnings, {counts[FAIL]} failures, {counts[SKIP]} skipped"
    )
    return "\n".join(lines) + "\n"


# --- fetching ----------------------------------------------------------------------


def fetch(client: Client, url: str, data: bytes | None = None, **headers: str) -> Fetched:
    try:
        answer = client.request(url, data, headers)
    except RequestError as e:
        return Fetched(None, b"", e.reason, e.hint, e.kind)
    if answer.status == 200:
        return Fetched(answer.status, answer.body)
    return Fetched(answer.status, answer.body, f"HTTP {answer.status}")


def plain_client(timeout: float, peer: str) -> Client:
    """A client for what is not the sidecar's admin port (Prometheus, Alertmanager, the OTLP
    receiver): the system's CAs, credentials only from its own URL."""
    return Client(timeout=timeout, user_agent="tickscope-doctor", peer=peer, tls_flags=False)


def local_processes() -> list[ProcessInfo]:
    import psutil

    out = []
    own = os.getpid()
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        info = proc.info
        if info["pid"] == own:
            continue
        out.append(
            ProcessInfo(int(info["pid"]), str(info["name"] or ""), " ".join(info["cmdline"] or []))
        )
    return out


def _probe_body() -> bytes:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    now = time.time_ns()
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.append(
        KeyValue(key="service.name", value=AnyValue(string_value=DOCTOR_SERVICE))
    )
    ss = rs.scope_spans.add()
    ss.scope.name = "tickscope.doctor"
    span = ss.spans.add()
    span.trace_id = secrets.token_bytes(16)
    span.span_id = secrets.token_bytes(8)
    span.name = DOCTOR_SPAN
    span.kind = Span.SPAN_KIND_INTERNAL
    span.start_time_unix_nano = now - 1_000_000
    span.end_time_unix_nano = now
    return request.SerializeToString()


def send_probe(
    receiver_url: str,
    scrape: Callable[[], Samples | None],
    before: Samples,
    timeout: float,
    client: Client | None = None,
) -> ProbeOutcome:
    # The receiver is plain HTTP on the pod's loopback: the admin port's TLS options and
    # credentials are not for it.
    client = client or plain_client(timeout, "the OTLP receiver")
    url = receiver_url + "/v1/traces"
    answer = fetch(client, url, _probe_body(), **{"Content-Type": "application/x-protobuf"})
    if answer.status != 200:
        body = answer.body[:200].decode(errors="replace")
        return ProbeOutcome(
            url, answer.status, answer.error if answer.status is None else body, False
        )
    base = _total(before, "tickscope_receiver_accepted_spans_total", receiver="otlp_http")
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape()
        if samples is not None:
            now = _total(samples, "tickscope_receiver_accepted_spans_total", receiver="otlp_http")
            if now > base:
                return ProbeOutcome(url, 200, None, True)
        if time.monotonic() >= deadline:
            return ProbeOutcome(url, 200, None, False)
        time.sleep(0.1)


@dataclass
class Options:
    url: str = DEFAULT_URL
    prometheus: str | None = None
    config: str | None = None
    window: float = 2.0
    timeout: float = 5.0
    processes: Callable[[], list[ProcessInfo]] = field(default=local_processes)
    tls: TLSOptions = field(default_factory=TLSOptions)  # the sidecar's admin port only
    renew_days: float = 14.0  # a certificate ending sooner is a warning


def _receiver_url(sidecar_url: str, port: int) -> str:
    host = urllib.parse.urlsplit(sidecar_url).hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _sidecar_checks(opts: Options, client: Client) -> list[Result]:
    # `base` holds the credentials and goes only to the client; `url` is what is shown.
    base = httpclient.with_scheme(opts.url).rstrip("/")
    url, credentials = httpclient.split_credentials(base)
    user = credentials[0] if credentials is not None else None
    readyz = fetch(client, base + "/readyz")
    reachable = check_reachable(url, readyz, user)
    results = [reachable]
    if reachable.verdict != OK:
        return results
    info: TLSInfo | str | None = None
    if url.startswith("https://"):
        try:
            info = httpclient.handshake(client, url)
        except RequestError as e:
            info = str(e)
    transport = check_tls(
        url, opts.tls, info, credentials is not None, time.time(), opts.renew_days
    )
    if transport is not None:
        results.append(transport)
    try:
        results.append(check_ready(readyz.json()))
    except ValueError:
        results.append(Result("sidecar ready", FAIL, "/readyz did not answer JSON"))
    status_answer = fetch(client, base + "/?format=json")
    metrics_answer = fetch(client, base + "/metrics")
    for what, path, answer in (
        ("status", "/?format=json", status_answer),
        ("/metrics", "/metrics", metrics_answer),
    ):
        if answer.status != 200:
            results.append(
                refused(url + path, answer, user)
                or Result(
                    f"sidecar {what}",
                    FAIL,
                    f"HTTP {answer.status}: {answer.error}"
                    if answer.status is not None
                    else f"{url}{path}: {answer.error}",
                    answer.fix or "see the sidecar's log",
                )
            )
            return results
    status: dict[str, Any] = status_answer.json()
    before = parse_metrics(metrics_answer.body.decode())
    results.extend(check_engines(status, opts.processes()))

    def scrape() -> Samples | None:
        answer = fetch(client, base + "/metrics")
        return parse_metrics(answer.body.decode()) if answer.status == 200 else None

    started = time.monotonic()
    time.sleep(opts.window)
    after = scrape() or before
    window = time.monotonic() - started
    receivers = (status.get("spans") or {}).get("receivers") or {}
    probe = None
    if receivers.get("otlp_http"):
        probe = send_probe(
            _receiver_url(url, int(receivers["otlp_http"])),
            scrape,
            after,
            opts.timeout,
            plain_client(opts.timeout, "the OTLP receiver"),
        )
    results.append(check_receiver(status, probe))
    results.append(check_arrivals(before, after, round(window, 1)))
    results.append(check_versions(after))
    results.append(check_rejections(after, before, round(window, 1)))
    results.append(check_cardinality(after))
    results.append(check_clock_skew(after))
    return results


def _prometheus_checks(opts: Options, prometheus: str) -> list[Result]:
    base = httpclient.with_scheme(prometheus).rstrip("/")
    shown = httpclient.redact(base)
    client = plain_client(opts.timeout, "Prometheus")
    results: list[Result] = []
    targets = fetch(client, base + "/api/v1/targets?state=active")
    if targets.status != 200:
        fix = targets.fix or "give Prometheus' address: --prometheus http://HOST:9090"
        detail = f"{shown} does not answer: {targets.error}"
        if targets.status is not None:
            detail = f"{shown}/api/v1/targets answered HTTP {targets.status}"
        if targets.status == 401:
            fix = "basic auth required: put user:password@ in the --prometheus URL"
        return [Result("prometheus reachable", FAIL, detail, fix)]
    results.append(check_prometheus_target(targets.json(), httpclient.with_scheme(opts.url)))
    rules = fetch(client, base + "/api/v1/rules")
    rules_json: dict[str, Any] = rules.json() if rules.status == 200 else {}
    results.append(check_rules_loaded(rules_json))
    results.append(check_rule_health(rules_json))
    ams = fetch(client, base + "/api/v1/alertmanagers")
    ams_json: dict[str, Any] = ams.json() if ams.status == 200 else {}
    reachable: dict[str, str | None] = {}
    for am in (ams_json.get("data") or {}).get("activeAlertmanagers") or []:
        am_url = str(am.get("url"))
        parts = urllib.parse.urlsplit(am_url)
        answer = fetch(
            plain_client(opts.timeout, "Alertmanager"), f"{parts.scheme}://{parts.netloc}/-/ready"
        )
        reachable[am_url] = None if answer.status == 200 else (answer.error or str(answer.status))
    results.append(check_alertmanagers(ams_json, reachable))
    return results


def sidecar_client(opts: Options) -> Client:
    """The admin port's client; OptionError (one line) for a TLS option or URL that cannot
    be used."""
    httpclient.check_url("URL", opts.url)
    httpclient.check_url("--prometheus", opts.prometheus)
    return Client.for_sidecar(opts.tls, timeout=opts.timeout, user_agent="tickscope-doctor")


def run_checks(opts: Options) -> list[Result]:
    results: list[Result] = []
    if opts.config is not None:
        results.append(check_config(opts.config))
    try:
        client = sidecar_client(opts)
    except OptionError as e:
        return [*results, Result("options", FAIL, str(e), "correct the option")]
    results.extend(_sidecar_checks(opts, client))
    if opts.prometheus is not None:
        results.extend(_prometheus_checks(opts, opts.prometheus))
    return results


# --- the command -------------------------------------------------------------------


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= 300:
        raise argparse.ArgumentTypeError(f"must be in (0, 300], got {value:g}")
    return value


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    doctor: argparse.ArgumentParser = subparsers.add_parser(
        "doctor",
        help="check a running setup: ok / warn / fail per check with the fix (exit 0/1/2)",
    )
    doctor.add_argument(
        "url",
        nargs="?",
        default=DEFAULT_URL,
        metavar="URL",
        help="the sidecar's admin address (default: %(default)s): https:// when its web config "
        "has tls_server_config; user:password@ for basic auth (percent-encoded)",
    )
    doctor.add_argument(
        "--prometheus",
        metavar="URL",
        help="also check this Prometheus (user:password@ for basic auth; the TLS options below "
        "do not apply to it)",
    )
    doctor.add_argument(
        "--config", "-c", metavar="FILE", help="also validate this config file (as check-config)"
    )
    doctor.add_argument(
        "--window",
        type=_seconds,
        default=2.0,
        metavar="SECONDS",
        help="how long to watch for arriving spans (default: %(default)s)",
    )
    doctor.add_argument(
        "--timeout",
        type=_seconds,
        default=5.0,
        metavar="SECONDS",
        help="per request, and for the test span to be counted (default: %(default)s)",
    )
    httpclient.add_arguments(doctor)
    return doctor


def run(args: argparse.Namespace) -> int:
    opts = Options(
        url=args.url,
        prometheus=args.prometheus,
        config=args.config,
        window=args.window,
        timeout=args.timeout,
        tls=TLSOptions.from_args(args),
    )
    try:
        sidecar_client(opts)  # a bad option is a usage error, before anything is fetched
    except OptionError as e:
        print(f"tickscope doctor: {e}", file=sys.stderr)
        return 2
    results = run_checks(opts)
    print(render(results), end="", flush=True)
    return exit_code(results)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tickscope")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(["doctor", *(argv or [])]))
