"""The admin HTTP server: GET /metrics, /healthz, /readyz, /engine/healthz and / (status).

/healthz is the sidecar's own liveness (its event loop turns); /engine/healthz is
the engine's, from its loops' heartbeats (tickscope.collectors.engine.heartbeat):
the engine container's liveness probe asks the sidecar, so the engine needs no
HTTP server of its own.

It binds 0.0.0.0 so Prometheus can scrape the pod, so it is built for clients
that misbehave: a request head must arrive within `read_timeout`, a response
be taken within `write_timeout`, an idle connection goes after `idle_timeout`;
/metrics reuses one rendered exposition per (format, name[] filter)
for `metrics_cache_ttl`, so a flood of scrapes costs writes, not renders. TLS
and basic auth come from a web config file in the format Prometheus exporters
share (exporter-toolkit's --web.config.file), so a scrape config that works for
node_exporter works here.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import hashlib
import hmac
import json
import logging
import re
import secrets
import ssl
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter
from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from tickscope.agent.status import Status
from tickscope.collectors.engine.heartbeat import EngineHeartbeats, HeartbeatReport
from tickscope.core.configtypes import Duration, ListenHost, Port, StrictModel, parse_duration
from tickscope.core.errors import ListenError, StartupError
from tickscope.core.health import Health, LoopMonitor
from tickscope.core.httpconn import MalformedCountingHandler
from tickscope.exporters.prometheus import Exposition, negotiate, render
from tickscope.exposition.text import RenderedFamilies

__all__ = [
    "AdminServer",
    "BasicAuth",
    "HTTPServerConfig",
    "RateLimitConfig",
    "ServerConfig",
    "TLSServerConfig",
    "WebConfig",
    "WebConfigError",
    "load_web_config",
    "tls_context",
]

log = logging.getLogger("tickscope.server")

# Probes answer without credentials when server.probes_without_auth is set: the
# kubelet's httpGet probes would otherwise need the password in the pod spec.
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/engine/healthz"})

# Why a request on the admin port was refused (tickscope_admin_rejected_requests_total).
REJECT_REASONS = (
    "unauthorized",  # no, malformed or wrong basic-auth credentials
    "auth_overloaded",  # more password checks waiting than server.auth_max_pending
    "client_cert",  # a client certificate whose SANs are not in client_allowed_sans
    "rate_limited",  # the web config's rate_limit token bucket was empty
    "render_budget",  # a name[]-filtered render with server.max_render_percent used up
    "read_timeout",  # a request head not complete within server.read_timeout
    "write_timeout",  # a client that did not take its response within server.write_timeout
    "malformed",  # HTTP aiohttp could not parse (answered 400)
)

# A web config is a few hundred bytes; 1 MiB leaves room for inline PEM chains
# and refuses /dev/zero or a log file given by mistake before it is read whole.
_WEB_CONFIG_MAX_BYTES = 1 << 20

_CacheTTL = Annotated[
    float, BeforeValidator(parse_duration), Field(ge=0, le=60, allow_inf_nan=False)
]
_Timeout = Annotated[Duration, Field(le=3600, allow_inf_nan=False)]


class ServerConfig(StrictModel):
    bind: ListenHost = Field("0.0.0.0", description="Address the admin server listens on.")
    port: Port = Field(
        9464, description="Admin port: /metrics, /healthz, /readyz, /engine/healthz, /."
    )
    shutdown_timeout: Duration = Field(
        10.0,
        description="Time allowed for in-flight requests and flushing after SIGTERM; keep it "
        "under the pod's terminationGracePeriodSeconds (30s by default).",
    )
    liveness_max_loop_lag: Duration = Field(
        5.0, description="/healthz fails once the event loop has been blocked this long."
    )
    web_config_file: Path | None = Field(
        None,
        description="TLS and basic auth for the admin port: a web config file in the format "
        "Prometheus exporters share (exporter-toolkit's --web.config.file: tls_server_config, "
        "http_server_config, basic_auth_users with bcrypt hashes, rate_limit). Read at startup; "
        "unknown keys are errors. Unset: plain HTTP, no auth.",
    )
    probes_without_auth: bool = Field(
        True,
        description="/healthz, /readyz and /engine/healthz answer without credentials (and "
        "are not rate limited) when basic auth is on, so kubelet probes need no password in "
        "the pod spec.",
    )
    idle_timeout: _Timeout = Field(
        75.0,
        description="A connection with no request in progress is closed after this long "
        "(longer than Prometheus's 1m default scrape interval, so its connection is reused).",
    )
    read_timeout: _Timeout = Field(
        10.0,
        description="Once the first byte of a request (or a TLS handshake) arrives, the whole "
        "request head must arrive within this, or the connection is closed.",
    )
    write_timeout: _Timeout = Field(
        10.0,
        description="A response the client does not take within this is abandoned and the "
        "connection closed (Prometheus's scrape_timeout is 10s by default).",
    )
    metrics_cache_ttl: _CacheTTL = Field(
        1.0,
        description="A rendered /metrics (per format and name[] filter, held gzipped) is reused "
        "for this long, so concurrent and back-to-back scrapes cost one render; 0 renders "
        "every scrape.",
    )
    metrics_cache_entries: int = Field(
        16, ge=1, le=1024, description="Rendered /metrics variants kept at once (LRU)."
    )
    max_render_percent: int = Field(
        25,
        ge=1,
        le=100,
        description="Percent of the event loop's time /metrics renders may take (a budget of "
        "render seconds refilled at this rate). Past it, a variant whose cached copy expired "
        "is served from that copy (stale) and a name[] filter never rendered gets 429; an "
        "unfiltered variant seen for the first time is always rendered (at most 2 exist: "
        "text and OpenMetrics).",
    )
    auth_cache_entries: int = Field(
        100,
        ge=1,
        le=100_000,
        description="Basic-auth results remembered (keyed by an HMAC of user, hash and "
        "password), so a scraper pays bcrypt once, not on every scrape.",
    )
    auth_max_pending: int = Field(
        32,
        ge=1,
        le=10_000,
        description="Password checks (bcrypt, one at a time, in a thread) allowed to wait; "
        "past it 429, so guessing passwords cannot queue unbounded work.",
    )

    @field_validator("web_config_file")
    @classmethod
    def _web_config_loads(cls, value: Path | None) -> Path | None:
        # Checked at load time, so `check-config` and `run` both refuse a bad
        # file with its path (exit 2) before anything listens.
        if value is not None:
            try:
                tls_context(load_web_config(value).tls_server_config)
            except WebConfigError as exc:
                raise ValueError(str(exc)) from None
        return value


# --- the web config file (exporter-toolkit's format) --------------------------------------

_TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
TLSVersionName = Literal["TLS10", "TLS11", "TLS12", "TLS13"]

# Go's crypto/tls names (what exporter-toolkit accepts: tls.CipherSuites()) to
# OpenSSL's. TLS 1.3 suites are not configurable in Go either: accepted, ignored.
_CIPHERS = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
}
_TLS13_CIPHERS = frozenset(
    {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
)
_CURVES = {"CurveP256": "prime256v1", "CurveP384": "secp384r1", "CurveP521": "secp521r1"}
_CURVES_IGNORED = frozenset({"X25519"})  # OpenSSL offers it by default; set_ecdh_curve cannot

# bcrypt as htpasswd -B and Go's bcrypt write it: $2a$, $2b$ or $2y$, cost, 53 chars.
_BCRYPT = re.compile(r"^\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}$")

# The headers exporter-toolkit allows in http_server_config.headers, with the
# values it allows where it restricts them.
_HEADERS: dict[str, frozenset[str] | None] = {
    "Content-Security-Policy": None,
    "X-Frame-Options": frozenset({"deny", "sameorigin"}),
    "X-Content-Type-Options": frozenset({"nosniff"}),
    "X-XSS-Protection": None,
    "Strict-Transport-Security": None,
}


class WebConfigError(StartupError):
    """The web config file cannot be used; the message names the file and the key."""


class TLSServerConfig(StrictModel):
    cert: str | None = None
    key: SecretStr | None = None
    client_ca: str | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    client_auth_type: Literal[
        "NoClientCert",
        "RequestClientCert",
        "RequireAnyClientCert",
        "VerifyClientCertIfGiven",
        "RequireAndVerifyClientCert",
    ] = "NoClientCert"
    client_ca_file: Path | None = None
    client_allowed_sans: list[str] | None = None
    min_version: TLSVersionName = "TLS12"
    max_version: TLSVersionName = "TLS13"
    cipher_suites: list[str] | None = None
    prefer_server_cipher_suites: bool = True
    curve_preferences: list[str] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> TLSServerConfig:
        if self.cert is not None and self.cert_file is not None:
            raise ValueError("give cert or cert_file, not both")
        if self.key is not None and self.key_file is not None:
            raise ValueError("give key or key_file, not both")
        if self.client_ca is not None and self.client_ca_file is not None:
            raise ValueError("give client_ca or client_ca_file, not both")
        has_cert = self.cert is not None or self.cert_file is not None
        has_key = self.key is not None or self.key_file is not None
        if has_cert != has_key:
            raise ValueError("a certificate needs its key and a key its certificate")
        if self.client_auth_type in ("RequestClientCert", "RequireAnyClientCert"):
            # Python's ssl cannot ask for a certificate without verifying it.
            raise ValueError(
                f"client_auth_type {self.client_auth_type} is not supported: use "
                "VerifyClientCertIfGiven or RequireAndVerifyClientCert with a client CA"
            )
        verifies = self.client_auth_type != "NoClientCert"
        has_ca = self.client_ca is not None or self.client_ca_file is not None
        if verifies and not has_ca:
            raise ValueError(f"client_auth_type {self.client_auth_type} needs client_ca_file")
        if has_ca and not verifies:
            raise ValueError(
                "client_ca_file is set but client_auth_type is NoClientCert: "
                "set client_auth_type: RequireAndVerifyClientCert"
            )
        if self.client_allowed_sans and self.client_auth_type != "RequireAndVerifyClientCert":
            raise ValueError(
                "client_allowed_sans needs client_auth_type RequireAndVerifyClientCert"
            )
        if _TLS_VERSIONS[self.min_version] > _TLS_VERSIONS[self.max_version]:
            raise ValueError(f"min_version {self.min_version} is above max_version")
        unknown = [
            c for c in self.cipher_suites or () if c not in _CIPHERS | dict.fromkeys(_TLS13_CIPHERS)
        ]
        if unknown:
            raise ValueError(
                f"unknown cipher_suites {unknown}: use Go's names, one of {sorted(_CIPHERS)}"
            )
        curves = [
            c for c in self.curve_preferences or () if c not in _CURVES and c not in _CURVES_IGNORED
        ]
        if curves:
            raise ValueError(f"unknown curve_preferences {curves}: use {sorted(_CURVES)} or X25519")
        return self

    @property
    def enabled(self) -> bool:
        return self.cert is not None or self.cert_file is not None


class HTTPServerConfig(StrictModel):
    # aiohttp serves HTTP/1.1 only; Prometheus scrapes over HTTP/1.1 unless told otherwise.
    http2: bool = True
    headers: dict[str, str] | None = None

    @field_validator("headers")
    @classmethod
    def _allowed(cls, headers: dict[str, str] | None) -> dict[str, str] | None:
        for name, value in (headers or {}).items():
            if name not in _HEADERS:
                raise ValueError(f"header {name!r} is not allowed: use one of {sorted(_HEADERS)}")
            allowed = _HEADERS[name]
            if allowed is not None and value.lower() not in allowed:
                raise ValueError(f"{name} must be one of {sorted(allowed)}, not {value!r}")
        return headers


class RateLimitConfig(StrictModel):
    interval: Annotated[
        float, BeforeValidator(parse_duration), Field(ge=0, allow_inf_nan=False)
    ] = 0.0
    burst: int = Field(0, ge=0, le=1_000_000)


class WebConfig(StrictModel):
    tls_server_config: TLSServerConfig = TLSServerConfig()
    http_server_config: HTTPServerConfig = HTTPServerConfig()
    basic_auth_users: dict[str, SecretStr] | None = None
    rate_limit: RateLimitConfig = RateLimitConfig()

    @field_validator("basic_auth_users")
    @classmethod
    def _bcrypt_hashes(cls, users: dict[str, SecretStr] | None) -> dict[str, SecretStr] | None:
        for user, hashed in (users or {}).items():
            if ":" in user:
                raise ValueError(f"user {user!r}: basic-auth user names cannot contain ':'")
            match = _BCRYPT.match(hashed.get_secret_value())
            # Never echo the value: it is a password hash.
            if match is None:
                raise ValueError(
                    f'user {user!r}: not a bcrypt hash (make one with htpasswd -nBC 10 "")'
                )
            if not 4 <= int(match.group(1)) <= 31:
                raise ValueError(f"user {user!r}: bcrypt cost must be 4..31")
        return users


def load_web_config(path: Path) -> WebConfig:
    """Parse and check a web config file; relative file names inside it are
    resolved against the file's directory, as exporter-toolkit does."""
    try:
        with path.open("rb") as file:
            raw = file.read(_WEB_CONFIG_MAX_BYTES + 1)
    except OSError as exc:
        raise WebConfigError(f"web config {path}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > _WEB_CONFIG_MAX_BYTES:
        raise WebConfigError(f"web config {path}: larger than {_WEB_CONFIG_MAX_BYTES} bytes")
    try:
        document = yaml.safe_load(raw) or {}
    except (yaml.YAMLError, RecursionError, UnicodeDecodeError) as exc:
        raise WebConfigError(f"web config {path}: not valid YAML: {exc}") from None
    if not isinstance(document, dict):
        raise WebConfigError(f"web config {path}: expected a mapping at the top level")
    try:
        config = WebConfig.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()
        )
        raise WebConfigError(f"web config {path}: {problems}") from None
    tls = config.tls_server_config
    base = path.parent
    files = {
        k: base / v
        for k in ("cert_file", "key_file", "client_ca_file")
        if (v := getattr(tls, k)) is not None
    }
    if files:
        config = config.model_copy(update={"tls_server_config": tls.model_copy(update=files)})
    return config


def tls_context(tls: TLSServerConfig) -> ssl.SSLContext | None:
    """The server's SSLContext, or None for plain HTTP (no certificate given)."""
    if not tls.enabled:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _TLS_VERSIONS[tls.min_version]
    context.maximum_version = _TLS_VERSIONS[tls.max_version]
    try:
        if tls.cert_file is not None and tls.key_file is not None:
            context.load_cert_chain(tls.cert_file, tls.key_file)
        else:
            _load_inline_chain(context, tls)
        if tls.client_auth_type != "NoClientCert":
            context.verify_mode = (
                ssl.CERT_REQUIRED
                if tls.client_auth_type == "RequireAndVerifyClientCert"
                else ssl.CERT_OPTIONAL
            )
            if tls.client_ca_file is not None:
                context.load_verify_locations(cafile=tls.client_ca_file)
            else:
                context.load_verify_locations(cadata=tls.client_ca)
        ciphers = [_CIPHERS[c] for c in tls.cipher_suites or () if c in _CIPHERS]
        if ciphers:
            context.set_ciphers(":".join(ciphers))
        curves = [_CURVES[c] for c in tls.curve_preferences or () if c in _CURVES]
        if curves:
            # OpenSSL through Python's ssl takes one ECDH curve: the first preferred.
            context.set_ecdh_curve(curves[0])
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise WebConfigError(f"web config tls_server_config: {exc}") from None
    if tls.prefer_server_cipher_suites:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    context.set_alpn_protocols(["http/1.1"])
    return context


def _load_inline_chain(context: ssl.SSLContext, tls: TLSServerConfig) -> None:
    # ssl loads chains from files only: an inline cert/key goes through a
    # private temporary directory that is gone before the server listens.
    assert tls.cert is not None and tls.key is not None
    with tempfile.TemporaryDirectory(prefix="tickscope-tls-") as directory:
        cert = Path(directory) / "cert.pem"
        key = Path(directory) / "key.pem"
        cert.write_text(tls.cert)
        key.touch(mode=0o600)
        key.write_text(tls.key.get_secret_value())
        context.load_cert_chain(cert, key)


# --- basic auth ---------------------------------------------------------------------------


AuthResult = Literal["ok", "unauthorized", "overloaded"]


class BasicAuth:
    """Checks `Authorization: Basic` against bcrypt hashes, as exporter-toolkit does:
    an unknown user is checked against a dummy hash of the same cost (no timing
    difference tells which users exist), each result is cached, and the checks
    run one at a time (a cost-10 check is ~70 ms of CPU) in a thread, off the loop."""

    def __init__(self, users: Mapping[str, str], cache_entries: int, max_pending: int) -> None:
        self._users = {u: h.encode() for u, h in users.items()}
        # Imported here, only when basic_auth_users is configured: the default config
        # never checks a password, and bcrypt's extension is ~0.35 MiB of RSS.
        import bcrypt

        self._checkpw = bcrypt.checkpw
        cost = max((int(h[4:6]) for h in users.values()), default=4)
        self._dummy = bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(cost))
        # Keys are HMACs under a per-process secret: memory holds no password
        # or plain digest of one.
        self._key = secrets.token_bytes(32)
        self._cache: collections.OrderedDict[bytes, bool] = collections.OrderedDict()
        self._cache_entries = cache_entries
        self._max_pending = max_pending
        self._pending = 0
        self._lock = asyncio.Lock()

    async def check(self, header: str | None) -> AuthResult:
        credentials = _basic_credentials(header)
        if credentials is None:
            return "unauthorized"
        user, password = credentials
        known = self._users.get(user)
        hashed = known if known is not None else self._dummy
        key = self._cache_key(user.encode(), hashed, password)
        cached = self._cache.get(key)
        if cached is None:
            if self._pending >= self._max_pending:
                return "overloaded"
            self._pending += 1
            try:
                async with self._lock:
                    matched = await asyncio.to_thread(self._checkpw, password, hashed)
            finally:
                self._pending -= 1
            cached = matched and known is not None
            self._cache[key] = cached
            while len(self._cache) > self._cache_entries:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return "ok" if cached else "unauthorized"

    def _cache_key(self, *parts: bytes) -> bytes:
        mac = hmac.new(self._key, digestmod=hashlib.sha256)
        for part in parts:
            mac.update(len(part).to_bytes(8, "big"))
            mac.update(part)
        return mac.digest()


def _basic_credentials(header: str | None) -> tuple[str, bytes] | None:
    if not header:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
        user, sep, password = decoded.partition(b":")
        if not sep:
            return None
        return user.decode(), password
    except (binascii.Error, UnicodeDecodeError):
        return None


class _TokenBucket:
    """golang.org/x/time/rate's Limiter(Every(interval), burst), as exporter-toolkit uses."""

    def __init__(self, interval: float, burst: int, clock: Callable[[], float]) -> None:
        self._interval = interval
        self._burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._at) / self._interval)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


# --- connections with read timeouts -------------------------------------------------------


class _Connection(MalformedCountingHandler):
    """aiohttp's connection handler, plus a deadline on request heads.

    aiohttp closes a connection that stays idle past keepalive_timeout, but its
    clock does not restart when bytes arrive, and a response being written has
    no deadline at all; a client that sends half a request head, or trickles
    one byte a second, would hold the connection until the idle timeout
    (aiohttp's default: 3630 s). Here the head must complete within
    read_timeout of its first byte.
    """

    def __init__(
        self,
        manager: web.Server,
        *,
        read_timeout: float,
        on_reject: Callable[[str], None],
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, **kwargs)
        self._read_timeout = read_timeout
        self._on_reject = on_reject
        self._head_timer: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # `_messages` holds the heads the parser completed (aiohttp 3.9 to 3.14);
        # tests/test_hostile_admin.py fails if that ever stops being so.
        if self._messages:
            self._cancel_head_timer()
        elif self._head_timer is None and data and self.transport is not None:
            self._head_timer = self._loop.call_later(self._read_timeout, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._messages and self.transport is not None:
            self._on_reject("read_timeout")
            self.force_close()

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def malformed(self) -> None:
        self._on_reject("malformed")


# --- the server ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Cached:
    exposition: Exposition
    expires: float


StatusFn = Callable[[], Status]
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AdminServer:
    name = "admin_server"

    def __init__(
        self,
        config: ServerConfig,
        registry: CollectorRegistry,
        health: Health,
        loop_monitor: LoopMonitor,
        status: StatusFn,
        rendered: Sequence[RenderedFamilies] = (),
        clock: Callable[[], float] = time.monotonic,
        timer: Callable[[], float] = time.perf_counter,
        engine_heartbeats: EngineHeartbeats | None = None,
    ) -> None:
        self._config = config
        self._engine_heartbeats = engine_heartbeats
        self._registry = registry
        self._health = health
        self._loop = loop_monitor
        self._status = status
        self._rendered = tuple(rendered)
        self._clock = clock
        self._timer = timer
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None
        self.port: int | None = None
        self.rejected = Counter(
            "tickscope_admin_rejected_requests",
            "Requests and connections the admin port refused or cut, by reason.",
            ["reason"],
            registry=registry,
        )
        for reason in REJECT_REASONS:
            self.rejected.labels(reason)
        web_config = WebConfig()
        if config.web_config_file is not None:
            web_config = load_web_config(config.web_config_file)
        self._web_config = web_config
        self._ssl = tls_context(web_config.tls_server_config)
        users = web_config.basic_auth_users
        self._auth = (
            BasicAuth(
                {u: h.get_secret_value() for u, h in users.items()},
                config.auth_cache_entries,
                config.auth_max_pending,
            )
            if users
            else None
        )
        rate = web_config.rate_limit
        self._rate_limit = (
            _TokenBucket(rate.interval, rate.burst, clock) if rate.interval > 0 else None
        )
        self._allowed_sans = frozenset(web_config.tls_server_config.client_allowed_sans or ())
        self._extra_headers = dict(web_config.http_server_config.headers or {})
        # Unfiltered variants (text or OpenMetrics: 2 at most) are kept apart,
        # so a stream of distinct name[] filters cannot evict them.
        self._variants: dict[tuple[str, frozenset[str]], _Cached] = {}
        self._cache: collections.OrderedDict[tuple[str, frozenset[str]], _Cached] = (
            collections.OrderedDict()
        )
        self._render_credit = config.max_render_percent / 100
        self._credit_at = clock()
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/engine/healthz", self._engine_healthz)
        app.router.add_get("/", self._index)
        if self._extra_headers:
            app.on_response_prepare.append(self._add_headers)
        self._app = app
        health.require("admin_server", "not listening yet")

    @property
    def scheme(self) -> str:
        return "https" if self._ssl is not None else "http"

    async def start(self) -> None:
        config = self._config
        runner = web.AppRunner(
            self._app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=config.shutdown_timeout,
        )
        await runner.setup()
        manager = runner.server
        assert manager is not None
        loop = asyncio.get_running_loop()

        def connection() -> _Connection:
            return _Connection(
                manager,
                loop=loop,
                access_log=None,
                keepalive_timeout=config.idle_timeout,
                read_timeout=config.read_timeout,
                on_reject=self._reject,
            )

        try:
            # Our own listener instead of web.TCPSite, to hand aiohttp the
            # connection class with the head deadline; the handshake of a TLS
            # client gets the same bound as a request head.
            server = await loop.create_server(
                connection,
                config.bind,
                config.port,
                ssl=self._ssl,
                ssl_handshake_timeout=config.read_timeout if self._ssl is not None else None,
                reuse_address=True,
            )
        except OSError as exc:
            await runner.cleanup()
            raise ListenError(
                "the admin server", "server.port", config.bind, config.port, exc
            ) from None
        self._runner = runner
        self._server = server
        # With port 0 the OS picked one; report the one actually bound.
        sockets = server.sockets
        self.port = int(sockets[0].getsockname()[1]) if sockets else config.port
        log.info(
            "admin server listening",
            extra={
                "address": config.bind,
                "port": self.port,
                "endpoints": "/metrics /healthz /readyz /engine/healthz /",
                "tls": self._ssl is not None,
                # How many users, never who or their hashes.
                "basic_auth_users": len(self._web_config.basic_auth_users or {}),
            },
        )
        self._health.set_ready("admin_server")

    async def stop(self, grace: float = 0.0) -> None:
        """Last to stop: /healthz and /readyz answer until the very end."""
        if self._server is not None:
            self._server.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def _reject(self, reason: str) -> None:
        self.rejected.labels(reason).inc()

    @web.middleware
    async def _guard(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        # A pipelining client gets no more answers while it has not read the
        # last ones: what is buffered for one connection stays about one
        # response plus the transport's 64 KiB high-water mark.
        if not await self._client_caught_up(request):
            return web.Response(status=503)
        probe = request.path in PROBE_PATHS and self._config.probes_without_auth
        if self._rate_limit is not None and not probe and not self._rate_limit.take():
            self._reject("rate_limited")
            return web.Response(status=429, text="429 Too Many Requests\n")
        if self._allowed_sans and not self._san_allowed(request):
            self._reject("client_cert")
            return web.Response(status=403, text="403 Forbidden: client certificate not allowed\n")
        if self._auth is not None and not probe:
            result = await self._auth.check(request.headers.get("Authorization"))
            if result == "overloaded":
                self._reject("auth_overloaded")
                return web.Response(
                    status=429, text="429 Too Many Requests\n", headers={"Retry-After": "1"}
                )
            if result != "ok":
                self._reject("unauthorized")
                return web.Response(
                    status=401,
                    text="401 Unauthorized\n",
                    headers={"WWW-Authenticate": 'Basic realm="tickscope", charset="UTF-8"'},
                )
        return await handler(request)

    def _san_allowed(self, request: web.Request) -> bool:
        transport = request.transport
        peer = transport.get_extra_info("peercert") if transport is not None else None
        if not peer:
            return False
        sans = {value for _, value in peer.get("subjectAltName", ())}
        return bool(sans & self._allowed_sans)

    async def _add_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        for name, value in self._extra_headers.items():
            response.headers[name] = value

    def _exposition(self, request: web.Request) -> tuple[Exposition | None, bool]:
        """The exposition to serve (cached while fresh, rendered while the render
        budget lasts, else the last one rendered; None for a filter never rendered
        once the budget is gone) and whether the client takes it gzipped.

        Every exposition is rendered gzipped, the way Prometheus asks for it, and
        held that way: a client without gzip gets it inflated piece by piece as
        it is sent. So a render or a cached copy holds ~1/10-1/50 of the text (at
        40,000 label sets: 3 MB against 176 MB), and text and gzip clients share
        one cached copy."""
        accept = request.headers.get("Accept", "")
        names = frozenset(request.query.getall("name[]", []))
        content_type, gzipped = negotiate(accept, request.headers.get("Accept-Encoding", ""))
        key = (content_type, names)
        cache = self._cache if names else self._variants
        now = self._clock()
        cached = cache.get(key)
        if cached is not None and now < cached.expires:
            if names:
                self._cache.move_to_end(key)
            return cached.exposition, gzipped
        if not self._budget_left(now):
            # Measured: a 9.4 MB exposition (span metrics at their 2,000-series
            # limit) took 1.2 s to render, when renders were one list of lines;
            # 200 clients asking at once held the loop past the 20 s probe
            # timeout (bench/bench_metrics_flood.py). A stale copy costs nothing.
            if cached is not None:
                return cached.exposition, gzipped
            if names:
                return None, gzipped
        started = self._timer()
        exposition = render(
            self._registry, accept=accept, names=names, rendered=self._rendered, gzipped=True
        )
        self._render_credit -= self._timer() - started
        ttl = self._config.metrics_cache_ttl
        if ttl > 0:
            cache[key] = _Cached(exposition, now + ttl)
            if names:
                self._cache.move_to_end(key)
                while len(self._cache) > self._config.metrics_cache_entries:
                    self._cache.popitem(last=False)
        return exposition, gzipped

    def _budget_left(self, now: float) -> bool:
        share = self._config.max_render_percent / 100
        # One second's worth at most: an idle minute does not buy a burst of renders.
        self._render_credit = min(share, self._render_credit + (now - self._credit_at) * share)
        self._credit_at = now
        return self._render_credit > 0

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        exposition, gzipped = self._exposition(request)
        if exposition is None:
            self._reject("render_budget")
            return web.Response(
                status=429,
                text="429 Too Many Requests: /metrics render budget used up, retry\n",
                headers={"Retry-After": "1"},
            )
        response = web.StreamResponse(headers={"Content-Type": exposition.content_type})
        if gzipped:
            response.headers["Content-Encoding"] = "gzip"
            response.content_length = exposition.length
            pieces: Iterable[bytes] = exposition.parts
        else:
            response.content_length = exposition.size
            pieces = exposition.text()
        try:
            async with asyncio.timeout(self._config.write_timeout):
                await response.prepare(request)
                if request.method != "HEAD":
                    for piece in pieces:
                        await response.write(piece)
                await response.write_eof()
                # aiohttp waits for the client only past 64 KiB in one response;
                # a body below that goes to the transport's buffer and is
                # forgotten (measured: 3,000 pipelined scrapes never read left
                # 57 MB buffered for one connection). Wait for it to be taken.
                await request.writer.drain()
        except TimeoutError:
            self._cut(request)
        except ConnectionError:
            # The scraper went away mid-body (a cancelled curl, a scrape past its
            # timeout): nothing to answer, and not an error of ours. Unhandled, aiohttp
            # logs it as "Error handling request" with a traceback.
            log.debug("/metrics client went away before the body was sent")
        return response

    async def _client_caught_up(self, request: web.Request) -> bool:
        """Wait, up to write_timeout, until the client has taken the answers to
        its earlier requests; False (and the connection cut) if it does not."""
        try:
            async with asyncio.timeout(self._config.write_timeout):
                await request.writer.drain()
        except TimeoutError:
            self._cut(request)
            return False
        return True

    def _cut(self, request: web.Request) -> None:
        self._reject("write_timeout")
        if request.transport is not None:
            # abort, not close: close would still try to send what is buffered.
            request.transport.abort()

    async def _healthz(self, request: web.Request) -> web.Response:
        lag = self._loop.lag
        limit = self._config.liveness_max_loop_lag
        body: dict[str, Any] = {"status": "ok", "loop_lag_seconds": round(lag, 4)}
        if lag > limit:
            body["status"] = "unhealthy"
            body["reason"] = f"event loop blocked for {lag:.1f}s (limit {limit:g}s)"
            return web.json_response(body, status=503)
        return web.json_response(body)

    async def _engine_healthz(self, request: web.Request) -> web.Response:
        """200 while every configured engine loop beats within its max_age, 503 naming
        the stale ones; 200 with a note when none is configured."""
        heartbeats = self._engine_heartbeats
        report = HeartbeatReport(()) if heartbeats is None else heartbeats.check()
        return web.json_response(report.to_json(), status=200 if report.healthy else 503)

    async def _readyz(self, request: web.Request) -> web.Response:
        conditions = self._health.conditions
        ready = self._health.ready
        body = {
            "status": "ready" if ready else "not ready",
            "checks": [
                {"name": c.name, "ready": c.ready, **({"reason": c.reason} if c.reason else {})}
                for c in conditions
            ],
        }
        return web.json_response(body, status=200 if ready else 503)

    async def _index(self, request: web.Request) -> web.Response:
        status = self._status()
        wants_json = request.query.get(
            "format"
        ) == "json" or "application/json" in request.headers.get("Accept", "")
        if wants_json:
            return web.json_response(status.to_json(), dumps=lambda o: json.dumps(o, indent=2))
        return web.Response(text=status.to_text(), content_type="text/plain")
