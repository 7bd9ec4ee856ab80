"""ONNX Runtime against torch (today's path), each comparison measured in one run:

    python bench/backends.py [--repeat 15] [--phrases 2048] [--only http,text,cli,threads]

1. http: analyze over real HTTP, what a client meets. Two `clip-gaze serve` (one gunicorn worker each,
   the same home with artists-prevalence, movements and surfaces indexed), CLIP_GAZE_BACKEND=torch and
   =onnx; a 2175×1713, 1 MB photograph-like JPEG sent by a plain HTTP client (http.client, the bytes curl
   sends) to each in turn, 0.5 s apart (OpenMP threads still spinning in one process slow the other
   several-fold). Each request's time is split into: the server's own time (gunicorn's access log,
   %(M)s), the engine's stages (timing_breakdown_ms: decode, embed_image, score) and the rest. A bare
   encode of the preprocessed picture on each backend, in this process, is interleaved the same way.
2. text: phrase-embedding throughput, ONNX Runtime against torch's trimmed, length-sorted batches, on
   the same phrases from the built-in lists (halves alternated).
3. cli: `clip-gaze compare` with the toy model, wall time from a cold process, each backend.
4. threads: the onnx server with 1 and 2 workers, intra-op spinning off and on: a lone client's
   latency and 4 concurrent clients' throughput.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np

from common import ROOT, header, median, model_name, photograph

from clip_gaze import Client  # noqa: E402
from concurrency import free_port  # noqa: E402

VOCABS = ["artists-prevalence", "movements", "surfaces"]
GAP = 0.5  # seconds between two processes' work


class Server:
    """`clip-gaze serve` in its own process group; module constants of indexer.models.onnx_model may be set
    before gunicorn forks its workers (`onnx_options`)."""

    def __init__(self, home: str, backend: str, workers: int = 1, onnx_options: dict[str, Any] | None = None,
                 threads: int = 4, model: str | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(home) / f"serve-{backend}-{self.port}.log"
        env = {**os.environ, "CLIP_GAZE_HOME": home, "CLIP_GAZE_MODEL": model or model_name(),
               "CLIP_GAZE_BACKEND": backend}
        setup = "".join(f"import indexer.models.onnx_model as m; m.{k} = {v!r}; " for k, v in (onnx_options or {}).items())
        code = f"{setup}from clip_gaze.cli import main; main()"
        argv = [sys.executable, "-c", code, "serve", "--port", str(self.port), "--workers", str(workers),
                "--threads", str(threads), "--no-index"]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                         cwd=ROOT)
        t0 = time.perf_counter()
        client = Client(self.url, timeout=5)
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited; see {self.log}")
            try:
                if client.health()["status"] == "ready":
                    break
            except OSError:
                pass
            time.sleep(0.1)
        self.ready_s = time.perf_counter() - t0
        self.health = client.health()

    def request_ms(self) -> list[int]:
        """The server's own time of each analyze request so far (gunicorn's access log)."""
        return [int(m) for m in re.findall(r'"POST /v1/analyze[^"]*" 200 \d+ (\d+)ms', self.log.read_text())]

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=60)


_SENT = iter(range(10**9))


def post_jpeg(url: str, jpeg: bytes) -> tuple[float, dict[str, Any]]:
    """POST /v1/analyze as multipart, as curl -F would; wall time in ms and the answer. Each request's
    file differs (a few bytes after the JPEG's end, which decoders ignore): a picture is encoded once
    per model and then found by its hash, and a benchmark of encoding must never hit that store."""
    jpeg = jpeg + f"clip-gaze-bench-{next(_SENT)}".encode()
    host, port = url.removeprefix("http://").split(":")
    boundary = "----clip-gaze-bench"
    fields = [("vocabularies", ",".join(VOCABS)), ("top_k", "10")]
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields
    ) + (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="painting.jpg"\r\n'
         f"Content-Type: image/jpeg\r\n\r\n").encode() + jpeg + f"\r\n--{boundary}--\r\n".encode()
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    conn.request("POST", "/v1/analyze", body=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    ms = (time.perf_counter() - t0) * 1000
    assert resp.status == 200, data[:300]
    return ms, json.loads(data)


def interleave(fns: dict[str, Callable[[], Any]], repeat: int) -> dict[str, list[float]]:
    """Each function `repeat` times, in turn, GAP seconds apart; wall times in ms."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            time.sleep(GAP)
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1000)
    return times


def prepared_home() -> str:
    home = tempfile.mkdtemp(prefix="clip-gaze-bench-backends-")
    env = {**os.environ, "CLIP_GAZE_HOME": home, "CLIP_GAZE_MODEL": model_name()}
    subprocess.run([sys.executable, "-m", "clip_gaze", "models", "export"], env=env, check=True, cwd=ROOT)
    subprocess.run([sys.executable, "-m", "clip_gaze", "index", "--vocab", ",".join(VOCABS)], env=env, check=True,
                   cwd=ROOT)
    return home


def bench_http(home: str, repeat: int) -> None:
    header("1. analyze over real HTTP (gunicorn, 1 worker each, loopback; 2175×1713 JPEG)")
    from PIL import Image

    import io

    from indexer.models import backends
    from indexer.models.registry import parse_model

    jpeg = photograph()
    servers = {b: Server(home, b) for b in ("torch", "onnx")}
    try:
        for b, s in servers.items():
            print(f"   {b:5}: ready in {s.ready_s:.1f} s, backends {s.health['backends']}")
        spec = parse_model(model_name())
        onnx = backends.load(spec, home=home, backend="onnx", threads=2)
        torch_model = backends.load(spec, home=home, backend="torch", threads=2)
        picture = Image.open(io.BytesIO(jpeg)).convert("RGB")
        arrays = {"onnx": onnx.image_array(picture)[None], "torch": torch_model.image_array(picture)[None]}
        answers: dict[str, list[dict[str, Any]]] = {b: [] for b in servers}
        clients: dict[str, list[float]] = {b: [] for b in servers}

        def request(b: str) -> Callable[[], None]:
            def go() -> None:
                ms, answer = post_jpeg(servers[b].url, jpeg)
                clients[b].append(ms)
                answers[b].append(answer)
            return go

        for b in servers:  # warm
            request(b)(), request(b)()
        for lst in (*clients.values(), *answers.values()):
            lst.clear()
        skip = {b: len(s.request_ms()) for b, s in servers.items()}
        bare = interleave({
            "torch bare": lambda: torch_model.encode_image_arrays(arrays["torch"]),
            "torch http": request("torch"),
            "onnx bare": lambda: onnx.encode_image_arrays(arrays["onnx"]),
            "onnx http": request("onnx"),
        }, repeat)
        for b, s in servers.items():
            server_ms = s.request_ms()[skip[b]:]
            stages = {k: median([a["timing_breakdown_ms"][k] for a in answers[b]]) for k in answers[b][0]["timing_breakdown_ms"]}
            c, sv = median(clients[b]), median(server_ms)
            print(f"   {b:5}: client {c:6.1f} ms | server {sv:6.1f} ms | stages "
                  + ", ".join(f"{k} {v:.1f}" for k, v in stages.items())
                  + f" | rest in server {sv - sum(stages.values()):5.1f} ms | outside the server {c - sv:5.1f} ms"
                  + f" | bare encode {median(bare[b + ' bare']):6.1f} ms → {c / median(bare[b + ' bare']):.2f}× bare")
        # In the server, every forward pass is called from the batcher's thread, not the main thread:
        pools = {b: ThreadPoolExecutor(1) for b in servers}  # one long-lived thread each, as the batcher's

        def from_thread(b: str, fn: Callable[[], Any]) -> Callable[[], None]:
            return lambda: pools[b].submit(fn).result()

        threaded = interleave({
            "torch": from_thread("torch", lambda: torch_model.encode_image_arrays(arrays["torch"])),
            "onnx": from_thread("onnx", lambda: onnx.encode_image_arrays(arrays["onnx"])),
        }, repeat)
        for b in servers:
            print(f"   {b:5}: bare encode called from another thread (as the batcher calls it): "
                  f"{median(threaded[b]):6.1f} ms against {median(bare[b + ' bare']):6.1f} ms from the main thread")
        ratio = median(clients["onnx"]) / median(clients["torch"])
        print(f"   onnx / torch, whole request as the client meets it: {ratio:.2f}×  (target ≤ 0.6×)")
        print(f"   bare encode onnx / torch: {median(bare['onnx bare']) / median(bare['torch bare']):.2f}×")
        top = {b: answers[b][-1]["results"]["artists-prevalence"]["matches"][0] for b in servers}
        print(f"   same top phrase: {top['onnx']['phrase'] == top['torch']['phrase']}; probability difference "
              f"{abs(top['onnx']['probability'] - top['torch']['probability']):.1e}")
    finally:
        for s in servers.values():
            s.stop()


def bench_text(home: str, n: int) -> None:
    header(f"2. phrase embedding throughput ({n} phrases of the built-in lists; sorted, trimmed, batches of 256)")
    import random

    from indexer.models import backends
    from indexer.models.registry import parse_model
    from indexer.catalog import catalog

    phrases = sorted({p.phrase for v in catalog().vocabularies.values() for p in v.phrases()})
    random.Random(0).shuffle(phrases)
    phrases = phrases[:n]
    spec = parse_model(model_name())
    models = {b: backends.load(spec, home=home, backend=b, threads=2) for b in ("torch", "onnx")}
    halves = (phrases[: n // 2], phrases[n // 2:])
    spent = {b: 0.0 for b in models}
    out: dict[str, list[Any]] = {b: [] for b in models}
    for half in halves:
        for b, m in models.items():
            time.sleep(GAP)
            t0 = time.perf_counter()
            out[b].append(m.encode_texts(half))
            spent[b] += time.perf_counter() - t0
    diff = float(np.abs(np.concatenate(out["onnx"]) - np.concatenate(out["torch"])).max())
    for b in models:
        print(f"   {b:5}: {n / spent[b]:7.1f} phrases/s ({spent[b]:.1f} s)")
    print(f"   onnx / torch throughput: {spent['torch'] / spent['onnx']:.2f}×  (target ≥ 1.3×); largest difference {diff:.1e}")


def bench_cli(runs: int) -> None:
    header("3. `clip-gaze compare` with the toy model, from a cold process")
    home = tempfile.mkdtemp(prefix="clip-gaze-bench-cli-")
    env = {**os.environ, "CLIP_GAZE_HOME": home, "CLIP_GAZE_MODEL": "toy"}
    argv = [sys.executable, "-m", "clip_gaze", "compare", "examples/red-circle.png", "a red circle", "a blue square",
            "a green star"]
    subprocess.run([sys.executable, "-m", "clip_gaze", "models", "export"], env=env, check=True, cwd=ROOT,
                   capture_output=True)
    subprocess.run(argv, env=env, check=True, cwd=ROOT, capture_output=True)  # the store exists, the phrases are embedded
    times = interleave({
        b: (lambda b=b: subprocess.run(argv, env={**env, "CLIP_GAZE_BACKEND": b}, check=True, cwd=ROOT,
                                       capture_output=True))
        for b in ("torch", "onnx")
    }, runs)
    for b, t in times.items():
        print(f"   {b:5}: median {median(t) / 1000:.2f} s wall (min {min(t) / 1000:.2f}, max {max(t) / 1000:.2f})")
    print(f"   onnx: {median(times['onnx']) / 1000:.2f} s  (target ≤ 1.5 s); torch / onnx {median(times['torch']) / median(times['onnx']):.1f}×")
    shutil.rmtree(home, ignore_errors=True)


def bench_threads(home: str, requests: int) -> None:
    header("4. ONNX Runtime thread settings: 1 and 2 workers, intra-op spinning off / on (1 and 4 clients)")
    jpeg = photograph(1024, 768)

    def clients(url: str, n: int, total: int) -> tuple[float, float]:
        def one(_: int) -> float:
            return post_jpeg(url, jpeg)[0]
        t0 = time.perf_counter()
        with ThreadPoolExecutor(n) as pool:
            lat = list(pool.map(one, range(total)))
        return total / (time.perf_counter() - t0), median(lat)

    for workers in (1, 2):
        for spinning in (False, True):
            s = Server(home, "onnx", workers=workers, onnx_options={"INTRA_OP_SPINNING": spinning}, threads=4)
            try:
                clients(s.url, 2, 4)
                time.sleep(GAP)
                _, lone = clients(s.url, 1, requests)
                time.sleep(GAP)
                rate, lat4 = clients(s.url, 4, requests * 2)
            finally:
                s.stop()
            print(f"   workers {workers}, spinning {'on ' if spinning else 'off'}: lone request {lone:6.1f} ms; "
                  f"4 clients {rate:5.2f} requests/s (median latency {lat4:6.1f} ms)")
            time.sleep(GAP)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--phrases", type=int, default=2048)
    ap.add_argument("--only", default="http,text,cli,threads")
    args = ap.parse_args()
    parts = set(args.only.split(","))
    home = prepared_home() if parts & {"http", "text", "threads"} else ""
    if "http" in parts:
        bench_http(home, args.repeat)
    if "text" in parts:
        bench_text(home, args.phrases)
    if "cli" in parts:
        bench_cli(max(5, args.repeat // 3))
    if "threads" in parts:
        bench_threads(home, max(6, args.repeat // 2))
    if home:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
