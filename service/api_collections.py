"""The REST API of collections and jobs (GUIDE §4, "Collections"): thin views over the worker's `Collections`."""

from __future__ import annotations

import json
from collections.abc import Iterator

from flask import Blueprint, Response, request, stream_with_context

from indexer.schema import parse, split_vocabularies
from indexer.schema.collections import (
    AddUrlSources,
    AnalyzeCollection,
    CollectionAnswer,
    CollectionList,
    CreateCollection,
    JobAnswer,
    PictureQuery,
    SearchQuery,
)

from .api import answer, json_body
from .auth import require_token
from .errors import named_in_body
from .state import state

collections_api = Blueprint("collections_api", __name__)


@collections_api.get("/v1/collections")
def list_collections() -> tuple[Response, int]:
    return answer(CollectionList(collections=state().collections.all()))


@collections_api.post("/v1/collections")
@require_token
def create_collection() -> tuple[Response, int]:
    info = state().collections.create(json_body(CreateCollection))
    return answer(CollectionAnswer(collection=info), 201)


@collections_api.get("/v1/collections/<name>")
def show_collection(name: str) -> tuple[Response, int]:
    query = parse(PictureQuery, request.args.to_dict())
    return answer(state().collections.view(name, query.errors, query.offset, query.limit))


@collections_api.delete("/v1/collections/<name>")
@require_token
def delete_collection(name: str) -> tuple[Response, int]:
    return answer(CollectionAnswer(collection=state().collections.delete(name), deleted=name))


@collections_api.post("/v1/collections/<name>/sources")
@require_token
def add_sources(name: str) -> tuple[Response, int]:
    """A background job in this worker; GET /v1/jobs/<id> gives its progress from any worker."""
    job = state().collections.start_add(name, json_body(AddUrlSources))
    return answer(JobAnswer(job=job), 202)


@collections_api.get("/v1/jobs/<job_id>")
def show_job(job_id: str) -> tuple[Response, int]:
    return answer(JobAnswer(job=state().collections.job(job_id)))


@collections_api.get("/v1/collections/<name>/search")
def search_collection(name: str) -> tuple[Response, int]:
    query = parse(SearchQuery, request.args.to_dict())
    return answer(state().collections.search(name, text=query.q, top_k=query.top_k))


@collections_api.post("/v1/collections/<name>/analyze")
def analyze_collection(name: str) -> Response:
    """JSON Lines, one row per picture and match, streamed as they are scored."""
    params = json_body(AnalyzeCollection) if request.get_data(cache=True) else AnalyzeCollection()
    collections = state().collections
    collections.get(name)  # the collection of the path: unknown_collection is 404
    with named_in_body():  # vocabularies, relative_to: 422
        rows = collections.analyze(name, split_vocabularies(params.vocabularies), params.top_k, params.relative_to)

    def lines() -> Iterator[str]:
        for row in rows:
            yield json.dumps(row.json_dict(), ensure_ascii=False) + "\n"

    return Response(stream_with_context(lines()), mimetype="application/x-ndjson")
