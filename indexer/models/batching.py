"""How the towers are fed: pictures of concurrent requests share one forward pass (`ImageBatcher`),
and phrases go in batches of similar token length (`length_batches`), on both runtimes.

Micro-batching: request threads preprocess their own pictures (in parallel) and submit arrays; one
batching thread waits at most `window_ms` after the first picture for others, runs one forward pass
over all of them (at most `max_batch`) and hands each request its row. The queue is bounded: when it
is full a request waits, then is answered 503 rather than piling up without end.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Callable, Iterator

import numpy as np
import numpy.typing as npt

from ..errors import Busy

EncodeFn = Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]  # stacked pictures (b, 3, h, w) → (b, d)


class ImageBatcher:
    def __init__(self, encode: EncodeFn, window_ms: float = 2.0, max_batch: int = 32, max_queue: int = 256):
        self._encode = encode
        self._window = max(0.0, window_ms) / 1000.0
        self._max_batch = max_batch
        self._queue: queue.Queue[tuple[Any, Future[npt.NDArray[np.float32]]]] = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._run, name="clip-gaze-batcher", daemon=True)
        self._thread.start()
        self.batches = 0
        self.items = 0

    def submit(self, arrays: npt.NDArray[np.float32], timeout: float = 60.0) -> npt.NDArray[np.float32]:
        """Embed a stack of preprocessed images (b, 3, h, w); blocks until done."""
        futures = []
        for t in arrays:
            fut: Future[npt.NDArray[np.float32]] = Future()
            try:
                self._queue.put((t, fut), timeout=timeout)
            except queue.Full:
                raise Busy("the server is busy; try again shortly") from None
            futures.append(fut)
        try:
            return np.stack([f.result(timeout=timeout * 5) for f in futures])
        except FutureTimeout:
            raise Busy("the server is busy; the picture was not encoded in time: try again shortly") from None

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            batch = [first]
            deadline = time.monotonic() + self._window
            while len(batch) < self._max_batch:
                remaining = deadline - time.monotonic()
                try:
                    batch.append(self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                out = self._encode(np.stack([t for t, _ in batch]))
            except BaseException as exc:  # hand the failure to every waiting request
                for _, fut in batch:
                    fut.set_exception(exc)
                continue
            self.batches += 1
            self.items += len(batch)
            for row, (_, fut) in zip(out, batch):
                fut.set_result(row)


def length_batches(lengths: npt.NDArray[np.integer], batch_size: int,
                   max_tokens: int | None = None) -> Iterator[npt.NDArray[np.intp]]:
    """Indices of phrases in batches for a text tower, shortest first (a stable sort, so batches trim
    well): at most `batch_size` phrases, and with `max_tokens` at most that many tokens (phrases × the
    batch's longest, at least 2). Both backends batch this way."""
    order = np.argsort(lengths, kind="stable")
    n, step, start = len(order), max(1, batch_size), 0
    while start < n:
        end = min(n, start + step)
        if max_tokens is not None:  # sorted: the batch's last phrase is its longest
            end = min(end, start + max(1, max_tokens // max(2, int(lengths[order[end - 1]]))))
        yield order[start:end]
        start = end
