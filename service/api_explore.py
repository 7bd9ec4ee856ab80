"""The explorer's API (`indexer.explore`): a collection's map, scores and facets filtered by `where`, a
picture's record and thumbnail, a search by a picture sent (the page itself: `page`). Large answers (the map,
the scores) go gzip-compressed to a client that accepts it."""

from __future__ import annotations

import gzip
import json
import threading
from typing import Any

from flask import Blueprint, Response, current_app, request

from indexer.explore.explain_source import explain_picture
from indexer.explore.explorer import Explorer
from indexer.explore.where import Column, parse_where
from indexer.schema import parse, parse_collection_name, split_vocabularies
from indexer.schema.explore import FacetsQuery, MapQuery, PictureExplainQuery, PictureRecordQuery, ScoresQuery

from indexer.errors import InvalidInput
from indexer.schema.collections import SearchForm, SearchTerms

from .api import one_upload
from .api_collections import _shown
from .api_explain import png
from .errors import named_in_body
from .access import check_named
from .state import collections_for

explore_api = Blueprint("explore_api", __name__)
_made = threading.Lock()
GZIP_OVER = 4096  # bytes: smaller answers go as they are


def explorer(model: str | None = None) -> Explorer:
    """The worker's explorer for a request's `model`, beside its collections (it keeps their frames,
    readings and map jobs)."""
    collections = collections_for(model)
    explorers = current_app.extensions.setdefault("clip_gaze_explorers", {})
    key = collections.engine.spec.name
    if key not in explorers:
        with _made:
            if key not in explorers:
                explorers[key] = Explorer(collections)
    return explorers[key]  # type: ignore[no-any-return]


def _named(vocabularies: list[str], where: str | None = None, relative_to: str | None = None) -> None:
    """The vocabularies and reference collection a request names (`where`'s too): one this caller may
    not see is refused as one that does not exist."""
    named = vocabularies + [c.vocabulary for c in parse_where(where) if not isinstance(c, Column)]
    check_named(named, relative_to)


def _args(model: Any) -> Any:
    values: dict[str, Any] = {k: v for k, v in request.args.items() if k != "where"}
    where = [w for w in request.args.getlist("where") if w.strip()]
    if where:
        values["where"] = " and ".join(where)
    return parse(model, values)


def _send(body: bytes, mimetype: str, status: int = 200) -> Response:
    resp = Response(body, status=status, mimetype=mimetype)
    if len(body) > GZIP_OVER and "gzip" in request.headers.get("Accept-Encoding", ""):
        resp.set_data(gzip.compress(body, compresslevel=5 if len(body) < 1_000_000 else 1))  # large: fast
        resp.headers["Content-Encoding"] = "gzip"
    resp.headers["Vary"] = "Accept-Encoding"
    return resp


def _json(payload: Any, status: int = 200, compress: bool = True) -> Response:
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    if not compress:
        return Response(text.encode("utf-8"), status=status, mimetype="application/json")
    return _send(text.encode("utf-8"), "application/json", status)


@explore_api.get("/v1/collections/<name>/map")
def collection_map(name: str) -> Response:
    """The map, encoded once per layout (`Explorer.map_body`) and answered with its ETag (304 when the
    client holds it)."""
    query = _args(MapQuery)
    answer, body = explorer(query.model).map_body(parse_collection_name(name), query.format, query.fields)
    status = 202 if answer.job is not None and not answer.size else 200
    if status == 200 and body.etag in _etags(request.headers.get("If-None-Match", "")):
        resp = Response(status=304)
    else:
        resp = Response(body.data, status=status, mimetype=body.media_type)
        if body.gzipped is not None and "gzip" in request.headers.get("Accept-Encoding", ""):
            resp.set_data(body.gzipped)
            resp.headers["Content-Encoding"] = "gzip"
    if status == 200:
        resp.headers["ETag"] = body.etag if "Content-Encoding" not in resp.headers else body.etag[:-1] + '-gzip"'
        resp.headers["Cache-Control"] = "no-cache"  # kept, asked again: a new layout is a new ETag
    resp.headers["Vary"] = "Accept-Encoding"
    return resp


def _etags(header: str) -> set[str]:
    """The ETags an If-None-Match names, each also as its plain body's (a gzip one ends in -gzip)."""
    tags = {t.strip().removeprefix("W/") for t in header.split(",") if t.strip()}
    return tags | {t.replace('-gzip"', '"') for t in tags}


@explore_api.get("/v1/collections/<name>/scores")
def collection_scores(name: str) -> Response:
    query = _args(ScoresQuery)
    name = parse_collection_name(name)
    ex = explorer(query.model)
    ex.images.get(name)  # the path's collection: 404
    _named([query.vocabulary], query.where, query.relative_to)
    with named_in_body():  # vocabulary, relative_to and where's vocabularies: 422
        found = ex.scores(name, query.vocabulary, query.phrase, query.relative_to, query.where)
    return _json(found.json_dict())


@explore_api.get("/v1/collections/<name>/facets")
def collection_facets(name: str) -> Response:
    query = _args(FacetsQuery)
    name = parse_collection_name(name)
    ex = explorer(query.model)
    ex.images.get(name)
    _named([query.vocabulary] if query.vocabulary else [], query.where, query.relative_to)
    with named_in_body():
        if query.column is not None:
            found = ex.column_facets(name, query.column, query.where, query.relative_to, query.limit)
        else:
            found = ex.facets(name, query.vocabulary, query.relative_to, query.where)
    return _json(found.json_dict())


@explore_api.get("/v1/collections/<name>/pictures/<sha256>")
def collection_picture(name: str, sha256: str) -> Response:
    query = parse(PictureRecordQuery, request.args.to_dict())
    name = parse_collection_name(name)
    ex = explorer(query.model)
    found = ex.picture(name, sha256)  # unknown collection or picture: 404
    vocabularies = split_vocabularies(query.vocabularies)
    if vocabularies:
        _named(vocabularies)
        with named_in_body():  # vocabularies: 422
            found = found.model_copy(update={"results": ex.results(sha256, vocabularies, query.top_k)})
    return _json(_shown(name)(found).json_dict())


@explore_api.get("/v1/collections/<name>/pictures/<sha256>/explain")
def collection_picture_explain(name: str, sha256: str) -> Response:
    """A picture's explanation map, from its source where it can still be read, else its thumbnail
    (`explained_from`; with format=png the X-Clip-Gaze-Explained-From header)."""
    query = parse(PictureExplainQuery, request.args.to_dict())
    name = parse_collection_name(name)
    ex = explorer(query.model)
    ex.picture(name, sha256)  # the path's collection and picture: 404
    vocabularies = list(split_vocabularies(query.vocabularies) or [])
    _named(vocabularies)
    with named_in_body():  # vocabularies: 422
        found = explain_picture(ex, name, sha256, vocabularies or None, None, query.top_k, query.versus)
    if query.format == "png":
        resp = png(found.explained)
        resp.headers["X-Clip-Gaze-Explained-From"] = found.explained_from
        return resp
    return _json(found.json_dict(), compress=False)  # one picture's maps: as /v1/explain answers them


@explore_api.get("/v1/collections/<name>/pictures/<sha256>/thumbnail")
def collection_thumbnail(name: str, sha256: str) -> Response:
    thumb = explorer().thumbnail(parse_collection_name(name), sha256)  # by content: any model's
    etag = f'"{sha256}"'
    if request.headers.get("If-None-Match") in (etag, f"W/{etag}"):
        resp = Response(status=304)
    else:
        resp = Response(thumb.data, mimetype=thumb.media_type)
    resp.headers["ETag"] = etag
    resp.headers["Cache-Control"] = "public, max-age=31536000, immutable"  # keyed by content: never changes
    return resp


@explore_api.post("/v1/collections/<name>/search")
def search_by_picture(name: str) -> Response:
    """The collection's pictures closest to a picture sent (the page's dropped picture)."""
    filename, data = one_upload()
    if data is None:
        raise InvalidInput("send the picture as a multipart file field 'image'", code="missing_image")
    form = parse(SearchForm, {**request.form.to_dict(), "image": data})
    name = parse_collection_name(name)
    found = collections_for(form.model).search(name, image=form.image, top_k=form.top_k,
                                       query=SearchTerms(min_cosine=form.min_cosine))
    shown = _shown(name)
    return _json(found.model_copy(update={"hits": [shown(h) for h in found.hits]}).json_dict())
