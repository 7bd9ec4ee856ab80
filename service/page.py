"""The web page at `/`: static files (no build step) that speak to the REST API."""

from __future__ import annotations

from flask import Blueprint, Response, current_app

page = Blueprint("page", __name__)


@page.get("/")
def index() -> Response:
    resp = current_app.send_static_file("index.html")
    resp.headers["Cache-Control"] = "no-cache"
    return resp
