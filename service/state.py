"""What one worker process holds, and how a request reaches it (as flaskr's `db.py` does for its
connection): the blueprints import `state()` from here, the factory only registers it.

A worker serves every model of CLIP_GAZE_MODELS, one engine each (`indexer.multimodel.served`): a view
gets the engine of its request's `model` field with `engine_for(params.model)` (the default model's
when None: `state().engine` is the same), and the collections beside it with `collections_for`."""

from __future__ import annotations

import logging
import threading
import time
from typing import Literal, Mapping, Sequence

from flask import Flask, current_app

from indexer.collections.local import Collections
from indexer.engine import Engine
from indexer.errors import ClipGazeError
from indexer.models.registry import parse_model, public_model_name
from indexer.multimodel.served import ServedModels
from indexer.pictures.sources import shown_text
from indexer.schema import Batching, Health, ModelsAnswer
from indexer.settings import Settings

log = logging.getLogger("clip_gaze.service")

# Requests never embed a whole built-in list: that is `clip-gaze index`'s job.
AUTO_EMBED_LIMIT = 5000


class ServiceState:
    """Settings, the engines of the served models (made lazily, with the service's batching and limits)
    and the collections beside each, of one worker."""

    def __init__(self, settings: Settings, engine: Engine | None = None, engines: Mapping[str, Engine] | None = None):
        self.settings = settings
        names = list(settings.models or (settings.model,))
        given = dict(engines or {})
        if engine is not None:  # a test's (or a caller's) engine serves the default model
            names[0] = _served_name(names[0], engine)
            given[names[0]] = engine
        self.models = ServedModels(names, self._make_engine, given)
        self._collections: dict[str, Collections] = {}
        self._lock = threading.Lock()
        self.warm_error: str | None = None
        self.warming = False  # a warm-up was started (gunicorn workers): ready means it finished
        self.ready = False
        self.preload = settings.preload  # warm-up loads every served model, not only the default (`serve --preload`)
        self.stopping_since: float | None = None  # time.monotonic() of the worker's SIGTERM

    def _make_engine(self, name: str) -> Engine:
        return Engine.from_settings(self.settings, model=name, auto_embed_limit=AUTO_EMBED_LIMIT,
                                    batch_window_ms=self.settings.batch_window_ms)

    @property
    def engine(self) -> Engine:
        """The default model's engine."""
        return self.models.engine(None)

    def engine_for(self, model: str | None = None) -> Engine:
        """The engine of a request's `model` (None: the default); NotFound `unknown_model` (404)."""
        return self.models.engine(model)

    def engines_for(self, models: Sequence[str] | None = None) -> list[tuple[str, Engine]]:
        """(name as clients see it, engine) of each model asked for, once each in the order given (None:
        every model served); any unknown: NotFound `unknown_model` (404) before any is made."""
        names = list(dict.fromkeys(self.models.resolve(m) for m in models)) if models else self.models.names
        return [(public_model_name(name), self.models.engine(name)) for name in names]

    @property
    def collections(self) -> Collections:
        """The collections of the engine's store, for the default model (one per worker: it keeps their
        search indexes, and runs the worker's jobs)."""
        return self.collections_for(None)

    def collections_for(self, model: str | None = None) -> Collections:
        """The collections for a request's `model`: searched and scored with that model's embeddings."""
        name = self.models.resolve(model)
        found = self._collections.get(name)
        if found is None:
            engine = self.models.engine(name)
            with self._lock:
                found = self._collections.get(name)
                if found is None:
                    found = self._collections[name] = Collections(engine, resume_jobs=self.settings.resume_jobs,
                                                                        webhook_secret=self.settings.webhook_secret)
        return found

    # -- jobs across restarts (indexer.collections.jobs) ------------------------------------------
    def start_jobs(self) -> None:
        """Jobs no live worker owns (a previous process's) are resumed or interrupted, now and while
        this worker runs."""
        if self.stopping_since is None:
            self.collections.jobs.watch()
            self.collections.deliveries.start()  # callbacks pending from before, and those of this worker's jobs

    def stop_jobs(self) -> None:
        """At SIGTERM (in the signal handler: sets flags only): running jobs stop at their next checkpoint."""
        if self.stopping_since is None:
            self.stopping_since = time.monotonic()
        for collections in list(self._collections.values()):
            collections.jobs.stop()

    def shutdown_jobs(self) -> None:
        """As the worker exits: its jobs get until CLIP_GAZE_SHUTDOWN_GRACE after SIGTERM to reach a
        checkpoint; what is left is handed back for the next start to resume."""
        self.stop_jobs()
        assert self.stopping_since is not None
        for collections in list(self._collections.values()):
            collections.deliveries.stop()  # attempts in flight end within their timeout, or their claims lapse
            collections.jobs.shutdown(self.stopping_since + self.settings.shutdown_grace)

    def warm_up(self) -> None:
        try:
            self.engine.vocabularies()  # brings every built-in list into the store
            self.engine.warm_up()
            if self.preload:
                for name in self.models.names[1:]:
                    if self.models.load(name):
                        self.models.engine(name).warm_up()
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

    def models_answer(self) -> ModelsAnswer:
        """GET /v1/models: the default model, the presets, and every model served with its state."""
        return self.engine.models().model_copy(update={"served": self.models.served(lambda text: shown_text(text, None))})

    def health(self) -> Health:
        """'ready' once warm-up has loaded the model and every index (or, with no warm-up, once the
        model is loaded); 'error' if warm-up failed; else 'loading'. Never loads anything."""
        engine = self.models.made().get(self.models.default)
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
            models=self.models.served(lambda text: shown_text(text, None)),
        )


def _served_name(configured: str, engine: Engine) -> str:
    """The name a given engine is served under: the configured default's when it is that model."""
    try:
        if parse_model(configured).key() == engine.model_key:
            return configured
    except ClipGazeError:
        pass
    return engine.spec.name


def init_app(app: Flask, settings: Settings, engine: Engine | None = None,
             engines: Mapping[str, Engine] | None = None) -> None:
    app.extensions["clip_gaze"] = ServiceState(settings, engine, engines)


def state() -> ServiceState:
    return current_app.extensions["clip_gaze"]  # type: ignore[no-any-return]


def engine_for(model: str | None = None) -> Engine:
    """The engine of this request's `model` field (None: the default model's). Unknown: 404 unknown_model."""
    return state().engine_for(model)


def collections_for(model: str | None = None) -> Collections:
    """The collections for this request's `model` field (None: the default model's)."""
    return state().collections_for(model)
