"""The command line, and bad input that must stop the sidecar with a clear message."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

from helpers.sidecar import BASE_CONFIG, merge, run_cli


def write_config(tmp_path: Path, overrides: dict) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(merge(BASE_CONFIG, overrides)))
    return path


def error_lines(stderr: str) -> list[str]:
    return [
        json.loads(line)["msg"]
        for line in stderr.splitlines()
        if line.startswith("{") and '"level":"error"' in line
    ]


def test_version() -> None:
    r = run_cli("version")
    assert r.returncode == 0 and r.stdout.startswith("tickscope ")


def test_check_config_ok(tmp_path: Path) -> None:
    path = write_config(tmp_path, {})
    r = run_cli("check-config", str(path))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{path}: OK"


def test_check_config_print_shows_effective_values(tmp_path: Path) -> None:
    r = run_cli("check-config", "--print", env={"TICKSCOPE_SERVER__PORT": "9123"})
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load(r.stdout)["server"]["port"] == 9123


def test_check_config_lists_every_problem_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("receiver:\n  http:\n    port: 65536\nhost:\n  intervall: 5s\n")
    r = run_cli("check-config", str(path))
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr.splitlines() == [
        f"tickscope: invalid configuration in {path} (2 problems):",
        "  receiver.http.port: Input should be less than 65536",
        "  host.intervall: unknown key (expected one of: enabled, interval, procfs, sysfs, "
        "rootfs, filesystem, disk, network, hwmon, meminfo_all_fields)",
    ]


def test_run_with_a_file_that_is_not_yaml(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("server: {port: [1, 2}\n")
    r = run_cli("run", "--config", str(path))
    assert r.returncode == 2
    assert f"{path}: not valid YAML at line 1" in r.stderr
    assert "Traceback" not in r.stderr


def test_run_with_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        path = write_config(tmp_path, {"server": {"port": port}})
        r = run_cli("run", "--config", str(path))
    assert r.returncode == 2
    assert error_lines(r.stderr) == [
        f"cannot listen for the admin server on 127.0.0.1:{port} (server.port): "
        "address already in use (another process listens there)"
    ]
    assert "Traceback" not in r.stderr


def test_run_with_an_unreadable_pid_file(tmp_path: Path) -> None:
    # A directory where the pid file should be: unreadable even for root.
    pid_file = tmp_path / "engine.pid"
    pid_file.mkdir()
    path = write_config(
        tmp_path, {"engine": {"processes": [{"name": "engine", "pid_file": str(pid_file)}]}}
    )
    r = run_cli("run", "--config", str(path))
    assert r.returncode == 2
    assert error_lines(r.stderr) == [
        f"engine.processes (engine): pid file {pid_file} is a directory, not a regular file"
    ]


def test_run_with_a_fifo_pid_file_exits_2_before_listening(tmp_path: Path) -> None:
    # Issue 11, defect 11: open() of a FIFO waited for a writer, before the server
    # listened; run_cli's 30 s timeout is the failure before the fix.
    pid_file = tmp_path / "engine.pid"
    os.mkfifo(pid_file)
    path = write_config(
        tmp_path, {"engine": {"processes": [{"name": "engine", "pid_file": str(pid_file)}]}}
    )
    r = run_cli("run", "--config", str(path), timeout=20)
    assert r.returncode == 2
    assert error_lines(r.stderr) == [
        f"engine.processes (engine): pid file {pid_file} is a FIFO, not a regular file"
    ]


def test_run_with_a_bad_downward_api_value(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, {"engine": {"processes": [{"name": "engine", "process_name": "x"}]}}
    )
    r = run_cli("run", "--config", str(path), env={"ENGINE_MEMORY_LIMIT": "lots"})
    assert r.returncode == 2
    assert error_lines(r.stderr) == [
        "engine process 'engine': env ENGINE_MEMORY_LIMIT: 'lots' is not a Kubernetes quantity "
        "(examples: 536870912, 512Mi, 1.5, 500m)"
    ]


def test_run_with_a_bad_env_override() -> None:
    r = run_cli("run", env={"TICKSCOPE_LOGGING__FORMAT": "xml"})
    assert r.returncode == 2
    assert (
        "logging.format: Input should be 'json' or 'text' (from TICKSCOPE_LOGGING__FORMAT)"
        in r.stderr
    )


def test_text_log_format(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        path = write_config(tmp_path, {"server": {"port": port}})
        r = run_cli("run", "--config", str(path), "--log-format", "text")
    assert r.returncode == 2
    assert "ERROR   tickscope: cannot listen for the admin server" in r.stderr
    assert not any(line.startswith("{") for line in r.stderr.splitlines())


def test_run_with_an_otlp_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        path = write_config(tmp_path, {"receiver": {"http": {"port": port}}})
        r = run_cli("run", "--config", str(path))
    assert r.returncode == 2
    assert error_lines(r.stderr) == [
        f"cannot listen for OTLP/HTTP on 127.0.0.1:{port} (receiver.http.port): "
        "address already in use (another process listens there)"
    ]


def test_run_with_a_bad_web_config_file_flag_exits_2(tmp_path: Path) -> None:
    # --web.config.file, as node_exporter takes it: validated like server.web_config_file.
    web = tmp_path / "web.yml"
    web.write_text("basic_auth_users:\n  prometheus: not-a-hash\n")
    r = run_cli("run", "--web.config.file", str(web))
    assert r.returncode == 2
    assert r.stderr.splitlines() == [
        f"tickscope: --web.config.file: web config {web}: basic_auth_users: Value error, "
        "user 'prometheus': not a bcrypt hash (make one with htpasswd -nBC 10 \"\")"
    ]


def test_run_with_the_web_config_file_flag_asks_for_credentials(tmp_path: Path) -> None:
    import base64
    import urllib.error
    import urllib.request

    import bcrypt

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = tmp_path / "tickscope.yaml"
    config.write_text(
        f"server: {{bind: 127.0.0.1, port: {port}}}\nhost: {{enabled: false}}\n"
        "receiver: {http: {enabled: false}, grpc: {enabled: false}}\n"
    )
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  prometheus: '{hashed}'\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKSCOPE_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tickscope", "run", "--config", str(config),
         "--web.config.file", str(web)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/metrics"

    def status(headers: dict[str, str]) -> int:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5):
                return 200
        except urllib.error.HTTPError as exc:
            return exc.code

    try:
        for _ in range(100):
            try:
                first = status({})
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise AssertionError("the sidecar did not listen")
        assert first == 401
        good = base64.b64encode(b"prometheus:s3cret").decode()
        assert status({"Authorization": f"Basic {good}"}) == 200
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
