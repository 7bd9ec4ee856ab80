"""`clip-gaze interrogate` and `clip-gaze collection interrogate`: the prompt a generator would answer to."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from indexer.schema.interrogate import MAX_POOL, MAX_STEPS, MODES

from .cli_common import each_image, MODEL_OPTION, VOCAB_OPTION, domain_errors, make_engine, progress_for, say, split_vocabs
from .library import caption_text


def _options(mode: str, caption: str | None, vocab: tuple[str, ...], start_vocab: str | None, forced: int,
             max_steps: int | None, pool: int, captioner: str | None = None) -> Any:
    from indexer.interrogate.modes import Options

    start = None if start_vocab is None else [v.strip() for v in start_vocab.split(",") if v.strip()]
    text = caption_text(caption)
    return Options(mode=mode, caption=text, vocabularies=split_vocabs(vocab), start_vocabularies=start, forced=forced,
                   max_steps=max_steps, pool=pool, captioner=captioner)


def chain_options(fn: Any) -> Any:
    for option in reversed((
        click.option("--mode", type=click.Choice(MODES), default="best", show_default=True,
                     help="best: the greedy chain; classic: the best of each list; fast: the best phrases by their "
                          "stored embeddings; negative: a negative prompt."),
        click.option("--caption", "-c", help="The prompt's start (a catalogue title or description)."),
        VOCAB_OPTION,
        click.option("--start-vocab", "start_vocab", metavar="V,…",
                     help="Lists whose best phrases start the prompt without a caption ('' starts it empty; default: "
                          "the model preset's, genres,subjects,scenes; the toy model's: none)."),
        click.option("--forced", default=8, show_default=True, type=click.IntRange(0, MAX_STEPS),
                     help="Chain steps taken even when they do not raise the cosine."),
        click.option("--max-steps", type=click.IntRange(1, MAX_STEPS),
                     help="Most phrases the chain adds (default 32; classic: the flavors, 3)."),
        click.option("--pool", default=2048, show_default=True, type=click.IntRange(1, MAX_POOL),
                     help="The chain's candidates: the exact top of the lists by stored cosine."),
        MODEL_OPTION,
    )):
        fn = option(fn)
    return fn


@click.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=str))
@chain_options
@click.option("--captioner", metavar="REPO|DIR",
              help="A BLIP captioner writes the start (needs clip-gaze[caption]): a Hugging Face repo id in the cache, "
                   "e.g. Salesforce/blip-image-captioning-large, or a folder.")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines: one object per image, shaped like POST /v1/interrogate's answer.")
@domain_errors
def interrogate(images: tuple[str, ...], mode: str, caption: str | None, vocab: tuple[str, ...], start_vocab: str | None,
                forced: int, max_steps: int | None, pool: int, model: str | None, captioner: str | None,
                as_json: bool) -> None:
    """The prompt a generator built on CLIP would answer to, for each of IMAGES, and what each part adds.

    The cosine is CLIP's reading of the picture against the whole prompt, not a promise of what a
    generator will draw. Candidates: clip-interrogator's lists in clip-gaze (ci-artists, ci-flavors,
    ci-mediums, ci-movements, ci-sites; negative: ci-flavors and ci-negative) unless --vocab names others.

    \b
    Examples:
        clip-gaze interrogate painting.jpg --caption "a portrait of a woman"
        clip-gaze interrogate *.jpg --mode fast --json > prompts.jsonl
        CLIP_GAZE_MODEL=toy clip-gaze interrogate examples/red-circle.png --vocab toy-words --start-vocab ""
    """
    from indexer.interrogate.modes import interrogate as run

    engine = make_engine(model)
    options = _options(mode, caption, vocab, start_vocab, forced, max_steps, pool, captioner)
    each_image(images, lambda path: run(engine, path, options), format_prompt, as_json, "interrogated")


def format_prompt(answer: Any) -> str:
    lines = [f"{answer.file or 'image'}  mode {answer.mode}  model {answer.model.preset or answer.model.arch}  "
             f"cosine {answer.cosine:.4f}  {answer.tokens} of {answer.context_length} tokens",
             f"  {answer.prompt}"]
    for p in answer.parts:
        lines.append(f"    {p.gain:+.4f}  {p.phrase}  ({p.vocabulary or 'start'})")
    lines.append(f"  {answer.candidates:,} candidates, {answer.steps} steps, {answer.text_encodes:,} text encodes "
                 f"({answer.reused_prefix:,} after a cached prefix), {answer.timing_ms:.0f} ms")
    return "\n".join(lines)


@click.command("interrogate")
@click.argument("name")
@chain_options
@click.option("--out", "-o", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="prompts.csv or prompts.jsonl: one row per picture (a rerun skips the pictures it holds).")
@click.option("--sidecars", type=click.Path(file_okay=False, path_type=Path),
              help="Also write one .txt per picture, named after it, into this folder (as kohya_ss reads them).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@domain_errors
def collection_interrogate(name: str, mode: str, caption: str | None, vocab: tuple[str, ...], start_vocab: str | None,
                           forced: int, max_steps: int | None, pool: int, model: str | None, out: Path,
                           sidecars: Path | None, as_json: bool) -> None:
    """A prompt for every picture of collection NAME, from its stored embeddings.

    \b
    Examples:
        clip-gaze collection interrogate museum --mode fast --out prompts.csv
        clip-gaze collection interrogate museum --out prompts.jsonl --sidecars captions/
    """
    from indexer.interrogate.collection import interrogate_collection

    engine = make_engine(model)
    options = _options(mode, caption, vocab, start_vocab, forced, max_steps, pool)
    size = engine.images.get(name).size
    with progress_for(size, f"interrogating {name}", " pictures") as bar:
        report = interrogate_collection(engine, name, options, out, sidecars, progress=bar.update)
    if as_json:
        say(json.dumps(report.__dict__, ensure_ascii=False))
        return
    say(f"{name}: {report.done:,} prompts written to {report.out}"
        + (f", {report.skipped:,} already there" if report.skipped else "")
        + (f", {report.sidecars:,} .txt files in {sidecars}" if sidecars is not None else ""))
