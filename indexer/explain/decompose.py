"""Where and why: a picture's image embedding split over the model's patch grid, from one forward pass.

How (Gandelsman et al., "Interpreting CLIP's image representation via text-based decomposition",
ICLR 2024). A ViT's image embedding is ln_post(class token's final residual stream) @ proj. The
residual stream is a sum: what the decomposed blocks' attention wrote into the class token, source
token by source token, plus their MLP outputs, plus the stream before them. With ln_post's scale (the
standard deviation) held at its value from the forward pass, ln_post is linear, and so is the
projection and the final normalisation (by the norm from the forward pass): the embedding is the sum
of one vector per source patch and one for the rest, and the logits are their dot products with the
phrases (`maps`). One forward pass per picture (with hooks that record each decomposed block's attention
input and MLP output), then a few matrix products, whatever the number of phrases.

A source patch here is the patch token at the decomposed block's input; what earlier blocks mixed
into that token from elsewhere is credited to its place ("patch-to-patch mixing ignored").

Only open_clip's own VisionTransformer (class-token pooling, nn.MultiheadAttention blocks: every ViT
preset, and the `toy-sigmoid` test instrument) is decomposed; any other tower is refused with NotExplainable
(400 `not_explainable`) and the reason: SigLIP's timm towers pool with an attention head whose MLP acts on the
pooled sum, which cannot be split among patches exactly.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ..errors import InvalidInput

if TYPE_CHECKING:  # pragma: no cover
    import torch

F32 = npt.NDArray[np.float32]


class NotExplainable(InvalidInput):
    """The model's image tower is not one this decomposition understands."""

    code = "not_explainable"


@dataclass(frozen=True)
class Decomposition:
    """One picture's normalised image embedding as a sum of per-patch parts and a rest.

    `patches` (rows·cols, dim): each source patch's part, row-major over the grid; `rest` (dim,): the
    class token's own path, the blocks before those decomposed, every bias; `embedding` (dim,): the
    normalised embedding from the forward pass; `patches.sum(0) + rest` equals it to float rounding
    (`error` is the largest difference)."""

    patches: F32
    rest: F32
    embedding: F32
    rows: int
    cols: int
    error: float

    def contributions(self, directions: npt.ArrayLike, scale: float) -> tuple[F32, F32]:
        """For directions d_k (k, dim): the maps scale·(patch part · d_k) as (k, rows, cols) and the
        unmapped rest scale·(rest · d_k) as (k,)."""
        d = np.atleast_2d(np.asarray(directions, dtype=np.float32))
        maps = (self.patches @ d.T).T * np.float32(scale)
        rest = (d @ self.rest) * np.float32(scale)
        return maps.reshape(len(d), self.rows, self.cols).astype(np.float32), rest.astype(np.float32)


@dataclass
class _Capture:
    """What the hooks record during one forward pass (for the thread that asked)."""

    thread: int
    attn_in: dict[int, Any] = field(default_factory=dict)  # block → ln_1(x), all tokens
    mlp_out: dict[int, Any] = field(default_factory=dict)  # block → ls_2(mlp(ln_2(x))), class token
    stream_in: Any = None  # the class token's residual stream entering the first decomposed block
    ln_post_in: Any = None  # the class token's final residual stream


MAX_ERROR = 1e-2  # the largest difference, in a normalised embedding, between its parts' sum and itself


def default_layers(blocks: int) -> int:
    """Blocks whose attention is split by source patch: the last four (Gandelsman et al.: the direct
    effect on a ViT's image representation sits in its last few attention layers), or all of a tower
    that has fewer (the toy model's three)."""
    return max(1, min(4, blocks))


class Explainer:
    """Decomposes the image embeddings of one open_clip CLIP model (see the module's docstring)."""

    def __init__(self, model: Any, layers: int | None = None):
        self.model = model
        visual = getattr(model, "visual", None)
        self._check(visual)
        assert visual is not None
        self.visual = visual
        self.blocks = list(visual.transformer.resblocks)
        self.layers = default_layers(len(self.blocks)) if layers is None else int(layers)
        if not 1 <= self.layers <= len(self.blocks):
            raise ValueError(f"layers must be 1 to {len(self.blocks)}")
        self.first = len(self.blocks) - self.layers
        self.rows, self.cols = (int(v) for v in visual.grid_size)
        self.batch_first = bool(getattr(visual.transformer, "batch_first", True))

    @staticmethod
    def _check(visual: Any) -> None:
        import torch
        from open_clip.transformer import ResidualAttentionBlock, VisionTransformer

        name = type(visual).__name__ if visual is not None else "none"
        if getattr(getattr(visual, "trunk", None), "attn_pool", None) is not None:
            raise NotExplainable(
                f"this model's image tower ({name}: timm's ViT with an attention-pooling head, as SigLIP's) cannot be "
                "explained exactly: the head's learned query attends over the patch tokens (a sum that splits by patch), "
                "but its MLP then acts on that pooled sum as a whole and cannot be split among patches exactly, and there "
                "is no class token to read instead"
            )
        if not isinstance(visual, VisionTransformer):
            raise NotExplainable(
                f"this model's image tower ({name}) cannot be explained: maps need open_clip's VisionTransformer "
                "(ViT presets such as vit-b-32, sd15, sd2, sdxl, toy)"
            )
        why = None
        if getattr(visual, "attn_pool", None) is not None:
            why = "it pools with an attentional pooler"
        elif getattr(visual, "pool_type", "tok") != "tok":
            why = f"it pools by {visual.pool_type!r}, not with the class token"
        elif not all(type(b) is ResidualAttentionBlock for b in visual.transformer.resblocks):
            why = "its blocks are not open_clip's standard ResidualAttentionBlock"
        elif not all(isinstance(b.attn, torch.nn.MultiheadAttention) and b.attn._qkv_same_embed_dim
                     and b.attn.bias_k is None and not b.attn.add_zero_attn and b.attn.in_proj_bias is not None
                     for b in visual.transformer.resblocks):
            why = "its attention is not a plain nn.MultiheadAttention with one input projection"
        elif not isinstance(visual.ln_post, torch.nn.LayerNorm) or getattr(visual, "proj", None) is None:
            why = "it has no final layer norm and projection"
        if why:
            raise NotExplainable(f"this model's image tower cannot be explained: {why}")

    # -- one forward pass with hooks ------------------------------------------------------------------
    def _hooks(self, cap: _Capture) -> list[Any]:
        mine = lambda: threading.get_ident() == cap.thread  # noqa: E731  (other threads share the model)
        bf = self.batch_first

        def tokens_first(t: Any) -> Any:  # (batch, tokens, width)
            return t if bf else t.transpose(0, 1)

        handles = []

        def stream_in(_m: Any, args: tuple[Any, ...]) -> None:
            if mine():
                cap.stream_in = tokens_first(args[0])[:, 0].float()

        handles.append(self.blocks[self.first].register_forward_pre_hook(stream_in))
        for i in range(self.first, len(self.blocks)):
            blk = self.blocks[i]
            attn_bf = bool(getattr(blk.attn, "batch_first", False))

            def attn_in(_m: Any, args: tuple[Any, ...], kwargs: dict[str, Any], i: int = i, attn_bf: bool = attn_bf) -> None:
                if mine():
                    if kwargs.get("attn_mask") is not None or (len(args) > 5 and args[5] is not None):
                        raise NotExplainable("this model's image tower masks its attention; it cannot be explained")
                    q = args[0] if args else kwargs["query"]
                    cap.attn_in[i] = (q if attn_bf else q.transpose(0, 1)).float()

            def mlp_out(_m: Any, _args: tuple[Any, ...], out: Any, i: int = i) -> None:
                if mine():
                    cap.mlp_out[i] = tokens_first(out)[:, 0].float()

            handles.append(blk.attn.register_forward_pre_hook(attn_in, with_kwargs=True))
            handles.append(blk.ls_2.register_forward_hook(mlp_out))

        def ln_post_in(_m: Any, args: tuple[Any, ...]) -> None:
            if mine():
                x = args[0]
                cap.ln_post_in = (x if x.dim() == 2 else tokens_first(x)[:, 0]).float()

        handles.append(self.visual.ln_post.register_forward_pre_hook(ln_post_in))
        return handles

    def decompose(self, batch: "torch.Tensor") -> list[Decomposition]:
        """Each preprocessed picture's decomposition, from one forward pass of the batch."""
        import torch

        cap = _Capture(threading.get_ident())
        handles = self._hooks(cap)
        try:
            with torch.inference_mode():
                device = next(self.model.parameters()).device
                out = self.model.encode_image(batch.to(device))
                out = (out[0] if isinstance(out, tuple) else out).float()
                parts = self._parts(cap)
                return self._finish(parts, out)
        finally:
            for h in handles:
                h.remove()

    def _attention_by_source(self, i: int, a: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:
        """Block i's attention output for the class token, split by source token: (batch, tokens, width),
        and its bias (width,); both after the block's layer scale."""
        import torch

        blk = self.blocks[i]
        attn = blk.attn
        width, heads = attn.embed_dim, attn.num_heads
        dh = width // heads
        w, b = attn.in_proj_weight.float(), attn.in_proj_bias.float()
        batch, tokens, _ = a.shape
        q = (a[:, 0] @ w[:width].T + b[:width]).view(batch, heads, dh)
        k = (a @ w[width : 2 * width].T + b[width : 2 * width]).view(batch, tokens, heads, dh)
        v = (a @ w[2 * width :].T + b[2 * width :]).view(batch, tokens, heads, dh)
        weights = torch.softmax(torch.einsum("bhd,bshd->bhs", q, k) / math.sqrt(dh), dim=-1)  # (batch, heads, tokens)
        mixed = (v * weights.permute(0, 2, 1).unsqueeze(-1)).reshape(batch, tokens, width)
        by_source = mixed @ attn.out_proj.weight.float().T
        bias = attn.out_proj.bias.float() if attn.out_proj.bias is not None else torch.zeros(width, device=a.device)
        return _scaled(blk.ls_1, by_source), _scaled(blk.ls_1, bias)

    def _parts(self, cap: _Capture) -> tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"]:
        """(patch parts (batch, patches, width), the rest (batch, width), the final stream (batch, width))."""
        if cap.ln_post_in is None or cap.stream_in is None or len(cap.attn_in) != self.layers:
            raise NotExplainable("this model's image tower did not run as a ViT with a class token; it cannot be explained")
        patches = None
        rest = cap.stream_in.clone()
        for i in range(self.first, len(self.blocks)):
            by_source, bias = self._attention_by_source(i, cap.attn_in[i])
            patches = by_source[:, 1:] if patches is None else patches + by_source[:, 1:]
            rest = rest + by_source[:, 0] + bias + cap.mlp_out[i]
        assert patches is not None
        return patches, rest, cap.ln_post_in

    def _finish(self, parts: tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"], out: "torch.Tensor") -> list[Decomposition]:
        import torch

        patches, rest, stream = parts
        ln = self.visual.ln_post
        gamma, beta = ln.weight.float(), ln.bias.float()
        sigma = torch.sqrt(stream.var(dim=-1, unbiased=False, keepdim=True) + ln.eps)  # (batch, 1): held fixed
        proj = self.visual.proj.float()
        norm = out.norm(dim=-1, keepdim=True)  # (batch, 1): held fixed

        p = ((patches - patches.mean(dim=-1, keepdim=True)) * gamma / sigma.unsqueeze(1)) @ proj / norm.unsqueeze(1)
        r = (((rest - rest.mean(dim=-1, keepdim=True)) * gamma / sigma) @ proj + beta @ proj) / norm
        e = out / norm
        error = (p.sum(dim=1) + r - e).abs().amax(dim=-1)
        if float(error.max()) > MAX_ERROR:  # the tower did not compute what this decomposition assumes
            raise NotExplainable(
                f"this model's image tower cannot be explained: its parts do not add up to its embedding "
                f"(off by {float(error.max()):.1e})"
            )
        p_np, r_np, e_np = (t.cpu().numpy().astype(np.float32) for t in (p, r, e))
        err = error.cpu().numpy()
        return [
            Decomposition(p_np[j], r_np[j], e_np[j], self.rows, self.cols, float(err[j])) for j in range(len(e_np))
        ]


def _scaled(layer_scale: Any, x: "torch.Tensor") -> "torch.Tensor":
    """A block's layer scale (identity, or an elementwise gain: linear either way) applied to x."""
    gamma = getattr(layer_scale, "gamma", None)
    return x if gamma is None else x * gamma.float()


__all__ = ["Decomposition", "Explainer", "NotExplainable", "default_layers"]
