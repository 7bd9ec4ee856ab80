"""What runs a model: ONNX Runtime over an export made once into CLIP_GAZE_HOME, or torch (open_clip).

`CLIP_GAZE_BACKEND`:
- `onnx`: ONNX Runtime. A missing export is made first (that one time needs torch and open_clip);
  once it exists, nothing here imports torch, torchvision or open_clip.
- `torch`: open_clip's own model.
- `auto` (the default): `onnx` where the model can be exported, else `torch` (a tokenizer or a tower
  that ONNX cannot reproduce exactly, or onnxruntime not installed). On a machine with an NVIDIA GPU
  and no CUDA provider in ONNX Runtime (onnxruntime-gpu not installed), torch serves on the GPU.

Both runtimes are a `ClipModel` (`protocol`): the members the engine uses.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..errors import InvalidInput, ModelUnavailable, NotExportable
from .manifest import Manifest, export_dir, read_manifest
from .protocol import ClipModel
from .registry import ModelSpec

if TYPE_CHECKING:  # pragma: no cover
    from .torch_model import LoadedModel

log = logging.getLogger("clip_gaze.backends")

BACKENDS = ("auto", "onnx", "torch")

Progress = Callable[[str], None]


def onnxruntime_installed() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def nvidia_gpu_present() -> bool:
    """An NVIDIA GPU on this machine, known without importing torch (its device files)."""
    return os.path.exists("/dev/nvidia0") or os.path.exists("/proc/driver/nvidia/gpus")


def onnx_cuda_available() -> bool:
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def export_path(home: Path | str, spec: ModelSpec) -> Path:
    return export_dir(Path(home), spec.key())


def exported(directory: Path) -> bool:
    """A complete export is in `directory`."""
    return read_manifest(directory) is not None


def has_export(home: Path | str, spec: ModelSpec) -> bool:
    return exported(export_path(home, spec))


def ensure_export(spec: ModelSpec, home: Path | str, progress: Progress | None = None,
                  loaded: "LoadedModel | None" = None, force: bool = False) -> Manifest:
    """The manifest of the model's ONNX export in `home`, made now if missing (or with `force`), loading
    the torch model to export it. Raises NotExportable for a model ONNX Runtime cannot serve exactly."""
    from .export import export_model

    directory = export_path(home, spec)
    manifest = None if force else read_manifest(directory)
    if manifest is None:
        if not onnxruntime_installed():
            raise NotExportable("onnxruntime is not installed (pip install onnxruntime)")
        from .torch_model import load_model

        model = loaded if loaded is not None else load_model(spec, device="cpu")  # a model that cannot load says so first
        if progress is not None:
            progress(f"exporting {spec.name} to ONNX, once, into {directory.parent}")
        manifest = export_model(model, directory, force=force)
    return manifest


def choose(backend: str, device: str) -> str:
    """`onnx` or `torch` for a setting of `auto`, `onnx` or `torch` (nothing is loaded)."""
    if backend not in BACKENDS:
        raise InvalidInput(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}", code="invalid_input")
    if backend != "auto":
        return backend
    if not onnxruntime_installed():
        return "torch"
    wants_gpu = device.startswith("cuda") or (device in ("", "auto") and nvidia_gpu_present())
    if wants_gpu and not onnx_cuda_available():
        return "torch"  # a GPU, and an ONNX Runtime without CUDA: torch on the GPU beats ONNX on the CPU
    return "onnx"


def load(spec: ModelSpec, *, home: Path | str, backend: str = "auto", device: str = "auto", threads: int = 0,
         progress: Progress | None = None) -> ClipModel:
    """The model on the backend `backend` asks for (see the module's docstring)."""
    from .torch_model import load_model

    chosen = choose(backend, device)
    if chosen == "torch":
        return load_model(spec, device=device, threads=threads)
    if not onnxruntime_installed():
        raise ModelUnavailable("CLIP_GAZE_BACKEND=onnx, but onnxruntime is not installed (pip install onnxruntime)")
    if not has_export(home, spec):
        exporting = load_model(spec, device="cpu", threads=threads)
        try:
            ensure_export(spec, home, progress, loaded=exporting)
        except NotExportable as exc:
            if backend == "onnx":
                raise
            log.warning("%s is served by torch: %s", spec.name, exc.message)
            from .torch_model import pick_device

            # the model loaded to export serves, unless it belongs on another device
            return exporting if pick_device(device) == "cpu" else load_model(spec, device=device, threads=threads)
    from .onnx_model import OnnxModel

    return OnnxModel.load(export_path(home, spec), spec, device=device, threads=threads)


def describe(model: ClipModel) -> str:
    """How a loaded model runs, e.g. `onnx (CPUExecutionProvider)` or `torch (cpu)`."""
    providers = ", ".join(model.providers)
    return f"{model.backend} ({providers})" if providers else model.backend
