"""The web pages, `/` and the explorer at `/collections/<name>`: static files (no build step) that speak to the REST API."""

from __future__ import annotations

from flask import Blueprint, Response, current_app

page = Blueprint("page", __name__)


@page.get("/")
def index() -> Response:
    resp = current_app.send_static_file("index.html")
    resp.headers["Cache-Control"] = "no-cache"
    return resp


@page.get("/collections/<name>")
def explorer(name: str) -> Response:
    """The explorer of one collection (it asks the API for the data); 404 for one this caller cannot see."""
    from indexer.schema import parse_collection_name

    from .access import require_collection

    require_collection(parse_collection_name(name))
    resp = current_app.send_static_file("explorer.html")
    resp.headers["Cache-Control"] = "no-cache"
    return resp
