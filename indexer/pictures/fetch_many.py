"""Several URLs fetched together, by one deadline: a batch of slow URLs answers within one fetch
timeout, each URL not fetched by then its own `fetch_timeout` error, the others fetched beside them."""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from typing import Callable, Generic, Sequence, TypeVar

from ..errors import ClipGazeError
from .fetch import FetchError

T = TypeVar("T")


class FetchMany(Generic[T]):
    """`fetch(url, deadline)` for each URL, `width` at a time in threads of their own, all by one
    deadline `timeout` seconds from now (`deadline` is a time.monotonic() value)."""

    def __init__(self, fetch: Callable[[str, float], T], urls: Sequence[str], width: int, timeout: float):
        self.deadline = time.monotonic() + timeout
        self.urls = list(urls)
        self.pool = ThreadPoolExecutor(max(1, min(width, len(self.urls))), thread_name_prefix="clip-gaze-fetch")
        self.futures: list[Future[T]] = [self.pool.submit(fetch, url, self.deadline) for url in self.urls]

    def results(self) -> list[T | ClipGazeError]:
        """Each URL's result or error, in order, by the deadline (and a moment for the last bytes)."""
        wait_for(self.futures, timeout=max(0.0, self.deadline - time.monotonic()) + 0.5)
        out: list[T | ClipGazeError] = []
        for url, future in zip(self.urls, self.futures):
            if not future.done():
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
        """Nothing more starts; a fetch still running ends by the deadline on its own."""
        self.pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> FetchMany[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["FetchMany"]
