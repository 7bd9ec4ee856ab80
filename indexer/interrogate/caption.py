"""An optional captioner: BLIP through Hugging Face `transformers`, as clip-interrogator uses it (the
`caption` extra: `pip install 'clip-gaze[caption]'`). Its caption starts the chain in place of the start
vocabularies' reading.

The weights come from the Hugging Face cache (a repo id such as `Salesforce/blip-image-captioning-large`,
downloaded there once) or from a folder that `save_pretrained` wrote. Without them, and without a
network, one ModelUnavailable names the cache and how to supply a folder.
"""

from __future__ import annotations

import os
import threading
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInput, ModelUnavailable

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

DEFAULT_CAPTIONER = "Salesforce/blip-image-captioning-large"  # clip-interrogator's default caption model
MAX_NEW_TOKENS = 32  # clip-interrogator's caption_max_length
_lock = threading.Lock()


class Captioner:
    """A BLIP captioning model and its processor, on the CPU (or `device`)."""

    def __init__(self, model: Any, processor: Any, name: str, device: str = "cpu"):
        self.model, self.processor, self.name, self.device = model, processor, name, device

    def caption(self, image: "Image.Image") -> str:
        import torch

        with _lock, torch.inference_mode():
            inputs = self.processor(images=image.convert("RGB"), return_tensors="pt").to(self.device)
            out = self.model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, num_beams=1, do_sample=False)
        text = self.processor.decode(out[0], skip_special_tokens=True)
        return " ".join(str(text).split())


def _offline() -> bool:
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


@lru_cache(maxsize=2)
def load_captioner(name: str = DEFAULT_CAPTIONER, device: str = "cpu") -> Captioner:
    """The BLIP captioner `name` (a Hugging Face repo id in the cache, or a folder)."""
    try:
        from transformers import BlipForConditionalGeneration, BlipProcessor
    except ImportError as exc:  # pragma: no cover - transformers is installed with the extra
        raise ModelUnavailable("captions need Hugging Face transformers: pip install 'clip-gaze[caption]'") from exc
    folder = Path(name).expanduser()
    local = folder.is_dir()
    if not local and (name.startswith(("/", "./", "../", "~")) or name.count("/") != 1):
        raise InvalidInput(f"captioner {name!r} is neither a folder nor a Hugging Face repo id (owner/name)",
                           code="unknown_model")
    source = str(folder) if local else name
    try:
        processor = BlipProcessor.from_pretrained(source, local_files_only=local or _offline())
        model = BlipForConditionalGeneration.from_pretrained(source, local_files_only=local or _offline())
    except OSError as exc:
        from huggingface_hub import constants

        raise ModelUnavailable(
            f"the BLIP captioner {name} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and could not be "
            f"downloaded: connect once, or pass a folder written by save_pretrained (--captioner /path/to/blip)"
        ) from exc
    model.eval().to(device)
    return Captioner(model, processor, name, device)


__all__ = ["Captioner", "DEFAULT_CAPTIONER", "load_captioner"]
