"""The Flask app factory. Creating an app loads nothing heavy: the engine, its model and its
indexes load in `warm_up` (started by gunicorn after a worker boots) or on first use."""

from __future__ import annotations

from flask import Flask

from indexer.engine import Engine
from indexer.settings import Settings

from . import fetching, guard, state
from .errors import register_error_handlers


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> Flask:
    """`settings` and `engine` may be passed by tests; otherwise settings come from the environment."""
    settings = settings or Settings.from_env()
    app = Flask(__name__, static_folder="static", static_url_path="/static")
    app.config["CLIP_GAZE_SETTINGS"] = settings
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    app.json.sort_keys = False  # type: ignore[attr-defined]
    state.init_app(app, settings, engine)
    fetching.init_app(app, settings)
    guard.init_app(app, settings)
    register_error_handlers(app)

    from .api import api
    from .api_access import access_api
    from .api_collections import collections_api
    from .api_compare_models import compare_models_api  # noqa: F401  (nested in `api`: POST /v1/compare-models)
    from .api_explain import explain_api  # noqa: F401  (nested in `api` at import: POST /v1/explain)
    from .api_explore import explore_api
    from .api_interrogate import interrogate_api  # noqa: F401  (nested in `api`: POST /v1/interrogate)
    from .api_interop import interop_api
    from .api_sync import sync_api
    from .page import page

    app.register_blueprint(api)
    app.register_blueprint(collections_api)
    app.register_blueprint(explore_api)
    app.register_blueprint(interop_api)
    app.register_blueprint(access_api)
    app.register_blueprint(sync_api)
    app.register_blueprint(page)
    return app
