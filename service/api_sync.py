"""Keeping a collection in step with a museum's systems (README "Back into your systems"): pictures
removed by external id or source; a IIIF Change Discovery stream synced, as a background job.
Thin views over `indexer.collections`."""

from __future__ import annotations

from flask import Blueprint, Response

from indexer.schema.collections import JobAnswer
from indexer.schema.sync import RemovePictures, SyncChanges

from .api import answer, json_body
from .state import state

sync_api = Blueprint("sync_api", __name__)


@sync_api.delete("/v1/collections/<name>/pictures")
def remove_pictures(name: str) -> tuple[Response, int]:
    """The collection's pictures with these external ids or sources, removed in one transaction."""
    collections = state().collections
    collections.get(name)  # the collection of the path: unknown_collection is 404, before the body
    return answer(collections.remove(name, json_body(RemovePictures)))


@sync_api.post("/v1/collections/<name>/sync")
def sync_changes(name: str) -> tuple[Response, int]:
    """A background job in this worker (resumed by any worker); GET /v1/jobs/<id> gives its progress."""
    collections = state().collections
    collections.get(name)
    return answer(JobAnswer(job=collections.start_sync(name, json_body(SyncChanges))), 202)
