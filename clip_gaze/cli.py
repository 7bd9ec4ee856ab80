"""The `clip-gaze` command: a thin shell over the engine. Parses input, formats output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

import click

from indexer.models.registry import public_model_name
from indexer.schema import MAX_TOP_K
from indexer.settings import settings_help

from .cli_compare_models import analyze_side_by_side, split_models
from .cli_common import each_image, MODEL_OPTION, RELATIVE_OPTION, VOCAB_OPTION, domain_errors, load_settings, make_engine, say, split_vocabs


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
    epilog="\b\nSettings (environment variables):\n" + settings_help(),
)
@click.version_option(package_name="clip-gaze")
def cli() -> None:
    """See images the way CLIP sees them: relative likelihoods of art phrases.

    \b
    Example (offline, with the project's tiny test model):
        CLIP_GAZE_MODEL=toy clip-gaze analyze examples/red-circle.png
    """


@cli.command()
@MODEL_OPTION
@VOCAB_OPTION
@click.option("--all", "all_", is_flag=True, help="Every built-in vocabulary (about 120,000 phrases).")
@click.option("--force", is_flag=True, help="Rewrite index files even when they are current.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report.")
@domain_errors
def index(model: str | None, vocab: tuple[str, ...], all_: bool, force: bool, as_json: bool) -> None:
    """Build or update indexes: embed only phrases that have no embedding yet.

    \b
    Examples:
        clip-gaze index                          # the default vocabularies
        clip-gaze index --vocab movements,surfaces --model sd15
        clip-gaze index --all                    # every built-in vocabulary
    """
    from indexer.catalog import catalog

    engine = make_engine(model)
    names = list(catalog().vocabularies) if all_ else split_vocabs(vocab)
    report = engine.index(names, force=force)
    if as_json:
        say(report.model_dump_json())
    else:
        say(
            f"{report.model}: {len(report.vocabularies)} vocabularies, {report.embedded} phrases embedded, "
            f"{len(report.indexes_written)} index files written"
        )


@cli.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=str))
@VOCAB_OPTION
@click.option("--top-k", "-k", default=5, show_default=True, type=click.IntRange(1, MAX_TOP_K), help="Matches to show per vocabulary.")
@click.option("--model", "-m", help="Preset, ARCH:PRETRAINED or ARCH:/path/to/checkpoint (default: $CLIP_GAZE_MODEL or "
                                    "vit-b-32); several, comma-separated, side by side.")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines: one object per image, shaped like the REST answer "
                                                      "(of /v1/compare-models with several models).")
@RELATIVE_OPTION
@click.option("--languages", "-l", help="Score only the phrases in these languages (BCP-47, comma-separated, e.g. nl or "
                                        "nl,de): each softmax runs over them alone. Default: every phrase.")
@domain_errors
def analyze(images: tuple[str, ...], vocab: tuple[str, ...], top_k: int, model: str | None, as_json: bool,
            relative_to: str | None, languages: str | None) -> None:
    """Score IMAGES against vocabularies: the most likely phrases of each list.

    With several models (--model a,b), each picture is read by each side by side, with how far their
    rankings agree over the whole list (Spearman's rho) and in their top k.

    \b
    Examples:
        clip-gaze analyze painting.jpg
        clip-gaze analyze *.jpg --vocab movements --vocab surfaces -k 3 --json > out.jsonl
        clip-gaze analyze painting.jpg --model vit-b-32,sd15 --vocab movements
        clip-gaze analyze painting.jpg --vocab iconclass --languages nl
    """
    from indexer.schema.languages import split_languages

    several, wanted = split_models(model), split_languages(languages)
    if len(several) > 1:
        if relative_to is not None or wanted:
            raise click.UsageError("--relative-to and --languages read one model; compare models without them")
        return analyze_side_by_side(images, several, split_vocabs(vocab), top_k, as_json)
    engine = make_engine(model)
    names = engine.resolve(split_vocabs(vocab))
    _ = engine.model  # a model problem stops here, once
    each_image(images, lambda path: engine.analyze(engine.read(path), names, top_k, relative_to, wanted), format_table,
               as_json, "analysed")


def format_table(answer: Any) -> str:
    img, model = answer.image, answer.model
    lines = [f"{answer.file or 'image'}  {img.width}×{img.height}  model {model.preset or model.arch}  "
             f"(logit scale {model.logit_scale:.1f}"
             + (f", logit bias {model.logit_bias:.2f}" if model.logit_bias is not None else "") + ")"]
    if model.logit_bias is not None:
        lines.append("  share: relative to the list (sums to 1); sigmoid: the model's own probability of each phrase, "
                     "not relative (the list does not change it; several or none can be likely)")
    for name, res in answer.results.items():
        within = f" in {', '.join(res.languages)}" if res.languages else ""
        lines.append(f"  {name}: relative to {res.softmax_over:,} phrases{within}")
        for m in res.matches:
            ext = f"  [{m.external_id}]" if m.external_id else ""
            share = f"{100 * m.probability:6.2f}%" if m.probability >= 5e-5 else " <0.01%"
            sig = f"  sigmoid {100 * m.sigmoid:6.2f}%" if m.sigmoid is not None else ""
            lang = f"  @{m.language}" if m.language else ""
            lines.append(f"    {share}{sig}  {m.phrase}{ext}{lang}   (cosine {m.cosine:.3f})")
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
    say(answer.model_dump_json() if as_json else format_table(answer))


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="gunicorn worker processes.")
@click.option("--threads", default=4, show_default=True, type=click.IntRange(1, 256), help="Threads per worker.")
@click.option("--model", "-m", help="Preset, ARCH:PRETRAINED or ARCH:/path/to/checkpoint (default: $CLIP_GAZE_MODELS, "
                                    "$CLIP_GAZE_MODEL or vit-b-32); several, comma-separated, served side by side "
                                    "(the first is the default).")
@click.option("--no-index", is_flag=True, help="Do not index the default vocabularies before starting.")
@click.option("--preload", is_flag=True, help="Load every served model in each worker at start, not on its first request.")
@domain_errors
def serve(host: str, port: int, workers: int, threads: int, model: str | None, no_index: bool, preload: bool) -> None:
    """Run the REST API (and the web page at /) under gunicorn.

    Before listening, each served model is exported to ONNX if it is not yet (CLIP_GAZE_BACKEND auto or
    onnx) and the default vocabularies are indexed for it if they are not yet, so no request ever waits
    for either, and workers never import torch. Of several models (CLIP_GAZE_MODELS), the default
    loads at start, the others on the first request that names them (or at start with --preload).

    \b
    Examples:
        CLIP_GAZE_MODEL=toy clip-gaze serve --port 8000 --workers 2
        curl -F image=@painting.jpg http://127.0.0.1:8000/v1/analyze
        clip-gaze serve --model vit-b-32,sd15 --preload
    """
    import dataclasses

    from service.serve import check_bind, run

    s = load_settings()
    if model:
        os.environ["CLIP_GAZE_MODELS"] = model
        s = load_settings()
    check_bind(host, s)
    s = _export_before_serving(s)
    if not no_index:
        for name in s.models:
            if make_engine(name, progress=False).needs_indexing():
                say(f"indexing the default vocabularies for {public_model_name(name)} before starting…", err=True)
                # In a child process, so the server does not keep the indexing's memory.
                done = subprocess.run([sys.executable, "-m", "clip_gaze", "index", "--model", name])
                if done.returncode != 0:  # the child has said why, in one line
                    raise SystemExit(done.returncode)
    run(host=host, port=port, workers=workers, threads=threads, settings=dataclasses.replace(s, preload=preload))


def _export_before_serving(s: Any) -> Any:
    """Export each served model in a child process (the server never holds torch), unless torch serves.
    With CLIP_GAZE_BACKEND=auto, a model that cannot be exported is served by torch (every model, when
    the default cannot be; another one alone, loaded on torch by the worker that first needs it)."""
    import dataclasses

    from indexer.models import backends
    from indexer.models.registry import parse_model

    if backends.choose(s.backend, s.device) != "onnx":
        return s
    for i, name in enumerate(s.models):
        spec = parse_model(name)
        if backends.has_export(s.home, spec):
            continue
        say(f"exporting {spec.name} to ONNX before starting (once)…", err=True)
        done = subprocess.run([sys.executable, "-m", "clip_gaze", "models", "export", "--model", name])
        if done.returncode == 0:
            continue
        if s.backend == "onnx":  # the child has said why, in one line
            raise SystemExit(done.returncode)
        if i == 0:
            say(f"serving {spec.name} on torch", err=True)
            return dataclasses.replace(s, backend="torch")
        say(f"serving {spec.name} on torch (in the worker that first needs it)", err=True)
    return s


@cli.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="JSON: each model's preset, arch, pretrained and config.")
@click.pass_context
def models(ctx: click.Context, as_json: bool) -> None:
    """List the model presets. Any open_clip ARCH:PRETRAINED or ARCH:/path/to/checkpoint works too.

    \b
    Example:
        clip-gaze models --json
        CLIP_GAZE_MODEL=ViT-B-16:laion2b_s34b_b88k clip-gaze analyze painting.jpg
        clip-gaze models export --model toy
    """
    if ctx.invoked_subcommand is not None:
        return
    from indexer.models.registry import list_presets, preset_info

    presets = list_presets()
    if as_json:
        say(json.dumps([preset_info(p, paths=True).json_dict() for p in presets], ensure_ascii=False, indent=2))
        return
    current = load_settings().model
    for p in presets:
        mark = "*" if p.name == current else " "
        say(f"{mark} {p.name:<9} {p.arch}:{Path(p.pretrained).name if p.config else p.pretrained}  {p.description}")


@models.command("export")
@MODEL_OPTION
@click.option("--force", is_flag=True, help="Export again even when an export exists.")
@click.option("--json", "as_json", is_flag=True, help="Print the export's manifest as JSON.")
@domain_errors
def export_model(model: str | None, force: bool, as_json: bool) -> None:
    """Export the model's image and text towers to ONNX, once, into CLIP_GAZE_HOME/onnx.

    ONNX Runtime then serves the model (CLIP_GAZE_BACKEND=auto or onnx) without importing torch.
    `index` and `serve` export what is missing themselves; exporting needs torch, nothing else does.

    \b
    Example:
        clip-gaze models export --model vit-b-32
    """
    from indexer.models import backends
    from indexer.models.registry import parse_model

    settings = load_settings()
    spec = parse_model(model or settings.model)
    manifest = backends.ensure_export(spec, settings.home, progress=lambda m: say(m + "…", err=True), force=force)
    if as_json:
        say(json.dumps(manifest.json_dict(), ensure_ascii=False, indent=2))
        return
    say(f"{spec.name}: {backends.export_path(settings.home, spec)}")
    say(f"  {manifest.summary()}")


from .cli_collection import collection  # noqa: E402  (registered below)
from .cli_explore import map_command  # noqa: E402
from .cli_evaluate import evaluate  # noqa: E402
from .cli_explain import explain  # noqa: E402
from .cli_keys import audit, keys  # noqa: E402
from .cli_interrogate import collection_interrogate, interrogate  # noqa: E402
from .cli_interop import annotations_command, review  # noqa: E402
from .cli_sync import remove as remove_pictures  # noqa: E402
from .cli_sync import sync as sync_command  # noqa: E402
from .cli_vocab import vocab  # noqa: E402

cli.add_command(vocab)
collection.add_command(map_command)
cli.add_command(collection)
collection.add_command(annotations_command)
collection.add_command(review)
collection.add_command(remove_pictures)
collection.add_command(sync_command)
cli.add_command(evaluate)
cli.add_command(explain)
cli.add_command(keys)
cli.add_command(audit)
cli.add_command(interrogate)
collection.add_command(collection_interrogate)


def main(argv: Sequence[str] | None = None) -> Any:
    return cli.main(args=list(argv) if argv is not None else None, prog_name="clip-gaze")

