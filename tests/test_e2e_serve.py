"""End to end: `clip-gaze serve` (gunicorn, 2 workers) with the toy model, killed with SIGKILL in the
middle of a write, restarted: every acknowledged write is there, no batch is half there."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from clip_gaze import ApiError, Client
from conftest import draw_shape, encode, seed_toy_export

pytestmark = pytest.mark.e2e
TOKEN = "e2e-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`clip-gaze serve` in a subprocess. With the toy model, its home gets a copy of the session's ONNX
    export before the first start (conftest.seed_toy_export), unless `export`: then the server exports
    the model itself, as a first start in an empty data directory does."""

    def __init__(self, home: Path, port: int, argv: list[str] | None = None, env: dict[str, str] | None = None,
                 export: bool = False):
        self.home, self.port, self.export = home, port, export
        self.argv = argv or ["clip-gaze", "serve", "--port", str(port), "--workers", "2", "--threads", "4"]
        self.env = {"CLIP_GAZE_HOME": str(home), "CLIP_GAZE_MODEL": "toy", "CLIP_GAZE_API_TOKENS": TOKEN, **(env or {})}
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = home.parent / f"serve-{port}.log"

    def start(self) -> "Server":
        if not self.export and self.env.get("CLIP_GAZE_MODEL") == "toy":
            seed_toy_export(Path(self.env["CLIP_GAZE_HOME"]))
        with open(self.log, "ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                command(self.argv), env={**os.environ, **self.env}, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if Client(self.url, timeout=2).health()["status"] == "ready":
                    return self
            except (OSError, ApiError):
                pass
            time.sleep(0.3)
        raise AssertionError("server did not become ready:\n" + self.log.read_text()[-3000:])

    def kill(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)  # master and workers, no chance to clean up
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


def command(argv: list[str]) -> list[str]:
    """`clip-gaze …` run with this interpreter (the same entry point as the console script)."""
    assert argv[0] == "clip-gaze"
    return [sys.executable, "-m", "clip_gaze", *argv[1:]]


@pytest.fixture
def server(tmp_path: Path):
    srv = Server(tmp_path / "home", free_port())
    yield srv
    srv.stop()


def batch(n: int, size: int) -> list[dict[str, str]]:
    return [{"term": f"batch {n} term {i}", "external_id": f"B{n}-{i}"} for i in range(size)]


def stored_batches(home: Path) -> dict[int, int]:
    db = sqlite3.connect(home / "clip-gaze.db")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = db.execute(
            "SELECT p.external_id FROM phrases p JOIN vocabularies v ON v.id = p.vocabulary_id WHERE v.name = 'thesaurus'"
        ).fetchall()
    finally:
        db.close()
    counts: dict[int, int] = {}
    for (ext,) in rows:
        n = int(ext.split("-")[0][1:])
        counts[n] = counts.get(n, 0) + 1
    return counts


def test_sigkill_mid_write_loses_no_acknowledged_write_and_leaves_no_half_batch(server: Server):
    server.start()
    api = Client(server.url, token=TOKEN)
    api.create_vocabulary("thesaurus", batch(0, 50), template="a {}")
    acknowledged = {0: 50}
    for n in range(1, 6):  # small batches, each acknowledged
        assert api.add_phrases("thesaurus", batch(n, 200))["added"] == 200
        acknowledged[n] = 200
    # Workers see each other's writes: several reads land on both workers.
    for _ in range(6):
        res = api.analyze(encode(draw_shape()), vocabularies=["thesaurus"], top_k=1)
        assert res["results"]["thesaurus"]["softmax_over"] == sum(acknowledged.values())

    big = 20_000
    outcome: dict[str, object] = {}

    def write_big() -> None:
        try:
            outcome["result"] = Client(server.url, token=TOKEN, timeout=120).add_phrases("thesaurus", batch(99, big))
        except Exception as exc:  # the connection dies with the server
            outcome["error"] = exc

    writer = threading.Thread(target=write_big)
    writer.start()
    time.sleep(0.8)  # the big batch is being embedded or written
    server.kill()
    writer.join(timeout=60)
    if "result" in outcome:
        acknowledged[99] = big
    print(f"big batch {'acknowledged' if 'result' in outcome else 'cut off'} by SIGKILL")

    stored = stored_batches(server.home)
    for n, size in acknowledged.items():
        assert stored.get(n) == size, f"acknowledged batch {n} lost or partial after SIGKILL"
    assert stored.get(99) in (None, big), f"half a batch stored: {stored.get(99)} of {big}"

    server.start()  # after a restart, everything committed is served
    api = Client(server.url, token=TOKEN)
    total = sum(stored.values())
    res = api.analyze(encode(draw_shape()), vocabularies=["thesaurus"], top_k=1)
    assert res["results"]["thesaurus"]["softmax_over"] == total
    again = api.add_phrases("thesaurus", batch(3, 200))
    assert again["added"] == 0 and again["unchanged"] == 200


def test_docker_compose_commands_run_as_written(tmp_path: Path):
    """No Docker engine here: run the compose services' own commands directly, with their environment."""
    import yaml

    root = Path(__file__).parents[1]
    compose = yaml.safe_load((root / "docker-compose.yml").read_text())
    indexer, api, nginx = (compose["services"][name] for name in ("indexer", "api", "nginx"))
    assert indexer["volumes"] == api["volumes"] and {v.split(":")[1] for v in api["volumes"]} == {"/data", "/models"}
    assert "CLIP_GAZE_API_TOKENS" in api["environment"]
    assert api["depends_on"]["indexer"]["condition"] == "service_completed_successfully"
    # nginx in front (tests/test_nginx.py runs its configuration): only nginx publishes a port.
    assert "ports" not in api and api["expose"] == ["8000"] and nginx["ports"] == ["${CLIP_GAZE_PORT:-8000}:8080"]
    assert "api" in nginx["depends_on"]
    assert nginx["environment"]["CLIP_GAZE_UPSTREAM"] == f"api:{api['command'][api['command'].index('--port') + 1]}"
    template, target, mode = nginx["volumes"][0].split(":")
    assert (root / template).is_file() and "listen 8080;" in (root / template).read_text()
    assert target.startswith("/etc/nginx/templates/") and target.endswith(".conf.template") and mode == "ro"

    home = tmp_path / "data"
    env = {**os.environ, "CLIP_GAZE_HOME": str(home), "CLIP_GAZE_MODEL": "toy"}
    done = subprocess.run(command(indexer["command"]), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "phrases embedded" in done.stdout

    port = free_port()
    argv = [a.replace("${CLIP_GAZE_WORKERS:-2}", "2") for a in api["command"]]
    argv[argv.index("--port") + 1] = str(port)  # the container's 8000 (nginx's upstream), a free port here
    refused = subprocess.run(command(argv), env={**env, "CLIP_GAZE_API_TOKENS": ""}, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "refusing to listen on 0.0.0.0" in refused.stderr
    srv = Server(home, port, argv, env={"CLIP_GAZE_API_TOKENS": TOKEN}, export=True).start()
    try:
        res = Client(srv.url).analyze(encode(draw_shape()), top_k=1)
        assert "movements" in res["results"]  # indexed by the indexer job, served by the API
        with pytest.raises(ApiError) as exc:
            Client(srv.url, token="wrong").create_vocabulary("x", ["y"])
        assert exc.value.status == 401
    finally:
        srv.stop()


def _maps(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def _children(pid: int) -> list[int]:
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]


def test_a_worker_serving_on_onnx_runtime_never_loads_torch(tmp_path: Path):
    """The default backend: the master and a worker that has analyzed, compared, created a vocabulary
    and added phrases hold no torch library in memory (read from /proc, so the real worker is checked);
    health says ONNX Runtime encodes pictures and phrases, and that torch would explain."""
    port = free_port()
    srv = Server(tmp_path / "home", port, ["clip-gaze", "serve", "--port", str(port), "--workers", "1", "--threads", "2"],
                 export=True)  # the master exports in a child process of its own: it still loads no torch
    srv.start()
    try:
        c = Client(srv.url, token=TOKEN, timeout=60)
        png = encode(draw_shape("red", "circle"))
        assert c.analyze(png, ["movements"], top_k=3)["results"]["movements"]["softmax_over"] > 0
        shares = c.compare(png, ["a red circle", "a blue square"])["results"]["compare"]["matches"]
        assert shares[0]["phrase"] == "a red circle"
        c.create_vocabulary("mine", phrases=["a red circle"])
        assert c.add_phrases("mine", ["a green star", "a purple square"])["vocabulary"]["size"] == 3
        assert c.analyze(png, ["mine"])["results"]["mine"]["matches"][0]["phrase"] == "a red circle"
        health = c.health()
        assert health["backends"]["images"].startswith("onnx (CPUExecutionProvider")
        assert health["backends"]["texts"].startswith("onnx")
        assert health["backends"]["explanations"].startswith("torch")
        assert srv.proc is not None
        workers = _children(srv.proc.pid)
        assert len(workers) == 1
        for pid in (srv.proc.pid, *workers):
            maps = _maps(pid)
            assert "onnxruntime" in maps or pid == srv.proc.pid
            assert "libtorch" not in maps and "/torch/" not in maps, f"process {pid} loaded torch"
    finally:
        srv.stop()
