"""Helpers the benchmarks share: start real processes, time requests, summarise."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary_ms(values: list[float]) -> str:
    return (
        f"median {statistics.median(values) * 1000:7.3f} ms   "
        f"p95 {percentile(values, 95) * 1000:7.3f} ms   p99 {percentile(values, 99) * 1000:7.3f} ms"
    )


def wait_http(url: str, timeout: float = 20.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer within {timeout}s")
        time.sleep(0.05)


@contextlib.contextmanager
def sidecar(
    config: dict[str, Any], env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """Run `tickscope run` with `config`; yields (process, admin port)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        port = free_port()
        config = {
            **config,
            "server": {**config.get("server", {}), "bind": "127.0.0.1", "port": port},
        }
        path.write_text(yaml.safe_dump(config))
        proc = subprocess.Popen(
            [sys.executable, "-m", "tickscope", "run", "--config", str(path)],
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_http(f"http://127.0.0.1:{port}/healthz")
            deadline = time.monotonic() + 20
            import urllib.error
            import urllib.request

            while time.monotonic() < deadline:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                        if json.load(r)["status"] == "ready":
                            break
                except (OSError, urllib.error.HTTPError):
                    pass
                time.sleep(0.05)
            yield proc, port
        finally:
            proc.terminate()
            proc.wait(15)


class LoadGenerator:
    """bench/load_otlp.py in its own process. Started with `args`, it builds its
    batches and connects, then waits; `run` lets it go and returns its result,
    so that the caller can read counters and CPU times just before."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "load_otlp.py"), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._stdin, self._stdout = self.proc.stdin, self.proc.stdout
        assert json.loads(self._stdout.readline())["ready"]

    def run(self) -> dict[str, Any]:
        self._stdin.write("\n")
        self._stdin.flush()
        result: dict[str, Any] = json.loads(self._stdout.readline())
        self.proc.wait(30)
        return result
