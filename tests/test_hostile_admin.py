"""The admin port under clients that misbehave: bogus Accept headers, scrape
floods that never read, half-sent and idle connections, malformed HTTP.
Issue 11, defects 9, 14, 15 and 16."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import statistics
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

from helpers.otlp import request as otlp_request
from helpers.sidecar import SidecarProcess, StartSidecar, http_get, http_post, sample_value
from tickscope.agent.logs import RateLimitFilter
from tickscope.agent.server import AdminServer, ServerConfig
from tickscope.agent.status import Status
from tickscope.core.health import Health, LoopMonitor
from tickscope.exporters.prometheus import negotiate, new_registry, render

TEXT_004 = "text/plain; version=0.0.4; charset=utf-8"
OM_100 = "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=underscores"


def rejected(s: SidecarProcess, reason: str) -> float:
    families = {m.name: m for m in text_string_to_metric_families(s.metrics_text())}
    return sample_value(families["tickscope_admin_rejected_requests"], reason=reason)


# --- defect 14: Accept negotiation ----------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        ("text/plain; version=bogus", TEXT_004),
        ("application/openmetrics-text; version=bogus", TEXT_004),
        ('application/openmetrics-text; version="1.0.0"', TEXT_004),
        ("application/openmetrics-text; version=1.0.0-rc1", TEXT_004),
        # The bad range is skipped, the next good one chosen (client_golang's Negotiate).
        (
            "application/openmetrics-text; version=x, application/openmetrics-text; version=1.0.0",
            OM_100,
        ),
        ("application/openmetrics-text; version=1.0.0", OM_100),
        ("", TEXT_004),
    ],
)
def test_bogus_accept_versions_fall_back_to_text(accept: str, content_type: str) -> None:
    exposition = render(new_registry(), accept=accept)
    assert exposition.content_type == content_type
    assert negotiate(accept) == (content_type, False)
    if content_type == TEXT_004:
        names = {m.name for m in text_string_to_metric_families(exposition.body.decode())}
        assert "process_cpu_seconds" in names


# --- an in-process admin server -------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _status() -> Status:
    return Status(version="test", uptime_seconds=0.0, ready=True)


async def _serve(config: dict[str, Any], registry: CollectorRegistry, clock: Any) -> AdminServer:
    server = AdminServer(
        ServerConfig.model_validate({"bind": "127.0.0.1", "port": 0, **config}),
        registry,
        Health(),
        LoopMonitor(),
        _status,
        clock=clock,
    )
    await server.start()
    return server


def test_metrics_are_rendered_once_per_ttl_and_key() -> None:
    async def body() -> None:
        registry = CollectorRegistry()
        hits = Counter("hits", "Test counter.", registry=registry)
        clock = FakeClock()
        server = await _serve({"metrics_cache_ttl": "1s"}, registry, clock)
        url = f"http://127.0.0.1:{server.port}/metrics"
        try:
            async with aiohttp.ClientSession() as session:

                async def scrape(**kw: Any) -> str:
                    async with session.get(url, **kw) as r:
                        assert r.status == 200
                        return await r.text()

                first = await scrape()
                assert "hits_total 0.0" in first
                hits.inc()
                # Within the TTL: the same rendering, the increment not yet seen.
                clock.now += 0.999
                assert await scrape() == first
                # Another format is another key: rendered now, sees the increment.
                om = await scrape(headers={"Accept": "application/openmetrics-text; version=1.0.0"})
                assert "hits_total 1.0" in om
                # Past the TTL: rendered again.
                clock.now += 0.002
                assert "hits_total 1.0" in await scrape()
        finally:
            await server.stop()

    asyncio.run(body())


class StepTimer:
    """A render timer under which every render takes exactly 0.1 s."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.1
        return self.now


def test_renders_past_the_budget_serve_the_last_copy_or_429() -> None:
    async def body() -> None:
        registry = CollectorRegistry()
        hits = Counter("hits", "Test counter.", registry=registry)
        clock = FakeClock()
        server = AdminServer(
            ServerConfig(bind="127.0.0.1", port=0, max_render_percent=25, metrics_cache_ttl=0.5),
            registry,
            Health(),
            LoopMonitor(),
            _status,
            clock=clock,
            timer=StepTimer(),
        )
        await server.start()
        url = f"http://127.0.0.1:{server.port}/metrics"
        try:
            async with aiohttp.ClientSession() as session:

                async def get(**params: str) -> tuple[int, str | None, str]:
                    async with session.get(url, params=params) as r:
                        return r.status, r.headers.get("Retry-After"), await r.text()

                # 0.25 s of credit, 0.1 s a render: 3 renders, then the budget is gone.
                first = await get()
                assert first[0] == 200 and "hits_total 0.0" in first[2]
                assert (await get(**{"name[]": "a"}))[0] == 200
                assert (await get(**{"name[]": "b"}))[0] == 200
                assert await get(**{"name[]": "c"}) == (429, "1", "429 Too Many Requests: "
                                                        "/metrics render budget used up, retry\n")  # fmt: skip
                # Past its TTL, the unfiltered variant is served from its last copy.
                hits.inc()
                clock.now += 0.9
                # 0.9 s refilled 0.225 s: credit 0.175 s, two renders.
                assert "hits_total 1.0" in (await get())[2]
                assert (await get(**{"name[]": "c"}))[0] == 200
                assert (await get(**{"name[]": "d"}))[0] == 429
                hits.inc()
                clock.now += 1.0
                # Credit 0.225 s: rendered afresh.
                assert "hits_total 2.0" in (await get())[2]
                assert (await get(**{"name[]": "e"}))[0] == 200
                # Budget gone: the expired copy is served, not rendered.
                hits.inc()
                clock.now += 1.0
                server._render_credit = -10.0
                assert "hits_total 2.0" in (await get())[2]
            assert server.rejected.labels("render_budget")._value.get() == 2
        finally:
            await server.stop()

    asyncio.run(body())


# --- defect 9: a flood of pipelined scrapes that never read ---------------------------------

FLOOD_CLIENTS = 200
# 50 pipelined requests of 34 bytes each per client: 200 x 1,700 = 340,000 bytes,
# the 340 KB.
PIPELINED = 50
REQUEST = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"


class Flood:
    """Clients that pipeline GET /metrics and never read a byte of the answers."""

    def __init__(self, port: int, clients: int = FLOOD_CLIENTS) -> None:
        self.port = port
        self.clients = clients
        self.sockets: list[socket.socket] = []
        self.sent = 0

    def __enter__(self) -> Flood:
        for _ in range(self.clients):
            sock = socket.socket()
            # A small receive window, so the server's writes block at once.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", self.port))
            payload = REQUEST * PIPELINED
            sock.sendall(payload)
            self.sent += len(payload)
            self.sockets.append(sock)
        return self

    def __exit__(self, *exc: object) -> None:
        for sock in self.sockets:
            sock.close()


def healthz_latencies(url: str, seconds: float) -> Iterator[tuple[float, int, float]]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.monotonic()
        r = http_get(url + "/healthz", timeout=10)
        yield time.monotonic() - started, r.status, r.json()["loop_lag_seconds"]
        time.sleep(0.05)


def fill_span_metrics(s: SidecarProcess, names: int) -> None:
    """Spans with `names` distinct names: a /metrics of a few MB, so one render
    costs what it does in production (about 0.13 s per MB here)."""
    spans = [{"name": f"ccxt.method_{i}", "attributes": {"exchange.id": "binance"}} for i in range(names)]  # fmt: skip
    body = otlp_request("svc-flood", spans).SerializeToString()
    r = http_post(s.otlp_http_url + "/v1/traces", body, {"Content-Type": "application/x-protobuf"})
    assert r.status == 200, r.text


def test_healthz_answers_during_a_flood_of_pipelined_scrapes_that_never_read(
    start_sidecar: StartSidecar,
) -> None:
    s = start_sidecar(
        {
            "server": {"liveness_max_loop_lag": "3s", "write_timeout": "3s"},
            "engine": {"processes": []},
        }
    )
    s.wait_until(lambda: s.get("/readyz").status == 200, what="ready")
    assert s.port is not None
    fill_span_metrics(s, 1500)
    size = s.wait_until(
        lambda: (n := len(s.get("/metrics").body)) > 5_000_000 and n, what="span metrics"
    )
    print(f"\n/metrics: {size} bytes")
    with Flood(s.port) as flood:
        assert flood.sent == 340_000
        samples = list(healthz_latencies(s.url, 4.0))
        latencies = [latency for latency, _, _ in samples]
        print(
            f"\n/healthz under a flood of {FLOOD_CLIENTS} clients ({flood.sent} bytes of "
            f"pipelined GET /metrics): {len(samples)} probes, p50 "
            f"{statistics.median(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms, "
            f"loop lag max {max(lag for _, _, lag in samples):.3f} s"
        )
        assert len(samples) >= 10, samples
        for latency, status, lag in samples:
            assert status == 200
            assert lag < 3.0  # server.liveness_max_loop_lag
            # Within the Helm chart's liveness timeoutSeconds (6): the kubelet counts a
            # slower answer as a failure. (3.17 s seen with other work on both cores.)
            assert latency < 6.0
    # The flood is over; the sidecar serves as before.
    assert s.get("/healthz").status == 200
    assert s.get("/metrics").status == 200


def test_a_client_that_never_reads_is_cut_at_write_timeout(start_sidecar: StartSidecar) -> None:
    s = start_sidecar({"server": {"write_timeout": "1s"}, "engine": {"processes": []}})
    s.wait_until(lambda: s.get("/readyz").status == 200, what="ready")
    size = len(s.get("/metrics").body)
    # More answers than the kernel buffers (tcp_wmem's 4 MiB maximum plus the
    # client's 4 KiB window) can hold: the server must wait for the client.
    count = (8 << 20) // size + 1
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", s.port or 0))
        sock.sendall(REQUEST * count)
        s.wait_until(lambda: rejected(s, "write_timeout") == 1, timeout=10, what="cut")
        sock.settimeout(5)
        received = 0
        # Reading now gets what the kernel already held, then the end: the
        # connection is gone and the answers not yet written were dropped.
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(1 << 20):
                received += len(chunk)
        assert 0 < received < count * size / 2, (received, count * size)
    assert rejected(s, "write_timeout") == 1
    assert s.get("/healthz").status == 200


# --- defect 16: idle and half-sent connections ----------------------------------------------


def _closed_after(sock: socket.socket, limit: float) -> float:
    """Seconds until the server closes `sock` (recv gets EOF); fails past `limit`."""
    sock.settimeout(limit)
    started = time.monotonic()
    try:
        data = sock.recv(65536)
    except TimeoutError:
        pytest.fail(f"connection still open after {limit}s")
    except ConnectionResetError:
        data = b""
    assert data == b"", data
    return time.monotonic() - started


@pytest.fixture(scope="module")
def timed_sidecar(start_module_sidecar: StartSidecar) -> SidecarProcess:
    s = start_module_sidecar(
        {
            # No cached exposition: each counter read below is a fresh render.
            "server": {"read_timeout": "0.5s", "idle_timeout": "1.5s", "metrics_cache_ttl": 0},
            "engine": {"processes": []},
            "logging": {"rate_limit_interval": "1s"},
        }
    )
    s.wait_until(lambda: s.get("/readyz").status == 200, what="ready")
    return s


def test_half_sent_request_head_is_closed_after_read_timeout(timed_sidecar: SidecarProcess) -> None:
    s = timed_sidecar
    before = rejected(s, "read_timeout")
    with socket.create_connection(("127.0.0.1", s.port or 0)) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow:")
        took = _closed_after(sock, 5.0)
    assert 0.4 < took < 1.4, took
    assert rejected(s, "read_timeout") == before + 1


def test_trickled_request_head_is_closed_after_read_timeout(timed_sidecar: SidecarProcess) -> None:
    s = timed_sidecar
    before = rejected(s, "read_timeout")
    with socket.create_connection(("127.0.0.1", s.port or 0)) as sock:
        started = time.monotonic()
        # One byte every 0.1 s: each byte is progress, but the head never completes.
        with pytest.raises(OSError):
            for byte in b"GET /metrics HTTP/1.1\r\nX-Trickle: " + b"a" * 100:
                sock.send(bytes([byte]))
                time.sleep(0.1)
        took = time.monotonic() - started
    assert 0.4 < took < 1.6, took
    assert rejected(s, "read_timeout") == before + 1


def test_idle_connections_are_closed_after_idle_timeout(timed_sidecar: SidecarProcess) -> None:
    s = timed_sidecar
    with socket.create_connection(("127.0.0.1", s.port or 0)) as sock:
        took = _closed_after(sock, 5.0)
    assert 1.3 < took < 2.5, took
    # After a complete request, the kept-alive connection is closed as idle too.
    with socket.create_connection(("127.0.0.1", s.port or 0)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(5)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
        took = _closed_after(sock, 5.0)
    assert 1.3 < took < 2.5, took


# --- defect 15: malformed HTTP is counted and logged at most once per interval --------------

MALFORMED = b"GET /healthz HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n"


def _send_malformed(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(MALFORMED)
        sock.settimeout(5)
        return sock.recv(65536)


def _aiohttp_errors(s: SidecarProcess) -> list[dict[str, Any]]:
    return [e for e in s.logs if e.get("logger") == "aiohttp.server"]


def test_malformed_http_is_counted_and_logged_once_per_interval(
    timed_sidecar: SidecarProcess,
) -> None:
    s = timed_sidecar
    time.sleep(1.1)  # a fresh rate-limit interval (logging.rate_limit_interval: 1s)
    before_logs = len(_aiohttp_errors(s))
    before = rejected(s, "malformed")
    for _ in range(20):
        assert _send_malformed(s.port or 0).startswith(b"HTTP/1.0 400 Bad Request")
    # The OTLP/HTTP port's aiohttp goes through the same limiter.
    for _ in range(5):
        assert _send_malformed(s.receivers["otlp_http"]).startswith(b"HTTP/1.0 400 Bad Request")
    assert rejected(s, "malformed") == before + 20
    time.sleep(0.3)
    logged = _aiohttp_errors(s)[before_logs:]
    assert len(logged) == 1, logged
    assert logged[0]["level"] == "warning"
    assert "exception" not in logged[0]
    assert logged[0]["error"] == "BadHttpMessage" and logged[0]["status"] == 400
    # What the client sent is never logged: it could have been a credential.
    assert not any("No colon here" in line for line in s.raw_stderr)
    time.sleep(1.1)
    assert _send_malformed(s.port or 0).startswith(b"HTTP/1.0 400 Bad Request")
    s.wait_until(lambda: len(_aiohttp_errors(s)) == before_logs + 2, what="second log line")
    # The 24 suppressed since: 19 from the admin port, 5 from the OTLP port.
    assert _aiohttp_errors(s)[-1]["suppressed"] == 24
    assert s.get("/healthz").status == 200


def test_rate_limit_filter_exact() -> None:
    clock = FakeClock()
    limiter = RateLimitFilter(10.0, clock)

    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1, msg, (), None)

    assert limiter.filter(record("a %s"))
    assert not limiter.filter(record("a %s"))
    assert limiter.filter(record("b %s"))  # another message has its own interval
    clock.now += 9.999
    assert not limiter.filter(record("a %s"))
    clock.now += 0.001
    passed = record("a %s")
    assert limiter.filter(passed)
    assert passed.suppressed == 2  # type: ignore[attr-defined]
