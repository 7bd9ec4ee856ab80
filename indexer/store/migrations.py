"""The store's schema as small numbered migrations (sqlite-utils `Migrations`): an existing store
upgrades in place, each step once, in a transaction, under the store's write lock."""

from __future__ import annotations

from .sqlite import Migrations, sqlite_utils

migrations = Migrations("clip-gaze")


@migrations(name="001_initial")
def _m001(db: sqlite_utils.Database) -> None:
    _run_statements(
        db,
        """
        CREATE TABLE vocabularies (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL UNIQUE,
            description TEXT NOT NULL DEFAULT '',
            templates TEXT NOT NULL,
            builtin INTEGER NOT NULL DEFAULT 0,
            source TEXT,
            licence TEXT,
            content_hash TEXT,
            version INTEGER NOT NULL DEFAULT 1,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE TABLE phrases (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            vocabulary_id INTEGER NOT NULL REFERENCES vocabularies(id) ON DELETE CASCADE,
            term TEXT NOT NULL,
            phrase TEXT NOT NULL,
            external_id TEXT,
            metadata TEXT,
            UNIQUE (vocabulary_id, phrase)
        );
        CREATE INDEX phrases_by_term ON phrases (vocabulary_id, term);
        CREATE INDEX phrases_by_external_id ON phrases (vocabulary_id, external_id);
        CREATE TABLE embeddings (
            model TEXT NOT NULL,
            phrase TEXT NOT NULL,
            vector BLOB NOT NULL,
            PRIMARY KEY (model, phrase)
        ) WITHOUT ROWID;
        """,
    )


@migrations(name="002_collections")
def _m002(db: sqlite_utils.Database) -> None:
    """Collections of pictures, each picture's embedding per model keyed by its content, and jobs."""
    _run_statements(
        db,
        """
        CREATE TABLE collections (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL UNIQUE,
            description TEXT NOT NULL DEFAULT '',
            version INTEGER NOT NULL DEFAULT 1,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE TABLE collection_images (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            collection_id INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
            source TEXT NOT NULL,
            external_id TEXT,
            sha256 TEXT,
            width INTEGER,
            height INTEGER,
            metadata TEXT,
            error_code TEXT,
            error TEXT,
            added_at TEXT NOT NULL,
            UNIQUE (collection_id, source)
        );
        CREATE INDEX collection_images_by_sha ON collection_images (collection_id, sha256);
        CREATE INDEX collection_images_by_external_id ON collection_images (collection_id, external_id);
        CREATE TABLE image_embeddings (
            model TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            vector BLOB NOT NULL,
            PRIMARY KEY (model, sha256)
        ) WITHOUT ROWID;
        CREATE TABLE jobs (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            collection TEXT,
            state TEXT NOT NULL,
            total INTEGER,
            done INTEGER NOT NULL DEFAULT 0,
            failed INTEGER NOT NULL DEFAULT 0,
            skipped INTEGER NOT NULL DEFAULT 0,
            error TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        ) WITHOUT ROWID;
        """,
    )


@migrations(name="003_embedding_keys")
def _m003(db: sqlite_utils.Database) -> None:
    """The keys of image embeddings on their own: asking which pictures lack an embedding reads this
    small index instead of rows that each hold a 2 KB vector (0.35 → 0.04 s for 100,000 pictures)."""
    _run_statements(db, "CREATE INDEX image_embeddings_keys ON image_embeddings (model, sha256)")


@migrations(name="004_jobs_resume")
def _m004(db: sqlite_utils.Database) -> None:
    """What resuming a job and not repeating work need. Jobs: the request (to run it again), the
    worker process that owns it and until when (`lease_until`, unix seconds, renewed while it runs),
    how often it was resumed, why it was interrupted, and pictures refreshed. Pictures read from files:
    the file's size and modification time (ns) when it was read, so a file replaced at its path is read
    again. `add_claims`: the sources an add in flight is reading (by run, with a lease), so concurrent
    adds into one collection read each source once."""
    _run_statements(
        db,
        """
        ALTER TABLE jobs ADD COLUMN request TEXT;
        ALTER TABLE jobs ADD COLUMN owner TEXT;
        ALTER TABLE jobs ADD COLUMN lease_until REAL;
        ALTER TABLE jobs ADD COLUMN resumed INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE jobs ADD COLUMN reason TEXT;
        ALTER TABLE jobs ADD COLUMN refreshed INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE collection_images ADD COLUMN file_size INTEGER;
        ALTER TABLE collection_images ADD COLUMN file_mtime_ns INTEGER;
        CREATE TABLE add_claims (
            collection_id INTEGER NOT NULL,
            source TEXT NOT NULL,
            owner TEXT NOT NULL,
            lease_until REAL NOT NULL,
            PRIMARY KEY (collection_id, source)
        ) WITHOUT ROWID;
        CREATE INDEX add_claims_by_owner ON add_claims (owner)
        """,
    )


@migrations(name="005_thumbnails_maps")
def _m005(db: sqlite_utils.Database) -> None:
    """What the explorer shows without going back to the sources: each picture's thumbnail by content
    hash (longest side 256 px), and each collection's 2-D map per model (the latest layout, with the
    collection version it was computed for, its points as Arrow IPC, and the job that computes the next)."""
    _run_statements(
        db,
        """
        CREATE TABLE thumbnails (
            sha256 TEXT PRIMARY KEY,
            media_type TEXT NOT NULL,
            width INTEGER NOT NULL,
            height INTEGER NOT NULL,
            data BLOB NOT NULL
        ) WITHOUT ROWID;
        CREATE TABLE collection_maps (
            collection_id INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
            model TEXT NOT NULL,
            version INTEGER,
            method TEXT,
            size INTEGER NOT NULL DEFAULT 0,
            points BLOB,
            job_id TEXT,
            job_version INTEGER,
            created_at TEXT NOT NULL,
            PRIMARY KEY (collection_id, model)
        ) WITHOUT ROWID
        """,
    )


@migrations(name="006_reviews")
def _m006(db: sqlite_utils.Database) -> None:
    """People's verdicts on machine suggestions: for a picture of a collection (by content hash) and a
    term of a vocabulary, `accepted` or `rejected`, with an optional note; the latest verdict stands."""
    _run_statements(
        db,
        """
        CREATE TABLE reviews (
            collection_id INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
            sha256 TEXT NOT NULL,
            vocabulary TEXT NOT NULL,
            term TEXT NOT NULL,
            phrase TEXT NOT NULL,
            verdict TEXT NOT NULL CHECK (verdict IN ('accepted', 'rejected')),
            note TEXT,
            reviewed_at TEXT NOT NULL,
            PRIMARY KEY (collection_id, sha256, vocabulary, term)
        ) WITHOUT ROWID
        """,
    )


@migrations(name="008_keys_audit")
def _m008(db: sqlite_utils.Database) -> None:
    """Access (issue 23): API keys (only a hash of each secret, looked up by the secret's public id), the
    audit trail of writes, and private collections and vocabularies (seen only by keys granted them)."""
    _run_statements(
        db,
        """
        CREATE TABLE api_keys (
            name TEXT PRIMARY KEY,
            key_id TEXT NOT NULL UNIQUE,
            secret_hash TEXT NOT NULL,
            scopes TEXT NOT NULL,
            collections TEXT,
            vocabularies TEXT,
            created_at TEXT NOT NULL,
            expires_at TEXT,
            last_used_at TEXT,
            revoked_at TEXT
        ) WITHOUT ROWID;
        CREATE TABLE audit (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at TEXT NOT NULL,
            key TEXT NOT NULL,
            address TEXT,
            method TEXT NOT NULL,
            path TEXT NOT NULL,
            status INTEGER NOT NULL
        );
        CREATE INDEX audit_by_time ON audit (at);
        ALTER TABLE collections ADD COLUMN private INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE vocabularies ADD COLUMN private INTEGER NOT NULL DEFAULT 0
        """,
    )


@migrations(name="007_sync_callbacks")
def _m007(db: sqlite_utils.Database) -> None:
    """IIIF provenance, change-feed syncs and job callbacks. Pictures: the IIIF `manifest` each was read
    from (its URL; NULL for other sources) and its `image_service` (the Image API service id without
    /info.json; NULL without one), written on every add and relabel; the manifest's index finds its
    pictures (a change stream's Update or Delete of it). `collection_syncs`: per collection and change
    stream, the `end_time` of the last sync applied whole, and the sync in flight (`pending`, JSON), so
    one killed is resumed. Jobs: a `callback_url` and its delivery (state, next attempt and the time to
    give up, unix seconds, the process delivering it and until when); `callback_attempts`: each attempt."""
    _run_statements(
        db,
        """
        ALTER TABLE collection_images ADD COLUMN manifest TEXT;
        ALTER TABLE collection_images ADD COLUMN image_service TEXT;
        CREATE INDEX collection_images_by_manifest ON collection_images (collection_id, manifest);
        CREATE TABLE collection_syncs (
            collection_id INTEGER NOT NULL,
            stream TEXT NOT NULL,
            end_time TEXT,
            pending TEXT,
            synced_at TEXT,
            PRIMARY KEY (collection_id, stream)
        ) WITHOUT ROWID;
        ALTER TABLE jobs ADD COLUMN callback_url TEXT;
        ALTER TABLE jobs ADD COLUMN callback_state TEXT;
        ALTER TABLE jobs ADD COLUMN callback_next REAL;
        ALTER TABLE jobs ADD COLUMN callback_until REAL;
        ALTER TABLE jobs ADD COLUMN callback_owner TEXT;
        ALTER TABLE jobs ADD COLUMN callback_lease REAL;
        CREATE INDEX jobs_by_callback ON jobs (callback_state, callback_next);
        CREATE TABLE callback_attempts (
            job_id TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            at TEXT NOT NULL,
            status INTEGER,
            error TEXT,
            PRIMARY KEY (job_id, attempt)
        ) WITHOUT ROWID
        """,
    )


@migrations(name="009_languages")
def _m009(db: sqlite_utils.Database) -> None:
    """A phrase's language (a BCP-47 tag in its canonical case; NULL for the phrases stored before and for
    those given without one). A term's labels in several languages share its external_id."""
    _run_statements(
        db,
        """
        ALTER TABLE phrases ADD COLUMN language TEXT;
        CREATE INDEX phrases_by_language ON phrases (vocabulary_id, language)
        """,
    )


def _run_statements(db: sqlite_utils.Database, script: str) -> None:
    """Statement by statement: executescript would COMMIT the migration's transaction."""
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)
