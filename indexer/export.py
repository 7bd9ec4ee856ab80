"""Exporting a model's two towers to ONNX, for the ONNX Runtime backend (`onnx_model`).

An export is a directory under `<home>/onnx/` named from the model's key: `image.onnx` and
`text.onnx` (each with its weights beside it in `<name>.data`: always external data, so models
past protobuf's 2 GB limit, ViT-H and ViT-bigG, take the same path as the toy model the tests
export), the tokenizer's BPE file, and `manifest.json` (`Manifest`), written last.

- The image tower takes `pixels` float32 (N, 3, S, S) and gives the un-normalised image features
  (N, D); N is dynamic.
- The text tower takes `tokens` int64 (N, L) and gives the un-normalised text features (N, D). For
  towers that trim (causal mask, pooled at the end token: `models._supports_trimming`), L is
  dynamic from 2 to the context length, with the positional embedding and the causal mask cut to
  L (`models._encode_text_trimmed`, which the torch backend runs too); other towers take the full
  context.

An export is built in a temporary sibling directory and renamed into place, under a file lock, so
that two processes (two gunicorn workers) never export the same model at once: the second waits
and then finds it done. Before the rename, both towers are run in torch and in ONNX Runtime on a
few synthetic pictures and phrases of several token lengths (through `OnnxModel`, the class that
serves the export); the differences are recorded in the manifest, and an export whose embeddings
differ by more than `PARITY_LIMIT` is refused (NotExportable, nothing left behind).

Importing this module is cheap: torch, open_clip and onnx load only inside `export_model`. Reading
a manifest needs neither.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, ValidationError

from . import __version__
from .errors import NotExportable
from .index_files import fsync_path

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from .models import LoadedModel
    from .onnx_model import OnnxModel

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
OPSET = 18
PARITY_LIMIT = 1e-4  # largest difference of a normalised embedding, torch against ONNX Runtime
MANIFEST_FILE = "manifest.json"
IMAGE_FILE = "image.onnx"
TEXT_FILE = "text.onnx"
IMAGE_INPUT, TEXT_INPUT, OUTPUT = "pixels", "tokens", "features"
MIN_TOKENS = 2  # start and end token: the shortest phrase

ExportProgress = Callable[[str], None]


# -- the manifest ----------------------------------------------------------------------------------
class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", protected_namespaces=())


class TextTower(_Record):
    trims: bool  # dynamic token length (2 .. context_length); else always the full context
    context_length: int


class Parity(_Record):
    """Largest absolute differences, torch (LoadedModel) against ONNX Runtime (OnnxModel), measured
    at export on `images` synthetic pictures and `phrases` phrases of `token_lengths` tokens."""

    image_embedding: float  # normalised image embeddings, picture → each backend's own preprocessing
    text_embedding: float  # normalised text embeddings, batched and trimmed as each backend serves
    probability: float  # softmax(logit_scale · cosine) of each picture over the phrases
    pixels: float  # open_clip's preprocessing against ImageTransform
    images: int
    phrases: int
    token_lengths: list[int]


class Manifest(_Record):
    format: int
    model_key: str
    model_name: str
    arch: str
    opset: int
    versions: dict[str, str]
    logit_scale: float
    image_size: int
    dim: int
    transform: dict[str, Any]  # ImageTransform.to_json()
    tokenizer: dict[str, Any]  # BpeTokenizer.to_json()
    text: TextTower
    parity: Parity
    files: dict[str, str]  # role ("image", "text", "bpe") → file name
    sizes: dict[str, int]  # every file of the export but the manifest → bytes
    created: str  # UTC, ISO 8601
    export_seconds: float

    def json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def summary(self) -> str:
        """One line: what was exported, and how close ONNX Runtime is to torch."""
        size = sum(self.sizes.values()) / 1e6
        p = self.parity
        return (f"{self.arch}, opset {self.opset}, {size:.1f} MB, exported in {self.export_seconds:.1f} s on "
                f"{self.created[:10]}; largest difference from open_clip: image embedding {p.image_embedding:.1e}, "
                f"text embedding {p.text_embedding:.1e}, probability {p.probability:.1e}")


def read_manifest(directory: Path) -> Manifest | None:
    """The manifest of a complete export in `directory`, or None when there is none: missing,
    unreadable, of another format version, or naming a file that is missing or of another size.
    None means: export again."""
    try:
        manifest = Manifest.model_validate_json((directory / MANIFEST_FILE).read_bytes())
    except (OSError, ValidationError, ValueError) as exc:
        if not isinstance(exc, FileNotFoundError):
            log.warning("ONNX export %s has an unreadable manifest (%s); it will be exported again", directory, exc)
        return None
    if manifest.format != FORMAT_VERSION:
        log.info("ONNX export %s is of format %s, not %s; it will be exported again", directory, manifest.format, FORMAT_VERSION)
        return None
    for role in ("image", "text", "bpe"):
        if role not in manifest.files or manifest.files[role] not in manifest.sizes:
            log.warning("ONNX export %s: the manifest names no %s file; it will be exported again", directory, role)
            return None
    for name, size in manifest.sizes.items():
        path = directory / name
        if Path(name).name != name or not path.is_file() or path.stat().st_size != size:
            log.warning("ONNX export %s: %s is missing or of another size; it will be exported again", directory, name)
            return None
    return manifest


# -- where exports live ----------------------------------------------------------------------------
def export_dir(home: Path, model_key: str) -> Path:
    """`<home>/onnx/<readable name>-<hash>`: the key made safe for a file name (and cut short), and
    12 hex digits of its sha256 so that keys which read alike stay apart."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", model_key).strip("._-")[:64] or "model"
    digest = hashlib.sha256(model_key.encode("utf-8")).hexdigest()[:12]
    return Path(home) / "onnx" / f"{safe}-{digest}"


def _lock_path(directory: Path) -> Path:
    return directory.parent / f".{directory.name}.lock"


def _temp_prefixes(directory: Path) -> tuple[str, str]:
    return f".{directory.name}.tmp-", f".{directory.name}.old-"


@contextlib.contextmanager
def _export_lock(directory: Path) -> Iterator[None]:
    """An exclusive fcntl lock on a file beside the export (kept: removing a lock file races)."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(_lock_path(directory), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _remove_leftovers(directory: Path) -> None:
    """Temporary directories of exports that died (we hold the lock: none is in progress)."""
    for prefix in _temp_prefixes(directory):
        for path in directory.parent.glob(prefix + "*"):
            log.info("removing the leftover of an interrupted ONNX export: %s", path)
            shutil.rmtree(path, ignore_errors=True)


# -- exporting -------------------------------------------------------------------------------------
def export_model(loaded: "LoadedModel", directory: Path, progress: ExportProgress | None = None,
                 force: bool = False) -> Manifest:
    """Export `loaded` into `directory` (see the module's docstring) and return its manifest; if
    another process exported it meanwhile, return that export's manifest (with `force`, export again
    and replace it).

    Raises NotExportable for a model that ONNX Runtime cannot serve exactly (a tokenizer or a
    preprocessing that cannot be reproduced without torch, a tower that fails to export, embeddings
    that differ by more than PARITY_LIMIT); nothing is left behind then.
    """
    directory = Path(directory)
    say = progress or (lambda message: None)
    key = loaded.spec.key()
    with _export_lock(directory):
        _remove_leftovers(directory)
        existing = read_manifest(directory)
        if existing is not None and existing.model_key == key and not force:
            say(f"{loaded.spec.name}: already exported to {directory}")
            return existing
        tmp_prefix, old_prefix = _temp_prefixes(directory)
        tmp = directory.parent / f"{tmp_prefix}{os.getpid()}-{secrets.token_hex(4)}"
        tmp.mkdir()
        try:
            manifest = _export_into(loaded, tmp, key, say)
            for path in tmp.iterdir():
                fsync_path(path)
            fsync_path(tmp)
            if directory.exists():  # an incomplete or outdated export: set it aside, then drop it
                old = directory.parent / f"{old_prefix}{os.getpid()}-{secrets.token_hex(4)}"
                directory.rename(old)
                shutil.rmtree(old, ignore_errors=True)
            tmp.rename(directory)
            fsync_path(directory.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    say(f"{loaded.spec.name}: exported to {directory} in {manifest.export_seconds:.1f} s")
    return manifest


def _export_into(loaded: "LoadedModel", out: Path, key: str, say: ExportProgress) -> Manifest:
    from .preprocess import ImageTransform
    from .tokenizer import BpeTokenizer

    started = time.perf_counter()
    spec, model = loaded.spec, loaded.model
    for tower in ("encode_image", "encode_text"):
        if not callable(getattr(model, tower, None)):
            raise NotExportable(f"{spec.name}: the model has no {tower} (not an open_clip CLIP model)")
    tokenizer = BpeTokenizer.from_open_clip(loaded.tokenizer)  # NotExportable for HF tokenizers etc.
    transform = ImageTransform.from_open_clip(model)  # NotExportable for what it cannot reproduce
    if transform.size != loaded.image_size:
        raise NotExportable(f"{spec.name}: preprocessing makes {transform.size}-pixel pictures, the model takes {loaded.image_size}")
    trims = bool(loaded.trims_context)
    context = int(tokenizer.context_length)

    say(f"{spec.name}: exporting the image tower to ONNX")
    _export_tower(loaded, "image", out / IMAGE_FILE, trims, context)
    say(f"{spec.name}: exporting the text tower to ONNX ({'2 to ' if trims else 'always '}{context} tokens)")
    _export_tower(loaded, "text", out / TEXT_FILE, trims, context)
    bpe_name = tokenizer.bpe_path.name
    shutil.copyfile(tokenizer.bpe_path, out / bpe_name)

    files = {"image": IMAGE_FILE, "text": TEXT_FILE, "bpe": bpe_name}
    manifest = Manifest(
        format=FORMAT_VERSION,
        model_key=key,
        model_name=spec.name,
        arch=spec.arch,
        opset=OPSET,
        versions=_versions(),
        logit_scale=float(loaded.logit_scale),
        image_size=int(loaded.image_size),
        dim=int(loaded.dim),
        transform=transform.to_json(),
        tokenizer=tokenizer.to_json(),
        text=TextTower(trims=trims, context_length=context),
        parity=Parity(image_embedding=0, text_embedding=0, probability=0, pixels=0, images=0, phrases=0, token_lengths=[]),
        files=files,
        sizes={p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.is_file()},
        created="",
        export_seconds=0.0,
    )
    say(f"{spec.name}: comparing ONNX Runtime with torch")
    parity = measure_parity(loaded, out, manifest)
    worst = max(parity.image_embedding, parity.text_embedding)
    if not worst <= PARITY_LIMIT:  # also catches NaN
        raise NotExportable(
            f"{spec.name}: ONNX Runtime's embeddings differ from torch's by {worst:.2g} (image {parity.image_embedding:.2g}, "
            f"text {parity.text_embedding:.2g}), more than {PARITY_LIMIT:g}; torch must serve this model"
        )
    manifest = manifest.model_copy(update={
        "parity": parity,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "export_seconds": round(time.perf_counter() - started, 3),
    })
    (out / MANIFEST_FILE).write_text(json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8")
    return manifest


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import open_clip
    import torch

    return {
        "torch": str(torch.__version__),
        "open_clip": str(open_clip.__version__),
        "onnx": str(onnx.__version__),
        "onnxruntime": str(onnxruntime.__version__),
        "clip_gaze": __version__,
    }


def _export_tower(loaded: "LoadedModel", tower: str, path: Path, trims: bool, context: int) -> None:
    """One tower to ONNX with torch's dynamo exporter (the legacy TorchScript exporter bakes the
    token length into nn.MultiheadAttention's reshapes), weights as external data."""
    import torch

    from .models import _encode_text_trimmed

    model = loaded.model
    device = next(model.parameters()).device
    batch = torch.export.Dim("batch", min=1)

    class Tower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.clip = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if tower == "image":
                return self.clip.encode_image(x)
            if trims:
                return _encode_text_trimmed(self.clip, x)
            return self.clip.encode_text(x)

    if tower == "image":
        size = loaded.image_size
        example: torch.Tensor = torch.zeros((2, 3, size, size), dtype=torch.float32, device=device)
        names, shapes = [IMAGE_INPUT], {"x": {0: batch}}
    else:
        example = loaded.tokenize(["a photo of a cat", "a dog"]).to(device)
        if trims:
            example = example[:, : int(_lengths_torch(loaded, example).max())]
            length = torch.export.Dim("length", min=MIN_TOKENS, max=context)
            shapes = {"x": {0: batch, 1: length}}
        else:
            shapes = {"x": {0: batch}}
        names = [TEXT_INPUT]
    fastpath = torch.backends.mha.get_fastpath_enabled()
    try:
        # The exporters warn a lot (deprecations, tracer notes) and log on the root logger; the
        # parity check below is what tells whether the export is right.
        with warnings.catch_warnings(), _quiet_loggers(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.backends.mha.set_fastpath_enabled(False)  # its fused kernel has no ONNX translation
            program = torch.onnx.export(
                Tower().eval(), (example,), None, input_names=names, output_names=[OUTPUT], opset_version=OPSET,
                dynamo=True, dynamic_shapes=shapes, external_data=True, verbose=False,
            )
            if program is None:  # pragma: no cover - the dynamo exporter always returns one
                raise RuntimeError("torch.onnx.export returned no program")
            program.save(str(path), external_data=True)
    except NotExportable:
        raise
    except Exception as exc:
        raise NotExportable(f"{loaded.spec.name}: the {tower} tower could not be exported to ONNX: {type(exc).__name__}: {exc}") from exc
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def _lengths_torch(loaded: "LoadedModel", tokens: Any) -> Any:
    from .models import _token_lengths

    return _token_lengths(loaded.model, tokens)


@contextlib.contextmanager
def _quiet_loggers() -> Iterator[None]:
    names = ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx", "onnxscript")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


# -- parity ----------------------------------------------------------------------------------------
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
    return Parity(
        image_embedding=image_diff, text_embedding=text_diff, probability=prob_diff, pixels=pixels,
        images=len(pictures), phrases=len(phrases), token_lengths=sorted(set(lengths)),
    )


def probabilities(images: npt.NDArray[np.float32], texts: npt.NDArray[np.float32], logit_scale: float) -> npt.NDArray[np.float64]:
    """Each picture's softmax(logit_scale · cosine) over the phrases (rows: pictures)."""
    logits = logit_scale * (images.astype(np.float64) @ texts.astype(np.float64).T)
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def _max_diff(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> float:
    if a.shape != b.shape:
        return float("inf")
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()) if a.size else 0.0

