"""POST /v1/interrogate (README "The prompt a generator would answer to"): a thin view. The request is
parsed into `indexer.schema.interrogate`'s models, the work is `indexer.interrogate`'s.

Nested in the `api` blueprint (its endpoint is `api.interrogate.interrogate`), as /v1/explain is.
"""

from __future__ import annotations

from flask import Blueprint, Response, request

from indexer.interrogate.modes import Options, interrogate as run
from indexer.schema import split_vocabularies
from indexer.schema.interrogate import InterrogateForm, InterrogateJson

from .api import answer, api, form, json_body, one_upload
from .errors import named_in_body
from .fetching import caller, fetch_gate
from .access import check_named
from .state import engine_for

interrogate_api = Blueprint("interrogate", __name__)


@interrogate_api.post("/v1/interrogate")
def interrogate() -> tuple[Response, int]:
    params: InterrogateJson | InterrogateForm
    if request.is_json:
        params = json_body(InterrogateJson)
        name, data = "image_base64", params.image_base64
    else:
        name, upload = one_upload()
        params = form(InterrogateForm, image=upload)
        data = params.image
    engine = engine_for(params.model)
    check_named(split_vocabularies(params.vocabularies))
    start = None if params.start_vocabularies is None else split_vocabularies(params.start_vocabularies) or []
    options = Options(mode=params.mode, caption=params.caption, vocabularies=split_vocabularies(params.vocabularies),
                      start_vocabularies=start, forced=params.forced, max_steps=params.max_steps, pool=params.pool)
    check_named(start)
    if params.image_url is not None:
        with fetch_gate().admit(caller()):
            picture = engine.fetch_picture(params.image_url)
    else:
        assert data is not None  # the model requires one of the two
        picture = engine.read(data, name)
    with named_in_body():  # vocabularies, start_vocabularies
        return answer(run(engine, picture, options))


api.register_blueprint(interrogate_api)  # once, at import: before `api` is first registered on an app
