from __future__ import annotations

import base64
import io
import re
import threading
from typing import Any

import pytest
from flask import jsonify
from openapi_spec_validator import validate
from werkzeug.serving import make_server
from werkzeug.test import Client as WsgiClient

from clip_gaze import ApiError, Client
from conftest import (
    SchemaCheckingMiddleware,
    document_validator,
    draw_shape,
    encode,
    operation_of,
    pointer,
    schema_problems,
    service_engine,
)
from indexer.settings import Settings
from service import create_app
from service.openapi import openapi_document

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def engine(clean_environ, toy_loader, monkeypatch):
    """The engine as the service makes it (its limits from the settings, batching concurrent images,
    never embedding a whole list), with the session's toy model: 1 MB bodies, 4 MP pictures."""
    return service_engine(toy_loader, monkeypatch, TOKEN)


@pytest.fixture
def app(engine):
    app = create_app(Settings.from_env(), engine=engine)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def client(app):
    return app.test_client()


def is_error(resp, status: int, code: str | None = None) -> dict[str, Any]:
    body = resp.get_json()
    assert resp.status_code == status, body
    assert set(body) == {"ok", "status", "code", "error"} and body["ok"] is False and body["status"] == status
    assert isinstance(body["error"], str) and body["error"]
    if code:
        assert body["code"] == code, body
    return body


def upload(png: bytes, **fields: str) -> dict[str, Any]:
    return {"image": (io.BytesIO(png), "picture.png"), **fields}


def test_health_answers_without_loading_the_model(app):
    resp = app.test_client().get("/v1/health")
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["ok"] is True and body["model_loaded"] is False and body["status"] == "loading"


def test_health_is_ready_only_once_warm_up_has_loaded_every_index(app, engine):
    client = app.test_client()
    st = app.extensions["clip_gaze"]
    engine.index(["qualities"])
    st.warming = True  # as a gunicorn worker does after it boots
    _ = engine.model  # the model alone is not enough
    assert client.get("/v1/health").get_json()["status"] == "loading"
    st.warm_up()
    body = client.get("/v1/health").get_json()
    assert body["status"] == "ready" and body["model_loaded"] is True
    assert "qualities" in engine.indexes.loaded


def test_analyze_multipart_returns_the_documented_shape(client, red_circle_png):
    resp = client.post("/v1/analyze", data=upload(red_circle_png, vocabularies="qualities,surfaces", top_k="3"))
    body = resp.get_json()
    assert resp.status_code == 200, body
    assert body["ok"] is True
    assert set(body["model"]) >= {"preset", "arch", "pretrained", "logit_scale"} and body["model"]["preset"] == "toy"
    assert set(body["image"]) >= {"sha256", "width", "height"} and body["image"]["width"] == 128
    assert list(body["results"]) == ["qualities", "surfaces"]
    res = body["results"]["qualities"]
    assert res["softmax_over"] == 7 and len(res["matches"]) == 3
    assert set(res["matches"][0]) >= {"phrase", "term", "probability", "cosine", "logit", "external_id"}
    assert isinstance(body["timing_ms"], float)
    assert client.get("/v1/health").get_json()["model_loaded"] is True


def test_analyze_base64_json_and_default_vocabularies(client, red_circle_png, engine):
    b64 = base64.b64encode(red_circle_png).decode()
    resp = client.post("/v1/analyze", json={"image_base64": "data:image/png;base64," + b64, "top_k": 1})
    body = resp.get_json()
    assert resp.status_code == 200, body
    assert list(body["results"]) == engine.default_vocabularies()


def test_batch_embeds_each_image_once_and_keeps_order(client, app):
    pngs = [encode(draw_shape(c, s)) for c, s in (("red", "circle"), ("blue", "square"), ("green", "triangle"))]
    bad = b"definitely not an image"
    data = {"image": [(io.BytesIO(p), f"{i}.png") for i, p in enumerate([pngs[0], bad, pngs[1], pngs[2]])],
            "vocabularies": "qualities,sites", "top_k": "2"}
    body = client.post("/v1/analyze/batch", data=data).get_json()
    assert body["ok"] is True and body["count"] == 4 and body["failed"] == 1
    assert [r["ok"] for r in body["results"]] == [True, False, True, True]
    assert body["results"][1]["code"] == "unsupported_image" and body["results"][1]["index"] == 1
    assert all(set(r["results"]) == {"qualities", "sites"} for r in body["results"] if r["ok"])
    assert app.extensions["clip_gaze"].engine.batching.images == 3  # three pictures, one embedding each, for both vocabularies


def test_compare_scores_exactly_the_phrases_and_stores_nothing(client, engine):
    png = encode(draw_shape("blue", "square"))
    before = engine.store.stats()
    for data in (upload(png, phrases='["a blue square", "a red circle"]'),
                 upload(png, phrases="a blue square\na red circle")):
        body = client.post("/v1/compare", data=data).get_json()
        res = body["results"]["compare"]
        assert res["softmax_over"] == 2 and res["matches"][0]["phrase"] == "a blue square"
    body = client.post("/v1/compare", json={"image_base64": base64.b64encode(png).decode(),
                                            "phrases": ["a blue square", "a yellow star", "a red circle"]}).get_json()
    assert body["results"]["compare"]["softmax_over"] == 3
    assert engine.store.stats() == before


def test_vocabularies_list_and_paged_show(client):
    body = client.get("/v1/vocabularies").get_json()
    names = {v["name"]: v for v in body["vocabularies"]}
    assert len(names) == 22 and names["ci-artists"]["size"] == 10530 and names["ci-artists"]["builtin"] is True
    assert set(names["movements"]) >= {"name", "size", "builtin", "templates", "description", "version"}
    page = client.get("/v1/vocabularies/movements?offset=0&limit=5").get_json()
    assert len(page["phrases"]) == 5 and page["next_offset"] == 5 and page["vocabulary"]["size"] == 193
    last = client.get("/v1/vocabularies/movements?offset=190&limit=5").get_json()
    assert len(last["phrases"]) == 3 and last["next_offset"] is None
    is_error(client.get("/v1/vocabularies/movements?limit=0"), 400)
    is_error(client.get("/v1/vocabularies/nope"), 404, "unknown_vocabulary")


def test_custom_vocabulary_lifecycle_with_external_ids(client, red_circle_png):
    phrases = [{"term": "a red circle", "external_id": "SH-1", "metadata": {"aat": 300}}, "a blue square"]
    resp = client.post("/v1/vocabularies", json={"name": "shapes", "description": "test", "phrases": phrases}, headers=AUTH)
    body = resp.get_json()
    assert resp.status_code == 201, body
    assert body["added"] == 2 and body["vocabulary"]["name"] == "shapes" and body["vocabulary"]["version"] == 1
    again = client.post("/v1/vocabularies/shapes/phrases", json={"phrases": ["a blue square", "a green star"]}, headers=AUTH)
    assert again.get_json()["added"] == 1 and again.get_json()["unchanged"] == 1
    res = client.post("/v1/analyze", data=upload(red_circle_png, vocabularies="shapes")).get_json()["results"]["shapes"]
    assert res["softmax_over"] == 3
    top = res["matches"][0]
    assert (top["phrase"], top["external_id"], top["metadata"]) == ("a red circle", "SH-1", {"aat": 300})
    gone = client.delete("/v1/vocabularies/shapes/phrases", json={"external_ids": ["SH-1"]}, headers=AUTH).get_json()
    assert gone["removed"] == 1
    assert client.delete("/v1/vocabularies/shapes", headers=AUTH).get_json()["deleted"] == "shapes"
    is_error(client.get("/v1/vocabularies/shapes"), 404)


def test_writes_need_a_valid_bearer_token(client):
    body = {"name": "mine", "phrases": ["x"]}
    assert is_error(client.post("/v1/vocabularies", json=body), 401, "unauthorized")
    is_error(client.post("/v1/vocabularies", json=body, headers={"Authorization": "Bearer wrong"}), 401)
    is_error(client.post("/v1/vocabularies", json=body, headers={"Authorization": TOKEN}), 401)
    is_error(client.delete("/v1/vocabularies/movements", headers=AUTH), 403, "read_only")
    is_error(client.post("/v1/vocabularies/movements/phrases", json={"phrases": ["x"]}, headers=AUTH), 403, "read_only")


def test_without_configured_tokens_writes_are_disabled(engine, monkeypatch):
    monkeypatch.delenv("CLIP_GAZE_API_TOKENS", raising=False)
    client = create_app(Settings.from_env(), engine=engine).test_client()
    is_error(client.post("/v1/vocabularies", json={"name": "mine"}, headers=AUTH), 403, "writes_disabled")


@pytest.mark.parametrize(
    "body, code",
    [
        ({"name": "Bad Name", "phrases": ["x"]}, "invalid_name"),
        ({"name": "ok", "phrases": ["x", ""]}, "invalid_phrase"),
        ({"name": "ok", "phrases": ["x" * 301]}, "invalid_phrase"),
        ({"name": "ok", "phrases": "x"}, "invalid_input"),
        ({"name": "ok", "template": "no placeholder"}, "invalid_template"),
        ({"name": "ok", "phrases": ["x"], "colour": "red"}, "invalid_input"),
        ({"name": "movements", "phrases": ["x"]}, "vocabulary_exists"),
    ],
)
def test_bad_vocabulary_bodies_are_refused_and_store_nothing(client, engine, body, code):
    is_error(client.post("/v1/vocabularies", json=body, headers=AUTH), 409 if code == "vocabulary_exists" else 400, code)
    assert engine.store.find_vocabulary("ok") is None


def test_every_error_is_the_json_error_body(client, red_circle_png, app):
    is_error(client.get("/v1/nope"), 404, "not_found")
    is_error(client.delete("/v1/analyze"), 405, "method_not_allowed")
    too_big = b"\0" * (2 * 1024 * 1024)  # raw bytes: the test client spools a multipart dict to a file it never closes
    is_error(client.post("/v1/analyze", data=too_big, content_type="multipart/form-data; boundary=x"), 413, "request_entity_too_large")
    is_error(client.post("/v1/analyze", data={}), 400, "missing_image")
    is_error(client.post("/v1/analyze", data=upload(b"GIF89a broken")), 400)
    is_error(client.post("/v1/analyze", data=upload(red_circle_png, vocabularies="nope")), 422, "unknown_vocabulary")
    is_error(client.post("/v1/analyze", data=upload(red_circle_png, top_k="many")), 400, "invalid_top_k")
    is_error(client.post("/v1/analyze", data=upload(red_circle_png, top_k="0")), 400, "invalid_top_k")
    is_error(client.post("/v1/analyze", json={"image_base64": "%%%"}), 400, "invalid_base64")
    is_error(client.post("/v1/vocabularies", data="{not json", headers={**AUTH, "Content-Type": "application/json"}), 400, "invalid_json")
    is_error(client.post("/v1/vocabularies", json=["a list"], headers=AUTH), 400, "invalid_json")
    is_error(client.post("/v1/compare", data=upload(red_circle_png)), 400, "invalid_phrase")
    bomb = encode(draw_shape(size=2100), "PNG")  # 4.4 MP > the 4 MP limit set above
    is_error(client.post("/v1/analyze", data=upload(bomb)), 413, "image_too_large")


def test_an_unexpected_failure_is_a_500_without_a_stack_trace(app, client, red_circle_png, monkeypatch):
    engine = app.extensions["clip_gaze"].engine
    monkeypatch.setattr(engine, "embed_images", lambda images: (_ for _ in ()).throw(RuntimeError("secret internals")))
    body = is_error(client.post("/v1/analyze", data=upload(red_circle_png)), 500, "internal_error")
    assert "secret" not in body["error"] and "Traceback" not in body["error"]


def test_openapi_document_is_valid_and_covers_every_endpoint(client, app):
    doc = client.get("/openapi.json").get_json()
    validate(doc)
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops if method != "parameters"}
    served = {
        (re.sub(r"<(\w+)>", r"{\1}", rule.rule), m)
        for rule in app.url_map.iter_rules() if not rule.endpoint.startswith(("page.", "static"))
        for m in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert served == documented


@pytest.fixture
def live_url(app):
    """The app on a loopback port; every JSON answer it sends is checked against the document (the
    Client parses answers into models that allow extra fields, so this is the strict check)."""
    checked = SchemaCheckingMiddleware(app)
    server = make_server("127.0.0.1", 0, checked, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    assert not checked.problems, "answers differ from /openapi.json:\n" + "\n".join(checked.problems[:10])


def test_python_client_speaks_to_the_api(live_url, tmp_path):
    api = Client(live_url, token=TOKEN)
    assert api.health()["ok"] is True
    assert any(v["name"] == "movements" for v in api.vocabularies())
    created = api.create_vocabulary("shapes", [{"term": "red circle", "external_id": "S1"}, "blue square"], template="a {}")
    assert created["added"] == 2
    assert api.add_phrases("shapes", ["green triangle"])["added"] == 1
    path = tmp_path / "c.png"
    draw_shape("red", "circle").save(path)
    one = api.analyze(path, vocabularies=["shapes"], top_k=2)
    assert one["results"]["shapes"]["matches"][0]["external_id"] == "S1"
    batch = api.analyze_batch([path, draw_shape("blue", "square")], vocabularies="shapes", top_k=1)
    assert [r["results"]["shapes"]["matches"][0]["phrase"] for r in batch["results"]] == ["a red circle", "a blue square"]
    cmp = api.compare(encode(draw_shape("green", "triangle")), ["a green triangle", "a red circle"])
    assert cmp["results"]["compare"]["matches"][0]["phrase"] == "a green triangle"
    assert api.vocabulary("shapes", limit=1)["next_offset"] == 1
    assert api.remove_phrases("shapes", terms=["green triangle"])["removed"] == 1
    assert api.delete_vocabulary("shapes")["deleted"] == "shapes"
    with pytest.raises(ApiError) as exc:
        Client(live_url).create_vocabulary("x", ["y"])
    assert exc.value.status == 401 and exc.value.code == "unauthorized"


# -- every answer is checked against the document (conftest): the checker itself -----------------
def test_the_test_client_refuses_an_answer_the_document_does_not_describe(client, monkeypatch):
    import service.api

    def tampered(change):
        def answer(model, status=200):
            data = model.json_dict()
            change(data)
            return jsonify(data), status
        return answer

    monkeypatch.setattr(service.api, "answer", tampered(lambda d: d["vocabularies"][0].update(size="many")))
    with pytest.raises(AssertionError, match="vocabularies/0/size"):
        client.get("/v1/vocabularies")
    # Answers allow extra fields for clients; the tests do not: an undocumented field fails.
    monkeypatch.setattr(service.api, "answer", tampered(lambda d: d["vocabularies"][0].update(colour="red")))
    with pytest.raises(AssertionError, match="colour"):
        client.get("/v1/vocabularies")
    monkeypatch.setattr(service.api, "answer", tampered(lambda d: d.update(colour="red")))
    with pytest.raises(AssertionError, match="colour"):
        client.get("/v1/health")


def test_the_live_server_check_records_what_the_document_does_not_describe(app, monkeypatch):
    import service.api

    def answer(model, status=200):
        return jsonify({**model.json_dict(), "colour": "red"}), status

    monkeypatch.setattr(service.api, "answer", answer)
    checked = SchemaCheckingMiddleware(app)
    WsgiClient(checked).get("/v1/health")
    assert checked.problems and "colour" in checked.problems[0]


def test_errors_of_undocumented_paths_and_methods_are_checked_as_the_error_body(app):
    assert operation_of(app, "GET", "/v1/vocabularies/movements") == ("/v1/vocabularies/{name}", "get")
    assert operation_of(app, "DELETE", "/v1/analyze") is None and operation_of(app, "GET", "/v1/nope") is None
    assert schema_problems(app, "GET", "/v1/nope", 404, {"ok": False, "status": 404, "code": "not_found", "error": "x"}) == []
    assert schema_problems(app, "GET", "/v1/nope", 404, {"ok": False, "status": 404, "code": "not_found"})
    assert schema_problems(app, "GET", "/v1/nope", 200, {"ok": True})


# -- the schema is the truth: what the fuzzer (tests/test_fuzz.py) and its review found, each fixed --
def allowed(model: str, body: Any) -> bool:
    """Whether the document allows `body` as the request model `model`."""
    return document_validator(pointer("components", "schemas", model), strict=False).is_valid(body)


@pytest.mark.parametrize("template, ok", [("by {}", True), ("{}", True), ("{{}}", True), ("0", False),
                                          ("{} and {}", False), ("{ }", False), ("}{", False)])
def test_the_document_states_the_template_rule(client, engine, template, ok):
    body = {"name": "tpl", "template": template, "phrases": ["x"]}
    assert allowed("CreateVocabulary", body) is ok
    resp = client.post("/v1/vocabularies", json=body, headers=AUTH)
    assert resp.status_code == (201 if ok else 400), resp.get_json()
    assert allowed("CreateVocabulary", {"name": "tpl", "templates": [template]}) is ok


def test_template_and_templates_together_are_refused_and_the_document_says_so(client):
    body = {"name": "both", "template": "a {}", "templates": ["b {}"]}
    assert not allowed("CreateVocabulary", body)
    is_error(client.post("/v1/vocabularies", json=body, headers=AUTH), 400, "invalid_template")
    assert allowed("CreateVocabulary", {"name": "one", "templates": ["b {}"]})


def test_a_json_number_without_a_fraction_is_an_integer(client, red_circle_png):
    """JSON Schema's integer is any number with no fractional part: 3.0 and 3e0 are integers."""
    b64 = base64.b64encode(red_circle_png).decode()
    raw = '{"image_base64": "%s", "vocabularies": "qualities", "top_k": 3.0}' % b64
    body = client.post("/v1/analyze", data=raw, content_type="application/json").get_json()
    assert len(body["results"]["qualities"]["matches"]) == 3
    is_error(client.post("/v1/analyze", data=raw.replace("3.0", "2.5"), content_type="application/json"), 400, "invalid_top_k")
    assert not allowed("AnalyzeJson", {"image_base64": b64, "top_k": 2.5})
    raw = '{"name": "num", "phrases": [{"term": "a red circle", "external_id": 7.0}]}'
    assert client.post("/v1/vocabularies", data=raw, content_type="application/json", headers=AUTH).status_code == 201
    assert client.get("/v1/vocabularies/num").get_json()["phrases"][0]["external_id"] == "7"


def test_the_document_bounds_a_numeric_external_id_by_its_text(client):
    """A number given as an external id is kept as its text, which holds at most 200 characters."""
    for n, ok in ((10**200 - 1, True), (10**200, False), (-(10**199 - 1), True), (-(10**199), False)):
        body = {"name": "ids", "phrases": [{"term": "x", "external_id": n}]}
        assert allowed("CreateVocabulary", body) is ok
        resp = client.post("/v1/vocabularies", json=body, headers=AUTH)
        assert resp.status_code == (201 if ok else 400), resp.get_json()
        if ok:
            client.delete("/v1/vocabularies/ids", headers=AUTH)


def test_the_document_states_list_limits_as_list_limits():
    """pydantic wrote a list's max_length on `terms | None` as maxLength (a string keyword, so no
    limit at all), and a Field after a validator as `ge`/`le` (no keyword at all)."""
    doc = openapi_document()
    terms = doc["components"]["schemas"]["RemovePhrases"]["properties"]["terms"]
    assert terms["type"] == "array" and terms["maxItems"] == 50_000 and "maxLength" not in terms
    not_json_schema = {"ge", "le", "gt", "lt", "max_length", "min_length", "multiple_of"}

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if node.get("type") == "array":
                assert not {"maxLength", "minLength", "pattern"} & set(node), where
            if node.get("type") in ("integer", "number", "string", "array", "object"):
                assert not not_json_schema & set(node), where
            for k, v in node.items():
                walk(v, f"{where}/{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{where}/{i}")

    walk(doc, "")


def test_an_image_part_without_a_filename_is_refused_clearly_and_the_document_says_why(client, red_circle_png):
    """A multipart part without a filename reaches the app as text, its bytes decoded; the document
    says an image part is a file part (encoding: contentType image/*, Content-Disposition with a filename)."""
    body = (b'--x\r\nContent-Disposition: form-data; name="image"\r\nContent-Type: image/png\r\n\r\n'
            + red_circle_png + b"\r\n--x--\r\n")
    for path in ("/v1/analyze", "/v1/analyze/batch", "/v1/compare"):
        err = is_error(client.post(path, data=body, content_type="multipart/form-data; boundary=x"), 400, "missing_image")
        assert "filename" in err["error"]
        part = openapi_document()["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]["encoding"]["image"]
        assert part["contentType"] == "image/*" and part["headers"]["Content-Disposition"]["required"] is True


@pytest.mark.parametrize("phrases", ["   ", "\n\n", " \t\u00a0\u3000\r\n"])
def test_blank_compare_phrases_are_refused_and_the_document_says_so(client, red_circle_png, phrases):
    assert not allowed("CompareForm", {"image": "x", "phrases": phrases})
    is_error(client.post("/v1/compare", data=upload(red_circle_png, phrases=phrases)), 400, "invalid_phrase")
    assert allowed("CompareForm", {"image": "x", "phrases": " a red circle \n"})


def test_a_name_with_a_final_newline_is_refused(client):
    """Python's `$` also matches before a final newline: the name check matched 'abc\\n'."""
    is_error(client.post("/v1/vocabularies", json={"name": "abc\n", "phrases": ["x"]}, headers=AUTH), 400, "invalid_name")
    is_error(client.get("/v1/vocabularies/movements%0A"), 404, "unknown_vocabulary")
    is_error(client.delete("/v1/vocabularies/movements%0A", headers=AUTH), 400, "invalid_name")


def test_every_body_that_is_read_may_be_too_large_and_the_document_lists_413(client):
    too_big = b"[" + b'"x",' * 600_000 + b'"x"]'  # > the 1 MB limit set above
    assert client.post("/v1/vocabularies", json={"name": "mine", "phrases": ["x"]}, headers=AUTH).status_code == 201
    for method, path in (("post", "/v1/vocabularies"), ("post", "/v1/vocabularies/mine/phrases"),
                         ("delete", "/v1/vocabularies/mine/phrases")):
        body = b'{"terms": ' + too_big + b"}"
        resp = client.open(path, method=method.upper(), data=body, content_type="application/json", headers=AUTH)
        is_error(resp, 413, "request_entity_too_large")  # the checking client also finds 413 listed for it
        assert "413" in openapi_document()["paths"][path.replace("mine", "{name}")][method]["responses"]


def test_a_single_valued_field_given_twice_is_refused_not_read_as_its_first_value(client, red_circle_png):
    """The document gives top_k, vocabularies, offset and limit one value; the server read the first."""
    data = {**upload(red_circle_png), "top_k": ["2", "3"]}
    is_error(client.post("/v1/analyze", data=data), 400, "invalid_top_k")
    data = {**upload(red_circle_png), "vocabularies": ["qualities", "sites"]}
    is_error(client.post("/v1/analyze", data=data), 400, "invalid_input")
    is_error(client.get("/v1/vocabularies/movements?limit=1&limit=2"), 400)
    assert len(client.get("/v1/vocabularies/movements?limit=2").get_json()["phrases"]) == 2
    # phrases may be repeated in a multipart compare: the document says so (an array of parts)
    data = {**upload(red_circle_png), "phrases": ["a red circle", "a blue square"]}
    assert client.post("/v1/compare", data=data).get_json()["results"]["compare"]["softmax_over"] == 2
    assert allowed("CompareForm", {"image": "x", "phrases": ["a red circle", "a blue square"]})


# -- statuses that say what happened (schemathesis --checks all, stateful: ST202 and ST302) ------------------
def test_an_image_url_refused_by_policy_is_403_not_a_malformed_request(client, red_circle_png):
    """`http://0` is a valid http URL by the document; the fetch guard refuses it (0.0.0.0 is not a public
    address): a policy refusal, 403, as a write without a token is one, not 400."""
    for url in ("http://0", "http://127.0.0.1:9/x.png"):
        assert allowed("AnalyzeJson", {"image_url": url})
        err = is_error(client.post("/v1/analyze", json={"image_url": url}), 403, "url_refused")
        assert "refused" in err["error"] and "CLIP_GAZE_FETCH_ALLOW" in err["error"]
        assert allowed("CompareJson", {"image_url": url, "phrases": ["a red circle"]})
        is_error(client.post("/v1/compare", json={"image_url": url, "phrases": ["a red circle"]}), 403, "url_refused")
    is_error(client.post("/v1/analyze", data={"image_url": "http://0"}), 403, "url_refused")
    # in a batch, the refused picture's own entry says 403; the others are analysed
    b64 = base64.b64encode(red_circle_png).decode()
    batch = client.post("/v1/analyze/batch", json={"image_urls": ["http://0"]})
    entry = batch.get_json()["results"][0]
    assert batch.status_code == 200 and (entry["ok"], entry["status"], entry["code"]) == (False, 403, "url_refused")
    assert client.post("/v1/analyze/batch", json={"images_base64": [b64]}).get_json()["failed"] == 0
    not_http = is_error(client.post("/v1/analyze", json={"image_url": "ftp://example.org/x.png"}), 400, "invalid_url")
    assert not allowed("AnalyzeJson", {"image_url": "ftp://example.org/x.png"}) and "http" in not_http["error"]


def test_base64_the_document_forbids_is_refused_and_what_it_allows_is_decoded(client):
    """`"0"` was schema-valid (the document said only `contentEncoding: base64`, which validators do not
    assert): it now states base64 as a pattern, and the server holds base64 to that same pattern."""
    for model, body, path in (("AnalyzeJson", {"image_base64": "0"}, "/v1/analyze"),
                              ("BatchJson", {"images_base64": ["0"]}, "/v1/analyze/batch"),
                              ("CompareJson", {"image_base64": "0", "phrases": ["x"]}, "/v1/compare")):
        assert not allowed(model, body)
        is_error(client.post(path, json=body), 400, "invalid_base64")
    # Valid base64 of bytes that are no picture: the document allows it, the server reads it and says why not.
    assert allowed("AnalyzeJson", {"image_base64": "AAAA"})
    is_error(client.post("/v1/analyze", json={"image_base64": "AAAA"}), 400, "unsupported_image")
    entry = client.post("/v1/analyze/batch", json={"images_base64": ["AAAA"]}).get_json()["results"][0]
    assert (entry["ok"], entry["code"]) == (False, "unsupported_image")


def test_relative_to_an_empty_collection_is_a_conflict_409(client, red_circle_png):
    assert client.post("/v1/collections", json={"name": "empty"}, headers=AUTH).status_code == 201
    b64 = base64.b64encode(red_circle_png).decode()
    for path, body in (("/v1/analyze", {"image_base64": b64, "relative_to": "empty"}),
                       ("/v1/analyze/batch", {"images_base64": [b64], "relative_to": "empty"}),
                       ("/v1/collections/empty/analyze", {"relative_to": "empty"})):
        err = is_error(client.post(path, json=body), 409, "empty_collection")
        assert "holds no pictures" in err["error"]
    is_error(client.post("/v1/analyze", data=upload(red_circle_png, relative_to="empty")), 409, "empty_collection")


def test_a_name_the_body_gives_that_names_nothing_is_422_one_the_path_gives_404(client, red_circle_png):
    """A vocabulary or collection named in the body that does not exist: the request refers to nothing
    (422, its code kept). Named in the path, the resource asked for is not there (404). A fuzzer that just
    created the collection of the path read the old 404 as "the collection just created is gone"."""
    b64 = base64.b64encode(red_circle_png).decode()
    assert client.post("/v1/collections", json={"name": "fresh"}, headers=AUTH).status_code == 201
    refer = [("/v1/analyze", {"image_base64": b64, "vocabularies": ["nope"]}, "unknown_vocabulary"),
             ("/v1/analyze", {"image_base64": b64, "relative_to": "nope"}, "unknown_collection"),
             ("/v1/analyze/batch", {"images_base64": [b64], "vocabularies": "qualities, nope"}, "unknown_vocabulary"),
             ("/v1/analyze/batch", {"images_base64": [b64], "relative_to": "nope"}, "unknown_collection"),
             ("/v1/explain", {"image_base64": b64, "vocabularies": "nope"}, "unknown_vocabulary"),
             ("/v1/collections/fresh/analyze", {"vocabularies": ["nope"]}, "unknown_vocabulary"),
             ("/v1/collections/fresh/analyze", {"relative_to": "nope"}, "unknown_collection")]
    for path, body, code in refer:
        err = is_error(client.post(path, json=body), 422, code)
        assert "nope" in err["error"], (path, err)
    is_error(client.post("/v1/analyze", data=upload(red_circle_png, relative_to="nope")), 422, "unknown_collection")
    is_error(client.post("/v1/explain", data=upload(red_circle_png, vocabularies="nope")), 422, "unknown_vocabulary")
    # the path's collection is looked up first: missing, it is 404 whatever the body names
    is_error(client.post("/v1/collections/nope/analyze", json={"vocabularies": ["nope"]}), 404, "unknown_collection")
    is_error(client.get("/v1/collections/nope"), 404, "unknown_collection")
    is_error(client.get("/v1/vocabularies/nope"), 404, "unknown_vocabulary")
    is_error(client.post("/v1/vocabularies/nope/phrases", json={"phrases": ["x"]}, headers=AUTH), 404, "unknown_vocabulary")


def test_the_document_lists_the_statuses_each_operation_answers_and_says_what_they_mean():
    doc = openapi_document()
    listed = {f"{m} {p}": set(op["responses"]) for p, ops in doc["paths"].items() for m, op in ops.items()}
    assert {"403", "404", "409", "422"} <= listed["post /v1/analyze"]  # 404: a `model` the server does not serve
    assert {"409", "422"} <= listed["post /v1/analyze/batch"]  # its 403: a key without the analyze scope (issue 23)
    assert {"403", "404"} <= listed["post /v1/compare"] and not {"409", "422"} & listed["post /v1/compare"]
    assert {"409", "422"} <= listed["post /v1/explain"]
    assert {"404", "409", "422"} <= listed["post /v1/collections/{name}/analyze"]
    said = {s: doc["paths"]["/v1/analyze"]["post"]["responses"][s]["description"] for s in ("403", "404", "409", "422")}
    assert "unknown_model" in said["404"] and "url_refused" in said["403"] and "empty_collection" in said["409"] and "unknown_collection" in said["422"]


def test_the_document_links_what_a_write_creates_to_where_it_is_read(client):
    """OpenAPI links (the fuzzer's stateful phase follows them): a created vocabulary or collection to its
    own operations, a job started to its progress; each link's expression reads what the answer holds."""
    doc = openapi_document()
    ids = {op["operationId"]: (m, p) for p, ops in doc["paths"].items() for m, op in ops.items()}

    def links(method: str, path: str, status: str) -> dict[str, tuple[str, str]]:
        found = doc["paths"][path][method]["responses"][status]["links"]
        return {name: (ids[link["operationId"]], link["parameters"]) for name, link in found.items()}

    vocab = links("post", "/v1/vocabularies", "201")
    assert vocab["ShowVocabulary"] == (("get", "/v1/vocabularies/{name}"), {"name": "$response.body#/vocabulary/name"})
    assert {target for target, _ in vocab.values()} == {(m, p) for p, ops in doc["paths"].items() for m in ops
                                                        if p.startswith("/v1/vocabularies/{name}")}
    coll = links("post", "/v1/collections", "201")
    assert {target for target, _ in coll.values()} == {(m, p) for p, ops in doc["paths"].items() for m in ops
                                                       if p.startswith("/v1/collections/{name}") and p.count("{") == 1}
    assert links("post", "/v1/collections/{name}/sources", "202")["ShowJob"] == (
        ("get", "/v1/jobs/{job_id}"), {"job_id": "$response.body#/job/id"})
    made = client.post("/v1/collections", json={"name": "linked"}, headers=AUTH).get_json()
    assert made["collection"]["name"] == "linked"  # what $response.body#/collection/name reads
    made = client.post("/v1/vocabularies", json={"name": "linked", "phrases": ["x"]}, headers=AUTH).get_json()
    assert made["vocabulary"]["name"] == "linked"
