"""Concurrency: throughput of `clip-gaze serve` (one gunicorn worker, 8 threads) with 8 concurrent
clients against one client, same server, same run; and what the batching window adds to a lone
request.

    python bench/concurrency.py [--requests 24]

Images from concurrent requests share one forward pass (indexer/batcher.py). Threads: torch runs
its intra-op pool on every core (CLIP_GAZE_THREADS=0 → cores ÷ workers) and only the batcher thread
calls the model, so request threads never oversubscribe the cores; numpy's BLAS does the scoring;
FAISS (OpenMP) only reads and writes index files, never on the request path.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from common import header, median, model_name, photograph

from clip_gaze import Client  # noqa: E402

VOCABS = ["artists-prevalence", "movements", "surfaces"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(home: str, port: int, window_ms: float) -> subprocess.Popen[bytes]:
    env = {**os.environ, "CLIP_GAZE_HOME": home, "CLIP_GAZE_MODEL": model_name(),
           "CLIP_GAZE_BATCH_WINDOW_MS": str(window_ms)}
    log = open(Path(home) / f"serve-{port}.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "clip_gaze", "serve", "--port", str(port), "--workers", "1",
                             "--threads", "8"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    client = Client(f"http://127.0.0.1:{port}", timeout=5)
    for _ in range(600):
        try:
            if client.health()["status"] == "ready":
                return proc
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit("server did not start; see " + str(Path(home) / f"serve-{port}.log"))


def stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=60)


def run_clients(url: str, image: bytes, clients: int, total: int) -> tuple[float, list[float]]:
    def one(_: int) -> float:
        t0 = time.perf_counter()
        Client(url).analyze(image, vocabularies=VOCABS, top_k=5)
        return (time.perf_counter() - t0) * 1000

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = list(pool.map(one, range(total)))
    return total / (time.perf_counter() - t0), latencies


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, default=24, help="requests per measurement")
    args = ap.parse_args()
    header("concurrency: clip-gaze serve, 1 worker × 8 threads, ViT-B-32 random weights")
    home = tempfile.mkdtemp(prefix="clip-gaze-bench-")
    image = photograph(1024, 768)
    port = free_port()
    proc = start(home, port, window_ms=2)
    url = f"http://127.0.0.1:{port}"
    try:
        run_clients(url, image, 1, 4)  # warm up
        before = Client(url).health()["batching"]
        single, lat1 = run_clients(url, image, 1, args.requests)
        eight, lat8 = run_clients(url, image, 8, args.requests * 2)
        after = Client(url).health()["batching"]
        single2, _ = run_clients(url, image, 1, args.requests)  # drift check: single client again
    finally:
        stop(proc)
    single_mean = (single + single2) / 2
    print(f"   1 client:   {single:5.2f} then {single2:5.2f} requests/s (median latency {median(lat1):5.0f} ms)")
    print(f"   8 clients:  {eight:5.2f} requests/s (median latency {median(lat8):5.0f} ms, p90 {np.percentile(lat8, 90):5.0f} ms)")
    print(f"   throughput 8 clients / 1 client: {eight / single_mean:.2f}×  (target ≥ 1.3×)")
    images = after["images"] - before["images"]
    batches = after["batches"] - before["batches"]
    print(f"   forward passes during both runs: {batches} for {images} images ({images / max(1, batches):.1f} images per pass)")

    # What batching costs a lone request: the batcher alone (thread hand-off and window), with an
    # encoder that does nothing, so the model's own time and the machine's noise stay out of it.
    from indexer.models.batching import ImageBatcher

    tensor = np.zeros((1, 3, 224, 224), dtype=np.float32)
    for window in (0.0, 2.0, 5.0):
        batcher = ImageBatcher(lambda batch: np.zeros((len(batch), 512), dtype=np.float32), window_ms=window)
        times = []
        for _ in range(200):
            t0 = time.perf_counter()
            batcher.submit(tensor)
            times.append((time.perf_counter() - t0) * 1000)
        print(f"   lone request through the batcher, window {window:.0f} ms: median {median(times):.2f} ms added")

if __name__ == "__main__":
    main()
