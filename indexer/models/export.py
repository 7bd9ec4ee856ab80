"""Exporting a model's two towers to ONNX, for the ONNX Runtime backend (`onnx_model`); the export's
format is `manifest`'s.

- The image tower takes `pixels` float32 (N, 3, S, S) and gives the un-normalised image features
  (N, D); N is dynamic.
- The text tower takes `tokens` int64 (N, L) and gives the un-normalised text features (N, D). For
  towers that trim (causal mask, pooled at the end token: `torch_model.supports_trimming`), L is
  dynamic from 2 to the context length, with the positional embedding and the causal mask cut to
  L (`torch_model.encode_text_trimmed`, which the torch backend runs too); other towers take the full
  context.

An export is built in a temporary sibling directory and renamed into place, under a file lock, so
that two processes (two gunicorn workers) never export the same model at once: the second waits
and then finds it done. Before the rename, both towers are run in torch and in ONNX Runtime on a
few synthetic pictures and phrases of several token lengths (`parity`, through `OnnxModel`, the
class that serves the export); the differences are recorded in the manifest, and an export whose
embeddings differ by more than `PARITY_LIMIT` is refused (NotExportable, nothing left behind).

Importing this module is cheap: torch, open_clip and onnx load only inside `export_model`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from .. import __version__
from ..atomic import fsync_path
from ..errors import NotExportable
from .manifest import FORMAT_VERSION, IMAGE_FILE, MANIFEST_FILE, TEXT_FILE, Manifest, Parity, TextTower, read_manifest
from .parity import measure_parity

if TYPE_CHECKING:  # pragma: no cover
    from .torch_model import LoadedModel

log = logging.getLogger(__name__)

OPSET = 18
PARITY_LIMIT = 1e-4  # largest difference of a normalised embedding, torch against ONNX Runtime
IMAGE_INPUT, TEXT_INPUT, OUTPUT = "pixels", "tokens", "features"
MIN_TOKENS = 2  # start and end token: the shortest phrase

ExportProgress = Callable[[str], None]


# -- one export at a time --------------------------------------------------------------------------
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
    from .hf_tokenizer import tokenizer_for, write_tokenizer
    from .preprocess import ImageTransform

    started = time.perf_counter()
    spec, model = loaded.spec, loaded.model
    for tower in ("encode_image", "encode_text"):
        if not callable(getattr(model, tower, None)):
            raise NotExportable(f"{spec.name}: the model has no {tower} (not an open_clip CLIP model)")
    tokenizer = tokenizer_for(loaded.tokenizer)  # CLIP BPE or a tokenizer.json; NotExportable for others
    transform = ImageTransform.from_open_clip(model)  # NotExportable for what it cannot reproduce
    if transform.size != loaded.image_size:
        raise NotExportable(f"{spec.name}: preprocessing makes {transform.size}-pixel pictures, the model takes {loaded.image_size}")
    trims = bool(loaded.trims_context)
    context = int(tokenizer.context_length)

    say(f"{spec.name}: exporting the image tower to ONNX")
    _export_tower(loaded, "image", out / IMAGE_FILE, trims, context)
    say(f"{spec.name}: exporting the text tower to ONNX ({'2 to ' if trims else 'always '}{context} tokens)")
    _export_tower(loaded, "text", out / TEXT_FILE, trims, context)
    bpe_name = write_tokenizer(tokenizer, out)  # role "bpe": the tokenizer's file, whatever its kind

    files = {"image": IMAGE_FILE, "text": TEXT_FILE, "bpe": bpe_name}
    manifest = Manifest(
        format=FORMAT_VERSION,
        model_key=key,
        model_name=spec.name,
        arch=spec.arch,
        opset=OPSET,
        versions=_versions(),
        logit_scale=float(loaded.logit_scale),
        logit_bias=loaded.logit_bias,
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
    worst = max(parity.image_embedding, parity.text_embedding, parity.sigmoid or 0.0)
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

    from .torch_model import encode_text_trimmed, hf_pad_id

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
            if trims and hf_pad_id(self.clip) is None:
                return encode_text_trimmed(self.clip, x)
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
    from .torch_model import token_lengths

    return token_lengths(loaded.model, tokens)


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


__all__ = ["OPSET", "PARITY_LIMIT", "export_model"]
