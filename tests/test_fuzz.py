"""Schema-driven fuzzing: schemathesis generates requests from /openapi.json, valid and invalid, and
sends them in-process (WSGI) to the app as the service builds it, with the toy model. The schema
must say exactly what the server accepts:

- no request gets a 500 (not_a_server_error);
- every answer is documented: its status, content type and body (status_code_conformance,
  content_type_conformance, response_schema_conformance, and conftest's stricter check that no
  answer holds a field the document omits);
- every request the schema allows is accepted (positive_data_acceptance);
- every request the schema forbids is refused (negative_data_rejection);
- and every other check schemathesis has (ALL_CHECKS: the headers, methods and Allow header each
  path answers, that writes refuse requests without a valid token, ...).

Then the stateful phase: schemathesis's state machine follows the document's links (a vocabulary or
collection created, then read, changed, deleted; a job started, then read), where use_after_free (a
deleted resource is gone: 404) and ensure_resource_availability (a created one is there) apply too.

Bounded and reproducible: MAX_EXAMPLES per operation and phase (and scenarios of at most MAX_STEPS
steps), derandomized, no example database. For a longer hunt:
CLIP_GAZE_FUZZ_EXAMPLES=500 python -m pytest tests/test_fuzz.py
"""

from __future__ import annotations

import base64
import copy
import hashlib
import http.server
import io
import json
import os
import re
import threading
import time
import zlib
from collections import defaultdict
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis.errors import FlakyStrategyDefinition
from hypothesis.stateful import Bundle
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation import GenerationMode
from schemathesis.generation.stateful.state_machine import StepInput
from schemathesis.specs.openapi.checks import (
    ensure_resource_availability,
    negative_data_rejection,
    positive_data_acceptance,
)
from schemathesis.specs.openapi.stateful import transition
from schemathesis.transport.serialization import Binary
from werkzeug.formparser import parse_form_data
from werkzeug.test import EnvironBuilder

from conftest import create, document_validator, draw_shape, encode, pointer, schema_problems, service_engine
from indexer.collections.local import Collections
from indexer.pictures.thumbnails import make_thumbnail
from indexer.schema import BASE64_PATTERN, parse
from indexer.schema.collections import CreateCollection
from indexer.settings import Settings
from indexer.store.image_store import Picture
from indexer.store.thumbnails import ThumbnailStore
from service import create_app
from service.openapi import openapi_document

# Under pytest-xdist, the whole file in one worker: the last test reads what the fuzz tests recorded.
pytestmark = pytest.mark.xdist_group("fuzz")

TOKEN = "fuzz-token"
MAX_EXAMPLES = int(os.environ.get("CLIP_GAZE_FUZZ_EXAMPLES", "25"))
MAX_STEPS = 6  # per stateful scenario (schemathesis's default)
KNOWN = "fuzzed"  # a custom vocabulary and a collection that always exist, so requests also reach ones that do
MAX_CUSTOM = 20  # more custom vocabularies than this, and the fuzzer's are deleted: the store stays small

# Real pictures wherever the document asks for one: JSON's base64 fields have the format
# `image-base64`; multipart `image` parts are `format: binary` (with the content type `image/*`).
PICTURES = [encode(draw_shape(colour, shape, size=size), fmt) for colour, shape, size, fmt in
            (("red", "circle", 64, "PNG"), ("blue", "square", 48, "JPEG"), ("green", "triangle", 40, "PNG"))]
_B64 = [base64.b64encode(p).decode() for p in PICTURES]
BASE64 = re.compile(BASE64_PATTERN.removesuffix("$") + r"\Z")  # as JSON Schema reads it: `$` is the end
schemathesis.openapi.format("image-base64", st.sampled_from([*_B64, "data:image/png;base64," + _B64[0]]))
schemathesis.openapi.format("binary", st.sampled_from(PICTURES).map(Binary))


class _Pictures(http.server.BaseHTTPRequestHandler):
    """`image_url` fields (format `image-url`) name these: the pictures above, served on loopback."""

    def do_GET(self) -> None:
        data = PICTURES[int(self.path.strip("/").split(".")[0] or 0) % len(PICTURES)]
        self.send_response(200)
        self.send_header("Content-Type", "image/png" if data.startswith(b"\x89PNG") else "image/jpeg")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


PICTURE_SERVER = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Pictures)
threading.Thread(target=PICTURE_SERVER.serve_forever, daemon=True).start()
PICTURE_HOST = f"127.0.0.1:{PICTURE_SERVER.server_port}"
# And one URL the fetch guard refuses (0.0.0.0 is no public address): valid by the document, refused by
# policy (403 url_refused), which a request the schema allows may be answered.
REFUSED_URL = "http://0/0.png"
SERVED_URLS = [f"http://{PICTURE_HOST}/{i}.png" for i in range(len(PICTURES))]
schemathesis.openapi.format("image-url", st.sampled_from([*SERVED_URLS, REFUSED_URL]))


@pytest.fixture(scope="module", autouse=True)
def picture_server():
    yield
    PICTURE_SERVER.shutdown()
    PICTURE_SERVER.server_close()

CONFIG = schemathesis.Config.from_dict({
    "seed": int(os.environ.get("CLIP_GAZE_FUZZ_SEED", "1")),
    "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True},
    "auth": {"openapi": {"bearer": {"bearer": TOKEN}}},
    "checks": {
        # What a request the schema allows may still be answered, because it depends on what the
        # server holds or how it is configured, not on the request's shape:
        #   404: a vocabulary or collection the path names that does not exist (generated names are
        #        mostly unknown);
        #   422: the same, named in the body (`vocabularies`, `relative_to`);
        #   409: a vocabulary that exists already (create), one not indexed for this model (built-in
        #        lists larger than the service embeds on demand), or an empty reference collection;
        #   403: built-in vocabularies are read-only (a generated name may be one of theirs), and
        #        the fetch guard refuses REFUSED_URL;
        #   413: the body or its pictures exceed this server's limits (CLIP_GAZE_MAX_UPLOAD_MB,
        #        CLIP_GAZE_MAX_PIXELS: settings, not part of the schema).
        # Not 401 (the fuzzer sends the token) nor any 5xx.
        "positive_data_acceptance": {"expected-statuses": ["2xx", "403", "404", "409", "413", "422"]},
        "negative_data_rejection": {"expected-statuses": ["400", "401", "403", "404", "405", "409", "413", "422"]},
    },
})
load_all_checks()
ALL_CHECKS = list(CHECKS.get_all())  # every check schemathesis has: `st run --checks all`

# A copy: schemathesis adds the links it infers to the document it is given (the stateful phase), and
# openapi_document() is the one the server serves and tests/test_surface.py pins.
schema = schemathesis.openapi.from_dict(copy.deepcopy(openapi_document()), config=CONFIG)
ANSWERED: dict[str, set[int]] = defaultdict(set)  # operation → statuses of its positive requests
JOBS: dict[str, str] = {}  # KNOWN → the id of a job that exists (made once, never run)


@pytest.fixture(scope="module")
def service(toy, tmp_path_factory):
    """One app for every operation (the engine syncs the built-in lists into its store once), in a
    data directory of its own, as the service builds it, with TOKEN allowed to write."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLIP_GAZE_HOME", str(tmp_path_factory.mktemp("fuzz-home")))
        mp.setenv("CLIP_GAZE_MODEL", "toy")
        mp.setenv("CLIP_GAZE_FETCH_ALLOW", PICTURE_HOST)
        # A closed deployment: the document's security requirements (a key with the operation's scope)
        # then hold for every caller, so ignored_auth and missing_required_header check the guard on
        # every operation. What anonymous callers get under other settings: tests/test_access_routes.py.
        mp.setenv("CLIP_GAZE_ANONYMOUS", "none")
        for key in ("CLIP_GAZE_DEVICE", "CLIP_GAZE_THREADS", "CLIP_GAZE_LISTS"):
            mp.delenv(key, raising=False)
        engine = service_engine(lambda spec, **_: toy, mp, TOKEN)
        yield create_app(Settings.from_env(), engine=engine), engine  # the settings after the token is set


@pytest.fixture
def app(service):
    return service[0]


@pytest.fixture
def engine(service):
    return service[1]


def strictly_documented(app):
    """A check stricter than response_schema_conformance: an answer holds no field the document omits."""

    def check(ctx, response, case):
        try:
            body = response.json()
        except ValueError:
            return
        path = unquote(urlsplit(response.request.url).path)  # as the server routed it
        problems = schema_problems(app, case.method, path, response.status_code, body)
        if problems:
            raise AssertionError("\n".join(problems[:5]))
        return

    return check


def sent_form_is_valid(case, response) -> bool:
    """Whether a multipart body, read as the server reads it, satisfies the schema. On the wire every
    text field is text: a generated `null`, `0.0` or `true` arrives as the string "null", "0.0" or
    "true", which may well be a valid phrase or vocabulary list; a number is read from its text. Only
    a file part (with a filename) is an image."""
    body = response.request.body
    if not isinstance(body, bytes):
        return False
    environ = EnvironBuilder(method="POST", input_stream=io.BytesIO(body), content_length=len(body),
                             content_type=response.request.headers.get("Content-Type", "")).get_environ()
    _, form, files = parse_form_data(environ)
    for parts in files.listvalues():
        for upload in parts:
            upload.close()
    where = ("paths", case.path, case.method.lower(), "requestBody", "content", "multipart/form-data", "schema")
    doc = openapi_document()
    model = doc["components"]["schemas"][doc["paths"][case.path][case.method.lower()]["requestBody"]["content"]
                                         ["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[1]]
    sent: dict[str, Any] = {}
    for name in {*form.keys(), *files.keys()}:
        prop = model["properties"].get(name, {})
        if prop.get("format") == "binary" or prop.get("items", {}).get("format") == "binary":
            values: list[Any] = ["(file)"] * len(files.getlist(name)) + [None] * len(form.getlist(name))
        else:
            values = [_read_text(text, prop) for text in form.getlist(name)] + [None] * len(files.getlist(name))
        sent[name] = values if prop.get("type") == "array" else values[0] if len(values) == 1 else values
    return document_validator(pointer(*where), strict=False).is_valid(sent)


def _code(response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("code") if isinstance(body, dict) else None


def _form_fields(response) -> set[str]:
    """The names of the fields of a multipart body as sent."""
    body = response.request.body
    if not isinstance(body, bytes):
        return set()
    return {name.decode() for name in re.findall(rb'Content-Disposition: form-data; name="([^"]+)"', body)}


def _read_text(text: str, prop: dict[str, Any]) -> Any:
    """A text field as the server reads it: a number where the field may be one (`min_cosine`: a number
    or null; the text "null" is no number, and no null either: text)."""
    if {"integer", "number"} & {p.get("type") for p in (prop, *prop.get("anyOf", ()))}:
        try:
            value = json.loads(text)
        except ValueError:
            return text
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
    return text


def _keep_store_small(engine) -> None:
    if engine.store.find_vocabulary(KNOWN) is None:
        create(engine, KNOWN, [{"term": "red circle", "external_id": "S1", "metadata": {"n": 1}}, "blue square"],
               template="a {}", description="always there")
    custom = [r["name"] for r in engine.store.db.query("SELECT name FROM vocabularies WHERE NOT builtin")
              if r["name"] != KNOWN]
    if len(custom) > MAX_CUSTOM:
        for name in custom:
            engine.delete_vocabulary(name)
    collections = Collections(engine)
    if collections.images.find(KNOWN) is None:  # a collection that always exists, with a picture in it
        collections.create(parse(CreateCollection, {"name": KNOWN}))
        engine.embed_images([engine.read(PICTURES[0])])
        pic = engine.read(PICTURES[0])
        collections.images.record(collections.images.get(KNOWN).id, [Picture("fuzz:0", "F-0", None, pic.sha256, 64, 64)],
                                  engine.model_key, {})
        ThumbnailStore(engine.store).put({pic.sha256: make_thumbnail(pic.image)})
    others = [c.name for c in collections.all() if c.name != KNOWN]
    if len(others) > MAX_CUSTOM:
        for name in others:
            collections.delete(name)


def _fresh_store(engine) -> None:
    """Each stateful scenario starts from the same store (what _keep_store_small keeps, and nothing
    else), with no job of an earlier one still running: Hypothesis replays a scenario's steps and
    expects the same answers to the same requests."""
    deadline = time.monotonic() + 5
    waiting = "SELECT count(*) FROM jobs WHERE state IN ('queued', 'running') AND id NOT IN ({})".format(
        ", ".join("?" * len(JOBS)) or "''")
    while engine.store.db.execute(waiting, list(JOBS.values())).fetchone()[0] and time.monotonic() < deadline:
        time.sleep(0.02)
    for row in list(engine.store.db.query("SELECT name FROM vocabularies WHERE NOT builtin")):
        engine.delete_vocabulary(row["name"])
    collections = Collections(engine)
    for info in collections.all():
        collections.delete(info.name)
    _keep_store_small(engine)


def _real_pictures(case) -> None:
    """Real pictures in a valid body's base64 fields. The document states base64 (a pattern), which
    can say nothing of what the bytes are; schemathesis's coverage phase draws values from the pattern
    alone ('0000': base64, and no picture), which the server refuses for what the bytes are."""
    meta = case.meta
    body = meta.components.get(ParameterLocation.BODY) if meta is not None else None
    if body is None or not body.mode.is_positive or not isinstance(case.body, dict):
        return

    def picture(value: Any) -> Any:  # base64 the document allows, and no picture: a picture instead
        if isinstance(value, str) and BASE64.match(value) and value.rsplit(",", 1)[-1] not in _B64:
            return _B64[zlib.crc32(value.encode()) % len(_B64)]
        return value

    if isinstance(case.body.get("image_url"), str) and case.body["image_url"] not in (*SERVED_URLS, REFUSED_URL):
        # Likewise a URL: its pattern cannot say whether its host exists (the image-url format draws
        # served ones; the coverage phase draws from the pattern alone).
        case.body["image_url"] = SERVED_URLS[zlib.crc32(case.body["image_url"].encode()) % len(SERVED_URLS)]
    if case.path == "/v1/interrogate" and zlib.crc32(repr(sorted(case.body)).encode()) % 2:
        # Half the valid interrogations over a list that is indexed for the toy model (the default
        # candidates, clip-interrogator's lists, are too large to embed on demand: 409).
        case.body["vocabularies"] = KNOWN if (case.media_type or "").startswith("multipart/") else [KNOWN]
        case.body.pop("start_vocabularies", None)
    if case.path == "/v1/collections/{name}/search" and meta.generation.mode.is_positive and zlib.crc32(repr(sorted(case.body)).encode()) % 2:
        # Half the valid searches by picture: in the collection that exists, by the model served (a
        # generated `model` names none: 404 unknown_model).
        case.path_parameters["name"] = KNOWN
        case.body.pop("model", None)
    if case.path.endswith("/review") and zlib.crc32(repr(sorted(case.body)).encode()) % 2:
        case.body.update(vocabulary=KNOWN, phrase="red circle")  # half the reviews: of a phrase that exists
    if "image_base64" in case.body:
        case.body["image_base64"] = picture(case.body["image_base64"])
    if isinstance(case.body.get("images_base64"), list):
        case.body["images_base64"] = [picture(v) for v in case.body["images_base64"]]


def _known_references(case) -> None:
    """Half the valid searches, scores, facets and annotations name what exists: the stored picture (like), the known
    vocabulary; and no picture to search away from, no other list or filter (generated sha256 values and
    names are of nothing stored: 422)."""
    meta = case.meta
    query = meta.components.get(ParameterLocation.QUERY) if meta is not None else None
    if (case.path.rsplit("/", 1)[-1] not in ("search", "scores", "facets", "annotations") or not case.path.startswith("/v1/collections/")
            or query is None or not query.mode.is_positive or not case.query
            or not zlib.crc32(repr(sorted(case.query)).encode()) % 2):
        return
    if case.query.get("like"):
        case.query["like"] = [hashlib.sha256(PICTURES[0]).hexdigest()]
    for name in ("unlike", "relative_to", "where", "phrase", "model", "manifest", "canvas"):
        case.query.pop(name, None)
    if case.path.endswith("/annotations"):
        case.query["vocabularies"] = KNOWN
    case.path_parameters["name"] = KNOWN
    if "vocabulary" in case.query or case.path.endswith("/scores"):
        case.query["vocabulary"] = KNOWN


def _excluded(case, response) -> list[Any]:
    """The checks that do not apply to this case as it was sent (each reason below)."""
    meta = case.meta
    excluded = []
    multipart = (case.media_type or "").startswith("multipart/") and case.method.upper() == case.operation.method.upper()
    if multipart and case.path in ("/v1/compare", "/v1/explain", "/v1/compare-models"):
        # Multipart `phrases` is text: a JSON list, or one phrase a line, 1 to 5000 phrases, none
        # given twice, each following the text rule. JSON Schema can state only part of that (not
        # blank; or several parts), so text it allows may still be refused: this one check is left
        # out here. Every other check still runs, and the JSON body states the same rules exactly.
        excluded.append(positive_data_acceptance)
    if response.status_code == 404 and _code(response) not in ("unknown_collection", "unknown_vocabulary", "unknown_job"):
        # A 404 of something else the request names (unknown_model: a generated `model`; unknown_picture):
        # not the resource a link led to, which is still there.
        excluded.append(ensure_resource_availability)
    query = case.query or {}
    if (case.path == "/v1/collections/{name}/search" and case.method.upper() == "GET"
            and ((not query.get("q") and not query.get("like")) or ("min_probability" in query and not query.get("vocabulary")))) or (case.path == "/v1/collections/{name}/facets"
                                           and (query.get("vocabulary") is None) == (query.get("column") is None)):
        # A search needs a phrase (q) or a stored picture (like), and min_probability a vocabulary; facets, a
        # vocabulary or a metadata column,
        # one of them: rules across query parameters, which OpenAPI cannot state (each parameter's
        # description says it). Such a request is refused (400), and only this check is left out for it.
        excluded.append(positive_data_acceptance)
    if case.path == "/v1/collections/{name}/map" and query.get("fields") is not None and query.get("format") != "arrow":
        # fields picks Arrow columns: with JSON (the default format) it is refused (400), a rule across query
        # parameters that OpenAPI cannot state (its description says it); only this check is left out for it.
        excluded.append(positive_data_acceptance)
    if multipart and case.path == "/v1/compare-models" and {"vocabularies", "phrases"} <= _form_fields(response):
        # vocabularies or phrases, not both: the JSON body states it (`not`), the multipart one cannot
        # (schemathesis generates no multipart body under a `not`); such a form is refused (400).
        excluded.append(positive_data_acceptance)
    if multipart and meta is not None and meta.generation.mode.is_negative and sent_form_is_valid(case, response):
        excluded.append(negative_data_rejection)  # what arrived is valid: see sent_form_is_valid
    if multipart and meta is not None and meta.generation.mode.is_positive and not sent_form_is_valid(case, response):
        # schemathesis builds multipart bodies from `properties` alone: a body model's `oneOf` (an `image`
        # file or an `image_url`, not both) is not honoured, so what it sent as valid may not be.
        excluded.append(positive_data_acceptance)
    return excluded


def _in_process(case, app) -> None:
    """What some checks send besides the case (ignored_auth's requests without a token,
    unsupported_method's other methods, ...) goes where the case goes: to `app`, in-process."""
    case.operation.app = case.operation.schema.app = app


@schema.parametrize()
@settings(deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_the_api_does_what_its_schema_says(case, app, engine):
    _keep_store_small(engine)
    _in_process(case, app)
    meta = case.meta
    path = meta.components.get(ParameterLocation.PATH) if meta is not None else None
    if path is not None and path.mode.is_positive and zlib.crc32(repr(case.path_parameters).encode()) % 2:
        if "job_id" in case.path_parameters:  # half the valid ids: a job that exists (one, made once: never run)
            if KNOWN not in JOBS:
                JOBS[KNOWN] = engine.images.create_job("add_sources", KNOWN)
            case.path_parameters["job_id"] = JOBS[KNOWN]
        else:
            case.path_parameters["name"] = KNOWN  # half the valid names: one that exists
            if "sha256" in case.path_parameters:  # and its picture
                case.path_parameters["sha256"] = hashlib.sha256(PICTURES[0]).hexdigest()
    _real_pictures(case)
    _known_references(case)
    response = case.call()
    case.validate_response(response, checks=ALL_CHECKS, additional_checks=[strictly_documented(app)],
                           excluded_checks=_excluded(case, response))
    if meta is not None and meta.generation.mode.is_positive:
        ANSWERED[f"{case.method} {case.path}"].add(response.status_code)


STEPS: dict[str, set[int]] = defaultdict(set)  # stateful phase: operation → statuses of its steps
LINKED: list[str] = []  # stateful phase: the steps a link led to
SCENARIOS: list[int] = []  # stateful phase: one entry a scenario
MAX_RUNS = 10
DELETES = {"DELETE /v1/vocabularies/{name}", "DELETE /v1/collections/{name}"}  # links the stateful phase must follow


def test_the_api_keeps_its_state_as_its_links_say(app, engine):
    """The stateful phase: scenarios of up to MAX_STEPS calls that follow the document's links, with
    every check (use_after_free and ensure_resource_availability among them) at every step."""
    schema.app = app
    try:
        machine = schema.as_state_machine()
    finally:
        schema.app = None

    class Scenarios(machine):  # type: ignore[misc, valid-type]
        # schemathesis starts scenarios where a request is likely to succeed on its own; it reads a
        # phrase's `external_id` as a reference to a resource no operation creates, so it never starts
        # at POST /v1/vocabularies, and the vocabulary links would be followed from built-in ones alone.
        RANDOM__POST_v1_vocabularies = transition(
            name="RANDOM__POST_v1_vocabularies", target=Bundle("catch_all"), precondition=lambda _: True,
            input=schema["/v1/vocabularies"]["POST"].as_strategy(generation_mode=GenerationMode.POSITIVE).map(StepInput.initial))

        def setup(self) -> None:
            _fresh_store(engine)
            SCENARIOS.append(len(SCENARIOS))

        def before_call(self, case) -> None:
            _in_process(case, app)
            _real_pictures(case)

        def validate_response(self, response, case, additional_checks=None, **kwargs) -> None:
            STEPS[f"{case.method} {case.path}"].add(response.status_code)
            if case.meta is not None and self.recorder.find_parent(case_id=case.id) is not None:
                LINKED.append(f"{case.method} {case.path}")
            case.validate_response(response, checks=ALL_CHECKS, additional_checks=[strictly_documented(app)],
                                   excluded_checks=_excluded(case, response), recorder=self.recorder)

    # schemathesis steers its scenarios by what earlier ones did (which roots, which links, how often),
    # so Hypothesis, replaying a scenario, may find it drawn differently: FlakyStrategyDefinition, which
    # ends a run without a failure, as `st run` takes it. A failure that does not replay is still raised
    # (FlakyFailure). Runs go on, each from a seed of its own, until MAX_EXAMPLES scenarios have run and
    # the links that delete what a scenario created were followed (which scenarios schemathesis draws
    # depends on Hypothesis's version: a few more runs rather than a phase that covers less), at most
    # MAX_RUNS runs.
    seed = int(os.environ.get("CLIP_GAZE_FUZZ_SEED", "1"))
    for attempt in range(MAX_RUNS):
        left = MAX_EXAMPLES - len(SCENARIOS)
        if left <= 0 and DELETES <= set(LINKED):
            break
        try:
            hypothesis_seed(seed + attempt)(Scenarios).run(settings=settings(
                max_examples=max(left, 5), stateful_step_count=MAX_STEPS, deadline=None, database=None,
                phases=[Phase.generate], suppress_health_check=list(HealthCheck)))
        except FlakyStrategyDefinition:
            pass
    # Guards the phase itself: scenarios ran, links led somewhere, vocabularies and collections were
    # created and deleted; and the document served stayed as it is.
    assert openapi_document() == json.loads(json.dumps(app.test_client().get("/openapi.json").get_json()))
    assert "GetCollectionInfo" not in json.dumps(openapi_document()), "schemathesis wrote its links into the document"
    assert len(SCENARIOS) >= min(MAX_EXAMPLES, 10), (len(SCENARIOS), dict(STEPS))
    assert {"POST /v1/vocabularies", "POST /v1/collections"} <= {k for k, v in STEPS.items() if v & {201}}, dict(STEPS)
    assert DELETES <= set(LINKED), set(LINKED)


def test_every_check_schemathesis_has_runs():
    """`--checks all`: the checks of requests and answers, and those that follow what came before."""
    names = {check.__name__ for check in ALL_CHECKS}
    assert {"not_a_server_error", "status_code_conformance", "response_schema_conformance", "positive_data_acceptance",
            "negative_data_rejection", "use_after_free", "ensure_resource_availability", "ignored_auth",
            "unsupported_method", "allow_header_conformance", "missing_required_header"} <= names, names


def test_the_fuzzer_got_success_from_every_operation():
    """Guards the fuzzer itself: if a setting stopped its requests (a missing token, broken
    pictures), every operation would answer errors, and the checks above would pass on nothing."""
    if not ANSWERED:
        pytest.skip("the fuzz test did not run in this session")
    for op in schema.get_all_operations():
        label = f"{op.ok().method.upper()} {op.ok().path}"
        if label in ANSWERED:
            assert any(200 <= s < 300 for s in ANSWERED[label]), (label, ANSWERED[label])
