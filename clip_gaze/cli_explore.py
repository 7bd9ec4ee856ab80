"""`clip-gaze collection map`: a collection's 2-D map (UMAP), computed here when the stored one is not
of the collection's current version, printed or written as Parquet."""

from __future__ import annotations

import json

import click

from .cli_common import MODEL_OPTION, domain_errors, make_collections, say


@click.command("map")
@click.argument("name")
@click.option("--out", "-o", type=click.Path(dir_okay=False), help="Write the points (sha256, external_id, x, y) as Parquet.")
@MODEL_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (fields as in the REST answer).")
@domain_errors
def map_command(name: str, out: str | None, model: str | None, as_json: bool) -> None:
    """The map of collection NAME: each picture's place in [0, 1]² by UMAP over its embeddings
    (cosine), as GET /v1/collections/NAME/map answers it; computed now if the stored one is older.

    \b
    Examples:
        clip-gaze collection map paintings --out map.parquet
        clip-gaze collection map paintings --json
    """
    from indexer.explore.explorer import Explorer
    from indexer.schema import parse_collection_name

    explorer = Explorer(make_collections(model))
    answer, frame, keep, xs, ys = explorer.map(parse_collection_name(name), wait=True)
    points = explorer.points(frame, keep, xs, ys)
    if out:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(points,
                                            schema=pa.schema([("sha256", pa.string()), ("external_id", pa.string()),
                                                              ("x", pa.float32()), ("y", pa.float32())])), out)
    if as_json:
        say(json.dumps({**answer.json_dict(), "points": points}, ensure_ascii=False))
    else:
        say(f"{name}: {answer.size:,} points, {answer.method}, collection version {answer.version}" + (f" → {out}" if out else ""))
