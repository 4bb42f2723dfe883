"""The HTTP client of the operator tools (`tickscope top`, `tickscope doctor`).

One small GET/POST client over urllib (stdlib only), so that both tools reach a secured admin
port the same way and say the same thing when they cannot:

- basic auth from `user:password@` in the URL, percent-decoded, and taken out of the URL before
  it is requested or shown: messages name the URL without credentials, never a password;
- TLS options as Prometheus's `tls_config` names them (`--ca-file`, `--cert-file`, `--key-file`,
  `--insecure-skip-verify`), checked before anything is fetched (`TLSOptions.context`);
- gzip answers inflated (bounded), redirects followed without the credentials when they leave
  the origin;
- `RequestError` for "no HTTP answer": the reason (connection, timeout, TLS) and what to do.

urllib.request and ssl are imported only when a request is made or a context built: the CLI
imports this module for its parsers, in the sidecar's process too.
"""

from __future__ import annotations

import argparse
import base64
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import ssl
    import urllib.request

__all__ = [
    "MAX_BODY_BYTES",
    "Client",
    "OptionError",
    "RequestError",
    "Response",
    "TLSInfo",
    "TLSOptions",
    "add_arguments",
    "check_url",
    "handshake",
    "redact",
    "split_credentials",
    "with_scheme",
]

# A 2,000-series span-metrics /metrics is ~10 MB of text; a body past this is no sidecar's.
MAX_BODY_BYTES = 256 * 2**20

Kind = Literal[
    "url", "connect", "timeout", "tls", "tls_verify", "http_on_tls", "tls_on_http", "body"
]


class OptionError(Exception):
    """A TLS option or URL that cannot be used: one line naming the option (or URL part)."""


class RequestError(Exception):
    """No usable HTTP answer (or, from `Client.get`, one that is not 2xx). `url` carries no
    credentials; `hint` says what to do, when something can be said."""

    def __init__(
        self,
        url: str,
        reason: str,
        *,
        kind: Kind | Literal["http"] = "connect",
        status: int | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(url, reason)
        self.url = url
        self.reason = reason
        self.kind = kind
        self.status = status
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.url}: {self.reason}" + (f"; {self.hint}" if self.hint else "")


# -- URLs -------------------------------------------------------------------------


def with_scheme(url: str) -> str:
    """`host:port` as `http://host:port`; a URL with a scheme as it is."""
    return url if "://" in url else "http://" + url


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """The URL without `user:password@`, and the (percent-decoded) user and password."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        # urllib's message quotes the netloc, which may hold part of a password.
        raise OptionError(
            "the host or port does not parse (in a password, write / ? # @ as %2F %3F %23 %40)"
        ) from None
    if "@" not in parts.netloc:
        return url, None
    host = parts.hostname or ""
    netloc = (f"[{host}]" if ":" in host else host) + (f":{port}" if port is not None else "")
    plain = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    user = urllib.parse.unquote(parts.username or "")
    password = urllib.parse.unquote(parts.password or "")
    return plain, (user, password)


def check_url(what: str, url: str | None) -> None:
    """OptionError naming `what` (URL, --prometheus) when the URL cannot be used."""
    if url is None:
        return
    try:
        split_credentials(with_scheme(url))
    except OptionError as e:
        raise OptionError(f"{what}: {e}") from None


def redact(url: str) -> str:
    """The URL as it may be shown: without credentials, whatever it holds."""
    try:
        return split_credentials(url)[0]
    except OptionError:
        scheme, sep, rest = url.partition("://")
        # Everything up to the last "@" may be userinfo: cut it (too much rather than a secret).
        return scheme + sep + rest.rpartition("@")[2] if "@" in rest else url


def _basic(credentials: tuple[str, str]) -> str:
    user, password = credentials
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


# -- TLS options ------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The TLS options of an operator tool (named as in Prometheus's tls_config)."""
    group = parser.add_argument_group(
        "TLS to the sidecar's admin port",
        "For an https:// URL (a web config with tls_server_config). These apply to the "
        "sidecar only: --prometheus is verified against the system's CAs (or SSL_CERT_FILE). "
        "Basic auth: user:password@ in the URL.",
    )
    group.add_argument(
        "--ca-file",
        type=Path,
        metavar="FILE",
        help="trust the CA certificates in this PEM file instead of the system's",
    )
    group.add_argument(
        "--cert-file",
        type=Path,
        metavar="FILE",
        help="present this client certificate (PEM; for client_auth_type "
        "RequireAndVerifyClientCert and client_allowed_sans)",
    )
    group.add_argument(
        "--key-file",
        type=Path,
        metavar="FILE",
        help="the client certificate's private key (PEM, unencrypted; default: in --cert-file)",
    )
    group.add_argument(
        "--insecure-skip-verify",
        action="store_true",
        help="do not verify the admin port's certificate (for a test; doctor warns)",
    )


class _EncryptedKey(Exception):
    pass


def _no_password() -> str:
    # ssl would otherwise prompt on the terminal for an encrypted key's passphrase.
    raise _EncryptedKey


def _readable(flag: str, path: Path) -> bytes:
    try:
        with path.open("rb") as file:
            return file.read(MAX_BODY_BYTES)
    except OSError as e:
        raise OptionError(f"{flag} {path}: cannot read: {e.strerror or e}") from None


def _ssl_text(error: BaseException) -> str:
    """An ssl error without OpenSSL's "[LIB: CODE]" prefix and "(_ssl.c:NNN)" suffix."""
    text = str(getattr(error, "verify_message", None) or "") or str(error)
    text = re.sub(r"^\[[A-Z0-9_]+(: [A-Z0-9_]+)?\] ", "", text)
    return re.sub(r" \(_ssl\.c:\d+\)$", "", text).rstrip(".")


@dataclass(frozen=True, slots=True)
class TLSOptions:
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure_skip_verify: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TLSOptions:
        return cls(args.ca_file, args.cert_file, args.key_file, args.insecure_skip_verify)

    def context(self) -> ssl.SSLContext:
        """The client's SSLContext; OptionError (one line naming the option) when a file
        is missing, unreadable, not PEM, encrypted, or the key is not the certificate's."""
        import ssl

        if self.insecure_skip_verify and self.ca_file is not None:
            raise OptionError("--ca-file and --insecure-skip-verify contradict each other")
        if self.key_file is not None and self.cert_file is None:
            raise OptionError("--key-file needs --cert-file")
        if self.insecure_skip_verify:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif self.ca_file is not None:
            _readable("--ca-file", self.ca_file)
            try:
                # With a cafile, create_default_context loads only it, not the system's.
                context = ssl.create_default_context(cafile=str(self.ca_file))
            except ssl.SSLError:
                raise OptionError(f"--ca-file {self.ca_file}: no PEM certificate in it") from None
        else:
            context = ssl.create_default_context()
        if self.cert_file is not None:
            self._load_client_certificate(context, self.cert_file)
        context.set_alpn_protocols(["http/1.1"])
        return context

    def _load_client_certificate(self, context: ssl.SSLContext, cert: Path) -> None:
        import ssl

        cert_text = _readable("--cert-file", cert)
        if b"-----BEGIN CERTIFICATE-----" not in cert_text:
            raise OptionError(f"--cert-file {cert}: no PEM certificate in it")
        key_flag, key = ("--key-file", self.key_file) if self.key_file else ("--cert-file", cert)
        key_text = _readable(key_flag, key)
        if b"PRIVATE KEY-----" not in key_text:
            more = "" if self.key_file else ": give --key-file"
            raise OptionError(f"{key_flag} {key}: no PEM private key in it{more}")
        try:
            context.load_cert_chain(cert, self.key_file, password=_no_password)
        except _EncryptedKey:
            raise OptionError(
                f"{key_flag} {key}: the key is encrypted: give an unencrypted copy "
                "(openssl pkey -in KEY -out PLAIN.key)"
            ) from None
        except ssl.SSLError as e:
            if e.reason == "KEY_VALUES_MISMATCH":
                raise OptionError(
                    f"{key_flag} {key} is not the key of --cert-file {cert}"
                ) from None
            raise OptionError(f"--cert-file {cert}: {_ssl_text(e)}") from None

    def describe(self) -> str:
        """What the options verify against and present, for a check's detail."""
        if self.insecure_skip_verify:
            trust = "not verified (--insecure-skip-verify)"
        elif self.ca_file is not None:
            trust = f"verified against --ca-file {self.ca_file}"
        else:
            trust = "verified against the system's CAs"
        if self.cert_file is not None:
            trust += f"; client certificate {self.cert_file}"
        return trust


# -- requests ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    reason: str
    headers: Mapping[str, str]  # names in lower case
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def _netloc(url: str) -> str:
    return urllib.parse.urlsplit(with_scheme(url)).netloc


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    return parts.scheme, (parts.hostname or ""), port


def _opener(context: ssl.SSLContext | None) -> urllib.request.OpenerDirector:
    import urllib.request

    class Redirect(urllib.request.HTTPRedirectHandler):
        # urllib would send the Authorization header wherever a redirect points: it goes
        # only to the origin it was meant for (as curl and requests do).
        def redirect_request(
            self,
            req: urllib.request.Request,
            fp: Any,
            code: int,
            msg: str,
            headers: Any,
            newurl: str,
        ) -> urllib.request.Request | None:
            new = super().redirect_request(req, fp, code, msg, headers, newurl)
            if new is not None and _origin(newurl) != _origin(req.full_url):
                new.remove_header("Authorization")
            return new

    return urllib.request.build_opener(urllib.request.HTTPSHandler(context=context), Redirect())


class Client:
    """GET and POST for one kind of peer. `context` is used for https:// URLs (None: the
    system's CAs). `peer` names it in hints ("the admin port", "Prometheus"); `tls_flags`:
    whether --ca-file and friends apply to it, so that a hint does not suggest them for
    another server."""

    def __init__(
        self,
        context: ssl.SSLContext | None = None,
        *,
        timeout: float = 5.0,
        user_agent: str = "tickscope",
        peer: str = "the admin port",
        tls_flags: bool = True,
        client_certificate: bool = False,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.context = context
        self.timeout = timeout
        self.user_agent = user_agent
        self.peer = peer
        self.tls_flags = tls_flags
        self.client_certificate = client_certificate
        self.max_body_bytes = max_body_bytes
        self._built: urllib.request.OpenerDirector | None = None

    @classmethod
    def for_sidecar(
        cls, tls: TLSOptions, *, timeout: float, user_agent: str = "tickscope"
    ) -> Client:
        """The sidecar's client from the TLS options (OptionError when they are unusable)."""
        return cls(
            tls.context(),
            timeout=timeout,
            user_agent=user_agent,
            client_certificate=tls.cert_file is not None,
        )

    def request(
        self,
        url: str,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Response:
        """Any HTTP answer, 4xx and 5xx included; RequestError when there is none."""
        import http.client
        import urllib.error
        import urllib.request

        timeout = self.timeout if timeout is None else timeout
        try:
            plain, credentials = split_credentials(with_scheme(url))
        except OptionError as e:
            raise RequestError(redact(url), str(e), kind="url") from None
        sent = {"User-Agent": self.user_agent, "Accept-Encoding": "gzip", **(headers or {})}
        if credentials is not None:
            sent["Authorization"] = _basic(credentials)
        if self._built is None:
            self._built = _opener(self.context)
        try:
            request = urllib.request.Request(plain, data=data, headers=sent)
            with self._built.open(request, timeout=timeout) as answer:
                return Response(
                    answer.status,
                    str(answer.reason),
                    self._headers(answer),
                    self._body(plain, answer),
                )
        except urllib.error.HTTPError as e:
            with e:
                found = self._headers(e)
                try:
                    body = self._body(plain, e)
                except (OSError, http.client.HTTPException):
                    body = b""
                return Response(e.code, str(e.reason), found, body)
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:
            raise self._explain(plain, e, timeout) from None

    def get(self, url: str, accept: str = "*/*", timeout: float | None = None) -> bytes:
        """The body of a 2xx answer; RequestError otherwise (with the status and a hint)."""
        answer = self.request(url, headers={"Accept": accept}, timeout=timeout)
        if not answer.ok:
            raise RequestError(
                redact(url),
                f"HTTP {answer.status} {answer.reason}".rstrip(),
                kind="http",
                status=answer.status,
                hint=self.status_hint(answer.status, "@" in _netloc(url)),
            )
        return answer.body

    def status_hint(self, status: int, credentials: bool) -> str | None:
        """What to do about a refusal of the admin port's (or Prometheus's) guard."""
        if status == 401:
            hint = "basic auth required: put user:password@ in the URL"
            return hint + ("; the ones given were refused" if credentials else "")
        if status == 403 and self.client_certificate:
            return (
                "the client certificate is not allowed: none of its subjectAltNames is in "
                "the web config's client_allowed_sans"
            )
        return None

    def _body(self, url: str, answer: Any) -> bytes:
        import zlib

        limit = self.max_body_bytes
        body: bytes = answer.read(limit + 1)
        if len(body) > limit:
            raise RequestError(url, f"answer larger than {limit} bytes", kind="body")
        if answer.headers.get("Content-Encoding", "").lower() == "gzip":
            inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                body = inflate.decompress(body, limit + 1)
            except zlib.error as e:
                raise RequestError(url, f"bad gzip answer: {e}", kind="body") from None
            if len(body) > limit:
                raise RequestError(url, f"answer inflates past {limit} bytes", kind="body")
        return body

    @staticmethod
    def _headers(answer: Any) -> dict[str, str]:
        found = {k.lower(): v for k, v in (answer.headers or {}).items()}
        if found.get("content-encoding", "").lower() == "gzip":
            # The body handed on is inflated: its encoding is no longer gzip.
            del found["content-encoding"]
        return found

    # -- why there was no answer --------------------------------------------------

    def _explain(self, url: str, error: BaseException, timeout: float) -> RequestError:
        import http.client
        import ssl
        import urllib.error

        cause: BaseException = error
        if isinstance(error, urllib.error.URLError) and isinstance(error.reason, BaseException):
            cause = error.reason
        scheme, host, port = _origin(url)
        port = port or (443 if scheme == "https" else 80)
        if isinstance(cause, ssl.SSLCertVerificationError):
            return RequestError(
                url,
                f"certificate verify failed: {_ssl_text(cause)}",
                kind="tls_verify",
                hint=self._verify_hint(cause, host),
            )
        if isinstance(cause, TimeoutError):
            return RequestError(url, f"timed out after {timeout:g}s", kind="timeout")
        if isinstance(cause, ssl.SSLError):
            text = _ssl_text(cause)
            lowered = text.lower()
            if "certificate required" in lowered or (
                "handshake failure" in lowered and not self.client_certificate
            ):
                return RequestError(
                    url,
                    f"TLS: {text}",
                    kind="tls",
                    hint=f"{self.peer} requires a client certificate: pass --cert-file and "
                    "--key-file"
                    if self.tls_flags
                    else None,
                )
            if any(w in lowered for w in ("unknown ca", "bad certificate", "certificate unknown")):
                return RequestError(
                    url,
                    f"TLS: {text}",
                    kind="tls",
                    hint=f"{self.peer} refused the client certificate: it must be signed by "
                    "a CA in the web config's client_ca_file",
                )
            direct = _proxy_for(scheme, host) is None
            if direct and _speaks_http(host, port, timeout):
                return RequestError(
                    url,
                    f"TLS: {text}",
                    kind="tls_on_http",
                    hint=f"{self.peer} serves plain HTTP: use http://",
                )
            if direct and isinstance(cause, ssl.SSLEOFError | ssl.SSLZeroReturnError):
                closed_after = self._closed_after_handshake(url, host, port, timeout)
                if closed_after is not None:
                    return closed_after
            return RequestError(url, f"TLS: {text}", kind="tls")
        closed = isinstance(
            cause, http.client.RemoteDisconnected | http.client.BadStatusLine | ConnectionError
        ) and not isinstance(cause, ConnectionRefusedError)
        if closed and _proxy_for(scheme, host) is None:
            if scheme == "http" and _speaks_tls(host, port, timeout):
                return RequestError(
                    url,
                    "the port answers in TLS, not plain HTTP",
                    kind="http_on_tls",
                    hint=f"{self.peer} serves HTTPS: use https://",
                )
            if scheme == "https":
                closed_after = self._closed_after_handshake(url, host, port, timeout)
                if closed_after is not None:
                    return closed_after
        if isinstance(cause, http.client.RemoteDisconnected):
            return RequestError(url, "the connection was closed without an answer")
        return RequestError(url, str(cause) or type(cause).__name__)

    def _closed_after_handshake(
        self, url: str, host: str, port: int, timeout: float
    ) -> RequestError | None:
        # With TLS 1.3 the client's handshake is over before the server has judged its
        # certificate; a server that refuses it (or its absence) just closes, so the
        # request sees an empty answer. A server that closes a fresh connection before
        # any request is refusing the handshake.
        if not _closes_after_handshake(host, port, self.context, min(timeout, 1.0)):
            return None
        reason = "the connection was closed right after the TLS handshake"
        if self.client_certificate:
            hint = (
                f"{self.peer} refused the client certificate: it must be signed by a CA in "
                "the web config's client_ca_file"
            )
        elif self.tls_flags:
            hint = f"{self.peer} requires a client certificate: pass --cert-file and --key-file"
        else:
            hint = f"{self.peer} requires a client certificate"
        return RequestError(url, reason, kind="tls", hint=hint)

    def _verify_hint(self, error: ssl.SSLCertVerificationError, host: str) -> str:
        code = error.verify_code
        # OpenSSL's X509_V_ERR_* codes: 9/10 not yet valid/expired, 62/64 host/IP mismatch.
        if code in (9, 10):
            return (
                f"{self.peer}'s certificate is outside its validity period (or this machine's "
                "clock is wrong): renew it"
            )
        if code in (62, 64):
            return (
                f"the certificate is not issued for {host}: connect by a name or address in "
                "its subjectAltName"
            )
        if self.tls_flags:
            return f"pass --ca-file with the CA certificate that signed {self.peer}'s certificate"
        return (
            "this machine does not trust its certificate: set SSL_CERT_FILE to its CA "
            "(--ca-file is for the sidecar only)"
        )


def _proxy_for(scheme: str, host: str) -> str | None:
    """The proxy urllib would go through (then the port cannot be sniffed directly)."""
    import urllib.request

    proxy = urllib.request.getproxies().get(scheme)
    if proxy is None or urllib.request.proxy_bypass(host):
        return None
    return proxy


def _unverified() -> ssl.SSLContext:
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _speaks_tls(host: str, port: int, timeout: float) -> bool:
    """Whether the port answers a TLS handshake (a plain-HTTP request to it was dropped)."""
    import socket
    import ssl

    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            _unverified().wrap_socket(raw, server_hostname=host),
        ):
            return True
    except ssl.SSLError as e:
        # A TLS server that refuses us still answers in TLS: with an alert.
        return "alert" in str(e).lower()
    except OSError:
        return False


def _closes_after_handshake(
    host: str, port: int, context: ssl.SSLContext | None, wait: float
) -> bool:
    """Whether the port completes a TLS handshake and then closes at once, before any
    request (a server that wants a request keeps the connection open)."""
    import socket
    import ssl

    try:
        with (
            socket.create_connection((host, port), timeout=wait) as raw,
            (context or ssl.create_default_context()).wrap_socket(raw, server_hostname=host) as tls,
        ):
            return tls.recv(1) == b""
    except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError):
        return True
    except OSError:  # a timeout (it waits for a request), or no handshake at all
        return False


def _speaks_http(host: str, port: int, timeout: float) -> bool:
    """Whether the port answers a plain HTTP request (a TLS handshake with it failed)."""
    import socket

    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            raw.sendall(f"HEAD / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            seen = b""
            while len(seen) < 5:
                chunk = raw.recv(5 - len(seen))
                if not chunk:
                    break
                seen += chunk
            return seen == b"HTTP/"
    except OSError:
        return False


# -- the handshake itself ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TLSInfo:
    version: str  # "TLSv1.3"
    cipher: str
    not_after: float | None  # the certificate's end (epoch seconds); None when not verified


def handshake(client: Client, url: str, timeout: float | None = None) -> TLSInfo:
    """A TLS handshake with the URL's host as `client` makes it: the version agreed and the
    peer certificate's end of validity (RequestError when it fails)."""
    import socket
    import ssl

    plain = redact(with_scheme(url))
    _, host, port = _origin(plain)
    timeout = client.timeout if timeout is None else timeout
    context = client.context or ssl.create_default_context()
    try:
        with (
            socket.create_connection((host, port or 443), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            cert = tls.getpeercert() or {}
            cipher = tls.cipher()
            ends = cert.get("notAfter")
            return TLSInfo(
                tls.version() or "?",
                cipher[0] if cipher else "?",
                ssl.cert_time_to_seconds(str(ends)) if ends else None,
            )
    except OSError as e:
        raise client._explain(plain, e, timeout) from None
