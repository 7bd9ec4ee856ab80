"""Memory and start: `clip-gaze serve` (1 worker) with ViT-B-32 and every built-in vocabulary indexed:
time until ready, resident memory, float32 against compact float16 indexes, ONNX Runtime against torch
(CLIP_GAZE_BACKEND); the export is made first if missing, and is present for every start measured.

    python bench/indexing.py --all      # once: indexes all 16 vocabularies into bench/out/home-all
    python bench/memory_start.py

Also checks that neither start nor the first requests write any index file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from common import OUT, _status_mb, header, model_name, photograph, rss_mb

from clip_gaze import Client  # noqa: E402
from indexer.catalog import catalog  # noqa: E402

from concurrency import free_port  # noqa: E402


def index_files(home: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in (home / "indexes").rglob("*.faiss")}


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out.extend(int(c) for c in text)
    return out


def serve(home: Path, compact: bool, image: bytes, backend: str = "auto") -> tuple[float, float, float, dict]:
    port = free_port()
    env = {**os.environ, "CLIP_GAZE_HOME": str(home), "CLIP_GAZE_MODEL": model_name(),
           "CLIP_GAZE_COMPACT_INDEXES": "1" if compact else "0", "CLIP_GAZE_BACKEND": backend}
    t0 = time.perf_counter()
    with open(home / "serve-bench.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "clip_gaze", "serve", "--port", str(port), "--workers", "1", "--no-index"],
                                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    client = Client(f"http://127.0.0.1:{port}", timeout=120)
    try:
        while True:
            try:
                if client.health()["status"] == "ready":
                    break
            except OSError:
                pass
            if proc.poll() is not None:
                raise SystemExit("server exited; see " + str(home / "serve-bench.log"))
            time.sleep(0.1)
        ready = time.perf_counter() - t0
        worker = children(proc.pid)[0]
        rss_ready = rss_mb(worker)
        split = {k: _status_mb(k, worker) for k in ("RssAnon", "RssFile")}
        names = list(catalog().vocabularies)
        answer = client.analyze(image, vocabularies=names, top_k=5)
        for _ in range(4):
            client.analyze(image, vocabularies=names, top_k=5)
        rss_busy = rss_mb(worker)
        print(f"      (when ready: {split['RssAnon']:.0f} MiB anonymous, {split['RssFile']:.0f} MiB file-backed "
              "library pages, shared between workers)")
        return ready, rss_ready, rss_busy, answer
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def import_costs() -> None:
    """What importing the libraries alone costs, in a fresh interpreter."""
    code = ("import os\n"
            "def r():\n"
            "    return int(next(l for l in open(f'/proc/{os.getpid()}/status') if l.startswith('VmRSS')).split()[1]) // 1024\n"
            "a = r(); import torch; b = r(); import torchvision; c = r(); import open_clip; d = r()\n"
            "print(a, b, c, d)")
    a, b, c, d = map(int, subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())
    print(f"   importing torch costs {b - a} MiB of RSS, torchvision {c - b} MiB, the rest of open_clip {d - c} MiB "
          "(PyPI's CUDA builds; open_clip needs torchvision)")
    code = code.split("a = r()")[0] + "a = r(); import onnxruntime; b = r()\nprint(a, b)"
    a, b = map(int, subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())
    print(f"   importing onnxruntime costs {b - a} MiB")


def main() -> None:
    header("memory and start: clip-gaze serve, ViT-B-32 random weights, every built-in vocabulary")
    home = OUT / "home-all"
    if not (home / "clip-gaze.db").is_file():
        raise SystemExit("run `python bench/indexing.py --all` first")
    image = photograph(1024, 768)
    import_costs()
    env = {**os.environ, "CLIP_GAZE_HOME": str(home), "CLIP_GAZE_MODEL": model_name()}
    subprocess.run([sys.executable, "-m", "clip_gaze", "models", "export"], env=env, check=True, capture_output=True)
    before = index_files(home)
    results = {}
    for backend, compact in (("onnx", False), ("onnx", True), ("torch", False), ("torch", True)):
        ready, rss_ready, rss_busy, answer = serve(home, compact, image, backend)
        results[backend, compact] = answer
        kind = f"{backend}, " + ("float16 (compact indexes)" if compact else "float32 (default)")
        phrases = sum(r["softmax_over"] for r in answer["results"].values())
        print(f"   {kind:<32} ready in {ready:5.1f} s (onnx target ≤ 3 s); worker RSS {rss_ready:6.0f} MiB when ready, "
              f"{rss_busy:6.0f} MiB after 5 requests over all {phrases:,} phrases (onnx target ≤ 1,024 MiB in float32)")
    after = index_files(home)
    print(f"   index files written by start and requests: {sum(1 for k in after if before.get(k) != after[k])} "
          f"(of {len(after)})")
    diff = 0.0
    backends = 0.0
    for name, res in results["onnx", False]["results"].items():
        full = {m["phrase"]: m["probability"] for m in res["matches"]}
        for m in results["onnx", True]["results"][name]["matches"]:
            if m["phrase"] in full:
                diff = max(diff, abs(full[m["phrase"]] - m["probability"]))
        for m in results["torch", False]["results"][name]["matches"]:
            if m["phrase"] in full:
                backends = max(backends, abs(full[m["phrase"]] - m["probability"]))
    print(f"   float16 against float32, largest change in a top-5 probability: {diff:.1e} (must be ≤ 1e-3)")
    print(f"   onnx against torch (float32), largest change in a top-5 probability: {backends:.1e} (must be ≤ 1e-5)")


if __name__ == "__main__":
    main()
