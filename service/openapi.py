"""The OpenAPI 3.1 document served at /openapi.json (checked by openapi-spec-validator in tests)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERROR_RESPONSES = {400: "Bad input", 401: "Missing or wrong bearer token", 403: "Read-only vocabulary or writes disabled",
                    404: "Not found", 409: "Conflict (exists already, or not indexed for this model)",
                    413: "Body or image too large", 503: "Model unavailable or server busy"}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): {"$ref": f"#/components/responses/E{s}"} for s in statuses}


_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,63}$"}}
_BEARER = [{"bearer": []}]

_ANALYZE_FORM = {
    "type": "object",
    "required": ["image"],
    "properties": {
        "image": {"type": "string", "format": "binary", "description": "JPEG, PNG, WebP, GIF (first frame), TIFF or BMP"},
        "vocabularies": {"type": "string", "description": "Comma-separated names; the default set if absent", "example": "movements,surfaces"},
        "top_k": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 10},
    },
}
_ANALYZE_JSON = {
    "type": "object",
    "required": ["image_base64"],
    "properties": {
        "image_base64": {"type": "string", "description": "The encoded image file, base64 (a data: URL is accepted)"},
        "vocabularies": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
        "top_k": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 10},
    },
}


@lru_cache(maxsize=1)
def openapi_document() -> dict[str, Any]:
    from clip_gaze import __version__

    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "required": ["ok", "status", "code", "error"],
            "properties": {"ok": {"const": False}, "status": {"type": "integer"}, "code": {"type": "string"}, "error": {"type": "string"}},
        },
        "Model": {
            "type": "object",
            "properties": {"preset": {"type": ["string", "null"]}, "arch": {"type": "string"}, "pretrained": {"type": "string"},
                           "config": {"type": "string"}, "logit_scale": {"type": "number"}},
        },
        "Match": {
            "type": "object",
            "required": ["phrase", "term", "probability", "cosine", "logit"],
            "properties": {
                "phrase": {"type": "string", "description": "The text given to CLIP"},
                "term": {"type": "string", "description": "The vocabulary's term the phrase was made from"},
                "probability": {"type": "number", "description": "Relative likelihood within the vocabulary (softmax over softmax_over phrases)"},
                "cosine": {"type": "number"},
                "logit": {"type": "number", "description": "logit_scale × cosine"},
                "external_id": {"type": ["string", "null"]},
                "metadata": {"type": ["object", "null"]},
            },
        },
        "VocabularyResult": {
            "type": "object",
            "properties": {"softmax_over": {"type": "integer", "description": "How many phrases the softmax ran over"},
                           "matches": {"type": "array", "items": _ref("Match")}},
        },
        "Image": {
            "type": "object",
            "properties": {"sha256": {"type": "string"}, "width": {"type": "integer"}, "height": {"type": "integer"}, "format": {"type": "string"}},
        },
        "Analysis": {
            "type": "object",
            "required": ["ok", "model", "image", "results", "timing_ms"],
            "properties": {
                "ok": {"const": True},
                "model": _ref("Model"),
                "image": _ref("Image"),
                "results": {"type": "object", "additionalProperties": _ref("VocabularyResult")},
                "timing_ms": {"type": "number"},
                "timing_breakdown_ms": {"type": "object", "additionalProperties": {"type": "number"}},
            },
        },
        "Vocabulary": {
            "type": "object",
            "properties": {
                "name": {"type": "string"}, "size": {"type": "integer"}, "builtin": {"type": "boolean"},
                "templates": {"type": "array", "items": {"type": "string"}}, "description": {"type": "string"},
                "version": {"type": "integer"}, "source": {"type": ["string", "null"]}, "licence": {"type": ["string", "null"]},
                "default": {"type": "boolean"},
            },
        },
        "PhraseItem": {
            "oneOf": [
                {"type": "string", "maxLength": 300},
                {"type": "object", "required": ["term"], "additionalProperties": False,
                 "properties": {"term": {"type": "string", "maxLength": 300}, "external_id": {"type": "string", "maxLength": 200},
                                "metadata": {"type": "object"}}},
            ]
        },
        "Phrase": {
            "type": "object",
            "properties": {"id": {"type": "integer"}, "term": {"type": "string"}, "phrase": {"type": "string"},
                           "external_id": {"type": ["string", "null"]}, "metadata": {"type": ["object", "null"]}},
        },
        "WriteResult": {
            "type": "object",
            "properties": {"ok": {"const": True}, "vocabulary": {"oneOf": [{"type": "string"}, _ref("Vocabulary")]},
                           "added": {"type": "integer"}, "removed": {"type": "integer"},
                           "unchanged": {"type": "integer"}, "version": {"type": "integer"}},
        },
    }
    responses = {f"E{s}": _json(_ref("Error"), d) for s, d in _ERROR_RESPONSES.items()}
    image_body = {"required": True, "content": {"multipart/form-data": {"schema": _ANALYZE_FORM}, "application/json": {"schema": _ANALYZE_JSON}}}
    paths: dict[str, Any] = {
        "/v1/health": {"get": {"summary": "Liveness and readiness (never touches the model)", "operationId": "health",
                               "responses": {"200": _json({"type": "object", "properties": {
                                   "ok": {"const": True}, "status": {"enum": ["loading", "ready", "error"]},
                                   "model_loaded": {"type": "boolean"}, "model": {"type": "string"},
                                   "error": {"type": ["string", "null"]},
                                   "batching": {"type": "object", "description": "This worker's forward passes and the images they held",
                                                "properties": {"batches": {"type": "integer"}, "images": {"type": "integer"}}}}}, "Health")}}},
        "/v1/models": {"get": {"summary": "The model in use and the presets", "operationId": "models",
                               "responses": {"200": _json({"type": "object", "properties": {
                                   "ok": {"const": True}, "model": _ref("Model"),
                                   "models": {"type": "array", "items": _ref("Model")}}}, "Models")}}},
        "/openapi.json": {"get": {"summary": "This document", "operationId": "openapi",
                                  "responses": {"200": _json({"type": "object"}, "OpenAPI document")}}},
        "/v1/vocabularies": {
            "get": {"summary": "List vocabularies", "operationId": "listVocabularies",
                    "responses": {"200": _json({"type": "object", "properties": {"ok": {"const": True},
                                  "vocabularies": {"type": "array", "items": _ref("Vocabulary")}}}, "Vocabularies")}},
            "post": {"summary": "Create a custom vocabulary (embeds its phrases)", "operationId": "createVocabulary",
                     "security": _BEARER,
                     "requestBody": {"required": True, "content": {"application/json": {"schema": {
                         "type": "object", "required": ["name"],
                         "properties": {"name": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,63}$"},
                                        "description": {"type": "string"},
                                        "template": {"type": "string", "description": "e.g. 'by {}'; default '{}'"},
                                        "templates": {"type": "array", "items": {"type": "string"}},
                                        "phrases": {"type": "array", "items": _ref("PhraseItem"), "maxItems": 50000}}}}}},
                     "responses": {"201": _json(_ref("WriteResult"), "Created"), **_errors(400, 401, 403, 409, 413)}},
        },
        "/v1/vocabularies/{name}": {
            "parameters": [_NAME],
            "get": {"summary": "A vocabulary and a page of its phrases", "operationId": "showVocabulary",
                    "parameters": [{"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                                   {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}],
                    "responses": {"200": _json({"type": "object", "properties": {
                        "ok": {"const": True}, "vocabulary": _ref("Vocabulary"),
                        "phrases": {"type": "array", "items": _ref("Phrase")},
                        "next_offset": {"type": ["integer", "null"]}}}, "Vocabulary"), **_errors(400, 404)}},
            "delete": {"summary": "Delete a custom vocabulary", "operationId": "deleteVocabulary", "security": _BEARER,
                       "responses": {"200": _json(_ref("WriteResult"), "Deleted"), **_errors(401, 403, 404)}},
        },
        "/v1/vocabularies/{name}/phrases": {
            "parameters": [_NAME],
            "post": {"summary": "Add phrases (idempotent: existing phrases are left alone)", "operationId": "addPhrases",
                     "security": _BEARER,
                     "requestBody": {"required": True, "content": {"application/json": {"schema": {
                         "type": "object", "required": ["phrases"],
                         "properties": {"phrases": {"type": "array", "items": _ref("PhraseItem"), "maxItems": 50000}}}}}},
                     "responses": {"200": _json(_ref("WriteResult"), "Added"), **_errors(400, 401, 403, 404, 413)}},
            "delete": {"summary": "Remove phrases by term or external id", "operationId": "removePhrases", "security": _BEARER,
                       "requestBody": {"required": True, "content": {"application/json": {"schema": {
                           "type": "object",
                           "properties": {"terms": {"type": "array", "items": {"type": "string"}},
                                          "external_ids": {"type": "array", "items": {"type": "string"}}}}}}},
                       "responses": {"200": _json(_ref("WriteResult"), "Removed"), **_errors(400, 401, 403, 404)}},
        },
        "/v1/analyze": {"post": {
            "summary": "Relative likelihoods of each vocabulary's phrases for one image", "operationId": "analyze",
            "requestBody": image_body,
            "responses": {"200": _json(_ref("Analysis"), "Analysis"), **_errors(400, 404, 409, 413, 503)}}},
        "/v1/analyze/batch": {"post": {
            "summary": "Several images (repeat the multipart field 'image', or JSON images_base64); results in order",
            "operationId": "analyzeBatch",
            "requestBody": {"required": True, "content": {
                "multipart/form-data": {"schema": {**_ANALYZE_FORM, "properties": {
                    **_ANALYZE_FORM["properties"], "image": {"type": "array", "items": {"type": "string", "format": "binary"}}}}},
                "application/json": {"schema": {"type": "object", "properties": {
                    "images_base64": {"type": "array", "items": {"type": "string"}, "maxItems": 64},
                    "vocabularies": _ANALYZE_JSON["properties"]["vocabularies"], "top_k": {"type": "integer"}}}}}},
            "responses": {"200": _json({"type": "object", "properties": {
                "ok": {"const": True}, "model": _ref("Model"), "count": {"type": "integer"}, "failed": {"type": "integer"},
                "results": {"type": "array", "items": {"type": "object", "properties": {
                    "ok": {"type": "boolean"}, "index": {"type": "integer"}, "image": _ref("Image"),
                    "results": {"type": "object", "additionalProperties": _ref("VocabularyResult")},
                    "status": {"type": "integer"}, "code": {"type": "string"}, "error": {"type": "string"}}}},
                "timing_ms": {"type": "number"}}}, "Batch analysis"), **_errors(400, 404, 409, 413, 503)}}},
        "/v1/compare": {"post": {
            "summary": "Softmax over exactly the phrases given (nothing is stored)", "operationId": "compare",
            "requestBody": {"required": True, "content": {
                "multipart/form-data": {"schema": {"type": "object", "required": ["image", "phrases"], "properties": {
                    "image": {"type": "string", "format": "binary"},
                    "phrases": {"type": "string", "description": "A JSON list, one phrase a line, or repeat the field"}}}},
                "application/json": {"schema": {"type": "object", "required": ["image_base64", "phrases"], "properties": {
                    "image_base64": {"type": "string"}, "phrases": {"type": "array", "items": {"type": "string"}, "maxItems": 5000}}}}}},
            "responses": {"200": _json(_ref("Analysis"), "Comparison (results under 'compare')"), **_errors(400, 413, 503)}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "clip-gaze",
            "version": __version__,
            "description": "See images the way CLIP sees them. Every probability is a relative likelihood: a softmax over "
                           "the whole vocabulary (softmax_over phrases) of logit_scale × cosine(image, phrase). It is not "
                           "a measure of accuracy, and it changes when the vocabulary changes.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": responses,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "A token from CLIP_GAZE_API_TOKENS"}},
        },
    }
