"""The audit trail (migration 008): every write the service accepted, with the key that made it, when,
from where, and what it asked (method and path; never a body, a query or a credential)."""

from __future__ import annotations

from datetime import timezone

from ..schema.access import AuditEntry, AuditList
from .keys import parse_time
from .phrase_store import Store, timestamp


class Audit:
    def __init__(self, store: Store):
        self.store = store

    def record(self, key: str, method: str, path: str, status: int, address: str | None = None) -> None:
        with self.store.transaction() as db:
            db.execute("INSERT INTO audit (at, key, address, method, path, status) VALUES (?, ?, ?, ?, ?, ?)",
                       [timestamp(), key, address, method, path[:2000], status])

    def entries(self, since: str | None = None, after: int = 0, limit: int = 100) -> AuditList:
        """Oldest first: those at or after `since` (ISO 8601), with an id above `after`."""
        where: list[str] = ["id > ?"]
        args: list[object] = [after]
        if since:
            where.append("at >= ?")
            args.append(_utc(since))
        rows = list(self.store.db.query(f"SELECT * FROM audit WHERE {' AND '.join(where)} ORDER BY id LIMIT ?",
                                        [*args, limit + 1]))
        entries = [AuditEntry(id=r["id"], at=r["at"], key=r["key"], address=r["address"], method=r["method"],
                              path=r["path"], status=r["status"]) for r in rows[:limit]]
        return AuditList(entries=entries, next_after=entries[-1].id if len(rows) > limit else None)


def _utc(text: str) -> str:
    """As `timestamp()` writes times (UTC, to the second), so that text order is time order."""
    return parse_time(text, "since").astimezone(timezone.utc).isoformat(timespec="seconds")


__all__ = ["Audit"]
