"""Shared pieces of the benchmarks: the random-weight ViT-B-32 checkpoint, a test photograph,
timing and memory helpers. Every figure a script prints is measured in that same run."""

from __future__ import annotations

import io
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT))


def vit_b_32_checkpoint() -> Path:
    """ViT-B-32 with random weights, saved once as a local checkpoint: the real model's compute."""
    path = OUT / "vit-b-32-random.safetensors"
    if not path.is_file():
        import open_clip
        import torch
        from safetensors.torch import save_file

        OUT.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        model = open_clip.create_model("ViT-B-32")
        tmp = path.with_suffix(".tmp")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
        tmp.replace(path)
    return path


def model_name() -> str:
    return f"ViT-B-32:{vit_b_32_checkpoint()}"


def photograph(width: int = 2175, height: int = 1713, quality: int = 90) -> bytes:
    """A JPEG with the texture of a photograph of a painting (gradients, strokes, noise)."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([
        120 + 80 * np.sin(x / 170.0) * np.cos(y / 230.0),
        100 + 70 * np.cos(x / 260.0 + 1.0),
        90 + 60 * np.sin((x + y) / 310.0),
    ], axis=-1)
    img = Image.fromarray(np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    for _ in range(400):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        d.line((x0, y0, x0 + int(rng.integers(-120, 120)), y0 + int(rng.integers(-120, 120))),
               fill=tuple(int(v) for v in rng.integers(0, 255, 3)), width=int(rng.integers(2, 14)))
    img = img.filter(ImageFilter.GaussianBlur(1.2))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def timed(fn: Callable[[], object], repeat: int, warmup: int = 2) -> list[float]:
    """Wall-clock milliseconds of each of `repeat` calls, after `warmup` calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def _status_mb(field: str, pid: int | None) -> float:
    with open(f"/proc/{pid or os.getpid()}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def rss_mb(pid: int | None = None) -> float:
    """Resident memory now, MiB."""
    return _status_mb("VmRSS", pid)


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (or since `reset_peak_rss`), MiB."""
    return _status_mb("VmHWM", None)


def reset_peak_rss() -> bool:
    """Start the peak of `peak_rss_mb` afresh from the current resident memory (Linux: clear_refs 5);
    False where the kernel does not allow it, and the peak stays the process's."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} cores ({cpu}), {device}, torch {torch.__version__}, torch threads {torch.get_num_threads()}"


def header(title: str) -> None:
    print(f"== {title}")
    print(f"   machine: {machine()}")
