"""The Flask app factory. Creating an app loads nothing heavy: the engine, its model and its
indexes load in `warm_up` (started by gunicorn after a worker boots) or on first use."""

from __future__ import annotations

import logging
import threading
from typing import Any, Sequence

import numpy as np
import numpy.typing as npt
from flask import Flask, current_app

from indexer.engine import Engine
from indexer.settings import Settings

from .errors import register_error_handlers

log = logging.getLogger("clip_gaze.service")


class ServiceState:
    """What one worker process holds: settings, the engine (lazy) and the image batcher."""

    def __init__(self, settings: Settings, engine: Engine | None = None):
        self.settings = settings
        self._engine = engine
        self._lock = threading.Lock()
        self._batcher: Any = None
        self.warm_error: str | None = None
        self.warming = False  # a warm-up was started (gunicorn workers): ready means it finished
        self.ready = False
        self._builtins_synced = False

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    s = self.settings
                    # Requests never embed a whole built-in list: that is `clip-gaze index`'s job.
                    self._engine = Engine(s.home, s.model, device=s.device, threads=s.threads,
                                          compact=s.compact_indexes, auto_embed_limit=5000)
        return self._engine

    def sync_builtins(self) -> None:
        if not self._builtins_synced:
            from indexer.build import sync_builtins
            from indexer.vocab import catalog

            sync_builtins(self.engine.store, list(catalog().vocabularies))
            self._builtins_synced = True

    def embed_images(self, images: Sequence[Any]) -> npt.NDArray[np.float32]:
        """Preprocess here (in the request's thread), encode in a shared batch."""
        import torch

        model = self.engine.model
        tensors = torch.stack([model.image_tensor(im) for im in images])
        if self._batcher is None:
            with self._lock:
                if self._batcher is None:
                    from .batcher import ImageBatcher

                    self._batcher = ImageBatcher(model.encode_image_tensors, window_ms=self.settings.batch_window_ms)
        return self._batcher.submit(tensors)

    def warm_up(self) -> None:
        try:
            self.sync_builtins()
            self.engine.warm_up()
            self.ready = True
            log.info("clip-gaze worker ready: model %s, %d indexes", self.engine.spec.name, len(self.engine.indexes_loaded))
        except Exception as exc:  # reported by /v1/health; requests still try (and fail clearly)
            self.warm_error = str(getattr(exc, "message", exc))
            log.exception("warm-up failed")

    def status(self) -> str:
        """'ready' once warm-up has loaded the model and every index (or, with no warm-up, once the
        model is loaded); 'error' if warm-up failed; else 'loading'."""
        if self.warm_error:
            return "error"
        if self.ready:
            return "ready"
        loaded = self._engine is not None and self._engine.model_loaded
        return "ready" if loaded and not self.warming else "loading"

    def health(self) -> dict[str, Any]:
        """For GET /v1/health: never loads anything."""
        batcher = self._batcher
        return {
            "status": self.status(),
            "model_loaded": self._engine is not None and self._engine.model_loaded,
            "model": self.settings.model,
            "error": self.warm_error,
            "batching": {"batches": batcher.batches if batcher else 0, "images": batcher.items if batcher else 0},
        }

    def start_warm_up(self) -> threading.Thread:
        self.warming = True
        t = threading.Thread(target=self.warm_up, name="clip-gaze-warm-up", daemon=True)
        t.start()
        return t


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> Flask:
    """`settings` and `engine` may be passed by tests; otherwise settings come from the environment."""
    settings = settings or Settings.from_env()
    app = Flask(__name__, static_folder="static", static_url_path="/static")
    app.config["CLIP_GAZE_SETTINGS"] = settings
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["clip_gaze"] = ServiceState(settings, engine)
    register_error_handlers(app)

    from .api import api
    from .page import page

    app.register_blueprint(api)
    app.register_blueprint(page)
    return app


def state() -> ServiceState:
    return current_app.extensions["clip_gaze"]  # type: ignore[no-any-return]
