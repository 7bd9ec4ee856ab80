"""Back into a museum's systems (README "Back into your systems"): IIIF annotation pages of a
collection's matches, clip-gaze's JSON-LD context, and people's reviews of suggestions. Thin views over
`indexer.interop`.

Annotation pages and the context are JSON-LD documents for viewers (`application/ld+json` with IIIF's
profile, or `application/json` when a client asks for only that), answered with
`Access-Control-Allow-Origin: *` so that a viewer on another site can load them, as IIIF asks.
"""

from __future__ import annotations

import json
import re

from flask import Blueprint, Response, current_app, request, stream_with_context

from indexer.errors import InvalidInput
from indexer.interop.annotations import PAGE_TYPE, Annotator, Request, page_text
from indexer.interop.context import CONTEXT_PATH, context_document
from indexer.interop.reviews import review
from indexer.schema import parse, split_vocabularies
from indexer.store.reviews import Reviews
from indexer.schema.interop import SHA256_PATTERN, AnnotationsQuery, ReviewAnswer, ReviewRequest

from .api import answer, json_body
from .access import check_named
from .errors import named_in_body
from .state import collections_for, state

interop_api = Blueprint("interop_api", __name__)
_SHA = re.compile(SHA256_PATTERN)


def base_url() -> str:
    """Where clients reach this service: CLIP_GAZE_PUBLIC_URL, else where this request came to."""
    return current_app.config["CLIP_GAZE_SETTINGS"].public_url or request.host_url.rstrip("/")


def _linked_data(body: object, ld_type: str) -> Response:
    """`body` (a JSON text, or pieces of one) as JSON-LD, or JSON to a client that asks for only that."""
    chosen = request.accept_mimetypes.best_match(["application/ld+json", "application/json"]) or "application/ld+json"
    mimetype = ld_type if chosen == "application/ld+json" else "application/json"
    response = Response(body, mimetype=None, content_type=mimetype)  # type: ignore[arg-type]
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response


@interop_api.get(CONTEXT_PATH)
def annotation_context() -> Response:
    return _linked_data(json.dumps(context_document(), ensure_ascii=False), "application/ld+json")


@interop_api.get("/v1/collections/<name>/annotations")
def annotation_page(name: str) -> Response:
    """A IIIF Presentation 3 AnnotationPage: a manifest's pictures' matches (`manifest`), else those of
    the pictures read from no manifest, naming the manifests' pages (`seeAlso`); streamed."""
    query = parse(AnnotationsQuery, request.args.to_dict())
    collections = collections_for(query.model)
    collections.get(name)  # the collection of the path: unknown_collection is 404
    wanted = split_vocabularies(query.vocabularies)
    check_named(wanted)  # a private vocabulary not granted is one that does not exist
    with named_in_body():  # vocabularies named in the query: 422
        annotator = Annotator(collections, name, Request(tuple(wanted) if wanted else None, query.top_k, query.min_probability,
                                                         query.manifest, query.regions, query.canvas), base_url(),
                                limit_regions=True)
    return _linked_data(stream_with_context(page_text(annotator)), PAGE_TYPE)


@interop_api.post("/v1/collections/<name>/pictures/<sha256>/review")
def review_picture(name: str, sha256: str) -> tuple[Response, int]:
    """A person's verdict on a term for a picture (accepted or rejected), replacing an earlier one."""
    if not _SHA.match(sha256):
        raise InvalidInput(f"{sha256[:80]!r} is not a sha256 (64 lowercase hexadecimal digits)", code="invalid_sha256")
    body = json_body(ReviewRequest)
    collections = state().collections
    Reviews(collections.engine.store).picture_in(collections.images.get(name).id, sha256)  # the path's: 404
    check_named([body.vocabulary])
    with named_in_body():  # the body's vocabulary: 422
        found = review(collections, name, sha256, body)
    return answer(ReviewAnswer(review=found))
