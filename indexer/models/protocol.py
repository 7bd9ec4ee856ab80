"""What a model must offer, whatever runs it: the one door the engine and the features use.

Two runtimes satisfy it: torch (`torch_model.LoadedModel`, open_clip's own model) and ONNX Runtime
(`onnx_model.OnnxModel`, over an export). mypy checks both against it wherever one is handed on as a
`ClipModel` (`backends.load` returns either). Embeddings are L2-normalised float32 rows; the
engine's scores are `logit_scale` × their dot products.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Protocol, Sequence, runtime_checkable

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from .registry import ModelSpec

ProgressFn = Callable[[int], None]  # called with the number of phrases each finished batch held


@runtime_checkable
class ClipModel(Protocol):
    backend: str  # "torch" or "onnx"
    spec: "ModelSpec"
    logit_scale: float  # exp of the learned logit scale
    logit_bias: float | None  # a sigmoid-trained model's learned bias (SigLIP), else None
    dim: int  # embedding size
    image_size: int  # the square input, in pixels
    trims_context: bool  # text batches are cut to their longest phrase (exact for causal towers)
    providers: list[str]  # where it runs ("cpu", "CPUExecutionProvider", …)

    def image_array(self, image: "Image.Image") -> npt.NDArray[np.float32]:
        """The model's preprocessing of an RGB picture: a (3, image_size, image_size) array."""
        ...

    def encode_image_arrays(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """(n, 3, image_size, image_size) preprocessed pictures → (n, dim) embeddings."""
        ...

    def encode_images(self, images: Sequence["Image.Image"]) -> npt.NDArray[np.float32]:
        """RGB pictures → (n, dim) embeddings (preprocessed here)."""
        ...

    def encode_texts(self, phrases: Sequence[str], batch_size: int = 256, progress: ProgressFn | None = None,
                     trim: bool = True) -> npt.NDArray[np.float32]:
        """Phrases → (n, dim) embeddings, in the order given (batched by token length)."""
        ...


ModelLoader = Callable[..., ClipModel]  # (spec, device=…, threads=…) → the model; tests pass their own

__all__ = ["ClipModel", "ModelLoader", "ProgressFn"]
