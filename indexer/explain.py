"""Where and why: a map over the model's patch grid for each phrase, from one forward pass.

What a map means. For an image embedding ê (normalised), a list of phrases t_j and the model's
logit scale s, each phrase has a logit l_i = s ê·t_i and a share p_i = softmax(l)_i of its list. The
share moves with l_i − Σ_j p_j l_j (the logit minus the list's probability-weighted mean logit); the
map of phrase i splits exactly that number over the patch grid:

    l_i − Σ_j p_j l_j  =  Σ_cells map_i[cell]  +  unmapped_i

`unmapped` is what no patch carries (the class token's own path, the blocks before those decomposed,
biases). A contrast "A rather than B" splits l_A − l_B the same way.

How (Gandelsman et al., "Interpreting CLIP's image representation via text-based decomposition",
ICLR 2024). A ViT's image embedding is ln_post(class token's final residual stream) @ proj. The
residual stream is a sum: what the decomposed blocks' attention wrote into the class token, source
token by source token, plus their MLP outputs, plus the stream before them. With ln_post's scale (the
standard deviation) held at its value from the forward pass, ln_post is linear, and so is the
projection and the final normalisation (by the norm from the forward pass): the embedding is the sum
of one vector per source patch and one for the rest, and the logits are their dot products with the
phrases. One forward pass per picture (with hooks that record each decomposed block's attention
input and MLP output), then a few matrix products, whatever the number of phrases.

A source patch here is the patch token at the decomposed block's input; what earlier blocks mixed
into that token from elsewhere is credited to its place ("patch-to-patch mixing ignored").

Only open_clip's own VisionTransformer (class-token pooling, nn.MultiheadAttention blocks: every ViT
preset) is decomposed; any other tower is refused with NotExplainable (400 `not_explainable`).
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import numpy.typing as npt

from .errors import InvalidInput

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from PIL import Image

    from .engine import Engine, ImageSource
    from .images import DecodedImage
    from .models import LoadedModel
    from .schema_explain import Explanation

F32 = npt.NDArray[np.float32]


class NotExplainable(InvalidInput):
    """The model's image tower is not one this decomposition understands."""

    code = "not_explainable"


# -- the decomposition ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Decomposition:
    """One picture's normalised image embedding as a sum of per-patch parts and a rest.

    `patches` (rows·cols, dim): each source patch's part, row-major over the grid; `rest` (dim,): the
    class token's own path, the blocks before those decomposed, every bias; `embedding` (dim,): the
    normalised embedding from the forward pass; `patches.sum(0) + rest` equals it to float rounding
    (`error` is the largest difference)."""

    patches: F32
    rest: F32
    embedding: F32
    rows: int
    cols: int
    error: float

    def contributions(self, directions: npt.ArrayLike, scale: float) -> tuple[F32, F32]:
        """For directions d_k (k, dim): the maps scale·(patch part · d_k) as (k, rows, cols) and the
        unmapped rest scale·(rest · d_k) as (k,)."""
        d = np.atleast_2d(np.asarray(directions, dtype=np.float32))
        maps = (self.patches @ d.T).T * np.float32(scale)
        rest = (d @ self.rest) * np.float32(scale)
        return maps.reshape(len(d), self.rows, self.cols).astype(np.float32), rest.astype(np.float32)


@dataclass
class _Capture:
    """What the hooks record during one forward pass (for the thread that asked)."""

    thread: int
    attn_in: dict[int, Any] = field(default_factory=dict)  # block → ln_1(x), all tokens
    mlp_out: dict[int, Any] = field(default_factory=dict)  # block → ls_2(mlp(ln_2(x))), class token
    stream_in: Any = None  # the class token's residual stream entering the first decomposed block
    ln_post_in: Any = None  # the class token's final residual stream


MAX_ERROR = 1e-2  # the largest difference, in a normalised embedding, between its parts' sum and itself


def default_layers(blocks: int) -> int:
    """Blocks whose attention is split by source patch: the last four (Gandelsman et al.: the direct
    effect on a ViT's image representation sits in its last few attention layers), or all of a tower
    that has fewer (the toy model's three)."""
    return max(1, min(4, blocks))


class Explainer:
    """Decomposes the image embeddings of one open_clip CLIP model (see the module's docstring)."""

    def __init__(self, model: Any, layers: int | None = None):
        self.model = model
        visual = getattr(model, "visual", None)
        self._check(visual)
        assert visual is not None
        self.visual = visual
        self.blocks = list(visual.transformer.resblocks)
        self.layers = default_layers(len(self.blocks)) if layers is None else int(layers)
        if not 1 <= self.layers <= len(self.blocks):
            raise ValueError(f"layers must be 1 to {len(self.blocks)}")
        self.first = len(self.blocks) - self.layers
        self.rows, self.cols = (int(v) for v in visual.grid_size)
        self.batch_first = bool(getattr(visual.transformer, "batch_first", True))

    @staticmethod
    def _check(visual: Any) -> None:
        import torch
        from open_clip.transformer import ResidualAttentionBlock, VisionTransformer

        name = type(visual).__name__ if visual is not None else "none"
        if not isinstance(visual, VisionTransformer):
            raise NotExplainable(
                f"this model's image tower ({name}) cannot be explained: maps need open_clip's VisionTransformer "
                "(ViT presets such as vit-b-32, sd15, sd2, sdxl, toy)"
            )
        why = None
        if getattr(visual, "attn_pool", None) is not None:
            why = "it pools with an attentional pooler"
        elif getattr(visual, "pool_type", "tok") != "tok":
            why = f"it pools by {visual.pool_type!r}, not with the class token"
        elif not all(type(b) is ResidualAttentionBlock for b in visual.transformer.resblocks):
            why = "its blocks are not open_clip's standard ResidualAttentionBlock"
        elif not all(isinstance(b.attn, torch.nn.MultiheadAttention) and b.attn._qkv_same_embed_dim
                     and b.attn.bias_k is None and not b.attn.add_zero_attn and b.attn.in_proj_bias is not None
                     for b in visual.transformer.resblocks):
            why = "its attention is not a plain nn.MultiheadAttention with one input projection"
        elif not isinstance(visual.ln_post, torch.nn.LayerNorm) or getattr(visual, "proj", None) is None:
            why = "it has no final layer norm and projection"
        if why:
            raise NotExplainable(f"this model's image tower cannot be explained: {why}")

    # -- one forward pass with hooks ------------------------------------------------------------------
    def _hooks(self, cap: _Capture) -> list[Any]:
        mine = lambda: threading.get_ident() == cap.thread  # noqa: E731  (other threads share the model)
        bf = self.batch_first

        def tokens_first(t: Any) -> Any:  # (batch, tokens, width)
            return t if bf else t.transpose(0, 1)

        handles = []

        def stream_in(_m: Any, args: tuple[Any, ...]) -> None:
            if mine():
                cap.stream_in = tokens_first(args[0])[:, 0].float()

        handles.append(self.blocks[self.first].register_forward_pre_hook(stream_in))
        for i in range(self.first, len(self.blocks)):
            blk = self.blocks[i]
            attn_bf = bool(getattr(blk.attn, "batch_first", False))

            def attn_in(_m: Any, args: tuple[Any, ...], kwargs: dict[str, Any], i: int = i, attn_bf: bool = attn_bf) -> None:
                if mine():
                    if kwargs.get("attn_mask") is not None or (len(args) > 5 and args[5] is not None):
                        raise NotExplainable("this model's image tower masks its attention; it cannot be explained")
                    q = args[0] if args else kwargs["query"]
                    cap.attn_in[i] = (q if attn_bf else q.transpose(0, 1)).float()

            def mlp_out(_m: Any, _args: tuple[Any, ...], out: Any, i: int = i) -> None:
                if mine():
                    cap.mlp_out[i] = tokens_first(out)[:, 0].float()

            handles.append(blk.attn.register_forward_pre_hook(attn_in, with_kwargs=True))
            handles.append(blk.ls_2.register_forward_hook(mlp_out))

        def ln_post_in(_m: Any, args: tuple[Any, ...]) -> None:
            if mine():
                x = args[0]
                cap.ln_post_in = (x if x.dim() == 2 else tokens_first(x)[:, 0]).float()

        handles.append(self.visual.ln_post.register_forward_pre_hook(ln_post_in))
        return handles

    def decompose(self, batch: "torch.Tensor") -> list[Decomposition]:
        """Each preprocessed picture's decomposition, from one forward pass of the batch."""
        import torch

        cap = _Capture(threading.get_ident())
        handles = self._hooks(cap)
        try:
            with torch.inference_mode():
                device = next(self.model.parameters()).device
                out = self.model.encode_image(batch.to(device))
                out = (out[0] if isinstance(out, tuple) else out).float()
                parts = self._parts(cap)
                return self._finish(parts, out)
        finally:
            for h in handles:
                h.remove()

    def _attention_by_source(self, i: int, a: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:
        """Block i's attention output for the class token, split by source token: (batch, tokens, width),
        and its bias (width,); both after the block's layer scale."""
        import torch

        blk = self.blocks[i]
        attn = blk.attn
        width, heads = attn.embed_dim, attn.num_heads
        dh = width // heads
        w, b = attn.in_proj_weight.float(), attn.in_proj_bias.float()
        batch, tokens, _ = a.shape
        q = (a[:, 0] @ w[:width].T + b[:width]).view(batch, heads, dh)
        k = (a @ w[width : 2 * width].T + b[width : 2 * width]).view(batch, tokens, heads, dh)
        v = (a @ w[2 * width :].T + b[2 * width :]).view(batch, tokens, heads, dh)
        weights = torch.softmax(torch.einsum("bhd,bshd->bhs", q, k) / math.sqrt(dh), dim=-1)  # (batch, heads, tokens)
        mixed = (v * weights.permute(0, 2, 1).unsqueeze(-1)).reshape(batch, tokens, width)
        by_source = mixed @ attn.out_proj.weight.float().T
        bias = attn.out_proj.bias.float() if attn.out_proj.bias is not None else torch.zeros(width, device=a.device)
        return _scaled(blk.ls_1, by_source), _scaled(blk.ls_1, bias)

    def _parts(self, cap: _Capture) -> tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"]:
        """(patch parts (batch, patches, width), the rest (batch, width), the final stream (batch, width))."""
        if cap.ln_post_in is None or cap.stream_in is None or len(cap.attn_in) != self.layers:
            raise NotExplainable("this model's image tower did not run as a ViT with a class token; it cannot be explained")
        patches = None
        rest = cap.stream_in.clone()
        for i in range(self.first, len(self.blocks)):
            by_source, bias = self._attention_by_source(i, cap.attn_in[i])
            patches = by_source[:, 1:] if patches is None else patches + by_source[:, 1:]
            rest = rest + by_source[:, 0] + bias + cap.mlp_out[i]
        assert patches is not None
        return patches, rest, cap.ln_post_in

    def _finish(self, parts: tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"], out: "torch.Tensor") -> list[Decomposition]:
        import torch

        patches, rest, stream = parts
        ln = self.visual.ln_post
        gamma, beta = ln.weight.float(), ln.bias.float()
        sigma = torch.sqrt(stream.var(dim=-1, unbiased=False, keepdim=True) + ln.eps)  # (batch, 1): held fixed
        proj = self.visual.proj.float()
        norm = out.norm(dim=-1, keepdim=True)  # (batch, 1): held fixed

        p = ((patches - patches.mean(dim=-1, keepdim=True)) * gamma / sigma.unsqueeze(1)) @ proj / norm.unsqueeze(1)
        r = (((rest - rest.mean(dim=-1, keepdim=True)) * gamma / sigma) @ proj + beta @ proj) / norm
        e = out / norm
        error = (p.sum(dim=1) + r - e).abs().amax(dim=-1)
        if float(error.max()) > MAX_ERROR:  # the tower did not compute what this decomposition assumes
            raise NotExplainable(
                f"this model's image tower cannot be explained: its parts do not add up to its embedding "
                f"(off by {float(error.max()):.1e})"
            )
        p_np, r_np, e_np = (t.cpu().numpy().astype(np.float32) for t in (p, r, e))
        err = error.cpu().numpy()
        return [
            Decomposition(p_np[j], r_np[j], e_np[j], self.rows, self.cols, float(err[j])) for j in range(len(e_np))
        ]


def _scaled(layer_scale: Any, x: "torch.Tensor") -> "torch.Tensor":
    """A block's layer scale (identity, or an elementwise gain: linear either way) applied to x."""
    gamma = getattr(layer_scale, "gamma", None)
    return x if gamma is None else x * gamma.float()


_explainers: "weakref.WeakKeyDictionary[Any, Explainer]" = weakref.WeakKeyDictionary()
_explainers_lock = threading.Lock()


def explainer_for(loaded: "LoadedModel") -> Explainer:
    """The Explainer of a loaded model (made once; raises NotExplainable for other towers)."""
    with _explainers_lock:
        found = _explainers.get(loaded)
        if found is None:
            found = Explainer(loaded.model)
            _explainers[loaded] = found
        return found


# -- where the model looked: the input's box in the picture --------------------------------------------
def input_box(preprocess: Any, size: tuple[int, int]) -> tuple[float, float, float, float]:
    """The part of a picture of `size` (width, height) that the model's preprocessing keeps, in that
    picture's pixels: open_clip's resizes (shortest side, squash, keep-ratio) and centre crops (a padded
    crop gives a box reaching past the picture)."""
    from torchvision.transforms import CenterCrop, Resize

    width, height = float(size[0]), float(size[1])
    x0, y0, sx, sy = 0.0, 0.0, 1.0, 1.0  # original = offset + current · scale
    for t in getattr(preprocess, "transforms", []):
        name = type(t).__name__
        if isinstance(t, Resize) or name == "ResizeKeepRatio":
            new_w, new_h = _resized(t, width, height)
            sx, sy = sx * width / new_w, sy * height / new_h
            width, height = new_w, new_h
        elif isinstance(t, CenterCrop) or name == "CenterCropOrPad":
            ch, cw = _pair(t.size)
            top, left = int(round((height - ch) / 2.0)), int(round((width - cw) / 2.0))
            x0, y0 = x0 + left * sx, y0 + top * sy
            width, height = float(cw), float(ch)
    return x0, y0, x0 + width * sx, y0 + height * sy


def _pair(size: Any) -> tuple[int, int]:
    if isinstance(size, (list, tuple)):
        return (int(size[0]), int(size[1] if len(size) > 1 else size[0]))
    return int(size), int(size)


def _resized(t: Any, width: float, height: float) -> tuple[float, float]:
    if type(t).__name__ == "ResizeKeepRatio":
        th, tw = t.size
        rh, rw = height / th, width / tw
        ratio = max(rh, rw) * t.longest + min(rh, rw) * (1.0 - t.longest)
        return float(round(width / ratio)), float(round(height / ratio))
    size = t.size
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return float(size[1]), float(size[0])  # squash to (h, w)
    target = int(size[0] if isinstance(size, (list, tuple)) else size)
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = target, int(target * long / short)
    return (float(new_short), float(new_long)) if width <= height else (float(new_long), float(new_short))


# -- maps for lists of phrases -------------------------------------------------------------------------
@dataclass
class _List:
    key: str
    matrix: npt.NDArray[np.floating]  # (n, dim) normalised phrase embeddings
    ids: npt.NDArray[np.int64] | None = None  # a vocabulary's phrase ids (the store's rows), by position
    phrases: list[str] | None = None  # ad-hoc phrases, by position

    def rows(self, engine: "Engine", positions: npt.NDArray[np.int64]) -> list[dict[str, Any]]:
        """{phrase, term, external_id, metadata} of the phrases at these positions."""
        if self.phrases is not None:
            return [{"term": self.phrases[i], "phrase": self.phrases[i], "external_id": None, "metadata": None}
                    for i in positions]
        assert self.ids is not None
        ids = self.ids[positions]
        found = engine.store.phrase_rows(np.unique(ids)) if len(ids) else {}
        return [found[int(i)] for i in ids]


def _weighted_mean(matrix: npt.NDArray[np.floating], weights: npt.NDArray[np.float64]) -> F32:
    """Σ_j w_j matrix_j in float32, a block at a time (a float16 matrix is never copied whole)."""
    out = np.zeros(matrix.shape[1], dtype=np.float64)
    for start in range(0, matrix.shape[0], 16384):
        out += weights[start : start + 16384] @ np.asarray(matrix[start : start + 16384], dtype=np.float32)
    return out.astype(np.float32)


@dataclass
class ExplainedImage:
    """An explanation with its maps as arrays (the answer holds them rounded, as lists)."""

    answer: "Explanation"
    maps: dict[str, F32]  # list key → (k, rows, cols), in the order of its matches
    contrast: F32 | None
    picture: "DecodedImage"
    box: tuple[float, float, float, float]  # the model's input in `picture.image`'s pixels
    decomposition: Decomposition
    directions: dict[str, F32] = field(default_factory=dict)  # list key → (k, dim): t_i − the list's mean phrase

    def overlay(self, key: str | None = None, rank: int = 0) -> "Image.Image":
        """The map of match `rank` (0 = best) of list `key` (default: the first) over the picture."""
        key = key or next(iter(self.maps))
        result = self.answer.results[key]
        m = result.matches[rank]
        title = f"{m.phrase}  ({_percent(m.probability)} of {result.softmax_over:,} phrases)"
        return render_overlay(self.picture.image, self.maps[key][rank], self.box, title)

    def overlay_contrast(self) -> "Image.Image":
        c = self.answer.contrast
        if c is None or self.contrast is None:
            raise InvalidInput("no contrast: give versus")
        return render_overlay(self.picture.image, self.contrast, self.box, f"{c.phrase}  rather than  {c.versus}")


def _percent(p: float) -> str:
    return f"{100 * p:.1f}%" if p >= 0.0005 else "<0.1%"


def explain_image(
    engine: "Engine",
    image: "ImageSource",
    vocabularies: Sequence[str] | None = None,
    phrases: Sequence[str] | None = None,
    top_k: int = 3,
    versus: str | None = None,
    persist: bool = False,
    name: str | None = None,
) -> ExplainedImage:
    """Explain the top `top_k` matches of each list (the vocabularies, and the ad-hoc `phrases`, whose
    key is 'compare'), and "A rather than `versus`" for the best match A of the first list. Phrases and
    versus are assumed valid (the request models check them); duplicates among phrases count, as in
    `probabilities`. One forward pass; `persist` stores new phrase embeddings."""
    from .kernels import cosines
    from .schema_explain import ADHOC, Contrast, ExplainedMatch, ExplainedResult, Explanation, Grid, Point
    from .scoring import scores_from_cosines

    t0 = time.perf_counter()
    decoded = engine.read(image, name)
    t_decode = decoded.decode_ms or (time.perf_counter() - t0) * 1000
    names = engine.resolve(vocabularies) if (vocabularies or phrases is None) else []
    if phrases is not None and ADHOC in names:
        raise InvalidInput(f"a vocabulary named {ADHOC!r} cannot be explained beside ad-hoc phrases (their results key)")
    model = engine.torch_model  # the decomposition needs open_clip's own tower, whatever serves analyses
    explainer = explainer_for(model)  # refuses other towers before any work

    t1 = time.perf_counter()
    decomposition = explainer.decompose(model.image_tensor(decoded.image).unsqueeze(0))[0]
    emb = decomposition.embedding
    t2 = time.perf_counter()

    lists: list[_List] = []
    if phrases is not None:
        plist = list(phrases)
        lists.append(_List(ADHOC, engine.embedder.lookup(plist, persist=persist), phrases=plist))
    if names:
        versions = engine.store.versions()
        engine.indexes.prepare(names, versions)
        for vocab in names:
            idx = engine.indexes.get(vocab, versions)
            lists.append(_List(vocab, idx.matrix, ids=idx.ids))
    scale = model.logit_scale
    scored = []
    for lst in lists:
        cos = cosines(lst.matrix, emb)[:, 0]
        s = scores_from_cosines(cos, scale, top_k)
        logits = cos.astype(np.float64) * scale
        weights = np.exp(logits - logits.max())
        weights /= weights.sum()
        mean_phrase = _weighted_mean(lst.matrix, weights)
        chosen = np.asarray(lst.matrix[s.indices], dtype=np.float32)
        scored.append((lst, s, chosen, chosen - mean_phrase, float(weights @ logits)))
    t3 = time.perf_counter()

    box_here = input_box(model.preprocess, decoded.image.size)
    fx, fy = decoded.width / decoded.image.width, decoded.height / decoded.image.height
    box = (box_here[0] * fx, box_here[1] * fy, box_here[2] * fx, box_here[3] * fy)
    rows, cols = decomposition.rows, decomposition.cols

    def peak(heat: F32) -> Point:
        r, c = np.unravel_index(int(np.argmax(heat)), heat.shape)
        return Point(x=round(box[0] + (c + 0.5) * (box[2] - box[0]) / cols, 1),
                     y=round(box[1] + (r + 0.5) * (box[3] - box[1]) / rows, 1))

    results: dict[str, ExplainedResult] = {}
    maps: dict[str, F32] = {}
    directions: dict[str, F32] = {}
    for lst, s, _chosen, dirs, mean_logit in scored:
        heat, unmapped = decomposition.contributions(dirs, scale)
        maps[lst.key], directions[lst.key] = heat, dirs
        matches = []
        for k, row in enumerate(lst.rows(engine, s.indices)):
            matches.append(ExplainedMatch(
                phrase=row["phrase"], term=row["term"], probability=float(s.probabilities[k]), cosine=float(s.cosines[k]),
                logit=float(s.logits[k]), external_id=row["external_id"], metadata=row["metadata"],
                relative_logit=float(s.logits[k] - mean_logit), unmapped=float(unmapped[k]),
                heatmap=_rounded(heat[k]), peak=peak(heat[k]),
            ))
        results[lst.key] = ExplainedResult(softmax_over=s.softmax_over, matches=matches)

    contrast_map = None
    contrast = None
    if versus is not None:
        first, s, chosen, _dirs, _ = scored[0]
        if len(s.indices) == 0:
            raise InvalidInput("nothing to contrast: the first list is empty")
        b = engine.embedder.lookup([versus], persist=persist)[0]
        heat, unmapped = decomposition.contributions(chosen[0] - b, scale)
        contrast_map = heat[0]
        a = results[first.key].matches[0]
        contrast = Contrast(
            phrase=a.phrase, versus=versus, vocabulary=first.key,
            logit_difference=float(scale * (np.dot(emb, chosen[0]) - np.dot(emb, b))), unmapped=float(unmapped[0]),
            heatmap=_rounded(contrast_map), peak=peak(contrast_map),
        )
    t4 = time.perf_counter()
    timing = {"decode": t_decode, "embed_image": (t2 - t1) * 1000, "score": (t3 - t2) * 1000, "explain": (t4 - t3) * 1000}
    breakdown = {k: round(v, 2) for k, v in timing.items()}
    answer = Explanation(
        model=engine.model_info(), image=decoded.info(), results=results, timing_ms=round(sum(breakdown.values()), 2),
        timing_breakdown_ms=breakdown, grid=Grid(rows=rows, cols=cols, box=[round(v, 1) for v in box]),
        layers=explainer.layers, contrast=contrast,
    )
    return ExplainedImage(answer, maps, contrast_map, decoded, box_here, decomposition, directions)


def _rounded(heat: F32) -> list[list[float]]:
    return np.round(heat.astype(np.float64), 6).tolist()  # type: ignore[no-any-return]


# -- the overlay picture -----------------------------------------------------------------------------------
POSITIVE = np.array([215, 40, 40], dtype=np.float32)  # raises the phrase's share
NEGATIVE = np.array([40, 100, 215], dtype=np.float32)  # lowers it


def render_overlay(picture: "Image.Image", heat: F32, box: tuple[float, float, float, float], title: str = "",
                   unit: str = "logit") -> "Image.Image":
    """The map over the picture (shown in light grey): red where a cell raises the phrase's share, blue
    where it lowers it, stronger the more; outside the model's input the picture is dimmed; the
    strongest cell ringed; below, the title and a colour scale in logits."""
    from PIL import Image, ImageDraw, ImageFont

    w, h = picture.size
    s = max(384, min(768, max(w, h))) / max(w, h)
    dw, dh = max(1, round(w * s)), max(1, round(h * s))
    # the picture in light grey, so the map's colours read whatever the picture's own
    grey = np.asarray(picture.convert("L").resize((dw, dh), Image.Resampling.BICUBIC), dtype=np.float32)
    base = np.repeat((0.55 * grey + 0.45 * 235)[..., None], 3, axis=2)
    bx0, by0, bx1, by1 = (v * s for v in box)
    inside = np.zeros((dh, dw), dtype=bool)
    ix0, iy0, ix1, iy1 = max(0, round(bx0)), max(0, round(by0)), min(dw, round(bx1)), min(dh, round(by1))
    inside[iy0:iy1, ix0:ix1] = True
    out = np.where(inside[..., None], base, base * 0.45 + 255 * 0.1)
    vmax = float(np.abs(heat).max()) or 1.0
    bw, bh = max(1, round(bx1 - bx0)), max(1, round(by1 - by0))
    field_ = np.asarray(Image.fromarray((heat / vmax).astype(np.float32), "F").resize((bw, bh), Image.Resampling.BILINEAR))
    # place the box's field on the display, clipped to the picture
    value = np.zeros((dh, dw), dtype=np.float32)
    ox, oy = round(bx0), round(by0)
    sx0, sy0 = ix0 - ox, iy0 - oy
    value[iy0:iy1, ix0:ix1] = field_[sy0 : sy0 + (iy1 - iy0), sx0 : sx0 + (ix1 - ix0)]
    alpha = (0.78 * np.clip(np.abs(value), 0, 1))[..., None]
    colour = np.where(value[..., None] >= 0, POSITIVE, NEGATIVE)
    out = out * (1 - alpha) + colour * alpha
    cw = max(dw, 384)
    px = (cw - dw) // 2  # a narrow picture is centred above the scale
    canvas = Image.new("RGB", (cw, dh + 64), (255, 255, 255))
    canvas.paste(Image.fromarray(np.clip(out, 0, 255).astype(np.uint8), "RGB"), (px, 0))
    draw = ImageDraw.Draw(canvas)
    rows, cols = heat.shape
    r, c = np.unravel_index(int(np.argmax(heat)), heat.shape)
    cx, cy = px + bx0 + (c + 0.5) * (bx1 - bx0) / cols, by0 + (r + 0.5) * (by1 - by0) / rows
    rad = max(4.0, 0.5 * min((bx1 - bx0) / cols, (by1 - by0) / rows))
    draw.ellipse((cx - rad, cy - rad, cx + rad, cy + rad), outline=(0, 0, 0), width=4)
    draw.ellipse((cx - rad, cy - rad, cx + rad, cy + rad), outline=(255, 255, 255), width=2)
    font = ImageFont.load_default(size=14)
    draw.text((8, dh + 6), _fit(draw, title, font, cw - 16), fill=(20, 20, 20), font=font)
    bar_x0, bar_x1, bar_y = 8, 8 + 240, dh + 30
    ramp = np.linspace(-1, 1, bar_x1 - bar_x0, dtype=np.float32)
    a = (0.78 * np.abs(ramp))[:, None]
    strip = (255 * (1 - a) + np.where(ramp[:, None] >= 0, POSITIVE, NEGATIVE) * a).astype(np.uint8)
    canvas.paste(Image.fromarray(np.repeat(strip[None], 12, axis=0), "RGB"), (bar_x0, bar_y))
    draw.rectangle((bar_x0, bar_y, bar_x1 - 1, bar_y + 11), outline=(120, 120, 120))
    small = ImageFont.load_default(size=12)
    draw.text((bar_x0, bar_y + 14), f"-{vmax:.3g}", fill=(60, 60, 60), font=small)
    draw.text(((bar_x0 + bar_x1) // 2 - 3, bar_y + 14), "0", fill=(60, 60, 60), font=small)
    high = f"+{vmax:.3g}"
    draw.text((bar_x1 - draw.textlength(high, font=small), bar_y + 14), high, fill=(60, 60, 60), font=small)
    draw.text((bar_x1 + 10, bar_y - 1), f"{unit} per cell", fill=(60, 60, 60), font=small)
    return canvas


def _fit(draw: Any, text: str, font: Any, width: float) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"
