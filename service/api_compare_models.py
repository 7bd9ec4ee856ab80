"""POST /v1/compare-models (README "Several models side by side"): a thin view. The request is parsed into
`indexer.schema.compare_models`' models, the work is `indexer.multimodel.side_by_side`'s.

Nested in the `api` blueprint (endpoint `api.compare_models.compare_models`), as explanations are, so the
OpenAPI document's promise to describe every `api` endpoint covers it.
"""

from __future__ import annotations

from flask import Blueprint, Response, request

from indexer.multimodel.side_by_side import compare_models as side_by_side
from indexer.schema import form_phrases, split_vocabularies
from indexer.schema.compare_models import CompareModelsForm, CompareModelsJson, split_models

from .access import check_named
from .api import answer, api, form, json_body, one_upload, phrases_field
from .errors import named_in_body
from .fetching import caller, fetch_gate
from .state import state

compare_models_api = Blueprint("compare_models", __name__)


@compare_models_api.post("/v1/compare-models")
def compare_models() -> tuple[Response, int]:
    params: CompareModelsJson | CompareModelsForm
    if request.is_json:
        params = json_body(CompareModelsJson)
        data, phrases = params.image_base64, params.phrases
    else:
        _, upload = one_upload()
        params = form(CompareModelsForm, image=upload, phrases=phrases_field())
        data = params.image
        phrases = form_phrases(params.phrases) if params.phrases is not None else None
    engines = state().engines_for(split_models(params.models))  # unknown_model: 404, before any picture is read
    vocabularies = split_vocabularies(params.vocabularies)
    check_named(vocabularies)  # a private vocabulary not granted to this caller is unknown (422)
    if params.image_url is not None:
        with fetch_gate().admit(caller()), named_in_body():
            found = side_by_side(engines, params.image_url, vocabularies, phrases, params.top_k,
                                 fetch=lambda engine, url: engine.fetch_picture(url))
    else:
        assert data is not None  # the model requires one of the two
        with named_in_body():  # vocabularies: 422
            found = side_by_side(engines, data, vocabularies, phrases, params.top_k)
    return answer(found)


api.register_blueprint(compare_models_api)  # once, at import: before `api` is first registered on an app
