"""The real alerting path for end-to-end tests: Prometheus and Alertmanager (the
Debian packages) on 127.0.0.1 with throwaway storage, a webhook receiver that
records what Alertmanager sends, and the test-only rewrite of the rules' `for`."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def shorten_for(source: Path, target: Path, duration: str) -> None:
    """Copy the rule files with every `for` set to `duration`; expressions, labels
    and annotations stay as they are."""
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.glob("*.rules.yml")):
        document = yaml.safe_load(path.read_text())
        for group in document["groups"]:
            for rule in group["rules"]:
                if "for" in rule:
                    rule["for"] = duration
        (target / path.name).write_text(yaml.safe_dump(document, sort_keys=False))


@dataclass
class Notification:
    received: float  # time.monotonic()
    path: str
    body: dict[str, Any]

    def alerts(self, name: str, status: str) -> list[dict[str, Any]]:
        return [
            alert
            for alert in self.body.get("alerts", [])
            if alert["labels"].get("alertname") == name and alert["status"] == status
        ]


@dataclass
class Webhook:
    """Records Alertmanager's webhook posts (its JSON, version 4)."""

    notifications: list[Notification] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Webhook:
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with webhook._lock:
                    webhook.notifications.append(
                        Notification(time.monotonic(), self.path, json.loads(body))
                    )
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def wait_for(
        self, name: str, status: str, since: float, timeout: float
    ) -> tuple[Notification, dict[str, Any]]:
        """The first notification after `since` carrying alert `name` in `status`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                for note in self.notifications:
                    if note.received >= since and (found := note.alerts(name, status)):
                        return note, found[0]
            time.sleep(0.1)
        with self._lock:
            seen = [
                (n.path, [(a["labels"]["alertname"], a["status"]) for a in n.body["alerts"]])
                for n in self.notifications
            ]
        raise AssertionError(
            f"no {status} {name} reached the webhook within {timeout:.0f}s; it received: {seen}"
        )


class _Server:
    """A Debian-packaged server process on 127.0.0.1, stopped by stop()."""

    name = "server"

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = directory / f"{self.name}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def args(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = 30.0) -> _Server:
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [self.binary, *self.args()],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.wait(lambda: self.get("/-/ready") is not None, timeout, "ready")
        return self

    def get(self, path: str) -> Any:
        """JSON (or text) of a GET, None while the server does not answer 200."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as response:
                text = response.read().decode()
        except OSError:
            return None
        with contextlib.suppress(ValueError):
            return json.loads(text)
        return text

    def wait(self, check: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited: {self.log.read_text()[-3000:]}")
            result = check()
            if result:
                return result
            time.sleep(0.2)
        raise AssertionError(f"{self.name}: no {what} within {timeout:.0f}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class Alertmanager(_Server):
    name = "alertmanager"

    def __init__(self, binary: str, directory: Path, config: dict[str, Any]) -> None:
        super().__init__(binary, directory)
        self.config_path = directory / "alertmanager.yml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def args(self) -> list[str]:
        return [
            f"--config.file={self.config_path}",
            f"--storage.path={self.directory / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",  # no gossip: a single instance
        ]


class Prometheus(_Server):
    name = "prometheus"

    def __init__(
        self, binary: str, directory: Path, rules: Path, targets: list[str], alertmanager: str
    ) -> None:
        super().__init__(binary, directory)
        self.config_path = directory / "prometheus.yml"
        config = {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "rule_files": [str(rules / "*.rules.yml")],
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
            # The rules expect the sidecar's job to be called tickscope.
            "scrape_configs": [{"job_name": "tickscope", "static_configs": [{"targets": targets}]}],
        }
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def args(self) -> list[str]:
        return [
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.directory / 'prom-data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = self.get("/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        if not isinstance(answer, dict) or answer.get("status") != "success":
            raise AssertionError(f"query {expr!r} failed: {answer!r}")
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def rules_loaded(self) -> int:
        answer = self.get("/api/v1/rules")
        if not answer:
            return 0
        return sum(len(group["rules"]) for group in answer["data"]["groups"])


def example_alertmanager_config(example: Path, webhook: str) -> dict[str, Any]:
    """alert-rules/alertmanager.example.yml, with its routes, grouping and
    inhibitions as they are, but every receiver's webhook pointing at `webhook`
    (path = receiver name) and the group timers at 1s."""
    config: dict[str, Any] = yaml.safe_load(example.read_text())
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = f"{webhook}/{receiver['name']}"
    routes = [config["route"], *config["route"].get("routes", [])]
    for route in routes:
        for timer in ("group_wait", "group_interval"):
            if timer in route or route is config["route"]:
                route[timer] = "1s"
    return config
