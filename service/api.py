"""The REST API (GUIDE §4). Views parse input and format output; the engine does the work."""

from __future__ import annotations

import base64
import binascii
import json
import time
from typing import Any

from flask import Blueprint, Response, jsonify, request

from indexer.engine import check_top_k, rest_answer
from indexer.errors import InvalidInput
from indexer.models import list_presets

from .app import state
from .auth import require_token
from .images import DecodedImage, decode_image
from .openapi import openapi_document

api = Blueprint("api", __name__)

MAX_BATCH_IMAGES = 64
DEFAULT_TOP_K = 10


# -- request parsing ------------------------------------------------------------------------------
def json_body(required: bool = True) -> dict[str, Any]:
    if not request.is_json:
        if required:
            raise InvalidInput("send a JSON body with 'Content-Type: application/json'", code="invalid_json")
        return {}
    try:
        body = json.loads(request.get_data(cache=True) or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"the body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise InvalidInput("the JSON body must be an object", code="invalid_json")
    return body


def param(body: dict[str, Any], name: str) -> Any:
    """From the JSON body, else the form, else the query string."""
    if name in body:
        return body[name]
    if name in request.form:
        return request.form[name]
    return request.args.get(name)


def parse_vocabularies(value: Any) -> list[str] | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()] or None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [v.strip() for v in value if v.strip()] or None
    raise InvalidInput("'vocabularies' must be a comma-separated string or a list of names", code="invalid_input")


def parse_top_k(value: Any) -> int:
    if value is None or value == "":
        return DEFAULT_TOP_K
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise InvalidInput(f"top_k must be a whole number, not {value!r}", code="invalid_top_k") from None
    return check_top_k(value)


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{what} must be a base64 string", code="invalid_base64")
    if value.startswith("data:") and "," in value:
        value = value.split(",", 1)[1]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{what} is not valid base64", code="invalid_base64") from None


def uploaded_images(body: dict[str, Any], many: bool) -> list[tuple[str, bytes]]:
    """(name, bytes) of the images in a multipart `image` field (repeatable) or JSON base64."""
    found: list[tuple[str, bytes]] = []
    for i, f in enumerate(request.files.getlist("image")):
        found.append((f.filename or f"image[{i}]", f.read()))
    if "image_base64" in body:
        found.append(("image_base64", _b64(body["image_base64"], "image_base64")))
    if many and "images_base64" in body:
        items = body["images_base64"]
        if not isinstance(items, list):
            raise InvalidInput("images_base64 must be a list of base64 strings", code="invalid_base64")
        found.extend((f"images_base64[{i}]", _b64(v, f"images_base64[{i}]")) for i, v in enumerate(items))
    if not found:
        raise InvalidInput(
            "no image: send a multipart field 'image' (curl -F image=@picture.jpg) or JSON {\"image_base64\": …}",
            code="missing_image",
        )
    if not many and len(found) > 1:
        raise InvalidInput("one image per request here; use /v1/analyze/batch for several", code="too_many")
    if len(found) > MAX_BATCH_IMAGES:
        raise InvalidInput(f"{len(found)} images; a batch takes at most {MAX_BATCH_IMAGES}", code="too_many")
    return found


def decode(name: str, data: bytes) -> DecodedImage:
    st = state()
    return decode_image(data, st.settings.max_pixels, draft=2 * st.engine.model.image_size, name=name)


def single_image(body: dict[str, Any]) -> tuple[DecodedImage, float]:
    """The request's one image, decoded, and how long decoding took (ms)."""
    (name, data), = uploaded_images(body, many=False)
    t0 = time.perf_counter()
    decoded = decode(name, data)
    return decoded, (time.perf_counter() - t0) * 1000


def parse_phrases_field(body: dict[str, Any]) -> list[str]:
    """`phrases` for /v1/compare: a JSON list, repeated form fields, or one field of lines."""
    if "phrases" in body:
        value = body["phrases"]
        if not isinstance(value, list):
            raise InvalidInput("'phrases' must be a list of strings", code="invalid_phrase")
        return value
    values = request.form.getlist("phrases")
    if len(values) == 1:
        text = values[0].strip()
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except ValueError:
                raise InvalidInput("'phrases' looks like JSON but is not valid JSON", code="invalid_phrase") from None
            if not isinstance(parsed, list):
                raise InvalidInput("'phrases' must be a JSON list of strings", code="invalid_phrase")
            return parsed
        return [line for line in text.splitlines() if line.strip()]
    return values


# -- reading ------------------------------------------------------------------------------------
@api.get("/v1/health")
def health() -> Response:
    return jsonify(ok=True, **state().health())


@api.get("/v1/models")
def models() -> Response:
    st = state()
    engine = st.engine
    current = engine.spec.describe()
    if engine.model_loaded:
        current["logit_scale"] = engine.model.logit_scale
    presets = [{"preset": p.name, "arch": p.arch, "pretrained": p.pretrained, "description": p.description,
                **({"config": p.config} if p.config else {})} for p in list_presets()]
    return jsonify(ok=True, model=current, models=presets)


@api.get("/openapi.json")
def openapi() -> Response:
    return jsonify(openapi_document())


@api.get("/v1/vocabularies")
def list_vocabularies() -> Response:
    st = state()
    st.sync_builtins()
    default = set(st.engine.default_vocabularies())
    vocabs = [{**r.to_json(), "default": r.name in default} for r in st.engine.store.list_vocabularies()]
    return jsonify(ok=True, vocabularies=vocabs)


@api.get("/v1/vocabularies/<name>")
def show_vocabulary(name: str) -> Response:
    engine = state().engine
    engine.resolve([name])
    offset = _int_arg("offset", 0, 0, 10**9)
    limit = _int_arg("limit", 100, 1, 1000)
    row = engine.store.get_vocabulary(name)
    phrases, next_offset = engine.store.phrases_page(name, offset, limit)
    return jsonify(ok=True, vocabulary=row.to_json(), phrases=phrases, next_offset=next_offset)


def _int_arg(name: str, default: int, lo: int, hi: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be a whole number, not {raw!r}") from None
    if not lo <= value <= hi:
        raise InvalidInput(f"{name} must be from {lo} to {hi}")
    return value


# -- analysis -----------------------------------------------------------------------------------
def analysis_params(body: dict[str, Any]) -> tuple[list[str], int]:
    """The vocabularies asked for (checked to exist) and top_k, from the body, form or query."""
    names = state().engine.resolve(parse_vocabularies(param(body, "vocabularies")))
    return names, parse_top_k(param(body, "top_k"))


@api.post("/v1/analyze")
def analyze() -> Response:
    body = json_body(required=False)
    st = state()
    names, top_k = analysis_params(body)
    decoded, decode_ms = single_image(body)
    result = st.engine.analyze_many([decoded.image], names, top_k, embed=st.embed_images)[0]
    return jsonify(rest_answer(result, decoded.info(), decode_ms))


@api.post("/v1/analyze/batch")
def analyze_batch() -> Response:
    body = json_body(required=False)
    st = state()
    names, top_k = analysis_params(body)
    t_start = time.perf_counter()
    items: list[dict[str, Any]] = []
    good: list[tuple[int, DecodedImage]] = []
    for i, (name, data) in enumerate(uploaded_images(body, many=True)):
        try:
            good.append((i, decode(name, data)))
            items.append({})
        except InvalidInput as exc:  # one bad picture does not sink the batch
            items.append({"ok": False, "index": i, "name": name, "status": exc.status, "code": exc.code, "error": exc.message})
    model_json: dict[str, Any] | None = None
    if good:
        results = st.engine.analyze_many([d.image for _, d in good], names, top_k, embed=st.embed_images)
        for (i, decoded), result in zip(good, results):
            items[i] = {"ok": True, "index": i, "image": decoded.info(), "results": result["results"]}
            model_json = result["model"]
    return jsonify(
        ok=True,
        model=model_json or st.engine.model_json(),
        count=len(items),
        failed=sum(1 for it in items if not it["ok"]),
        results=items,
        timing_ms=round((time.perf_counter() - t_start) * 1000, 2),
    )


@api.post("/v1/compare")
def compare() -> Response:
    body = json_body(required=False)
    st = state()
    phrases = parse_phrases_field(body)
    decoded, decode_ms = single_image(body)
    result = st.engine.compare(decoded.image, phrases, persist=False, embed=st.embed_images)
    return jsonify(rest_answer(result, decoded.info(), decode_ms))


# -- custom vocabularies --------------------------------------------------------------------------
@api.post("/v1/vocabularies")
@require_token
def create_vocabulary() -> tuple[Response, int]:
    body = json_body()
    unknown = set(body) - {"name", "description", "template", "templates", "phrases"}
    if unknown:
        raise InvalidInput(f"unknown field(s): {', '.join(sorted(unknown))}")
    templates = body.get("templates", body.get("template"))
    engine = state().engine
    result = engine.create_vocabulary(body.get("name"), body.get("phrases"), templates, body.get("description"))
    row = engine.store.get_vocabulary(result.vocabulary)
    return jsonify({"ok": True, **result.to_json(), "vocabulary": row.to_json()}), 201


@api.post("/v1/vocabularies/<name>/phrases")
@require_token
def add_phrases(name: str) -> Response:
    body = json_body()
    if "phrases" not in body:
        raise InvalidInput("send {\"phrases\": [...]}", code="invalid_phrase")
    result = state().engine.add_phrases(name, body["phrases"])
    return jsonify(ok=True, **result.to_json())


@api.delete("/v1/vocabularies/<name>/phrases")
@require_token
def remove_phrases(name: str) -> Response:
    body = json_body()
    result = state().engine.remove_phrases(name, body.get("terms"), body.get("external_ids"))
    return jsonify(ok=True, **result.to_json())


@api.delete("/v1/vocabularies/<name>")
@require_token
def delete_vocabulary(name: str) -> Response:
    result = state().engine.delete_vocabulary(name)
    return jsonify(ok=True, deleted=name, **result.to_json())
