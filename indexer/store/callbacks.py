"""Job callbacks in the store (migration 007): each job's `callback_url` and its delivery, and every
attempt (`callback_attempts`). `collections.callbacks` says how they are used.

A job created with a callback has `callback_state` 'pending'; the delivery is due once the job has
ended (done, failed, interrupted) and `callback_next` (unix seconds; NULL: at once) has come. A
process delivers an attempt only after claiming it (one UPDATE … WHERE no one holds it, or its holder's
lease passed or its process is gone: one process wins), and records it only while it still holds it;
`callback_until` is set at the first claim (the first attempt plus the retry window). States:
'pending', 'delivered' (a 2xx came), 'failed' (the window passed).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any, Sequence

from .image_store import ImageStore
from .phrase_store import timestamp

ENDED = ("done", "failed", "interrupted")
_ENDED_SQL = ", ".join(f"'{s}'" for s in ENDED)


@dataclass(frozen=True)
class Claimed:
    """An attempt claimed: the job, its URL, and the attempt's number (1 for the first)."""

    job_id: str
    url: str
    attempt: int
    until: float  # give up after this (unix seconds)


def _due(now: float, dead: Sequence[str]) -> tuple[str, list[Any]]:
    dead_marks = ", ".join("?" for _ in dead) or "NULL"
    return (f"callback_state = 'pending' AND callback_url IS NOT NULL AND state IN ({_ENDED_SQL}) "
            "AND (callback_next IS NULL OR callback_next <= ?) "
            f"AND (callback_owner IS NULL OR callback_lease IS NULL OR callback_lease < ? OR callback_owner IN ({dead_marks}))",
            [now, now, *dead])


class CallbackStore:
    """The callbacks of one image store's jobs."""

    def __init__(self, images: ImageStore):
        self.images = images

    def owners(self) -> list[str]:
        """Processes holding a delivery now (to tell those whose process is gone)."""
        return [r[0] for r in self.images.db.execute(
            "SELECT DISTINCT callback_owner FROM jobs WHERE callback_state = 'pending' AND callback_owner IS NOT NULL")]

    def due(self, now: float, dead: Sequence[str] = (), limit: int = 64) -> list[str]:
        """Jobs whose delivery is due and that no live process holds, the longest waiting first."""
        where, args = _due(now, dead)
        rows = self.images.db.execute(f"SELECT id FROM jobs WHERE {where} ORDER BY coalesce(callback_next, 0), updated_at "
                                      "LIMIT ?", [*args, limit])
        return [r[0] for r in rows]

    def claim(self, job_id: str, owner: str, now: float, lease: float, window: float,
              dead: Sequence[str] = ()) -> Claimed | None:
        """Atomically: the job's next attempt, held by `owner` until `lease` (unix seconds); None when
        it is not due or another process holds it."""
        where, args = _due(now, dead)
        with self.images.store.transaction() as db:
            cur = db.execute(f"UPDATE jobs SET callback_owner = ?, callback_lease = ?, "
                             f"callback_until = coalesce(callback_until, ?) WHERE id = ? AND {where}",
                             [owner, lease, now + window, job_id, *args])
            if cur.rowcount != 1:
                return None
            url, until = db.execute("SELECT callback_url, callback_until FROM jobs WHERE id = ?", [job_id]).fetchone()
            attempt = db.execute("SELECT coalesce(max(attempt), 0) + 1 FROM callback_attempts WHERE job_id = ?",
                                 [job_id]).fetchone()[0]
        return Claimed(job_id, str(url), int(attempt), float(until))

    def record(self, claimed: Claimed, owner: str, status: int | None, error: str | None, state: str,
               next_at: float | None = None) -> bool:
        """The attempt and what follows it ('delivered', 'failed', or 'pending' again at `next_at`),
        written only while `owner` still holds it: False when it does not (nothing written)."""
        with self.images.store.transaction() as db:
            cur = db.execute("UPDATE jobs SET callback_state = ?, callback_next = ?, callback_owner = NULL, "
                             "callback_lease = NULL WHERE id = ? AND callback_owner = ? AND callback_state = 'pending'",
                             [state, next_at, claimed.job_id, owner])
            if cur.rowcount != 1:
                return False
            db.execute("INSERT OR REPLACE INTO callback_attempts (job_id, attempt, at, status, error) VALUES (?, ?, ?, ?, ?)",
                       [claimed.job_id, claimed.attempt, timestamp(), status, error])
        return True

    def attempts(self, job_id: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self.images.db.query(
            "SELECT attempt, at, status, error FROM callback_attempts WHERE job_id = ? ORDER BY attempt", [job_id])]


def callback_info(images: ImageStore, row: dict[str, Any]) -> dict[str, Any] | None:
    """A job row's callback as `schema.collections.CallbackInfo` takes it (None: the job has none)."""
    url = row.get("callback_url")
    if not url:
        return None
    count, last = images.db.execute(
        "SELECT count(*), max(attempt) FROM callback_attempts WHERE job_id = ?", [row["id"]]).fetchone()
    status = error = None
    if last is not None:
        status, error = images.db.execute("SELECT status, error FROM callback_attempts WHERE job_id = ? AND attempt = ?",
                                          [row["id"], last]).fetchone()
    state = row.get("callback_state") or "pending"
    if state == "pending" and row.get("state") not in ENDED:
        state = "waiting"
    nxt = row.get("callback_next")
    next_attempt = None
    if state == "pending" and isinstance(nxt, (int, float)):
        next_attempt = datetime.datetime.fromtimestamp(nxt, datetime.timezone.utc).isoformat(timespec="seconds")
    return {"url": url, "state": state, "attempts": int(count), "last_status": status, "last_error": error,
            "next_attempt": next_attempt}


__all__ = ["CallbackStore", "Claimed", "ENDED", "callback_info"]
