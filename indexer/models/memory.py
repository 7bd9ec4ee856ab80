"""What a model costs in memory once loaded (GET /v1/health's `models`).

Two figures, named apart: `rss_growth`, how much the process's resident memory grew while the model
loaded (loads are measured one at a time in a process, so two models loading at once do not blur each
other; the first model a process loads also carries its runtime's import, torch's or ONNX Runtime's),
and `weights_bytes`, the bytes of the weights themselves (torch: every parameter and buffer; ONNX
Runtime: the export's files). Nothing here imports torch.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

T = TypeVar("T")
_LOADING = threading.Lock()  # one measured load at a time in a process


@dataclass(frozen=True)
class LoadCost:
    rss_growth: int | None  # bytes; None where the platform does not say
    weights: int | None  # bytes
    seconds: float


def rss_bytes() -> int | None:
    """The process's resident memory, from /proc (Linux); None elsewhere."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def weights_bytes(model: Any, export_dir: Path | None = None) -> int | None:
    """The bytes of a loaded model's weights: torch's parameters and buffers, or an ONNX export's files."""
    inner = getattr(model, "model", None)
    if inner is not None and hasattr(inner, "parameters"):
        tensors = [*inner.parameters(), *inner.buffers()]
        return int(sum(t.numel() * t.element_size() for t in tensors))
    if export_dir is not None and export_dir.is_dir():
        return sum(p.stat().st_size for p in export_dir.iterdir() if p.is_file() and p.suffix in (".onnx", ".data"))
    return None


def measured(load: Callable[[], T], export_dir: Callable[[], Path | None] = lambda: None) -> tuple[T, LoadCost]:
    """`load()`'s result and what it cost, measured alone in this process."""
    import time

    with _LOADING:
        before, t0 = rss_bytes(), time.perf_counter()
        value = load()
        after, seconds = rss_bytes(), time.perf_counter() - t0
    growth = max(0, after - before) if before is not None and after is not None else None
    return value, LoadCost(rss_growth=growth, weights=weights_bytes(value, export_dir()), seconds=seconds)


__all__ = ["LoadCost", "measured", "rss_bytes", "weights_bytes"]
