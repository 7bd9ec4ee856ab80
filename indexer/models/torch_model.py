"""The torch runtime: open_clip's own model (named in `registry`), loaded through the Hugging Face
cache or from a checkpoint file, with fast, exact encoders (a `ClipModel`, see `protocol`).

Importing this module is cheap; torch and open_clip load only when a model does.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np
import numpy.typing as npt

from ..errors import InvalidInput, ModelUnavailable
from .batching import length_batches
from .nllb import PhraseLanguageTokenizer, sets_language
from .protocol import ProgressFn
from .registry import ModelSpec, local_text_cfg

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from PIL import Image


def pick_device(requested: str = "auto") -> str:
    import torch

    if requested in ("", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ModelUnavailable("CLIP_GAZE_DEVICE asks for CUDA, but torch finds no CUDA device", code="no_device")
    return requested



class LoadedModel:
    """An open_clip model with its preprocessing and tokenizer, and batched, exact encoders: a
    `ClipModel`, as ONNX Runtime's `onnx_model.OnnxModel` is."""

    backend = "torch"

    def __init__(self, spec: ModelSpec, model: Any, preprocess: Any, tokenizer: Any, device: str):
        import torch

        self.spec = spec
        self.model = model
        self.preprocess = preprocess
        # NLLB: each phrase read in its own language, without mutating a tokenizer the threads share (`nllb`)
        self.tokenizer: Any = PhraseLanguageTokenizer(tokenizer) if sets_language(tokenizer) else tokenizer
        self.device = device
        self.logit_scale = float(model.logit_scale.exp().item())
        bias = getattr(model, "logit_bias", None)
        self.logit_bias = None if bias is None else float(bias.item())
        self.image_size = _image_size(model)
        with torch.inference_mode():
            probe = self.encode_texts(["a"], batch_size=1)
        self.dim = int(probe.shape[1])
        self.trims_context = supports_trimming(model)
        self.providers = [str(device)]

    # -- images ---------------------------------------------------------------------------------
    def image_tensor(self, image: "Image.Image") -> "torch.Tensor":
        """The model's own preprocessing (decoding has already box-reduced a large picture to at
        least twice the input size: measured in bench/, cosine ≥ 0.999 with the full-resolution path)."""
        return self.preprocess(image)

    def image_array(self, image: "Image.Image") -> npt.NDArray[np.float32]:
        """The preprocessed picture as a (3, size, size) float32 array."""
        return self.image_tensor(image).numpy()  # type: ignore[no-any-return]

    def encode_image_arrays(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Normalised embeddings of preprocessed pictures (n, 3, size, size)."""
        import torch

        return self.encode_image_tensors(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)))

    def encode_image_tensors(self, batch: "torch.Tensor") -> npt.NDArray[np.float32]:
        import torch

        with torch.inference_mode():
            feats = self.model.encode_image(batch.to(self.device))
            feats = torch.nn.functional.normalize(feats.float(), dim=-1)
        return feats.cpu().numpy().astype(np.float32, copy=False)

    def encode_images(self, images: Sequence["Image.Image"]) -> npt.NDArray[np.float32]:
        import torch

        if not images:
            return np.empty((0, getattr(self, "dim", 0)), dtype=np.float32)
        return self.encode_image_tensors(torch.stack([self.image_tensor(im) for im in images]))

    # -- text -----------------------------------------------------------------------------------
    def tokenize(self, phrases: Sequence[str]) -> "torch.Tensor":
        """Token ids at the full context; for a model that reads languages, `phrases` may be keys
        (`catalog.phrase_key`: each phrase with its language)."""
        return self.tokenizer(list(phrases))

    def encode_texts(
        self,
        phrases: Sequence[str],
        batch_size: int = 256,
        progress: ProgressFn | None = None,
        trim: bool = True,
    ) -> npt.NDArray[np.float32]:
        """Normalised text embeddings, in the order given.

        Phrases are sorted by token length and batched; for causal-mask text towers that pool at
        the end token, each batch is cut to its longest phrase (exact: padding after the end
        token cannot reach it through a causal mask), and so for masked Hugging Face towers
        (`HF_TRIMMABLE`: padding is masked and positions come from the ids). Other towers run at
        full context.
        """
        import torch

        n = len(phrases)
        if n == 0:
            return np.empty((0, getattr(self, "dim", 0)), dtype=np.float32)
        tokens = self.tokenize(phrases)
        can_trim = trim and supports_trimming(self.model)
        lengths = token_lengths(self.model, tokens).numpy() if can_trim else np.full(n, tokens.shape[1])
        out: npt.NDArray[np.float32] | None = None
        with torch.inference_mode():
            for idx in length_batches(lengths, batch_size):
                batch = tokens[torch.from_numpy(idx)]
                if can_trim:
                    batch = batch[:, : int(lengths[idx].max())]
                    feats = (self.model.encode_text(batch.to(self.device)) if hf_pad_id(self.model) is not None
                             else encode_text_trimmed(self.model, batch.to(self.device)))
                else:
                    feats = self.model.encode_text(batch.to(self.device))
                rows = torch.nn.functional.normalize(feats.float(), dim=-1).cpu().numpy()
                if out is None:
                    out = np.empty((n, rows.shape[1]), dtype=np.float32)
                out[idx] = rows
                if progress is not None:
                    progress(len(idx))
        assert out is not None
        return out


def _image_size(model: Any) -> int:
    size = getattr(model.visual, "image_size", 224)
    return int(size[0] if isinstance(size, (tuple, list)) else size)


# Hugging Face text towers whose positions come from the token ids (padding keeps the padding
# position) and whose padding is masked out of attention and pooling: cutting a batch to its longest
# phrase changes nothing but the float summation order (tests compare with the full context).
HF_TRIMMABLE = frozenset({"roberta", "xlm-roberta", "m2m_100"})


def supports_trimming(model: Any) -> bool:
    import open_clip

    if isinstance(model, open_clip.CLIP):
        return (getattr(model, "attn_mask", None) is not None
                and getattr(model, "text_pool_type", None) in ("argmax", "eos"))
    return hf_pad_id(model) is not None


def hf_pad_id(model: Any) -> int | None:
    """The padding id of a masked Hugging Face text tower that trims exactly, else None."""
    from open_clip.hf_model import ClsPooler, HFTextEncoder, MeanPooler

    text = getattr(model, "text", None)
    if not isinstance(text, HFTextEncoder) or getattr(text.config, "model_type", None) not in HF_TRIMMABLE:
        return None
    if not isinstance(text.pooler, (MeanPooler, ClsPooler)) or text.config.pad_token_id is None:
        return None
    return int(text.config.pad_token_id)


def token_lengths(model: Any, tokens: "torch.Tensor") -> "torch.Tensor":
    """Tokens up to and including the end token, which the text tower pools at (a masked HF tower:
    every token that is not padding, which the tokenizer puts at the end)."""
    pad = hf_pad_id(model)
    if pad is not None:
        return (tokens != pad).int().sum(dim=-1)
    if model.text_pool_type == "eos":
        return (tokens == model.text_eos_id).int().argmax(dim=-1) + 1
    return tokens.argmax(dim=-1) + 1


def encode_text_trimmed(model: Any, text: "torch.Tensor") -> "torch.Tensor":
    """open_clip's CLIP.encode_text over a context cut to `text.shape[1]` tokens."""
    import torch
    from open_clip.transformer import text_global_pool

    seq = text.shape[1]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(text).to(cast_dtype)
    x = x + model.positional_embedding[:seq].to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask[:seq, :seq])
    x = model.ln_final(x)
    x = text_global_pool(x, text, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    if model.text_projection is not None:
        if isinstance(model.text_projection, torch.nn.Linear):
            x = model.text_projection(x)
        else:
            x = x @ model.text_projection
    return x


@contextmanager
def _quiet_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    previous = root.level
    root.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        root.setLevel(previous)


def hf_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


HUB_PROBE_TIMEOUT = 2.5  # seconds to wait for the Hugging Face endpoint before deciding there is no network


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT) -> bool:
    """Whether a TCP connection to the Hugging Face endpoint (HF_ENDPOINT) opens within `timeout`."""
    from urllib.parse import urlsplit

    url = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout).close()
        return True
    except OSError:
        return False


class _HubProbe:
    """Probes the hub in the background while torch and open_clip import (about 4 s here)."""

    def __init__(self) -> None:
        self.reachable = True
        self._thread = threading.Thread(target=self._run, name="clip-gaze-hub-probe", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.reachable = hub_reachable()

    def offline(self) -> bool:
        self._thread.join()
        return not self.reachable


HF_TOWER_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json")  # a Hugging Face text tower's base model


def cache_files_needed(open_clip: Any, spec: ModelSpec) -> list[tuple[str, tuple[str, ...]]]:
    """What a tag needs in the Hugging Face cache, as (repo, files: any one of them): the
    checkpoint, and for a Hugging Face text tower its base model's config.json, tokenizer.json and
    tokenizer_config.json (the README lists them per preset)."""
    if spec.is_file:
        return []
    hub = (open_clip.get_pretrained_cfg(spec.arch, spec.pretrained) or {}).get("hf_hub", "").rstrip("/")
    needed: list[tuple[str, tuple[str, ...]]] = []
    if hub:
        needed.append((hub, ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")))
    text_cfg = (open_clip.get_model_config(spec.arch) or {}).get("text_cfg", {})
    for key, files in (("hf_model_name", HF_TOWER_FILES[:1]), ("hf_tokenizer_name", HF_TOWER_FILES[1:])):
        repo = text_cfg.get(key)
        if repo:
            needed.extend((repo, (name,)) for name in files)
    return needed


def missing_cache_files(open_clip: Any, spec: ModelSpec) -> list[str]:
    """`repo/file` of each needed file (`cache_files_needed`) that is not in the cache."""
    from huggingface_hub import try_to_load_from_cache

    missing = []
    for repo, names in cache_files_needed(open_clip, spec):
        if not any(isinstance(try_to_load_from_cache(repo, name), str) for name in names):
            missing.append(f"{repo}/{names[-1] if len(names) > 1 else names[0]}")
    return missing


def _offline_env() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def load_model(spec: ModelSpec, device: str = "auto", threads: int = 0) -> LoadedModel:
    """Build the model through open_clip: tags through the Hugging Face cache, files directly.

    Without a network, weights are taken from the cache at once (huggingface_hub is switched to
    offline mode for the process, instead of retrying for about a minute); missing weights raise
    ModelUnavailable naming the cache and how to pass a local file.
    """
    probe = _HubProbe() if not spec.is_file and not _offline_env() else None
    import open_clip
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    device = pick_device(device)
    if spec.config:
        open_clip.add_model_config(spec.config)
    if spec.arch not in open_clip.list_models():
        raise InvalidInput(
            f"unknown open_clip architecture {spec.arch!r} (see open_clip.list_models(), e.g. ViT-B-32, ViT-L-14)",
            code="unknown_model",
        )
    kwargs: dict[str, Any] = {}
    local_text = local_text_cfg(spec.config)
    if local_text is not None:  # a project model's HF text tower, in a folder beside its config
        kwargs["text_cfg"] = local_text
    if not spec.is_file:
        tag_cfg = open_clip.get_pretrained_cfg(spec.arch, spec.pretrained)
        if not tag_cfg:
            tags = open_clip.list_pretrained_tags_by_model(spec.arch)
            raise InvalidInput(
                f"open_clip has no pretrained tag {spec.pretrained!r} for {spec.arch}; known tags: {', '.join(tags) or 'none'}",
                code="unknown_model",
            )
        # The OpenAI weights were trained with QuickGELU; open_clip only warns if it is missing.
        kwargs["force_quick_gelu"] = bool(tag_cfg.get("quick_gelu", False))
    offline = _offline_env()
    if probe is not None and probe.offline():
        from huggingface_hub import constants

        constants.HF_HUB_OFFLINE = True  # no network: use the cache, don't retry for a minute
        offline = True
    if offline and not spec.is_file:
        missing = missing_cache_files(open_clip, spec)
        if any(m.rsplit("/", 1)[1] in HF_TOWER_FILES for m in missing):  # a missing checkpoint alone: open_clip's error below
            raise ModelUnavailable(
                f"{spec.name} needs files that are not in the Hugging Face cache ({hf_cache_dir()}) and there is no "
                f"network (or HF_HUB_OFFLINE is set): {', '.join(missing)}. Connect to the network once, or put them "
                f"in the cache (huggingface-cli download REPO FILE); the checkpoint may also be passed as a file: "
                f"CLIP_GAZE_MODEL={spec.arch}:/path/to/open_clip_pytorch_model.bin"
            )
    try:
        with _quiet_root_logger():  # open_clip logs its failures on the root logger; we raise one clear error
            model, _, preprocess = open_clip.create_model_and_transforms(
                spec.arch, pretrained=spec.pretrained, device=device, **kwargs
            )
    except OSError as exc:  # transformers: a Hugging Face text tower's config or tokenizer is missing
        raise ModelUnavailable(f"could not load {spec.name}'s Hugging Face text tower: {exc}") from exc
    except RuntimeError as exc:
        if spec.is_file or "download" not in str(exc).lower():
            raise ModelUnavailable(f"could not load {spec.name}: {exc}") from exc
        hub = (open_clip.get_pretrained_cfg(spec.arch, spec.pretrained) or {}).get("hf_hub", "").rstrip("/")
        why = "there is no network (or HF_HUB_OFFLINE is set)" if offline else "could not be downloaded"
        raise ModelUnavailable(
            f"weights for {spec.name} ({spec.arch}, {spec.pretrained}) are not in the Hugging Face cache "
            f"({hf_cache_dir()}, repo {hub or '?'}) and {why}. Connect to the network once, "
            f"or download open_clip_pytorch_model.bin from that repo and pass the file: "
            f"CLIP_GAZE_MODEL={spec.arch}{'-quickgelu' if kwargs.get('force_quick_gelu') else ''}:/path/to/open_clip_pytorch_model.bin"
        ) from exc
    model.eval()
    if local_text is not None:
        from open_clip.tokenizer import HFTokenizer

        tokenizer = HFTokenizer(str(local_text["hf_tokenizer_name"]), context_length=int(local_text.get("context_length", 77)),  # type: ignore[call-overload]
                                **dict(local_text.get("tokenizer_kwargs", {})))  # type: ignore[call-overload]
    else:
        try:
            tokenizer = open_clip.get_tokenizer(spec.arch)
        except OSError as exc:
            raise ModelUnavailable(f"could not load {spec.name}'s tokenizer: {exc}") from exc
    return LoadedModel(spec, model, preprocess, tokenizer, device)
