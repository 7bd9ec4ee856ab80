"""clip-gaze's REST service: a Flask app factory, served by gunicorn.

Importing this package is cheap: Flask, the model and the indexes load only when an app is made.
"""

from __future__ import annotations

from typing import Any


def create_app(*args: Any, **kwargs: Any) -> Any:
    from .app import create_app as _create_app

    return _create_app(*args, **kwargs)
