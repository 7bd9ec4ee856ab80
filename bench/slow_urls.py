"""The slow-URL attack of issue #27, against `clip-gaze serve` (toy model, one worker, four threads).

A loopback host promises a picture and trickles a byte every 0.1 s. The script sends ATTACK
`/v1/analyze` requests naming it, then times `/v1/health` and `/v1/vocabularies` while they hang;
then it times one `/v1/analyze/batch` of four slow URLs and one good one. The server's fetch deadline
is its default, 30 s.

    python bench/slow_urls.py                      # this checkout
    python bench/slow_urls.py --checkout /tmp/old  # another checkout (e.g. a `git worktree` of an older commit)
"""

from __future__ import annotations

import argparse
import http.server
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from common import ROOT, header

from concurrency import free_port  # noqa: E402

ATTACK = 8


def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(buf, format="PNG")
    return buf.getvalue()


PNG = _png()
RELEASE = threading.Event()


class Trickle(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        if self.path.startswith("/good"):
            self.send_header("Content-Length", str(len(PNG)))
            self.end_headers()
            self.wfile.write(PNG)
            return
        self.send_header("Content-Length", "1000000")
        self.end_headers()
        try:
            while not RELEASE.wait(0.1):
                self.wfile.write(b"\0")
                self.wfile.flush()
        except OSError:
            pass

    def log_message(self, *args: Any) -> None:
        pass


def call(url: str, body: dict[str, Any] | None = None, timeout: float = 200) -> tuple[int, float]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            resp.read()
            return resp.status, time.monotonic() - t0
    except urllib.error.HTTPError as err:
        return err.code, time.monotonic() - t0



def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkout", type=Path, default=ROOT)
    args = parser.parse_args()
    header(f"slow URLs against clip-gaze serve from {args.checkout}")
    trickle = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    trickle.daemon_threads = True
    threading.Thread(target=trickle.serve_forever, daemon=True).start()
    host = f"127.0.0.1:{trickle.server_port}"
    port = free_port()
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "CLIP_GAZE_HOME": home, "CLIP_GAZE_MODEL": "toy", "CLIP_GAZE_FETCH_ALLOW": host,
               "PYTHONPATH": str(args.checkout)}
        proc = subprocess.Popen([sys.executable, "-m", "clip_gaze", "serve", "--port", str(port), "--workers", "1",
                                 "--threads", "4"], cwd=args.checkout, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    if call(f"{base}/v1/health", timeout=2)[0] == 200:
                        break
                except OSError:
                    pass
                time.sleep(0.3)
            with ThreadPoolExecutor(ATTACK) as pool:
                attack = [pool.submit(call, f"{base}/v1/analyze", {"image_url": f"http://{host}/slow{i}"})
                          for i in range(ATTACK)]
                time.sleep(2)
                latencies = []
                for path in ("/v1/health", "/v1/vocabularies") * 3:
                    try:
                        latencies.append(call(base + path, timeout=60)[1])
                    except OSError:
                        latencies.append(float("inf"))
                busy = sum(1 for f in attack if f.done() and f.result()[0] == 503)
                print(f"{ATTACK} slow /v1/analyze in flight: health and reads answered in "
                      f"{min(latencies):.3f}-{max(latencies):.3f} s; {busy} of them refused 503 busy at once")
                RELEASE.set()
                for f in attack:
                    f.result()
            RELEASE.clear()
            batch = {"image_urls": [f"http://{host}/slow{i}" for i in range(4)] + [f"http://{host}/good"]}
            status, took = call(f"{base}/v1/analyze/batch", batch)
            print(f"/v1/analyze/batch of 4 slow URLs and 1 good one: {status} in {took:.1f} s")
            RELEASE.set()
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
            trickle.shutdown()


if __name__ == "__main__":
    main()
