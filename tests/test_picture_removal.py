"""Pictures removed from a collection (issue 22, part 4): DELETE /v1/collections/<name>/pictures,
`clip-gaze collection remove`, `Client.remove_pictures`; what hangs on them (reviews, thumbnails, the
map's version) goes or is no longer answered; bad bodies get the JSON error, nothing else is lost."""

from __future__ import annotations

import json
from typing import Any

from test_iiif_collections import AUTH, iiif, museum_engine  # noqa: F401  (fixtures)

from indexer.collections.local import Collections
from indexer.engine import Engine
from indexer.schema import parse
from indexer.schema.collections import AddSources
from indexer.settings import Settings
from indexer.store.audit import Audit
from indexer.store.keys import KeyStore
from indexer.store.reviews import Reviews
from service import create_app


def filled(engine: Engine, iiif: str, client: Any, name: str = "shapes", private: bool = False) -> dict[str, str]:  # noqa: F811
    assert client.post("/v1/collections", json={"name": name, "private": private}, headers=AUTH).status_code == 201
    Collections(engine).add(name, parse(AddSources, {"sources": [f"{iiif}/manifest.json"]}))
    row = engine.images.get(name)
    return {p.external_id: p.sha256 for p in engine.images.pictures(row.id) if p.external_id and p.sha256}


def test_removing_by_external_id_or_source_cleans_up_and_bumps_the_version(museum_engine: Engine, iiif: str):  # noqa: F811
    client = create_app(Settings.from_env(), engine=museum_engine).test_client()
    shas = filled(museum_engine, iiif, client)
    red, blue = f"{iiif}/canvas/red", f"{iiif}/canvas/blue"
    reviewed = client.post(f"/v1/collections/shapes/pictures/{shas[red]}/review",
                           json={"vocabulary": "qualities", "phrase": "excellent", "verdict": "accepted"}, headers=AUTH)
    assert reviewed.status_code == 200, reviewed.get_json()
    assert client.get(f"/v1/collections/shapes/pictures/{shas[red]}/thumbnail").status_code == 200
    before = museum_engine.images.get("shapes")

    gone = client.delete("/v1/collections/shapes/pictures", json={"external_ids": [red, "not-there"]}, headers=AUTH)
    assert gone.status_code == 200, gone.get_json()
    body = gone.get_json()
    assert body["ok"] and body["removed"] == 1 and body["collection"]["size"] == before.size - 1
    assert body["collection"]["version"] == before.version + 1  # maps, scores and search indexes are computed again
    assert Reviews(museum_engine.store).count(before.id) == 0  # its review went with it
    assert client.get(f"/v1/collections/shapes/pictures/{shas[red]}/thumbnail").status_code == 404
    assert client.get(f"/v1/collections/shapes/pictures/{shas[red]}").status_code == 404
    assert [e.path for e in Audit(museum_engine.store).entries().entries if e.method == "DELETE"] == \
           ["/v1/collections/shapes/pictures"]

    source = next(p.source for p in museum_engine.images.pictures(before.id) if p.external_id == blue)
    again = client.delete("/v1/collections/shapes/pictures", json={"sources": [source]}, headers=AUTH).get_json()
    assert again["removed"] == 1 and again["collection"]["size"] == before.size - 2
    left = {p.external_id for p in museum_engine.images.pictures(before.id)}
    assert left == {f"{iiif}/canvas/green"}
    nothing = client.delete("/v1/collections/shapes/pictures", json={"external_ids": [red]}, headers=AUTH).get_json()
    assert nothing["removed"] == 0 and nothing["collection"]["version"] == before.version + 2


def test_bad_bodies_and_callers_get_the_json_error_and_nothing_is_lost(museum_engine: Engine, iiif: str):  # noqa: F811
    client = create_app(Settings.from_env(), engine=museum_engine).test_client()
    filled(museum_engine, iiif, client)
    filled(museum_engine, iiif, client, "hidden", private=True)
    size = museum_engine.images.get("shapes").size
    for body, code in (({}, "invalid_input"), ({"external_ids": []}, "invalid_input"), ({"ids": ["x"]}, None),
                       ({"external_ids": "x"}, None), ({"sources": [""]}, None)):
        got = client.delete("/v1/collections/shapes/pictures", json=body, headers=AUTH)
        err = got.get_json()
        assert got.status_code == 400 and err["ok"] is False and err["status"] == 400 and err["error"], (body, err)
        if code:
            assert err["code"] == code and "external_ids or sources" in err["error"]
    assert client.delete("/v1/collections/shapes/pictures", data="x", headers=AUTH).get_json()["code"] == "invalid_json"
    assert client.delete("/v1/collections/shapes/pictures", json={"external_ids": ["x"]}).status_code == 401
    missing = client.delete("/v1/collections/nope/pictures", json={"external_ids": ["x"]}, headers=AUTH)
    assert missing.status_code == 404 and missing.get_json()["code"] == "unknown_collection"
    _, secret = KeyStore(museum_engine.store).create("editor", ["read", "write"], collections=["shapes"])
    hidden = client.delete("/v1/collections/hidden/pictures", json={"external_ids": [f"{iiif}/canvas/red"]},
                           headers={"Authorization": f"Bearer {secret}"})
    assert hidden.status_code == 404 and hidden.get_json()["code"] == "unknown_collection"
    assert museum_engine.images.get("shapes").size == size and museum_engine.images.get("hidden").size == size


def test_the_cli_and_the_client_remove_pictures(museum_engine: Engine, iiif: str, run: Any):  # noqa: F811
    from werkzeug.serving import make_server
    import threading

    from clip_gaze import ApiError, Client

    app = create_app(Settings.from_env(), engine=museum_engine)
    filled(museum_engine, iiif, app.test_client())
    out = run("collection", "remove", "shapes", "--external-id", f"{iiif}/canvas/red", "--json")
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["removed"] == 1
    said = run("collection", "remove", "shapes")
    assert said.exit_code == 1 and said.output.count("Error:") == 1 and "external_ids or sources" in said.output
    unknown = run("collection", "remove", "nope", "-e", "x")
    assert unknown.exit_code == 1 and "nope" in unknown.output
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = Client(f"http://127.0.0.1:{server.server_port}", token=AUTH["Authorization"].split()[1])
        found = client.remove_pictures("shapes", external_ids=[f"{iiif}/canvas/blue"])
        assert found.removed == 1 and found.collection.size == 1
        try:
            client.remove_pictures("shapes")
        except ApiError as exc:
            assert exc.code == "invalid_input"
        else:
            raise AssertionError("an empty removal was accepted")
    finally:
        server.shutdown()
