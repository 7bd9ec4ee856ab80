"""`clip-gaze collection …`: a collection of pictures embedded once, then scored and searched."""

from __future__ import annotations

import functools
import os
import sys
from typing import Any, Sequence

import click

from indexer.schema import MAX_PAGE_SIZE, MAX_TOP_K

from .cli_common import (MODEL_OPTION, RELATIVE_OPTION, VOCAB_OPTION, confirm_delete, domain_errors, make_collections,
                         progress_for, say, shown, split_vocabs)

JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print one JSON object (fields as in the REST answer).")
ENGINE_OPTION = click.option(
    "--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
    help="local: this process; ray: Ray Data tasks and actors, on this machine or a cluster (pip install 'clip-gaze[ray]').")
RAY_ADDRESS_OPTION = click.option(
    "--ray-address", metavar="HOST:PORT",
    help="With --engine ray: the Ray cluster to join (default: $RAY_ADDRESS, else a Ray started on this machine).")


def _ray_engine(engine: str, ray_address: str | None) -> Any:
    """The Ray distributor's driver module when --engine ray (its one error line when Ray is not
    installed), else None."""
    if engine != "ray":
        if ray_address:
            raise click.UsageError("--ray-address goes with --engine ray")
        return None
    from indexer.collections.on_ray import driver, session

    session.require_ray()
    return driver


@click.group()
def collection() -> None:
    """A museum's pictures, by folder, CSV/JSON Lines, URL or IIIF: embedded once, scored and searched.

    \b
    Example:
        clip-gaze collection create paintings
        clip-gaze collection add paintings https://example.org/iiif/manifest.json ./scans/ objects.csv
        clip-gaze collection analyze paintings --vocab movements --top-k 3 --out movements.parquet
        clip-gaze collection search paintings "a crucifixion"
    """


def _echo(model: Any, as_json: bool, text: str) -> None:
    say(model.model_dump_json() if as_json else text)


@collection.command("create")
@click.argument("name")
@click.option("--description", "-d", default="", help="What the collection is.")
@click.option("--private", is_flag=True, help="Seen through the API only by admin keys and keys granted it (`keys create --collections`).")
@JSON_OPTION
@domain_errors
def create(name: str, description: str, private: bool, as_json: bool) -> None:
    """Create an empty collection NAME.

    \b
    Examples:
        clip-gaze collection create paintings -d "Paintings, 1400-1900"
        clip-gaze collection create unpublished --private
    """
    from indexer.schema import parse
    from indexer.schema.collections import CreateCollection

    body: dict[str, Any] = {"name": name}
    if description:
        body["description"] = description
    if private:
        body["private"] = True
    info = make_collections(None, progress=False).create(parse(CreateCollection, body))
    _echo(info, as_json, f"created collection {info.name}")


@collection.command("add")
@click.argument("name")
@click.argument("sources", nargs=-1, required=True)
@MODEL_OPTION
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(1, 256), help="Pictures encoded together.")
@ENGINE_OPTION
@RAY_ADDRESS_OPTION
@JSON_OPTION
@domain_errors
def add(name: str, sources: tuple[str, ...], model: str | None, batch_size: int, engine: str, ray_address: str | None,
        as_json: bool) -> None:
    """Add the pictures of SOURCES to collection NAME, embedding each once per model.

    A SOURCE is a folder (searched recursively; every file is read as a picture by its content, except
    hidden files and text or metadata ones such as .txt, .csv, .json, .xml, which are counted as passed
    over), a CSV/TSV or JSON Lines file with an `image` column
    (path or URL; optional `external_id`; other columns kept as metadata), a IIIF Presentation
    manifest (v2 or v3; URL or .json file) or a IIIF Image API service URL. Pictures already stored
    are skipped, so an interrupted run resumes; a picture that fails is recorded with its reason
    (`collection show NAME --errors`) and never stops the run.

    With --engine ray, reading and decoding run as Ray tasks and encoding in a pool of Ray actors
    (a GPU each where the cluster has GPUs); their results are written as Parquet shards under
    CLIP_GAZE_HOME/ray-shards/ and merged into the store by this process.

    \b
    Examples:
        clip-gaze collection add paintings ./scans/ objects.csv
        CLIP_GAZE_FETCH_ALLOW=iiif.intranet clip-gaze collection add paintings http://iiif.intranet/manifest.json
        clip-gaze collection add paintings ./scans/ --engine ray --ray-address head-node:6379
    """
    from indexer.schema import parse
    from indexer.schema.collections import AddSources

    on_ray = _ray_engine(engine, ray_address)
    request = parse(AddSources, {"sources": [s.strip() for s in sources]})
    _refuse_missing(request.sources)
    if on_ray is not None:
        report = on_ray.ray_add(make_collections(model), name, request, address=ray_address, batch_size=batch_size)
    else:
        report = make_collections(model).add(name, request, batch_size=batch_size,
                                             progress=functools.partial(progress_for, unit=" pictures"))
    text = (f"{name}: {report.added} pictures added, {report.skipped} already there, {report.failed} failed "
            f"({report.encoded} encoded, {report.seconds:.1f} s)")
    if report.ignored:
        text += f"; {report.ignored} hidden or text/metadata files passed over"
    if report.warnings:
        text += f"; {report.warnings} decoder warnings (logged at debug level)"
    if report.failed:
        text += f"; see `clip-gaze collection show {name} --errors`"
    _echo(report, as_json, text)


def _refuse_missing(sources: Sequence[str]) -> None:
    """A local path named on the command line that does not exist is a typo, not a failed picture:
    one `Error:` line before anything starts (URLs are checked when they are fetched)."""
    for source in sources:
        if "://" not in source and not os.path.exists(os.path.expanduser(source)):  # `~/scans` as the add reads it
            raise click.ClickException(shown(f"no such file or folder: {source} (a source is a folder, a file, "
                                             "or an http(s) URL)"))


@collection.command("show")
@click.argument("name", required=False)
@click.option("--errors", is_flag=True, help="List the pictures that failed, with their reasons.")
@click.option("--offset", default=0, type=click.IntRange(0))
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, MAX_PAGE_SIZE))
@JSON_OPTION
@domain_errors
def show(name: str | None, errors: bool, offset: int, limit: int, as_json: bool) -> None:
    """Show collection NAME and its pictures (or every collection, without NAME).

    \b
    Examples:
        clip-gaze collection show
        clip-gaze collection show paintings --errors
    """
    from indexer.schema.collections import CollectionList

    collections = make_collections(None, progress=False)
    if name is None:
        found = CollectionList(collections=collections.all())
        lines = [f"{c.name:<24} {c.size:>9,} pictures  {c.failed:>6,} failed  {c.description}" for c in found.collections]
        _echo(found, as_json, "\n".join(lines) or "no collections yet: `clip-gaze collection create NAME`")
        return
    view = collections.view(name, errors=errors, offset=offset, limit=limit)
    c = view.collection
    lines = [f"{c.name}: {c.size:,} pictures, {c.failed:,} failed (version {c.version})", f"  {c.description}".rstrip()]
    for p in view.pictures:
        what = f"{p.error_code}: {p.error}" if errors else f"{p.width}×{p.height}  {p.sha256[:12] if p.sha256 else ''}"
        lines.append(f"  {p.external_id or '-'}  {p.source}  {what}")
    if view.next_offset is not None:
        lines.append(f"  … more with --offset {view.next_offset}")
    _echo(view, as_json, "\n".join(line for line in lines if line.strip()))


@collection.command("analyze")
@click.argument("name")
@VOCAB_OPTION
@click.option("--top-k", "-k", default=5, show_default=True, type=click.IntRange(1, MAX_TOP_K), help="Matches per picture and vocabulary.")
@click.option("--out", "-o", "out", required=True, type=click.Path(dir_okay=False), help="A .parquet, .csv or .jsonl file.")
@MODEL_OPTION
@ENGINE_OPTION
@RAY_ADDRESS_OPTION
@RELATIVE_OPTION
@click.option("--layout", type=click.Choice(["long", "wide"]), default="long", show_default=True,
              help="long: a row per picture and match; wide: a .csv with a row per picture, each vocabulary's top term, "
                   "probability, phrase external id and verdict in columns.")
@domain_errors
def analyze(name: str, vocab: tuple[str, ...], top_k: int, out: str, model: str | None, engine: str,
            ray_address: str | None, relative_to: str | None, layout: str) -> None:
    """Score every picture of NAME against vocabularies from the stored embeddings (nothing is encoded).

    Writes one row per picture and match: external_id, source, sha256, vocabulary, softmax_over,
    rank, phrase, term, probability, cosine, logit, phrase_external_id.

    With --engine ray, chunks of pictures are scored in Ray tasks and this process writes the rows.
    With --layout wide, one row per picture: external_id, source, then for each vocabulary its top
    term, probability, phrase external id and a person's verdict (a .csv, safe to open in a spreadsheet).

    \b
    Examples:
        clip-gaze collection analyze paintings --vocab movements,artists-prevalence -k 3 --out scores.parquet
        clip-gaze collection analyze paintings --vocab ci-flavors --out flavors.parquet --engine ray
        clip-gaze collection analyze paintings --vocab movements,surfaces --layout wide --out objects.csv
    """
    import time

    from indexer.schema.collections import AnalysisRow
    from indexer.collections.tables import check_output, write_blocks

    on_ray = _ray_engine(engine, ray_address)
    if on_ray is not None and relative_to is not None:
        raise click.UsageError("--relative-to is not available with --engine ray yet: use the local engine")
    if layout == "wide":
        if on_ray is not None or relative_to is not None:
            raise click.UsageError("--layout wide goes with the local engine and without --relative-to")
        from indexer.interop.wide import write_wide

        t0 = time.perf_counter()
        count = write_wide(make_collections(model), name, split_vocabs(vocab), out)
        say(f"{out}: {count:,} pictures ({time.perf_counter() - t0:.1f} s)", err=not sys.stdout.isatty())
        return
    check_output(out)
    collections = make_collections(model)
    t0 = time.perf_counter()
    if on_ray is not None:
        rows = on_ray.ray_analyze(collections, name, split_vocabs(vocab), top_k, out, address=ray_address)
    else:
        rows = write_blocks(collections.analyze_blocks(name, split_vocabs(vocab), top_k, relative_to), out, AnalysisRow)
    say(f"{out}: {rows:,} rows ({time.perf_counter() - t0:.1f} s)", err=not sys.stdout.isatty())


@collection.command("search")
@click.argument("name")
@click.argument("query", required=False)
@click.option("--image", "-i", "image", type=click.Path(dir_okay=False), help="Search with a picture instead of a phrase.")
@click.option("--and", "more", multiple=True, metavar="PHRASE", help="More like this phrase too (may be repeated).")
@click.option("--not", "unlike_text", multiple=True, metavar="PHRASE", help="Less like this phrase (may be repeated).")
@click.option("--like", multiple=True, metavar="SHA256", help="More like this stored picture (may be repeated).")
@click.option("--unlike", multiple=True, metavar="SHA256", help="Less like this stored picture (may be repeated).")
@click.option("--min-cosine", type=click.FloatRange(-1, 1), help="Leave out pictures under this cosine.")
@click.option("--min-probability", type=click.FloatRange(0, 1),
              help="Leave out pictures whose probability of QUERY within --vocab is under this.")
@click.option("--vocab", "-v", "vocabulary", help="The vocabulary QUERY's probability is relative to (QUERY added to it).")
@click.option("--top-k", "-k", default=10, show_default=True, type=click.IntRange(1, MAX_TOP_K))
@MODEL_OPTION
@JSON_OPTION
@domain_errors
def search(name: str, query: str | None, image: str | None, more: tuple[str, ...], unlike_text: tuple[str, ...],
           like: tuple[str, ...], unlike: tuple[str, ...], min_cosine: float | None, min_probability: float | None,
           vocabulary: str | None, top_k: int, model: str | None, as_json: bool) -> None:
    """The pictures of NAME closest to a phrase QUERY, or to a picture (--image); more like some phrases
    and pictures, less like others (the mean of the positives minus the mean of the negatives).

    \b
    Examples:
        clip-gaze collection search paintings "a crucifixion" -k 5
        clip-gaze collection search paintings --image detail.jpg
        clip-gaze collection search paintings "a harbour" --not "a storm" --min-cosine 0.2
        clip-gaze collection search paintings "tonalism" --vocab movements --min-probability 0.3
    """
    from indexer.schema import parse
    from indexer.schema.collections import SearchTerms

    if query is None and image is None and not like and not more:
        raise click.UsageError("give a phrase QUERY, --image PICTURE or --like SHA256")
    terms = parse(SearchTerms, {"q": [t.strip() for t in ((query,) if query else ()) + more], "unlike_text": list(unlike_text),
                                "like": list(like), "unlike": list(unlike), "min_cosine": min_cosine,
                                "min_probability": min_probability, "vocabulary": vocabulary})
    answer = make_collections(model).search(name, image=image, top_k=top_k, query=terms)
    lines = [f"{name}: {answer.searched:,} pictures searched{'' if answer.exact else ' (approximate index)'}"
             + (f"; probabilities relative to {vocabulary} ({answer.softmax_over} phrases)" if answer.softmax_over else "")]
    lines += [f"  {h.rank:>3}. {h.cosine:.3f}" + (f"  {h.probability:7.2%}" if h.probability is not None else "")
              + f"  {h.external_id or '-'}  {h.source}" for h in answer.hits]
    _echo(answer, as_json, "\n".join(lines))


@collection.command("delete")
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@domain_errors
def delete(name: str, yes: bool) -> None:
    """Delete collection NAME (the pictures' embeddings stay: another collection may share them).

    \b
    Example:
        clip-gaze collection delete paintings --yes
    """
    collections = make_collections(None, progress=False)
    confirm_delete("collection", name, f"{collections.get(name).size} pictures", yes)
    collections.delete(name)
    say(f"deleted collection {name}")
