"""Several URLs fetched together, by one deadline: a batch of slow URLs answers within one fetch
timeout, each URL not fetched by then its own `fetch_timeout` error, the others fetched beside them.

Each URL's work comes in two steps, its fetching (by the deadline) and its decoding: a picture fetched
by the deadline and still being decoded is waited for a little longer (`DECODE_GRACE`), then, if its
decoding has still not ended, answered `busy` (it was fetched: not a fetch timeout). `done` is called
once every URL's work has ended, however long after the answer that is (a fetch cannot be stopped
from outside its thread; it ends by its deadline): whoever counts fetches in flight gives them back
then, not when the request answers.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from typing import Callable, Generic, Sequence, TypeVar

from ..errors import Busy, ClipGazeError
from .fetch import FetchError

T = TypeVar("T")
DECODE_GRACE = 5.0  # seconds a picture fetched by the deadline may go on decoding before it is answered busy
LAST_BYTES = 0.5  # seconds past the deadline for a fetch to notice it and end


class FetchMany(Generic[T]):
    """`fetch(url, deadline)` for each URL, `width` at a time in threads of their own, all by one
    deadline `timeout` seconds from now (`deadline` is a time.monotonic() value). `fetch` fetches and
    returns the work left (the decoding), which is run in the same thread."""

    def __init__(self, fetch: Callable[[str, float], Callable[[], T]], urls: Sequence[str], width: int, timeout: float,
                 done: Callable[[], None] | None = None, grace: float = DECODE_GRACE):
        self.deadline = time.monotonic() + timeout
        self.urls = list(urls)
        self.grace = grace
        self.decoding = [False] * len(self.urls)  # fetched, its decoding under way
        self._fetch = fetch
        self._done = done
        self._left = len(self.urls)
        self._lock = threading.Lock()
        if not self.urls:
            self._call_done()
        self.pool = ThreadPoolExecutor(max(1, min(width, len(self.urls))), thread_name_prefix="clip-gaze-fetch")
        self.futures: list[Future[T]] = [self.pool.submit(self._run, i, url) for i, url in enumerate(self.urls)]
        for future in self.futures:  # a future cancelled before it started ends too
            future.add_done_callback(self._ended)

    def _run(self, i: int, url: str) -> T:
        finish = self._fetch(url, self.deadline)
        self.decoding[i] = True
        return finish()

    def _ended(self, _: Future[T]) -> None:
        with self._lock:
            self._left -= 1
            last = self._left == 0
        if last:
            self._call_done()

    def _call_done(self) -> None:
        done, self._done = self._done, None
        if done is not None:
            done()

    def results(self) -> list[T | ClipGazeError]:
        """Each URL's result or error, in order, by the deadline (and a moment for the last bytes; a
        picture fetched by then and still decoding, a moment more)."""
        wait_for(self.futures, timeout=max(0.0, self.deadline - time.monotonic()) + LAST_BYTES)
        decoding = [f for f, d in zip(self.futures, self.decoding) if d and not f.done()]
        if decoding:
            wait_for(decoding, timeout=self.grace)
        out: list[T | ClipGazeError] = []
        for url, future, fetched in zip(self.urls, self.futures, self.decoding):
            if not future.done():
                if fetched:
                    out.append(Busy(f"{url}: fetched, but still being decoded {self.grace:g} s after the request's deadline "
                                    "for its URLs (the server is decoding other pictures); try again shortly"))
                    continue
                future.cancel()
                out.append(FetchError(f"{url}: not fetched within the request's deadline for its URLs", url=url,
                                      code="fetch_timeout"))
                continue
            error = future.exception()
            if isinstance(error, ClipGazeError):
                out.append(error)
            else:
                out.append(future.result())  # an unexpected error is raised here, as it would be one at a time
        return out

    def close(self) -> None:
        """Nothing more starts; a fetch still running ends by the deadline on its own (then `done`)."""
        self.pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> FetchMany[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["DECODE_GRACE", "FetchMany"]
