"""Collections without stale or repeated work: a file replaced at its path is read again (refreshed),
and concurrent adds of the same pictures into one collection (threads with their own engines, and a
CLI add in another process) fetch each picture once, their counts adding up."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import threading
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from conftest import draw_shape, encode
from indexer.collections.local import Collections
from indexer.engine import Engine
from indexer.pictures.reader import ImageLimits
from indexer.schema import parse
from indexer.schema.collections import AddReport, AddSources, CreateCollection
from indexer.settings import Settings
from test_e2e_serve import command
from test_jobs_restart import _Pictures

COLOURS = ("red", "blue", "green", "yellow", "purple", "orange", "black", "grey")
SHAPES = ("circle", "square", "triangle")


def pictures(n: int) -> list[bytes]:
    """`n` different PNGs."""
    return [encode(draw_shape(COLOURS[i % 8], SHAPES[(i // 8) % 3], size=48 + i // 24)) for i in range(n)]


def add(engine: Engine, name: str, *sources: str) -> AddReport:
    return Collections(engine).add(name, parse(AddSources, {"sources": list(sources)}))


def stored(home: Path, collection: str = "museum") -> list[tuple[str, str | None, int | None, int | None]]:
    with sqlite3.connect(home / "clip-gaze.db") as db:
        return db.execute("SELECT i.source, i.sha256, i.file_size, i.file_mtime_ns FROM collection_images i JOIN "
                          "collections c ON c.id = i.collection_id WHERE c.name = ? ORDER BY i.source", [collection]).fetchall()


# --------------------------------------------------------------------------------- refreshed files


def test_a_file_replaced_at_its_path_is_read_again_and_searched_as_its_new_content(engine: Engine, tmp_path: Path):
    scans = tmp_path / "scans"
    scans.mkdir()
    draw_shape("red", "circle").save(scans / "object-1.png")
    draw_shape("green", "triangle").save(scans / "object-2.png")
    Collections(engine).create(parse(CreateCollection, {"name": "museum"}))
    first = add(engine, "museum", str(scans))
    assert (first.added, first.refreshed, first.encoded) == (2, 0, 2)
    old_sha = dict((s, sha) for s, sha, *_ in stored(engine.store.home))[str(scans / "object-1.png")]

    before = os.stat(scans / "object-1.png")
    draw_shape("blue", "square").save(scans / "object-1.png")  # a new photograph of the object, same path
    os.utime(scans / "object-1.png", ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    new_sha = hashlib.sha256((scans / "object-1.png").read_bytes()).hexdigest()

    again = add(engine, "museum", str(scans))
    assert (again.total, again.added, again.refreshed, again.skipped, again.encoded) == (2, 1, 1, 1, 1)
    rows = {s: (sha, size, mtime) for s, sha, size, mtime in stored(engine.store.home)}
    sha, size, mtime = rows[str(scans / "object-1.png")]
    assert sha == new_sha != old_sha
    st = os.stat(scans / "object-1.png")
    assert (size, mtime) == (st.st_size, st.st_mtime_ns)
    hit = Collections(engine).search("museum", text="a blue square", top_k=1).hits[0]
    assert hit.source == str(scans / "object-1.png") and hit.sha256 == new_sha
    assert engine.images.cached(engine.model_key, [old_sha])  # the old content's embedding stays, by its hash

    third = add(engine, "museum", str(scans))  # unchanged since: nothing is read
    assert (third.added, third.refreshed, third.skipped, third.encoded) == (0, 0, 2, 0)


def test_pictures_stored_before_sizes_were_kept_are_not_read_again_for_that_alone(engine: Engine, tmp_path: Path):
    scans = tmp_path / "scans"
    scans.mkdir()
    draw_shape("red", "circle").save(scans / "object-1.png")
    Collections(engine).create(parse(CreateCollection, {"name": "museum"}))
    add(engine, "museum", str(scans))
    with sqlite3.connect(engine.store.home / "clip-gaze.db") as db:  # as an older version stored it
        db.execute("UPDATE collection_images SET file_size = NULL, file_mtime_ns = NULL")
    again = add(engine, "museum", str(scans))
    assert (again.added, again.skipped, again.refreshed) == (0, 1, 0)
    (_, _, size, mtime), = stored(engine.store.home)
    assert (size, mtime) == (os.stat(scans / "object-1.png").st_size, os.stat(scans / "object-1.png").st_mtime_ns)


def test_a_changed_file_whose_new_read_fails_keeps_its_stored_picture(engine: Engine, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch):
    scans = tmp_path / "scans"
    scans.mkdir()
    one, two = scans / "object-1.png", scans / "object-2.png"
    draw_shape("red", "circle").save(one)
    draw_shape("green", "triangle").save(two)
    collections = Collections(engine)
    collections.create(parse(CreateCollection, {"name": "museum"}))
    add(engine, "museum", str(scans))
    good = {s: row for s, *row in stored(engine.store.home)}

    def search_finds_it() -> None:
        hit = Collections(engine).search("museum", text="a red circle", top_k=1).hits[0]
        assert (hit.source, hit.sha256) == (str(one), good[str(one)][0])
        info = Collections(engine).get("museum")
        assert (info.size, info.failed) == (2, 0)

    one.write_bytes(b"not a picture any more, and a different size")  # changed, and no longer readable
    again = add(engine, "museum", str(scans))
    assert (again.total, again.added, again.refreshed, again.skipped, again.failed) == (2, 0, 0, 1, 1)
    assert [e.source for e in again.errors] == [str(one)] and again.errors[0].error_code
    assert {s: row for s, *row in stored(engine.store.home)} == good  # its old hash, size and time
    search_finds_it()

    draw_shape("blue", "square").save(one)  # changed again: stat'ed by the plan, gone when read
    read = Collections.read_prepared

    def deleted_first(self: Collections, ref: Any) -> Any:
        if ref.source == str(one):
            one.unlink(missing_ok=True)
        return read(self, ref)

    monkeypatch.setattr(Collections, "read_prepared", deleted_first)
    third = add(engine, "museum", str(scans))
    assert (third.added, third.refreshed, third.skipped, third.failed) == (0, 0, 1, 1)
    assert [e.source for e in third.errors] == [str(one)]
    assert {s: row for s, *row in stored(engine.store.home)} == good
    search_finds_it()

    monkeypatch.setattr(Collections, "read_prepared", read)
    draw_shape("blue", "square").save(one)  # back, readable: the next add tries it again and refreshes it
    fourth = add(engine, "museum", str(scans))
    assert (fourth.added, fourth.refreshed, fourth.skipped, fourth.failed) == (1, 1, 1, 0)
    assert dict((s, sha) for s, sha, *_ in stored(engine.store.home))[str(one)] != good[str(one)][0]


# -------------------------------------------------------------------------------- concurrent adds


@pytest.fixture
def slow_pictures() -> Iterator[Callable[[int, float], _Pictures]]:
    servers: list[tuple[_Pictures, threading.Thread]] = []

    def start(n: int, delay: float) -> _Pictures:
        server = _Pictures(pictures(n), delay)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        servers.append((server, thread))
        return server

    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join()


N = 48


def test_concurrent_adds_into_one_collection_fetch_each_picture_once(clean_environ: Path, toy_loader: Callable[..., Any],
                                                                    slow_pictures: Callable[[int, float], _Pictures],
                                                                    tmp_path: Path):
    server = slow_pictures(N, 0.1)
    port = server.server_address[1]
    table = tmp_path / "catalogue.csv"
    table.write_text("image,external_id\n" + "".join(f"http://127.0.0.1:{port}/{i}.png,OBJ-{i}\n" for i in range(N)))
    limits = ImageLimits.from_settings(Settings.from_env({"CLIP_GAZE_FETCH_ALLOW": f"127.0.0.1:{port}"}))

    def engine() -> Engine:
        return Engine(clean_environ, "toy", loader=toy_loader, limits=limits)

    Collections(engine()).create(parse(CreateCollection, {"name": "museum"}))
    engines = [engine() for _ in range(3)]
    for e in engines:
        _ = e.model
    cli = subprocess.Popen(command(["clip-gaze", "collection", "add", "museum", str(table), "--json"]),
                           env={**os.environ, "CLIP_GAZE_FETCH_ALLOW": f"127.0.0.1:{port}"},
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert server.first.wait(60), "the CLI's add never fetched"  # the CLI reads: the threads start beside it
    reports: list[AddReport] = []
    errors: list[BaseException] = []

    def run(e: Engine) -> None:
        try:
            reports.append(Collections(e).add("museum", parse(AddSources, {"sources": [str(table)]})))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    try:
        out, err = cli.communicate(timeout=120)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.communicate()
    assert cli.returncode == 0, err
    assert not errors, errors
    cli_report = AddReport.model_validate_json(out.strip().splitlines()[-1])
    every = [*reports, cli_report]
    print("fetches per picture:", sorted(Counter(server.fetches.values()).items()), "in all:", sum(server.fetches.values()))
    assert len(server.fetches) == N and set(server.fetches.values()) == {1}, server.fetches
    for r in every:  # each naming counted once per run, as added, skipped or failed
        assert (r.total, r.added + r.skipped + r.failed, r.failed) == (N, N, 0), r
    assert sum(r.added for r in every) == N
    assert len(stored(clean_environ)) == N
    with sqlite3.connect(clean_environ / "clip-gaze.db") as db:
        assert db.execute("SELECT count(*) FROM add_claims").fetchone()[0] == 0  # nothing left claimed


@pytest.mark.e2e
def test_four_api_jobs_and_a_cli_add_of_one_manifest_fetch_each_picture_once(tmp_path: Path):
    """The issue's case: `clip-gaze serve` (2 workers) running four jobs adding one manifest into one
    collection, and a CLI add of it beside them."""
    from clip_gaze import Client
    from test_e2e_serve import TOKEN, Server, free_port
    from test_jobs_restart import N as PICTURES

    server = _Pictures()
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    allow = {"CLIP_GAZE_FETCH_ALLOW": f"127.0.0.1:{server.server_address[1]}"}
    srv = Server(tmp_path / "home", free_port(), env=allow).start()
    cli: subprocess.Popen[str] | None = None
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/manifest.json"
        api = Client(srv.url, token=TOKEN)
        api.create_collection("museum")
        cli = subprocess.Popen(command(["clip-gaze", "collection", "add", "museum", url, "--json"]),
                               env={**os.environ, **srv.env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        jobs = [api.add_sources("museum", [url]).id for _ in range(4)]
        done = [api.wait(job, timeout=90, poll=0.2) for job in jobs]
        out, err = cli.communicate(timeout=90)
        assert cli.returncode == 0, err
        added = AddReport.model_validate_json(out.strip().splitlines()[-1])
        print("fetches per picture:", sorted(Counter(server.fetches.values()).items()), "in all:", sum(server.fetches.values()))
        assert len(server.fetches) == PICTURES and set(server.fetches.values()) == {1}
        for job in done:
            assert (job.state, job.total, job.done + job.skipped, job.failed) == ("done", PICTURES, PICTURES, 0), job
        assert (added.total, added.added + added.skipped) == (PICTURES, PICTURES)
        assert sum(job.done for job in done) + added.added == PICTURES
        assert api.collection("museum").collection.size == PICTURES
    finally:
        if cli is not None and cli.poll() is None:
            cli.kill()
            cli.communicate()
        srv.stop()
        server.shutdown()
        server.server_close()
