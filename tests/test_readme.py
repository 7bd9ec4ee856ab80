"""Every README example runs as written: each fenced `sh` and `python` block, in the README's order, on
the toy model, in a fresh home and a fresh folder holding the repository's `examples/`, against the
servers the README starts.

A block the test cannot run here carries a mark on the line above it,
`<!-- readme-test: skip, needs … -->`, for one of few reasons (Docker, a Ray cluster, real weights, the
network, root); the first test checks that only such blocks are marked, and that what they hold is
what their reason says. Everything else runs, with three changes that keep the commands what they
are: the servers listen on a free port instead of 8000 (the README's `127.0.0.1:8000` is rewritten),
`curl` fails on an error status (`--fail-with-body`, so a 403 is a failure, not a JSON page), and a
block that is only a `clip-gaze serve` command is started in the background, as "in another shell".
The quick-start block's own serve command (after its install) is started before the first block.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from clip_gaze import ApiError, Client
from test_e2e_serve import free_port

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
pytestmark = pytest.mark.xdist_group("readme")

FENCE = re.compile(r"^(?:<!-- readme-test: (?:skip, (?P<reason>.+?)|(?P<printed>printed by the block above)) -->\n)?"
                   r"```(?P<lang>[\w-]*)\n(?P<body>.*?)^```$", re.S | re.M)
# Why a block may be left out, and what a block left out for that reason must hold.
REASONS = {
    "needs Docker": re.compile(r"\bdocker\b"),
    "needs a Ray cluster": re.compile(r"\bray start\b|--ray-address"),
    "needs real weights": re.compile(r"vit-b-32|painting\.jpg"),
    "needs the network": re.compile(r"pip install|https://"),
    "needs root": re.compile(r"/etc/"),
}
RUN = ("sh", "python")
SERVE = re.compile(r"^(?:[A-Z_]+=\S+ )*clip-gaze serve\b.*$")
PRELUDE = 'curl() { command curl -sS --fail-with-body "$@"; }\n'


@dataclass(frozen=True)
class Block:
    line: int
    lang: str
    body: str
    skip: str | None
    printed: bool = False  # a sample of what the run block before it prints, checked line by line


def blocks() -> list[Block]:
    text = README.read_text(encoding="utf-8")
    return [Block(text.count("\n", 0, m.start("lang")) + 1, m["lang"], m["body"], m["reason"], bool(m["printed"]))
            for m in FENCE.finditer(text)]


def commands(body: str) -> list[str]:
    return [line for line in body.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_only_blocks_that_need_docker_ray_weights_the_network_or_root_are_marked_as_not_run():
    found = blocks()
    assert len([b for b in found if b.lang in RUN]) >= 20
    for block in found:
        if block.skip is None:
            continue
        assert block.lang in RUN, f"README line {block.line}: only sh and python blocks are run, so only they are marked"
        reason = next((r for r in REASONS if block.skip.startswith(r)), None)
        assert reason is not None, f"README line {block.line}: {block.skip!r} is not a reason to leave a block out"
        assert REASONS[reason].search(block.body), f"README line {block.line}: marked {reason!r} but needs nothing of the kind"
    unmarked = [b for b in found if b.lang in RUN and b.skip is None]
    assert not [b.line for b in unmarked if "painting.jpg" in b.body or "JOB_ID" in b.body], "placeholders in a block that runs"
    assert [b for b in found if b.skip is None and b.lang not in RUN and b.lang not in ("", "json")] == []


def quick_start_serve() -> str:
    first = blocks()[0]
    assert "pip install" in first.body and first.skip is not None
    command = first.body.strip().split(" && ")[-1]
    assert SERVE.match(command), command
    return command


def as_here(text: str, port: int) -> str:
    text = text.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    return re.sub(r"\bclip-gaze serve\b", f"clip-gaze serve --port {port}", text)


class Background:
    """A `[NAME=value …] clip-gaze serve …` command run as the README's "in another shell": in the work
    folder, with the block's environment and exactly the settings the command line sets."""

    def __init__(self, command: str, port: int, env: dict[str, str], cwd: Path, log: Path):
        words = as_here(command, port).split()
        settings = dict(w.split("=", 1) for w in words if re.match(r"^[A-Z_]+=", w))
        argv = [w for w in words if not re.match(r"^[A-Z_]+=", w)]
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "clip_gaze", *argv[1:]], cwd=cwd, env={**env, **settings},
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 180
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, log.read_text()[-3000:]
            try:
                if Client(url, timeout=2, retries=0).health()["status"] == "ready":
                    return
            except (OSError, ApiError):
                pass
            time.sleep(0.3)
        self.stop()
        raise AssertionError(f"{command!r} did not become ready:\n" + log.read_text()[-3000:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def test_every_block_of_the_readme_runs_as_written(tmp_path: Path):
    work, home = tmp_path / "work", tmp_path / "user"
    shutil.copytree(ROOT / "examples", work / "examples")
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLIP_GAZE_") and k != "XDG_DATA_HOME"}
    env.update(HOME=str(home), CLIP_GAZE_MODEL="toy", HF_HUB_OFFLINE="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    port = free_port()
    server: Background | None = None

    def start(command: str) -> None:
        nonlocal server
        if server is not None:
            server.stop()
        server = Background(command, port, env, work, tmp_path / "serve.log")

    ran, printed, last = 0, 0, ""
    try:
        start(quick_start_serve())
        for block in blocks():
            if block.printed:  # every line of the sample, but "…", is a line the block before printed
                said = {line.strip() for line in last.splitlines()}
                assert [line for line in commands(block.body) if line.strip() not in said | {"…"}] == [], \
                    f"README line {block.line}: the sample differs from what the block before printed:\n{last}"
                printed += 1
            if block.lang not in RUN or block.skip is not None:
                continue
            lines = commands(block.body)
            if block.lang == "sh" and len(lines) == 1 and SERVE.match(lines[0]):
                start(lines[0])
                ran += 1
                continue
            code = as_here(block.body, port)
            argv = ["bash", "-e", "-o", "pipefail", "-c", PRELUDE + code] if block.lang == "sh" else [sys.executable, "-c", code]
            done = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, (f"README line {block.line} ({block.lang}) exited {done.returncode}:\n{block.body}\n"
                                          f"--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}")
            ran, last = ran + 1, done.stdout
    finally:
        if server is not None:
            server.stop()
    assert ran == len([b for b in blocks() if b.lang in RUN and b.skip is None]) and printed >= 1
    assert (work / "scores.parquet").stat().st_size > 0 and (work / "shapes-report" / "report.html").is_file()
