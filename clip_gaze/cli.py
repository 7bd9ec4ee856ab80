"""The `clip-gaze` command: a thin shell over the engine. Parses input, formats output."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import click

from indexer.errors import ClipGazeError
from indexer.schema import MAX_PAGE_SIZE, MAX_TOP_K
from indexer.settings import Settings, settings_help

F = TypeVar("F", bound=Callable[..., Any])

EXPLAIN = (
    "Scores are relative likelihoods: the softmax, over every phrase of the list named, of the model's "
    "logit_scale × cosine(image, phrase). They say which phrase CLIP prefers among those offered, not how "
    "accurate a phrase is, and they change when the list changes."
)


def domain_errors(fn: F) -> F:
    """Turn clip-gaze's errors (and bad settings) into one readable line and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ClipGazeError as exc:
            raise click.ClickException(exc.message) from None
        except ValueError as exc:  # settings
            raise click.ClickException(str(exc)) from None

    return wrapper  # type: ignore[return-value]


def split_vocabs(values: Sequence[str]) -> list[str] | None:
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    return names or None


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


class _Bar:
    """tqdm on stderr, as a context manager the engine's indexing accepts."""

    def __init__(self, total: int, desc: str):
        from tqdm import tqdm

        self._bar = tqdm(total=total, desc=desc, unit=" phrases", file=sys.stderr, mininterval=0.5,
                         dynamic_ncols=True, smoothing=0.05)

    def __enter__(self) -> Any:
        return self._bar

    def __exit__(self, *exc: object) -> None:
        self._bar.close()


def make_engine(model: str | None, progress: bool = True) -> Any:
    from indexer.engine import Engine

    return Engine.from_settings(_settings(), model, progress=_Bar if progress else None)


MODEL_OPTION = click.option("--model", "-m", help="Preset, ARCH:PRETRAINED or ARCH:/path/to/checkpoint (default: $CLIP_GAZE_MODEL or vit-b-32).")
VOCAB_OPTION = click.option("--vocab", "-v", "vocab", multiple=True, help="Vocabulary names, comma-separated; may be repeated (default: the default set).")


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
    epilog="\b\nSettings (environment variables):\n" + settings_help(),
)
@click.version_option(package_name="clip-gaze")
def cli() -> None:
    """See images the way CLIP sees them: relative likelihoods of art phrases.

    \b
    Example (offline, with the project's tiny test model):
        CLIP_GAZE_MODEL=toy clip-gaze analyze picture.png
    """


@cli.command()
@MODEL_OPTION
@VOCAB_OPTION
@click.option("--all", "all_", is_flag=True, help="Every built-in vocabulary (about 113,000 phrases).")
@click.option("--force", is_flag=True, help="Rewrite index files even when they are current.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report.")
@domain_errors
def index(model: str | None, vocab: tuple[str, ...], all_: bool, force: bool, as_json: bool) -> None:
    """Build or update indexes: embed only phrases that have no embedding yet.

    \b
    Examples:
        clip-gaze index                          # the default vocabularies
        clip-gaze index --vocab movements,surfaces --model sd15
        clip-gaze index --all                    # all 16 built-in vocabularies
    """
    from indexer.vocab import catalog

    engine = make_engine(model)
    names = list(catalog().vocabularies) if all_ else split_vocabs(vocab)
    report = engine.index(names, force=force)
    if as_json:
        click.echo(report.model_dump_json())
    else:
        click.echo(
            f"{report.model}: {len(report.vocabularies)} vocabularies, {report.embedded} phrases embedded, "
            f"{len(report.indexes_written)} index files written"
        )


@cli.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=str))
@VOCAB_OPTION
@click.option("--top-k", "-k", default=5, show_default=True, type=click.IntRange(1, MAX_TOP_K), help="Matches to show per vocabulary.")
@MODEL_OPTION
@click.option("--json", "as_json", is_flag=True, help="JSON Lines: one object per image, shaped like the REST answer.")
@domain_errors
def analyze(images: tuple[str, ...], vocab: tuple[str, ...], top_k: int, model: str | None, as_json: bool) -> None:
    """Score IMAGES against vocabularies: the most likely phrases of each list.

    \b
    Examples:
        clip-gaze analyze painting.jpg
        clip-gaze analyze *.jpg --vocab movements --vocab surfaces -k 3 --json > out.jsonl
    """
    engine = make_engine(model)
    names = engine.resolve(split_vocabs(vocab))
    _ = engine.model  # a model problem stops here, once
    failed = 0
    for path in images:
        try:
            answer = engine.analyze(engine.read(path), names, top_k).model_copy(update={"file": path})
        except ClipGazeError as exc:
            if len(images) == 1:
                raise
            failed += 1
            click.echo(f"Error: {exc.message}", err=True)
            if as_json:
                click.echo(json.dumps({"ok": False, "file": path, "status": exc.status, "code": exc.code, "error": exc.message}))
            continue
        click.echo(answer.model_dump_json() if as_json else format_table(answer))
    if failed:
        raise click.ClickException(f"{failed} of {len(images)} images could not be analysed")


def format_table(answer: Any) -> str:
    img, model = answer.image, answer.model
    lines = [f"{answer.file or 'image'}  {img.width}×{img.height}  model {model.preset or model.arch}  "
             f"(logit scale {model.logit_scale:.1f})"]
    for vocab, res in answer.results.items():
        lines.append(f"  {vocab}: relative to {res.softmax_over:,} phrases")
        for m in res.matches:
            ext = f"  [{m.external_id}]" if m.external_id else ""
            share = f"{100 * m.probability:6.2f}%" if m.probability >= 5e-5 else " <0.01%"
            lines.append(f"    {share}  {m.phrase}{ext}   (cosine {m.cosine:.3f})")
    return "\n".join(lines)


@cli.command()
@click.argument("image", type=click.Path(dir_okay=False, path_type=str))
@click.argument("phrases", nargs=-1, required=True)
@MODEL_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
@domain_errors
def compare(image: str, phrases: tuple[str, ...], model: str | None, as_json: bool) -> None:
    """Softmax over exactly the PHRASES given: which one does CLIP prefer for IMAGE?

    \b
    Example:
        clip-gaze compare painting.jpg "an oil painting" "a watercolor painting" "a photograph"
    """
    engine = make_engine(model)
    decoded = engine.read(image)
    answer = engine.compare(decoded, [p.strip() for p in phrases], persist=True).model_copy(update={"file": image})
    click.echo(answer.model_dump_json() if as_json else format_table(answer))


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="gunicorn worker processes.")
@click.option("--threads", default=4, show_default=True, type=click.IntRange(1, 256), help="Threads per worker.")
@MODEL_OPTION
@click.option("--no-index", is_flag=True, help="Do not index the default vocabularies before starting.")
@domain_errors
def serve(host: str, port: int, workers: int, threads: int, model: str | None, no_index: bool) -> None:
    """Run the REST API (and the web page at /) under gunicorn.

    Before listening, the default vocabularies are indexed if they are not yet, so no request
    ever waits for indexing.

    \b
    Example:
        CLIP_GAZE_MODEL=toy clip-gaze serve --port 8000 --workers 2
        curl -F image=@painting.jpg http://127.0.0.1:8000/v1/analyze
    """
    from service.serve import check_bind, run

    s = _settings()
    if model:
        os.environ["CLIP_GAZE_MODEL"] = model
        s = _settings()
    check_bind(host, s)
    if not no_index:
        if make_engine(s.model, progress=False).needs_indexing():
            click.echo("indexing the default vocabularies before starting…", err=True)
            # In a child process, so the server does not keep the indexing's memory.
            done = subprocess.run([sys.executable, "-m", "clip_gaze", "index", "--model", s.model])
            if done.returncode != 0:  # the child has said why, in one line
                raise SystemExit(done.returncode)
    run(host=host, port=port, workers=workers, threads=threads, settings=s)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="JSON: each model's preset, arch, pretrained and config.")
def models(as_json: bool) -> None:
    """List the model presets. Any open_clip ARCH:PRETRAINED or ARCH:/path/to/checkpoint works too.

    \b
    Example:
        clip-gaze models --json
        CLIP_GAZE_MODEL=ViT-B-16:laion2b_s34b_b88k clip-gaze analyze painting.jpg
    """
    from indexer.models import list_presets, preset_info

    presets = list_presets()
    if as_json:
        click.echo(json.dumps([preset_info(p, paths=True).json_dict() for p in presets], ensure_ascii=False, indent=2))
        return
    current = _settings().model
    for p in presets:
        mark = "*" if p.name == current else " "
        click.echo(f"{mark} {p.name:<9} {p.arch}:{Path(p.pretrained).name if p.config else p.pretrained}  {p.description}")


# -- vocabularies -------------------------------------------------------------------------------
@cli.group()
def vocab() -> None:
    """List, show, create and change vocabularies (lists of phrases).

    \b
    Example:
        clip-gaze vocab create local-artists --file artists.csv --template "by {}"
    """


@vocab.command("list")
@click.option("--json", "as_json", is_flag=True)
@domain_errors
def vocab_list(as_json: bool) -> None:
    """List every vocabulary: built-in ones and your own.

    \b
    Example:
        clip-gaze vocab list --json
    """
    rows = make_engine(None, progress=False).vocabularies()
    if as_json:
        click.echo(json.dumps([r.json_dict() for r in rows], ensure_ascii=False))
        return
    for r in rows:
        kind = "built-in" if r.builtin else "custom"
        star = "*" if r.default else " "
        click.echo(f"{star} {r.name:<22} {r.size:>7,} phrases  {kind:<8} {' | '.join(r.templates):<24} {r.description}")
    click.echo("(* = in the default set)")


@vocab.command("show")
@click.argument("name")
@click.option("--offset", default=0, type=click.IntRange(0))
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, MAX_PAGE_SIZE))
@click.option("--json", "as_json", is_flag=True)
@domain_errors
def vocab_show(name: str, offset: int, limit: int, as_json: bool) -> None:
    """Show a vocabulary's details and phrases.

    \b
    Example:
        clip-gaze vocab show movements --limit 10
    """
    from indexer.schema import PageQuery

    page = make_engine(None, progress=False).vocabulary_page(name, PageQuery(offset=offset, limit=limit))
    if as_json:
        click.echo(page.model_dump_json())
        return
    row = page.vocabulary
    click.echo(f"{row.name}: {row.size:,} phrases, templates {row.templates}, version {row.version}")
    click.echo(f"  {row.description}")
    if row.source:
        click.echo(f"  source: {row.source}\n  licence: {row.licence}")
    for p in page.phrases:
        ext = f"  [{p.external_id}]" if p.external_id else ""
        click.echo(f"  {p.phrase}{ext}")
    if page.next_offset is not None:
        click.echo(f"  … more with --offset {page.next_offset}")


def _read_items(file: str | None, terms: Sequence[str]) -> list[Any]:
    from indexer.vocab import file_format, parse_phrase_file

    items: list[Any] = list(terms)
    if file:
        try:
            text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise click.ClickException(f"no such file: {file}") from None
        except UnicodeDecodeError:
            raise click.ClickException(f"{file} is not UTF-8 text") from None
        items.extend(parse_phrase_file(text, file_format(file)))
    return items


@vocab.command("create")
@click.argument("name")
@click.option("--file", "-f", "file", type=click.Path(dir_okay=False, allow_dash=True), help="One term a line (.txt), or term,external_id rows (.csv/.tsv); - for stdin.")
@click.option("--template", "-t", "templates", multiple=True, help="Phrase template with {} for the term, e.g. 'by {}'; may be repeated.")
@click.option("--description", "-d", default="", help="What the list is.")
@click.argument("terms", nargs=-1)
@MODEL_OPTION
@domain_errors
def vocab_create(name: str, file: str | None, templates: tuple[str, ...], description: str, terms: tuple[str, ...], model: str | None) -> None:
    """Create vocabulary NAME from a file and/or TERMS, embedding its phrases.

    \b
    Examples:
        clip-gaze vocab create local-artists --file artists.txt --template "by {}"
        clip-gaze vocab create iconography --file terms.csv     # term,external_id rows
        clip-gaze vocab create shapes "a red circle" "a blue square"
    """
    from indexer.schema import CreateVocabulary, parse

    body: dict[str, Any] = {"name": name, "phrases": _read_items(file, terms)}
    if templates:
        body["templates"] = list(templates)
    if description:
        body["description"] = description
    result = make_engine(model).create_vocabulary(parse(CreateVocabulary, body))
    click.echo(f"created {name}: {result.added} phrases")


@vocab.command("add")
@click.argument("name")
@click.argument("terms", nargs=-1)
@click.option("--file", "-f", "file", type=click.Path(dir_okay=False, allow_dash=True), help="As for `vocab create`.")
@MODEL_OPTION
@domain_errors
def vocab_add(name: str, terms: tuple[str, ...], file: str | None, model: str | None) -> None:
    """Add TERMS (and/or a file's) to a custom vocabulary; existing phrases are left as they are.

    \b
    Example:
        clip-gaze vocab add local-artists "jan smit" "anna de vries"
    """
    from indexer.schema import AddPhrases, parse

    items = _read_items(file, terms)
    if not items:
        raise click.UsageError("give terms or --file")
    result = make_engine(model).add_phrases(name, parse(AddPhrases, {"phrases": items}))
    click.echo(f"{name}: {result.added} added, {result.unchanged} already there (version {result.version})")


@vocab.command("remove")
@click.argument("name")
@click.argument("terms", nargs=-1)
@click.option("--external-id", "-e", "external_ids", multiple=True, help="Remove by external id; may be repeated.")
@domain_errors
def vocab_remove(name: str, terms: tuple[str, ...], external_ids: tuple[str, ...]) -> None:
    """Remove TERMS (every phrase made from them) or --external-id entries from a custom vocabulary.

    \b
    Example:
        clip-gaze vocab remove local-artists "jan smit" --external-id ULAN-500012345
    """
    from indexer.schema import RemovePhrases, parse

    body = {"terms": [t.strip() for t in terms] or None, "external_ids": [e.strip() for e in external_ids] or None}
    request = parse(RemovePhrases, {k: v for k, v in body.items() if v})
    result = make_engine(None, progress=False).remove_phrases(name, request)
    click.echo(f"{name}: {result.removed} phrases removed (version {result.version})")


@vocab.command("delete")
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@domain_errors
def vocab_delete(name: str, yes: bool) -> None:
    """Delete a custom vocabulary and its phrases.

    \b
    Example:
        clip-gaze vocab delete local-artists --yes
    """
    engine = make_engine(None, progress=False)
    row = engine.vocabulary(name)
    if not yes:
        if not sys.stdin.isatty():
            raise click.ClickException(f"deleting {name!r} ({row.size} phrases) needs --yes when not run interactively")
        click.confirm(f"Delete {name!r} and its {row.size} phrases?", abort=True)
    result = engine.delete_vocabulary(name)
    click.echo(f"deleted {name} ({result.removed} phrases)")


def main(argv: Sequence[str] | None = None) -> Any:
    return cli.main(args=list(argv) if argv is not None else None, prog_name="clip-gaze")

