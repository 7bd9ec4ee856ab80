"""How many URLs a server process fetches at once for requests, and for whom.

A request that names URLs (`image_url`, a batch's `image_urls`) holds a request thread while the
remote host answers, however slowly it trickles. Unbounded, four such requests took every thread of a
worker and `/v1/health` waited 28 s behind them. The gate admits a fetching request only while

- fewer than `max_fetches` fetches are in flight in the process (CLIP_GAZE_MAX_FETCHES),
- its caller has fewer than `per_caller` in flight (CLIP_GAZE_MAX_FETCHES_PER_CALLER), and
- under gunicorn, fewer than all of the worker's request threads but one are held by fetching
  requests (that one is never taken by a fetch: health and reads always find a thread). A worker of
  one request thread (`serve --threads 1`) has no thread to spare: it still fetches, one request at a
  time, and while it does, health and reads wait behind it (up to the fetch timeout); it says so in
  the log at start. Serve with 2 threads or more (the default is 4) to keep one free;

otherwise it answers 503 `busy` at once, with Retry-After, rather than queueing the request. A batch
is granted as many fetches as it has URLs, as far as the limits allow (at least one), and fetches
that many at a time; it gives its request back when it answers, its fetches only when their threads
have ended (a fetch that outlives the answer is still counted).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass, field

from flask import Flask, current_app

from indexer.errors import Busy
from indexer.settings import Settings

from .access import current


log = logging.getLogger("clip_gaze.service")


class FetchesBusy(Busy):
    """Every fetch this server (or this caller) may have in flight is taken: try again shortly."""

    retry_after = 5


@dataclass
class Grant:
    """`slots` fetches held for `caller`, and a request thread waiting on them, until released (once).
    A batch ends its request (`end_request`) when it answers, and releases its slots only when its
    fetch threads have ended (a slow fetch may outlive the answer, to its deadline): fetches in flight
    never exceed what the gate admits."""

    gate: FetchGate
    caller: str
    slots: int
    _released: bool = field(default=False, repr=False)
    _request_ended: bool = field(default=False, repr=False)

    def release(self) -> None:
        """The slots given back (and the request ended, if it was not)."""
        self.gate._release(self)

    def end_request(self) -> None:
        """The request thread is free again; the slots stay held until `release`."""
        self.gate._end_request(self)

    def __enter__(self) -> Grant:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class FetchGate:
    """The fetches in flight of one process: admitted without waiting, or refused with FetchesBusy."""

    def __init__(self, max_fetches: int, per_caller: int, request_threads: int = 0):
        self.max_fetches = max(1, max_fetches)
        self.per_caller = max(1, per_caller)
        # requests that may wait on fetches at once: every request thread but one (0: no thread limit);
        # with one request thread, that one (refusing every URL would leave such a server no image_url)
        self.max_requests = max(1, request_threads - 1) if request_threads > 0 else 0
        self._lock = threading.Lock()
        self.in_flight = 0
        self.requests = 0
        self._by_caller: Counter[str] = Counter()

    def admit(self, caller: str, wanted: int = 1) -> Grant:
        """Up to `wanted` fetches for `caller` (at least one), or FetchesBusy saying which limit is reached."""
        with self._lock:
            if self.max_requests and self.requests >= self.max_requests:
                raise FetchesBusy(
                    f"the server is busy: {self.requests} requests are waiting on URLs they named (every request "
                    "thread but one); try again shortly, or send the picture itself")
            free = self.max_fetches - self.in_flight
            if free < 1:
                raise FetchesBusy(
                    f"the server is busy: {self.in_flight} URLs are being fetched, the most it fetches at once "
                    "(CLIP_GAZE_MAX_FETCHES); try again shortly, or send the picture itself")
            mine = self.per_caller - self._by_caller[caller]
            if mine < 1:
                raise FetchesBusy(
                    f"you have {self._by_caller[caller]} URLs being fetched already, the most one caller may have "
                    "(CLIP_GAZE_MAX_FETCHES_PER_CALLER); try again when they are done")
            slots = max(1, min(wanted, free, mine))
            self.in_flight += slots
            self.requests += 1
            self._by_caller[caller] += slots
            return Grant(self, caller, slots)

    def _release(self, grant: Grant) -> None:
        with self._lock:
            if grant._released:
                return
            grant._released = True
            self.in_flight -= grant.slots
            self._by_caller[grant.caller] -= grant.slots
            if self._by_caller[grant.caller] <= 0:
                del self._by_caller[grant.caller]
            self._end_request_locked(grant)

    def _end_request(self, grant: Grant) -> None:
        with self._lock:
            self._end_request_locked(grant)

    def _end_request_locked(self, grant: Grant) -> None:
        if not grant._request_ended:
            grant._request_ended = True
            self.requests -= 1


def init_app(app: Flask, settings: Settings) -> None:
    gate = FetchGate(settings.max_fetches, settings.max_fetches_per_caller, settings.serve_threads)
    if settings.serve_threads == 1:
        log.warning("one request thread per worker (--threads 1): a request fetching a URL holds it, and health "
                    "and reads wait behind it for up to the fetch timeout; serve with --threads 2 or more to keep "
                    "one thread free of fetches")
    app.extensions["clip_gaze_fetches"] = gate


def fetch_gate() -> FetchGate:
    return current_app.extensions["clip_gaze_fetches"]  # type: ignore[no-any-return]


def caller() -> str:
    """Who is asking, for the per-caller limit: an accepted key or token (`access.current`: by its name, or a
    token as a hash), else the client's address (as `access.client_address` finds it behind a trusted
    proxy). A key that is refused counts for nothing: a fresh random token per request would otherwise be a
    fresh caller each time."""
    return current().ident


__all__ = ["FetchGate", "FetchesBusy", "Grant", "caller", "fetch_gate", "init_app"]
