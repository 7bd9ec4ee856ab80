"""Job callbacks: when a job with a `callback_url` ends (done, failed, interrupted), its answer (the JSON
of GET /v1/jobs/<id>) is POSTed there, signed the Stripe way: header `X-Clip-Gaze-Signature:
t=<unix time>,v1=<hex HMAC-SHA256 of "t.body">` with CLIP_GAZE_WEBHOOK_SECRET, so a receiver can check
the sender and refuse replays (`verify`).

The URL goes through the fetch guard (`pictures.fetch`: http(s), no credentials, private addresses
refused unless CLIP_GAZE_FETCH_ALLOW lists them) when the job is asked for (`check_url`: 422) and again
at each attempt, to the address checked; redirects are never followed (a 3xx is a failed attempt).
A request with a `callback_url` to a server without a secret is refused (422 `no_webhook_secret`):
nothing is ever sent unsigned.

Delivery (`Deliveries`, one per process and store) runs in a thread of its own, each attempt in a
short-lived thread beside it (at most `PARALLEL` at once) with a `TIMEOUT`, so a slow or hanging
receiver never holds a job's worker nor other deliveries. An attempt is claimed in the store first
(`store.callbacks`: one UPDATE, one process wins, with a lease), so with several workers one delivers
each attempt, and a restarted server delivers what is pending. An attempt that fails (no 2xx, a
timeout, no connection) is recorded and retried after `BACKOFF` seconds, doubling up to `MAX_DELAY`,
for up to `WINDOW` seconds after the first; then the callback is `failed`. Delivery is at least once:
a process killed between sending and recording sends that attempt again after its lease.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Callable

from ..errors import ClipGazeError, InvalidInput
from ..pictures.fetch import USER_AGENT, FetchError, FetchPolicy, guard
from ..pictures.fetch import _Connection as Connection  # the connection to the checked address only
from ..pictures.fetch import _parse as parse_url  # http(s), no credentials, a host that is a name or an address
from ..store.callbacks import CallbackStore, Claimed
from ..store.image_store import ImageStore
from .jobs import dead_owners, run_owner

log = logging.getLogger("clip_gaze.callbacks")

HEADER = "X-Clip-Gaze-Signature"
BACKOFF = 10.0  # seconds before the second attempt; each wait doubles
MAX_DELAY = 600.0  # the longest wait between two attempts
WINDOW = 3600.0  # retried for this long after the first attempt
TIMEOUT = 10.0  # one attempt, connecting, sending and reading the answer's status
POLL = 2.0  # seconds between looks for due deliveries (a job ending in this process wakes them at once)
LEASE_MARGIN = 90.0  # a claim's lease lasts TIMEOUT and this (more than the store's 60 s busy timeout)
PARALLEL = 4  # attempts one process makes at once
TOLERANCE = 300  # seconds: how old a signature `verify` accepts by default
MAX_ERROR = 300  # characters of an attempt's error kept


def signature(secret: str, body: bytes, at: int | None = None) -> str:
    """The X-Clip-Gaze-Signature header's value for `body` sent at unix time `at` (now)."""
    t = int(time.time()) if at is None else int(at)
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(secret: str, header: str, body: bytes, tolerance: float = TOLERANCE, now: float | None = None) -> bool:
    """A receiver's check: the header was made with `secret` over `body`, at most `tolerance` seconds ago."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        t = int(fields["t"])
    except (ValueError, KeyError):
        return False
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    fresh = abs((time.time() if now is None else now) - t) <= tolerance
    return fresh and hmac.compare_digest(expected, fields.get("v1", ""))


@dataclass(frozen=True)
class CallbackPolicy:
    """What delivers callbacks: the fetch guard's policy and the signing secret ("": none, refused)."""

    fetch: FetchPolicy
    secret: str = ""


def check_url(url: str, policy: CallbackPolicy) -> None:
    """A callback URL a job may take: a secret to sign with, and a URL the fetch guard admits (its host
    resolved and checked now; again at each attempt). InvalidInput (422) otherwise."""
    if not policy.secret:
        raise InvalidInput("callback_url: this server signs no callbacks (CLIP_GAZE_WEBHOOK_SECRET is not set), so it "
                           "sends none; leave callback_url out, or ask its operator to set the secret",
                           code="no_webhook_secret", status=422)
    try:
        target = parse_url(url, url[:200])
        guard(target.host, target.port, policy.fetch, url)
    except FetchError as exc:
        raise InvalidInput(f"callback_url: {exc.message}", code=exc.code, status=422) from None


def post(url: str, body: bytes, headers: dict[str, str], policy: FetchPolicy, timeout: float) -> int:
    """POST `body` to `url` through the fetch guard, to the address checked, within `timeout` seconds:
    the answer's status (a redirect is answered, not followed). FetchError when there is no answer."""
    target = parse_url(url, url[:200])
    infos = guard(target.host, target.port, policy, url)
    conn = Connection(target, infos, time.monotonic() + timeout)
    try:
        conn.putrequest("POST", target.path, skip_accept_encoding=True)
        for name, value in (("User-Agent", USER_AGENT), ("Content-Type", "application/json"),
                            ("Content-Length", str(len(body))), ("Connection", "close"), *headers.items()):
            conn.putheader(name, value)
        conn.endheaders(body)
        response = conn.getresponse()
        response.read(64 * 1024)  # some of the answer, so the receiver is not cut off mid-write; the rest is dropped
        return int(response.status)
    except TimeoutError:
        raise FetchError(f"no answer within {timeout:g} s", url=url, code="fetch_timeout") from None
    except OSError as exc:
        raise FetchError(f"cannot deliver ({exc.strerror or type(exc).__name__})", url=url) from None
    except Exception as exc:  # http.client's errors: an answer that is not HTTP
        raise FetchError(f"no valid HTTP answer ({type(exc).__name__})", url=url) from None
    finally:
        conn.close()


def next_wait(attempt: int) -> float:
    """Seconds from a failed attempt `attempt` (1, 2, …) to the next."""
    return float(min(MAX_DELAY, BACKOFF * 2 ** (attempt - 1)))


class Deliveries:
    """The callbacks of one store, delivered by this process (`of`: one per process and store)."""

    _all: "weakref.WeakKeyDictionary[ImageStore, Deliveries]" = weakref.WeakKeyDictionary()
    _made = threading.Lock()

    def __init__(self, images: ImageStore):
        self.images = images
        self.store = CallbackStore(images)
        self.policy = CallbackPolicy(FetchPolicy())
        self.answer: Callable[[str], bytes] | None = None  # a job's answer, as GET /v1/jobs/<id> gives it
        self.owner = run_owner()
        self._pid = os.getpid()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._active: set[str] = set()
        self._lock = threading.Lock()

    @classmethod
    def of(cls, images: ImageStore) -> "Deliveries":
        with cls._made:
            found = cls._all.get(images)
            if found is None or found._pid != os.getpid():  # a forked worker delivers as itself
                found = cls._all[images] = cls(images)
            return found

    def configure(self, policy: CallbackPolicy, answer: Callable[[str], bytes]) -> None:
        self.policy, self.answer = policy, answer

    def check(self, url: str) -> None:
        check_url(url, self.policy)

    # -- the delivering thread --------------------------------------------------------------------
    def start(self) -> None:
        """Delivers what is due now and while this process runs (idempotent)."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stopping.clear()
            self._thread = threading.Thread(target=self._loop, name="clip-gaze-callbacks", daemon=True)
            self._thread.start()

    def wake(self, job_id: str | None = None) -> None:
        """A job ended (or an attempt did): look for due deliveries now."""
        self._wake.set()

    def stop(self, timeout: float = 0.0) -> None:
        """No attempt is started after; those in flight finish (or their claims lapse)."""
        self._stopping.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and timeout > 0:
            thread.join(timeout)

    def _loop(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    self.run_once()
                except Exception:  # a busy store: the next look tries again
                    log.warning("looking for due callbacks failed", exc_info=True)
                self._wake.wait(POLL)
                self._wake.clear()
        finally:
            self.images.store.close()  # this thread's connection

    def run_once(self) -> int:
        """Claims the attempts due (as many as there is room for) and starts each: how many started."""
        now = time.time()
        dead = dead_owners([o for o in self.store.owners() if o != self.owner])
        started = 0
        for job_id in self.store.due(now, dead):
            with self._lock:
                if self._stopping.is_set() or len(self._active) >= PARALLEL:
                    break
                if job_id in self._active:
                    continue
            claimed = self.store.claim(job_id, self.owner, now, now + TIMEOUT + LEASE_MARGIN, WINDOW, dead)
            if claimed is None:
                continue  # another process has it
            with self._lock:
                self._active.add(job_id)
            threading.Thread(target=self._attempt, args=(claimed,), name=f"clip-gaze-callback-{job_id}", daemon=True).start()
            started += 1
        return started

    def _attempt(self, claimed: Claimed) -> None:
        """One attempt, recorded with what follows it."""
        status: int | None = None
        error: str | None = None
        try:
            if not self.policy.secret:
                raise InvalidInput("CLIP_GAZE_WEBHOOK_SECRET is not set: nothing is sent unsigned")
            if self.answer is None:
                raise InvalidInput("this process cannot tell the job's answer")
            body = self.answer(claimed.job_id)
            status = post(claimed.url, body, {HEADER: signature(self.policy.secret, body)}, self.policy.fetch, TIMEOUT)
            if not 200 <= status < 300:
                error = f"answered {status}" + (" (a redirect: not followed)" if 300 <= status < 400 else "")
        except ClipGazeError as exc:
            error = exc.message
        except Exception as exc:  # recorded, never lost: the next attempt tries again
            log.warning("callback of job %s failed", claimed.job_id, exc_info=True)
            error = f"{type(exc).__name__}: {exc}"
        try:
            if error is None:
                state, next_at = "delivered", None
            else:
                next_at = time.time() + next_wait(claimed.attempt)
                state = "pending" if next_at <= claimed.until else "failed"
                next_at = next_at if state == "pending" else None
                log.info("callback of job %s, attempt %d: %s", claimed.job_id, claimed.attempt, error)
            if not self.store.record(claimed, self.owner, status, error and error[:MAX_ERROR], state, next_at):
                log.warning("callback of job %s: its claim lapsed before attempt %d was recorded", claimed.job_id,
                            claimed.attempt)
        except Exception:
            log.warning("recording the callback of job %s failed; its claim lapses and it is tried again",
                        claimed.job_id, exc_info=True)
        finally:
            with self._lock:
                self._active.discard(claimed.job_id)
            self.images.store.close()  # this thread's connection
            self._wake.set()


__all__ = ["BACKOFF", "HEADER", "MAX_DELAY", "POLL", "TIMEOUT", "WINDOW", "CallbackPolicy", "Deliveries", "check_url",
           "next_wait", "post", "signature", "verify"]
