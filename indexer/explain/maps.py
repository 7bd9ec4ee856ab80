"""Maps for lists of phrases (`explain_image`): for each of the top matches of each list, where in the
picture CLIP sees it, from one decomposition of the picture (`decompose`).

What a map means. For an image embedding ê (normalised), a list of phrases t_j and the model's
logit scale s, each phrase has a logit l_i = s ê·t_i and a share p_i = softmax(l)_i of its list. The
share moves with l_i − Σ_j p_j l_j (the logit minus the list's probability-weighted mean logit); the
map of phrase i splits exactly that number over the patch grid:

    l_i − Σ_j p_j l_j  =  Σ_cells map_i[cell]  +  unmapped_i

`unmapped` is what no patch carries (the class token's own path, the blocks before those decomposed,
biases). A contrast "A rather than B" splits l_A − l_B the same way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import numpy.typing as npt

from ..errors import InvalidInput
from ..schema.explain import ADHOC, Contrast, ExplainedMatch, ExplainedResult, Explanation, Grid, Point
from ..scoring.kernels import cosines
from ..scoring.softmax import scores_from_cosines, sigmoids
from .decompose import Decomposition, Explainer
from .geometry import input_box
from .overlay import render_overlay

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from ..engine import Engine
    from ..pictures.decode import DecodedImage
    from ..pictures.reader import ImageSource

F32 = npt.NDArray[np.float32]


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

    answer: Explanation
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
    t0 = time.perf_counter()
    decoded = engine.read(image, name)
    t_decode = decoded.decode_ms or (time.perf_counter() - t0) * 1000
    names = engine.resolve(vocabularies) if (vocabularies or phrases is None) else []
    if phrases is not None and ADHOC in names:
        raise InvalidInput(f"a vocabulary named {ADHOC!r} cannot be explained beside ad-hoc phrases (their results key)")
    model = engine.torch_model  # the decomposition needs open_clip's own tower, whatever serves analyses
    explainer = Explainer(model.model)  # refuses other towers before any work

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
        sig = sigmoids(s.cosines, scale, model.logit_bias)
        for k, row in enumerate(lst.rows(engine, s.indices)):
            matches.append(ExplainedMatch(
                phrase=row["phrase"], term=row["term"], probability=float(s.probabilities[k]), cosine=float(s.cosines[k]),
                logit=float(s.logits[k]), sigmoid=None if sig is None else float(sig[k]), external_id=row["external_id"], metadata=row["metadata"],
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


__all__ = ["ExplainedImage", "explain_image"]
