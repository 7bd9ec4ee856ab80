"""The OpenAPI 3.1 document served at /openapi.json, generated from the models of `indexer.schema`.

Each operation is one row of `OPERATIONS`; its request and answer schemas, and so every limit, come
from the models, so the document cannot drift from what the views accept and answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from indexer import __version__
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
from indexer.schema.explain import ExplainForm, ExplainJson, ExplainQuery, Explanation
from indexer.schema.explore import (FacetsAnswer, FacetsQuery, MapAnswer, MapQuery, PictureRecord, PictureRecordQuery, ScoresAnswer,
                                    ScoresQuery)

ERRORS = {
    400: "Bad input (the message says which field and why)",
    401: "Missing or wrong bearer token",
    403: "Refused by policy: a read-only vocabulary, writes disabled on this server, or an image_url the fetch "
         "guard refuses (url_refused)",
    404: "The vocabulary, collection or job the path names does not exist",
    409: "In conflict with what the server holds: exists already, not indexed for this model, or a reference "
         "collection with no pictures (empty_collection)",
    413: "Body, image or the request's pictures together too large",
    422: "The body names a vocabulary or collection that does not exist (unknown_vocabulary, unknown_collection)",
    503: "Model unavailable, or the server is busy (see Retry-After)",
}


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
    auth: bool = False
    tags: tuple[str, ...] = field(default_factory=tuple)
    body_optional: bool = False
    lines: bool = False  # the answer is JSON Lines (application/x-ndjson), one `answer` per line
    picture: bool = False  # may answer a PNG picture instead (e.g. ?format=png)
    links: tuple[Link, ...] = ()  # where its success leads (what it created, read, changed, deleted)
    media: tuple[str, ...] = ()  # other content types its success may have (Arrow, a thumbnail)
    also: tuple[int, ...] = ()  # other success statuses, with the same answer


# 403: an image_url refused (for a batch, in the picture's own entry); 409: not indexed for this model,
# or relative_to names an empty collection; 422: `vocabularies` or `relative_to` name nothing.
_ANALYSIS_ERRORS = (400, 403, 409, 413, 422, 503)
OPERATIONS = (
    Operation("get", "/v1/health", "Health: ready once the model and indexes are loaded", Health),
    Operation("get", "/v1/models", "The model this server uses, and the presets", ModelsAnswer),
    Operation("get", "/openapi.json", "This document", None),
    Operation("get", "/v1/vocabularies", "Every vocabulary, built-in and custom", VocabularyList),
    Operation("get", "/v1/vocabularies/{name}", "A vocabulary and a page of its phrases", VocabularyPage,
              query=PageQuery, errors=(400, 404)),
    Operation("post", "/v1/vocabularies", "Create a custom vocabulary", WriteAnswer, 201, json=CreateVocabulary,
              errors=(400, 401, 403, 409, 413), auth=True,
              links=_links("name", _VOCABULARY, ShowVocabulary="get /v1/vocabularies/{name}",
                           AddPhrases="post /v1/vocabularies/{name}/phrases",
                           RemovePhrases="delete /v1/vocabularies/{name}/phrases",
                           DeleteVocabulary="delete /v1/vocabularies/{name}")),
    Operation("post", "/v1/vocabularies/{name}/phrases", "Add phrases (idempotent)", WriteAnswer, json=AddPhrases,
              errors=(400, 401, 403, 404, 413), auth=True),
    Operation("delete", "/v1/vocabularies/{name}/phrases", "Remove phrases by term or external id", WriteAnswer,
              json=RemovePhrases, errors=(400, 401, 403, 404, 413), auth=True),
    Operation("delete", "/v1/vocabularies/{name}", "Delete a custom vocabulary", WriteAnswer,
              errors=(400, 401, 403, 404), auth=True),
    Operation("post", "/v1/analyze", "Relative likelihoods of each vocabulary's phrases for one image", Analysis,
              json=AnalyzeJson, multipart=AnalyzeForm, errors=_ANALYSIS_ERRORS),
    Operation("post", "/v1/analyze/batch", "Several images; each picture that fails gets its own error entry",
              BatchAnswer, json=BatchJson, multipart=BatchForm, errors=(400, 409, 413, 422, 503)),
    Operation("post", "/v1/compare", "Softmax over exactly the phrases given; nothing is stored", Analysis,
              json=CompareJson, multipart=CompareForm, errors=(400, 403, 413, 503)),
    Operation("post", "/v1/explain", "An analysis with a map for every match (format=png: the overlay, image/png)",
              Explanation, json=ExplainJson, multipart=ExplainForm, query=ExplainQuery, errors=(400, 409, 413, 422, 503),
              picture=True),
)

_COLLECTIONS = (
    Operation("get", "/v1/collections", "Every collection", CollectionList),
    Operation("post", "/v1/collections", "Create a collection", CollectionAnswer, 201, json=CreateCollection,
              errors=(400, 401, 403, 409, 413), auth=True,
              links=_links("name", _COLLECTION, ShowCollection="get /v1/collections/{name}",
                           AddSources="post /v1/collections/{name}/sources",
                           SearchCollection="get /v1/collections/{name}/search",
                           AnalyzeCollection="post /v1/collections/{name}/analyze",
                           DeleteCollection="delete /v1/collections/{name}")),
    Operation("get", "/v1/collections/{name}", "A collection and a page of its pictures (or of those that failed)",
              CollectionView, query=PictureQuery, errors=(400, 404)),
    Operation("delete", "/v1/collections/{name}", "Delete a collection (the pictures' embeddings stay)", CollectionAnswer,
              errors=(400, 401, 403, 404), auth=True),
    Operation("post", "/v1/collections/{name}/sources", "Add sources by URL: a background job (202)", JobAnswer, 202,
              json=AddUrlSources, errors=(400, 401, 403, 404, 413), auth=True,
              links=(*_links("job_id", "$response.body#/job/id", ShowJob="get /v1/jobs/{job_id}"),
                     *_links("name", "$request.path.name", ShowCollection="get /v1/collections/{name}"))),
    Operation("get", "/v1/jobs/{job_id}", "A job's progress, counts and errors", JobAnswer, errors=(404,)),
    Operation("get", "/v1/collections/{name}/search", "The collection's pictures closest to a phrase", SearchAnswer,
              query=SearchQuery, errors=(400, 404, 409)),
    Operation("post", "/v1/collections/{name}/analyze", "Score every stored picture; rows streamed as JSON Lines",
              AnalysisRow, json=AnalyzeCollection, errors=(400, 404, 409, 413, 422), body_optional=True, lines=True),
)
_EXPLORE = (
    Operation("get", "/v1/collections/{name}/map", "The collection's 2-D map (UMAP); 202 with the job while the first "
              "is computed, the older layout with the job while a newer one is (format=arrow: Arrow IPC)", MapAnswer,
              query=MapQuery, errors=(400, 404, 409), media=("application/vnd.apache.arrow.stream",), also=(202,)),
    Operation("get", "/v1/collections/{name}/scores", "Each picture's best phrase of a vocabulary and its probability, and "
              "a phrase's probability within it (columns, in the map's order; `where` filters)", ScoresAnswer,
              query=ScoresQuery, errors=(400, 404, 409, 422)),
    Operation("get", "/v1/collections/{name}/facets", "How many pictures have each phrase of a vocabulary as their best "
              "(`where` filters)", FacetsAnswer, query=FacetsQuery, errors=(400, 404, 409, 422)),
    Operation("get", "/v1/collections/{name}/pictures/{sha256}", "A picture's record: source, ids, metadata, size, "
              "IIIF service and manifest; with vocabularies, its best phrases of each", PictureRecord, query=PictureRecordQuery,
              errors=(400, 404, 409, 422)),
    Operation("post", "/v1/collections/{name}/search", "The collection's pictures closest to a picture sent",
              SearchAnswer, multipart=SearchForm, errors=(400, 404, 409, 413, 503)),
    Operation("get", "/v1/collections/{name}/pictures/{sha256}/thumbnail", "The picture's thumbnail (256 px; ETag: "
              "its hash)", None, errors=(404,), media=("image/webp", "image/jpeg")),
)
ALL_OPERATIONS: tuple[Operation, ...] = (*OPERATIONS, *_COLLECTIONS, *_EXPLORE)

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
        what = "Collection" if op.path.startswith("/v1/collections") else "Vocabulary"
        params.append({"name": "name", "in": "path", "required": True,
                       "schema": {"type": "string", "pattern": NAME_PATTERN}, "description": f"{what} name"})
    if "{job_id}" in op.path:
        params.append({"name": "job_id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1},
                       "description": "As POST /v1/collections/{name}/sources answered it"})
    if "{sha256}" in op.path:
        params.append({"name": "sha256", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                       "description": "The sha256 of the picture's content"})
    if op.query is not None:
        schema = op.query.model_json_schema()
        for key, prop in schema["properties"].items():
            params.append({"name": key, "in": "query", "required": key in schema.get("required", []), "schema": prop})
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
    if op.picture:
        responses[str(op.status)]["content"]["image/png"] = {"schema": {"type": "string", "format": "binary"}}
    for media in op.media:
        if op.answer is None:
            responses[str(op.status)] = {"description": "Success", "content": {}}
        responses[str(op.status)]["content"][media] = {"schema": {"type": "string", "format": "binary"}}
    for status in op.also:
        responses[str(status)] = responses[str(op.status)]
    if op.links:
        responses[str(op.status)]["links"] = {
            link.name: {"operationId": _operation_id(*link.target), "parameters": dict(link.parameters)} for link in op.links
        }
    for status in (*op.errors, 500):
        responses[str(status)] = _json(_ref(ErrorBody), ERRORS.get(status, "Unexpected error (the server log has the details)"))
    responses["default"] = _json(_ref(ErrorBody), "Any other error, in the same shape")
    out["responses"] = responses
    if op.auth:
        out["security"] = [{"bearer": []}]
    return out


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
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "A token from CLIP_GAZE_API_TOKENS"}},
        },
    }
