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

import functools
import hashlib
import ipaddress
import logging
import os
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal, Union

from flask import Flask, current_app, request

from indexer.errors import Busy
from indexer.settings import Settings

from .auth import can_write


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
    """Who is asking, for the per-caller limit: a valid bearer token (as a hash; checked in constant time,
    as writes check it), else the client's address. Any other token counts for nothing: a fresh random
    token per request would otherwise be a fresh caller each time.

    The address is the peer's, unless the peer is a trusted proxy: then the address that proxy appended
    to X-Forwarded-For (nginx's $proxy_add_x_forwarded_for, deploy/nginx/clip-gaze.conf.template), the
    header's last entry (earlier ones are whatever the client sent). Trusted: loopback peers (a proxy on
    this machine), and the peers gunicorn's own FORWARDED_ALLOW_IPS lists (addresses, networks or `*`;
    the same rule gunicorn applies to X-Forwarded-Proto). A peer on a private network is not trusted by
    itself: the server may be reachable there without a proxy, and any host on that network could then
    name itself a fresh caller per request. In docker-compose nginx reaches the API over the compose
    network, so the API is given FORWARDED_ALLOW_IPS there (only nginx reaches its port); without it
    every client behind nginx shares nginx's address, one caller."""
    if can_write():
        return "token:" + hashlib.sha256(request.headers["Authorization"][7:].strip().encode()).hexdigest()[:16]
    peer = request.remote_addr or "?"
    forwarded = request.headers.get("X-Forwarded-For", "")
    if forwarded and _is_proxy(peer, _trusted_proxies()):
        last = forwarded.split(",")[-1].strip()
        if last:
            return "addr:" + last
    return "addr:" + peer


Proxies = Union[Literal["*"], tuple[Union[ipaddress.IPv4Network, ipaddress.IPv6Network], ...]]


@functools.lru_cache(maxsize=8)
def _parse_proxies(listed: str) -> Proxies:
    """FORWARDED_ALLOW_IPS as gunicorn reads it: comma-separated addresses or networks, or `*` (entries
    that are neither are left out)."""
    entries = [e.strip() for e in listed.split(",") if e.strip()]
    if "*" in entries:
        return "*"
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            continue
    return tuple(networks)


def _trusted_proxies() -> Proxies:
    return _parse_proxies(os.environ.get("FORWARDED_ALLOW_IPS", ""))


def _is_proxy(address: str, trusted: Proxies = ()) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback or trusted == "*":
        return True
    return any(ip.version == net.version and ip in net for net in trusted)


__all__ = ["FetchGate", "FetchesBusy", "Grant", "caller", "fetch_gate", "init_app"]
