"""The REST API (GUIDE §4). Views parse a request into its model, call the engine, and serialise its
answer; every shape and limit comes from `indexer.schema`."""

from __future__ import annotations

from typing import Any, TypeVar

from flask import Blueprint, Response, jsonify, request
from pydantic import BaseModel
from werkzeug.datastructures import MultiDict

from indexer.errors import InvalidInput
from indexer.pictures.decode import DecodedImage
from indexer.schema import (
    AddPhrases,
    AnalyzeForm,
    AnalyzeJson,
    Answer,
    BatchForm,
    BatchJson,
    CompareForm,
    CompareJson,
    CreateVocabulary,
    PageQuery,
    RemovePhrases,
    VocabularyList,
    form_phrases,
    parse,
    parse_json,
    split_vocabularies,
)

from .access import check_named, hidden_vocabularies
from .errors import named_in_body
from .fetching import caller, fetch_gate
from .openapi import openapi_document
from .state import engine_for, state

api = Blueprint("api", __name__)
M = TypeVar("M", bound=BaseModel)


def answer(model: Answer, status: int = 200) -> tuple[Response, int]:
    return jsonify(model.json_dict()), status


# -- request parsing ------------------------------------------------------------------------------
def json_body(model: type[M]) -> M:
    if not request.is_json:
        raise InvalidInput("send a JSON body with 'Content-Type: application/json'", code="invalid_json")
    return parse_json(model, request.get_data(cache=True))


def sent(*fields: MultiDict[str, str]) -> dict[str, Any]:
    """Form fields or query arguments as they were sent: a field given once is its text, a field
    given several times the list of them, which a model refuses where it expects one value."""
    values: dict[str, list[str]] = {}
    for multi in fields:
        for key, texts in multi.lists():
            values.setdefault(key, []).extend(texts)
    return {k: v[0] if len(v) == 1 else v for k, v in values.items()}


def form(model: type[M], **files: Any) -> M:
    """A multipart (or url-encoded) request as `model`: its fields and files (query arguments are the
    operation's own, documented apart)."""
    return parse(model, {**sent(request.form), **{k: v for k, v in files.items() if v is not None}})


def uploads() -> list[tuple[str, bytes]]:
    """(name, bytes) of each multipart `image` field. An `image` part must be a file part (with a
    filename, as the document's encoding says): a part without one reaches the app as text, its
    bytes already decoded, and is refused with a clear message rather than as a broken picture."""
    if "image" in request.form:
        raise InvalidInput(
            "the 'image' field arrived as text, not as a file part (a multipart part needs a filename): send the "
            "picture as a file (curl -F image=@picture.jpg)",
            code="missing_image",
        )
    return [(_safe_name(f.filename, i), f.read()) for i, f in enumerate(request.files.getlist("image"))]


def _safe_name(filename: str | None, i: int) -> str:
    name = (filename or f"image[{i}]").encode("utf-8", "replace").decode("utf-8")
    return "".join(ch if ch.isprintable() else "?" for ch in name)[:200]


def phrases_field() -> str | None:
    """The form's `phrases` text: a field given several times is read as lines of one text."""
    values = request.form.getlist("phrases")
    return values[0] if len(values) == 1 else ("\n".join(values) or None)


def one_upload() -> tuple[str, bytes | None]:
    found = uploads()
    if len(found) > 1:
        raise InvalidInput("one image per request here; use /v1/analyze/batch for several", code="too_many")
    return found[0] if found else ("image", None)


# -- reading ------------------------------------------------------------------------------------
@api.get("/v1/health")
def health() -> tuple[Response, int]:
    return answer(state().health())


@api.get("/v1/models")
def models() -> tuple[Response, int]:
    return answer(state().models_answer())


@api.get("/openapi.json")
def openapi() -> Response:
    return jsonify(openapi_document())


@api.get("/v1/vocabularies")
def list_vocabularies() -> tuple[Response, int]:
    every = state().engine.vocabularies()
    hidden = set(hidden_vocabularies(v.name for v in every if v.private))
    return answer(VocabularyList(vocabularies=[v for v in every if v.name not in hidden]))


@api.get("/v1/vocabularies/<name>")
def show_vocabulary(name: str) -> tuple[Response, int]:
    page = parse(PageQuery, sent(request.args))
    return answer(state().engine.vocabulary_page(name, page))


# -- analysis -----------------------------------------------------------------------------------
@api.post("/v1/analyze")
def analyze() -> tuple[Response, int]:
    params: AnalyzeJson | AnalyzeForm
    if request.is_json:
        params = json_body(AnalyzeJson)
        name = "image_base64"
    else:
        name, upload = one_upload()
        params = form(AnalyzeForm, image=upload)
    engine = engine_for(params.model)
    check_named(split_vocabularies(params.vocabularies), params.relative_to)
    picture = _picture(params, name)
    with named_in_body():  # vocabularies, relative_to
        return answer(engine.analyze(picture, split_vocabularies(params.vocabularies), params.top_k, params.relative_to,
                                     params.languages))


def _picture(params: AnalyzeJson | AnalyzeForm | CompareJson | CompareForm, name: str) -> DecodedImage:
    """The request's picture (for its model's input size): fetched from its URL, base64-decoded by its
    request model, or the upload."""
    engine = engine_for(params.model)
    if params.image_url is not None:
        with fetch_gate().admit(caller()):
            return engine.fetch_picture(params.image_url)
    data = params.image_base64 if isinstance(params, (AnalyzeJson, CompareJson)) else params.image
    assert data is not None  # the model requires one of the two
    return engine.read(data, name)


@api.post("/v1/analyze/batch")
def analyze_batch() -> tuple[Response, int]:
    params: BatchJson | BatchForm
    items: list[tuple[str, bytes | str]]
    if request.is_json:
        params = json_body(BatchJson)
        items = [(f"images_base64[{i}]", data) for i, data in enumerate(params.images_base64 or [])]
        items += [(url, url) for url in params.image_urls or []]
    else:
        files = uploads()
        urls = request.form.getlist("image_url")
        params = form(BatchForm, image=[data for _, data in files] or None, image_url=urls or None)
        items = [*files, *((url, url) for url in params.image_url or [])]
    engine = engine_for(params.model)
    wanted = sum(1 for _, data in items if isinstance(data, str))
    vocabularies = split_vocabularies(params.vocabularies)
    check_named(vocabularies, params.relative_to)
    grant = fetch_gate().admit(caller(), wanted) if wanted else None
    try:  # the grant's slots are given back by the engine once every fetch thread has ended, maybe after this answer
        with named_in_body():
            batch = engine.analyze_batch(items, vocabularies, params.top_k, params.relative_to,
                                         fetches=grant.slots if grant else 1, fetched=grant.release if grant else None,
                                         languages=params.languages)
    finally:
        if grant is not None:
            grant.end_request()
    return answer(batch)


@api.post("/v1/compare")
def compare() -> tuple[Response, int]:
    params: CompareJson | CompareForm
    if request.is_json:
        params = json_body(CompareJson)
        name, phrases = "image_base64", params.phrases
    else:
        name, upload = one_upload()
        params = form(CompareForm, image=upload, phrases=phrases_field())
        phrases = form_phrases(params.phrases)
    return answer(engine_for(params.model).compare(_picture(params, name), phrases))


# -- custom vocabularies --------------------------------------------------------------------------
@api.post("/v1/vocabularies")
def create_vocabulary() -> tuple[Response, int]:
    return answer(state().engine.create_vocabulary(json_body(CreateVocabulary)), 201)


@api.post("/v1/vocabularies/<name>/phrases")
def add_phrases(name: str) -> tuple[Response, int]:
    return answer(state().engine.add_phrases(name, json_body(AddPhrases)))


@api.delete("/v1/vocabularies/<name>/phrases")
def remove_phrases(name: str) -> tuple[Response, int]:
    return answer(state().engine.remove_phrases(name, json_body(RemovePhrases)))


@api.delete("/v1/vocabularies/<name>")
def delete_vocabulary(name: str) -> tuple[Response, int]:
    return answer(state().engine.delete_vocabulary(name))
