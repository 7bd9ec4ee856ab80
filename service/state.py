"""What one worker process holds, and how a request reaches it (as flaskr's `db.py` does for its
connection): the blueprints import `state()` from here, the factory only registers it."""

from __future__ import annotations

import logging
import threading
import time
from typing import Literal

from flask import Flask, current_app

from indexer.collections.local import Collections
from indexer.engine import Engine
from indexer.models.registry import public_model_name
from indexer.pictures.sources import shown_text
from indexer.schema import Batching, Health
from indexer.settings import Settings

log = logging.getLogger("clip_gaze.service")

# Requests never embed a whole built-in list: that is `clip-gaze index`'s job.
AUTO_EMBED_LIMIT = 5000


class ServiceState:
    """Settings, the engine (made lazily, with the service's batching and limits) and the collections
    beside it, of one worker."""

    def __init__(self, settings: Settings, engine: Engine | None = None):
        self.settings = settings
        self._engine = engine
        self._collections: Collections | None = None
        self._lock = threading.Lock()
        self.warm_error: str | None = None
        self.warming = False  # a warm-up was started (gunicorn workers): ready means it finished
        self.ready = False
        self.stopping_since: float | None = None  # time.monotonic() of the worker's SIGTERM

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    self._engine = Engine.from_settings(
                        self.settings, auto_embed_limit=AUTO_EMBED_LIMIT, batch_window_ms=self.settings.batch_window_ms
                    )
        return self._engine

    @property
    def collections(self) -> Collections:
        """The collections of the engine's store (one per worker: it keeps their search indexes)."""
        if self._collections is None:
            engine = self.engine
            with self._lock:
                if self._collections is None:
                    self._collections = Collections(engine, resume_jobs=self.settings.resume_jobs)
        return self._collections

    # -- jobs across restarts (indexer.collections.jobs) ------------------------------------------
    def start_jobs(self) -> None:
        """Jobs no live worker owns (a previous process's) are resumed or interrupted, now and while
        this worker runs."""
        if self.stopping_since is None:
            self.collections.jobs.watch()

    def stop_jobs(self) -> None:
        """At SIGTERM (in the signal handler: sets flags only): running jobs stop at their next checkpoint."""
        if self.stopping_since is None:
            self.stopping_since = time.monotonic()
        if self._collections is not None:
            self._collections.jobs.stop()

    def shutdown_jobs(self) -> None:
        """As the worker exits: its jobs get until CLIP_GAZE_SHUTDOWN_GRACE after SIGTERM to reach a
        checkpoint; what is left is handed back for the next start to resume."""
        self.stop_jobs()
        if self._collections is not None:
            assert self.stopping_since is not None
            self._collections.jobs.shutdown(self.stopping_since + self.settings.shutdown_grace)

    def warm_up(self) -> None:
        try:
            self.engine.vocabularies()  # brings every built-in list into the store
            self.engine.warm_up()
            self.ready = True
            log.info("clip-gaze worker ready: model %s, %d indexes", self.engine.spec.name, len(self.engine.indexes.loaded))
        except Exception as exc:  # reported by /v1/health; requests still try (and fail clearly)
            self.warm_error = str(getattr(exc, "message", exc))
            log.exception("warm-up failed")
        try:
            self.start_jobs()
        except Exception:  # a store that cannot be opened: requests say so
            log.exception("resuming jobs failed")

    def start_warm_up(self) -> threading.Thread:
        self.warming = True
        t = threading.Thread(target=self.warm_up, name="clip-gaze-warm-up", daemon=True)
        t.start()
        return t

    def health(self) -> Health:
        """'ready' once warm-up has loaded the model and every index (or, with no warm-up, once the
        model is loaded); 'error' if warm-up failed; else 'loading'. Never loads anything."""
        engine = self._engine
        loaded = engine is not None and engine.model_loaded
        status: Literal["loading", "ready", "error"]
        if self.warm_error:
            status = "error"
        elif self.ready or (loaded and not self.warming):
            status = "ready"
        else:
            status = "loading"
        return Health(
            status=status, model_loaded=loaded, model=public_model_name(self.settings.model),
            error=shown_text(self.warm_error, None),  # no server folder to anyone: the log has the whole error
            batching=engine.batching if engine is not None else Batching(batches=0, images=0),
            backends=engine.backends() if engine is not None else None,
        )


def init_app(app: Flask, settings: Settings, engine: Engine | None = None) -> None:
    app.extensions["clip_gaze"] = ServiceState(settings, engine)


def state() -> ServiceState:
    return current_app.extensions["clip_gaze"]  # type: ignore[no-any-return]
