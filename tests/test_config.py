from __future__ import annotations

import re
from pathlib import Path

import pytest

from tickscope.agent.config import Config, ConfigError, load_config
from tickscope.agent.server import ServerConfig
from tickscope.core.configtypes import parse_duration

SERVER_KEYS = ", ".join(ServerConfig.model_fields)


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return str(path)


def problems(path: str | None, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, environ or {})
    return info.value.problems


def test_defaults_need_no_file() -> None:
    config = load_config(None, {})
    assert config.server.bind == "0.0.0.0"
    assert config.server.port == 9464
    assert config.receiver.http.port == 4318
    assert config.receiver.http.bind == "127.0.0.1"
    assert config.receiver.grpc.port == 4317
    assert config.receiver.http.max_body_bytes == 20 * 1024 * 1024  # the Collector's default
    assert config.host.enabled and config.host.interval == 2.0
    assert config.engine.processes == []
    assert config.logging.format == "json"


def test_defaults_filter_like_node_exporter() -> None:
    fs = load_config(None, {}).host.filesystem
    for fstype in ("tmpfs", "overlay", "proc", "sysfs", "cgroup2", "squashfs"):
        assert not fs.fs_types.keeps(fstype), fstype
    for fstype in ("ext4", "xfs", "btrfs", "nfs4"):
        assert fs.fs_types.keeps(fstype), fstype
    for mountpoint in ("/proc", "/sys/fs/cgroup", "/dev", "/var/lib/docker/overlay2/x"):
        assert not fs.mount_points.keeps(mountpoint), mountpoint
    for mountpoint in ("/", "/data", "/var/lib/engine", "/devices"):
        assert fs.mount_points.keeps(mountpoint), mountpoint
    net = load_config(None, {}).host.network.devices
    assert not net.keeps("lo") and not net.keeps("veth1a2b") and net.keeps("eth0")
    disk = load_config(None, {}).host.disk.devices
    assert disk.keeps("sda") and disk.keeps("nvme0n1") and disk.keeps("vda")
    assert not disk.keeps("sda1") and not disk.keeps("nvme0n1p2") and not disk.keeps("loop3")


def test_file_values_are_used(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
server: {bind: 127.0.0.1, port: 9999, shutdown_timeout: 3s}
receiver:
  http: {port: 14318, max_body_bytes: 1MiB}
host:
  interval: 500ms
  network: {devices: {include: "^(eth|lo)"}}
engine:
  interval: 1m
  processes:
    - {name: engine, cmdline: "python .*bot.py", required: false}
    - {name: pidfile-engine, pid_file: /run/engine.pid}
logging: {level: debug, format: text}
""",
    )
    config = load_config(path, {})
    assert config.server.port == 9999 and config.server.shutdown_timeout == 3.0
    assert config.receiver.http.port == 14318
    assert config.receiver.http.max_body_bytes == 1024 * 1024
    assert config.host.interval == 0.5
    assert config.host.network.devices.keeps("eth0") and not config.host.network.devices.keeps(
        "wlan0"
    )
    assert config.engine.interval == 60.0
    first, second = config.engine.processes
    assert first.cmdline is not None and first.cmdline.search("python /app/bot.py --live")
    assert first.required is False and second.required is True
    assert second.pid_file == "/run/engine.pid"
    assert config.logging.level == "debug"


def test_env_overrides_file(tmp_path: Path) -> None:
    path = write(tmp_path, "server: {port: 9999}\nhost: {interval: 5s}\n")
    config = load_config(
        path,
        {
            "TICKSCOPE_SERVER__PORT": "9100",
            "TICKSCOPE_RECEIVER__HTTP__MAX_BODY_BYTES": "2MiB",
            "TICKSCOPE_HOST__FILESYSTEM__ENABLED": "false",
            "TICKSCOPE_ENGINE__PROCESSES": '[{"name": "bot", "process_name": "python3"}]',
        },
    )
    assert config.server.port == 9100
    assert config.host.interval == 5.0  # from the file, untouched by env
    assert config.receiver.http.max_body_bytes == 2 * 1024 * 1024
    assert config.host.filesystem.enabled is False
    assert [p.name for p in config.engine.processes] == ["bot"]


def test_env_vars_kubernetes_injects_are_ignored() -> None:
    # A Service named "tickscope" makes the kubelet set these in every pod.
    config = load_config(
        None,
        {
            "TICKSCOPE_PORT": "tcp://10.0.0.1:9464",
            "TICKSCOPE_SERVICE_HOST": "10.0.0.1",
            "TICKSCOPE_PORT_9464_TCP_ADDR": "10.0.0.1",
            "TICKSCOPE_CONFIG": "/etc/tickscope/config.yaml",
        },
    )
    assert config == Config()


def test_unknown_key_in_file_is_an_error_listing_the_allowed_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "server:\n  prot: 9464\nhosts: {}\n")
    found = problems(path)
    # The list is the model's own (other issues add server keys); its head is fixed.
    assert f"server.prot: unknown key (expected one of: {SERVER_KEYS})" in found
    assert SERVER_KEYS.startswith("bind, port, shutdown_timeout, liveness_max_loop_lag")
    assert any(
        p.startswith("hosts: unknown key (expected one of: server, receiver, host,") for p in found
    )
    assert len(found) == 2


def test_unknown_key_in_env_under_a_section_is_an_error() -> None:
    found = problems(None, {"TICKSCOPE_SERVER__PROT": "1"})
    assert found == [
        f"server.prot: unknown key (expected one of: {SERVER_KEYS}) (from TICKSCOPE_SERVER__PROT)"
    ]


def test_bad_values_report_every_error_with_its_path(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
receiver:
  http: {port: 65536}
  grpc: {port: -1}
host: {interval: soon}
engine:
  processes:
    - {name: a}
    - {name: b, process_name: x, pid_file: /run/x.pid}
    - {name: c, cmdline: "(unclosed"}
logging: {format: xml}
""",
    )
    found = problems(path)
    assert "receiver.http.port: Input should be less than 65536" in found
    assert "receiver.grpc.port: Input should be greater than or equal to 0" in found
    assert any(p.startswith("host.interval: invalid duration 'soon'") for p in found), found
    assert "engine.processes[0]: set exactly one of process_name, cmdline, pid_file" in found
    assert (
        "engine.processes[1]: set exactly one of process_name, cmdline, pid_file "
        "(got process_name, pid_file)" in found
    )
    assert any(
        re.match(r"engine\.processes\[2\]\.cmdline: invalid regular expression '\(unclosed'", p)
        for p in found
    ), found
    assert any(p.startswith("logging.format: Input should be 'json' or 'text'") for p in found)
    assert len(found) == 7


def test_env_error_names_the_variable() -> None:
    found = problems(None, {"TICKSCOPE_RECEIVER__HTTP__PORT": "70000"})
    assert found == [
        "receiver.http.port: Input should be less than 65536 (from TICKSCOPE_RECEIVER__HTTP__PORT)"
    ]


def test_env_json_that_does_not_parse() -> None:
    found = problems(None, {"TICKSCOPE_ENGINE__PROCESSES": "[{"})
    assert len(found) == 1 and found[0].startswith("TICKSCOPE_ENGINE__PROCESSES: not valid JSON")


def test_duplicate_process_names_and_ports() -> None:
    found = problems(
        None,
        {
            "TICKSCOPE_ENGINE__PROCESSES": (
                '[{"name": "e", "process_name": "a"}, {"name": "e", "process_name": "b"}]'
            ),
        },
    )
    assert found == [
        "engine.processes: process name 'e' is used twice; names must be unique "
        "(from TICKSCOPE_ENGINE__PROCESSES)"
    ]
    found = problems(None, {"TICKSCOPE_SERVER__PORT": "4318"})
    assert found == [
        "(top level): receiver.http.port and server.port are both 4318; each needs its own port"
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("server: [unclosed\n", "not valid YAML at line 2, column 1"),
        (
            "server: {port: 1}\nserver: {port: 2}\n",
            "not valid YAML at line 2, column 1: duplicate key 'server'",
        ),
        ("- just\n- a list\n", "the top level must be a mapping of sections, got list"),
        ("\x00\x01binary", "not valid YAML"),
    ],
)
def test_files_that_are_not_config(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    found = problems(path)
    assert len(found) == 1 and found[0].startswith(f"{path}: {message}"), found


def test_missing_file(tmp_path: Path) -> None:
    assert problems(str(tmp_path / "nope.yaml")) == [f"{tmp_path / 'nope.yaml'}: no such file"]


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "# nothing here\n"), {}) == Config()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("15s", 15.0), ("500ms", 0.5), ("1m30s", 90.0), ("2h", 7200.0), ("1.5", 1.5), (3, 3)],
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5 s", "s", "1x", "15s3"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_negative_interval_is_rejected() -> None:
    assert problems(None, {"TICKSCOPE_HOST__INTERVAL": "0"}) == [
        "host.interval: Input should be greater than 0 (from TICKSCOPE_HOST__INTERVAL)"
    ]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"TICKSCOPE_SPANMETRICS__BUCKETS": "[1.0, 0.5]"},
            "spanmetrics.buckets: bucket bounds must be strictly increasing",
        ),
        (
            {"TICKSCOPE_TRADING__ORDER_LATENCY_BUCKETS": "[0.1, 0.1]"},
            "trading.order_latency_buckets: bucket bounds must be strictly increasing",
        ),
        (
            {"TICKSCOPE_SPANMETRICS__BUCKETS": "[0, 1]"},
            "spanmetrics.buckets[0]: Input should be greater than 0",
        ),
        (
            {"TICKSCOPE_SPANMETRICS__DIMENSIONS": '[{"name": "le", "attribute": "x"}]'},
            "spanmetrics.dimensions: dimension name 'le' is reserved",
        ),
        (
            {"TICKSCOPE_FORWARD__ENABLED": "true"},
            "forward: endpoint is required when forwarding is enabled",
        ),
        (
            {"TICKSCOPE_FORWARD__ENDPOINT": "collector:4317"},
            "forward: endpoint 'collector:4317' must be an http:// or https:// URL with a host",
        ),
    ],
)
def test_span_path_config_errors(env: dict[str, str], message: str) -> None:
    found = problems(None, env)
    assert len(found) == 1 and found[0].startswith(message), found
