"""Credentials for protected sources (issue 23, 4): CLIP_GAZE_FETCH_AUTH_FILE's headers go to their own host
only, for pictures, manifests and IIIF services; a redirect to another host (here: another loopback port)
carries none of them; no message, log line or repr holds them."""

from __future__ import annotations

import base64
import io
import json
import logging
from pathlib import Path

import pytest
from conftest import draw_shape
from iiif_server import QuietHandler, serving

from indexer.errors import ClipGazeError
from indexer.pictures.credentials import Credentials, CredentialsError
from indexer.pictures.fetch import FetchError, FetchPolicy, fetch, fetch_json
from indexer.settings import Settings

SECRET = "museum-bearer-0123456789"
HEADER_SECRET = "header-secret-9876"


def _png() -> bytes:
    buf = io.BytesIO()
    draw_shape("red", "circle").save(buf, format="PNG")
    return buf.getvalue()


class Recording(QuietHandler):
    """Records each request's path and headers; /to/<url> redirects there, /manifest.json is JSON,
    /denied answers 401, anything else a PNG."""

    requests: list[tuple[str, dict[str, str]]] = []
    port = 0

    def do_GET(self) -> None:
        type(self).requests.append((self.path, dict(self.headers.items())))
        if self.path.startswith("/to/"):
            self.send_response(302)
            self.send_header("Location", self.path[len("/to/"):])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/manifest.json":
            self._send(200, "application/json", json.dumps({"type": "Manifest"}).encode())
        elif self.path == "/denied":
            self._send(401, "text/plain", b"no")
        else:
            self._send(200, "image/png", _png())


class Other(Recording):
    requests: list[tuple[str, dict[str, str]]] = []


def _policy(path: Path, entries: dict) -> FetchPolicy:
    path.write_text(json.dumps(entries), encoding="utf-8")
    return FetchPolicy(allow=frozenset({"127.0.0.1"}), credentials=Credentials.load(str(path)))


def test_a_hosts_credentials_go_to_it_and_not_to_the_host_a_redirect_leads_to(tmp_path: Path, caplog):
    caplog.set_level(logging.DEBUG)
    with serving(Recording) as first, serving(Other) as second:
        policy = _policy(tmp_path / "auth.json", {f"127.0.0.1:{Recording.port}": {"bearer": SECRET}})
        got = fetch(f"{first}/to/{second}/picture.png", policy)
        assert got.data == _png() and got.url == f"{second}/picture.png"
        (path, sent), = Recording.requests
        assert sent["Authorization"] == f"Bearer {SECRET}"
        (_, forwarded), = Other.requests
        assert "Authorization" not in forwarded and SECRET not in json.dumps(forwarded)
        # a manifest (fetch_json) from the host gets them too; the other host never does
        assert fetch_json(f"{first}/manifest.json", policy) == {"type": "Manifest"}
        assert Recording.requests[-1][1]["Authorization"] == f"Bearer {SECRET}"
        fetch(f"{second}/picture.png", policy)
        assert all("Authorization" not in h for _, h in Other.requests)
        # a refusal's message names the URL, never what was sent
        with pytest.raises(FetchError) as refused:
            fetch(f"{first}/denied", policy)
        assert "401" in refused.value.message and SECRET not in refused.value.message
    assert SECRET not in caplog.text and SECRET not in repr(policy)


def test_basic_and_header_credentials_and_a_port_entry_before_the_hosts_own(tmp_path: Path):
    with serving(Recording) as first, serving(Other) as second:
        policy = _policy(tmp_path / "auth.json", {
            "127.0.0.1": {"header": {"X-Api-Key": HEADER_SECRET}},  # any port of the host
            f"127.0.0.1:{Recording.port}": {"basic": "curator:pa:ss"},
        })
        fetch(f"{first}/a.png", policy)
        fetch(f"{second}/b.png", policy)
        assert Recording.requests[-1][1]["Authorization"] == "Basic " + base64.b64encode(b"curator:pa:ss").decode()
        assert "X-Api-Key" not in Recording.requests[-1][1]
        assert Other.requests[-1][1]["X-Api-Key"] == HEADER_SECRET and "Authorization" not in Other.requests[-1][1]


@pytest.mark.parametrize("entries, said", [
    ({"h": {"bearer": ""}}, "bearer must be a non-empty text"),
    ({"h": {"basic": "no-colon"}}, "basic must be user:password"),
    ({"h": {"bearer": "a", "basic": "b:c"}}, "exactly one of"),
    ({"h": {"header": {"X-Key": "two\r\nlines"}}}, "one line"),
    (["h"], "an object of hosts"),
])
def test_a_file_that_is_not_as_documented_is_refused_without_showing_a_value(tmp_path: Path, entries, said):
    path = tmp_path / "auth.json"
    path.write_text(json.dumps(entries), encoding="utf-8")
    with pytest.raises(CredentialsError) as refused:
        Credentials.load(str(path))
    assert said in refused.value.message and "two" not in refused.value.message


def test_the_setting_reaches_the_engines_fetches(tmp_path: Path, monkeypatch, toy_loader):
    from indexer.engine import Engine

    with serving(Recording) as first:
        auth = tmp_path / "auth.json"
        auth.write_text(json.dumps({f"127.0.0.1:{Recording.port}": {"bearer": SECRET}}), encoding="utf-8")
        monkeypatch.setenv("CLIP_GAZE_FETCH_AUTH_FILE", str(auth))
        monkeypatch.setenv("CLIP_GAZE_FETCH_ALLOW", "127.0.0.1")
        engine = Engine.from_settings(Settings.from_env(), loader=toy_loader)
        picture = engine.fetch_picture(f"{first}/red.png")
        assert picture.width > 0 and Recording.requests[-1][1]["Authorization"] == f"Bearer {SECRET}"
        monkeypatch.setenv("CLIP_GAZE_FETCH_AUTH_FILE", str(tmp_path / "missing.json"))
        with pytest.raises(ClipGazeError, match="cannot read"):
            Engine.from_settings(Settings.from_env(), loader=toy_loader)
