"""Jobs across restarts: `clip-gaze serve` (gunicorn, 2 workers, toy model) adding a manifest of 240
pictures from a loopback server that answers slowly, stopped mid-job by SIGKILL or SIGTERM, then
started again on the same home. The job ends `done`, resumed once, its counts right and nothing
doubled; with CLIP_GAZE_RESUME_JOBS=0 it is `interrupted`, with a reason. A SIGTERM lets the job reach
a checkpoint (what is stored is what the job counted) and the server exit within the grace. No job
is ever `running` without a live worker owning it, and `Client.wait` returns or times out clearly."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import pytest
from werkzeug.serving import make_server

from clip_gaze import ApiError, Client
from conftest import draw_shape, encode
from indexer.collections.jobs import HEARTBEAT, INTERRUPTED, LEASE, Jobs, job_owner_alive, owner_alive, process_owner
from indexer.collections.local import Collections
from indexer.engine import Engine
from indexer.schema import parse
from indexer.schema.collections import AddSources, CreateCollection
from indexer.settings import Settings
from service import create_app
from test_e2e_serve import TOKEN, Server, free_port

pytestmark = pytest.mark.e2e
N = 240
GRACE = 6


class _Slow(BaseHTTPRequestHandler):
    server: "_Pictures"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        base = f"http://127.0.0.1:{self.server.server_address[1]}"
        if self.path == "/manifest.json":
            body, ctype = json.dumps(manifest(base, len(self.server.bodies))).encode(), "application/json"
        else:
            with self.server.lock:
                self.server.fetches[self.path] += 1
            self.server.first.set()
            time.sleep(self.server.delay)
            body, ctype = self.server.bodies[int(self.path.strip("/").split(".")[0])], "image/png"
        try:
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the worker that asked was killed


class _Pictures(ThreadingHTTPServer):
    """`/<i>.png`, the i-th of `bodies` (N shapes unless given), each after `delay` seconds and counted in
    `fetches` (`first` set at the first), and `/manifest.json`, a IIIF manifest of them all."""

    daemon_threads = False
    block_on_close = True  # closing waits for the requests it answers

    def __init__(self, bodies: list[bytes] | None = None, delay: float = 0.05) -> None:
        super().__init__(("127.0.0.1", 0), _Slow)
        colours = ("red", "blue", "green", "yellow", "purple", "orange")
        self.bodies = bodies if bodies is not None else [
            encode(draw_shape(colours[i % 6], ("circle", "square", "triangle")[i // 6 % 3], size=40 + i // 18))
            for i in range(N)]
        self.delay = delay
        self.fetches: Counter[str] = Counter()
        self.first = threading.Event()
        self.lock = threading.Lock()


def manifest(base: str, n: int = N) -> dict[str, Any]:
    def canvas(i: int) -> dict[str, Any]:
        return {"id": f"{base}/canvas/{i}", "type": "Canvas", "width": 40, "height": 40, "items": [{
            "id": f"{base}/page/{i}", "type": "AnnotationPage", "items": [{
                "id": f"{base}/anno/{i}", "type": "Annotation", "motivation": "painting", "target": f"{base}/canvas/{i}",
                "body": {"id": f"{base}/{i}.png", "type": "Image", "format": "image/png"}}]}]}

    return {"@context": "http://iiif.io/api/presentation/3/context.json", "id": f"{base}/manifest.json",
            "type": "Manifest", "label": {"en": ["Slow shapes"]}, "items": [canvas(i) for i in range(n)]}


@pytest.fixture
def pictures() -> Iterator[_Pictures]:
    server = _Pictures()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], Server]]:
    """Servers on one home, each started on its own port; any still running is stopped at the end."""
    started: list[Server] = []

    def start(env: dict[str, str]) -> Server:
        started.append(Server(tmp_path / "home", free_port(), env=env))
        return started[-1].start()

    yield start
    for srv in started:
        srv.stop()


def stored(home: Path, job_id: str, collection: str) -> tuple[int, dict[str, Any]]:
    """The collection's stored pictures and the job's row, read from the database itself."""
    with sqlite3.connect(home / "clip-gaze.db") as db:
        db.row_factory = sqlite3.Row
        count = db.execute("SELECT count(*) FROM collection_images i JOIN collections c ON c.id = i.collection_id "
                           "WHERE c.name = ? AND i.sha256 IS NOT NULL", [collection]).fetchone()[0]
        return count, dict(db.execute("SELECT * FROM jobs WHERE id = ?", [job_id]).fetchone())


def add_and_stop(srv: Server, pictures: _Pictures, collection: str, how: str) -> tuple[str, int]:
    """On a running server, an add of the manifest, stopped by `how` once it stored some pictures:
    the job's id and the pictures stored. What is stored is what the job counted (a checkpoint)."""
    api = Client(srv.url, token=TOKEN)
    api.create_collection(collection)
    job = api.add_sources(collection, [f"http://127.0.0.1:{pictures.server_address[1]}/manifest.json"])
    deadline = time.monotonic() + 60
    while api.job(job.id).done < 48:
        assert time.monotonic() < deadline, api.job(job.id)
        time.sleep(0.1)
    assert srv.proc is not None
    if how == "SIGKILL":
        srv.kill()
    else:
        sent = time.monotonic()
        os.kill(srv.proc.pid, signal.SIGTERM)  # the arbiter, as a supervisor would
        srv.proc.wait(timeout=GRACE + 15)
        assert time.monotonic() - sent < GRACE + 3, "the server outlived its shutdown grace"
    count, row = stored(srv.home, job.id, collection)
    assert 0 < count < N and count == row["done"], (count, row)
    if how == "SIGTERM":  # handed back at a checkpoint: owned by no one, for the next start
        assert (row["state"], row["owner"], row["lease_until"]) == ("queued", None, None)
    else:
        assert row["state"] == "running"  # as stored: its owner died with the server
    return job.id, count


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_a_job_stopped_with_its_server_is_resumed_at_the_next_start_or_interrupted(
        servers: Callable[[dict[str, str]], Server], pictures: _Pictures, how: str):
    env = {"CLIP_GAZE_FETCH_ALLOW": f"127.0.0.1:{pictures.server_address[1]}", "CLIP_GAZE_SHUTDOWN_GRACE": str(GRACE)}
    first, count = add_and_stop(servers(env), pictures, "first", how)

    srv = servers({**env, "CLIP_GAZE_RESUME_JOBS": "0"})
    job = Client(srv.url).wait(first, timeout=20, poll=0.2)  # returns: interrupted is an end
    assert (job.state, job.reason, job.resumed, job.done) == ("interrupted", INTERRUPTED, 0, count)
    assert Client(srv.url).collection("first").collection.size == count
    pictures.fetches.clear()
    second, _ = add_and_stop(srv, pictures, "second", how)

    api = Client(servers(env).url, token=TOKEN)
    job = api.wait(second, timeout=60, poll=0.2)
    assert (job.state, job.resumed, job.total, job.done, job.skipped, job.failed) == ("done", 1, N, N, 0, 0), job
    assert api.collection("second").collection.size == N  # nothing doubled
    assert len(pictures.fetches) == N
    assert sum(pictures.fetches.values()) <= N + 64  # at most the batches in flight read again
    assert api.job(first).state == "interrupted"  # an end: never taken up again


# ------------------------------------------------------------------- in one process, no server


def test_a_job_whose_worker_is_gone_never_answers_running(engine: Engine):
    collections = Collections(engine, resume_jobs=False)
    collections.create(parse(CreateCollection, {"name": "museum"}))
    images = engine.images
    gone = images.create_job("add_sources", "museum", '{"sources": ["http://127.0.0.1:9/m.json"]}',
                             f"{process_owner().rsplit('/', 2)[0]}/999999999/dead", time.time() + 600)
    images.update_job(gone, state="running")
    old = images.create_job("add_sources", "museum")  # as an older version stored it: no request, no owner
    lapsed = images.create_job("add_sources", "museum", '{"sources": ["http://127.0.0.1:9/m.json"]}',
                               "elsewhere/1/2/3", time.time() - 1)
    for job_id in (gone, old, lapsed):
        job = collections.job(job_id)
        assert job.state == "interrupted" and job.reason and "add the source again" in job.reason, job
    live = images.create_job("add_sources", "museum", '{"sources": []}', process_owner(), time.time() + 600)
    assert collections.job(live).state == "queued"  # its owner lives and its lease holds


def test_client_wait_returns_on_interrupted_and_times_out_clearly(engine: Engine, clean_environ: Path):
    collections = Collections(engine)
    collections.create(parse(CreateCollection, {"name": "museum"}))
    held = engine.images.create_job("add_sources", "museum", '{"sources": []}', process_owner(), time.time() + 600)
    app = create_app(Settings.from_env(), engine=engine)
    app.extensions["clip_gaze"]._collections[app.extensions["clip_gaze"].models.default] = collections
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        api = Client(f"http://127.0.0.1:{server.server_port}")
        started = time.monotonic()
        with pytest.raises(ApiError) as caught:
            api.wait(held, timeout=0.5, poll=0.1)
        assert caught.value.code == "timeout" and f"job {held} still queued after 0.5 s" in caught.value.message
        assert time.monotonic() - started < 3
        engine.images.update_job(held, state="interrupted", reason=INTERRUPTED, owner=None)
        assert api.wait(held, timeout=5, poll=0.1).state == "interrupted"
    finally:
        server.shutdown()
        server.server_close()


# ------------------------------------------------------- one run per job, whatever its lease says


class _CountingRun:
    """A job's run that counts its checkpoints as done."""

    def __init__(self) -> None:
        self.n = 0
        self.owner: str | None = None
        self.job_written: dict[str, Any] | None = None

    def carry(self, job_id: str, earlier: dict[str, Any], owner: str | None = None) -> None:
        self.owner = owner

    def job_counts(self, report: Any = None) -> dict[str, Any]:
        return {"done": self.n}


def _counting_jobs(engine: Engine, steps: int, pause: float) -> tuple[Jobs, list[_CountingRun]]:
    runs: list[_CountingRun] = []

    def make_run(name: str, request: AddSources) -> _CountingRun:
        runs.append(_CountingRun())
        return runs[-1]

    def execute(run: _CountingRun, checkpoint: Callable[[Any], None]) -> Any:
        for _ in range(steps):
            time.sleep(pause)
            run.n += 1
            checkpoint(None)
        return None

    return Jobs(engine.images, make_run, execute), runs


def _wait_for(jobs: Jobs, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while jobs.threads and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not jobs.threads


def _running_job(engine: Engine, steps: int, pause: float) -> tuple[Jobs, list[_CountingRun], str]:
    """A counting job of `steps` checkpoints `pause` seconds apart into a new collection, 0.3 s into its run."""
    Collections(engine).create(parse(CreateCollection, {"name": "museum"}))
    jobs, runs = _counting_jobs(engine, steps, pause)
    job_id = jobs.start("museum", parse(AddSources, {"sources": ["http://127.0.0.1:9/m.json"]}))
    time.sleep(0.3)
    return jobs, runs, job_id


def test_a_job_whose_lease_lapsed_while_its_run_lives_is_never_taken_nor_run_twice(engine: Engine):
    images = engine.images
    jobs, runs, job_id = _running_job(engine, 20, 0.1)
    images.update_job(job_id, lease_until=time.time() - 1)  # a heartbeat missed (a store busy longer than a lease)
    assert jobs.take_unowned() == 0 and not jobs.take(job_id)
    other = Jobs(images, lambda *_: pytest.fail("a second run of the job"), lambda *_: None)  # another worker's view
    assert other.take_unowned() == 0 and other.info(job_id).state == "running"
    _wait_for(jobs, 10)
    job = images.job(job_id)
    assert (len(runs), job["state"], job["done"], job["resumed"], job["owner"]) == (1, "done", 20, 0, None)


def test_a_run_whose_job_was_taken_from_it_stops_at_its_next_checkpoint_and_writes_the_job_no_more(engine: Engine):
    images = engine.images
    jobs, runs, job_id = _running_job(engine, 50, 0.05)
    mine = images.job(job_id)["owner"]
    assert runs[0].owner == mine and "#" in mine
    assert images.update_job(job_id, held_by="elsewhere/1/2/3", done=99) is False  # a write for another owner: none
    assert images.job(job_id)["done"] != 99
    images.update_job(job_id, owner="elsewhere/1/2/3#x", done=7)  # another host's worker took it over
    _wait_for(jobs, 5)
    assert runs[0].n < 50  # stopped at its next checkpoint, not run to its end
    job = images.job(job_id)
    assert (job["state"], job["owner"], job["done"]) == ("running", "elsewhere/1/2/3#x", 7)  # left to its new owner
    held = images.record(Collections(engine).images.get("museum").id, [], engine.model_key, {},
                         job=(job_id, {"done": 8}, mine), kept=["x"])
    assert held is False and images.job(job_id)["done"] == 7  # a batch of the old run counts for it no more


def test_a_lease_outlasts_the_stores_busy_timeout_and_a_heartbeat(engine: Engine):
    busy = engine.store.db.execute("PRAGMA busy_timeout").fetchone()[0] / 1000
    assert LEASE > busy + HEARTBEAT  # a renewal waiting on a busy store comes before the lease lapses
    assert (HEARTBEAT, LEASE) == (3.0, 75.0)  # as the README says


def test_a_pid_reused_by_another_process_is_not_the_owner_alive():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        me = process_owner().split("/")
        with open(f"/proc/{child.pid}/stat") as fh:
            started = fh.read().rsplit(")", 1)[1].split()[19]
        assert owner_alive(f"{me[0]}/{me[1]}/{child.pid}/{started}.abcd#run") is True
        assert owner_alive(f"{me[0]}/{me[1]}/{child.pid}/{int(started) - 1}.abcd#run") is False  # its PID, not it
        assert owner_alive(f"{me[0]}/{me[1]}/{child.pid}/abcd") is True  # an owner stored before start times were kept
    finally:
        child.kill()
        child.wait()
    assert job_owner_alive(process_owner() + "#ended") is None  # a run of this process that is not running: the lease tells
