"""Where each IIIF picture came from (migration 007): the manifest it was read from and its Image API
service, stored with it on every add, relabel and refresh, read back typed from the store."""

from __future__ import annotations

import json
from pathlib import Path

from test_iiif_collections import PICTURES, iiif, museum_engine  # noqa: F401  (fixtures)

from indexer.collections.local import Collections
from indexer.engine import Engine
from indexer.schema import parse
from indexer.store.picture_removal import remove_pictures
from indexer.schema.collections import AddSources, CreateCollection


def add(engine: Engine, name: str, *sources: str):
    return Collections(engine).add(name, parse(AddSources, {"sources": list(sources)}))


def rows(engine: Engine, name: str) -> dict[str, tuple[str | None, str | None]]:
    row = engine.images.get(name)
    every = engine.images.pictures(row.id, limit=1000) + engine.images.pictures(row.id, errors=True, limit=1000)
    return {p.external_id or p.source: (p.manifest, p.image_service) for p in every}


def test_each_picture_keeps_its_manifest_and_image_service(museum_engine: Engine, iiif: str, tmp_path: Path):  # noqa: F811
    Collections(museum_engine).create(parse(CreateCollection, {"name": "shapes"}))
    manifest = f"{iiif}/manifest.json"
    add(museum_engine, "shapes", manifest)
    got = rows(museum_engine, "shapes")
    for name in PICTURES:
        assert got[f"{iiif}/canvas/{name}"] == (manifest, f"{iiif}/iiif/{name}")
    problem = [k for k in got if k.startswith(f"{manifest}#")]
    assert len(problem) == 1 and got[problem[0]] == (manifest, None)  # a manifest's problem: its manifest too
    row = museum_engine.images.get("shapes")
    assert museum_engine.images.manifests(row.id) == [manifest]
    assert {p.external_id for p in museum_engine.images.by_manifest(row.id, manifest) if p.sha256} == \
           {f"{iiif}/canvas/{n}" for n in PICTURES}

    # a service named alone: no manifest; the same picture named again so, its last naming says
    add(museum_engine, "shapes", f"{iiif}/iiif/red/info.json")
    assert rows(museum_engine, "shapes")[f"{iiif}/iiif/red/info.json"] == (None, f"{iiif}/iiif/red")
    # a picture named by URL, without a manifest: none
    listed = tmp_path / "rows.jsonl"
    listed.write_text(json.dumps({"image": f"{iiif}/iiif/blue/full/max/0/default.jpg", "external_id": "B"}) + "\n")
    add(museum_engine, "shapes", str(listed))
    assert rows(museum_engine, "shapes")["B"] == (None, None)


def test_rows_stored_before_migration_007_get_their_provenance_on_their_next_add(museum_engine: Engine, iiif: str):  # noqa: F811
    Collections(museum_engine).create(parse(CreateCollection, {"name": "shapes"}))
    manifest = f"{iiif}/manifest.json"
    add(museum_engine, "shapes", manifest)
    with museum_engine.store.transaction() as db:  # as an upgraded store holds them
        db.execute("UPDATE collection_images SET manifest = NULL, image_service = NULL")
    assert set(rows(museum_engine, "shapes").values()) == {(None, None)}
    report = add(museum_engine, "shapes", manifest)
    assert (report.added, report.skipped, report.relabelled) == (0, 3, 3)  # nothing read again
    got = rows(museum_engine, "shapes")
    assert all(got[f"{iiif}/canvas/{n}"] == (manifest, f"{iiif}/iiif/{n}") for n in PICTURES)


def test_a_manifest_file_records_its_own_id_or_its_path(museum_engine: Engine, iiif: str, tmp_path: Path):  # noqa: F811
    from test_iiif_collections import manifest as make

    doc = make(iiif)
    with_id = tmp_path / "with-id.json"
    with_id.write_text(json.dumps(doc))
    without = tmp_path / "without.json"
    without.write_text(json.dumps({**doc, "id": "urn:x", "items": doc["items"][:1]}))
    Collections(museum_engine).create(parse(CreateCollection, {"name": "files"}))
    add(museum_engine, "files", str(with_id))
    assert rows(museum_engine, "files")[f"{iiif}/canvas/red"][0] == f"{iiif}/manifest.json"
    Collections(museum_engine).create(parse(CreateCollection, {"name": "files2"}))
    add(museum_engine, "files2", str(without))
    assert rows(museum_engine, "files2")[f"{iiif}/canvas/red"][0] == str(without.resolve())


def test_pictures_are_removed_by_external_id_source_or_manifest_and_nothing_else(museum_engine: Engine, iiif: str):  # noqa: F811
    Collections(museum_engine).create(parse(CreateCollection, {"name": "shapes"}))
    manifest = f"{iiif}/manifest.json"
    add(museum_engine, "shapes", manifest)
    images = museum_engine.images
    row = images.get("shapes")
    assert remove_pictures(images, row.id) == 0 and images.get("shapes").version == row.version
    assert remove_pictures(images, row.id, external_ids=[f"{iiif}/canvas/red", "not-there"]) == 1
    assert remove_pictures(images, row.id, sources=[f"{iiif}/iiif/blue"]) == 1
    assert images.get("shapes").version == row.version + 2
    assert [p.external_id for p in images.pictures(row.id)] == [f"{iiif}/canvas/green"]
    assert remove_pictures(images, row.id, manifests=[manifest]) == 2  # the green picture and the canvas without one
    assert images.get("shapes").size == images.get("shapes").failed == 0
    assert museum_engine.store.db.execute("SELECT count(*) FROM image_embeddings").fetchone()[0] == 3  # kept
