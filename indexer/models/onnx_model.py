"""The ONNX Runtime runtime: a model served from its export (`manifest`, made by `export`), a
`ClipModel` as the torch `torch_model.LoadedModel` is: the same preprocessing, tokenizer, batching
and trimming, and embeddings equal to torch's within the differences the export measured
(`Manifest.parity`).

This module never imports torch, torchvision or open_clip, not even indirectly: a process that
serves with ONNX Runtime does not pay their start-up time and memory (`import torch, torchvision,
open_clip` costs about 750 MB of RSS, `import onnxruntime` about 45 MB).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from ..errors import InvalidInput, ModelUnavailable
from .batching import length_batches
from .protocol import ProgressFn
from .manifest import Manifest, read_manifest
from .preprocess import ImageTransform
from .registry import ModelSpec
from .hf_tokenizer import Tokenizer, tokenizer_from_json

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

# Session settings that depend on how many processes share the cores (one or two gunicorn workers
# on a 2-core machine); to be measured with both before they change. Figures: bench/onnx_backend.py,
# ViT-B-32, one process, 2 cores.
# - Both towers are a chain of operators with little to run side by side; a second inter-op pool
#   would only add threads that compete with the intra-op ones (immich uses 1 on CPU too).
INTER_OP_THREADS = 1
# - ONNX Runtime's CPU arena keeps the largest buffers it has handed out for the life of the
#   session: after one text batch of 256 phrases at 77 tokens (a peak of about +1.3 GB either way)
#   the process stayed at 2,304 MiB with the arena and went back to 867 MiB without it. The arena
#   made text about 7% faster (2,000 short phrases: 3.1 against 3.4 s; images: equal), and shrinking
#   it after each run (run option memory.enable_memory_arena_shrinkage) lost that gain.
CPU_MEM_ARENA = False
# - Intra-op threads spin for a while after each parallel section waiting for the next one. Alone,
#   spinning gained little (encode_image batch 1: 33 against 35 ms; batch 8: equal); in a run where
#   other work competed for the cores, it doubled the time (130 against 62 ms): a spinning thread
#   takes a core away from whatever else runs, such as another worker.
INTRA_OP_SPINNING = False
# Tokens in one text batch (phrases × their trimmed length). Without the arena, ONNX Runtime's
# activations for 256 phrases at 77 tokens peak about 1.3 GB above the model (torch: 0.3–0.5 GB);
# 4,096 tokens keep a batch to about a fifth of that, and leave short phrases (≤ 16 tokens) in
# batches of 256.
MAX_BATCH_TOKENS = 4096


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _normalise(x: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    """Rows to unit length, as torch.nn.functional.normalize (norm clamped at 1e-12)."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.asarray(x / np.maximum(norm, np.float32(1e-12)), dtype=np.float32)


def _providers(device: str) -> tuple[list[Any], str]:
    """The execution providers to ask for, and the device they amount to."""
    requested = (device or "auto").strip().lower()
    available = ort.get_available_providers()
    has_cuda = "CUDAExecutionProvider" in available
    if requested == "cpu":
        return ["CPUExecutionProvider"], "cpu"
    if requested == "auto" or requested == "cuda" or requested.startswith("cuda:"):
        if has_cuda:
            index = requested.partition(":")[2]
            options = {"device_id": int(index)} if index.isdigit() else {}
            return [("CUDAExecutionProvider", options), "CPUExecutionProvider"], "cuda"
        if requested == "auto":
            return ["CPUExecutionProvider"], "cpu"
        raise ModelUnavailable(
            f"CLIP_GAZE_DEVICE asks for {device}, but ONNX Runtime offers no CUDA provider "
            f"(it has {', '.join(available)}; CUDA needs the onnxruntime-gpu package)",
            code="no_device",
        )
    raise ModelUnavailable(f"ONNX Runtime serves on cpu or cuda, not {device!r}", code="no_device")


def session_options(threads: int = 0) -> ort.SessionOptions:
    """All graph optimisations; `threads` intra-op threads (0: one per core available)."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = threads if threads > 0 else _cores()
    so.inter_op_num_threads = INTER_OP_THREADS
    so.enable_cpu_mem_arena = CPU_MEM_ARENA
    spin = "1" if INTRA_OP_SPINNING else "0"
    so.add_session_config_entry("session.intra_op.allow_spinning", spin)
    so.add_session_config_entry("session.inter_op.allow_spinning", spin)
    return so


class OnnxModel:
    """A model exported by `export.export_model`, served by ONNX Runtime."""

    backend = "onnx"

    def __init__(
        self,
        spec: ModelSpec,
        manifest: Manifest,
        transform: ImageTransform,
        tokenizer: Tokenizer,
        image_session: ort.InferenceSession,
        text_session: ort.InferenceSession,
        device: str,
        threads: int,
    ):
        self.spec = spec
        self.manifest = manifest
        self.transform = transform
        self.tokenizer = tokenizer
        self.image_session = image_session
        self.text_session = text_session
        self.device = device
        self.threads = threads
        self.logit_scale = float(manifest.logit_scale)
        self.logit_bias = None if manifest.logit_bias is None else float(manifest.logit_bias)
        self.image_size = int(manifest.image_size)
        self.dim = int(manifest.dim)
        self.trims_context = bool(manifest.text.trims)
        self.providers: list[str] = list(image_session.get_providers())
        self._image_io = (image_session.get_inputs()[0].name, image_session.get_outputs()[0].name)
        self._text_io = (text_session.get_inputs()[0].name, text_session.get_outputs()[0].name)

    @classmethod
    def load(cls, directory: Path, spec: ModelSpec, device: str = "auto", threads: int = 0) -> "OnnxModel":
        """The export in `directory` (`manifest.export_dir`), which must be of `spec`'s weights.

        ModelUnavailable when there is no complete export there (export it first) or it is of
        other weights; code "no_device" when `device` asks for CUDA and ONNX Runtime has none.
        """
        directory = Path(directory)
        manifest = read_manifest(directory)
        if manifest is None:
            raise ModelUnavailable(f"no complete ONNX export of {spec.name} in {directory}", code="not_exported")
        key = spec.key()
        if manifest.model_key != key:
            raise ModelUnavailable(
                f"the ONNX export in {directory} is of {manifest.model_key}, not of {key}", code="not_exported"
            )
        return cls.from_manifest(directory, manifest, spec, device=device, threads=threads)

    @classmethod
    def from_manifest(
        cls, directory: Path, manifest: Manifest, spec: ModelSpec, device: str = "auto", threads: int = 0
    ) -> "OnnxModel":
        """Both sessions on the files `manifest` names in `directory` (not checked against it)."""
        directory = Path(directory)
        providers, used = _providers(device)
        try:
            transform = ImageTransform.from_json(manifest.transform)
            tokenizer = tokenizer_from_json(manifest.tokenizer, directory)
        except (KeyError, TypeError, ValueError, OSError) as exc:
            raise ModelUnavailable(f"the ONNX export in {directory} has an unusable manifest: {exc}") from exc
        options = session_options(threads)
        sessions = []
        for role in ("image", "text"):
            path = directory / manifest.files[role]
            try:
                sessions.append(ort.InferenceSession(str(path), sess_options=options, providers=providers))
            except Exception as exc:  # onnxruntime raises its own exception types
                raise ModelUnavailable(f"ONNX Runtime could not load {path}: {exc}") from exc
        image_session, text_session = sessions
        if used == "cuda" and "CUDAExecutionProvider" not in image_session.get_providers():
            if (device or "auto").strip().lower() != "auto":
                raise ModelUnavailable(
                    f"CLIP_GAZE_DEVICE asks for {device}, but ONNX Runtime's CUDA provider did not start "
                    "(see its log above: CUDA or cuDNN libraries?)",
                    code="no_device",
                )
            used = "cpu"
        return cls(spec, manifest, transform, tokenizer, image_session, text_session, used,
                   options.intra_op_num_threads)

    def __repr__(self) -> str:
        return f"OnnxModel({self.spec.name!r}, providers={self.providers}, dim={self.dim})"

    # -- images ---------------------------------------------------------------------------------
    def image_array(self, image: "Image.Image") -> npt.NDArray[np.float32]:
        """The model's preprocessing, (3, S, S) float32: equal to open_clip's eval transform."""
        return self.transform(image)

    def encode_image_arrays(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """(N, 3, S, S) pixels → (N, D) normalised embeddings."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if batch.ndim != 4 or batch.shape[1:] != (3, self.image_size, self.image_size):
            raise InvalidInput(f"pixels must be of shape (N, 3, {self.image_size}, {self.image_size}), not {batch.shape}")
        if batch.shape[0] == 0:
            return np.empty((0, self.dim), dtype=np.float32)
        name, output = self._image_io
        return _normalise(self.image_session.run([output], {name: batch})[0])

    def encode_images(self, images: Sequence["Image.Image"]) -> npt.NDArray[np.float32]:
        if not images:
            return np.empty((0, self.dim), dtype=np.float32)
        return self.encode_image_arrays(np.stack([self.image_array(im) for im in images]))

    # -- text -----------------------------------------------------------------------------------
    def tokenize(self, phrases: Sequence[str]) -> npt.NDArray[np.int64]:
        return self.tokenizer(list(phrases))

    def encode_texts(
        self,
        phrases: Sequence[str],
        batch_size: int = 256,
        progress: ProgressFn | None = None,
        trim: bool = True,
    ) -> npt.NDArray[np.float32]:
        """Normalised text embeddings, in the order given (as LoadedModel.encode_texts).

        Phrases are sorted by token length and batched; when the tower trims, each batch is cut to
        its longest phrase. `progress(n)` after each batch of n phrases.
        """
        n = len(phrases)
        if n == 0:
            return np.empty((0, self.dim), dtype=np.float32)
        tokens = self.tokenize(phrases)
        can_trim = trim and self.trims_context
        if can_trim:
            lengths = self.tokenizer.lengths(tokens)
        else:
            lengths = np.full(n, tokens.shape[1], dtype=np.int64)
        name, output = self._text_io
        out = np.empty((n, self.dim), dtype=np.float32)
        for idx in length_batches(lengths, batch_size, MAX_BATCH_TOKENS):
            batch = tokens[idx]
            if can_trim:
                batch = batch[:, : max(2, int(lengths[idx].max()))]
            feats = self.text_session.run([output], {name: np.ascontiguousarray(batch, dtype=np.int64)})[0]
            out[idx] = _normalise(feats)
            if progress is not None:
                progress(len(idx))
        return out
