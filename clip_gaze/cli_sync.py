"""`clip-gaze collection remove`: a collection kept in step with a museum's systems, its pictures
removed by external id or source (the library is `indexer.store.picture_removal`)."""

from __future__ import annotations

import click

from .cli_common import domain_errors, make_collections, say


@click.command("remove")
@click.argument("name")
@click.option("--external-id", "-e", "external_ids", multiple=True, help="An external id of the pictures to remove (repeat it).")
@click.option("--source", "-s", "sources", multiple=True, help="A source (path or URL) of the pictures to remove (repeat it).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (fields as in the REST answer).")
@domain_errors
def remove(name: str, external_ids: tuple[str, ...], sources: tuple[str, ...], as_json: bool) -> None:
    """Remove pictures from collection NAME, by external id or source, in one transaction.

    Failed pictures with those ids or sources go too. Their embeddings stay in the store (keyed by
    content: adding them again encodes nothing); the collection's version moves on, so its map and
    scores are computed again; people's reviews of them go.

    \b
    Examples:
        clip-gaze collection remove paintings --external-id OBJ-1234 --external-id OBJ-1235
        clip-gaze collection remove paintings --source https://museum.org/iiif/obj-9/manifest.json
    """
    from indexer.schema import parse
    from indexer.schema.sync import RemovePictures

    request = parse(RemovePictures, {"external_ids": [e.strip() for e in external_ids],
                                     "sources": [s.strip() for s in sources]})
    found = make_collections(None, progress=False).remove(name, request)
    if as_json:
        say(found.model_dump_json())
    else:
        say(f"{name}: {found.removed:,} pictures removed ({found.collection.size:,} left)")
