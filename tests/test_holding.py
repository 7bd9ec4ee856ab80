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
