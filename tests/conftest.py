"""Hermetic, offline tests: every test gets its own data directory and an empty, offline
Hugging Face cache; the toy model (loaded once per session) stands in wherever a model is needed."""

from __future__ import annotations

import copy
import io
import json
import os
import re
import sys
import tempfile
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from jsonschema import Draft202012Validator
from PIL import Image, ImageDraw
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from werkzeug.exceptions import HTTPException

sys.path.insert(0, str(Path(__file__).parent))

# huggingface_hub reads these once, at import: point them at an empty, offline cache before anything
# imports it, so no test can reach the network or a developer's cached weights.
HF_HOME = Path(tempfile.mkdtemp(prefix="clip-gaze-tests-hf-"))
os.environ.update(HF_HOME=str(HF_HOME), HF_HUB_CACHE=str(HF_HOME / "hub"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")

# Under pytest-xdist (the README's test command runs two workers, one a core), each worker's torch,
# ONNX Runtime and the servers it starts keep to one thread: two processes whose OpenMP threads spin on
# the same cores slow each other several-fold.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")


# The longest single tests (tens of seconds each, as measured with the README's command), run first, longest
# first: pytest-xdist's loadgroup hands out the groups (largest first), then the other tests in collection
# order, so a long test collected last would start last and keep one worker busy while the other idles.
# Only the order changes; a name here that no longer matches moves nothing.
SLOW_FIRST = (
    # A group's tests run on one worker in this order too: the README's long test first, so that no test is
    # handed to that worker to wait behind it (a worker is given more once only two of its tests are left).
    "tests/test_readme.py::test_every_block_of_the_readme_runs_as_written",
    "tests/test_types.py::test_core_modules_type_check",
    "tests/test_onnx_export.py::test_vit_b_32_with_random_weights_gives_open_clips_probabilities",
    "tests/test_e2e_serve.py::test_docker_compose_commands_run_as_written",
    "tests/test_hardening.py::test_two_servers_keep_no_shared_control_socket_and_log_no_credentials",
    "tests/test_explorer.py::test_the_map_is_a_job_then_one_point_per_picture_and_is_computed_again_when_the_collection_changes",
    "tests/test_e2e_serve.py::test_sigkill_mid_write_loses_no_acknowledged_write_and_leaves_no_half_batch",
    "tests/test_onnx_export.py::test_two_processes_exporting_at_once_make_one_export",
    "tests/test_jobs_restart.py::test_a_job_stopped_with_its_server_is_resumed_at_the_next_start_or_interrupted",
    "tests/test_collections_refresh.py::test_four_api_jobs_and_a_cli_add_of_one_manifest_fetch_each_picture_once",
    "tests/test_decode_memory.py::test_a_60_mp_avif_raises_the_peak",
    "tests/test_mirador.py::test_mirador_shows_each_canvas_its_top_term",
    "tests/test_hardening.py::test_a_batch_of_huge_one_bit_pngs_stays_within_400_mb_and_the_worker_goes_on",
    "tests/test_e2e_serve.py::test_a_worker_serving_on_onnx_runtime_never_loads_torch",
)


def _slow_rank(item: pytest.Item) -> int:
    return next((i for i, prefix in enumerate(SLOW_FIRST) if item.nodeid.startswith(prefix)), len(SLOW_FIRST))


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Runs the longest tests first (SLOW_FIRST; a stable sort: every other test keeps its place), after
    stopping a run that would test less than it says: pytest-xdist hands tests to its workers by node
    id, so two tests with one id (schemathesis's operations, under a pytest that names them alike) run
    as one, and a group (`xdist_group`) pytest-xdist could not mark is split across workers. Both
    happened with pytest 9.2 and pytest-xdist 3.8, hence `pytest<9.2` in the test extra."""
    twice = {nodeid for nodeid, n in Counter(item.nodeid for item in items).items() if n > 1}
    if twice:
        raise pytest.UsageError(f"{len(twice)} node ids name more than one test (e.g. {min(twice)}); "
                                "pytest-xdist would run one of each: use pytest<9.2")
    if getattr(config.option, "loadgroup", False):
        split = [item.nodeid for item in items if item.get_closest_marker("xdist_group") and "@" not in item.nodeid]
        if split:
            raise pytest.UsageError(f"pytest-xdist did not group {split[0]} (and {len(split) - 1} more): use pytest<9.2")
    items.sort(key=_slow_rank)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The offline Hugging Face cache made above goes with the session."""
    import shutil

    shutil.rmtree(HF_HOME, ignore_errors=True)


_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}
_real_getaddrinfo = __import__("socket").getaddrinfo


def _loopback_only_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    """No test resolves a name that could leave this machine: loopback names and IP literals only."""
    import ipaddress
    import socket

    name = host.decode() if isinstance(host, bytes) else host
    numeric = name is not None and re.fullmatch(r"[0-9.]+|0x[0-9a-fx.]+", str(name).lower())  # glibc reads these itself
    if name is not None and not numeric and str(name).lower().rstrip(".") not in _LOOPBACK_NAMES:
        try:
            ipaddress.ip_address(str(name).split("%", 1)[0])
        except ValueError:
            raise socket.gaierror(socket.EAI_NONAME, f"name resolution is blocked in tests: {name}") from None
    return _real_getaddrinfo(host, *args, **kwargs)


@pytest.fixture(autouse=True)
def no_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    monkeypatch.setattr(socket, "getaddrinfo", _loopback_only_getaddrinfo)


from indexer.engine import Engine  # noqa: E402
from indexer.models.torch_model import LoadedModel, load_model  # noqa: E402
from indexer.models.registry import parse_model  # noqa: E402
from indexer.schema import AddPhrases, CreateVocabulary, RemovePhrases, WriteAnswer, parse  # noqa: E402
from service.openapi import openapi_document  # noqa: E402


def create(engine: Engine, name: str, phrases: Any = (), **fields: Any) -> WriteAnswer:
    """engine.create_vocabulary through the request model, as the API and the CLI build it."""
    return engine.create_vocabulary(parse(CreateVocabulary, {"name": name, "phrases": list(phrases), **fields}))


def add(engine: Engine, name: str, phrases: Any) -> WriteAnswer:
    return engine.add_phrases(name, parse(AddPhrases, {"phrases": list(phrases)}))


def remove(engine: Engine, name: str, **fields: Any) -> WriteAnswer:
    return engine.remove_phrases(name, parse(RemovePhrases, fields))


@pytest.fixture(autouse=True)
def clean_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, toy_onnx_dir: Path) -> Path:
    """A fresh data directory per test, holding (as a link) the toy model's ONNX export, made once per
    session: engines made without a loader serve on ONNX Runtime, as by default, without exporting."""
    for key in ("CLIP_GAZE_API_TOKENS", "CLIP_GAZE_DEVICE", "CLIP_GAZE_THREADS", "CLIP_GAZE_LISTS", "CLIP_GAZE_BACKEND"):
        monkeypatch.delenv(key, raising=False)
    home = tmp_path / "home"
    linked = export_place(home, toy_onnx_dir)
    linked.parent.mkdir(parents=True)
    linked.symlink_to(toy_onnx_dir, target_is_directory=True)
    monkeypatch.setenv("CLIP_GAZE_HOME", str(home))
    monkeypatch.setenv("CLIP_GAZE_MODEL", "toy")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    import clip_gaze.library as library

    library._engines.clear()
    return home


@pytest.fixture(scope="session")
def toy() -> LoadedModel:
    return load_model(parse_model("toy"), device="cpu")


@pytest.fixture
def toy_loader(toy: LoadedModel) -> Callable[..., LoadedModel]:
    def loader(spec: Any, **_: Any) -> LoadedModel:
        assert spec.arch == toy.spec.arch
        return toy

    return loader


def service_engine(toy_loader: Callable[..., LoadedModel], monkeypatch: pytest.MonkeyPatch, token: str) -> Engine:
    """The engine as the service makes it (its limits from the settings, batching concurrent images,
    never embedding a whole list), with the session's toy model and `token` allowed to write."""
    from indexer.settings import Settings
    from service.state import AUTO_EMBED_LIMIT

    monkeypatch.setenv("CLIP_GAZE_API_TOKENS", f"other,{token}")
    monkeypatch.setenv("CLIP_GAZE_MAX_UPLOAD_MB", "1")
    monkeypatch.setenv("CLIP_GAZE_MAX_PIXELS", "4000000")
    return Engine.from_settings(Settings.from_env(), loader=toy_loader, batch_window_ms=2, auto_embed_limit=AUTO_EMBED_LIMIT)


@pytest.fixture
def engine(clean_environ: Path, toy_loader: Callable[..., LoadedModel]) -> Engine:
    return Engine(clean_environ, "toy", loader=toy_loader)


@pytest.fixture
def toy_engines(toy_loader: Callable[..., LoadedModel], monkeypatch: pytest.MonkeyPatch) -> None:
    """Every Engine made during the test (by the CLI, the library) uses the session's toy model."""
    original = Engine.__init__

    def init(self: Engine, home: Any, model: Any = None, **kw: Any) -> None:
        original(self, home, model, **{**kw, "loader": toy_loader})

    monkeypatch.setattr(Engine, "__init__", init)


@pytest.fixture
def run(toy_engines: None) -> Callable[..., Any]:
    """Invoke the CLI in-process, with the session's toy model injected (no reload per call)."""
    from click.testing import CliRunner

    from clip_gaze.cli import cli

    runner = CliRunner()

    def invoke(*args: str, input: str | None = None) -> Any:
        return runner.invoke(cli, list(args), input=input, catch_exceptions=False)

    return invoke


@pytest.fixture(scope="module")
def _chromium() -> Iterator[Any]:
    """One headless Chromium a test module (tests/browser.py)."""
    from browser import chromium

    with chromium() as browser:
        yield browser


@pytest.fixture
def page(request: pytest.FixtureRequest, _chromium: Any) -> Iterator[Any]:
    """A page of headless Chromium in a fresh context, sized by the test module's VIEWPORT if it has one."""
    from browser import new_page

    with new_page(_chromium, getattr(request.module, "VIEWPORT", None)) as pg:
        yield pg


def draw_shape(colour: str = "red", shape: str = "circle", size: int = 128, background: str = "white") -> Image.Image:
    img = Image.new("RGB", (size, size), background)
    d = ImageDraw.Draw(img)
    a, b = size // 4, 3 * size // 4
    if shape == "circle":
        d.ellipse((a, a, b, b), fill=colour)
    elif shape == "square":
        d.rectangle((a, a, b, b), fill=colour)
    else:
        d.polygon([(size // 2, a), (b, b), (a, b)], fill=colour)
    return img


def encode(img: Image.Image, fmt: str = "PNG", **kw: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.fixture
def red_circle_png() -> bytes:
    return encode(draw_shape("red", "circle"))


@pytest.fixture
def picture(tmp_path: Path) -> Path:
    p = tmp_path / "picture.png"
    draw_shape("blue", "square").save(p)
    return p


# -- every JSON answer the tests receive is checked against the OpenAPI document -------------------
_DOC_URI = "urn:clip-gaze:openapi.json"


def strict_document(doc: dict[str, Any]) -> dict[str, Any]:
    """A copy of `doc` in which every object schema that lists `properties` allows no other field.
    Answers allow extra fields for clients' forward compatibility; the server's own tests must not
    send any field the document does not describe."""

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: walk(v) for k, v in node.items()}
            if out.get("type") == "object" and isinstance(out.get("properties"), dict):
                out["additionalProperties"] = False
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(copy.deepcopy(doc))


@lru_cache(maxsize=2)
def _registry(strict: bool) -> Registry:
    doc = openapi_document()
    resource = Resource(contents=strict_document(doc) if strict else doc, specification=DRAFT202012)
    return Registry().with_resource(_DOC_URI, resource)


def pointer(*parts: str) -> str:
    """A JSON pointer into the document ('/paths/~1v1~1health/get')."""
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)


@lru_cache(maxsize=None)
def document_validator(ref: str, strict: bool = True) -> Draft202012Validator:
    """A Draft 2020-12 validator for the schema at JSON pointer `ref` of the OpenAPI document (its
    `#/components/schemas/...` references resolved against it); `strict`: see strict_document."""
    return Draft202012Validator({"$ref": f"{_DOC_URI}#{ref}"}, registry=_registry(strict),
                                format_checker=Draft202012Validator.FORMAT_CHECKER)


def operation_of(app: Flask, method: str, path: str) -> tuple[str, str] | None:
    """(OpenAPI path template, method) of the operation that serves `method path` in `app`, or
    None where no documented operation does (an unknown path, a method the path does not allow)."""
    try:
        rule, _ = app.url_map.bind("localhost").match(path, method=method, return_rule=True)
    except HTTPException:
        return None
    template = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
    ops = openapi_document()["paths"].get(template, {})
    m = method.lower()
    return (template, m) if m in ops else None


def schema_problems(app: Flask, method: str, path: str, status: int, body: Any) -> list[str]:
    """Why `body`, the JSON answer with `status` to `method path`, is not what the document says
    (strictly: no undocumented field); [] when it is."""
    doc = openapi_document()
    found = operation_of(app, method, path)
    if found is None:
        # No documented operation: only the error shape is promised (404, 405…).
        if status < 400:
            return [f"{method} {path} answered {status} but no documented operation serves it"]
        ref = pointer("components", "schemas", "ErrorBody")
    else:
        template, m = found
        responses = doc["paths"][template][m]["responses"]
        key = str(status)
        if key not in responses:
            # `default` is there for clients; the server's tests hold it to the statuses it lists.
            return [f"{method} {path} → {status}: the document does not list this status for {m.upper()} {template}"]
        if "application/json" not in responses[key].get("content", {}):
            return [f"{method} {path}: status {status} is documented without a JSON body"]
        ref = pointer("paths", template, m, "responses", key, "content", "application/json", "schema")
    return [f"{method} {path} → {status}: {'/'.join(map(str, e.absolute_path)) or '(body)'}: {e.message}"
            for e in document_validator(ref).iter_errors(body)]


def assert_documented(app: Flask, method: str, path: str, status: int, body: Any) -> None:
    problems = schema_problems(app, method, path, status, body)
    assert not problems, "answer differs from /openapi.json:\n" + "\n".join(problems[:10])


class SchemaCheckingClient(FlaskClient):
    """Flask's test client, checking every JSON answer against the app's OpenAPI document."""

    def open(self, *args: Any, **kwargs: Any) -> Any:
        resp = super().open(*args, **kwargs)
        if resp.is_json and resp.request.method != "HEAD":
            body = json.loads(resp.get_data())
            assert_documented(self.application, resp.request.method, resp.request.path, resp.status_code, body)
        return resp


@pytest.fixture(autouse=True)
def _schema_checked_test_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every app a test creates answers its test client through SchemaCheckingClient."""
    monkeypatch.setattr(Flask, "test_client_class", SchemaCheckingClient)


class SchemaCheckingMiddleware:
    """WSGI middleware for apps served on a live port: records every JSON answer that differs from
    the document in `problems` (a server thread cannot fail the test itself; the fixture does)."""

    def __init__(self, app: Flask):
        self.app = app
        self.problems: list[str] = []

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        captured: dict[str, Any] = {}

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured.update(status=int(status.split()[0]), headers=headers)
            return start_response(status, headers, exc_info)

        answer = self.app(environ, start)
        try:
            chunks = list(answer)
        finally:
            getattr(answer, "close", lambda: None)()
        ctype = next((v for k, v in captured.get("headers", []) if k.lower() == "content-type"), "")
        if ctype.startswith("application/json") and environ["REQUEST_METHOD"] != "HEAD":
            try:
                body = json.loads(b"".join(chunks))
            except ValueError as exc:
                self.problems.append(f"{environ['PATH_INFO']}: not JSON: {exc}")
            else:
                self.problems += schema_problems(self.app, environ["REQUEST_METHOD"], environ["PATH_INFO"],
                                                 captured["status"], body)
        return chunks


@pytest.fixture(scope="session")
def toy_onnx_dir(toy: LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy model exported to ONNX (indexer.models.export) once per session, in its own home; tests
    that write into the export must copy it first."""
    from indexer.models.export import export_model
    from indexer.models.manifest import export_dir

    directory = export_dir(tmp_path_factory.mktemp("onnx-home"), toy.spec.key())
    export_model(toy, directory)
    _TOY_EXPORT[:] = [directory]
    return directory


_TOY_EXPORT: list[Path] = []  # the session's toy export (toy_onnx_dir), once made


def export_place(home: Path, export: Path) -> Path:
    """Where a data directory `home` keeps the session's export `export` (the same folders below it)."""
    return Path(home) / export.relative_to(export.parent.parent)


def seed_toy_export(home: Path) -> bool:
    """A copy of the session's toy ONNX export in `home`, where it has none yet, for a `clip-gaze` run in a
    subprocess whose first start's export (a dozen seconds) is not what its test checks: tests that do check
    it (tests/test_onnx_export.py, the e2e tests that pass `export=True`, the README's) start from nothing.
    A copy, not a link: the process may write into its export. False where there is no session export."""
    import shutil

    if not _TOY_EXPORT:
        return False
    source = _TOY_EXPORT[0]
    target = export_place(home, source)
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(source, target)
    return True
