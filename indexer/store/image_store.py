"""The image store: collections, their pictures, each picture's embedding per model, and jobs.

In the same SQLite database as the vocabularies (migration 002). A picture is keyed by the sha256 of
its bytes: its embedding is computed once per model, ever, whatever collection or request brings it.
A collection's pictures are keyed by their source (a path or URL): adding a source again is a no-op
for pictures already embedded with the model (a file that changed at its path aside: its size and
modification time are stored with it), so an interrupted run resumes where it stopped.

Beside them (migration 004): the claims adds in flight hold on the sources they read, and each job's
request, owner and lease (`collections.jobs` says how they are used).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import numpy.typing as npt

from ..errors import Conflict, NotFound
from .phrase_store import Store, insert_vectors, timestamp


@dataclass(frozen=True)
class CollectionRow:
    id: int
    name: str
    description: str
    version: int
    size: int  # pictures stored
    failed: int  # pictures that could not be read (with their reasons)
    created_at: str
    updated_at: str
    private: bool = False  # seen only by keys granted it (issue 23)


def unknown_collection(name: str) -> NotFound:
    """What asking for a collection that is not there answers (and, to a caller not granted it, a private one)."""
    return NotFound(f"no collection named {name!r} (see `clip-gaze collection show` or GET /v1/collections)",
                    code="unknown_collection")


def unknown_job(job_id: str) -> NotFound:
    """What asking for a job that is not there answers (and for one of a collection the caller may not see)."""
    return NotFound(f"no job {job_id!r}", code="unknown_job")


@dataclass(frozen=True)
class Picture:
    """A picture of a collection: where it came from, what it is, and its stored embedding's key."""

    source: str
    external_id: str | None = None
    metadata: dict[str, Any] | None = None
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    error_code: str | None = None
    error: str | None = None
    id: int = 0
    file_size: int | None = None  # a file's size and modification time when it was read (None: not a file)
    file_mtime_ns: int | None = None
    manifest: str | None = None  # the IIIF manifest the picture was read from (`PictureRef.manifest`; None: none)
    image_service: str | None = None  # its IIIF Image API service id, without /info.json (None: none)


@dataclass
class Vectors:
    """A chunk of a collection's pictures and their embeddings (rows of `matrix`)."""

    pictures: list[Picture] = field(default_factory=list)
    matrix: npt.NDArray[np.float32] = field(default_factory=lambda: np.empty((0, 0), dtype=np.float32))


@dataclass
class VectorColumns:
    """A chunk of a collection's embedded pictures as columns: what `collection analyze` writes of
    each picture, and the embeddings (rows of `matrix`)."""

    external_id: list[str | None]
    source: list[str]
    sha256: list[str]
    matrix: npt.NDArray[np.float32]


class ImageStore:
    def __init__(self, store: Store):
        self.store = store

    @property
    def db(self) -> Any:
        return self.store.db

    # -- collections ----------------------------------------------------------------------------
    def _row(self, r: Any) -> CollectionRow:
        return CollectionRow(id=r["id"], name=r["name"], description=r["description"], version=r["version"],
                             size=r["size"] or 0, failed=r["failed"] or 0, created_at=r["created_at"], updated_at=r["updated_at"],
                             private=bool(r["private"]))

    _SELECT = (
        "SELECT c.*, (SELECT count(*) FROM collection_images i WHERE i.collection_id = c.id AND i.sha256 IS NOT NULL) AS size, "
        "(SELECT count(*) FROM collection_images i WHERE i.collection_id = c.id AND i.sha256 IS NULL) AS failed FROM collections c"
    )

    def all(self) -> list[CollectionRow]:
        return [self._row(r) for r in self.db.query(self._SELECT + " ORDER BY c.name")]

    def find(self, name: str) -> CollectionRow | None:
        rows = list(self.db.query(self._SELECT + " WHERE c.name = ?", [name]))
        return self._row(rows[0]) if rows else None

    def local_span(self, name: str) -> tuple[str | None, str | None]:
        """The first and the last absolute local source of collection `name`, in text order ((None, None)
        for none or no such collection): the folder they share is every local source's
        (`pictures.sources.local_root`). Two lookups on the (collection_id, source) index."""
        found = self.db.execute(
            "SELECT (SELECT min(source) FROM collection_images WHERE collection_id = c.id AND source >= '/' AND source < '0'), "
            "(SELECT max(source) FROM collection_images WHERE collection_id = c.id AND source >= '/' AND source < '0') "
            "FROM collections c WHERE c.name = ?", [name]).fetchone()
        return (found[0], found[1]) if found else (None, None)

    def get(self, name: str) -> CollectionRow:
        row = self.find(name)
        if row is None:
            raise unknown_collection(name)
        return row

    def private(self, name: str) -> bool | None:
        """Whether collection `name` is private (None: there is none): one lookup on its unique name."""
        found = self.db.execute("SELECT private FROM collections WHERE name = ?", [name]).fetchone()
        return bool(found[0]) if found else None

    def create(self, name: str, description: str = "", private: bool = False) -> CollectionRow:
        with self.store.transaction() as db:
            if list(db.query("SELECT id FROM collections WHERE name = ?", [name])):
                raise Conflict(f"a collection named {name!r} already exists", code="collection_exists")
            now = timestamp()
            db.execute("INSERT INTO collections (name, description, version, created_at, updated_at, private) "
                       "VALUES (?, ?, 1, ?, ?, ?)", [name, description, now, now, int(private)])
        return self.get(name)

    def delete(self, name: str) -> CollectionRow:
        row = self.get(name)
        with self.store.transaction() as db:
            db.execute("DELETE FROM collection_images WHERE collection_id = ?", [row.id])
            db.execute("DELETE FROM collections WHERE id = ?", [row.id])
        return row

    # -- pictures ---------------------------------------------------------------------------------
    def embedded_sources(self, collection_id: int, model_key: str) -> set[str]:
        """Sources of the collection whose picture has an embedding for this model: nothing to redo."""
        return set(self.embedded_stats(collection_id, model_key))

    def embedded_stats(self, collection_id: int, model_key: str) -> dict[str, tuple[int | None, int | None]]:
        """`embedded_sources`, each with the size and modification time (ns) its file had when read
        (None, None for URLs and for pictures stored before they were kept)."""
        rows = self.db.execute(
            "SELECT i.source, i.file_size, i.file_mtime_ns FROM collection_images i JOIN image_embeddings e "
            "ON e.model = ? AND e.sha256 = i.sha256 WHERE i.collection_id = ?", [model_key, collection_id],
        )
        return {r[0]: (r[1], r[2]) for r in rows}

    def embedded_among(self, collection_id: int, model_key: str, sources: Sequence[str]) -> dict[str, tuple[int | None, int | None]]:
        """Those of `sources` stored in the collection with an embedding for the model, each with its
        file's size and modification time as stored."""
        return _embedded_among(self.db, collection_id, model_key, sources)

    def set_file_stats(self, collection_id: int, stats: Sequence[tuple[str, int, int]]) -> None:
        """(source, size, mtime_ns) of stored files that had none (stored before they were kept)."""
        if stats:
            with self.store.transaction() as db:
                db.conn.executemany("UPDATE collection_images SET file_size = ?, file_mtime_ns = ? WHERE collection_id = ? "
                                    "AND source = ?", [(size, mtime, collection_id, source) for source, size, mtime in stats])

    def record(self, collection_id: int, pictures: Sequence[Picture], model_key: str,
               embeddings: dict[str, npt.NDArray[np.float32]], claims: str | None = None,
               job: tuple[str, dict[str, Any], str | None] | None = None, kept: Sequence[str] = ()) -> bool:
        """One batch, one transaction: pictures (stored or failed, replacing what the source gave
        before) and the embeddings of new content. A run killed between batches keeps whole batches.
        In the same transaction: the `claims` owner's claims on these sources (and on `kept`, sources
        read in vain whose stored rows stay as they are) go, and `job` (its id, counts and the owner it
        is updated for: None, any) is updated, so a job's counts are always those of what is stored.
        False when that owner no longer holds the job (its pictures are stored all the same)."""
        held = True
        if not pictures and not kept:
            return held
        now = timestamp()
        with self.store.transaction() as db:
            _insert_embeddings(db, model_key, embeddings)
            db.conn.executemany(
                "INSERT INTO collection_images (collection_id, source, external_id, sha256, width, height, metadata, "
                "error_code, error, added_at, file_size, file_mtime_ns, manifest, image_service) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (collection_id, source) DO UPDATE SET "
                "external_id = excluded.external_id, sha256 = excluded.sha256, width = excluded.width, height = excluded.height, "
                "metadata = excluded.metadata, error_code = excluded.error_code, error = excluded.error, added_at = excluded.added_at, "
                "file_size = excluded.file_size, file_mtime_ns = excluded.file_mtime_ns, manifest = excluded.manifest, "
                "image_service = excluded.image_service",
                [(collection_id, p.source, p.external_id, p.sha256, p.width, p.height,
                  json.dumps(p.metadata, ensure_ascii=False) if p.metadata else None, p.error_code, p.error, now,
                  p.file_size, p.file_mtime_ns, p.manifest, p.image_service) for p in pictures],
            )
            if claims is not None:
                db.conn.executemany("DELETE FROM add_claims WHERE collection_id = ? AND source = ? AND owner = ?",
                                    [(collection_id, source, claims) for source in (*kept, *(p.source for p in pictures))])
            if job is not None:
                held = _update_job(db, job[0], job[1], job[2])
            if any(p.sha256 for p in pictures):
                db.execute("UPDATE collections SET version = version + 1, updated_at = ? WHERE id = ?", [now, collection_id])
        return held

    def relabel(self, collection_id: int, pictures: Sequence[Picture]) -> int:
        """Stored pictures named again (a rerun, a catalogue file): their external id, metadata and IIIF
        provenance (manifest, image service) follow the latest source; nothing is read or encoded
        again. Returns how many changed."""
        if not pictures:
            return 0
        with self.store.transaction() as db:
            changes = db.conn.total_changes
            db.conn.executemany(
                "UPDATE collection_images SET external_id = ?, metadata = ?, manifest = ?, image_service = ? "
                "WHERE collection_id = ? AND source = ? "
                "AND (external_id IS NOT ? OR metadata IS NOT ? OR manifest IS NOT ? OR image_service IS NOT ?)",
                [(p.external_id, m, p.manifest, p.image_service, collection_id, p.source, p.external_id, m, p.manifest,
                  p.image_service)
                 for p in pictures for m in [json.dumps(p.metadata, ensure_ascii=False) if p.metadata else None]],
            )
            return int(db.conn.total_changes - changes)

    def pictures(self, collection_id: int, errors: bool = False, offset: int = 0, limit: int = 100) -> list[Picture]:
        where = "sha256 IS NULL" if errors else "sha256 IS NOT NULL"
        rows = self.db.query(
            f"SELECT * FROM collection_images WHERE collection_id = ? AND {where} ORDER BY id LIMIT ? OFFSET ?",
            [collection_id, limit, offset],
        )
        return [_picture(r) for r in rows]

    def by_manifest(self, collection_id: int, manifest: str) -> list[Picture]:
        """The collection's pictures (stored or failed) read from IIIF manifest `manifest`, in order."""
        rows = self.db.query("SELECT * FROM collection_images WHERE collection_id = ? AND manifest = ? ORDER BY id",
                             [collection_id, manifest])
        return [_picture(r) for r in rows]

    def manifests(self, collection_id: int) -> list[str]:
        """The IIIF manifests the collection's pictures were read from, in text order."""
        rows = self.db.execute("SELECT DISTINCT manifest FROM collection_images WHERE collection_id = ? "
                               "AND manifest IS NOT NULL ORDER BY manifest", [collection_id])
        return [r[0] for r in rows]

    # -- embeddings -------------------------------------------------------------------------------
    def cached(self, model_key: str, shas: Sequence[str]) -> dict[str, npt.NDArray[np.float32]]:
        return self.store.stored_vectors("image_embeddings", "sha256", model_key, shas)

    def put(self, model_key: str, embeddings: dict[str, npt.NDArray[np.float32]]) -> None:
        with self.store.transaction() as db:
            _insert_embeddings(db, model_key, embeddings)

    def count_unembedded(self, collection_id: int, model_key: str) -> int:
        """Stored pictures of the collection that have no embedding for this model (added with another)."""
        return int(self.db.execute(
            "SELECT count(*) FROM collection_images i WHERE i.collection_id = ? AND i.sha256 IS NOT NULL AND NOT EXISTS "
            "(SELECT 1 FROM image_embeddings e INDEXED BY image_embeddings_keys WHERE e.model = ? AND e.sha256 = i.sha256)",
            [collection_id, model_key],
        ).fetchone()[0])

    def vectors(self, collection_id: int, model_key: str, chunk: int = 8192) -> Iterator[Vectors]:
        """The collection's pictures with their embeddings for the model, `chunk` at a time, in order."""
        for names, rows, matrix in self._embedded_rows("i.*", collection_id, model_key, chunk):
            yield Vectors([_picture(dict(zip(names, r))) for r in rows], matrix)

    def vector_columns(self, collection_id: int, model_key: str, chunk: int = 8192) -> Iterator[VectorColumns]:
        """`vectors` with only what analysis writes of each picture, as columns (no `Picture` built)."""
        for _, rows, matrix in self._embedded_rows("i.external_id, i.source, i.sha256", collection_id, model_key, chunk):
            yield VectorColumns([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], matrix)

    def _embedded_rows(self, columns: str, collection_id: int, model_key: str, chunk: int
                       ) -> Iterator[tuple[list[str], list[Any], npt.NDArray[np.float32]]]:
        """The column names, the rows (`columns` of collection_images, then the id) and the embeddings as
        a matrix, `chunk` rows at a time in id order. `+i.collection_id` keeps SQLite off the
        (collection_id, …) indexes: through one of them it read and joined every remaining picture of the
        collection and sorted them, for every chunk (quadratic: 4.3 of the 6.6 s that analysing 100,000
        pictures took). It walks the primary key instead, between the collection's first and last ids
        (found once through an index), so a whole pass visits each row of that span once."""
        first, end = self.db.execute("SELECT min(id), max(id) FROM collection_images WHERE collection_id = ?",
                                     [collection_id]).fetchone()
        if first is None:
            return
        last = first - 1
        while last < end:
            cursor = self.db.execute(
                f"SELECT {columns}, i.id, e.vector FROM collection_images i JOIN image_embeddings e "
                "ON e.model = ? AND e.sha256 = i.sha256 WHERE +i.collection_id = ? AND i.id > ? AND i.id <= ? "
                "ORDER BY i.id LIMIT ?",
                [model_key, collection_id, last, end, chunk],
            )
            rows = cursor.fetchall()
            if not rows:
                return
            last = rows[-1][-2]
            matrix = np.frombuffer(b"".join([r[-1] for r in rows]), dtype=np.float32).reshape(len(rows), -1)
            rows = [r[:-1] for r in rows]  # the embeddings' own bytes go: the matrix holds a copy
            yield [d[0] for d in cursor.description], rows, matrix

    # -- claims: the sources adds in flight are reading ----------------------------------------
    def claim(self, collection_id: int, sources: Sequence[str], owner: str, until: float, now: float,
              dead: Sequence[str] = (), model_key: str | None = None,
              fresh: Callable[[str, tuple[int | None, int | None]], bool] | None = None) -> tuple[set[str], set[str]]:
        """In one transaction: of `sources`, those now stored with an embedding for `model_key` (and
        `fresh`, given the stored file size and time) are not claimed; the others are claimed for
        `owner` (an add run) until `until`, over claims whose lease passed or whose owner is `dead`.
        Returns those another live run holds (it reads them, not this one) and those stored."""
        with self.store.transaction() as db:
            db.execute("DELETE FROM add_claims WHERE collection_id = ? AND lease_until < ?", [collection_id, now])
            db.conn.executemany("DELETE FROM add_claims WHERE owner = ?", [(d,) for d in dead])
            stored = set()
            if model_key is not None:
                stored = {s for s, stat in _embedded_among(db, collection_id, model_key, sources).items()
                          if fresh is None or fresh(s, stat)}
            wanted = [s for s in sources if s not in stored]
            db.conn.executemany("INSERT OR IGNORE INTO add_claims (collection_id, source, owner, lease_until) VALUES (?, ?, ?, ?)",
                                [(collection_id, s, owner, until) for s in wanted])
            rows = db.execute("SELECT source FROM add_claims WHERE collection_id = ? AND owner != ?", [collection_id, owner])
            keep = set(wanted)
            return {r[0] for r in rows if r[0] in keep}, stored

    def claimed(self, collection_id: int, now: float) -> dict[str, str]:
        """The collection's live claims: source → owner."""
        rows = self.db.execute("SELECT source, owner FROM add_claims WHERE collection_id = ? AND lease_until >= ?",
                               [collection_id, now])
        return {r[0]: r[1] for r in rows}

    def claim_owners(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT owner FROM add_claims")]

    def release_claims(self, owner: str) -> None:
        with self.store.transaction() as db:
            db.execute("DELETE FROM add_claims WHERE owner = ?", [owner])

    def renew(self, owners: Sequence[str], until: float) -> None:
        """The leases of these owners' claims and running jobs, renewed until `until` (a heartbeat)."""
        if owners:
            with self.store.transaction() as db:
                db.conn.executemany("UPDATE add_claims SET lease_until = ? WHERE owner = ?", [(until, o) for o in owners])
                db.conn.executemany("UPDATE jobs SET lease_until = ? WHERE owner = ? AND state IN ('queued', 'running')",
                                    [(until, o) for o in owners])

    # -- jobs -------------------------------------------------------------------------------------
    def create_job(self, kind: str, collection: str | None, request: str | None = None, owner: str | None = None,
                   lease_until: float | None = None, callback_url: str | None = None) -> str:
        """A job queued; with `callback_url`, its answer is POSTed there when it ends (`store.callbacks`)."""
        job_id, now, cb = secrets.token_hex(8), timestamp(), "pending" if callback_url else None
        with self.store.transaction() as db:
            db.execute("INSERT INTO jobs (id, kind, collection, state, created_at, updated_at, request, owner, lease_until, callback_url, "
                       "callback_state) VALUES (?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?)",
                       [job_id, kind, collection, now, now, request, owner, lease_until, callback_url, cb])
        return job_id

    def update_job(self, job_id: str, held_by: str | None = None, **fields: Any) -> bool:
        """The job's `fields` written; with `held_by`, only while that owner holds it (a run writes
        its job only so): False when it does not (another worker took it, or it was handed back)."""
        with self.store.transaction() as db:
            return _update_job(db, job_id, fields, held_by)

    def job_owner(self, job_id: str) -> str | None:
        row = self.db.execute("SELECT owner FROM jobs WHERE id = ?", [job_id]).fetchone()
        return row[0] if row else None

    def unowned_jobs(self, now: float, dead: Sequence[str] = (), alive: Sequence[str] = ()) -> list[str]:
        """Jobs queued or running that no live worker owns: no owner, a dead owner, or a lease passed
        of an owner not known `alive` (a live owner's job is never taken, whatever its lease)."""
        where, args = _unowned(now, dead, alive)
        rows = self.db.execute(f"SELECT id FROM jobs WHERE state IN ('queued', 'running') AND {where} ORDER BY created_at",
                               args)
        return [r[0] for r in rows]

    def job_owners(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT owner FROM jobs WHERE state IN ('queued', 'running') "
                                              "AND owner IS NOT NULL")]

    def take_job(self, job_id: str, now: float, dead: Sequence[str], fields: dict[str, Any],
                 owner: str | None = None, resumed: bool = False, alive: Sequence[str] = ()) -> bool:
        """Atomically: a job no live worker owns (as `unowned_jobs`) takes `fields` (and `owner`'s
        claim on it, `resumed` + 1 if resumed); False if another worker owns it (or took it first) or
        it has ended."""
        sets = "".join(f"{k} = ?, " for k in fields) + ("resumed = resumed + 1, " if resumed else "")
        where, args = _unowned(now, dead, alive)
        with self.store.transaction() as db:
            cur = db.execute(
                f"UPDATE jobs SET {sets}owner = ?, updated_at = ? WHERE id = ? AND state IN ('queued', 'running') AND {where}",
                [*fields.values(), owner, timestamp(), job_id, *args])
            return bool(cur.rowcount == 1)

    def release_job(self, job_id: str, owner: str) -> bool:
        """A job `owner` holds, handed back: queued with no owner (the next worker to look resumes it)."""
        with self.store.transaction() as db:
            cur = db.execute("UPDATE jobs SET state = 'queued', owner = NULL, lease_until = NULL, updated_at = ? "
                             "WHERE id = ? AND owner = ? AND state IN ('queued', 'running')", [timestamp(), job_id, owner])
            return bool(cur.rowcount == 1)

    def job(self, job_id: str) -> dict[str, Any]:
        rows = list(self.db.query("SELECT * FROM jobs WHERE id = ?", [job_id]))
        if not rows:
            raise unknown_job(job_id)
        return rows[0]


def _embedded_among(db: Any, collection_id: int, model_key: str, sources: Sequence[str]
                    ) -> dict[str, tuple[int | None, int | None]]:
    found: dict[str, tuple[int | None, int | None]] = {}
    for start in range(0, len(sources), 500):
        part = list(sources[start:start + 500])
        rows = db.execute(
            "SELECT i.source, i.file_size, i.file_mtime_ns FROM collection_images i JOIN image_embeddings e ON e.model = ? "
            f"AND e.sha256 = i.sha256 WHERE i.collection_id = ? AND i.source IN ({', '.join('?' for _ in part)})",
            [model_key, collection_id, *part])
        found.update((r[0], (r[1], r[2])) for r in rows)
    return found


def _update_job(db: Any, job_id: str, fields: dict[str, Any], held_by: str | None = None) -> bool:
    sets = "".join(f"{k} = ?, " for k in fields)
    held = " AND owner = ?" if held_by is not None else ""
    cur = db.execute(f"UPDATE jobs SET {sets}updated_at = ? WHERE id = ?{held}",
                     [*fields.values(), timestamp(), job_id, *([held_by] if held_by is not None else [])])
    return bool(cur.rowcount == 1)


def _unowned(now: float, dead: Sequence[str], alive: Sequence[str]) -> tuple[str, list[Any]]:
    """The condition on a job row that no live worker owns it, and its arguments."""
    dead_marks = ", ".join("?" for _ in dead) or "NULL"
    spared = f" AND owner NOT IN ({', '.join('?' for _ in alive)})" if alive else ""
    return (f"(owner IS NULL OR owner IN ({dead_marks}) OR ((lease_until IS NULL OR lease_until < ?){spared}))",
            [*dead, now, *alive])


def _insert_embeddings(db: Any, model_key: str, embeddings: dict[str, npt.NDArray[np.float32]]) -> None:
    """Inside a write: pictures' embeddings by content hash (one already stored is kept)."""
    insert_vectors(db, "image_embeddings", "sha256", model_key, embeddings.items())


def _picture(r: Any) -> Picture:
    return Picture(
        source=r["source"], external_id=r["external_id"], metadata=json.loads(r["metadata"]) if r["metadata"] else None,
        sha256=r["sha256"], width=r["width"], height=r["height"], error_code=r["error_code"], error=r["error"], id=r["id"],
        file_size=r.get("file_size"), file_mtime_ns=r.get("file_mtime_ns"), manifest=r.get("manifest"),
        image_service=r.get("image_service"),
    )
