"""The ONNX export's format: where an export lives, what its `manifest.json` says, and how a complete
export is recognised. Read by the runtime (`onnx_model`) and written by the exporter (`export`);
needs neither torch nor ONNX Runtime.

An export is a directory under `<home>/onnx/` named from the model's key: `image.onnx` and
`text.onnx` (each with its weights beside it in `<name>.data`: always external data, so models
past protobuf's 2 GB limit, ViT-H and ViT-bigG, take the same path as the toy model the tests
export), the tokenizer's BPE file, and `manifest.json` (`Manifest`), written last.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
IMAGE_FILE = "image.onnx"
TEXT_FILE = "text.onnx"


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
    sigmoid: float | None = None  # a sigmoid model's σ(logit_scale · cosine + logit_bias), torch's own against ours
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
    logit_bias: float | None = None  # a sigmoid-trained model's (SigLIP's) learned bias; None for softmax CLIP
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


def export_dir(home: Path, model_key: str) -> Path:
    """`<home>/onnx/<readable name>-<hash>`: the key made safe for a file name (and cut short), and
    12 hex digits of its sha256 so that keys which read alike stay apart."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", model_key).strip("._-")[:64] or "model"
    digest = hashlib.sha256(model_key.encode("utf-8")).hexdigest()[:12]
    return Path(home) / "onnx" / f"{safe}-{digest}"


__all__ = ["FORMAT_VERSION", "IMAGE_FILE", "MANIFEST_FILE", "TEXT_FILE", "Manifest", "Parity", "TextTower", "export_dir",
           "read_manifest"]
