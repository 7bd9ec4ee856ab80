"""Change feeds (issue 22, part 4): `clip-gaze collection sync NAME --changes URL`, POST
/v1/collections/<name>/sync, `Client.sync`, against a IIIF server on a loopback port with manifests,
Image API services and a IIIF Change Discovery stream over several pages. Create/Update/Delete change
the stored rows, a second sync reads only what is newer, a sync killed midway and run again ends as
one uninterrupted run, and a stream that lies about its pages changes nothing."""

from __future__ import annotations

import json
import time
from typing import Any, Iterator

import pytest

from conftest import draw_shape, encode
from test_e2e_serve import free_port
from test_iiif_collections import AUTH, TOKEN, QuietHandler, serving, toy_engine

from indexer.collections import callbacks
from indexer.collections.jobs import run_owner
from indexer.collections.local import Collections
from indexer.engine import Engine
from indexer.errors import ClipGazeError
from indexer.pictures import change_stream
from indexer.schema import parse
from indexer.schema.collections import CreateCollection
from indexer.schema.sync import SyncChanges
from indexer.settings import Settings
from indexer.store.keys import KeyStore
from indexer.store.syncs import SyncStore
from service import create_app

SHAPES = {"red": ("red", "circle"), "blue": ("blue", "square"), "green": ("green", "triangle"),
          "yellow": ("yellow", "circle"), "purple": ("purple", "square")}


def at(second: int) -> str:
    return f"2026-12-01T10:00:{second:02d}Z"


class Museum(QuietHandler):
    """Manifests (`manifests`: name → its pictures), Image API services (`shapes`: what each draws),
    the change stream `/changes/collection.json` (`pages` of activities, oldest first) and streams that
    lie: one whose pages loop through `prev`, one whose last page is not a page."""

    requests: list[str] = []
    port = 0
    manifests: dict[str, list[str]] = {}
    shapes: dict[str, tuple[str, str]] = {}
    pages: list[list[dict[str, Any]]] = []

    def do_GET(self) -> None:  # noqa: N802
        type(self).requests.append(self.path)
        base = f"http://127.0.0.1:{self.port}"
        parts = self.path.strip("/").split("/")
        if self.path == "/changes/collection.json":
            return self._json({"@context": "http://iiif.io/api/discovery/1/context.json", "id": base + self.path,
                               "type": "OrderedCollection", "totalItems": sum(map(len, self.pages)),
                               "first": {"id": f"{base}/changes/page-0.json", "type": "OrderedCollectionPage"},
                               "last": {"id": f"{base}/changes/page-{len(self.pages) - 1}.json",
                                        "type": "OrderedCollectionPage"}})
        if parts[0] == "changes" and parts[1].startswith("page-"):
            n = int(parts[1].removeprefix("page-").removesuffix(".json"))
            page: dict[str, Any] = {"id": base + self.path, "type": "OrderedCollectionPage", "orderedItems": self.pages[n],
                                    "partOf": {"id": f"{base}/changes/collection.json", "type": "OrderedCollection"}}
            if n > 0:
                page["prev"] = {"id": f"{base}/changes/page-{n - 1}.json", "type": "OrderedCollectionPage"}
            return self._json(page)
        if parts[0] == "loop":  # page 1's prev is page 0, whose prev is page 1
            if parts[1] == "collection.json":
                return self._json({"id": base + self.path, "type": "OrderedCollection", "last": f"{base}/loop/1.json"})
            n = int(parts[1].removesuffix(".json"))
            return self._json({"id": base + self.path, "type": "OrderedCollectionPage", "prev": f"{base}/loop/{1 - n}.json",
                               "orderedItems": [activity(base, "Delete", "a", 50 + n)]})
        if self.path == "/notpage/collection.json":
            return self._json({"id": base + self.path, "type": "OrderedCollection", "last": f"{base}/manifests/a.json"})
        if parts[0] == "manifests" and parts[1].removesuffix(".json") in self.manifests:
            return self._json(manifest(base, parts[1].removesuffix(".json"), self.manifests[parts[1].removesuffix(".json")]))
        if len(parts) == 3 and parts[0] == "iiif" and parts[2] == "info.json":
            return self._json({"@context": "http://iiif.io/api/image/3/context.json", "id": f"{base}/iiif/{parts[1]}",
                               "type": "ImageService3", "protocol": "http://iiif.io/api/image", "width": 400,
                               "height": 300, "profile": "level2"})
        if len(parts) == 6 and parts[0] == "iiif" and parts[1] in self.shapes:
            colour, shape = self.shapes[parts[1]]
            return self._send(200, "image/jpeg", encode(draw_shape(colour, shape, size=96), "JPEG"))
        self._send(404, "text/plain", b"not here")

    def _json(self, doc: Any) -> None:
        self._send(200, "application/json", json.dumps(doc).encode())

    def do_POST(self) -> None:  # noqa: N802  (a webhook receiver: keeps what it is sent)
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        type(self).hooks.append((self.path, self.headers.get(callbacks.HEADER, ""), body))
        self._send(200, "text/plain", b"thanks")

    hooks: list[tuple[str, str, bytes]] = []


def manifest(base: str, name: str, pictures: list[str]) -> dict[str, Any]:
    def canvas(p: str) -> dict[str, Any]:
        return {"id": f"{base}/canvas/{p}", "type": "Canvas", "width": 400, "height": 300, "items": [{
            "id": f"{base}/page/{p}", "type": "AnnotationPage", "items": [{
                "id": f"{base}/anno/{p}", "type": "Annotation", "motivation": "painting", "target": f"{base}/canvas/{p}",
                "body": {"id": f"{base}/iiif/{p}/full/max/0/default.jpg", "type": "Image", "format": "image/jpeg",
                         "service": [{"id": f"{base}/iiif/{p}", "type": "ImageService3", "profile": "level2"}]}}]}]}

    return {"@context": "http://iiif.io/api/presentation/3/context.json", "id": f"{base}/manifests/{name}.json",
            "type": "Manifest", "label": {"en": [name]}, "items": [canvas(p) for p in pictures]}


def activity(base: str, kind: str, name: str, second: int) -> dict[str, Any]:
    return {"type": kind, "object": {"id": f"{base}/manifests/{name}.json", "type": "Manifest"}, "endTime": at(second)}


@pytest.fixture(scope="module")
def museum() -> Iterator[str]:
    with serving(Museum) as base:
        yield base


@pytest.fixture
def stream(museum: str) -> str:
    """The museum as it starts: manifests a (red, blue), b (green) and c (yellow), and three pages of
    changes; a's newest is an Update, b's a Delete (after its Create), c's a Create."""
    Museum.requests = []
    Museum.manifests = {"a": ["red", "blue"], "b": ["green"], "c": ["yellow"]}
    Museum.shapes = dict(SHAPES)
    Museum.pages = [
        [activity(museum, "Create", "a", 1), activity(museum, "Create", "b", 2)],
        [activity(museum, "Create", "c", 3),
         {"type": "Update", "object": {"id": f"{museum}/collection.json", "type": "Collection"}, "endTime": at(3)},
         {"type": "Create", "object": {"id": "/etc", "type": "Manifest"}, "endTime": at(3)},  # never a path here
         activity(museum, "Update", "a", 4)],
        [activity(museum, "Delete", "b", 5)],
    ]
    return f"{museum}/changes/collection.json"


@pytest.fixture
def feeds_engine(museum: str, clean_environ: Any, toy_loader: Any, monkeypatch: pytest.MonkeyPatch) -> Engine:
    monkeypatch.setenv("CLIP_GAZE_FETCH_ALLOW", f"{museum.removeprefix('http://')},127.0.0.1:{free_port()}")
    monkeypatch.setenv("CLIP_GAZE_API_TOKENS", TOKEN)
    return toy_engine(toy_loader)


def rows(engine: Engine, name: str) -> set[tuple[Any, ...]]:
    """What the collection holds: (external id, sha256, manifest, error code) of every picture, failures too."""
    cid = engine.images.get(name).id
    return {tuple(r) for r in engine.images.db.execute(
        "SELECT external_id, sha256, manifest, error_code FROM collection_images WHERE collection_id = ?", [cid])}


def held(engine: Engine, name: str) -> dict[str, str]:
    return {str(e).rsplit("/", 1)[-1]: str(m).rsplit("/", 1)[-1] for e, s, m, _ in rows(engine, name) if s}


def sync(engine: Engine, name: str, url: str, **kw: Any) -> Any:
    return Collections(engine).sync(name, parse(SyncChanges, {"changes": url}), **kw)


def made(engine: Engine, name: str) -> None:
    Collections(engine).create(parse(CreateCollection, {"name": name}))


def test_creates_updates_and_deletes_change_the_rows_and_the_next_sync_reads_only_what_is_newer(
        feeds_engine: Engine, stream: str, museum: str):
    made(feeds_engine, "shapes")
    first = sync(feeds_engine, "shapes", stream)
    assert held(feeds_engine, "shapes") == {"red": "a.json", "blue": "a.json", "yellow": "c.json"}  # b's Delete won
    assert (first.added, first.refreshed, first.removed, first.failed) == (3, 0, 0, 0)
    assert (first.manifests, first.activities, first.ignored, first.pages) == (3, 5, 2, 3)  # the Collection's, /etc
    assert first.end_time == "2026-12-01T10:00:05.000000Z" and not first.resumed
    cid = feeds_engine.images.get("shapes").id
    assert SyncStore(feeds_engine.images).state(cid, stream) == (first.end_time, None)
    red = {e: s for e, s, _, _ in rows(feeds_engine, "shapes")}[f"{museum}/canvas/red"]

    Museum.manifests["a"] = ["red", "purple"]  # blue leaves a, purple joins, red is painted again
    Museum.shapes["red"] = ("red", "square")
    Museum.pages.append([activity(museum, "Update", "a", 6), activity(museum, "Delete", "c", 7),
                         activity(museum, "Create", "b", 7)])
    Museum.requests = []
    second = sync(feeds_engine, "shapes", stream)
    assert held(feeds_engine, "shapes") == {"red": "a.json", "purple": "a.json", "green": "b.json"}
    assert (second.added, second.refreshed, second.removed, second.failed) == (2, 1, 2, 0)
    assert second.activities == 3 and second.end_time == "2026-12-01T10:00:07.000000Z"
    pages = [r for r in Museum.requests if r.startswith("/changes/page-")]
    assert pages == ["/changes/page-3.json", "/changes/page-2.json"]  # back only to the last sync's endTime
    assert {e: s for e, s, _, _ in rows(feeds_engine, "shapes")}[f"{museum}/canvas/red"] != red  # read again

    third = sync(feeds_engine, "shapes", stream)
    assert (third.added, third.refreshed, third.removed, third.manifests, third.pages) == (0, 0, 0, 0, 1)
    assert held(feeds_engine, "shapes") == {"red": "a.json", "purple": "a.json", "green": "b.json"}


class Killed(BaseException):
    """What a kill looks like from inside: nothing catches it."""


@pytest.mark.parametrize("where", ["after a manifest", "within a manifest"])
def test_a_sync_killed_midway_and_run_again_ends_as_one_uninterrupted_run(
        feeds_engine: Engine, stream: str, museum: str, where: str, monkeypatch: pytest.MonkeyPatch):
    Museum.pages[2].append(activity(museum, "Create", "d", 6))
    Museum.manifests["d"] = ["green", "purple", "blue"]
    made(feeds_engine, "whole")
    made(feeds_engine, "killed")
    sync(feeds_engine, "whole", stream)

    if where == "after a manifest":
        def stop(index: int) -> None:
            if index == 1:
                raise Killed()

        with pytest.raises(Killed):
            sync(feeds_engine, "killed", stream, after_step=stop)
    else:
        reads = {"n": 0}
        original = Collections.read_prepared

        def read(self: Collections, ref: Any) -> Any:
            reads["n"] += 1
            if reads["n"] == 4:  # in d, the third manifest: the first two were applied
                raise Killed()
            return original(self, ref)

        monkeypatch.setattr(Collections, "read_prepared", read)
        with pytest.raises(Killed):
            sync(feeds_engine, "killed", stream)
        monkeypatch.setattr(Collections, "read_prepared", original)
    cid = feeds_engine.images.get("killed").id
    end, pending = SyncStore(feeds_engine.images).state(cid, stream)
    assert end is None and pending is not None and 0 < pending["done"] < len(pending["plan"])  # not recorded as applied
    assert rows(feeds_engine, "killed") != rows(feeds_engine, "whole")

    again = sync(feeds_engine, "killed", stream)
    assert again.resumed
    assert {r[:3] for r in rows(feeds_engine, "killed")} == {r[:3] for r in rows(feeds_engine, "whole")}
    whole = SyncStore(feeds_engine.images).state(feeds_engine.images.get("whole").id, stream)
    assert SyncStore(feeds_engine.images).state(cid, stream) == whole == ("2026-12-01T10:00:06.000000Z", None)


def test_a_stream_that_lies_about_its_pages_or_cannot_be_read_changes_nothing(
        feeds_engine: Engine, stream: str, museum: str, monkeypatch: pytest.MonkeyPatch):
    made(feeds_engine, "shapes")
    sync(feeds_engine, "shapes", stream)
    before = rows(feeds_engine, "shapes")
    cid = feeds_engine.images.get("shapes").id
    state = SyncStore(feeds_engine.images).state(cid, stream)
    closed = [a for a in Settings.from_env().fetch_allow if not museum.endswith(a)][0]
    cases = {
        f"{museum}/loop/collection.json": ("invalid_change_stream", "a loop"),
        f"{museum}/notpage/collection.json": ("invalid_change_stream", "is not a page"),
        f"{museum}/manifests/a.json": ("invalid_change_stream", "not a IIIF Change Discovery stream"),
        f"{museum}/nothing.json": ("fetch_failed", "404"),
        f"http://{closed}/changes.json": ("fetch_failed", ""),
        "http://10.1.2.3/changes.json": ("url_refused", "CLIP_GAZE_FETCH_ALLOW"),
    }
    for url, (code, words) in cases.items():
        with pytest.raises(ClipGazeError) as caught:
            sync(feeds_engine, "shapes", url)
        assert caught.value.code == code and words in caught.value.message, (url, caught.value.message)
    monkeypatch.setattr(change_stream, "MAX_PAGES", 2)
    Museum.pages.append([activity(museum, "Delete", "a", 9)])
    Museum.pages.append([activity(museum, "Delete", "c", 9)])
    with pytest.raises(ClipGazeError, match="more than 2 pages"):
        sync(feeds_engine, "shapes", stream)
    monkeypatch.setattr(change_stream, "MAX_PAGES", 10)
    monkeypatch.setattr(change_stream, "MAX_BYTES", 1500)
    with pytest.raises(ClipGazeError, match="MiB in all|fetched at most"):
        sync(feeds_engine, "shapes", stream)
    assert rows(feeds_engine, "shapes") == before
    assert SyncStore(feeds_engine.images).state(cid, stream) == state


def test_an_unreadable_manifest_keeps_its_stored_pictures_and_is_recorded(feeds_engine: Engine, stream: str,
                                                                          museum: str):
    made(feeds_engine, "shapes")
    sync(feeds_engine, "shapes", stream)
    del Museum.manifests["a"]  # its Update now answers 404
    Museum.pages.append([activity(museum, "Update", "a", 8), activity(museum, "Create", "gone", 8)])
    report = sync(feeds_engine, "shapes", stream)
    assert held(feeds_engine, "shapes") == {"red": "a.json", "blue": "a.json", "yellow": "c.json"}
    assert report.failed == 2 and {e.source for e in report.errors} == {f"{museum}/manifests/a.json",
                                                                          f"{museum}/manifests/gone.json"}
    failures = {r[0] or "" for r in rows(feeds_engine, "shapes") if r[3]}
    assert len(failures) == 1  # the manifest never read is the collection's failure; a's pictures stay
    Museum.pages.append([activity(museum, "Delete", "gone", 9)])
    sync(feeds_engine, "shapes", stream)
    assert not [r for r in rows(feeds_engine, "shapes") if r[3]]  # its Delete took the failure away


def wait(client: Any, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        job = client.get(f"/v1/jobs/{job_id}").get_json()["job"]
        if job["state"] not in ("queued", "running") or time.monotonic() > deadline:
            return job
        time.sleep(0.05)


def test_the_api_runs_a_sync_as_a_job_202_then_done_and_refuses_bad_requests(feeds_engine: Engine, stream: str,
                                                                             museum: str):
    client = create_app(Settings.from_env(), engine=feeds_engine).test_client()
    assert client.post("/v1/collections", json={"name": "shapes"}, headers=AUTH).status_code == 201
    started = client.post("/v1/collections/shapes/sync", json={"changes": stream}, headers=AUTH)
    assert started.status_code == 202, started.get_json()
    job = started.get_json()["job"]
    assert job["kind"] == "sync" and job["collection"] == "shapes"
    done = wait(client, job["id"])
    assert done["state"] == "done", done
    assert (done["total"], done["done"], done["failed"], done["refreshed"]) == (3, 3, 0, 1)
    assert held(feeds_engine, "shapes") == {"red": "a.json", "blue": "a.json", "yellow": "c.json"}

    looping = client.post("/v1/collections/shapes/sync", json={"changes": f"{museum}/loop/collection.json"}, headers=AUTH)
    failed = wait(client, looping.get_json()["job"]["id"])
    assert failed["state"] == "failed" and "a loop" in failed["error"], failed
    assert held(feeds_engine, "shapes") == {"red": "a.json", "blue": "a.json", "yellow": "c.json"}

    for body, status, code in (({"changes": "ftp://x/y"}, 400, "invalid_url"), ({}, 400, None),
                               ({"changes": stream, "extra": 1}, 400, None)):
        got = client.post("/v1/collections/shapes/sync", json=body, headers=AUTH)
        assert got.status_code == status and got.get_json()["ok"] is False, got.get_json()
        assert code is None or got.get_json()["code"] == code
    assert client.post("/v1/collections/shapes/sync", json={"changes": stream}).status_code == 401
    under_way = feeds_engine.images.create_job("sync", "shapes", json.dumps({"changes": stream}), run_owner(),
                                               time.time() + 60)  # another worker's, alive
    twice = client.post("/v1/collections/shapes/sync", json={"changes": stream}, headers=AUTH)
    assert twice.status_code == 409 and twice.get_json()["code"] == "sync_running" and under_way in twice.get_json()["error"]
    refused = client.post("/v1/collections/shapes/sync", json={"changes": "http://10.1.2.3/changes"}, headers=AUTH)
    assert refused.status_code == 403 and refused.get_json()["code"] == "url_refused"  # no job: the guard said no
    unknown = client.post("/v1/collections/nope/sync", json={"changes": stream}, headers=AUTH)
    assert unknown.status_code == 404 and unknown.get_json()["code"] == "unknown_collection"
    assert client.post("/v1/collections", json={"name": "hidden", "private": True}, headers=AUTH).status_code == 201
    _, secret = KeyStore(feeds_engine.store).create("editor", ["read", "write"], collections=["shapes"])
    hidden = client.post("/v1/collections/hidden/sync", json={"changes": stream}, headers={"Authorization": f"Bearer {secret}"})
    assert hidden.status_code == 404 and hidden.get_json()["code"] == "unknown_collection"  # as if it did not exist
    assert feeds_engine.images.get("hidden").size == 0


def test_a_sync_job_no_worker_owns_is_resumed_by_its_kind(feeds_engine: Engine, stream: str):
    made(feeds_engine, "shapes")
    request = parse(SyncChanges, {"changes": stream}).model_dump_json()
    job_id = feeds_engine.images.create_job("sync", "shapes", request)  # as a worker that died left it
    collections = Collections(feeds_engine)
    assert collections.jobs.take_unowned() == 1
    deadline = time.monotonic() + 60
    while (job := collections.job(job_id)).state in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert job.state == "done" and job.resumed == 1 and job.done == 3, job
    assert held(feeds_engine, "shapes") == {"red": "a.json", "blue": "a.json", "yellow": "c.json"}


def test_the_command_prints_a_summary_or_one_error_line(feeds_engine: Engine, stream: str, museum: str, run: Any):
    assert run("collection", "create", "shapes").exit_code == 0
    out = run("collection", "sync", "shapes", "--changes", stream, "--model", "toy")
    assert out.exit_code == 0, out.output
    assert out.output.startswith("shapes: 3 pictures added, 0 refreshed, 0 removed, 0 failed (3 manifests from 5 activities")
    Museum.pages.append([activity(museum, "Delete", "a", 8)])
    again = run("collection", "sync", "shapes", "--changes", stream, "--model", "toy", "--json")
    report = json.loads(again.output)
    assert (report["removed"], report["added"], report["end_time"]) == (2, 0, "2026-12-01T10:00:08.000000Z")
    bad = run("collection", "sync", "shapes", "--changes", f"{museum}/loop/collection.json", "--model", "toy")
    assert bad.exit_code == 1 and bad.output.startswith("Error: ") and "a loop" in bad.output


def test_the_python_client_starts_a_sync_and_waits_for_it(feeds_engine: Engine, stream: str):
    import threading

    from werkzeug.serving import make_server

    from clip_gaze import ApiError, Client

    app = create_app(Settings.from_env(), engine=feeds_engine)
    made(feeds_engine, "shapes")
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = Client(f"http://127.0.0.1:{server.server_port}", token=TOKEN)
        job = client.sync("shapes", stream)
        assert job.kind == "sync"
        done = client.wait(job.id, timeout=60, poll=0.05)
        assert done.state == "done" and done.done == 3
        with pytest.raises(ApiError) as caught:
            client.sync("nope", stream)
        assert caught.value.code == "unknown_collection"
    finally:
        server.shutdown()
    assert held(feeds_engine, "shapes") == {"red": "a.json", "blue": "a.json", "yellow": "c.json"}


def test_a_sync_job_with_a_callback_url_posts_its_answer_signed_when_it_ends(
        feeds_engine: Engine, stream: str, museum: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CLIP_GAZE_WEBHOOK_SECRET", "whsec-feeds")
    monkeypatch.setattr(callbacks, "POLL", 0.05)
    Museum.hooks = []
    client = create_app(Settings.from_env(), engine=feeds_engine).test_client()
    assert client.post("/v1/collections", json={"name": "shapes"}, headers=AUTH).status_code == 201
    started = client.post("/v1/collections/shapes/sync", json={"changes": stream, "callback_url": f"{museum}/hooks/dams"},
                          headers=AUTH)
    assert started.status_code == 202, started.get_json()
    assert wait(client, started.get_json()["job"]["id"])["state"] == "done"
    deadline = time.monotonic() + 30
    while not Museum.hooks and time.monotonic() < deadline:
        time.sleep(0.02)
    path, header, body = Museum.hooks[0]
    assert path == "/hooks/dams" and callbacks.verify("whsec-feeds", header, body)
    sent = json.loads(body)["job"]
    assert (sent["kind"], sent["state"], sent["total"], sent["done"]) == ("sync", "done", 3, 3)
