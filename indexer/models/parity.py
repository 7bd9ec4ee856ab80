"""Is the ONNX export the model? Both runtimes, torch (`LoadedModel`) and ONNX Runtime (`OnnxModel`),
on the same synthetic pictures and phrases of several token lengths: the tokenizers must agree token
for token, then the largest differences of the pixels, the normalised embeddings and the
probabilities (a sigmoid model's sigmoids too) are measured (recorded in the export's manifest; `export` refuses an export that
differs by more than its limit). Apart from both runtimes and from the exporter, which calls it.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import numpy.typing as npt

from ..errors import NotExportable
from .manifest import Manifest, Parity

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from .onnx_model import OnnxModel
    from .torch_model import LoadedModel


PARITY_PHRASES = (
    "a",
    "a red circle",
    "a red circle on a dark background",
    "Café au lait — an oil painting, 1890s (after Degas), in the style of the Impressionists",
    (
        "a detailed photograph of an old stone bridge over a quiet river at dusk, with trees on both banks, "
        "a small boat, a church tower in the distance and warm light in the windows of the houses"
    ),
    " ".join(["many words"] * 60),  # past the context: cut to its full length
)


def parity_pictures() -> list["Image.Image"]:
    """Deterministic synthetic pictures: a smooth gradient, seeded noise smaller than any input
    size (upscaled), and a portrait picture with hard edges (cropped)."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(1234)
    y, x = np.mgrid[0:240, 0:320].astype(np.float32)
    gradient = np.stack([x / 320 * 255, y / 240 * 255, (x + y) / 560 * 255], axis=-1)
    noise = rng.integers(0, 256, size=(37, 53, 3))
    portrait = Image.new("RGB", (180, 300), (20, 30, 60))
    draw = ImageDraw.Draw(portrait)
    draw.ellipse((30, 60, 150, 180), fill=(230, 40, 40))
    draw.rectangle((60, 200, 120, 280), fill=(250, 250, 90))
    return [
        Image.fromarray(gradient.astype(np.uint8), "RGB"),
        Image.fromarray(noise.astype(np.uint8), "RGB"),
        portrait,
    ]


def measure_parity(loaded: "LoadedModel", directory: Path, manifest: Manifest) -> Parity:
    """Torch (`loaded`) against ONNX Runtime (an OnnxModel on `directory`, CPU) on the parity
    pictures and phrases: the tokenizers must agree exactly, then the largest differences of
    the pixels, the normalised embeddings and the probabilities."""
    from .onnx_model import OnnxModel

    onnx = OnnxModel.from_manifest(directory, manifest, loaded.spec, device="cpu")
    phrases = list(PARITY_PHRASES)
    theirs = np.asarray(loaded.tokenize(phrases).cpu().numpy(), dtype=np.int64)
    ours = onnx.tokenize(phrases)
    if theirs.shape != ours.shape or not np.array_equal(theirs, ours):
        rows = [p for p, a, b in zip(phrases, theirs, ours) if not np.array_equal(a, b)]
        raise NotExportable(f"{loaded.spec.name}: the torch-free tokenizer disagrees with open_clip's on {rows[:3]!r}")
    lengths = [int(n) for n in onnx.tokenizer.lengths(ours)]

    pictures = parity_pictures()
    with _exact_torch():
        return _parity(loaded, onnx, phrases, lengths, pictures)


@contextlib.contextmanager
def _exact_torch() -> Iterator[None]:
    """No TF32 on CUDA while torch is compared (ONNX Runtime runs on the CPU here)."""
    import torch

    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _parity(
    loaded: "LoadedModel", onnx: "OnnxModel", phrases: list[str], lengths: list[int], pictures: list["Image.Image"]
) -> Parity:
    import torch

    pixels = max(
        float(np.abs(np.asarray(loaded.image_tensor(p).cpu().numpy(), dtype=np.float32) - onnx.image_array(p)).max())
        for p in pictures
    )
    with torch.inference_mode():
        torch_images = loaded.encode_images(pictures)
    onnx_images = onnx.encode_images(pictures)
    single = onnx.encode_image_arrays(onnx.image_array(pictures[0])[None])  # another batch size
    image_diff = max(_max_diff(torch_images, onnx_images), _max_diff(torch_images[:1], single))

    torch_texts = loaded.encode_texts(phrases, batch_size=2)
    onnx_texts = onnx.encode_texts(phrases, batch_size=2)  # several batches of several lengths
    text_diff = _max_diff(torch_texts, onnx_texts)
    mixed = onnx.encode_texts(phrases, batch_size=len(phrases))  # one batch mixing lengths
    text_diff = max(text_diff, _max_diff(torch_texts, mixed))
    if onnx.trims_context:
        full = onnx.encode_texts(phrases, batch_size=len(phrases), trim=False)
        text_diff = max(text_diff, _max_diff(torch_texts, full))

    scale = float(loaded.logit_scale)
    prob_diff = _max_diff(probabilities(torch_images, torch_texts, scale), probabilities(onnx_images, onnx_texts, scale))
    sig_diff = None
    if loaded.logit_bias is not None:  # torch's own sigmoid of the model's logits, against ONNX Runtime's numbers
        sig_diff = _max_diff(torch_sigmoids(loaded, torch_images, torch_texts),
                             _sigmoids(onnx_images @ onnx_texts.T, onnx.logit_scale, onnx.logit_bias or 0.0))
    return Parity(
        image_embedding=image_diff, text_embedding=text_diff, probability=prob_diff, sigmoid=sig_diff, pixels=pixels,
        images=len(pictures), phrases=len(phrases), token_lengths=sorted(set(lengths)),
    )


def probabilities(images: npt.NDArray[np.float32], texts: npt.NDArray[np.float32], logit_scale: float) -> npt.NDArray[np.float64]:
    """Each picture's softmax(logit_scale · cosine) over the phrases (rows: pictures)."""
    logits = logit_scale * (images.astype(np.float64) @ texts.astype(np.float64).T)
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def torch_sigmoids(loaded: "LoadedModel", images: npt.NDArray[np.float32], texts: npt.NDArray[np.float32]) -> npt.NDArray[Any]:
    """open_clip's own sigmoid: torch.sigmoid(logit_scale.exp() · image @ text.T + logit_bias)."""
    import torch

    model = loaded.model
    with torch.inference_mode():
        logits = model.logit_scale.exp().float().cpu() * torch.from_numpy(images) @ torch.from_numpy(texts).T
        return torch.sigmoid(logits + model.logit_bias.float().cpu()).numpy()  # type: ignore[no-any-return]


def _sigmoids(cos: npt.NDArray[np.float32], scale: float, bias: float) -> npt.NDArray[np.float64]:
    """σ(scale·cos + bias) as scoring.softmax.sigmoids serves it (models sit below scoring: not imported)."""
    z = (cos.astype(np.float32) * np.float32(scale) + np.float32(bias)).astype(np.float64)
    return np.asarray(np.exp(-np.logaddexp(0.0, -z)))


def _max_diff(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> float:
    if a.shape != b.shape:
        return float("inf")
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()) if a.size else 0.0


__all__ = ["PARITY_PHRASES", "measure_parity", "parity_pictures", "probabilities", "torch_sigmoids"]
