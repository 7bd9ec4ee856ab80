"""POST /v1/explain (README "Where and why: explanations"): a thin view. The request is parsed into
`indexer.schema.explain`'s models, the work is `indexer.explain`'s, and the answer is the analysis of
/v1/analyze with a map for every match (or, with format=png, the overlay picture).

The blueprint is nested in the `api` blueprint (its endpoint is `api.explain.explain`), so the OpenAPI
document's promise to describe every `api` endpoint covers it too.
"""

from __future__ import annotations

import io

from flask import Blueprint, Response, request

from indexer.explain.maps import ExplainedImage, explain_image
from indexer.schema import form_phrases, parse, split_vocabularies
from indexer.schema.explain import ExplainForm, ExplainJson, ExplainQuery

from .access import check_named
from .api import answer, api, form, json_body, one_upload, phrases_field, sent
from .errors import named_in_body
from .state import engine_for

explain_api = Blueprint("explain", __name__)


@explain_api.post("/v1/explain")
def explain() -> Response | tuple[Response, int]:
    params: ExplainJson | ExplainForm
    fmt = parse(ExplainQuery, sent(request.args)).format
    if request.is_json:
        params = json_body(ExplainJson)
        name, data, phrases = "image_base64", params.image_base64, params.phrases
    else:
        name, upload = one_upload()
        params = form(ExplainForm, image=upload, phrases=phrases_field())
        data = params.image
        phrases = form_phrases(params.phrases) if params.phrases is not None else None
    engine = engine_for(params.model)
    check_named(split_vocabularies(params.vocabularies))
    decoded = engine.read(data, name)
    with named_in_body():  # vocabularies
        found = explain_image(engine, decoded, split_vocabularies(params.vocabularies), phrases, params.top_k,
                              params.versus)
    if fmt == "png":
        return png(found)
    return answer(found.answer)


def png(found: ExplainedImage) -> Response:
    """An explanation as a PNG: its overlay, or with `versus` the contrast's."""
    buf = io.BytesIO()
    (found.overlay_contrast() if found.contrast is not None else found.overlay()).save(buf, format="PNG")
    return Response(buf.getvalue(), mimetype="image/png")


api.register_blueprint(explain_api)  # once, at import: before `api` is first registered on an app
