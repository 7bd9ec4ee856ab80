"""Job callbacks (README "Job callbacks"): a job started with a `callback_url` POSTs its answer there
when it ends, signed with CLIP_GAZE_WEBHOOK_SECRET, retried with backoff and recorded attempt by
attempt. A loopback receiver checks every signature and answers as each test plans: fail, redirect,
hang, then succeed. Backoff, poll and timeout are the module's constants, set to milliseconds here."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import draw_shape, encode
from indexer.collections import callbacks
from indexer.collections.callbacks import CallbackPolicy, check_url, signature, verify
from indexer.collections.local import Collections
from indexer.engine import Engine
from indexer.errors import InvalidInput
from indexer.pictures.fetch import FetchPolicy
from indexer.schema import parse
from indexer.schema.collections import AddSources, CreateCollection
from indexer.settings import Settings
from indexer.store.callbacks import CallbackStore
from service import create_app

TOKEN = "hook-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SECRET = "whsec-test"
PNG = encode(draw_shape("red", "circle", size=48))


class Receiver(http.server.BaseHTTPRequestHandler):
    """Pictures (`/manifest.json`, `/red.png`) and webhooks: a POST to any other path answers the next
    of `plans[path]` (a status, ("redirect", to), or "hang": until `release[path]` is set), then 200;
    each is kept in `got[path]` with whether its signature verified."""

    plans: dict[str, list[Any]] = defaultdict(list)
    got: dict[str, list[dict[str, Any]]] = defaultdict(list)
    hanging: dict[str, threading.Event] = defaultdict(threading.Event)
    release: dict[str, threading.Event] = defaultdict(threading.Event)
    port = 0

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, ctype: str, body: bytes, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the sender gave up (a timeout)

    def do_GET(self) -> None:  # noqa: N802
        base = f"http://127.0.0.1:{self.port}"
        if self.path == "/manifest.json":
            canvas = {"id": f"{base}/canvas/red", "type": "Canvas", "width": 48, "height": 48, "items": [{
                "id": f"{base}/page/red", "type": "AnnotationPage", "items": [{
                    "id": f"{base}/anno/red", "type": "Annotation", "motivation": "painting", "target": f"{base}/canvas/red",
                    "body": {"id": f"{base}/red.png", "type": "Image", "format": "image/png"}}]}]}
            doc = {"@context": "http://iiif.io/api/presentation/3/context.json", "id": f"{base}/manifest.json",
                   "type": "Manifest", "label": {"en": ["One shape"]}, "items": [canvas]}
            return self._send(200, "application/json", json.dumps(doc).encode())
        if self.path == "/red.png":
            return self._send(200, "image/png", PNG)
        self._send(404, "text/plain", b"not here")

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        header = self.headers.get(callbacks.HEADER, "")
        cls = type(self)
        cls.got[self.path].append({"body": body, "header": header, "verified": verify(SECRET, header, body),
                                   "content_type": self.headers.get("Content-Type")})
        plan = cls.plans[self.path]
        action = plan.pop(0) if plan else 200
        if action == "hang":
            cls.hanging[self.path].set()
            cls.release[self.path].wait(60)
            action = 200
        if isinstance(action, tuple):
            return self._send(302, "text/plain", b"elsewhere", {"Location": action[1]})
        self._send(action, "application/json", b'{"ok": true}')


def until(check: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what or check}"
        time.sleep(0.02)
    return found


@pytest.fixture(scope="module")
def receiver() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    server.daemon_threads = True
    Receiver.port = server.server_port
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    for event in Receiver.release.values():
        event.set()
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def fast() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(callbacks, "BACKOFF", 0.05)
        mp.setattr(callbacks, "POLL", 0.05)
        mp.setattr(callbacks, "TIMEOUT", 90.0)
        yield


def settings_for(home: Path, **env: str) -> Settings:
    return Settings.from_env({"CLIP_GAZE_HOME": str(home), "CLIP_GAZE_MODEL": "toy", "CLIP_GAZE_API_TOKENS": TOKEN,
                              "CLIP_GAZE_FETCH_ALLOW": "127.0.0.1", "CLIP_GAZE_WEBHOOK_SECRET": SECRET, **env})


def engine_for(settings: Settings, toy: Any) -> Engine:
    return Engine.from_settings(settings, loader=lambda spec, **_: toy, batch_window_ms=2)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, toy: Any, receiver: str, fast: None) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("callbacks") / "home"
    settings = settings_for(home)
    engine = engine_for(settings, toy)
    app = create_app(settings, engine=engine)
    client = app.test_client()
    assert client.post("/v1/collections", json={"name": "hooks"}, headers=AUTH).status_code == 201
    yield {"app": app, "client": client, "engine": engine, "base": receiver, "home": home}
    app.extensions["clip_gaze"].collections.deliveries.stop(timeout=5)


def start(world: dict[str, Any], hook: str | None, collection: str = "hooks") -> dict[str, Any]:
    body: dict[str, Any] = {"sources": [f"{world['base']}/manifest.json"]}
    if hook is not None:
        body["callback_url"] = hook if hook.startswith("http") else f"{world['base']}{hook}"
    got = world["client"].post(f"/v1/collections/{collection}/sources", json=body, headers=AUTH)
    assert got.status_code == 202, got.get_json()
    return got.get_json()["job"]  # type: ignore[no-any-return]


def job(world: dict[str, Any], job_id: str, headers: dict[str, str] = AUTH) -> dict[str, Any]:
    return world["client"].get(f"/v1/jobs/{job_id}", headers=headers).get_json()["job"]  # type: ignore[no-any-return]


def deliver_now(world: dict[str, Any]) -> None:
    """A job made in the store by the test has ended: the deliveries run (as at a server's start, which
    this app has not had when no earlier test started a job with a callback) and look now."""
    deliveries = world["app"].extensions["clip_gaze"].collections.deliveries
    deliveries.start()
    deliveries.wake()


def settled(world: dict[str, Any], job_id: str) -> dict[str, Any]:
    """The job once its callback is delivered or given up."""
    return until(lambda: (j := job(world, job_id))["callback"]["state"] in ("delivered", "failed") and j, what=job_id)


def test_the_job_answer_is_posted_signed_when_the_job_ends(world: dict[str, Any]):
    started = start(world, "/done")
    assert started["callback"] == {"url": f"{world['base']}/done", "state": started["callback"]["state"], "attempts": 0,
                                   "last_status": None, "last_error": None, "next_attempt": None}
    ended = settled(world, started["id"])
    assert ended["state"] == "done" and ended["done"] == 1
    assert {k: ended["callback"][k] for k in ("state", "attempts", "last_status", "last_error")} == \
        {"state": "delivered", "attempts": 1, "last_status": 200, "last_error": None}
    assert ended["callback"]["url"] == f"{world['base']}/done"
    assert job(world, started["id"], headers={})["callback"]["url"] == f"{world['base']}/…"  # a reader: no path, no token
    [got] = Receiver.got["/done"]
    assert got["verified"] and got["content_type"] == "application/json"
    sent = json.loads(got["body"])
    assert sent["ok"] is True and sent["job"]["id"] == started["id"]
    # the same JSON as GET /v1/jobs/<id>, as it stood when sent: its callback not yet delivered
    assert {k: v for k, v in sent["job"].items() if k != "callback"} == {k: v for k, v in ended.items() if k != "callback"}
    assert sent["job"]["callback"]["state"] == "pending" and sent["job"]["callback"]["attempts"] == 0
    # the Stripe scheme: t=<unix time>,v1=<hex HMAC-SHA256 of "t.body">; stale, altered or foreign ones fail
    t = int(got["header"].split(",")[0].removeprefix("t="))
    assert abs(t - time.time()) < 60 and got["header"] == signature(SECRET, got["body"], t)
    assert not verify("another-secret", got["header"], got["body"])
    assert not verify(SECRET, got["header"], got["body"] + b" ")
    assert not verify(SECRET, got["header"], got["body"], now=t + 301)
    assert not verify(SECRET, "v1=abc", got["body"]) and not verify(SECRET, "", got["body"])


def test_a_failing_receiver_is_retried_with_backoff_each_attempt_recorded(world: dict[str, Any]):
    Receiver.plans["/flaky"] = [500, 503, ("redirect", f"{world['base']}/elsewhere")]
    started = start(world, "/flaky")
    ended = settled(world, started["id"])
    assert ended["callback"]["state"] == "delivered" and ended["callback"]["attempts"] == 4
    attempts = CallbackStore(world["engine"].images).attempts(started["id"])
    assert [a["status"] for a in attempts] == [500, 503, 302, 200]
    assert attempts[0]["error"] == "answered 500" and "not followed" in attempts[2]["error"]
    assert not Receiver.got["/elsewhere"]  # a redirect is never followed
    assert all(g["verified"] for g in Receiver.got["/flaky"]) and len(Receiver.got["/flaky"]) == 4
    assert [callbacks.next_wait(n) for n in (1, 2, 3)] == [0.05, 0.1, 0.2]  # the waits between them double


def test_a_receiver_that_keeps_failing_is_given_up_after_the_window(world: dict[str, Any], monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(callbacks, "WINDOW", 0.3)
    Receiver.plans["/down"] = [500] * 50
    ended = settled(world, start(world, "/down")["id"])
    assert ended["callback"]["state"] == "failed" and ended["callback"]["last_status"] == 500
    assert 2 <= ended["callback"]["attempts"] == len(Receiver.got["/down"]) < 10


def test_a_callback_to_a_private_address_is_refused_at_request_time(world: dict[str, Any]):
    client = world["client"]
    count = world["engine"].images.db.execute("SELECT count(*) FROM jobs").fetchone()[0]
    for url, code in (("http://192.168.7.1/hook", "url_refused"), ("http://localhost:9/hook", "url_refused"),
                      ("http://[::1]:9/hook", "url_refused"), ("http://10.0.0.5:8080/x", "url_refused"),
                      ("http://user:pw@127.0.0.1/x", "url_refused"), ("http://no-such-host.invalid/x", "fetch_failed")):
        got = client.post("/v1/collections/hooks/sources", headers=AUTH,
                          json={"sources": [f"{world['base']}/manifest.json"], "callback_url": url})
        body = got.get_json()
        assert (got.status_code, body["ok"], body["status"], body["code"]) == (422, False, 422, code), (url, body)
        assert "callback_url" in body["error"]
    bad = client.post("/v1/collections/hooks/sources", headers=AUTH,
                      json={"sources": [f"{world['base']}/manifest.json"], "callback_url": "ftp://example.org/x"})
    assert bad.status_code == 400 and bad.get_json()["code"] == "invalid_url"
    assert world["engine"].images.db.execute("SELECT count(*) FROM jobs").fetchone()[0] == count  # no job was made


def test_without_a_secret_a_callback_is_refused_and_nothing_is_sent_unsigned(world: dict[str, Any], toy: Any):
    settings = settings_for(world["home"], CLIP_GAZE_WEBHOOK_SECRET="")
    client = create_app(settings, engine=engine_for(settings, toy)).test_client()
    got = client.post("/v1/collections/hooks/sources", headers=AUTH,
                      json={"sources": [f"{world['base']}/manifest.json"], "callback_url": f"{world['base']}/unsigned"})
    assert got.status_code == 422 and got.get_json()["code"] == "no_webhook_secret"
    with pytest.raises(InvalidInput) as exc:
        check_url(f"{world['base']}/x", CallbackPolicy(FetchPolicy(allow=frozenset({"127.0.0.1"})), ""))
    assert exc.value.code == "no_webhook_secret" and not Receiver.got["/unsigned"]


def test_the_url_is_checked_again_at_delivery(world: dict[str, Any]):
    """A job whose callback names an address the guard refuses now (as after CLIP_GAZE_FETCH_ALLOW
    changed): the attempt is recorded as refused, never sent."""
    images = world["engine"].images
    job_id = images.create_job("add_sources", "hooks", callback_url="http://10.9.8.7/hook")
    images.update_job(job_id, state="failed", error="made by the test")
    deliver_now(world)
    attempt = until(lambda: CallbackStore(images).attempts(job_id))[0]
    assert attempt["status"] is None and "refused" in attempt["error"] and "CLIP_GAZE_FETCH_ALLOW" in attempt["error"]
    assert job(world, job_id)["callback"]["state"] in ("pending", "failed")


def test_an_interrupted_job_calls_back_too(world: dict[str, Any]):
    """A job marked interrupted (a server stopped while it ran, CLIP_GAZE_RESUME_JOBS=0) has ended too."""
    images = world["engine"].images
    job_id = images.create_job("add_sources", "hooks", callback_url=f"{world['base']}/interrupted")
    images.update_job(job_id, state="interrupted", reason="the server stopped while it ran")
    deliver_now(world)
    assert settled(world, job_id)["callback"]["state"] == "delivered"
    sent = json.loads(Receiver.got["/interrupted"][0]["body"])["job"]
    assert (sent["id"], sent["state"], sent["reason"]) == (job_id, "interrupted", "the server stopped while it ran")


def test_a_hanging_receiver_holds_neither_the_next_job_nor_its_callback(world: dict[str, Any]):
    Receiver.plans["/hang"] = ["hang"]
    first = start(world, "/hang")
    until(Receiver.hanging["/hang"].is_set, what="the receiver hangs")
    second = start(world, "/after")
    ended = settled(world, second["id"])
    assert ended["state"] == "done" and ended["callback"]["state"] == "delivered"
    hung = job(world, first["id"])  # its attempt still in flight (a 90 s timeout here): nothing recorded yet
    assert hung["state"] == "done" and hung["callback"]["attempts"] == 0
    Receiver.release["/hang"].set()
    assert settled(world, first["id"])["callback"]["last_status"] == 200


def test_a_receiver_that_hangs_past_the_timeout_is_a_failed_attempt_tried_again(world: dict[str, Any],
                                                                              monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(callbacks, "TIMEOUT", 0.3)
    Receiver.plans["/slow"] = ["hang"]
    ended = settled(world, start(world, "/slow")["id"])
    Receiver.release["/slow"].set()
    attempts = CallbackStore(world["engine"].images).attempts(ended["id"])
    assert [a["status"] for a in attempts] == [None, 200] and "no answer within 0.3 s" in attempts[0]["error"]


def test_two_processes_never_claim_one_attempt(world: dict[str, Any]):
    images = world["engine"].images
    job_id = images.create_job("add_sources", "hooks", callback_url=f"{world['base']}/claimed")
    store = CallbackStore(images)
    now = time.time()
    assert store.claim(job_id, "a", now, now + 60, 3600) is None  # not ended yet: not due
    images.db.execute("UPDATE jobs SET state = 'done' WHERE id = ?", [job_id])  # (autocommit) no deliverer is woken
    first = store.claim(job_id, "a", now, now + 60, 3600)
    assert first is not None and first.attempt == 1
    assert store.claim(job_id, "b", now, now + 60, 3600) is None  # held by a until its lease
    assert not store.record(first, "b", 200, None, "delivered")  # only the holder records
    assert store.record(first, "a", 200, None, "delivered")
    assert store.claim(job_id, "b", time.time(), time.time() + 60, 3600) is None  # delivered: never again


def test_a_delivery_pending_when_the_server_stopped_is_made_after_a_restart(tmp_path: Path, toy: Any, receiver: str,
                                                                         fast: None):
    """The worker that ran the job stopped before its callback went (its deliveries never ran): the next
    server over the same home delivers it."""
    settings = settings_for(tmp_path / "restart")
    before = Collections(engine_for(settings, toy), webhook_secret=SECRET)
    before.create(CreateCollection(name="hooks"))
    request = parse(AddSources, {"sources": [f"{receiver}/manifest.json"]})
    job_id = before.jobs.start("hooks", request, callback_url=f"{receiver}/restart")
    ended = until(lambda: (j := before.job(job_id)).state == "done" and j)
    assert ended.callback is not None and (ended.callback.state, ended.callback.attempts) == ("pending", 0)
    assert not Receiver.got["/restart"]
    app = create_app(settings, engine=engine_for(settings, toy))
    app.extensions["clip_gaze"].start_jobs()  # what a worker does after warming up
    try:
        client = app.test_client()
        shown = until(lambda: (j := client.get(f"/v1/jobs/{job_id}").get_json()["job"])["callback"]["state"] == "delivered" and j)
        assert shown["callback"]["attempts"] == 1 and len(Receiver.got["/restart"]) == 1
        assert json.loads(Receiver.got["/restart"][0]["body"])["job"]["id"] == job_id and Receiver.got["/restart"][0]["verified"]
    finally:
        app.extensions["clip_gaze"].collections.deliveries.stop(timeout=5)
        app.extensions["clip_gaze"].collections.jobs.shutdown(time.monotonic() + 5)


def test_the_python_client_passes_a_callback_url(world: dict[str, Any]):
    from werkzeug.serving import make_server

    from clip_gaze import Client

    server = make_server("127.0.0.1", 0, world["app"], threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        api = Client(f"http://127.0.0.1:{server.server_port}", token=TOKEN)
        started = api.add_sources("hooks", [f"{world['base']}/manifest.json"], callback_url=f"{world['base']}/client")
        assert started.callback is not None and started.callback.url == f"{world['base']}/client"
        until(lambda: Receiver.got["/client"])
        assert Receiver.got["/client"][0]["verified"]
    finally:
        server.shutdown()
        server.server_close()
