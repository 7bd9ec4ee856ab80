"""`interrogate`: the prompt a generator built on CLIP would answer to, in clip-interrogator's four modes,
exact and explained (README "The prompt a generator would answer to").

- best: the start, then the greedy chain (`chain`) over the exact top `pool` of the candidate lists;
- classic: the start, the best phrase of each list but the flavors', then the flavors' best `max_steps` (3);
- fast: the start and the best `max_steps` (32) phrases of the merged lists by their stored embeddings,
  as many as fit the context;
- negative: the chain, lowering the cosine, over the `pool` least similar flavors and every phrase of
  `ci-negative`, from an empty start.

The start: the caption if given, else the best phrase of each start vocabulary (the model preset's;
none for the toy model). The chain's text tower runs after the prefix's cached keys and values, as a
token tree: on ONNX Runtime (`onnx_prefix`) when it serves the model on the CPU, else on torch
(`prefix`); the prompt's cosine is that of one pass over all its tokens (its keys and values, then its end token).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..errors import InvalidInput
from ..models.registry import PRESETS
from ..schema.analysis import ImageInfo
from ..schema.interrogate import MAX_POOL, MAX_STEPS, MODES, Interrogation, Part
from .candidates import Candidate, ranked, require
from .chain import Prompts, cosine_of, join, run_chain
from .prefix import F32, PrefixEncoder, TorchPrefixEncoder

if TYPE_CHECKING:  # pragma: no cover
    from ..engine import Engine
    from ..pictures.reader import ImageSource

log = logging.getLogger(__name__)

DEFAULT_VOCABULARIES = ("ci-artists", "ci-flavors", "ci-mediums", "ci-movements", "ci-sites")
NEGATIVE_LIST = "ci-negative"
FLAVORS = "ci-flavors"
DEFAULT_START = ("genres", "subjects", "scenes")
DEFAULT_STEPS = {"best": 32, "negative": 32, "fast": 32, "classic": 3}


@dataclass(frozen=True)
class Options:
    mode: str = "best"
    caption: str | None = None
    vocabularies: Sequence[str] | None = None
    start_vocabularies: Sequence[str] | None = None  # None: the preset's; []: start empty
    forced: int = 8
    max_steps: int | None = None
    pool: int = 2048
    captioner: str | None = None  # a BLIP captioner (repo id or folder) writes the start when no caption is given
    reuse: bool = True  # reuse the prefix's keys and values (off: the plain chain, for comparisons)


def start_vocabularies_of(preset: str | None) -> tuple[str, ...]:
    """The lists whose best phrases start the chain without a caption, as the model preset declares."""
    p = PRESETS.get(preset or "")
    return tuple(p.start_vocabularies) if p is not None else DEFAULT_START


def interrogate(engine: "Engine", image: "ImageSource", options: Options = Options(),
                encoder: PrefixEncoder | None = None, name: str | None = None) -> Interrogation:
    """The prompt for one picture (read and encoded here, by open_clip's own image tower)."""
    t0 = time.perf_counter()
    plan = _plan(engine, options, encoder)
    decoded = engine.read(image, name)
    caption = options.caption if options.mode != "negative" else None
    if plan.captioner is not None:
        caption = plan.captioner.caption(decoded.image)
        _check_caption(plan.prompts, caption)
    t1 = time.perf_counter()
    emb = plan.loaded.encode_images([decoded.image])[0]
    t2 = time.perf_counter()
    timing = {"decode": decoded.decode_ms or (t1 - t0) * 1000, "embed_image": (t2 - t1) * 1000}
    return prompt_for(engine, plan, emb, decoded.info(), caption, timing)


@dataclass
class Plan:
    """What every picture of a run shares: the options checked, the lists, the tower, the tokenizer."""

    options: Options
    names: list[str]
    start_names: list[str]
    loaded: Any
    encoder: PrefixEncoder
    prompts: Prompts
    captioner: Any = None


def plan(engine: "Engine", options: Options, encoder: PrefixEncoder | None = None) -> Plan:
    return _plan(engine, options, encoder)


def _plan(engine: "Engine", options: Options, encoder: PrefixEncoder | None) -> Plan:
    """The options checked and the lists resolved, before any picture is read."""
    if options.mode not in MODES:
        raise InvalidInput(f"unknown mode {options.mode!r}: use one of {', '.join(MODES)}", code="invalid_mode")
    for what, value, low, high in (("forced", options.forced, 0, MAX_STEPS), ("pool", options.pool, 1, MAX_POOL),
                                   ("max_steps", options.max_steps if options.max_steps is not None else 1, 1, MAX_STEPS)):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise InvalidInput(f"{what} must be a whole number from {low} to {high}, not {value!r}", code="invalid_input")
    mode = options.mode
    default = [FLAVORS, NEGATIVE_LIST] if mode == "negative" else list(DEFAULT_VOCABULARIES)
    names = engine.resolve(list(options.vocabularies or default))
    start_names = list(options.start_vocabularies) if options.start_vocabularies is not None else list(
        start_vocabularies_of(engine.spec.preset))
    no_start = options.caption is not None or options.captioner is not None or mode == "negative"
    start_names = engine.resolve(start_names) if start_names and not no_start else []
    loaded = engine.torch_model
    prompts = Prompts(loaded.tokenizer)
    _check_caption(prompts, options.caption if mode != "negative" else None)
    captioner = None
    if options.captioner is not None and options.caption is None and mode != "negative":
        from .caption import load_captioner

        captioner = load_captioner(options.captioner)
    return Plan(options, names, start_names, loaded, encoder or text_encoder(engine, loaded, options.reuse),
                prompts, captioner)


def text_encoder(engine: "Engine", loaded: Any, reuse: bool = True) -> PrefixEncoder:
    """ONNX Runtime's prefix graph (`onnx_prefix`, exported beside the model's export on first use)
    when ONNX Runtime serves the model on the CPU, else torch; torch too for a tower the graph cannot take."""
    from ..models.torch_model import LoadedModel

    if reuse and not isinstance(engine.model, LoadedModel) and getattr(engine.model, "device", "cpu") == "cpu":
        from ..errors import NotExportable
        from ..models.backends import export_path
        from .onnx_prefix import OnnxPrefixEncoder, export_prefix

        try:
            graph = export_prefix(loaded, export_path(engine.store.home, engine.spec))
        except NotExportable as exc:
            log.info("interrogate: torch runs the chain's text tower (%s)", exc)
        else:
            return OnnxPrefixEncoder(graph, eot=int(loaded.tokenizer.eot_token_id), threads=engine.threads or 0,
                                     whole=TorchPrefixEncoder(loaded))  # one row's tokens in one pass
    return TorchPrefixEncoder(loaded, reuse=reuse)


def prompt_for(engine: "Engine", plan: Plan, emb: F32, image: ImageInfo, caption: str | None,
               timing: dict[str, float]) -> Interrogation:
    """The prompt for one picture's embedding `emb`."""
    options, names, prompts, encoder = plan.options, plan.names, plan.prompts, plan.encoder
    mode, start_names = options.mode, plan.start_names
    before_counts = (encoder.counts.encodes, encoder.counts.by_suffix)
    t2 = time.perf_counter()
    # the start: the caption, or the best phrase of each start list
    start_parts: list[Candidate] = []
    if caption is not None:
        start = caption
    else:
        start_parts = [c for c in ranked(engine, start_names, emb, 1, per_list=True)]
        start = ""
        for c in start_parts:
            if prompts.fits(join(start, c.phrase)):
                start = join(start, c.phrase)
        start_parts = [c for c in start_parts if c.phrase in start.split(", ")]
    steps = options.max_steps or DEFAULT_STEPS[mode]
    chosen: list[Candidate] = []
    chain_steps = 0
    if mode in ("best", "negative"):
        lowest = mode == "negative"
        flavor_names = [n for n in names if n != NEGATIVE_LIST] if lowest else names
        pool = ranked(engine, flavor_names, emb, options.pool, lowest=lowest)
        if lowest and NEGATIVE_LIST in names:
            pool += [c for c in ranked(engine, [NEGATIVE_LIST], emb, None) if c.phrase not in {p.phrase for p in pool}]
        require(pool, names)
        done = run_chain(encoder, prompts, emb, [c.phrase for c in pool], start, options.forced, steps, reverse=lowest)
        chosen, chain_steps = [pool[i] for i in done.chosen], len(done.steps)
        candidates = len(pool)
    elif mode == "fast":
        merged = ranked(engine, names, emb, steps)
        require(merged, names)
        chosen, candidates = _fitting(prompts, start, merged), len(merged)
    else:  # classic
        flavor = FLAVORS if FLAVORS in names else names[-1]
        firsts = ranked(engine, [n for n in names if n != flavor], emb, 1, per_list=True)
        flavors = ranked(engine, [flavor], emb, steps)
        require(firsts + flavors, names)
        chosen, candidates = _fitting(prompts, start, firsts + flavors), len(firsts) + len(flavors)
    t3 = time.perf_counter()

    prompt = start
    for c in chosen:
        prompt = join(prompt, c.phrase)
    row = prompts.row(prompt)
    pieces: list[tuple[str, Candidate | None]] = [(c.phrase, c) for c in start_parts] or ([(start, None)] if start else [])
    pieces += [(c.phrase, c) for c in chosen]
    after = _cosines_after(encoder, prompts, emb, [p for p, _ in pieces])
    whole = ""
    for phrase, _ in pieces:
        whole = join(whole, phrase)
    if whole == prompt and after:  # its last cut is the whole prompt: one pass over its tokens, then its end token
        final = after[-1]
    else:
        final = float(cosine_of(encoder.texts([row]), emb)[0]) if prompt else 0.0
    parts, before = [], 0.0
    for (phrase, cand), cos in zip(pieces, after):
        parts.append(Part(phrase=phrase, vocabulary=cand.vocabulary if cand else None, term=cand.term if cand else None,
                          external_id=cand.external_id if cand else None, cosine_after=cos, gain=cos - before))
        before = cos
    if parts:  # the last part's cosine is the prompt's, encoded whole
        parts[-1] = parts[-1].model_copy(update={"cosine_after": final, "gain": final - (after[-2] if len(after) > 1 else 0.0)})
    t4 = time.perf_counter()
    timing = {**timing, "chain": (t3 - t2) * 1000, "parts": (t4 - t3) * 1000}
    breakdown = {k: round(v, 2) for k, v in timing.items()}
    return Interrogation(
        model=engine.model_info(), image=image, mode=mode, prompt=prompt,  # type: ignore[arg-type]
        negative_prompt=prompt if mode == "negative" else None, start=start, cosine=final, tokens=len(row),
        context_length=prompts.context, parts=parts, candidates=candidates, vocabularies=list(names),
        steps=chain_steps, text_encodes=encoder.counts.encodes - before_counts[0],
        reused_prefix=encoder.counts.by_suffix - before_counts[1],
        text_runtime="torch" if isinstance(encoder, TorchPrefixEncoder) else "onnxruntime",
        timing_ms=round(sum(breakdown.values()), 2), timing_breakdown_ms=breakdown,
    )


def _check_caption(prompts: Prompts, caption: str | None) -> None:
    if caption is not None and not prompts.fits(caption):
        raise InvalidInput(f"the caption is {len(prompts.row(caption))} tokens, over the model's context of "
                           f"{prompts.context}", code="caption_too_long")


def _fitting(prompts: Prompts, start: str, ranked_: Sequence[Candidate]) -> list[Candidate]:
    """The candidates, in order, that still fit the context after the start and those before them."""
    out, prompt = [], start
    for c in ranked_:
        if c.phrase in prompt.split(", "):
            continue
        longer = join(prompt, c.phrase)
        if prompts.fits(longer):
            out.append(c)
            prompt = longer
    return out


def _cosines_after(encoder: PrefixEncoder, prompts: Prompts, image: F32, pieces: Sequence[str]) -> list[float]:
    """cosine(picture, the prompt up to and with each piece): one pass over the whole prompt's tokens, then
    each shorter prompt's end token after its share of them (a shorter prompt that tokenizes otherwise
    than the start of the whole one, e.g. one ending in ')' before ',', is encoded whole)."""
    if not pieces:
        return []
    texts = [pieces[0]]
    for piece in pieces[1:]:
        texts.append(join(texts[-1], piece))
    head = prompts.head(texts[-1])
    heads = [prompts.head(t) for t in texts]
    fits = [i for i, h in enumerate(heads) if head[: len(h)] == h]
    other = [i for i in range(len(texts)) if i not in set(fits)]
    out = np.zeros(len(texts), dtype=np.float64)
    if fits:
        out[fits] = cosine_of(encoder.ends(head, [len(heads[i]) for i in fits]), image)
    if other:
        out[other] = cosine_of(encoder.texts([[*heads[i], prompts.eot] for i in other]), image)
    return [float(v) for v in out]


__all__ = ["DEFAULT_START", "DEFAULT_VOCABULARIES", "Options", "interrogate", "start_vocabularies_of"]
