"""The OpenAPI 3.1 document served at /openapi.json, generated from the models of `indexer.schema`.

Each operation is one row of `OPERATIONS`; its request and answer schemas, and so every limit, come
from the models, so the document cannot drift from what the views accept and answer. Each row also
declares its `scope` (public, read, analyze, write, admin): the document states it as the operation's
security requirement, and `service.guard` enforces that same declaration for the route (found by
`operation_for`); a route whose row declares none is refused, and tests/test_access_routes.py fails.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from indexer import __version__
from indexer.settings import SCOPES
from indexer.schema import (
    NAME_PATTERN,
    AddPhrases,
    Analysis,
    AnalyzeForm,
    AnalyzeJson,
    BatchAnswer,
    BatchForm,
    BatchJson,
    CompareForm,
    CompareJson,
    CreateVocabulary,
    ErrorBody,
    Health,
    ModelsAnswer,
    PageQuery,
    RemovePhrases,
    VocabularyList,
    VocabularyPage,
    WriteAnswer,
)
from indexer.schema.collections import (
    AddUrlSources,
    AnalysisRow,
    AnalyzeCollection,
    CollectionAnswer,
    CollectionList,
    CollectionView,
    CreateCollection,
    JobAnswer,
    PictureQuery,
    SearchAnswer,
    SearchForm,
    SearchQuery,
)
from indexer.schema.access import AuditList, AuditQuery, CreateKey, KeyAnswer, KeyCreated, KeyList
from indexer.schema.compare_models import CompareModelsAnswer, CompareModelsForm, CompareModelsJson
from indexer.schema.explain import ExplainForm, ExplainJson, ExplainQuery, Explanation
from indexer.schema.explore import (FacetsAnswer, FacetsQuery, MapAnswer, MapQuery, PictureExplainQuery, PictureExplanation,
                                    PictureRecord, PictureRecordQuery, ScoresAnswer,
                                    ScoresQuery)
from indexer.schema.interrogate import InterrogateForm, InterrogateJson, Interrogation
from indexer.schema.interop import AnnotationPageDocument, AnnotationsQuery, ReviewAnswer, ReviewRequest
from indexer.schema.sync import RemovalAnswer, RemovePictures, SyncChanges

ERRORS = {
    400: "Bad input (the message says which field and why), or a key sent in the query string (key_in_query)",
    401: "No key, or a key that is unknown, expired or revoked (unauthorized): send 'Authorization: Bearer <key>'",
    403: "Refused by policy: a key without this operation's scope (forbidden), a read-only vocabulary, writes disabled "
         "on this server, or an image_url the fetch guard refuses (url_refused)",
    404: "The vocabulary, collection or job the path names does not exist, or is private and not granted to this key, or "
         "the request's `model` is not one this server serves (unknown_model)",
    409: "In conflict with what the server holds: exists already, not indexed for this model, a reference "
         "collection with no pictures (empty_collection), or a sync of that stream under way (sync_running)",
    413: "Body, image or the request's pictures together too large",
    422: "The request names a vocabulary, collection or stored picture that does not exist (unknown_vocabulary, "
         "unknown_collection, unknown_picture), or a well-formed value that cannot be used (an expiry in the past; a "
         "callback_url the fetch guard refuses, or one given to a server with no CLIP_GAZE_WEBHOOK_SECRET)",
    429: "Too many requests from this caller (CLIP_GAZE_RATE_LIMIT): try again after Retry-After seconds",
    503: "Model unavailable, or the server is busy (see Retry-After)",
}

# Who may call an operation: `public` (anyone, even with CLIP_GAZE_ANONYMOUS=none: health, this document),
# else a key with that scope (an admin key or a CLIP_GAZE_API_TOKENS token has every scope), or anyone
# when CLIP_GAZE_ANONYMOUS names it.
SCOPE_NAMES = ("public", *SCOPES)


@dataclass(frozen=True)
class Link:
    """An OpenAPI link from an operation's success to another operation (`target`: method and path),
    whose parameters are read from the answer or the request (runtime expressions)."""

    name: str
    target: tuple[str, str]
    parameters: tuple[tuple[str, str], ...]


def _links(parameter: str, expression: str, **targets: str) -> tuple[Link, ...]:
    """Links named as the keywords, to the operations they name ("get /v1/…"), `parameter` from `expression`."""
    links = []
    for name, target in targets.items():
        method, path = target.split(" ", 1)
        links.append(Link(name, (method, path), ((parameter, expression),)))
    return tuple(links)


_VOCABULARY = "$response.body#/vocabulary/name"
_COLLECTION = "$response.body#/collection/name"


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    answer: type[BaseModel] | None
    status: int = 200
    json: type[BaseModel] | None = None
    multipart: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    errors: tuple[int, ...] = ()
    scope: str | None = None  # public, read, analyze, write or admin (None: undeclared, so refused)
    tags: tuple[str, ...] = field(default_factory=tuple)
    body_optional: bool = False
    lines: bool = False  # the answer is JSON Lines (application/x-ndjson), one `answer` per line
    picture: bool = False  # may answer a PNG picture instead (e.g. ?format=png)
    links: tuple[Link, ...] = ()  # where its success leads (what it created, read, changed, deleted)
    media: tuple[str, ...] = ()  # other content types its success may have (Arrow, a thumbnail)
    also: tuple[int, ...] = ()  # other success statuses, with the same answer
    linked_data: bool = False  # a JSON-LD document (application/ld+json; application/json to who asks for it)

    def __post_init__(self) -> None:
        if self.scope is not None and self.scope not in SCOPE_NAMES:
            raise ValueError(f"{self.method} {self.path}: scope {self.scope!r} is none of {', '.join(SCOPE_NAMES)}")


# 403: an image_url refused (for a batch, in the picture's own entry); 409: not indexed for this model,
# or relative_to names an empty collection; 422: `vocabularies` or `relative_to` name nothing.
# 404: `model` names no model this server serves (unknown_model).
_ANALYSIS_ERRORS = (400, 403, 404, 409, 413, 422, 503)
OPERATIONS = (
    Operation("get", "/v1/health", "Health: ready once the model and indexes are loaded", Health, scope="public"),
    Operation("get", "/v1/models", "The models this server serves (its default first), and the presets", ModelsAnswer, scope="read"),
    Operation("get", "/openapi.json", "This document", None, scope="public"),
    Operation("get", "/v1/vocabularies", "Every vocabulary, built-in and custom", VocabularyList, scope="read"),
    Operation("get", "/v1/vocabularies/{name}", "A vocabulary and a page of its phrases", VocabularyPage,
              query=PageQuery, errors=(400, 404), scope="read"),
    Operation("post", "/v1/vocabularies", "Create a custom vocabulary", WriteAnswer, 201, json=CreateVocabulary,
              errors=(400, 401, 403, 409, 413, 422),  # 422: a language the model cannot read (NLLB-CLIP)
              links=_links("name", _VOCABULARY, ShowVocabulary="get /v1/vocabularies/{name}",
                           AddPhrases="post /v1/vocabularies/{name}/phrases",
                           RemovePhrases="delete /v1/vocabularies/{name}/phrases",
                           DeleteVocabulary="delete /v1/vocabularies/{name}"), scope="write"),
    Operation("post", "/v1/vocabularies/{name}/phrases", "Add phrases (idempotent)", WriteAnswer, json=AddPhrases,
              errors=(400, 401, 403, 404, 413, 422), scope="write"),
    Operation("delete", "/v1/vocabularies/{name}/phrases", "Remove phrases by term or external id", WriteAnswer,
              json=RemovePhrases, errors=(400, 401, 403, 404, 413), scope="write"),
    Operation("delete", "/v1/vocabularies/{name}", "Delete a custom vocabulary", WriteAnswer,
              errors=(400, 401, 403, 404), scope="write"),
    Operation("post", "/v1/analyze", "Relative likelihoods of each vocabulary's phrases for one image", Analysis,
              json=AnalyzeJson, multipart=AnalyzeForm, errors=_ANALYSIS_ERRORS, scope="analyze"),
    Operation("post", "/v1/analyze/batch", "Several images; each picture that fails gets its own error entry",
              BatchAnswer, json=BatchJson, multipart=BatchForm, errors=(400, 404, 409, 413, 422, 503), scope="analyze"),
    Operation("post", "/v1/compare", "Softmax over exactly the phrases given; nothing is stored", Analysis,
              json=CompareJson, multipart=CompareForm, errors=(400, 403, 404, 413, 503), scope="analyze"),
    Operation("post", "/v1/explain", "An analysis with a map for every match (format=png: the overlay, image/png)",
              Explanation, json=ExplainJson, multipart=ExplainForm, query=ExplainQuery, errors=(400, 404, 409, 413, 422, 503),
              picture=True, scope="analyze"),
    Operation("post", "/v1/compare-models", "One picture under several models side by side, with their rank agreement",
              CompareModelsAnswer, json=CompareModelsJson, multipart=CompareModelsForm,
              errors=(400, 403, 404, 409, 413, 422, 503), scope="analyze"),
    Operation("post", "/v1/interrogate", "The prompt a generator built on CLIP would answer to, each part scored",
              Interrogation, json=InterrogateJson, multipart=InterrogateForm, errors=(*_ANALYSIS_ERRORS, 404), scope="analyze"),
)

_COLLECTIONS = (
    Operation("get", "/v1/collections", "Every collection", CollectionList, scope="read"),
    Operation("post", "/v1/collections", "Create a collection", CollectionAnswer, 201, json=CreateCollection,
              errors=(400, 401, 403, 409, 413),
              links=_links("name", _COLLECTION, ShowCollection="get /v1/collections/{name}",
                           AddSources="post /v1/collections/{name}/sources",
                           SearchCollection="get /v1/collections/{name}/search",
                           AnalyzeCollection="post /v1/collections/{name}/analyze",
                           DeleteCollection="delete /v1/collections/{name}",
                           MapCollection="get /v1/collections/{name}/map",
                           ScoreCollection="get /v1/collections/{name}/scores",
                           FacetCollection="get /v1/collections/{name}/facets",
                           SearchByPicture="post /v1/collections/{name}/search",
                           AnnotateCollection="get /v1/collections/{name}/annotations",
                           RemovePictures="delete /v1/collections/{name}/pictures",
                           SyncCollection="post /v1/collections/{name}/sync"), scope="write"),
    Operation("get", "/v1/collections/{name}", "A collection and a page of its pictures (or of those that failed)",
              CollectionView, query=PictureQuery, errors=(400, 404), scope="read"),
    Operation("delete", "/v1/collections/{name}", "Delete a collection (the pictures' embeddings stay)", CollectionAnswer,
              errors=(400, 401, 403, 404), scope="write"),
    Operation("post", "/v1/collections/{name}/sources", "Add sources by URL: a background job (202)", JobAnswer, 202,
              json=AddUrlSources, errors=(400, 401, 403, 404, 413, 422),
              links=(*_links("job_id", "$response.body#/job/id", ShowJob="get /v1/jobs/{job_id}"),
                     *_links("name", "$request.path.name", ShowCollection="get /v1/collections/{name}")), scope="write"),
    Operation("get", "/v1/jobs/{job_id}", "A job's progress, counts and errors", JobAnswer, errors=(404,), scope="read"),
    Operation("get", "/v1/collections/{name}/search", "The collection's pictures closest to a phrase", SearchAnswer,
              query=SearchQuery, errors=(400, 404, 409, 422), scope="read"),
    Operation("post", "/v1/collections/{name}/analyze", "Score every stored picture; rows streamed as JSON Lines",
              AnalysisRow, json=AnalyzeCollection, errors=(400, 404, 409, 413, 422), body_optional=True, lines=True, scope="analyze"),
)
_EXPLORE = (
    Operation("get", "/v1/collections/{name}/map", "The collection's 2-D map (UMAP); 202 with the job while the first "
              "is computed, the older layout with the job while a newer one is (format=arrow: Arrow IPC)", MapAnswer,
              query=MapQuery, errors=(400, 404, 409), media=("application/vnd.apache.arrow.stream",), also=(202,), scope="read"),
    Operation("get", "/v1/collections/{name}/scores", "Each picture's best phrase of a vocabulary and its probability, and "
              "a phrase's probability within it (columns, in the map's order; `where` filters)", ScoresAnswer,
              query=ScoresQuery, errors=(400, 404, 409, 422), scope="read"),
    Operation("get", "/v1/collections/{name}/facets", "How many pictures have each phrase of a vocabulary as their best "
              "(`where` filters)", FacetsAnswer, query=FacetsQuery, errors=(400, 404, 409, 422), scope="read"),
    Operation("get", "/v1/collections/{name}/pictures/{sha256}", "A picture's record: source, ids, metadata, size, "
              "IIIF service and manifest; with vocabularies, its best phrases of each", PictureRecord, query=PictureRecordQuery,
              errors=(400, 404, 409, 422), scope="read"),
    Operation("post", "/v1/collections/{name}/search", "The collection's pictures closest to a picture sent",
              SearchAnswer, multipart=SearchForm, errors=(400, 404, 409, 413, 503), scope="analyze"),
    Operation("get", "/v1/collections/{name}/pictures/{sha256}/thumbnail", "The picture's thumbnail (256 px; ETag: "
              "its hash)", None, errors=(404,), media=("image/webp", "image/jpeg"), scope="read"),
    Operation("get", "/v1/collections/{name}/pictures/{sha256}/explain", "The picture's explanation maps, from its source "
              "read again at the model's input size where it can be, else from its thumbnail (`explained_from`; "
              "format=png: the overlay)", PictureExplanation, query=PictureExplainQuery, errors=(400, 404, 409, 422, 503),
              media=("image/png",), scope="analyze"),
)
_INTEROP = (  # back into a museum's systems (service/api_interop.py)
    Operation("get", "/v1/collections/{name}/annotations", "IIIF Presentation 3 AnnotationPage of the matches (JSON-LD): "
              "of one manifest's pictures, else of those read from no manifest", AnnotationPageDocument,
              query=AnnotationsQuery, errors=(400, 404, 409, 413, 422), linked_data=True, scope="analyze"),
    Operation("get", "/v1/annotations/context.jsonld", "clip-gaze's JSON-LD context: the terms of the annotations' "
              "scores and reviews", None, linked_data=True, scope="public"),
    Operation("post", "/v1/collections/{name}/pictures/{sha256}/review", "A person's verdict on a term for a picture "
              "(replaces an earlier one)", ReviewAnswer, json=ReviewRequest, errors=(400, 401, 403, 404, 413, 422), scope="write"),
    Operation("delete", "/v1/collections/{name}/pictures", "Remove pictures (stored or failed) by external id or source, "
              "in one transaction (their embeddings stay)", RemovalAnswer, json=RemovePictures,
              errors=(400, 401, 403, 404, 413), scope="write"),
    Operation("post", "/v1/collections/{name}/sync", "Sync with a IIIF Change Discovery stream: a background job (202)",
              JobAnswer, 202, json=SyncChanges, errors=(400, 401, 403, 404, 409, 413, 422),
              links=(*_links("job_id", "$response.body#/job/id", ShowJob="get /v1/jobs/{job_id}"),
                     *_links("name", "$request.path.name", ShowCollection="get /v1/collections/{name}")), scope="write"),
)

_ACCESS = (
    Operation("get", "/v1/keys", "Every API key: its scopes, grants, expiry and last use (never a secret)", KeyList,
              scope="admin"),
    Operation("post", "/v1/keys", "Create an API key: the answer holds its secret, once", KeyCreated, 201, json=CreateKey,
              errors=(400, 409, 413, 422), scope="admin",
              links=_links("name", "$response.body#/key/name", RevokeKey="delete /v1/keys/{name}")),
    Operation("delete", "/v1/keys/{name}", "Revoke an API key: refused from now on", KeyAnswer, errors=(404,), scope="admin"),
    Operation("get", "/v1/audit", "The writes accepted, oldest first, with the key that made each", AuditList,
              query=AuditQuery, errors=(400,), scope="admin"),
)
ALL_OPERATIONS: tuple[Operation, ...] = (*OPERATIONS, *_COLLECTIONS, *_EXPLORE, *_INTEROP, *_ACCESS)

_REF = "#/components/schemas/{model}"
# Each multipart `image` part: a picture, sent as a file part (a part without a filename is text to the server).
IMAGE_PART = {
    "contentType": "image/*",
    "headers": {
        "Content-Disposition": {
            "required": True,
            "description": "A file part: it names a filename (any name; the picture's format is read from its bytes)",
            "schema": {"type": "string", "pattern": "filename="},
            "example": 'form-data; name="image"; filename="picture.jpg"',
        }
    },
}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": _REF.format(model=model.__name__)}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _operation_id(method: str, path: str) -> str:
    return f"{method}_{path.strip('/').replace('/', '_').replace('.', '_')}"


def _operation(op: Operation) -> dict[str, Any]:
    out: dict[str, Any] = {"summary": op.summary, "operationId": _operation_id(op.method, op.path)}
    params: list[dict[str, Any]] = []
    if "{name}" in op.path:
        what = {"/v1/collections": "Collection", "/v1/keys": "Key"}.get(op.path[:op.path.index("/{name}")], "Vocabulary")
        params.append({"name": "name", "in": "path", "required": True,
                       "schema": {"type": "string", "pattern": NAME_PATTERN}, "description": f"{what} name"})
    if "{job_id}" in op.path:
        params.append({"name": "job_id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1},
                       "description": "As POST /v1/collections/{name}/sources answered it"})
    if "{sha256}" in op.path:
        params.append({"name": "sha256", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                       "description": "The sha256 of the picture's bytes, as the collection's pictures give it"})
    if op.query is not None:
        schema = op.query.model_json_schema()
        for key, prop in schema["properties"].items():
            params.append({"name": key, "in": "query", "required": key in schema.get("required", []),
                           "schema": _drop_null_defaults(prop)})
    if params:
        out["parameters"] = params
    content: dict[str, Any] = {}
    if op.multipart is not None:
        content["multipart/form-data"] = {"schema": _ref(op.multipart), "encoding": {"image": IMAGE_PART}}
    if op.json is not None:
        content["application/json"] = {"schema": _ref(op.json)}
    if content:
        out["requestBody"] = {"required": not op.body_optional, "content": content}
    ok_schema = _ref(op.answer) if op.answer is not None else {"type": "object"}
    responses: dict[str, Any] = {str(op.status): _json(ok_schema, "Success")}
    if op.lines:
        responses[str(op.status)] = {"description": "JSON Lines: one object a line, streamed",
                                     "content": {"application/x-ndjson": {"schema": ok_schema}}}
    if op.linked_data:
        content_ok = responses[str(op.status)]["content"]
        content_ok["application/ld+json"] = content_ok["application/json"]
    if op.picture:
        responses[str(op.status)]["content"]["image/png"] = {"schema": {"type": "string", "format": "binary"}}
    if op.media and op.answer is None:
        responses[str(op.status)] = {"description": "Success", "content": {}}
    for media in op.media:
        responses[str(op.status)]["content"][media] = {"schema": {"type": "string", "format": "binary"}}
    for status in op.also:
        responses[str(status)] = responses[str(op.status)]
    if op.links:
        responses[str(op.status)]["links"] = {
            link.name: {"operationId": _operation_id(*link.target), "parameters": dict(link.parameters)} for link in op.links
        }
    for status in (*sorted(set(op.errors) | set(_refusals(op.scope))), 500):
        responses[str(status)] = _json(_ref(ErrorBody), ERRORS.get(status, "Unexpected error (the server log has the details)"))
    responses["default"] = _json(_ref(ErrorBody), "Any other error, in the same shape")
    out["responses"] = responses
    if op.scope == "public":
        out["security"] = []  # no key needed, whatever CLIP_GAZE_ANONYMOUS says
    elif op.scope is not None:
        out["security"] = [{"bearer": [op.scope]}]  # a key with this scope (or anyone, if CLIP_GAZE_ANONYMOUS names it)
    return out


def _refusals(scope: str | None) -> tuple[int, ...]:
    """What the access guard may answer before the view (service.guard): a key in the query (400), no or a bad
    key (401), a key without the scope (403), too many requests (429)."""
    return (400,) if scope == "public" else (400, 401, 403, 429)


def _flask_template(rule: str) -> str:
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


@lru_cache(maxsize=1)
def _by_route() -> dict[tuple[str, str], Operation]:
    return {(op.path, op.method): op for op in ALL_OPERATIONS}


def operation_for(rule: str, method: str) -> Operation | None:
    """The operation a Flask URL rule (`/v1/collections/<name>`) serves for `method` (HEAD as GET), if documented."""
    method = "get" if method.upper() == "HEAD" else method.lower()
    return _by_route().get((_flask_template(rule), method))


def _drop_null_defaults(node: Any) -> Any:
    """Optional fields that must not be sent as null have a None default in Python: not in the schema."""
    if isinstance(node, dict):
        return {k: _drop_null_defaults(v) for k, v in node.items() if not (k == "default" and v is None)}
    if isinstance(node, list):
        return [_drop_null_defaults(v) for v in node]
    return node


@lru_cache(maxsize=1)
def openapi_document() -> dict[str, Any]:
    models = {m for op in ALL_OPERATIONS for m in (op.answer, op.json, op.multipart) if m is not None} | {ErrorBody}
    _, defs = models_json_schema([(m, "validation") for m in sorted(models, key=lambda m: m.__name__)], ref_template=_REF)
    defs = _drop_null_defaults(defs)
    paths: dict[str, Any] = {}
    for op in ALL_OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "clip-gaze",
            "version": __version__,
            "description": (
                "See images the way CLIP sees them. Every probability is a relative likelihood within one "
                "vocabulary: the softmax, over all of its phrases (softmax_over), of logit_scale × cosine. It says "
                "which phrase CLIP prefers among those offered, not how accurate a phrase is."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {"bearer": {
                "type": "http", "scheme": "bearer",
                "description": "An API key (`clip-gaze keys create`, POST /v1/keys) or a token of CLIP_GAZE_API_TOKENS (every "
                               "scope). Each operation's security requirement names the scope it needs (read, analyze, "
                               "write, admin; an admin key has them all); callers without a key have the scopes of "
                               "CLIP_GAZE_ANONYMOUS (by default read and analyze). Never send a key in the query string."}},
        },
    }
