"""Every route against every kind of caller (issue 23, 7), generated from the served OpenAPI document:
each operation is called with no key, a key of each scope, a key granted another collection, an expired
key, a revoked key and a token of CLIP_GAZE_API_TOKENS, and each status is checked against the scope the
operation declares in its `security` requirement. A route added without a declared scope fails here.

The requests name a private collection and a private vocabulary (granted to the scoped keys), and send a
body no operation accepts, so that a caller let through is answered by the view (400, 404 for a picture,
…) without any work being done, while a caller held back gets the guard's 401, 403 or 404.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from conftest import service_engine

from indexer.settings import SCOPES, Settings
from indexer.store.keys import KeyStore
from service import create_app
from service.openapi import openapi_document

TOKEN = "s3cret-token"
PROBE = {"clip_gaze_probe": True}  # refused by every request model (unknown fields are errors)
CALLERS = ("anonymous", *SCOPES, "other-grant", "expired", "revoked", "made-up", "token")
DOC_OPERATIONS = [(m, p) for p, ops in openapi_document()["paths"].items() for m in ops]


def declared_scope(operation: dict[str, Any]) -> str | None:
    """The scope an operation of the document declares: public (an empty requirement) or its bearer scope."""
    if "security" not in operation:
        return None
    if operation["security"] == []:
        return "public"
    (requirement,) = operation["security"]
    (scope,) = requirement["bearer"]
    return scope  # type: ignore[no-any-return]


def path_kind(path: str) -> str | None:
    for prefix, kind in (("/v1/collections/{name}", "collection"), ("/v1/vocabularies/{name}", "vocabulary"),
                         ("/v1/jobs/{job_id}", "job")):
        if path.startswith(prefix):
            return kind
    return None


class World:
    """A server with anonymous callers allowed `anonymous`, a private collection and vocabulary, a job of
    that collection, and keys of every kind."""

    def __init__(self, toy_loader, monkeypatch, anonymous: str):
        monkeypatch.setenv("CLIP_GAZE_ANONYMOUS", anonymous)
        self.engine = service_engine(toy_loader, monkeypatch, TOKEN)
        images, store = self.engine.images, self.engine.store
        images.create("open", "published")
        self.restore()
        keys = KeyStore(store)
        self.secrets: dict[str, str] = {}
        for scope in SCOPES:
            self.secrets[scope] = keys.create(f"key-{scope}", [scope], ["secret"], ["secret-terms"])[1]
        self.secrets["other-grant"] = keys.create("other", ["read", "analyze", "write"], ["open"], [])[1]
        self.secrets["expired"] = keys.create("expired", list(SCOPES), ["secret"], ["secret-terms"], "1h")[1]
        with store.transaction() as db:
            db.execute("UPDATE api_keys SET expires_at = '2001-01-01T00:00:00+00:00' WHERE name = 'expired'")
        self.secrets["revoked"] = keys.create("revoked", list(SCOPES), ["secret"], ["secret-terms"])[1]
        keys.revoke("revoked")
        self.secrets["made-up"] = "cgk_000000000000_" + "A" * 43
        self.secrets["token"] = TOKEN
        self.client = create_app(Settings.from_env(), engine=self.engine).test_client()

    def restore(self) -> None:
        """What a caller let through a DELETE removed, made again."""
        images, store = self.engine.images, self.engine.store
        if images.find("secret") is None:
            images.create("secret", "unpublished", private=True)
            self.job = images.create_job("add_sources", "secret")
            images.update_job(self.job, state="done")
        if store.find_vocabulary("secret-terms") is None:
            store.create_vocabulary("secret-terms", ["{}"], "a museum's own thesaurus", private=True)
        keys = KeyStore(store)
        if not any(k.name == "victim" and k.state() == "active" for k in keys.all()):
            keys.create("victim", ["read"])  # what DELETE /v1/keys/{name} revokes

    def url(self, path: str) -> str:
        names = {"/v1/collections/{name}": "secret", "/v1/vocabularies/{name}": "secret-terms", "/v1/keys/{name}": "victim"}
        for prefix, name in names.items():
            if path.startswith(prefix):
                path = path.replace("{name}", name, 1)
        path = path.replace("{job_id}", self.job)
        return re.sub(r"\{[^}]+\}", "0" * 64, path)  # any other parameter (a picture's sha256, …)

    def call(self, method: str, path: str, caller: str) -> Any:
        operation = openapi_document()["paths"][path][method]
        headers = {"Authorization": f"Bearer {self.secrets[caller]}"} if caller in self.secrets else {}
        body = {"json": PROBE} if "requestBody" in operation else {}
        try:
            return self.client.open(self.url(path), method=method.upper(), headers=headers, **body)
        finally:
            self.restore()


def expected(scope: str, caller: str, kind: str | None, anonymous: tuple[str, ...]) -> str:
    """What the guard does with `caller` on an operation of `scope` naming a `kind` of thing: let (the
    view answers), 401, 403 or 404 (hidden as if missing)."""
    if scope == "public":
        return "let"
    if caller in ("expired", "revoked", "made-up"):
        return "401"
    if caller == "token" or caller == "admin":
        return "let"
    if caller == "anonymous":
        if scope not in anonymous:
            return "401"
        return "404" if kind else "let"  # nothing private is seen without a key
    keyed_scopes = set(anonymous) | ({"read", "analyze", "write"} if caller == "other-grant" else {caller})
    if caller == "other-grant" and kind:
        return "404"  # granted another collection (and no private vocabulary): the private ones do not exist
    return "let" if scope in keyed_scopes else "403"


@pytest.fixture(params=["none", "read,analyze"], ids=["closed", "default"])
def world(request, toy_loader, monkeypatch) -> World:
    return World(toy_loader, monkeypatch, request.param)


def test_every_operation_of_the_document_declares_its_scope():
    undeclared = [f"{m.upper()} {p}" for m, p in DOC_OPERATIONS
                  if declared_scope(openapi_document()["paths"][p][m]) not in ("public", *SCOPES)]
    assert undeclared == []


@pytest.mark.parametrize("method, path", DOC_OPERATIONS, ids=[f"{m} {p}" for m, p in DOC_OPERATIONS])
def test_each_caller_gets_what_the_operations_declared_scope_allows(world: World, method: str, path: str):
    scope = declared_scope(openapi_document()["paths"][path][method])
    assert scope is not None, f"{method.upper()} {path} declares no scope"
    anonymous = Settings.from_env().anonymous
    wrong = []
    for caller in CALLERS:
        resp = world.call(method, path, caller)
        body = resp.get_json(silent=True) or {}
        code = body.get("code")
        want = expected(scope, caller, path_kind(path), anonymous)
        if want == "let":
            refused = code in ("unauthorized", "forbidden", "writes_disabled", "rate_limited") or (
                resp.status_code == 404 and code in ("unknown_collection", "unknown_vocabulary", "unknown_job"))
            ok = not refused and resp.status_code < 500
        elif want == "404":
            ok = resp.status_code == 404 and code == {"collection": "unknown_collection", "vocabulary": "unknown_vocabulary",
                                                        "job": "unknown_job"}[path_kind(path) or ""]
        else:
            ok = resp.status_code == int(want) and code == ("unauthorized" if want == "401" else "forbidden")
        if not ok:
            wrong.append(f"{caller}: wanted {want}, got {resp.status_code} {code}: {body.get('error')}")
    assert wrong == [], f"{method.upper()} {path} (scope {scope}, anonymous {anonymous}):\n" + "\n".join(wrong)


def test_every_route_of_the_app_is_an_operation_with_a_scope_or_a_page(world: World):
    app = world.client.application
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith(("page.", "static")):
            continue
        template = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            operation = openapi_document()["paths"].get(template, {}).get(method.lower())
            assert operation is not None and declared_scope(operation), f"{method} {rule.rule} declares no scope"


def test_a_route_that_declares_no_scope_is_refused_to_everyone(world: World):
    app = world.client.application
    app.add_url_rule("/v1/undeclared", "undeclared", lambda: {"ok": True})
    for caller in ("anonymous", "admin", "token"):
        headers = {"Authorization": f"Bearer {world.secrets[caller]}"} if caller in world.secrets else {}
        resp = world.client.get("/v1/undeclared", headers=headers)
        assert resp.status_code == 403 and resp.get_json()["code"] == "forbidden", caller
