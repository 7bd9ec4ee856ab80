"""`--engine ray`: collection add and analyze on Ray Data give the local path's answer, survive a
worker that dies and a driver that is killed, size their actor pool so it cannot starve the other
tasks, and say which extra to install when Ray is missing.

One local Ray (2 CPUs, no dashboard) is started once for these tests and stopped after them; the
tests that need it are skipped, with the reason, where `ray[data]` cannot be imported. Every wait is
bounded: a Ray run that hangs (a starved actor pool) fails its test after RUN_LIMIT seconds."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import create, draw_shape, seed_toy_export
from indexer.collections.local import Collections
from indexer.engine import Engine
from indexer.errors import ModelUnavailable
from indexer.models.torch_model import load_model
from indexer.collections.on_ray.session import Plan, plan
from indexer.schema import parse
from indexer.schema.collections import AddSources, CreateCollection
from test_e2e_serve import command

SKIP = "ray[data] is not installed (pip install 'clip-gaze[ray]')"
# Under pytest-xdist, every Ray test runs in one worker: two local Ray clusters on two cores starve each other.
pytestmark = pytest.mark.xdist_group("ray")
SHAPES = [(c, s) for c in ("red", "blue", "green", "yellow") for s in ("circle", "square", "triangle")]
RUN_LIMIT = 120  # seconds any one Ray run may take here before the test fails (a starved pool hangs)


@pytest.fixture(scope="module")  # once per session (only this module uses Ray), stopped before the next module
def ray_cluster():
    ray = pytest.importorskip("ray", reason=SKIP)
    pytest.importorskip("ray.data", reason=SKIP)
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # DiesOnce travels to the actors by value
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=512 * 1024 * 1024,
             log_to_driver=False)
    yield ray
    ray.shutdown()


def within(seconds: float, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """fn(*args, **kwargs), or a failure if it has not returned after `seconds`."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:
            box["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        pytest.fail(f"{getattr(fn, '__name__', fn)} did not finish in {seconds} s (a starved actor pool hangs)")
    if "error" in box:
        raise box["error"]
    return box["value"]


def ray_add(engine: Engine, name: str, *sources: str, **kw: Any):
    from indexer.collections.on_ray.driver import ray_add as add_on_ray

    return within(RUN_LIMIT, add_on_ray, Collections(engine), name, parse(AddSources, {"sources": list(sources)}), **kw)


def local_add(engine: Engine, name: str, *sources: str):
    return Collections(engine).add(name, parse(AddSources, {"sources": list(sources)}), batch_size=4)


def new(engine: Engine, name: str = "museum") -> None:
    Collections(engine).create(parse(CreateCollection, {"name": name}))


@pytest.fixture
def sources(tmp_path: Path) -> list[str]:
    """Twelve pictures in a folder, and a JSON Lines catalogue naming two of them with metadata, a
    broken file and a missing one."""
    root = tmp_path / "scans"
    (root / "room-2").mkdir(parents=True)
    for i, (colour, shape) in enumerate(SHAPES):
        draw_shape(colour, shape).save((root / "room-2" if i % 2 else root) / f"{colour}-{shape}.png")
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    rows = tmp_path / "catalogue.jsonl"
    rows.write_text("".join(json.dumps(r) + "\n" for r in [
        {"image": "scans/red-circle.png", "external_id": "OBJ-1", "title": "Rouge", "room": 3},
        {"image": "broken.png", "external_id": "B-1"},
        {"image": "missing.png", "external_id": "M-1"},
    ]))
    return [str(root), str(rows)]


def stored(engine: Engine, name: str = "museum") -> dict[str, Any]:
    view = Collections(engine).view(name, limit=1000)
    errors = Collections(engine).view(name, errors=True, limit=1000)
    return {"pictures": sorted((p.source, p.external_id, json.dumps(p.metadata, sort_keys=True), p.sha256, p.width, p.height)
                               for p in view.pictures),
            "errors": sorted((p.source, p.external_id, p.error_code) for p in errors.pictures)}


def embeddings(engine: Engine) -> dict[str, np.ndarray]:
    rows = engine.store.db.execute("SELECT sha256, vector FROM image_embeddings WHERE model = ?", [engine.model_key])
    return {sha: np.frombuffer(blob, dtype=np.float32) for sha, blob in rows}


# -- sizing -----------------------------------------------------------------------------------------
def test_the_encoding_pool_never_takes_the_cpus_the_reading_tasks_need():
    assert plan({"CPU": 2.0}) == Plan(actors=1, actor_cpus=1.0, actor_gpus=0.0, task_cpus=0.5, threads=1)
    assert plan({"CPU": 2.0}, threads=2).threads == 2  # CLIP_GAZE_THREADS wins
    for cpus in (0.5, 1, 1.5, 2, 3, 4, 7, 8, 16, 33, 64, 256):
        for gpus in (0, 1, 2, 8):
            p = plan({"CPU": float(cpus), "GPU": float(gpus)})
            left = cpus - p.actors * p.actor_cpus
            assert p.actors >= 1 and p.actor_cpus > 0 and left >= 2 * p.task_cpus - 1e-9, (cpus, gpus, p)
            assert p.actor_gpus == (1.0 if gpus else 0.0) and p.actors == (gpus or p.actors)
    assert plan({"CPU": 64.0}).actors == 14  # 4 CPUs each beside a reserve of 8


# -- packaging --------------------------------------------------------------------------------------
def test_without_the_extra_engine_ray_is_one_error_line_naming_it(monkeypatch: pytest.MonkeyPatch):
    from clip_gaze.cli import cli

    monkeypatch.setitem(sys.modules, "ray", None)  # as if ray were not installed
    monkeypatch.setitem(sys.modules, "ray.data", None)
    runner = CliRunner()
    for argv in (["collection", "add", "museum", "scans", "--engine", "ray"],
                 ["collection", "analyze", "museum", "--out", "scores.parquet", "--engine", "ray"]):
        result = runner.invoke(cli, argv)
        assert result.exit_code == 1, result.output
        assert result.output.splitlines() == ["Error: --engine ray needs Ray Data, which is not installed: pip install 'clip-gaze[ray]'"]
    result = runner.invoke(cli, ["collection", "add", "museum", "scans", "--ray-address", "head:6379"])
    assert result.exit_code == 2 and "--ray-address goes with --engine ray" in result.output


# -- the same answer --------------------------------------------------------------------------------
def test_a_ray_add_stores_what_a_local_add_stores_and_analyze_and_search_agree(
    ray_cluster, sources: list[str], tmp_path: Path, toy_loader, monkeypatch: pytest.MonkeyPatch
):
    local = Engine(tmp_path / "local", "toy", loader=toy_loader)
    on_ray = Engine(tmp_path / "ray", "toy", loader=toy_loader)
    new(local), new(on_ray)
    a = local_add(local, "museum", *sources)
    b = ray_add(on_ray, "museum", *sources, batch_size=4)
    fields = ("total", "added", "skipped", "failed", "encoded")
    assert [getattr(b, f) for f in fields] == [getattr(a, f) for f in fields] == [15, 13, 0, 2, 12]
    assert stored(on_ray) == stored(local)
    assert {e.error_code for e in b.errors} == {"unsupported_image", "file_not_found"}
    ea, eb = embeddings(local), embeddings(on_ray)
    assert ea.keys() == eb.keys() and len(ea) == 12
    assert max(float(np.abs(ea[sha] - eb[sha]).max()) for sha in ea) <= 1e-6
    assert not list((tmp_path / "ray" / "ray-shards" / "museum").glob("*/*.parquet"))  # every shard merged
    thumbs = "SELECT sha256, media_type, width, height FROM thumbnails ORDER BY sha256"
    assert on_ray.store.db.execute(thumbs).fetchall() == local.store.db.execute(thumbs).fetchall()  # the explorer's, made on Ray too
    assert len(on_ray.store.db.execute(thumbs).fetchall()) == 12

    again = ray_add(on_ray, "museum", *sources)  # nothing to do: no Ray run at all
    assert (again.added, again.skipped, again.encoded, again.failed) == (0, 13, 0, 2)
    new(on_ray, "annex")  # the same content in another collection: stored, never encoded again
    annex = ray_add(on_ray, "annex", sources[0], batch_size=4)
    assert (annex.added, annex.encoded) == (12, 0)

    for engine in (local, on_ray):
        create(engine, "shapes", [f"a {c} {s}" for c, s in SHAPES], templates=["{}"])
    want = [r.model_dump() for r in Collections(local).analyze("museum", ["shapes", "qualities"], top_k=3)]
    monkeypatch.setenv("CLIP_GAZE_HOME", str(tmp_path / "ray"))
    from clip_gaze.cli import cli

    out = tmp_path / "scores.parquet"
    result = within(RUN_LIMIT, CliRunner().invoke, cli, ["collection", "analyze", "museum", "-v", "shapes,qualities", "-k", "3",
                                                         "--out", str(out), "--engine", "ray"])
    assert result.exit_code == 0, result.output
    import pyarrow.parquet as pq

    got = pq.read_table(out).to_pylist()
    assert len(got) == len(want) == 12 * 2 * 3
    for g, w in zip(got, want):
        assert {k: v for k, v in g.items() if k not in ("probability", "cosine", "logit")} == \
               {k: v for k, v in w.items() if k not in ("probability", "cosine", "logit")}
        assert all(abs(g[k] - w[k]) <= 1e-5 for k in ("probability", "cosine", "logit"))
    for query in ("a green triangle", "a red circle"):
        hits = [[(h.source, round(h.cosine, 5)) for h in Collections(e).search("museum", text=query, top_k=5).hits]
                for e in (local, on_ray)]
        assert hits[0] == hits[1]


# -- failures ---------------------------------------------------------------------------------------
class DiesOnce:
    """A model loader for the actors whose model kills its own worker process (os._exit) at its first
    encoding, once across the cluster: the marker file records that it happened."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __call__(self, spec: Any, **kw: Any) -> Any:
        model = load_model(spec, **kw)
        encode, marker = model.encode_image_tensors, self.marker

        def dies_the_first_time(batch: Any) -> Any:
            if not os.path.exists(marker):
                Path(marker).write_text(str(os.getpid()))
                os._exit(1)
            return encode(batch)

        model.encode_image_tensors = dies_the_first_time  # type: ignore[method-assign]
        return model


def test_an_actor_that_dies_mid_run_costs_its_batch_which_ray_retries(ray_cluster, sources: list[str], tmp_path: Path, toy_loader, toy):
    engine = Engine(tmp_path / "home", "toy", loader=toy_loader)
    new(engine)
    marker = tmp_path / "died"
    report = ray_add(engine, "museum", sources[0], batch_size=4, loader=DiesOnce(marker))
    assert marker.exists() and int(marker.read_text()) != os.getpid()  # an actor died, not this process
    assert (report.added, report.encoded, report.failed) == (12, 12, 0)
    stored_embeddings = embeddings(engine)
    for path in sorted(Path(sources[0]).rglob("*.png"))[:3]:
        decoded = engine.read(path)
        assert float(np.abs(stored_embeddings[decoded.sha256] - engine.encode_pictures([decoded])[0]).max()) <= 1e-6


class NoWeights:
    """A model loader for the actors that finds no weights, as on a node without the model's cache."""

    def __call__(self, spec: Any, **kw: Any) -> Any:
        raise ModelUnavailable("no weights for toy in /nowhere/hf-cache", code="model_unavailable")


def test_a_node_without_the_weights_fails_the_run_with_one_clear_error(ray_cluster, sources: list[str], tmp_path: Path, toy_loader):
    engine = Engine(tmp_path / "home", "toy", loader=toy_loader)
    new(engine)
    with pytest.raises(ModelUnavailable, match=r"^no weights for toy in /nowhere/hf-cache \(on a Ray worker\); whole shards are kept"):
        ray_add(engine, "museum", sources[0], batch_size=4, loader=NoWeights())
    assert ray_add(engine, "museum", sources[0], batch_size=4).added == 12  # the lock went with the failed run


def _ray_processes(marker: str) -> list[int]:
    """Processes whose command line names `marker` (the Ray temp folder of one run)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_a_driver_killed_mid_run_leaves_whole_shards_and_a_rerun_does_not_redo_merged_work(ray_cluster, tmp_path: Path, toy_loader):
    import pyarrow.parquet as pq

    root = tmp_path / "many"
    root.mkdir()
    for i in range(240):
        colour, shape = SHAPES[i % len(SHAPES)]
        draw_shape(colour, shape, size=96 + i).save(root / f"{i:03d}.png")
    home = tmp_path / "home"
    seed_toy_export(home)  # the CLI serves the session's export rather than exporting first (the shards are what is tested)
    engine = Engine(home, "toy", loader=toy_loader)
    new(engine, "many")
    ray_tmp = tempfile.mkdtemp(prefix="cgr", dir="/tmp")  # short: Ray's socket paths have a length limit
    env = {**os.environ, "CLIP_GAZE_HOME": str(home), "CLIP_GAZE_MODEL": "toy", "RAY_TMPDIR": ray_tmp}
    env.pop("RAY_ADDRESS", None)
    argv = ["clip-gaze", "collection", "add", "many", str(root), "--batch-size", "4", "--engine", "ray"]
    shards = home / "ray-shards" / "many"

    def count_stored() -> int:
        return int(engine.store.db.execute(
            "SELECT count(*) FROM collection_images WHERE sha256 IS NOT NULL").fetchone()[0])

    try:
        with open(tmp_path / "first.log", "w") as log:
            proc = subprocess.Popen(command(argv), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            deadline = time.monotonic() + RUN_LIMIT
            while count_stored() == 0 and proc.poll() is None:  # a first shard written and merged
                assert time.monotonic() < deadline, "no shard was merged in time"
                time.sleep(0.01)
            soon = time.monotonic() + 3
            while not list(shards.glob("*/*.parquet")) and time.monotonic() < soon and proc.poll() is None:
                time.sleep(0.005)  # and, most likely, the next one written but not merged yet
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL, (tmp_path / "first.log").read_text()[-3000:]
        for pid in _ray_processes(ray_tmp):  # what Ray's fate-sharing left of that run
            os.kill(pid, signal.SIGKILL)
        before = count_stored()
        assert before < 240, "the run finished before it was killed"
        assert engine.store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        done = {r[0] for r in engine.store.db.execute("SELECT source FROM collection_images WHERE sha256 IS NOT NULL")}
        leftover = set()
        for shard in shards.glob("*/*.parquet"):  # every shard on disk is whole
            table = pq.read_table(shard)
            assert table.num_rows > 0 and table.column("embedding").null_count == 0
            leftover.update(table.column("source").to_pylist())
        unmerged = leftover - done

        rerun = subprocess.run(command([*argv, "--json"]), env=env, capture_output=True, text=True, timeout=RUN_LIMIT)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        report = json.loads(rerun.stdout)
        assert report["total"] == 240 and report["failed"] == 0
        assert report["skipped"] == before  # merged work is not redone
        assert report["added"] == 240 - before  # the shards left behind, then what was missing
        assert report["encoded"] == 240 - before - len(unmerged)  # pictures in those shards are not encoded again
        images = engine.images
        assert count_stored() == 240 and images.count_unembedded(images.get("many").id, engine.model_key) == 0
        assert not list(shards.glob("*/*.parquet")) and not list(shards.glob("*/.*.tmp"))
    finally:
        for pid in _ray_processes(ray_tmp):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_a_ray_add_refreshes_a_file_replaced_at_its_path_once_and_keeps_one_it_cannot_read_again(
        ray_cluster, tmp_path: Path, toy_loader):
    engine = Engine(tmp_path / "home", "toy", loader=toy_loader)
    scans = tmp_path / "scans"
    scans.mkdir()
    one, two, three = scans / "a.png", scans / "b.png", scans / "c.png"
    draw_shape("red", "circle").save(one)
    draw_shape("blue", "square").save(two)
    draw_shape("yellow", "triangle").save(three)
    new(engine)
    first = ray_add(engine, "museum", str(scans), batch_size=4)
    assert (first.added, first.refreshed) == (3, 0)
    before = {p[0]: p[3] for p in stored(engine)["pictures"]}

    for path, stamp in ((one, 1), (three, 1)):
        st = os.stat(path)
        if path == one:
            draw_shape("green", "triangle").save(path)  # a new photograph, same path
        else:
            path.write_bytes(b"no longer a picture")  # changed and unreadable: the stored one stays
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + stamp * 1_000_000_000))
    second = ray_add(engine, "museum", str(scans), batch_size=4)
    assert (second.total, second.added, second.refreshed, second.skipped, second.failed) == (3, 1, 1, 1, 1), second
    assert [e.source for e in second.errors] == [str(three)]
    after = {p[0]: p[3] for p in stored(engine)["pictures"]}
    assert after[str(one)] != before[str(one)]
    assert after[str(two)] == before[str(two)] and after[str(three)] == before[str(three)]
    assert stored(engine)["errors"] == []

    third = ray_add(engine, "museum", str(scans), batch_size=4)  # the refreshed one is skipped, the unreadable tried again
    assert (third.added, third.refreshed, third.skipped, third.failed) == (0, 0, 2, 1), third
