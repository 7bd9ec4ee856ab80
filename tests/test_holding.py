"""The service holds: slow URLs never freeze it, and what a caller sends never reaches the log (issue #27)."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import pytest

from conftest import draw_shape, encode
from indexer.engine import Engine
from indexer.pictures.fetch import FetchPolicy
from indexer.pictures.reader import ImageLimits
from indexer.settings import Settings
from service.app import create_app
from service.fetching import FetchesBusy, FetchGate
from service.serve import redacted_request_line

PNG = encode(draw_shape("red", "circle", 96))


class _Trickling(http.server.BaseHTTPRequestHandler):
    """`/slow…` promises a picture and sends one byte every 0.1 s until `release` is set; `/good.png` a picture."""

    release = threading.Event()
    open_now = 0
    lock = threading.Lock()

    def do_GET(self) -> None:  # noqa: N802
        if self.path.startswith("/good.png"):
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(PNG)))
            self.end_headers()
            self.wfile.write(PNG)
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", "1000000")
        self.end_headers()
        with self.lock:
            type(self).open_now += 1
        try:
            while not self.release.wait(0.1):
                self.wfile.write(b"\0")
                self.wfile.flush()
        except OSError:
            pass  # the fetcher gave up
        finally:
            with self.lock:
                type(self).open_now -= 1

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def trickling() -> Iterator[str]:
    _Trickling.release = threading.Event()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Trickling)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        _Trickling.release.set()
        server.shutdown()
        server.server_close()


# -- the gate ----------------------------------------------------------------------------------------
def test_the_gate_admits_within_its_limits_and_says_which_one_refused():
    gate = FetchGate(max_fetches=5, per_caller=3, request_threads=4)
    a = gate.admit("a", wanted=10)
    assert a.slots == 3  # the caller's share
    with pytest.raises(FetchesBusy, match="CLIP_GAZE_MAX_FETCHES_PER_CALLER") as refused:
        gate.admit("a")
    assert refused.value.status == 503 and refused.value.code == "busy" and refused.value.retry_after
    b = gate.admit("b", wanted=10)
    assert b.slots == 2  # what the process has left
    with pytest.raises(FetchesBusy, match="CLIP_GAZE_MAX_FETCHES"):
        gate.admit("c")
    a.release()
    a.release()  # once only
    assert gate.in_flight == 2
    c, d = gate.admit("c"), gate.admit("d")
    with pytest.raises(FetchesBusy, match="every request thread but one"):
        gate.admit("e")  # three requests wait on fetches: the fourth thread stays free
    for grant in (b, c, d):
        grant.release()
    assert (gate.in_flight, gate.requests) == (0, 0)


# -- a batch of slow URLs -------------------------------------------------------------------------------
@pytest.fixture
def quick_deadline_app(toy_loader: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("CLIP_GAZE_HOME", str(tmp_path / "home"))
    settings = Settings.from_env()
    limits = ImageLimits.from_settings(settings)
    limits = ImageLimits(limits.max_pixels, limits.max_request_pixels, limits.decodes,
                         FetchPolicy(allow=frozenset({"127.0.0.1"}), timeout=2.0))
    engine = Engine.from_settings(settings, loader=toy_loader, limits=limits, batch_window_ms=2)
    return create_app(settings, engine)


def test_a_batch_fetches_its_urls_together_under_one_deadline(quick_deadline_app: Any, trickling: str):
    client = quick_deadline_app.test_client()
    urls = [f"{trickling}/slow{i}" for i in range(4)] + [f"{trickling}/good.png?{i}" for i in range(3)]
    started = time.monotonic()
    resp = client.post("/v1/analyze/batch", json={"image_urls": urls, "vocabularies": "qualities"})
    took = time.monotonic() - started
    assert resp.status_code == 200, resp.get_json()
    answer = resp.get_json()
    assert took < 2.0 + 1.0  # one deadline for the whole batch, not one per URL (8 s one after another)
    by_index = {item["index"]: item for item in answer["results"]}
    assert [by_index[i]["code"] for i in range(4)] == ["fetch_timeout"] * 4
    for good in (4, 5, 6):  # answered beside the slow ones
        assert by_index[good]["ok"], by_index[good]["error"]
        assert by_index[good]["results"]["qualities"]["matches"]
        assert by_index[good]["image"]["sha256"] == hashlib.sha256(PNG).hexdigest()
    assert answer["failed"] == 4 and answer["count"] == 7


def test_a_request_beyond_the_callers_fetches_is_answered_busy(quick_deadline_app: Any, trickling: str):
    quick_deadline_app.extensions["clip_gaze_fetches"] = FetchGate(max_fetches=8, per_caller=1)
    client = quick_deadline_app.test_client()
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(client.post, "/v1/analyze", json={"image_url": f"{trickling}/slow"})
        deadline = time.monotonic() + 5
        while _Trickling.open_now < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        resp = client.post("/v1/analyze", json={"image_url": f"{trickling}/good.png"})
        assert resp.status_code == 503
        assert resp.get_json()["code"] == "busy" and "CLIP_GAZE_MAX_FETCHES_PER_CALLER" in resp.get_json()["error"]
        assert int(resp.headers["Retry-After"]) > 0
        _Trickling.release.set()
        assert slow.result(timeout=10).status_code in (400, 422)  # the trickle ended short: a broken picture
    assert client.post("/v1/analyze", json={"image_url": f"{trickling}/good.png"}).status_code == 200


# -- a real server under the slow-URL attack -------------------------------------------------------------
def _get(url: str, body: dict[str, Any] | None = None, timeout: float = 60) -> tuple[int, dict[str, Any], float]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.load(resp), time.monotonic() - started
    except urllib.error.HTTPError as err:
        return err.code, json.load(err), time.monotonic() - started


@pytest.mark.e2e
def test_health_and_reads_answer_at_once_while_slow_urls_hold_every_fetch(tmp_path: Path, trickling: str):
    from test_e2e_serve import Server, free_port

    port = int(trickling.rsplit(":", 1)[1])
    serve_port = free_port()
    server = Server(tmp_path / "home", serve_port, env={"CLIP_GAZE_FETCH_ALLOW": f"127.0.0.1:{port}"},
                    argv=["clip-gaze", "serve", "--port", str(serve_port), "--workers", "1", "--threads", "4"]).start()
    try:
        with ThreadPoolExecutor(8) as pool:
            attack = [pool.submit(_get, f"{server.url}/v1/analyze", {"image_url": f"{trickling}/slow{i}"})
                      for i in range(8)]
            deadline = time.monotonic() + 10
            while _Trickling.open_now < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.3)
            assert _Trickling.open_now == 3  # three of the worker's four threads fetching, the fourth kept free
            latencies = []
            for _ in range(5):
                status, body, took = _get(f"{server.url}/v1/health", timeout=5)
                assert status == 200 and body["status"] == "ready"
                latencies.append(took)
                status, body, took = _get(f"{server.url}/v1/vocabularies", timeout=5)
                assert status == 200
                latencies.append(took)
            assert max(latencies) <= 1.0, latencies
            refused = [f.result() for f in attack if f.done()]
            assert refused and all(status == 503 and body["code"] == "busy" for status, body, _ in refused)
            _Trickling.release.set()
            finished = [f.result(timeout=30) for f in attack]
        assert sum(1 for status, _, _ in finished if status == 503) == 8 - 3
    finally:
        server.stop()


def test_the_access_log_line_keeps_query_names_but_never_their_values():
    line = redacted_request_line("GET", "/v1/collections", "token=s3cret&limit=5", "HTTP/1.1")
    assert line == "GET /v1/collections?token=…&limit=… HTTP/1.1"
    assert "s3cret" not in line
    assert redacted_request_line("GET", "/v1/health", "", "HTTP/1.1") == "GET /v1/health HTTP/1.1"


# -- who a caller is -------------------------------------------------------------------------------------
def _caller_of(headers: dict[str, str], peer: str) -> str:
    from types import SimpleNamespace

    from flask import Flask

    from service.fetching import caller

    app = Flask("caller")
    app.config["CLIP_GAZE_SETTINGS"] = SimpleNamespace(api_tokens=("the-token",))
    with app.test_request_context(headers=headers, environ_base={"REMOTE_ADDR": peer}):
        return caller()


def test_a_caller_is_a_valid_token_or_else_its_address(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("FORWARDED_ALLOW_IPS", raising=False)
    valid = _caller_of({"Authorization": "Bearer the-token"}, "203.0.113.7")
    assert valid.startswith("token:") and "the-token" not in valid
    assert valid == _caller_of({"Authorization": "Bearer the-token"}, "198.51.100.1")  # the token, wherever from
    made_up = {_caller_of({"Authorization": f"Bearer random-{i}"}, "203.0.113.7") for i in range(5)}
    assert made_up == {"addr:203.0.113.7"}  # a made-up token per request is no fresh caller


def test_x_forwarded_for_is_believed_only_from_a_trusted_proxy(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("FORWARDED_ALLOW_IPS", raising=False)
    spoofed = {"X-Forwarded-For": "1.2.3.4, 198.51.100.9"}  # the client's own entry, then what the proxy appended
    assert _caller_of(spoofed, "127.0.0.1") == "addr:198.51.100.9"  # a proxy on this machine
    assert _caller_of(spoofed, "::1") == "addr:198.51.100.9"
    for peer in ("10.1.2.3", "172.18.0.4", "192.168.1.20", "203.0.113.7"):  # anyone else names itself
        assert _caller_of(spoofed, peer) == f"addr:{peer}"
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "172.18.0.0/16, 10.9.9.9")  # gunicorn's own list of front ends
    assert _caller_of(spoofed, "172.18.0.4") == "addr:198.51.100.9"
    assert _caller_of(spoofed, "10.9.9.9") == "addr:198.51.100.9"
    assert _caller_of(spoofed, "10.1.2.3") == "addr:10.1.2.3"
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "*")
    assert _caller_of(spoofed, "10.1.2.3") == "addr:198.51.100.9"


def test_made_up_tokens_share_their_address_s_fetches(quick_deadline_app: Any, trickling: str):
    quick_deadline_app.extensions["clip_gaze_fetches"] = FetchGate(max_fetches=8, per_caller=1)
    client = quick_deadline_app.test_client()
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(client.post, "/v1/analyze", json={"image_url": f"{trickling}/slow"},
                           headers={"Authorization": "Bearer made-up-1"})
        deadline = time.monotonic() + 5
        while _Trickling.open_now < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        resp = client.post("/v1/analyze", json={"image_url": f"{trickling}/good.png"},
                           headers={"Authorization": "Bearer made-up-2"})
        assert resp.status_code == 503 and "CLIP_GAZE_MAX_FETCHES_PER_CALLER" in resp.get_json()["error"]
        _Trickling.release.set()
        slow.result(timeout=10)


# -- fetches outlive no grant, a read keeps one deadline, a decoding picture is no fetch timeout -----------
def test_a_batch_holds_its_fetches_until_its_fetch_threads_end(quick_deadline_app: Any, monkeypatch: pytest.MonkeyPatch):
    """A fetch that does not end by the deadline (a host name slow to resolve, say) outlives the answer: its
    slot stays taken until it ends, so fetches in flight never exceed CLIP_GAZE_MAX_FETCHES."""
    import indexer.pictures.reader as reader_module

    gate = quick_deadline_app.extensions["clip_gaze_fetches"] = FetchGate(max_fetches=2, per_caller=2)
    stuck = threading.Event()

    def never_by_the_deadline(url: str, *args: Any, **kwargs: Any) -> Any:
        stuck.wait(20)
        raise reader_module.InvalidInput("given up")

    monkeypatch.setattr(reader_module, "fetch", never_by_the_deadline)
    client = quick_deadline_app.test_client()
    try:
        resp = client.post("/v1/analyze/batch", json={"image_urls": ["http://127.0.0.1:9/a.png", "http://127.0.0.1:9/b.png"],
                                                      "vocabularies": "qualities"})
        assert resp.status_code == 200
        assert [item["code"] for item in resp.get_json()["results"]] == ["fetch_timeout"] * 2
        assert (gate.in_flight, gate.requests) == (2, 0)  # answered, its thread free, its fetches still counted
        refused = client.post("/v1/analyze", json={"image_url": "http://127.0.0.1:9/c.png"})
        assert refused.status_code == 503 and "CLIP_GAZE_MAX_FETCHES" in refused.get_json()["error"]
    finally:
        stuck.set()
    deadline = time.monotonic() + 5
    while gate.in_flight and time.monotonic() < deadline:
        time.sleep(0.02)
    assert (gate.in_flight, gate.requests) == (0, 0)


def test_a_picture_fetched_by_the_deadline_but_still_decoding_is_no_fetch_timeout(quick_deadline_app: Any, trickling: str):
    engine = quick_deadline_app.extensions["clip_gaze"].engine
    reader = engine.reader
    read = reader.read

    def slow_read(*args: Any, **kwargs: Any) -> Any:
        time.sleep(2.8)  # fetched at once, decoded past the 2 s deadline and its half second for the last bytes
        return read(*args, **kwargs)

    reader.read = slow_read
    try:
        resp = quick_deadline_app.test_client().post(
            "/v1/analyze/batch", json={"image_urls": [f"{trickling}/good.png", f"{trickling}/slow"], "vocabularies": "qualities"})
    finally:
        del reader.read
    items = resp.get_json()["results"]
    assert items[0]["ok"], items[0]  # waited for: it was fetched
    assert items[1]["code"] == "fetch_timeout"


def test_a_picture_still_decoding_after_the_grace_is_answered_busy():
    from indexer.pictures.fetch_many import FetchMany

    release = threading.Event()
    ended = threading.Event()

    def fetch(url: str, deadline: float) -> Any:
        return lambda: release.wait(10)  # fetched at once, its decoding never done in time

    many = FetchMany(fetch, ["http://example.test/a.png"], width=1, timeout=0.1, done=ended.set, grace=0.2)
    try:
        (outcome,) = many.results()
        assert getattr(outcome, "code", None) == "busy" and "fetched, but still being decoded" in outcome.message
        assert not ended.is_set()  # its thread still runs: not done
    finally:
        release.set()
        many.close()
    assert ended.wait(5)


# -- one request thread ---------------------------------------------------------------------------------
def test_with_one_request_thread_a_fetch_may_take_it_and_the_log_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                        caplog: pytest.LogCaptureFixture):
    import dataclasses

    from flask import Flask

    from service.fetching import init_app

    monkeypatch.setenv("CLIP_GAZE_HOME", str(tmp_path / "home"))
    settings = Settings.from_env()
    for threads, admitted in ((1, 1), (2, 1), (4, 3)):
        gate = FetchGate(max_fetches=8, per_caller=8, request_threads=threads)
        grants = [gate.admit(f"c{i}") for i in range(admitted)]
        with pytest.raises(FetchesBusy):
            gate.admit("another")
        for grant in grants:
            grant.release()
    with caplog.at_level("WARNING", logger="clip_gaze.service"):
        init_app(Flask("four"), dataclasses.replace(settings, serve_threads=4))
        assert not caplog.records
        init_app(Flask("one"), dataclasses.replace(settings, serve_threads=1))
    assert any("--threads 1" in r.getMessage() and "health and reads wait" in r.getMessage() for r in caplog.records)
