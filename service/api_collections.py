"""The REST API of collections and jobs (GUIDE §4, "Collections"): thin views over the worker's `Collections`.

A caller without write access sees no folder of the server: the local paths of a collection (added by
the CLI) are shown relative to the folder they share (`sources.local_root`, found once per answer),
and that folder is taken out of error messages (`sources.shown_source`, `shown_text`); URLs as they are.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import Blueprint, Response, request, stream_with_context

from indexer.schema import Answer, parse, split_vocabularies
from indexer.schema.collections import (
    AddUrlSources,
    AnalyzeCollection,
    CollectionAnswer,
    CollectionList,
    CreateCollection,
    JobAnswer,
    PictureQuery,
    SearchQuery,
    SearchTerms,
)

from indexer.pictures.sources import local_root, shown_source, shown_text
from indexer.store.image_store import unknown_job

from .api import answer, json_body
from .access import check_named, hidden_collection, visible_collection
from .auth import can_write
from .errors import named_in_body
from .state import collections_for, state

collections_api = Blueprint("collections_api", __name__)
A = TypeVar("A", bound=Answer)


def _shown(name: str | None) -> Callable[[A], A]:
    """How this caller sees an answer's pictures of collection `name` (`source`, `error`): as stored for a
    caller who may write; otherwise relative to the collection's local root, found by one query over the
    (collection_id, source) index (ImageStore.local_span)."""
    if can_write():
        return lambda item: item
    root = local_root(*state().collections.images.local_span(name)) if name else None

    def shown(item: A) -> A:
        fields = {key: (shown_source(value, root) if key == "source" else shown_text(value, root))
                  for key in ("source", "error", "reason") if isinstance(value := getattr(item, key, None), str)}
        return item.model_copy(update=fields) if fields else item

    return shown


@collections_api.get("/v1/collections")
def list_collections() -> tuple[Response, int]:
    every = state().collections.all()
    return answer(CollectionList(collections=[c for c in every if visible_collection(c.name, c.private)]))


@collections_api.post("/v1/collections")
def create_collection() -> tuple[Response, int]:
    info = state().collections.create(json_body(CreateCollection))
    return answer(CollectionAnswer(collection=info), 201)


@collections_api.get("/v1/collections/<name>")
def show_collection(name: str) -> tuple[Response, int]:
    query = parse(PictureQuery, request.args.to_dict())
    view = state().collections.view(name, query.errors, query.offset, query.limit)
    shown = _shown(name)
    return answer(view.model_copy(update={"pictures": [shown(p) for p in view.pictures]}))


@collections_api.delete("/v1/collections/<name>")
def delete_collection(name: str) -> tuple[Response, int]:
    return answer(CollectionAnswer(collection=state().collections.delete(name), deleted=name))


@collections_api.post("/v1/collections/<name>/sources")
def add_sources(name: str) -> tuple[Response, int]:
    """A background job in this worker; GET /v1/jobs/<id> gives its progress from any worker."""
    job = state().collections.start_add(name, json_body(AddUrlSources))
    return answer(JobAnswer(job=job), 202)


@collections_api.get("/v1/jobs/<job_id>")
def show_job(job_id: str) -> tuple[Response, int]:
    job = state().collections.job(job_id)
    if job.collection is not None and hidden_collection(job.collection):
        raise unknown_job(job_id)  # a job of a collection this caller may not see is none
    if job.callback is not None and not can_write():  # its path and query may hold the receiver's token
        parts = urlsplit(job.callback.url)
        job = job.model_copy(update={"callback": job.callback.model_copy(update={"url": f"{parts.scheme}://{parts.netloc}/…"})})
    return answer(JobAnswer(job=_shown(job.collection)(job)))


@collections_api.get("/v1/collections/<name>/search")
def search_collection(name: str) -> tuple[Response, int]:
    query = parse(SearchQuery, search_args(request.args))
    check_named([query.vocabulary] if query.vocabulary else None)
    with named_in_body():  # vocabulary: 422
        found = collections_for(query.model).search(name, top_k=query.top_k, query=search_terms(query))
    shown = _shown(name)
    return answer(found.model_copy(update={"hits": [shown(h) for h in found.hits]}))


def search_args(args: Any) -> dict[str, Any]:
    """Query arguments of a search: those that may be repeated as lists."""
    values: dict[str, Any] = args.to_dict()
    for key in ("q", "not", "like", "unlike"):
        if key in args:
            values[key] = [v for v in args.getlist(key) if v.strip()] if key != "q" or len(args.getlist(key)) > 1 else values[key]
    return values


def search_terms(query: SearchQuery) -> SearchTerms:
    texts = [query.q] if isinstance(query.q, str) else list(query.q or [])
    return SearchTerms(q=texts, unlike_text=query.not_, like=query.like, unlike=query.unlike, min_cosine=query.min_cosine,
                       min_probability=query.min_probability, vocabulary=query.vocabulary)


@collections_api.post("/v1/collections/<name>/analyze")
def analyze_collection(name: str) -> Response:
    """JSON Lines, one row per picture and match, streamed as they are scored."""
    params = json_body(AnalyzeCollection) if request.get_data(cache=True) else AnalyzeCollection()
    collections = collections_for(params.model)
    collections.get(name)  # the collection of the path: unknown_collection is 404
    check_named(split_vocabularies(params.vocabularies), params.relative_to)
    with named_in_body():  # vocabularies, relative_to: 422
        rows = collections.analyze(name, split_vocabularies(params.vocabularies), params.top_k, params.relative_to)
    shown = _shown(name)

    def lines() -> Iterator[str]:
        for row in rows:
            yield json.dumps(shown(row).json_dict(), ensure_ascii=False) + "\n"

    return Response(stream_with_context(lines()), mimetype="application/x-ndjson")
