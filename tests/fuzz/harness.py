"""The in-process fuzz harness: the real sidecar (tickscope.agent.app.Sidecar, every
port 0) in one event loop on a background thread, one sidecar for many cases, and
the invariant checked after every case:

- the request is answered 200/400/413/415/429/503 (gRPC: OK, INVALID_ARGUMENT,
  RESOURCE_EXHAUSTED, UNAVAILABLE), with no ERROR logged on the way (a consumer
  failing on a batch logs one and answers nothing);
- /healthz answers 200 (the process serves);
- the next /metrics in text 0.0.4 and OpenMetrics 1.0 parses with prometheus_client's
  parsers, and every `promtool_every`th case (and at the end) the text format passes
  `promtool check metrics` with only the documented camelCase finding.

The loop runs on its own thread so that hypothesis (synchronous) drives it case by
case with run_coroutine_threadsafe; everything async (the sidecar, the aiohttp
client, the gRPC channel) lives in that one loop.

A case that breaks the scrape poisons the store for every later case, so after a
scrape failure the sidecar is replaced by a fresh one. promtool runs only every Nth
case (~40 ms a run), so when it fails the cases since its last pass are replayed on
a fresh sidecar, promtool after each, to find the one that broke it.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import logging
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import grpc

from fuzz.signatures import (
    OPENMETRICS,
    TEXT,
    Failure,
    check_exposition,
    exception_signature,
    normalize,
    promtool_failures,
)
from fuzz.strategies import Case
from helpers.binaries import promtool_check_metrics
from tickscope.agent.app import Sidecar
from tickscope.agent.config import Config
from tickscope.agent.server import ServerConfig

__all__ = ["Found", "Harness", "fuzz_config"]

T = TypeVar("T")

HTTP_OK = frozenset({200, 400, 413, 415, 429, 503})
GRPC_OK = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.UNAVAILABLE,
    }
)
_GRPC_METHOD = {
    "traces": "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    "metrics": "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
}
_CONTENT_TYPE = {"protobuf": "application/x-protobuf", "json": "application/json"}
REQUEST_TIMEOUT = 20.0
# One case: the request, the drain and the scrapes, each bounded by REQUEST_TIMEOUT.
CALL_TIMEOUT = 120.0


def fuzz_config(**overrides: Any) -> Config:
    """Every listener on 127.0.0.1 port 0; the host collector on (its camelCase
    meminfo names are the one promtool finding the contract allows)."""
    # Every scrape rendered afresh (no cached exposition, no render budget), so the
    # scrape after a case shows what that case did. Set only where the server has
    # the knob (its names are still moving while issue 11 is worked on).
    server: dict[str, Any] = {"bind": "127.0.0.1", "port": 0, "shutdown_timeout": 2}
    knobs = {"metrics_cache_ttl": 0, "max_render_percent": 100, "max_render_share": 1}
    server.update({k: v for k, v in knobs.items() if k in ServerConfig.model_fields})
    data: dict[str, Any] = {
        "server": server,
        "receiver": {"http": {"port": 0}, "grpc": {"port": 0}},
    }
    data.update(overrides)
    return Config.model_validate(data)


@dataclass
class Found:
    """One failure signature: how often it was seen, and its smallest input."""

    signature: str
    detail: str
    case: Case
    count: int = 1
    sequence: list[Case] = field(default_factory=list)


class _ErrorLog(logging.Handler):
    """Collects ERROR records (tracebacks from the receivers, the consumers, aiohttp)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._lock:
            self.records.append(record)

    def take(self) -> list[logging.LogRecord]:
        with self._lock:
            out, self.records = self.records, []
        return out


def _log_signature(record: logging.LogRecord) -> tuple[str, str]:
    if record.exc_info and record.exc_info[1] is not None:
        exc = record.exc_info[1]
        return exception_signature(exc), f"{record.getMessage()}: {type(exc).__name__}: {exc}"[:500]
    return normalize(record.getMessage()), record.getMessage()[:500]


class Harness:
    def __init__(self, config: Config | None = None, promtool_every: int = 25) -> None:
        self.config = config or fuzz_config()
        self.promtool_every = promtool_every
        self.found: dict[str, Found] = {}
        self.cases = 0
        self.restarts = 0
        self._window: list[Case] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._errors = _ErrorLog()
        self._sidecar: Sidecar | None = None
        self._session: aiohttp.ClientSession | None = None
        self._channel: grpc.aio.Channel | None = None

    # -- lifecycle -----------------------------------------------------------------

    def __enter__(self) -> Harness:
        logging.getLogger().addHandler(self._errors)
        self._thread.start()
        self._call(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._call(self._stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()
            logging.getLogger().removeHandler(self._errors)

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout=CALL_TIMEOUT)
        except TimeoutError:
            # Where the loop is stuck is the finding: every thread's stack.
            faulthandler.dump_traceback(all_threads=True)
            raise

    async def _start(self) -> None:
        self._sidecar = Sidecar(self.config, environ={})
        await self._sidecar.start()
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT))
        port = self._sidecar.receiver_ports()["otlp_grpc"]
        self._channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")

    async def _stop(self) -> None:
        if self._channel is not None:
            await self._channel.close()
        if self._session is not None:
            await self._session.close()
        if self._sidecar is not None:
            await self._sidecar.stop()
        self._sidecar = self._session = self._channel = None

    async def _restart(self) -> None:
        await self._stop()
        self._errors.take()
        await self._start()
        self.restarts += 1

    # -- one case ------------------------------------------------------------------

    def run(self, case: Case) -> list[Failure]:
        """Send `case`, check the invariant, record what failed; returns the failures."""
        self.cases += 1
        failures = self._call(self._run(case))
        return failures

    def finish(self) -> list[Failure]:
        """The last promtool check, for the cases since the previous one."""
        return self._call(self._promtool_window(None))

    async def _run(self, case: Case) -> list[Failure]:
        self._window.append(case)
        failures = await self._send_and_check(case)
        scrape_failed = any(f.signature.startswith(("scrape", "serve")) for f in failures)
        if not scrape_failed and self.cases % self.promtool_every == 0:
            failures += await self._promtool_window(case)
        if scrape_failed:
            await self._restart()
            self._window = []
        return failures

    async def _send_and_check(self, case: Case) -> list[Failure]:
        failures: list[Failure] = []
        try:
            failures += await self._send(case)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            failures.append(Failure(f"serve: request failed: {type(exc).__name__}", f"{exc}"[:500]))
        await self._drain()
        failures = self._with_logs(failures)
        failures += await self._scrape()
        for failure in failures:
            self._record(failure, case)
        return failures

    def _with_logs(self, failures: list[Failure]) -> list[Failure]:
        """ERRORs logged while the case ran: the traceback behind a wrong status
        becomes part of its signature; one on its own (a consumer failing on a
        batch, answered 200) is a failure of its own."""
        logged = [(*_log_signature(r), r.name) for r in self._errors.take()]
        if failures and logged:
            first = failures[0]
            signature, detail, _ = logged[0]
            return [
                Failure(f"{first.signature}: {signature}", f"{detail}\n{first.detail}"),
                *failures[1:],
            ]
        return failures + [
            Failure(f"error log ({name}): {signature}", detail)
            for signature, detail, name in logged
        ]

    def reproduces(self, case: Case, signature: str) -> bool:
        """Whether `case` alone, on a fresh sidecar, fails with `signature` (for shrinking)."""
        return self._call(self._reproduces(case, signature))

    async def _reproduces(self, case: Case, signature: str) -> bool:
        await self._restart()
        self._window = []
        failures: list[Failure] = []
        try:
            failures += await self._send(case)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            failures.append(Failure(f"serve: request failed: {type(exc).__name__}", ""))
        await self._drain()
        failures = self._with_logs(failures)
        failures += await self._scrape()
        if signature.startswith("promtool") and not failures:
            failures += await self._promtool()
        await self._restart()
        return any(f.signature == signature for f in failures)

    async def _send(self, case: Case) -> list[Failure]:
        assert self._session is not None and self._sidecar is not None
        where = f"{case.transport} {case.signal} {case.encoding}"
        if case.transport == "grpc":
            assert self._channel is not None
            call = self._channel.unary_unary(
                _GRPC_METHOD[case.signal], request_serializer=None, response_deserializer=None
            )
            compression = grpc.Compression.Gzip if case.gzip else None
            try:
                await call(case.body, timeout=REQUEST_TIMEOUT, compression=compression)
                code = grpc.StatusCode.OK
            except grpc.aio.AioRpcError as error:
                code = error.code()
                if code not in GRPC_OK:
                    return [Failure(f"{where}: {code.name}", f"{error.details()}"[:500])]
            return []
        port = self._sidecar.receiver_ports()["otlp_http"]
        headers = {"Content-Type": _CONTENT_TYPE[case.encoding]}
        if case.gzip:
            headers["Content-Encoding"] = "gzip"
        async with self._session.post(
            f"http://127.0.0.1:{port}/v1/{case.signal}", data=case.wire_body(), headers=headers
        ) as response:
            payload = await response.read()
            if response.status not in HTTP_OK:
                return [
                    Failure(f"{where}: HTTP {response.status}", payload[:300].decode("latin-1"))
                ]
        return []

    async def _drain(self) -> None:
        """Wait until the pipeline has processed everything queued: a batch is
        popped and consumed without yielding, so an empty queue means it is done."""
        assert self._sidecar is not None
        pipeline = self._sidecar.pipeline
        deadline = time.monotonic() + REQUEST_TIMEOUT
        # The pipeline has no idle event to wait on: poll it.
        while pipeline is not None and pipeline.queued_spans and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.001)
        await asyncio.sleep(0)

    async def _get(self, path: str, accept: str = "") -> tuple[int, str]:
        assert self._session is not None and self._sidecar is not None
        headers = {"Accept": accept} if accept else {}
        url = f"http://127.0.0.1:{self._sidecar.server.port}{path}"
        async with self._session.get(url, headers=headers) as response:
            return response.status, await response.text()

    async def _scrape(self) -> list[Failure]:
        failures: list[Failure] = []
        try:
            status, body = await self._get("/healthz")
            if status != 200:
                failures.append(Failure(f"serve: /healthz {status}", body[:300]))
            for accept, openmetrics in ((TEXT, False), (OPENMETRICS, True)):
                fmt = "openmetrics" if openmetrics else "text"
                status, body = await self._get("/metrics", accept)
                if status != 200:
                    detail = body[:300]
                    signature = f"scrape {fmt}: /metrics {status}"
                    for record in self._errors.take():
                        sig, detail = _log_signature(record)
                        signature += f": {sig}"
                    failures.append(Failure(signature, detail))
                    continue
                failures += check_exposition(body, openmetrics)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            failures.append(Failure(f"serve: scrape failed: {type(exc).__name__}", str(exc)))
        return failures

    async def _promtool(self) -> list[Failure]:
        status, body = await self._get("/metrics", TEXT)
        if status != 200:
            return [Failure(f"scrape text: /metrics {status}", body[:300])]
        # promtool lints the text format only: fed OpenMetrics it reports every
        # counter's _total sample as a family with no help text (promtool 2.42).
        findings, returncode = await asyncio.to_thread(promtool_check_metrics, body)
        return promtool_failures(findings, returncode)

    async def _promtool_window(self, current: Case | None) -> list[Failure]:
        failures = await self._promtool()
        window, self._window = self._window, []
        if not failures:
            return []
        # Find the case that broke it: replay the window on a fresh sidecar.
        await self._restart()
        culprit: Case | None = None
        for i, case in enumerate(window):
            await self._send_and_check_quiet(case)
            found = await self._promtool()
            if found:
                culprit = case
                failures = found
                sequence = window[: i + 1]
                break
        else:
            sequence = window
        for failure in failures:
            self._record(failure, culprit or (current or window[-1]), sequence)
        await self._restart()
        return failures

    async def _send_and_check_quiet(self, case: Case) -> None:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
            await self._send(case)
        await self._drain()
        self._errors.take()

    def _record(self, failure: Failure, case: Case, sequence: list[Case] | None = None) -> None:
        known = self.found.get(failure.signature)
        if known is None:
            self.found[failure.signature] = Found(
                failure.signature, failure.detail, case, sequence=sequence or []
            )
            return
        known.count += 1
        if len(case.body) < len(known.case.body):
            known.case, known.detail = case, failure.detail
            known.sequence = sequence or []

    def report(self) -> str:
        lines = [f"{self.cases} cases, {self.restarts} restarts, {len(self.found)} signatures"]
        for found in sorted(self.found.values(), key=lambda f: f.signature):
            case = found.case
            lines.append(
                f"- [{found.count}x] {found.signature}\n"
                f"    case: {case.transport} {case.signal} {case.encoding}"
                f"{' gzip' if case.gzip else ''} ({len(case.body)} bytes): {case.body[:200]!r}\n"
                f"    detail: {found.detail[:400]}"
            )
        return "\n".join(lines)
