"""Keys, scopes, private collections, limits and the audit trail (issue 23). Every route against every kind
of caller is tests/test_access_routes.py; credentials for sources are tests/test_fetch_auth.py."""

from __future__ import annotations

import io
import json
import sqlite3
import threading
from pathlib import Path
from urllib.parse import urlencode

import pytest
from conftest import draw_shape, service_engine
from werkzeug.serving import make_server

from clip_gaze import ApiError, Client
from indexer.errors import ClipGazeError
from indexer.store.keys import KeyStore
from indexer.settings import Settings
from service import create_app
from service.serve import check_bind

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def engine(clean_environ, toy_loader, monkeypatch):
    return service_engine(toy_loader, monkeypatch, TOKEN)


def client_of(engine, monkeypatch, **env: str):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return create_app(Settings.from_env(), engine=engine).test_client()


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def png() -> bytes:
    buf = io.BytesIO()
    draw_shape("red", "circle").save(buf, format="PNG")
    return buf.getvalue()


# -- keys -----------------------------------------------------------------------------------------
def test_a_secret_is_long_random_shown_once_and_stored_only_as_its_hash(engine):
    keys = KeyStore(engine.store)
    key, secret = keys.create("cataloguer", ["read", "write"], ["unpublished"], None, "90d")
    other = keys.create("other", ["read"])[1]
    assert secret.startswith("cgk_") and len(secret) >= 60 and secret != other
    assert key.scopes == ("read", "write") and key.collections == ("unpublished",) and key.expires_at
    with sqlite3.connect(engine.store.path) as conn:
        dump = "\n".join(conn.iterdump())
    assert secret not in dump and secret.split("_")[-1] not in dump
    assert keys.authenticate(secret).name == "cataloguer"
    assert keys.authenticate(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None  # its id, a wrong secret
    assert keys.authenticate("not-a-key") is None and keys.authenticate("") is None
    keys.revoke("cataloguer")
    assert keys.authenticate(secret) is None and keys.get("cataloguer").state() == "revoked"
    assert keys.create("cataloguer", ["read"])[1] != secret  # a revoked key's name is free again
    with pytest.raises(ClipGazeError, match="exists"):
        keys.create("other", ["read"])


def test_a_refused_key_is_401_and_the_answer_never_says_which_part_was_wrong(engine, monkeypatch):
    keys = KeyStore(engine.store)
    revoked = keys.create("revoked", ["read"])[1]
    keys.revoke("revoked")
    expired = keys.create("expired", ["read"], expires="1h")[1]
    with engine.store.transaction() as db:
        db.execute("UPDATE api_keys SET expires_at = '2001-01-01T00:00:00+00:00' WHERE name = 'expired'")
    wrong_secret = revoked.rsplit("_", 1)[0] + "_" + "B" * 43
    client = client_of(engine, monkeypatch)
    bodies = set()
    for given in (revoked, expired, wrong_secret, "cgk_000000000000_" + "A" * 43, "nonsense"):
        resp = client.get("/v1/vocabularies", headers=bearer(given))
        assert resp.status_code == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
        bodies.add(resp.get_data(as_text=True))
        assert given not in resp.get_data(as_text=True)
    assert len(bodies) == 1 and "unauthorized" in bodies.pop()
    assert client.get("/v1/vocabularies", headers={"Authorization": "Basic dXNlcjpwdw=="}).status_code == 401


def test_keys_through_the_api_need_an_admin_key_and_work_at_once(engine, monkeypatch):
    client = client_of(engine, monkeypatch)
    made = client.post("/v1/keys", json={"name": "reader", "scopes": ["read"], "expires": "2w"}, headers=AUTH)
    assert made.status_code == 201, made.get_json()
    secret = made.get_json()["secret"]
    assert client.get("/v1/collections", headers=bearer(secret)).status_code == 200
    assert client.get("/v1/keys", headers=bearer(secret)).get_json()["code"] == "forbidden"
    listed = client.get("/v1/keys", headers=AUTH)
    assert secret not in listed.get_data(as_text=True) and "hash" not in listed.get_data(as_text=True)
    (info,) = listed.get_json()["keys"]
    assert info["name"] == "reader" and info["state"] == "active" and info["last_used_at"]
    admin = client.post("/v1/keys", json={"name": "boss", "scopes": ["admin"]}, headers=AUTH).get_json()["secret"]
    assert client.delete("/v1/keys/reader", headers=bearer(admin)).get_json()["key"]["state"] == "revoked"
    assert client.get("/v1/collections", headers=bearer(secret)).status_code == 401
    bad = client.post("/v1/keys", json={"name": "x", "scopes": ["everything"]}, headers=AUTH).get_json()
    assert bad["status"] == 400
    assert client.post("/v1/keys", json={"name": "x", "scopes": ["read"], "expires": "soon"}, headers=AUTH).get_json()[
        "code"] == "invalid_expiry"


def test_a_key_in_the_query_string_is_refused_clearly(engine, monkeypatch):
    client = client_of(engine, monkeypatch)
    for name in ("key", "token", "api_key", "access_token"):
        body = client.get(f"/v1/vocabularies?{name}={TOKEN}").get_json()
        assert body["status"] == 400 and body["code"] == "key_in_query" and "Authorization: Bearer" in body["error"]
        assert TOKEN not in body["error"]
    assert client.get(f"/v1/health?key={TOKEN}").get_json()["code"] == "key_in_query"


# -- what anonymous callers may do ----------------------------------------------------------------------
def test_anonymous_callers_by_default_read_and_analyze_and_nothing_more(engine, monkeypatch):
    client = client_of(engine, monkeypatch)
    assert client.get("/v1/vocabularies").status_code == 200
    assert client.post("/v1/compare", data={"image": (io.BytesIO(png()), "p.png"), "phrases": "a\nb"}).status_code == 200
    assert client.post("/v1/collections", json={"name": "x"}).get_json()["code"] == "unauthorized"
    assert client.get("/v1/keys").get_json()["code"] == "unauthorized"


def test_a_public_catalogue_reads_for_free_and_a_closed_one_answers_only_health(engine, monkeypatch):
    client = client_of(engine, monkeypatch, CLIP_GAZE_ANONYMOUS="read")
    assert client.get("/v1/vocabularies").status_code == 200
    refused = client.post("/v1/compare", data={"image": (io.BytesIO(png()), "p.png"), "phrases": "a\nb"})
    assert refused.status_code == 401 and "analyze" in refused.get_json()["error"]
    client = client_of(engine, monkeypatch, CLIP_GAZE_ANONYMOUS="none")
    assert client.get("/v1/vocabularies").status_code == 401
    assert client.get("/v1/health").status_code == 200 and client.get("/openapi.json").status_code == 200
    page = client.get("/")
    assert page.status_code == 200
    page.close()
    assert client.get("/v1/vocabularies", headers=AUTH).status_code == 200  # a token has every scope
    with pytest.raises(ValueError, match="CLIP_GAZE_ANONYMOUS"):
        Settings.from_env({"CLIP_GAZE_ANONYMOUS": "read,everything"})


def test_the_server_listens_beyond_loopback_only_with_a_key_and_no_anonymous_writes(tmp_path: Path):
    settings = Settings.from_env({"CLIP_GAZE_HOME": str(tmp_path)})
    check_bind("127.0.0.1", settings)
    with pytest.raises(ClipGazeError, match="no key set"):
        check_bind("0.0.0.0", settings)
    from indexer.store.phrase_store import Store

    KeyStore(Store(tmp_path)).create("admin", ["admin"])
    check_bind("0.0.0.0", settings)  # a key in the store is a key set
    writes = Settings.from_env({"CLIP_GAZE_HOME": str(tmp_path), "CLIP_GAZE_ANONYMOUS": "read,write",
                                "CLIP_GAZE_API_TOKENS": "t"})
    with pytest.raises(ClipGazeError, match="could write"):
        check_bind("0.0.0.0", writes)
    check_bind("::1", writes)


# -- private collections and vocabularies -----------------------------------------------------------------
@pytest.fixture
def museum(engine, monkeypatch):
    """A private collection `unpublished` with a picture, a private vocabulary `thesaurus`, a public
    collection `open`, and keys: `curator` granted both, `visitor` granted neither."""
    client = client_of(engine, monkeypatch)
    for name, private in (("unpublished", True), ("open", False)):
        assert client.post("/v1/collections", json={"name": name, "private": private}, headers=AUTH).status_code == 201
    from indexer.schema import parse
    from indexer.schema.collections import AddSources

    folder = Path(engine.store.home) / "scans"
    folder.mkdir()
    (folder / "red.png").write_bytes(png())
    state = client.application.extensions["clip_gaze"]
    state.collections.add("unpublished", parse(AddSources, {"sources": [str(folder)]}))
    made = client.post("/v1/vocabularies", json={"name": "thesaurus", "phrases": ["a red circle", "a blue square"],
                                                   "private": True}, headers=AUTH)
    assert made.status_code == 201 and made.get_json()["vocabulary"]["private"] is True
    keys = KeyStore(engine.store)
    curator = keys.create("curator", ["read", "analyze", "write"], ["unpublished"], ["thesaurus"])[1]
    visitor = keys.create("visitor", ["read", "analyze", "write"], ["open"], [])[1]
    return client, bearer(curator), bearer(visitor)


def _same_but_name(a, b, name_a: str, name_b: str) -> None:
    assert a.status_code == b.status_code, (a.get_json(), b.get_json())
    assert a.get_data(as_text=True).replace(name_a, "NAME") == b.get_data(as_text=True).replace(name_b, "NAME")


def test_a_private_collection_exists_only_for_keys_granted_it(museum):
    client, curator, visitor = museum
    names = lambda headers: [c["name"] for c in client.get("/v1/collections", headers=headers).get_json()["collections"]]  # noqa: E731
    assert names({}) == ["open"] and names(visitor) == ["open"]
    assert names(curator) == ["open", "unpublished"] and names(AUTH) == ["open", "unpublished"]
    for path in ("/v1/collections/{}", "/v1/collections/{}/search?q=a+red+circle"):
        for headers in ({}, visitor):
            hidden = client.get(path.format("unpublished"), headers=headers)
            missing = client.get(path.format("nowhere-at-all"), headers=headers)
            _same_but_name(hidden, missing, "unpublished", "nowhere-at-all")
            assert hidden.status_code == 404 and hidden.get_json()["code"] == "unknown_collection"
        assert client.get(path.format("unpublished"), headers=curator).status_code == 200
    _same_but_name(client.post("/v1/collections/unpublished/analyze", json={}, headers=visitor),
                   client.post("/v1/collections/nowhere-at-all/analyze", json={}, headers=visitor), "unpublished", "nowhere-at-all")
    _same_but_name(client.delete("/v1/collections/unpublished", headers=visitor),
                   client.delete("/v1/collections/nowhere-at-all", headers=visitor), "unpublished", "nowhere-at-all")
    # a reference collection named in a body: 422, as for a name that does not exist
    picture = {"image": (io.BytesIO(png()), "p.png"), "vocabularies": "thesaurus"}
    assert client.post("/v1/analyze", data={**picture, "relative_to": "unpublished"}, headers=curator).status_code == 200
    hidden = client.post("/v1/analyze", data={"image": (io.BytesIO(png()), "p.png"), "relative_to": "unpublished"}, headers=visitor)
    missing = client.post("/v1/analyze", data={"image": (io.BytesIO(png()), "p.png"), "relative_to": "nowhere-at-all"},
                          headers=visitor)
    _same_but_name(hidden, missing, "unpublished", "nowhere-at-all")
    assert hidden.status_code == 422


def test_a_job_of_a_private_collection_is_no_job_to_others(museum, engine):
    client, curator, visitor = museum
    job = engine.images.create_job("add_sources", "unpublished")
    assert client.get(f"/v1/jobs/{job}", headers=curator).status_code == 200
    hidden, missing = client.get(f"/v1/jobs/{job}", headers=visitor), client.get("/v1/jobs/no-such-job", headers=visitor)
    _same_but_name(hidden, missing, job, "no-such-job")


def test_a_private_vocabulary_is_seen_and_scored_only_with_its_grant(museum):
    client, curator, visitor = museum
    names = lambda headers: {v["name"] for v in client.get("/v1/vocabularies", headers=headers).get_json()["vocabularies"]}  # noqa: E731
    assert "thesaurus" in names(curator) and "thesaurus" not in names(visitor) and "thesaurus" not in names({})
    _same_but_name(client.get("/v1/vocabularies/thesaurus", headers=visitor),
                   client.get("/v1/vocabularies/nowhere-at-all", headers=visitor), "thesaurus", "nowhere-at-all")
    for headers in (visitor, {}):
        hidden = client.post("/v1/analyze", data={"image": (io.BytesIO(png()), "p.png"), "vocabularies": "thesaurus"},
                             headers=headers)
        missing = client.post("/v1/analyze", data={"image": (io.BytesIO(png()), "p.png"), "vocabularies": "nowhere-at-all"},
                              headers=headers)
        _same_but_name(hidden, missing, "thesaurus", "nowhere-at-all")
        assert hidden.status_code == 422 and hidden.get_json()["code"] == "unknown_vocabulary"
    scored = client.post("/v1/analyze", data={"image": (io.BytesIO(png()), "p.png"), "vocabularies": "thesaurus"},
                         headers=curator).get_json()
    assert scored["results"]["thesaurus"]["softmax_over"] == 2


def test_a_key_granted_some_collections_changes_only_those(museum):
    client, curator, visitor = museum
    refused = client.delete("/v1/collections/open", headers=curator)  # open is not in curator's grant
    assert refused.status_code == 403 and refused.get_json()["code"] == "forbidden"
    assert client.get("/v1/collections/open", headers=curator).status_code == 200  # anonymous callers may read it
    assert client.delete("/v1/collections/open", headers=visitor).status_code == 200


def test_the_cli_makes_private_collections_and_keys_and_reads_the_audit(run, clean_environ):
    assert run("collection", "create", "unpublished", "--private").exit_code == 0
    shown = run("collection", "show", "unpublished", "--json")
    assert json.loads(shown.stdout.splitlines()[0])["collection"]["private"] is True
    made = run("keys", "create", "curator", "--scopes", "read,analyze", "--collections", "unpublished", "--expires", "90d", "--json")
    assert made.exit_code == 0, made.output
    created = json.loads(made.stdout)
    assert created["secret"].startswith("cgk_") and created["key"]["collections"] == ["unpublished"]
    listed = run("keys", "list")
    assert "curator [active] scopes read,analyze; collections: unpublished" in listed.stdout
    assert created["secret"] not in listed.stdout
    assert run("keys", "revoke", "curator").exit_code == 0
    assert "[revoked]" in run("keys", "list").stdout
    wrong = run("keys", "create", "x", "--scopes", "everything")
    assert wrong.exit_code == 1 and wrong.output.startswith("Error: scopes")
    trail = json.loads(run("audit", "--json").stdout)
    assert [e["path"] for e in trail["entries"]] == ["keys create curator", "keys revoke curator"]
    assert all(e["key"] == "(cli)" for e in trail["entries"])


# -- limits and the audit trail ----------------------------------------------------------------------------
def test_a_caller_over_the_rate_limit_gets_429_with_retry_after_and_computing_counts_more(engine, monkeypatch):
    client = client_of(engine, monkeypatch, CLIP_GAZE_RATE_LIMIT="6")
    secret = KeyStore(engine.store).create("busy", ["read", "analyze"])[1]
    compare = {"phrases": "a\nb"}
    assert client.post("/v1/compare", data={**compare, "image": (io.BytesIO(png()), "p.png")}, headers=bearer(secret)).status_code == 200
    assert client.get("/v1/vocabularies/shapes", headers=bearer(secret)).status_code in (200, 404)  # 5 + 1 = 6
    refused = client.get("/v1/collections", headers=bearer(secret))
    body = refused.get_json()
    assert refused.status_code == 429 and body["code"] == "rate_limited" and int(refused.headers["Retry-After"]) >= 1
    assert set(body) == {"ok", "status", "code", "error"} and "Retry-After" not in body["error"]
    assert client.get("/v1/collections").status_code == 200  # another caller (this address, no key) has its own count
    assert client.get("/v1/health", headers=bearer(secret)).status_code == 200  # health is never counted


def test_every_write_is_in_the_audit_trail_with_the_key_that_made_it(engine, monkeypatch):
    client = client_of(engine, monkeypatch)
    writer = KeyStore(engine.store).create("registrar", ["write", "read"])[1]
    assert client.post("/v1/collections", json={"name": "loans"}, headers=bearer(writer)).status_code == 201
    assert client.post("/v1/vocabularies", json={"name": "terms", "phrases": ["x"]}, headers=AUTH).status_code == 201
    assert client.delete("/v1/collections/loans", headers=bearer(writer)).status_code == 200
    client.post("/v1/collections", json={"name": "refused"})  # refused (401): not a write made
    client.get("/v1/collections", headers=bearer(writer))  # a read: not recorded
    trail = client.get("/v1/audit", headers=AUTH).get_json()
    assert [(e["key"], e["method"], e["path"], e["status"]) for e in trail["entries"]] == [
        ("registrar", "POST", "/v1/collections", 201), ("token#2", "POST", "/v1/vocabularies", 201),
        ("registrar", "DELETE", "/v1/collections/loans", 200)]
    assert trail["entries"][0]["address"] == "127.0.0.1"
    assert writer not in json.dumps(trail) and TOKEN not in json.dumps(trail)
    first = trail["entries"][0]
    query = urlencode({"since": first["at"], "after": first["id"], "limit": 1})
    later = client.get(f"/v1/audit?{query}", headers=AUTH).get_json()
    assert [e["id"] for e in later["entries"]] == [first["id"] + 1] and later["next_after"] == first["id"] + 1
    assert client.get("/v1/audit?since=yesterday", headers=AUTH).get_json()["code"] == "invalid_time"
    assert client.get("/v1/audit", headers=bearer(writer)).get_json()["code"] == "forbidden"


def test_a_key_is_its_own_caller_for_the_fetch_limits(engine, monkeypatch):
    from service.fetching import caller

    app = create_app(Settings.from_env(), engine=engine)
    secret = KeyStore(engine.store).create("fetcher", ["analyze"])[1]
    with app.test_request_context(headers=bearer(secret), environ_base={"REMOTE_ADDR": "203.0.113.7"}):
        assert caller() == "key:fetcher"
    with app.test_request_context(headers=bearer("cgk_000000000000_" + "A" * 43), environ_base={"REMOTE_ADDR": "203.0.113.7"}):
        assert caller() == "addr:203.0.113.7"


def test_the_client_takes_a_key_as_its_token(engine, monkeypatch):
    app = create_app(Settings.from_env(), engine=engine)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        admin = Client(url, token=TOKEN)
        created = admin.create_key("reader", ["read"], collections=["unpublished"])
        admin.create_collection("unpublished", private=True)
        reader = Client(url, token=created.secret)
        assert [c.name for c in reader.collections()] == ["unpublished"]
        with pytest.raises(ApiError) as refused:
            reader.create_collection("mine")
        assert refused.value.status == 403 and refused.value.code == "forbidden"
        assert [k.name for k in admin.keys()] == ["reader"]
        assert admin.revoke_key("reader").key.state == "revoked"
        assert [e.path for e in admin.audit().entries] == ["/v1/keys", "/v1/collections", "/v1/keys/reader"]
        with pytest.raises(ApiError) as gone:
            reader.collections()
        assert gone.value.status == 401
    finally:
        server.shutdown()
