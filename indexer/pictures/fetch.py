"""Fetching untrusted URLs safely (OWASP's server-side request forgery guidance).

http and https only, no credentials in the URL. The host is resolved once and refused when any of
its addresses is not public (an IPv4 address inside IPv6 is judged as that IPv4 address), unless
CLIP_GAZE_FETCH_ALLOW lists it; the connection goes to the checked address (https still checks the
certificate against the name, `Host:` still carries it). A refusal names the host as the caller gave
it and says its address is not allowed, never what the name resolves to (that goes to the debug log). Redirects are followed by hand, each hop
checked again. One deadline covers the whole fetch, so a server that trickles is cut off; a body over
the limit is refused from its Content-Length, or cut off while read. Standard library only; no proxy.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import logging
import math
import re
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, quote, urljoin, urlsplit

from .. import __version__
from .addresses import is_allowed, is_public, refusal
from .credentials import Credentials
from ..errors import InvalidInput

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

    from ..settings import Settings

REDIRECTS = (301, 302, 303, 307, 308)
OCTET_STREAMS = ("", "application/octet-stream", "binary/octet-stream")  # accepted for images: the decoder checks the bytes
JSON_TYPES = ("application/json", "application/ld+json", "text/json")
JSON_IF_IT_PARSES = ("text/plain", *OCTET_STREAMS)  # what some IIIF servers send their JSON as
CHUNK = 64 * 1024
URL_IN_MESSAGES = 200  # characters of a URL shown in a message
USER_AGENT = f"clip-gaze/{__version__}"
log = logging.getLogger("clip_gaze.fetch")
_HOST = re.compile(r"[a-z0-9._-]+|[0-9a-f:.]+")  # a name (lowercase, IDNA-encoded) or an IPv6 literal, no zone id


class FetchError(InvalidInput):
    """A URL that could not or may not be fetched. Codes: invalid_url, url_refused (403: a policy
    refusal, not a malformed request), fetch_failed, fetch_timeout, too_many_redirects, too_large (413),
    unexpected_content_type, invalid_json_document."""

    code = "fetch_failed"

    def __init__(self, message: str, *, url: str = "", code: str | None = None, status: int | None = None):
        if status is None and code == "url_refused":
            status = 403
        super().__init__(message, code=code, status=status)
        self.url = _without_credentials(url)


@dataclass(frozen=True)
class FetchPolicy:
    allow: frozenset[str] = frozenset()  # hosts or host:port admitted past the address guard (CLIP_GAZE_FETCH_ALLOW)
    max_bytes: int = 32 * 1024 * 1024
    timeout: float = 30.0  # for the whole fetch, all redirects included
    max_redirects: int = 5
    credentials: Credentials = Credentials()  # per host (CLIP_GAZE_FETCH_AUTH_FILE), each hop sent its own host's only

    @classmethod
    def from_settings(cls, settings: "Settings") -> FetchPolicy:
        """`allow` from CLIP_GAZE_FETCH_ALLOW; `max_bytes` is the upload limit (CLIP_GAZE_MAX_UPLOAD_MB), so a
        fetched picture may be as large as a sent one."""
        allow = frozenset(a.strip().lower() for a in settings.fetch_allow if a.strip())
        max_bytes = settings.max_upload_bytes or cls.max_bytes
        return cls(allow=allow, max_bytes=int(max_bytes), credentials=Credentials.load(settings.fetch_auth_file))


@dataclass(frozen=True)
class Fetched:
    url: str  # the final URL after redirects
    content_type: str  # e.g. "image/jpeg" (parameters stripped, lowercased); "" when the server sent none
    data: bytes


# ---------------------------------------------------------------------------------------------- public


def fetch(url: str, policy: FetchPolicy, accept: tuple[str, ...] = ("image/",), *, deadline: float | None = None) -> Fetched:
    """GET `url` within `policy`: the body, its content type and the final URL, or FetchError.

    A Content-Type must start with one of `accept`; when `accept` names images, a missing Content-Type
    and application/octet-stream are accepted too (the decoder checks the bytes). `deadline` (a
    time.monotonic() value) ends the fetch sooner than the policy's timeout would: the one deadline of
    several fetches (a IIIF service's info.json and picture, a batch's URLs)."""
    images = any(a.startswith("image/") for a in accept)

    def acceptable(ctype: str) -> bool:
        return any(ctype.startswith(a) for a in accept) or (images and ctype in OCTET_STREAMS)

    return _Fetch(url, policy, acceptable, ", ".join(_accept_header(a) for a in accept), deadline).run()


def fetch_json(url: str, policy: FetchPolicy, max_bytes: int | None = None, *, deadline: float | None = None) -> Any:
    """GET `url` and parse it as JSON (a IIIF manifest or info.json), of at most `max_bytes` (the
    policy's limit when None): a larger body is refused (`too_large`) as soon as it passes the cap.

    Accepted: application/json, application/ld+json, text/json and any `+json` type; text/plain,
    application/octet-stream or no Content-Type when the body parses. A body that is not JSON (or not
    UTF-8) is FetchError `invalid_json_document`. `deadline` as for `fetch`."""
    return parse_json(fetch_document(url, policy, max_bytes=max_bytes, deadline=deadline))


def fetch_document(url: str, policy: FetchPolicy, also: tuple[str, ...] = (), max_bytes: int | None = None, *,
                   deadline: float | None = None) -> Fetched:
    """GET a document that `fetch_json` accepts, or one of the content types `also` names (exactly,
    parameters aside), of at most `max_bytes`: the body and its content type, unparsed."""

    def acceptable(ctype: str) -> bool:
        return ctype in JSON_TYPES or ctype.endswith("+json") or ctype in JSON_IF_IT_PARSES or ctype in also

    if max_bytes is not None:
        policy = dataclasses.replace(policy, max_bytes=max_bytes)
    wanted = "".join(f", {t};q=0.9" for t in also)
    return _Fetch(url, policy, acceptable, f"application/ld+json, application/json;q=0.9{wanted}, */*;q=0.1", deadline).run()


def parse_json(got: Fetched) -> Any:
    """A fetched body as JSON, or FetchError `invalid_json_document` (not UTF-8, not JSON)."""
    try:
        text = got.data.decode("utf-8-sig")
        return json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        reason = "is not UTF-8" if isinstance(exc, UnicodeDecodeError) else "is not a JSON document"
        if isinstance(exc, json.JSONDecodeError):
            reason += f" ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        raise FetchError(f"{_show(got.url)} {reason} (Content-Type {got.content_type or 'none'})",
                         url=got.url, code="invalid_json_document") from None


def guard(host: str, port: int, policy: FetchPolicy, url: str = "", *, shown: str | None = None) -> list[tuple[Any, ...]]:
    """Resolve `host` once and check every address it resolves to: the getaddrinfo entries to connect
    to, or FetchError `url_refused` (a non-public address, host not allowed) / `fetch_failed` (no such
    host). `shown` is how messages name the URL (default: `url`, else host:port)."""
    shown = shown or (_show(url) if url else _hostport(host, port))
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) and exc.strerror else str(exc)
        raise FetchError(f"{shown}: cannot resolve host {host} ({reason})", url=url) from None
    infos = [i for i in infos if i[0] in (socket.AF_INET, socket.AF_INET6)]
    if not infos:
        raise FetchError(f"{shown}: host {host} has no IPv4 or IPv6 address", url=url)
    if is_allowed(host, port, policy.allow):
        return infos
    for info in infos:
        address = str(info[4][0])
        kind = refusal(address)
        if kind is not None:  # what a name resolves to is never told to the caller: the log has it, at debug
            log.debug("refused %s: host %s resolves to %s, a %s address", shown, host, address, kind)
            article = "an" if kind[0] in "aeiou" else "a"
            said = f"is {article} {kind} address" if address == host else "has an address that is not allowed"
            raise FetchError(
                f"{shown}: refused, host {host} {said}; "
                f"list {host} (or {_hostport(host, port)}) in CLIP_GAZE_FETCH_ALLOW to admit it",
                url=url, code="url_refused",
            )
    return infos


# ------------------------------------------------------------------------------------------- internals


@dataclass(frozen=True)
class _Target:
    https: bool
    host: str  # as sent in Host: and checked against the certificate (IDNA-encoded, lowercase, no brackets)
    port: int
    path: str  # path and query, ready for the request line


def _parse(url: str, shown: str) -> _Target:
    if not isinstance(url, str) or not url.strip():
        raise FetchError("an empty URL is not a URL", url=str(url), code="invalid_url")
    if any(not c.isprintable() or c.isspace() for c in url):
        raise FetchError(f"{shown} is not a valid URL (it holds white space or a control character)", url=url, code="invalid_url")
    try:
        parts: SplitResult = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise FetchError(f"{shown} is not a valid URL ({exc})", url=url, code="invalid_url") from None
    scheme = parts.scheme.lower()
    if scheme and scheme not in ("http", "https"):
        raise FetchError(f"{shown}: refused, only http and https URLs are fetched, not {scheme}", url=url, code="url_refused")
    if not scheme or not parts.netloc:
        raise FetchError(f"{shown} is not a URL (expected http://… or https://…)", url=url, code="invalid_url")
    if "@" in parts.netloc or parts.username is not None or parts.password is not None:
        raise FetchError(f"{shown}: refused, a URL with credentials (user:password@) is not fetched", url=url, code="url_refused")
    host = parts.hostname or ""
    if not host:
        raise FetchError(f"{shown} is not a valid URL (no host)", url=url, code="invalid_url")
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise FetchError(f"{shown} is not a valid URL (host {host} is not a valid domain name)", url=url, code="invalid_url") from None
    if not _HOST.fullmatch(host):
        raise FetchError(f"{shown} is not a valid URL (host {_clip(host, 80)} is not a domain name or IP address)", url=url, code="invalid_url")
    if port == 0:
        raise FetchError(f"{shown} is not a valid URL (port 0)", url=url, code="invalid_url")
    path = quote(parts.path or "/", safe="/%!$&'()*+,;=:@~-._")
    if parts.query:
        path += "?" + quote(parts.query, safe="/%!$&'()*+,;=:@~-._?")
    return _Target(scheme == "https", host, port or (443 if scheme == "https" else 80), path)


class _Fetch:
    def __init__(self, url: str, policy: FetchPolicy, acceptable: Callable[[str], bool], accept_header: str,
                 deadline: float | None = None):
        self.original = url
        self.policy = policy
        self.acceptable = acceptable
        self.accept_header = accept_header
        own = time.monotonic() + policy.timeout
        self.shared = deadline is not None and deadline < own  # the caller's deadline ends it, not its own timeout
        self.deadline = min(own, deadline) if deadline is not None else own

    def run(self) -> Fetched:
        url = self.original
        for _ in range(self.policy.max_redirects + 1):
            result = self._one(url)
            if isinstance(result, Fetched):
                return result
            url = result
        raise FetchError(f"{self._show(url)}: more than {self.policy.max_redirects} redirects", url=url, code="too_many_redirects")

    def _show(self, url: str) -> str:
        return _show(url) if url == self.original else f"{_show(url)} (redirected from {_show(self.original)})"

    def _one(self, url: str) -> Fetched | str:
        """One request: the Fetched answer, or the next URL when it redirects."""
        shown = self._show(url)
        target = _parse(url, shown)
        if time.monotonic() >= self.deadline:
            raise self._timeout(url)
        infos = guard(target.host, target.port, self.policy, url, shown=shown)
        conn: _Connection | None = None
        response: http.client.HTTPResponse | None = None
        try:
            conn = _Connection(target, infos, self.deadline)
            conn.putrequest("GET", target.path, skip_accept_encoding=True)
            for name, value in (("User-Agent", USER_AGENT), ("Accept", self.accept_header),
                                ("Accept-Encoding", "identity"), ("Connection", "close"),
                                *self.policy.credentials.headers(target.host, target.port)):
                conn.putheader(name, value)
            conn.endheaders()
            response = conn.getresponse()
            return self._answer(url, shown, response)
        except TimeoutError:
            raise self._timeout(url) from None
        except ssl.SSLCertVerificationError as exc:
            raise FetchError(f"{shown}: the TLS certificate was refused ({exc.verify_message or exc.reason})", url=url) from None
        except ssl.SSLError as exc:
            raise FetchError(f"{shown}: TLS failed ({exc.reason or exc})", url=url) from None
        except ConnectionRefusedError:
            raise FetchError(f"{shown}: connection refused by {_hostport(target.host, target.port)}", url=url) from None
        except http.client.IncompleteRead as exc:
            raise FetchError(f"{shown}: the connection closed after {len(exc.partial):,} bytes of the body", url=url) from None
        except (http.client.HTTPException, ConnectionError) as exc:
            reason = type(exc).__name__ if not str(exc) else _clip(str(exc), 120)
            raise FetchError(f"{shown}: no valid HTTP answer ({reason})", url=url) from None
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise FetchError(f"{shown}: cannot connect to {_hostport(target.host, target.port)} ({reason})", url=url) from None
        finally:
            if response is not None:
                response.close()
            if conn is not None:
                conn.close()

    def _answer(self, url: str, shown: str, response: http.client.HTTPResponse) -> Fetched | str:
        status = response.status
        if status in REDIRECTS:
            location = response.getheader("Location")
            if not location:
                raise FetchError(f"{shown} answered {_status(status)} without a Location", url=url)
            return urljoin(url, location.strip())
        if not 200 <= status < 300:
            raise FetchError(f"{shown} answered {_status(status)}", url=url)
        ctype = (response.getheader("Content-Type") or "").split(";", 1)[0].strip().lower()
        if not self.acceptable(ctype):
            raise FetchError(f"{shown} answered {ctype or 'no Content-Type'}, not what was asked for ({self.accept_header})",
                             url=url, code="unexpected_content_type")
        encoding = (response.getheader("Content-Encoding") or "identity").strip().lower()
        if encoding != "identity":
            raise FetchError(f"{shown} sent its body with Content-Encoding {_clip(encoding, 40)}, which is not decoded here", url=url)
        declared = response.getheader("Content-Length")
        length: int | None = None
        if declared is not None:
            try:
                length = int(declared.strip())
            except ValueError:
                raise FetchError(f"{shown}: invalid Content-Length {_clip(declared, 40)!r}", url=url) from None
            if length > self.policy.max_bytes:
                raise self._too_large(url, f"declares {length:,} bytes, more")
        data = bytearray()
        while True:
            chunk = response.read(min(CHUNK, self.policy.max_bytes + 1 - len(data)))
            if not chunk:
                break
            data += chunk
            if len(data) > self.policy.max_bytes:
                raise self._too_large(url, "sent more")
        if length is not None and len(data) != length:
            raise FetchError(f"{shown}: the connection closed after {len(data):,} of {length:,} bytes", url=url)
        return Fetched(url=url, content_type=ctype, data=bytes(data))

    def _too_large(self, url: str, what: str) -> FetchError:
        return FetchError(f"{self._show(url)} {what} than the {self.policy.max_bytes:,} bytes fetched at most",
                          url=url, code="too_large", status=413)

    def _timeout(self, url: str) -> FetchError:
        if self.shared:
            return FetchError(f"{self._show(url)}: not fetched by its deadline (one {self.policy.timeout:g} s deadline covers "
                              "every fetch of a read, a IIIF service's info.json and picture, and a batch's URLs together)",
                              url=url, code="fetch_timeout")
        return FetchError(f"{self._show(url)}: took longer than {self.policy.timeout:g} s (the whole fetch, redirects included)",
                          url=url, code="fetch_timeout")


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the fetch's deadline has passed")
    return left


class _DeadlineSocket(socket.socket):
    """A socket whose every read waits at most until the fetch's deadline (so does the TLS one below)."""

    deadline: float = math.inf

    def recv_into(self, buffer: WriteableBuffer, nbytes: int = 0, flags: int = 0) -> int:
        self.settimeout(_left(self.deadline))
        return super().recv_into(buffer, nbytes, flags)


class _DeadlineSSLSocket(ssl.SSLSocket):
    deadline: float = math.inf

    def recv_into(self, buffer: WriteableBuffer, nbytes: int | None = None, flags: int = 0) -> int:
        self.settimeout(_left(self.deadline))
        return super().recv_into(buffer, nbytes, flags)


def _open_socket(infos: list[tuple[Any, ...]], deadline: float) -> _DeadlineSocket:
    """A connected socket to the first of the checked addresses that answers."""
    error: OSError | None = None
    for family, kind, proto, _, sockaddr in infos:
        sock = _DeadlineSocket(family, kind, proto)
        try:
            sock.deadline = deadline
            sock.settimeout(_left(deadline))
            sock.connect(sockaddr)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        except OSError as exc:
            sock.close()
            if isinstance(exc, TimeoutError):
                raise
            error = exc
    assert error is not None
    raise error


def ssl_context() -> ssl.SSLContext:
    """The TLS context of every https fetch: the system's trusted certificates, host names checked."""
    return ssl.create_default_context()


class _Connection(http.client.HTTPConnection):
    """http or https to the checked addresses, never to a fresh lookup of the host (which still goes in
    Host: and, for https, is what the certificate is checked against)."""

    def __init__(self, target: _Target, infos: list[tuple[Any, ...]], deadline: float):
        super().__init__(target.host, target.port, timeout=_left(deadline))
        self.default_port = 443 if target.https else 80  # Host: leaves out the scheme's own port
        self.https = target.https
        self.infos = infos
        self.deadline = deadline

    def connect(self) -> None:
        sock = _open_socket(self.infos, self.deadline)
        if not self.https:
            self.sock = sock
            return
        context = ssl_context()
        context.sslsocket_class = _DeadlineSSLSocket
        try:
            tls = context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        assert isinstance(tls, _DeadlineSSLSocket)
        tls.deadline = self.deadline
        self.sock = tls


def _accept_header(prefix: str) -> str:
    return prefix + "*" if prefix.endswith("/") else prefix


def _status(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*:)?//[^/?#]*@")


def _without_credentials(url: str) -> str:
    """`url` without any user:password@ part (never shown, never kept)."""
    return _USERINFO.sub(lambda m: (m.group(1) or "") + "//", url, count=1)


def _clip(text: str, limit: int) -> str:
    text = "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _show(url: str) -> str:
    """A URL as shown in a message: one line, no credentials, at most URL_IN_MESSAGES characters."""
    return _clip(_without_credentials(url), URL_IN_MESSAGES)


__all__ = ["FetchError", "FetchPolicy", "Fetched", "fetch", "fetch_document", "fetch_json", "guard", "parse_json", "is_allowed", "is_public", "refusal", "ssl_context"]
