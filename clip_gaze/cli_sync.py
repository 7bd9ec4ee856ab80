"""`clip-gaze collection remove` and `collection sync`: a collection kept in step with a museum's
systems, its pictures removed by external id or source (the library is `indexer.store.picture_removal`),
or brought in step with a IIIF Change Discovery stream (`indexer.collections.feeds`)."""

from __future__ import annotations

import click

from .cli_common import MODEL_OPTION, domain_errors, make_collections, say


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


@click.command("sync")
@click.argument("name")
@click.option("--changes", "-c", required=True, help="A IIIF Change Discovery API 1.0 stream, by http(s) URL.")
@MODEL_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (fields as in the REST answer).")
@domain_errors
def sync(name: str, changes: str, model: str | None, as_json: bool) -> None:
    """Bring collection NAME in step with a IIIF Change Discovery stream, in the foreground.

    The stream is read from its `last` page back to the newest activity the last sync of it into this
    collection applied; the newest activity per manifest wins: Create and Update add or refresh the
    manifest's pictures (an Update reads them again, and drops those it no longer lists), Delete and
    Remove take them out. A sync stopped midway (Ctrl-C, a crash) is finished by the next one, ending
    as one uninterrupted run would. A stream that loops or lies about its pages is refused and nothing
    is changed.

    \b
    Examples:
        clip-gaze collection sync paintings --changes https://iiif.museum.org/changes/collection.json
        CLIP_GAZE_FETCH_ALLOW=iiif.intranet clip-gaze collection sync paintings --changes http://iiif.intranet/activity/all-changes
    """
    from indexer.schema import parse
    from indexer.schema.sync import SyncChanges

    request = parse(SyncChanges, {"changes": changes.strip()})
    report = make_collections(model).sync(name, request)
    if as_json:
        say(report.model_dump_json())
        return
    text = (f"{name}: {report.added} pictures added, {report.refreshed} refreshed, {report.removed} removed, "
            f"{report.failed} failed ({report.manifests} manifests from {report.activities} activities, "
            f"{report.pages} pages, {report.seconds:.1f} s)")
    if report.resumed:
        text += "; an earlier sync stopped midway was finished first"
    if report.ignored:
        text += f"; {report.ignored} activities passed over"
    if report.failed:
        text += f"; see `clip-gaze collection show {name} --errors`"
    say(text)
