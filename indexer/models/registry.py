"""The model registry (data): presets, how a user names a model, and what clients are told about it.

A model is named by a preset (`vit-b-32`, `sd15`, `sd2`, `sdxl`, `toy`, the sigmoid models `siglip-b16`,
`siglip-so400m`, `siglip2-b16`, `toy-sigmoid`), by an open_clip
`ARCH:PRETRAINED` tag pair, or by `ARCH:/path/to/checkpoint`. Nothing here loads a model or imports
torch (`_config_image_size` imports open_clip only for an architecture it must look up).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..errors import InvalidInput
from ..schema import ModelInfo

TOY_DIR = Path(__file__).resolve().parents[1] / "toy"  # indexer/toy: data, beside the rooms
TOY_CONFIG = TOY_DIR / "clip-gaze-toy.json"
TOY_CHECKPOINT = TOY_DIR / "clip-gaze-toy.safetensors"
TOY_SIGMOID_CONFIG = TOY_DIR / "clip-gaze-toy-sigmoid.json"
TOY_SIGMOID_CHECKPOINT = TOY_DIR / "clip-gaze-toy-sigmoid.safetensors"
TOY_ML_DIR = TOY_DIR.parent / "toy_multilingual"  # its HF text tower's files in hf/, beside the config
TOY_ML_CONFIG = TOY_ML_DIR / "clip-gaze-toy-multilingual.json"
TOY_ML_CHECKPOINT = TOY_ML_DIR / "clip-gaze-toy-multilingual.safetensors"


@dataclass(frozen=True)
class Preset:
    name: str
    arch: str
    pretrained: str
    description: str
    config: str | None = None
    # the lists whose best phrases start `interrogate`'s prompt when no caption is given
    start_vocabularies: tuple[str, ...] = ("genres", "subjects", "scenes")


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("vit-b-32", "ViT-B-32", "openai", "OpenAI CLIP ViT-B/32, what clip-gaze 0.3.0 used (default)"),
        Preset("sd15", "ViT-L-14", "openai", "OpenAI CLIP ViT-L/14, the text encoder of Stable Diffusion 1.x"),
        Preset("sd2", "ViT-H-14", "laion2b_s32b_b79k", "OpenCLIP ViT-H/14 (LAION-2B), the text encoder of Stable Diffusion 2.x"),
        Preset("sdxl", "ViT-bigG-14", "laion2b_s39b_b160k", "OpenCLIP ViT-bigG/14 (LAION-2B), SDXL's second text encoder"),
        Preset(
            "toy",
            "clip-gaze-toy",
            str(TOY_CHECKPOINT),
            "clip-gaze's own tiny model of coloured shapes: a test instrument for offline tests and demos, not an art model",
            config=str(TOY_CONFIG),
            start_vocabularies=(),  # it knows shapes, colours and grounds: art lists would mislead it
        ),
        # Sigmoid models (a logit_bias): each phrase also gets σ(logit_scale·cos + logit_bias), its own match probability.
        Preset("siglip-b16", "ViT-B-16-SigLIP", "webli", "Google SigLIP ViT-B/16 (WebLI), trained with a sigmoid loss"),
        Preset("siglip-so400m", "ViT-SO400M-14-SigLIP-384", "webli", "Google SigLIP SO400M/14 at 384 px (WebLI), trained with a sigmoid loss"),
        Preset("siglip2-b16", "ViT-B-16-SigLIP2", "webli", "Google SigLIP 2 ViT-B/16 (WebLI), trained with a sigmoid loss"),
        Preset(
            "toy-sigmoid",
            "clip-gaze-toy-sigmoid",
            str(TOY_SIGMOID_CHECKPOINT),
            "clip-gaze's own tiny sigmoid-loss model of coloured shapes (a logit_bias, a text tower built like "
            "SigLIP's): a test instrument for offline tests and demos, not SigLIP and not an art model",
            config=str(TOY_SIGMOID_CONFIG),
        ),
        Preset("xlm-b32", "xlm-roberta-base-ViT-B-32", "laion5b_s13b_b90k", "OpenCLIP ViT-B/32 with an XLM-RoBERTa-base text tower (LAION-5B): reads about 100 languages"),
        Preset("xlm-h14", "xlm-roberta-large-ViT-H-14", "frozen_laion5b_s13b_b90k", "OpenCLIP ViT-H/14 with an XLM-RoBERTa-large text tower (LAION-5B): reads about 100 languages"),
        Preset("nllb-clip-base", "nllb-clip-base", "v1", "NLLB-CLIP base: the NLLB-200 encoder as text tower, 201 languages (a phrase's language is part of its input)"),
        Preset("nllb-clip-large", "nllb-clip-large", "v1", "NLLB-CLIP large: the NLLB-200 encoder as text tower, 201 languages (a phrase's language is part of its input)"),
        Preset(
            "toy-multilingual",
            "clip-gaze-toy-multilingual",
            str(TOY_ML_CHECKPOINT),
            "the toy's world read in English, Dutch, German and French by a tiny XLM-R-style text tower: a test instrument, not an art model",
            config=str(TOY_ML_CONFIG),
        ),
    )
}
DEFAULT_PRESET = "vit-b-32"


def list_presets() -> list[Preset]:
    return list(PRESETS.values())


def preset_info(preset: Preset, paths: bool = False) -> ModelInfo:
    """A preset as an answer. Clients of the API see file names, never server paths; the CLI
    (`models --json`, on the user's own machine) shows the paths."""
    show = (lambda p: p) if paths else (lambda p: Path(p).name)
    return ModelInfo(
        preset=preset.name, arch=preset.arch, description=preset.description,
        pretrained=show(preset.pretrained) if preset.config else preset.pretrained,
        config=show(preset.config) if preset.config else None,
    )


@dataclass(frozen=True)
class ModelSpec:
    """What to load. `pretrained` is an open_clip tag or a checkpoint file path."""

    arch: str
    pretrained: str
    preset: str | None = None
    config: str | None = None

    @property
    def is_file(self) -> bool:
        return _looks_like_path(self.pretrained)

    @property
    def name(self) -> str:
        """How a user names it: the preset, else ARCH:PRETRAINED."""
        return self.preset or f"{self.arch}:{self.pretrained}"

    def key(self) -> str:
        """Identifies the weights, for stored embeddings: a tag, or a fingerprint of the file."""
        if self.is_file:
            return f"{self.arch}:file-{file_fingerprint(Path(self.pretrained))}"
        return f"{self.arch}:{self.pretrained}"

    def info(self, logit_scale: float | None = None, logit_bias: float | None = None) -> ModelInfo:
        """What clients are told: a checkpoint's file name and fingerprint, never its path."""
        return ModelInfo(
            preset=self.preset,
            arch=self.arch,
            pretrained=Path(self.pretrained).name if self.is_file else self.pretrained,
            fingerprint=file_fingerprint(Path(self.pretrained)) if self.is_file else None,
            config=Path(self.config).name if self.config else None,
            logit_scale=logit_scale,
            logit_bias=logit_bias,
        )

    def image_size(self) -> int:
        """The model's input size, from its config: no weights are loaded."""
        return _config_image_size(self.arch, self.config)


def local_text_cfg(config: str | None) -> dict[str, object] | None:
    """A project config's Hugging Face text tower that lives in a folder beside it (`hf_model_name`
    naming that folder): its text_cfg with the folder's absolute path, built from its config.json,
    never downloaded. None for every other model."""
    if not config:
        return None
    text_cfg = dict(json.loads(Path(config).read_text(encoding="utf-8")).get("text_cfg", {}))
    name = text_cfg.get("hf_model_name")
    folder = Path(config).parent / str(name) if isinstance(name, str) else None
    if folder is None or Path(str(name)).name != name or not folder.is_dir():
        return None
    text_cfg.update(hf_model_name=str(folder), hf_tokenizer_name=str(folder), hf_model_pretrained=False)
    return text_cfg


def _looks_like_path(value: str) -> bool:
    return value.startswith(("/", "./", "../", "~")) or os.sep in value or bool(
        re.search(r"\.(pt|pth|bin|safetensors|npz)$", value)
    )


def parse_model(name: str | None) -> ModelSpec:
    """A preset name, `ARCH:PRETRAINED` or `ARCH:/path/to/checkpoint` → ModelSpec.

    Raises InvalidInput for an unknown name or a checkpoint file that does not exist.
    """
    name = (name or DEFAULT_PRESET).strip()
    preset = PRESETS.get(name.lower())
    if preset is not None:
        return ModelSpec(preset.arch, preset.pretrained, preset.name, preset.config)
    if ":" in name:
        arch, pretrained = (p.strip() for p in name.split(":", 1))
        if arch and pretrained:
            if _looks_like_path(pretrained):
                path = Path(pretrained).expanduser()
                if not path.is_file():
                    raise InvalidInput(f"checkpoint file not found: {path}", code="unknown_model")
                pretrained = str(path.resolve())
            config = next((p.config for p in PRESETS.values() if p.config and p.arch == arch), None)
            return ModelSpec(arch, pretrained, None, config)
    raise InvalidInput(
        f"unknown model {name!r}: use a preset ({', '.join(PRESETS)}), an open_clip ARCH:PRETRAINED pair "
        "such as ViT-B-32:laion2b_s34b_b79k, or ARCH:/path/to/checkpoint",
        code="unknown_model",
    )


def public_model_name(name: str) -> str:
    """A model name as clients may see it: `ARCH:/a/path/file.bin` becomes `ARCH:file.bin`."""
    arch, sep, pretrained = name.partition(":")
    if sep and _looks_like_path(pretrained.strip()):
        return f"{arch}:{Path(pretrained.strip()).name}"
    return name


def file_fingerprint(path: Path, chunk: int = 4 << 20) -> str:
    """sha256 of the size, the first and the last 4 MiB: cheap even for multi-GB checkpoints, and
    computed once per version of the file (every answer names it: 6 ms a request otherwise)."""
    st = Path(path).stat()
    return _fingerprint(str(Path(path).resolve()), st.st_size, st.st_mtime_ns, chunk)


@lru_cache(maxsize=64)
def _fingerprint(path: str, size: int, mtime_ns: int, chunk: int) -> str:
    h = hashlib.sha256()
    h.update(str(size).encode())
    with open(path, "rb") as fh:
        h.update(fh.read(chunk))
        if size > 2 * chunk:
            fh.seek(-chunk, os.SEEK_END)
            h.update(fh.read(chunk))
    return h.hexdigest()[:16]


def _open_clip_config_file(arch: str) -> Path | None:
    """open_clip's own config file of `arch`, found without importing open_clip (which imports torch:
    ONNX Runtime serves without it)."""
    import importlib.util

    spec = importlib.util.find_spec("open_clip")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder) / "model_configs" / f"{arch}.json"
        if path.is_file():
            return path
    return None


@lru_cache(maxsize=16)
def _config_image_size(arch: str, config: str | None) -> int:
    shipped = _open_clip_config_file(arch)
    if config or shipped is not None:
        cfg = json.loads(Path(config or shipped).read_text(encoding="utf-8"))  # type: ignore[arg-type]
    else:
        import open_clip

        cfg = open_clip.get_model_config(arch) or {}
    size = cfg.get("vision_cfg", {}).get("image_size", 224)
    return int(size[0] if isinstance(size, (tuple, list)) else size)
