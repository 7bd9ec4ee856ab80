"""The store: SQLite (through sqlite-utils), the source of truth, and its vocabularies.

`Store` owns the data directory's database: a connection per thread, numbered migrations applied
once, and `transaction()`, the one way anything writes (a `BEGIN IMMEDIATE` transaction, so concurrent
writers queue). It holds vocabularies, their phrases (term, phrase text, external id, metadata) and
each phrase's embedding per model (float32 BLOB keyed by model and exact phrase text, so nothing is
embedded twice); every write of a vocabulary bumps its version. Collections live beside them in the
same database (`image_store`), the FAISS index files derived from them in `index_files`.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from ..catalog import LANGUAGE_KEY_SEPARATOR, BuiltinVocabulary, PhraseSpec, phrase_key, reads_languages
from ..errors import Conflict, NotFound, ReadOnly
from .migrations import migrations
from .sqlite import sqlite_utils


@dataclass(frozen=True)
class VocabularyRow:
    id: int
    name: str
    description: str
    templates: tuple[str, ...]
    builtin: bool
    source: str | None
    licence: str | None
    version: int
    size: int
    private: bool = False  # seen only by keys granted it (issue 23)


@dataclass(frozen=True)
class WriteResult:
    vocabulary: str
    added: int = 0
    removed: int = 0
    unchanged: int = 0
    version: int = 0


def timestamp() -> str:
    """Now, as every row stores it: UTC, ISO 8601, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Store:
    """SQLite store plus FAISS index files under one data directory. Safe across threads and processes."""

    def __init__(self, home: Path | str):
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        self.path = self.home / "clip-gaze.db"
        self._local = threading.local()
        if migrations.pending(self.db):
            with self.transaction() as db:  # under the write lock: concurrent workers apply them once
                migrations.apply(db)

    # -- connections and transactions -----------------------------------------------------------
    @property
    def db(self) -> sqlite_utils.Database:
        db = getattr(self._local, "db", None)
        if db is None:
            conn = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=60000")
            db = sqlite_utils.Database(conn)
            self._local.db = db
        return db

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.conn.close()
            self._local.db = None

    @contextmanager
    def transaction(self) -> Iterator[sqlite_utils.Database]:
        """One write transaction on this thread's connection; takes the write lock up front so
        concurrent writers (threads or processes) queue. Rolled back on any error."""
        db = self.db
        db.conn.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            if db.conn.in_transaction:
                db.conn.execute("ROLLBACK")
            raise
        else:
            db.conn.execute("COMMIT")

    # -- vocabularies ---------------------------------------------------------------------------
    def _row(self, r: Mapping[str, Any], size: int) -> VocabularyRow:
        return VocabularyRow(
            id=r["id"], name=r["name"], description=r["description"], templates=tuple(json.loads(r["templates"])),
            builtin=bool(r["builtin"]), source=r["source"], licence=r["licence"], version=r["version"], size=size,
            private=bool(r["private"]),
        )

    def list_vocabularies(self) -> list[VocabularyRow]:
        rows = self.db.query(
            "SELECT v.*, (SELECT count(*) FROM phrases p WHERE p.vocabulary_id = v.id) AS size "
            "FROM vocabularies v ORDER BY v.builtin DESC, v.name"
        )
        return [self._row(r, r["size"]) for r in rows]

    def find_vocabulary(self, name: str) -> VocabularyRow | None:
        rows = list(self.db.query("SELECT * FROM vocabularies WHERE name = ?", [name]))
        if not rows:
            return None
        size = self.db.execute("SELECT count(*) FROM phrases WHERE vocabulary_id = ?", [rows[0]["id"]]).fetchone()[0]
        return self._row(rows[0], size)

    def get_vocabulary(self, name: str) -> VocabularyRow:
        row = self.find_vocabulary(name)
        if row is None:
            raise NotFound(f"no vocabulary named {name!r} (see `clip-gaze vocab list`)", code="unknown_vocabulary")
        return row

    def private_vocabularies(self) -> set[str]:
        """Names of the private vocabularies (few, and read per request that names vocabularies)."""
        return {r[0] for r in self.db.execute("SELECT name FROM vocabularies WHERE private = 1")}

    def versions(self) -> dict[str, tuple[int, int]]:
        """name → (id, version) of every vocabulary: one cheap query, for refreshing caches."""
        return {r[0]: (r[1], r[2]) for r in self.db.execute("SELECT name, id, version FROM vocabularies")}

    def phrases_page(self, name: str, offset: int = 0, limit: int = 100) -> tuple[list[dict[str, Any]], int | None]:
        vocab = self.get_vocabulary(name)
        rows = list(
            self.db.query(
                "SELECT id, term, phrase, external_id, metadata, language FROM phrases WHERE vocabulary_id = ? "
                "ORDER BY id LIMIT ? OFFSET ?",
                [vocab.id, limit + 1, offset],
            )
        )
        more = len(rows) > limit
        page = [_phrase_json(r) for r in rows[:limit]]
        return page, (offset + limit if more else None)

    def phrase_rows(self, ids: Sequence[int] | npt.NDArray[np.int64]) -> dict[int, dict[str, Any]]:
        if not len(ids):
            return {}
        marks = ",".join("?" * len(ids))
        rows = self.db.query(f"SELECT id, term, phrase, external_id, metadata, language FROM phrases WHERE id IN ({marks})", [int(i) for i in ids])
        return {r["id"]: _phrase_json(r) for r in rows}

    def phrase_languages(self, vocabulary_id: int) -> dict[int, str]:
        """Phrase id → language of the phrases of a vocabulary that have one."""
        rows = self.db.execute("SELECT id, language FROM phrases WHERE vocabulary_id = ? AND language IS NOT NULL",
                               [vocabulary_id])
        return {int(i): str(lang) for i, lang in rows}

    def phrase_texts(self, vocabulary_id: int, model_key: str = "") -> list[str]:
        """Every phrase text of a vocabulary, in row order (for a model that reads languages, its keys)."""
        return [r[0] for r in self.db.execute(f"SELECT {_key_sql(model_key)} FROM phrases p WHERE vocabulary_id = ? "
                                              "ORDER BY id", [vocabulary_id])]

    def sync_builtin(self, builtin: BuiltinVocabulary) -> bool:
        """Make the stored copy of a built-in vocabulary match its list file. True if it changed."""
        phrases = builtin.phrases()
        digest = hashlib.sha256(
            json.dumps([builtin.templates, [(p.term, p.phrase) for p in phrases]], ensure_ascii=False).encode()
        ).hexdigest()
        current = list(self.db.query("SELECT id, content_hash FROM vocabularies WHERE name = ?", [builtin.name]))
        if current and current[0]["content_hash"] == digest:
            return False
        with self.transaction() as db:
            existing = list(db.query("SELECT id, content_hash, builtin FROM vocabularies WHERE name = ?", [builtin.name]))
            if existing and existing[0]["content_hash"] == digest:
                return False
            if existing and not existing[0]["builtin"]:
                raise Conflict(f"a custom vocabulary is named {builtin.name!r}, the name of a built-in one")
            now = timestamp()
            fields = dict(description=builtin.description, templates=json.dumps(list(builtin.templates)), builtin=1,
                          source=builtin.source, licence=builtin.licence, content_hash=digest, updated_at=now)
            if existing:
                vid = existing[0]["id"]
                db.execute("DELETE FROM phrases WHERE vocabulary_id = ?", [vid])
                db.execute(
                    "UPDATE vocabularies SET description=:description, templates=:templates, builtin=:builtin, "
                    "source=:source, licence=:licence, content_hash=:content_hash, updated_at=:updated_at, "
                    "version = version + 1 WHERE id = :id",
                    {**fields, "id": vid},
                )
            else:
                vid = db.table("vocabularies").insert({"name": builtin.name, "version": 1, "created_at": now, **fields}).last_pk
            # One prepared statement for every row (sqlite-utils' insert_all builds and binds each row in
            # Python first: two thirds of a first start's sync of the built-in lists).
            db.conn.executemany("INSERT INTO phrases (vocabulary_id, term, phrase) VALUES (?, ?, ?)",
                                ((vid, p.term, p.phrase) for p in phrases))
        return True

    def create_vocabulary(
        self,
        name: str,
        templates: Sequence[str],
        description: str = "",
        phrases: Sequence[PhraseSpec] = (),
        model_key: str | None = None,
        embeddings: npt.NDArray[np.float32] | None = None,
        private: bool = False,
    ) -> WriteResult:
        """Create a custom vocabulary with its phrases (and their embeddings): one transaction, version 1."""
        with self.transaction() as db:
            if list(db.query("SELECT id FROM vocabularies WHERE name = ?", [name])):
                raise Conflict(f"a vocabulary named {name!r} already exists", code="vocabulary_exists")
            now = timestamp()
            vid = db.table("vocabularies").insert(
                {"name": name, "description": description, "templates": json.dumps(list(templates)),
                 "builtin": 0, "version": 1, "created_at": now, "updated_at": now, "private": int(private)}
            ).last_pk
            assert vid is not None
            added = self._insert_phrases(db, int(vid), phrases, model_key, embeddings)
        return WriteResult(name, added=added, unchanged=len(phrases) - added, version=1)

    def _insert_phrases(
        self,
        db: sqlite_utils.Database,
        vocabulary_id: int,
        phrases: Sequence[PhraseSpec],
        model_key: str | None,
        embeddings: npt.NDArray[np.float32] | None,
    ) -> int:
        """Inside a write: insert phrases (existing ones ignored) and embeddings; returns how many were new."""
        if model_key is not None and embeddings is not None and len(phrases):
            self._put_embeddings(db, model_key, [spec_key(model_key, p) for p in phrases], embeddings)
        before = db.execute("SELECT count(*) FROM phrases WHERE vocabulary_id = ?", [vocabulary_id]).fetchone()[0]
        db.conn.executemany(
            "INSERT OR IGNORE INTO phrases (vocabulary_id, term, phrase, external_id, metadata, language) VALUES (?, ?, ?, ?, ?, ?)",
            [
                (vocabulary_id, p.term, p.phrase, p.external_id,
                 json.dumps(p.metadata, ensure_ascii=False) if p.metadata is not None else None, p.language)
                for p in phrases
            ],
        )
        after = db.execute("SELECT count(*) FROM phrases WHERE vocabulary_id = ?", [vocabulary_id]).fetchone()[0]
        return int(after - before)

    def _writable(self, db: sqlite_utils.Database, name: str) -> dict[str, Any]:
        rows = list(db.query("SELECT id, builtin, version FROM vocabularies WHERE name = ?", [name]))
        if not rows:
            raise NotFound(f"no vocabulary named {name!r}", code="unknown_vocabulary")
        if rows[0]["builtin"]:
            raise ReadOnly(f"{name!r} is a built-in vocabulary and cannot be changed; create your own with `vocab create`")
        return rows[0]

    def add_phrases(
        self,
        name: str,
        phrases: Sequence[PhraseSpec],
        model_key: str | None = None,
        embeddings: npt.NDArray[np.float32] | None = None,
    ) -> WriteResult:
        """Add phrases (already templated) and, optionally, their embeddings for one model: one
        transaction. Re-adding a phrase is a no-op; the version bumps only if something changed."""
        with self.transaction() as db:
            vocab = self._writable(db, name)
            added = self._insert_phrases(db, vocab["id"], phrases, model_key, embeddings)
            version = vocab["version"]
            if added:
                version += 1
                db.execute("UPDATE vocabularies SET version = ?, updated_at = ? WHERE id = ?", [version, timestamp(), vocab["id"]])
        return WriteResult(name, added=added, unchanged=len(phrases) - added, version=version)

    def remove_phrases(self, name: str, terms: Sequence[str] = (), external_ids: Sequence[str] = ()) -> WriteResult:
        with self.transaction() as db:
            vocab = self._writable(db, name)
            removed = 0
            for column, values in (("term", terms), ("external_id", external_ids)):
                for value in values:
                    removed += db.execute(
                        f"DELETE FROM phrases WHERE vocabulary_id = ? AND {column} = ?", [vocab["id"], value]
                    ).rowcount
            version = vocab["version"]
            if removed:
                version += 1
                db.execute("UPDATE vocabularies SET version = ?, updated_at = ? WHERE id = ?", [version, timestamp(), vocab["id"]])
        return WriteResult(name, removed=removed, version=version)

    def delete_vocabulary(self, name: str) -> WriteResult:
        with self.transaction() as db:
            vocab = self._writable(db, name)
            size = db.execute("SELECT count(*) FROM phrases WHERE vocabulary_id = ?", [vocab["id"]]).fetchone()[0]
            db.execute("DELETE FROM phrases WHERE vocabulary_id = ?", [vocab["id"]])
            db.execute("DELETE FROM vocabularies WHERE id = ?", [vocab["id"]])
        return WriteResult(name, removed=size, version=vocab["version"])

    # -- embeddings -----------------------------------------------------------------------------
    def missing_phrases(self, model_key: str, names: Iterable[str]) -> list[str]:
        """Distinct phrase texts (for a model that reads languages, keys: `catalog.phrase_key`) of these
        vocabularies that have no embedding for the model."""
        ids = [self.get_vocabulary(n).id for n in names]
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        key = _key_sql(model_key)
        rows = self.db.execute(
            f"SELECT DISTINCT {key} FROM phrases p WHERE p.vocabulary_id IN ({marks}) AND NOT EXISTS "
            f"(SELECT 1 FROM embeddings e WHERE e.model = ? AND e.phrase = {key})",
            [*ids, model_key],
        )
        return [r[0] for r in rows]

    def cached_embeddings(self, model_key: str, phrases: Sequence[str]) -> dict[str, npt.NDArray[np.float32]]:
        return self.stored_vectors("embeddings", "phrase", model_key, phrases)

    def stored_vectors(self, table: str, key: str, model_key: str, keys: Sequence[str]) -> dict[str, npt.NDArray[np.float32]]:
        """key → vector of the rows of an embeddings table (phrases or pictures) stored for the model."""
        out: dict[str, npt.NDArray[np.float32]] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for k, blob in self.db.execute(
                f"SELECT {key}, vector FROM {table} WHERE model = ? AND {key} IN ({marks})", [model_key, *chunk]
            ):
                out[k] = np.frombuffer(blob, dtype=np.float32)
        return out

    def put_embeddings(self, model_key: str, phrases: Sequence[str], vectors: npt.NDArray[np.float32]) -> None:
        with self.transaction() as db:
            self._put_embeddings(db, model_key, phrases, vectors)

    @staticmethod
    def _put_embeddings(db: sqlite_utils.Database, model_key: str, phrases: Sequence[str], vectors: npt.NDArray[np.float32]) -> None:
        if len(phrases) != len(vectors):
            raise ValueError("one embedding per phrase")
        insert_vectors(db, "embeddings", "phrase", model_key, zip(phrases, vectors))

    def vectors(self, model_key: str, vocabulary_id: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32], int]:
        """(phrase ids, embeddings, number of phrases without an embedding) for one vocabulary."""
        rows = self.db.execute(
            f"SELECT p.id, e.vector FROM phrases p LEFT JOIN embeddings e ON e.model = ? AND e.phrase = {_key_sql(model_key)} "
            "WHERE p.vocabulary_id = ? ORDER BY p.id",
            [model_key, vocabulary_id],
        ).fetchall()
        present = [(i, v) for i, v in rows if v is not None]
        ids = np.fromiter((i for i, _ in present), dtype=np.int64, count=len(present))
        if present:
            mat = np.frombuffer(b"".join(v for _, v in present), dtype=np.float32).reshape(len(present), -1).copy()
        else:
            mat = np.empty((0, 0), dtype=np.float32)
        return ids, mat, len(rows) - len(present)

    def stats(self) -> dict[str, Any]:
        return {
            "vocabularies": self.db.execute("SELECT count(*) FROM vocabularies").fetchone()[0],
            "phrases": self.db.execute("SELECT count(*) FROM phrases").fetchone()[0],
            "embeddings": self.db.execute("SELECT count(*) FROM embeddings").fetchone()[0],
        }


def insert_vectors(db: sqlite_utils.Database, table: str, key: str, model_key: str,
                   items: Iterable[tuple[str, npt.NDArray[np.floating]]]) -> None:
    """Inside a write: (key, vector) rows of an embeddings table (phrases or pictures) for the model;
    a vector already stored for a key is kept."""
    db.conn.executemany(
        f"INSERT OR IGNORE INTO {table} (model, {key}, vector) VALUES (?, ?, ?)",
        ((model_key, k, np.ascontiguousarray(v, dtype=np.float32).tobytes()) for k, v in items),
    )


def spec_key(model_key: str, spec: PhraseSpec) -> str:
    """What the model embeds a phrase as (`catalog.phrase_key` for a model that reads languages)."""
    return phrase_key(spec.phrase, spec.language) if reads_languages(model_key) else spec.phrase


def _key_sql(model_key: str) -> str:
    """`spec_key` in SQL, over the phrases table as `p`."""
    if not reads_languages(model_key):
        return "p.phrase"
    return f"p.phrase || CASE WHEN p.language IS NULL THEN '' ELSE char({ord(LANGUAGE_KEY_SEPARATOR)}) || p.language END"


def _phrase_json(r: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": r["id"],
        "term": r["term"],
        "phrase": r["phrase"],
        "external_id": r["external_id"],
        "metadata": json.loads(r["metadata"]) if r["metadata"] else None,
        "language": r["language"],
    }
