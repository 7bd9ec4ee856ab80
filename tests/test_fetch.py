"""Fetching URLs safely: the address guard, redirects, deadlines, size limits and content types.

Every server here is an http.server on 127.0.0.1, on a port it opens itself, closed in teardown;
nothing connects anywhere else (the guard tests on public addresses never connect)."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import draw_shape, encode

import indexer.pictures.fetch as fetch_module
from indexer.errors import InvalidInput
from indexer.pictures.fetch import (
    Fetched,
    FetchError,
    FetchPolicy,
    fetch,
    fetch_json,
    guard,
    is_allowed,
    is_public,
    refusal,
)
from indexer.settings import Settings

PNG = encode(draw_shape("red", "circle", size=64))
LOOPBACK = FetchPolicy(allow=frozenset({"127.0.0.1"}), timeout=5.0)


# ------------------------------------------------------------------------------------------ servers


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() waits for every handler: nothing outlives its test
    block_on_close = True

    def __init__(self, handler: type[BaseHTTPRequestHandler], tls: ssl.SSLContext | None = None):
        super().__init__(("127.0.0.1", 0), handler)
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        self.stop = threading.Event()  # set at teardown: handlers that trickle give up
        self.requests: list[tuple[str, str]] = []  # (path, Host header)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.requests.append((self.path, self.headers.get("Host", "")))
        try:
            self.answer()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up, as it should

    def answer(self) -> None:
        raise NotImplementedError

    def send(self, status: int = 200, body: bytes = b"", ctype: str | None = "image/png", **headers: str) -> None:
        self.send_response(status)
        if ctype is not None:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def serve() -> Iterator[Callable[..., _Server]]:
    servers: list[tuple[_Server, threading.Thread]] = []

    def start(handler: type[BaseHTTPRequestHandler], tls: ssl.SSLContext | None = None) -> _Server:
        server = _Server(handler, tls)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        servers.append((server, thread))
        return server

    yield start
    for server, thread in servers:
        server.stop.set()
        server.shutdown()
        server.server_close()
        thread.join()


class Pictures(Handler):
    def answer(self) -> None:
        if self.path == "/red.png":
            self.send(body=PNG)
        elif self.path == "/typed.jpg":
            self.send(body=PNG, ctype="IMAGE/JPEG; charset=binary")
        elif self.path == "/octet":
            self.send(body=PNG, ctype="application/octet-stream")
        elif self.path == "/untyped":
            self.send(body=PNG, ctype=None)
        elif self.path == "/page.html":
            self.send(body=b"<!doctype html><title>Not a picture</title>", ctype="text/html; charset=utf-8")
        elif self.path == "/teapot":
            self.send(418, b"short and stout", "text/plain")
        elif self.path == "/broken":
            self.send(500, b"oops", "text/plain")
        else:
            self.send(404, b"not found", "text/plain")


# ------------------------------------------------------------------------------------- the address guard


REFUSED = ["10.0.0.1", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "127.0.0.1", "::1", "fe80::1",
           "fc00::1", "::ffff:127.0.0.1", "224.0.0.1", "0.0.0.0", "::", "::ffff:10.0.0.1", "::ffff:169.254.169.254",
           "2002:7f00:1::", "64:ff9b::a00:1", "::7f00:1", "ff02::1", "255.255.255.255", "240.0.0.1", "198.18.0.1"]


@pytest.mark.parametrize("address", REFUSED)
def test_the_guard_refuses_every_address_that_is_not_public(address: str) -> None:
    assert not is_public(address)
    with pytest.raises(FetchError) as caught:
        guard(address, 80, FetchPolicy(), f"http://[{address}]/" if ":" in address else f"http://{address}/")
    assert caught.value.code == "url_refused" and caught.value.status == 403
    assert address in caught.value.message and "CLIP_GAZE_FETCH_ALLOW" in caught.value.message


@pytest.mark.parametrize("address, kind", [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("::ffff:127.0.0.1", "loopback"), ("10.0.0.1", "private"),
    ("169.254.169.254", "link-local"), ("fe80::1", "link-local"), ("100.64.0.1", "shared (carrier-grade NAT)"),
    ("224.0.0.1", "multicast"), ("0.0.0.0", "unspecified"), ("fc00::1", "private"), ("2002:7f00:1::", "6to4-wrapped loopback"),
])
def test_the_guard_says_what_kind_of_address_it_refused(address: str, kind: str) -> None:
    assert refusal(address) == kind


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.215.14", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"])
def test_the_guard_admits_a_public_address_without_connecting(address: str) -> None:
    assert is_public(address)
    infos = guard(address, 443, FetchPolicy())
    assert infos and all(info[1] == socket.SOCK_STREAM for info in infos)


@pytest.mark.parametrize("host", ["2130706433", "127.1"])
def test_the_guard_judges_what_a_host_resolves_to_not_how_it_is_written(host: str) -> None:
    with pytest.raises(FetchError, match=rf"host {host} has an address that is not allowed") as caught:
        guard(host, 80, FetchPolicy())
    assert caught.value.code == "url_refused" and "127.0.0.1" not in caught.value.message


def _resolver(monkeypatch: pytest.MonkeyPatch, names: dict[str, list[str]]) -> list[str]:
    """getaddrinfo answers `names` from this table (and numeric hosts as usual): no DNS query is sent."""
    real = socket.getaddrinfo
    asked: list[str] = []

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in names:
            return real(host, port, *args, **kwargs)
        asked.append(host)
        if not names[host]:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "",
                 (a, int(port), 0, 0) if ":" in a else (a, int(port))) for a in names[host]]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


def test_a_name_is_refused_when_any_of_its_addresses_is_private(monkeypatch: pytest.MonkeyPatch) -> None:
    _resolver(monkeypatch, {"mixed.test": ["8.8.8.8", "10.1.2.3"], "public.test": ["8.8.8.8", "2606:4700:4700::1111"]})
    with pytest.raises(FetchError, match=r"host mixed\.test has an address that is not allowed") as caught:
        guard("mixed.test", 80, FetchPolicy())
    assert caught.value.code == "url_refused" and "10.1.2.3" not in caught.value.message
    assert [i[4][0] for i in guard("public.test", 80, FetchPolicy())] == ["8.8.8.8", "2606:4700:4700::1111"]


def test_the_allow_list_admits_a_host_on_every_port_or_on_one() -> None:
    assert is_allowed("127.0.0.1", 8000, {"127.0.0.1"}) and is_allowed("127.0.0.1", 9, {"127.0.0.1"})
    assert is_allowed("127.0.0.1", 8000, {"127.0.0.1:8000"}) and not is_allowed("127.0.0.1", 8001, {"127.0.0.1:8000"})
    assert is_allowed("images.local", 80, {"Images.LOCAL"}) and is_allowed("IMAGES.local.", 80, {"images.local"})
    assert is_allowed("::1", 8080, {"[::1]:8080"}) and not is_allowed("::1", 8081, {"[::1]:8080"}) and is_allowed("::1", 1, {"::1"})
    assert not is_allowed("images.local.evil.test", 80, {"images.local"})
    allowed = FetchPolicy(allow=frozenset({"127.0.0.1:8000"}))
    assert guard("127.0.0.1", 8000, allowed)
    with pytest.raises(FetchError, match="loopback") as caught:
        guard("127.0.0.1", 8001, allowed)
    assert caught.value.code == "url_refused"


def test_the_policy_comes_from_the_settings() -> None:
    settings = Settings.from_env({"CLIP_GAZE_FETCH_ALLOW": " Images.Local, 10.0.0.5:8182 ,,", "CLIP_GAZE_MAX_UPLOAD_MB": "8"})
    assert settings.fetch_allow == ("Images.Local", "10.0.0.5:8182")
    policy = FetchPolicy.from_settings(settings)
    assert policy.allow == frozenset({"images.local", "10.0.0.5:8182"}) and policy.max_bytes == 8 * 1024 * 1024
    assert Settings.from_env({}).fetch_allow == () and FetchPolicy.from_settings(Settings.from_env({})).allow == frozenset()


# ------------------------------------------------------------------------------------------------ URLs


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x.png", "file:///etc/passwd", "gopher://127.0.0.1:70/", "javascript:alert(1)",
                                 "data:image/png;base64,iVBORw0KGgo="])
def test_only_http_and_https_are_fetched(url: str) -> None:
    with pytest.raises(FetchError, match="only http and https") as caught:
        fetch(url, LOOPBACK)
    assert caught.value.code == "url_refused"


@pytest.mark.parametrize("url", ["http://user:s3cret@127.0.0.1:1/x.png", "https://s3cret@127.0.0.1/x.png", "http://:s3cret@127.0.0.1/"])
def test_a_url_with_credentials_is_refused_and_they_are_never_shown(url: str) -> None:
    with pytest.raises(FetchError, match="credentials") as caught:
        fetch(url, LOOPBACK)
    assert caught.value.code == "url_refused"
    assert "s3cret" not in caught.value.message and "s3cret" not in caught.value.url


@pytest.mark.parametrize("url", ["", "not a url", "picture.png", "//127.0.0.1/x.png", "http://", "http:///x.png", "http://[::1/",
                                 "http://127.0.0.1:99999/", "http://[fe80::1%25eth0]/", "http://ex%41mple.test/", "http://a_b!c.test/", "http://127.0.0.1:0/", "http://127.0.0.1/a b.png", "http://127.0.0.1/\r\nX: y"])
def test_what_is_not_a_url_is_said_so(url: str) -> None:
    with pytest.raises(FetchError) as caught:
        fetch(url, LOOPBACK)
    assert caught.value.code == "invalid_url"
    assert "\n" not in caught.value.message and "\r" not in caught.value.message


# -------------------------------------------------------------------------------------- loopback servers


def test_a_picture_is_fetched_with_its_type(serve: Callable[..., _Server]) -> None:
    server = serve(Pictures)
    got = fetch(f"{server.url}/red.png", LOOPBACK)
    assert got == Fetched(url=f"{server.url}/red.png", content_type="image/png", data=PNG)
    assert fetch(f"{server.url}/typed.jpg", LOOPBACK).content_type == "image/jpeg"
    assert fetch(f"{server.url}/octet", LOOPBACK).data == PNG
    assert fetch(f"{server.url}/untyped", LOOPBACK).content_type == ""
    assert server.requests[0] == ("/red.png", f"127.0.0.1:{server.port}")


def test_loopback_is_refused_unless_listed_and_no_request_is_sent(serve: Callable[..., _Server]) -> None:
    server = serve(Pictures)
    with pytest.raises(FetchError) as caught:
        fetch(f"{server.url}/red.png", FetchPolicy())
    assert caught.value.code == "url_refused"
    assert "127.0.0.1" in caught.value.message and "loopback" in caught.value.message and "CLIP_GAZE_FETCH_ALLOW" in caught.value.message
    with pytest.raises(FetchError, match="loopback"):
        fetch(f"{server.url}/red.png", FetchPolicy(allow=frozenset({f"127.0.0.1:{server.port + 1}"})))
    assert server.requests == []
    assert fetch(f"{server.url}/red.png", FetchPolicy(allow=frozenset({f"127.0.0.1:{server.port}"}))).data == PNG


def test_the_checked_address_is_the_one_connected_to_and_host_carries_the_name(serve: Callable[..., _Server],
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    server = serve(Pictures)
    asked = _resolver(monkeypatch, {"pictures.test": ["127.0.0.1"], "twice.test": ["::1", "127.0.0.1"]})
    policy = FetchPolicy(allow=frozenset({"pictures.test", "twice.test"}), timeout=5.0)
    assert fetch(f"http://Pictures.Test:{server.port}/red.png", policy).data == PNG
    assert asked == ["pictures.test"]  # one lookup: the address checked is the address connected to
    assert server.requests[-1] == ("/red.png", f"pictures.test:{server.port}")
    # the first checked address does not answer (nothing listens on ::1 there): the next one does
    assert fetch(f"http://twice.test:{server.port}/red.png", policy).data == PNG
    with pytest.raises(FetchError, match=r"host pictures\.test has an address that is not allowed") as caught:
        fetch(f"http://pictures.test:{server.port}/red.png", FetchPolicy())
    assert caught.value.code == "url_refused"


def test_http_errors_name_the_status(serve: Callable[..., _Server]) -> None:
    server = serve(Pictures)
    for path, said in [("/missing.png", "answered 404 Not Found"), ("/broken", "answered 500 Internal Server Error"),
                       ("/teapot", "answered 418")]:
        with pytest.raises(FetchError, match=said) as caught:
            fetch(f"{server.url}{path}", LOOPBACK)
        assert caught.value.code == "fetch_failed" and caught.value.status == 400
        assert f"{server.url}{path}" in caught.value.message


def test_a_long_url_is_cut_short_in_messages(serve: Callable[..., _Server]) -> None:
    server = serve(Pictures)
    with pytest.raises(FetchError, match="404") as caught:
        fetch(f"{server.url}/{'x' * 5000}.png", LOOPBACK)
    assert len(caught.value.message) < 300 and "…" in caught.value.message


def test_connection_refused_and_unknown_hosts_are_readable(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed at once: nothing listens there
    with pytest.raises(FetchError, match="connection refused") as caught:
        fetch(f"http://127.0.0.1:{port}/red.png", LOOPBACK)
    assert caught.value.code == "fetch_failed"
    _resolver(monkeypatch, {"nowhere.test": []})
    with pytest.raises(FetchError, match=r"cannot resolve host nowhere\.test \(Name or service not known\)") as caught:
        fetch("http://nowhere.test/red.png", LOOPBACK)
    assert caught.value.code == "fetch_failed"


# -------------------------------------------------------------------------------------------- redirects


def test_a_redirect_chain_is_followed_to_the_final_url(serve: Callable[..., _Server]) -> None:
    class Chain(Pictures):
        def answer(self) -> None:
            port = self.server.port
            hops = {"/a": (302, "/b"), "/b": (301, f"http://127.0.0.1:{port}/dir/c"), "/dir/c": (303, "d?size=224"),
                    "/dir/d?size=224": (307, "../red.png"), "/loop": (302, "/loop"), "/nowhere": (302, "")}
            if self.path in hops:
                status, location = hops[self.path]
                self.send(status, b"", "text/html", **({"Location": location} if location else {}))
            else:
                super().answer()

    server = serve(Chain)
    got = fetch(f"{server.url}/a", LOOPBACK)
    assert got.url == f"{server.url}/red.png" and got.data == PNG
    assert [p for p, _ in server.requests] == ["/a", "/b", "/dir/c", "/dir/d?size=224", "/red.png"]
    with pytest.raises(FetchError, match="more than 3 redirects") as caught:
        fetch(f"{server.url}/a", FetchPolicy(allow=LOOPBACK.allow, max_redirects=3))
    assert caught.value.code == "too_many_redirects"
    with pytest.raises(FetchError, match="more than 5 redirects") as caught:
        fetch(f"{server.url}/loop", LOOPBACK)
    assert caught.value.code == "too_many_redirects"
    with pytest.raises(FetchError, match="without a Location") as caught:
        fetch(f"{server.url}/nowhere", LOOPBACK)
    assert caught.value.code == "fetch_failed"


def test_every_hop_is_checked_again(serve: Callable[..., _Server]) -> None:
    other = serve(Pictures)  # a live server on another loopback port, so a refusal is the guard's doing

    class Away(Pictures):
        def answer(self) -> None:
            targets = {"/other": f"{other.url}/red.png", "/metadata": "http://169.254.169.254/latest/meta-data/",
                       "/private": "http://10.0.0.1/x.png", "/file": "file:///etc/passwd",
                       "/creds": f"http://user:s3cret@127.0.0.1:{self.server.port}/red.png"}
            if self.path in targets:
                self.send(302, b"", "text/html", Location=targets[self.path])
            else:
                super().answer()

    server = serve(Away)
    only_this_port = FetchPolicy(allow=frozenset({f"127.0.0.1:{server.port}"}), timeout=5.0)
    for path, said in [("/other", "loopback"), ("/metadata", "link-local"), ("/private", "private"),
                       ("/file", "only http and https"), ("/creds", "credentials")]:
        with pytest.raises(FetchError, match=said) as caught:
            fetch(f"{server.url}{path}", only_this_port)
        assert caught.value.code == "url_refused", path
        assert f"redirected from {server.url}{path}" in caught.value.message
        assert "s3cret" not in caught.value.message
    assert other.requests == []
    # the whole host listed: every port of it is admitted
    assert fetch(f"{server.url}/other", LOOPBACK).url == f"{other.url}/red.png"


# ------------------------------------------------------------------------------------------ limits


def test_a_huge_content_length_is_refused_before_the_body_is_read(serve: Callable[..., _Server]) -> None:
    class Huge(Handler):
        def answer(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(10 * 1024**3))
            self.end_headers()
            self.wfile.flush()
            self.server.stop.wait(5)  # sends nothing more

    server = serve(Huge)
    start = time.monotonic()
    with pytest.raises(FetchError, match=r"declares 10,737,418,240 bytes, more than the 33,554,432 bytes") as caught:
        fetch(f"{server.url}/huge.png", LOOPBACK)
    assert caught.value.code == "too_large" and caught.value.status == 413
    assert time.monotonic() - start < 2


def test_a_body_without_length_is_cut_off_past_the_limit(serve: Callable[..., _Server]) -> None:
    class Endless(Handler):
        def answer(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Connection", "close")
            if self.path == "/chunked":
                self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(100):
                block = b"x" * 1000
                self.wfile.write(b"3e8\r\n" + block + b"\r\n" if self.path == "/chunked" else block)
            if self.path == "/chunked":
                self.wfile.write(b"0\r\n\r\n")

    Endless.protocol_version = "HTTP/1.1"
    server = serve(Endless)
    small = FetchPolicy(allow=LOOPBACK.allow, max_bytes=10_000, timeout=5.0)
    for path in ("/stream", "/chunked"):
        with pytest.raises(FetchError, match=r"sent more than the 10,000 bytes") as caught:
            fetch(f"{server.url}{path}", small)
        assert caught.value.code == "too_large" and caught.value.status == 413
    assert len(fetch(f"{server.url}/chunked", FetchPolicy(allow=LOOPBACK.allow, max_bytes=100_000)).data) == 100_000


def test_a_body_shorter_than_its_length_is_an_error(serve: Callable[..., _Server]) -> None:
    class Short(Handler):
        def answer(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(PNG[:10])

    server = serve(Short)
    with pytest.raises(FetchError, match="closed after 10 of 1,000 bytes") as caught:
        fetch(f"{server.url}/short.png", LOOPBACK)
    assert caught.value.code == "fetch_failed"


@pytest.mark.parametrize("where", ["body", "headers", "silence"])
def test_a_server_that_trickles_is_cut_off_at_the_deadline(serve: Callable[..., _Server], where: str) -> None:
    class Trickle(Handler):
        def answer(self) -> None:
            head = b"HTTP/1.0 200 OK\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\n"
            if where == "silence":
                self.server.stop.wait(5)
                return
            if where == "body":
                self.wfile.write(head)
                head = b"x" * 1000
            for i in range(len(head)):  # one byte every 20 ms: each read is quick, the whole is not
                if self.server.stop.wait(0.02):
                    return
                self.wfile.write(head[i : i + 1])
                self.wfile.flush()

    server = serve(Trickle)
    start = time.monotonic()
    with pytest.raises(FetchError, match=r"took longer than 0\.4 s") as caught:
        fetch(f"{server.url}/slow.png", FetchPolicy(allow=LOOPBACK.allow, timeout=0.4))
    took = time.monotonic() - start
    assert caught.value.code == "fetch_timeout" and caught.value.status == 400
    assert 0.35 < took < 1.5


def test_the_deadline_covers_every_redirect(serve: Callable[..., _Server]) -> None:
    class SlowHops(Handler):
        def answer(self) -> None:
            self.server.stop.wait(0.15)
            self.send(302, b"", "text/html", Location=f"/{int(self.path[1:]) + 1}")

    server = serve(SlowHops)
    with pytest.raises(FetchError) as caught:
        fetch(f"{server.url}/0", FetchPolicy(allow=LOOPBACK.allow, timeout=0.5, max_redirects=10))
    assert caught.value.code == "fetch_timeout"
    assert len(server.requests) <= 5


# ------------------------------------------------------------------------------------------ content types


def test_a_page_where_a_picture_was_expected_is_refused(serve: Callable[..., _Server]) -> None:
    server = serve(Pictures)
    with pytest.raises(FetchError, match=r"answered text/html, not what was asked for \(image/\*\)") as caught:
        fetch(f"{server.url}/page.html", LOOPBACK)
    assert caught.value.code == "unexpected_content_type"
    assert fetch(f"{server.url}/page.html", LOOPBACK, accept=("text/html",)).data.startswith(b"<!doctype")
    with pytest.raises(FetchError, match="no Content-Type") as caught:
        fetch(f"{server.url}/untyped", LOOPBACK, accept=("text/html",))
    assert caught.value.code == "unexpected_content_type"


class Documents(Handler):
    def answer(self) -> None:
        manifest = json.dumps({"@context": "http://iiif.io/api/presentation/3/context.json", "type": "Manifest", "label": {"fr": ["Été"]}}).encode()
        bodies = {"/manifest.json": (manifest, "application/json"), "/ld": (manifest, "application/ld+json;profile=\"http://iiif.io/api/presentation/3/context.json\""),
                  "/vnd": (manifest, "application/vnd.example+json"), "/plain": (b"\xef\xbb\xbf" + manifest, "text/plain; charset=utf-8"),
                  "/untyped": (manifest, None), "/not-json": (b"Hello, world", "text/plain"),
                  "/broken.json": (manifest[:-5], "application/json"), "/latin1": ("{\"a\": \"é\"}".encode("latin-1"), "application/json"),
                  "/deep": (b"[" * 100_000 + b"]" * 100_000, "application/json"), "/page": (b"<html></html>", "text/html"),
                  "/picture": (PNG, "image/png")}
        body, ctype = bodies.get(self.path, (b"{}", "application/json"))
        self.send(body=body, ctype=ctype)


def test_json_documents_are_parsed(serve: Callable[..., _Server]) -> None:
    server = serve(Documents)
    for path in ("/manifest.json", "/ld", "/vnd", "/plain", "/untyped"):
        assert fetch_json(f"{server.url}{path}", LOOPBACK)["label"] == {"fr": ["Été"]}, path


def test_what_is_not_json_is_said_so(serve: Callable[..., _Server]) -> None:
    server = serve(Documents)
    for path, said in [("/not-json", r"is not a JSON document \(Expecting value at line 1, column 1\)"),
                       ("/broken.json", "is not a JSON document"), ("/latin1", "is not UTF-8"), ("/deep", "is not a JSON document")]:
        with pytest.raises(FetchError, match=said) as caught:
            fetch_json(f"{server.url}{path}", LOOPBACK)
        assert caught.value.code == "invalid_json_document" and isinstance(caught.value, InvalidInput), path
    for path in ("/page", "/picture"):
        with pytest.raises(FetchError) as caught:
            fetch_json(f"{server.url}{path}", LOOPBACK)
        assert caught.value.code == "unexpected_content_type", path


# ------------------------------------------------------------------------------------------------- https


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A self-signed certificate for pictures.test and one for other.test (openssl, no network)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")
    for name in ("pictures.test", "other.test"):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                        "-days", "2", "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}",
                        "-keyout", str(folder / f"{name}.key"), "-out", str(folder / f"{name}.pem")],
                       check=True, capture_output=True)
    return folder


def _tls_server(serve: Callable[..., _Server], certificates: Path, name: str) -> _Server:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificates / f"{name}.pem", certificates / f"{name}.key")
    return serve(Pictures, tls=context)


def test_https_checks_the_certificate_against_the_name(serve: Callable[..., _Server], certificates: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    good, wrong = _tls_server(serve, certificates, "pictures.test"), _tls_server(serve, certificates, "other.test")
    _resolver(monkeypatch, {"pictures.test": ["127.0.0.1"]})
    policy = FetchPolicy(allow=frozenset({"pictures.test"}), timeout=5.0)
    # the system's trust store does not know this certificate
    with pytest.raises(FetchError, match="TLS certificate was refused") as caught:
        fetch(f"https://pictures.test:{good.port}/red.png", policy)
    assert caught.value.code == "fetch_failed"

    def trusting() -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(certificates / "pictures.test.pem"))
        context.load_verify_locations(cafile=str(certificates / "other.test.pem"))
        return context

    monkeypatch.setattr(fetch_module, "ssl_context", trusting)
    got = fetch(f"https://pictures.test:{good.port}/red.png", policy)
    assert got.data == PNG and good.requests[-1] == ("/red.png", f"pictures.test:{good.port}")
    # a trusted certificate for another name is still refused: it is checked against the URL's host
    with pytest.raises(FetchError, match="TLS certificate was refused.*(mismatch|match)") as caught:
        fetch(f"https://pictures.test:{wrong.port}/red.png", policy)
    assert caught.value.code == "fetch_failed"
    assert wrong.requests == []


def test_no_connection_is_left_open(serve: Callable[..., _Server]) -> None:
    """Warnings are errors here (ResourceWarning included): many fetches, good and bad, leave nothing open."""
    import gc

    server = serve(Pictures)
    for _ in range(20):
        fetch(f"{server.url}/red.png", LOOPBACK)
        for path in ("/missing", "/page.html"):
            with pytest.raises(FetchError):
                fetch(f"{server.url}{path}", LOOPBACK)
    gc.collect()



def test_a_refusal_names_the_host_given_never_what_it_resolves_to(caplog: pytest.LogCaptureFixture) -> None:
    """An unauthenticated caller learns that the address is not allowed, not what a name resolves to;
    the resolved address is in the log at debug level only."""
    with caplog.at_level("DEBUG", logger="clip_gaze.fetch"), pytest.raises(FetchError) as caught:
        fetch("http://localhost:9/secret.png", FetchPolicy())
    said = caught.value.message
    assert caught.value.code == "url_refused" and caught.value.status == 403
    assert "host localhost has an address that is not allowed" in said
    assert "127.0.0.1" not in said and "::1" not in said and "loopback" not in said and "resolves" not in said
    logged = [r for r in caplog.records if r.name == "clip_gaze.fetch"]
    assert logged and all(r.levelname == "DEBUG" for r in logged)
    assert any("127.0.0.1" in r.getMessage() or "::1" in r.getMessage() for r in logged)
    with pytest.raises(FetchError, match=r"host 127\.0\.0\.1 is a loopback address"):  # the caller wrote the address
        fetch("http://127.0.0.1:9/secret.png", FetchPolicy())


# ------------------------------------------------------------------ one deadline for several fetches


class _SlowIIIF(Handler):
    """A IIIF service whose info.json takes 0.6 s, and whose picture trickles one byte every 50 ms."""

    def answer(self) -> None:
        if self.path.endswith("/info.json"):
            if self.server.stop.wait(0.6):
                return
            info = {"@context": "http://iiif.io/api/image/3/context.json", "id": f"{self.server.url}/iiif/a",
                    "type": "ImageService3", "protocol": "http://iiif.io/api/image", "profile": "level2",
                    "width": 1000, "height": 1000}
            self.send(body=json.dumps(info).encode(), ctype="application/json")
            return
        if self.path == "/hop":
            self.send(302, b"", None, Location="/iiif/a/full/max/0/default.jpg")
            return
        self.wfile.write(b"HTTP/1.0 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n")
        while not self.server.stop.wait(0.05):
            self.wfile.write(b"x")
            self.wfile.flush()


def test_a_deadline_given_ends_a_fetch_before_its_own_timeout_redirects_included(serve: Callable[..., _Server]) -> None:
    server = serve(_SlowIIIF)
    start = time.monotonic()
    with pytest.raises(FetchError, match="not fetched by its deadline") as caught:
        fetch(f"{server.url}/hop", LOOPBACK, deadline=time.monotonic() + 0.5)  # LOOPBACK's own timeout: 5 s
    assert caught.value.code == "fetch_timeout"
    assert 0.45 < time.monotonic() - start < 1.2


def test_a_iiif_read_fetches_its_info_and_picture_by_one_deadline(serve: Callable[..., _Server]) -> None:
    """Its info.json (0.6 s) and its picture (never ending) together within the one 1 s timeout, not 1 s each."""
    from indexer.pictures.reader import ImageLimits, PictureReader

    server = serve(_SlowIIIF)
    reader = PictureReader(ImageLimits(10**8, 10**8, 2, FetchPolicy(allow=LOOPBACK.allow, timeout=1.0)), target=64)
    for given in (False, True):  # the fetch timeout from now, or the deadline given
        start = time.monotonic()
        with pytest.raises(FetchError) as caught:
            url = f"{server.url}/iiif/a/info.json"
            reader.fetch(url, deadline=start + 1.0) if given else reader.fetch(url)
        took = time.monotonic() - start
        assert caught.value.code == "fetch_timeout", caught.value.message
        assert 0.9 < took < 1.4, took
