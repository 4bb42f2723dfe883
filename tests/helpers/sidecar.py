"""Start the real sidecar as a child process on 127.0.0.1 and talk to it over HTTP."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

ROOT = Path(__file__).resolve().parents[2]

BASE_CONFIG: dict[str, Any] = {
    "server": {"bind": "127.0.0.1", "port": 0},
    "receiver": {"http": {"port": 0}, "grpc": {"port": 0}},
    "host": {"interval": "0.5s"},
    "engine": {"interval": "0.5s"},
}


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 10.0) -> Response:
    return http_request(url, headers=headers, timeout=timeout)


def http_post(
    url: str, body: bytes, headers: dict[str, str] | None = None, timeout: float = 30.0
) -> Response:
    return http_request(url, body, headers, timeout)


def http_request(
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> Response:
    request = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return Response(r.status, {k.lower(): v for k, v in r.headers.items()}, r.read())
    except urllib.error.HTTPError as e:
        return Response(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read())


@dataclass
class SidecarProcess:
    """One running `tickscope run`; logs are collected as parsed JSON lines."""

    config_path: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    port: int | None = None
    receivers: dict[str, int] = field(default_factory=dict)
    logs: list[dict[str, Any]] = field(default_factory=list)
    raw_stderr: list[str] = field(default_factory=list)
    _lines: queue.Queue[str | None] = field(default_factory=queue.Queue)

    @classmethod
    def write_config(cls, directory: Path, overrides: dict[str, Any] | None = None) -> Path:
        path = directory / "tickscope.yaml"
        path.write_text(yaml.safe_dump(merge(BASE_CONFIG, overrides or {})))
        return path

    def start(self, timeout: float = 20.0) -> SidecarProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TICKSCOPE_")}
        env.update(self.env)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tickscope", "run", "--config", str(self.config_path)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        threading.Thread(target=self._pump, daemon=True).start()
        event = self.wait_for_log("admin server listening", timeout)
        self.port = int(event["port"])
        started = self.wait_for_log("tickscope started", timeout)
        self.receivers = {k: int(v) for k, v in (started.get("receivers") or {}).items()}
        return self

    @property
    def otlp_http_url(self) -> str:
        return f"http://127.0.0.1:{self.receivers['otlp_http']}"

    @property
    def otlp_grpc_target(self) -> str:
        return f"127.0.0.1:{self.receivers['otlp_grpc']}"

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            self.raw_stderr.append(line)
            with contextlib.suppress(json.JSONDecodeError):
                self.logs.append(json.loads(line))
            self._lines.put(line)
        self._lines.put(None)

    def wait_for_log(self, msg: str, timeout: float = 20.0, **fields: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            for entry in self.logs[seen:]:
                if entry.get("msg") == msg and all(entry.get(k) == v for k, v in fields.items()):
                    return entry
            seen = len(self.logs)
            if self.proc is not None and self.proc.poll() is not None and self._lines.empty():
                break
            time.sleep(0.02)
        raise AssertionError(
            f"log {msg!r} {fields} not seen within {timeout}s; stderr:\n"
            + "\n".join(self.raw_stderr)
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, headers: dict[str, str] | None = None) -> Response:
        return http_get(self.url + path, headers)

    def metrics_text(self) -> str:
        r = self.get("/metrics")
        assert r.status == 200, r.text
        return r.text

    def families(self, openmetrics: bool = False) -> dict[str, Metric]:
        if openmetrics:
            r = self.get("/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"})
            assert r.headers["content-type"].startswith("application/openmetrics-text"), r.headers
            return {m.name: m for m in parse_openmetrics(r.text)}
        return {m.name: m for m in parse_text(self.metrics_text())}

    def wait_until(self, predicate: Any, timeout: float = 15.0, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = predicate()
            if last:
                return last
            time.sleep(0.1)
        raise AssertionError(f"{what} not reached within {timeout}s (last: {last!r})")

    def families_when(self, predicate: Any, what: str, timeout: float = 15.0) -> dict[str, Metric]:
        """Scrape until `predicate(families)` holds; return those families."""

        def check() -> dict[str, Metric] | None:
            families = self.families()
            return families if predicate(families) else None

        result: dict[str, Metric] = self.wait_until(check, timeout=timeout, what=what)
        return result

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TICKSCOPE_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "tickscope", *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def sample_value(family: Metric, name: str | None = None, **labels: str) -> float:
    matches = [
        s.value
        for s in family.samples
        if (name is None or s.name == name) and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(matches) == 1, f"{family.name} {labels}: {len(matches)} samples: {family.samples}"
    return float(matches[0])


def gunzip(body: bytes) -> bytes:
    return gzip.decompress(body)


StartSidecar = Callable[..., SidecarProcess]


class Starter:
    """Starts real sidecar processes in fresh directories; stops them all at the end."""

    def __init__(self, make_dir: Callable[[], Path]) -> None:
        self.make_dir = make_dir
        self.started: list[SidecarProcess] = []

    def __call__(
        self, overrides: dict[str, Any] | None = None, env: dict[str, str] | None = None
    ) -> SidecarProcess:
        config = SidecarProcess.write_config(self.make_dir(), overrides)
        sidecar = SidecarProcess(config, env or {})
        self.started.append(sidecar)
        return sidecar.start()

    def stop_all(self) -> None:
        for sidecar in self.started:
            sidecar.stop()
