"""The text tower over one prefix and many suffixes: every candidate "prompt so far, phrase" of a chain
step shares the prefix's keys and values (CLIP's text tower is causal), so they are computed once per
step and only each candidate's own tokens run through the blocks (3–8 tokens instead of up to 77).

Exact by construction: a candidate whose tokens do not begin with the prefix's tokens (BPE joins a
prefix ending in punctuation with the separator: "(1650)" then "," gives ")," as one token) is
encoded whole, as `torch_model.encode_text_trimmed` (open_clip's own `encode_text` over the trimmed
context) does; so is every candidate of a tower this module cannot split (non-causal, custom blocks),
and every candidate when `reuse` is off (the plain chain the tests compare with).

Two runtimes: torch (`TorchPrefixEncoder`, open_clip's own modules) and ONNX Runtime
(`onnx_prefix.OnnxPrefixEncoder`, over the export's prefix-cache graphs). Both count what they ran.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, Sequence

import numpy as np
import numpy.typing as npt

from ..models.batching import length_batches

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..models.torch_model import LoadedModel

F32 = npt.NDArray[np.float32]
Ids = Sequence[int]
MAX_BATCH_TOKENS = 8192  # suffix tokens per forward pass (rows × the batch's longest suffix)


@dataclass
class Counts:
    encodes: int = 0  # candidate prompts encoded (each one text encode, whichever way)
    by_suffix: int = 0  # of those, run as their own tokens after a cached prefix
    whole: int = 0  # of those, run whole (the prefix's tokens changed, or no reuse)
    prefixes: int = 0  # prefixes run to fill the cache
    tokens: int = 0  # token positions run through the blocks


class PrefixEncoder(Protocol):
    counts: Counts
    reuse: bool

    def texts(self, rows: Sequence[Ids]) -> F32:
        """Normalised embeddings of whole token rows ([start, …, end], ≤ the context)."""
        ...

    def after(self, prefix: Ids, rows: Sequence[Ids]) -> F32:
        """Normalised embeddings of rows; those beginning with `prefix` ([start, …], no end token) reuse
        its keys and values, the others run whole."""
        ...

    def ends(self, head: Ids, cuts: Sequence[int]) -> F32:
        """Normalised embeddings of head[:cut] + [end] for each cut, from one cache of `head`."""
        ...


def split_rows(prefix: Ids, rows: Sequence[Ids], reuse: bool) -> tuple[list[int], list[int]]:
    """Indices of the rows that begin with `prefix` (and go on after it), and of the others."""
    p = len(prefix)
    head = list(prefix)
    by_suffix, whole = [], []
    for i, row in enumerate(rows):
        if reuse and p and len(row) > p and list(row[:p]) == head:
            by_suffix.append(i)
        else:
            whole.append(i)
    return by_suffix, whole


def padded(rows: Sequence[Ids]) -> npt.NDArray[np.int64]:
    width = max(2, max(len(r) for r in rows))
    out = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def normalise(x: npt.NDArray[Any]) -> F32:
    x = np.asarray(x, dtype=np.float32)
    return np.asarray(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), np.float32(1e-12)), dtype=np.float32)


def torch_splittable(model: Any) -> bool:
    """open_clip's causal CLIP text tower of plain residual blocks (nn.MultiheadAttention, batch first),
    pooled at the end token: the tower this module runs block by block."""
    import torch
    from open_clip.transformer import ResidualAttentionBlock

    from ..models.torch_model import supports_trimming

    if not supports_trimming(model) or not getattr(model.transformer, "batch_first", False):
        return False
    return all(
        type(b) is ResidualAttentionBlock and isinstance(b.attn, torch.nn.MultiheadAttention)
        and b.attn.batch_first and b.attn.in_proj_weight is not None and not hasattr(b, "ln_1_kv")
        for b in model.transformer.resblocks
    )


class TorchPrefixEncoder:
    """The torch runtime: open_clip's modules, run block by block with a cache of the prefix."""

    def __init__(self, loaded: "LoadedModel", reuse: bool = True, batch_size: int = 256):
        self.loaded = loaded
        self.model = loaded.model
        self.device = loaded.device
        self.reuse = reuse and torch_splittable(self.model)
        self.batch_size = batch_size
        self.counts = Counts()
        self._last: tuple[tuple[int, ...], list[Any] | None] = ((), None)  # the last prefix and its cache

    # -- whole rows ------------------------------------------------------------------------------
    def texts(self, rows: Sequence[Ids]) -> F32:
        import torch

        from ..models.torch_model import encode_text_trimmed

        out = np.empty((len(rows), self.loaded.dim), dtype=np.float32)
        if not rows:
            return out
        lengths = np.array([len(r) for r in rows])
        with torch.inference_mode():
            for idx in length_batches(lengths, self.batch_size, MAX_BATCH_TOKENS):
                batch = torch.from_numpy(padded([rows[i] for i in idx])).to(self.device)
                feats = encode_text_trimmed(self.model, batch)
                out[idx] = torch.nn.functional.normalize(feats.float(), dim=-1).cpu().numpy()
                self.counts.tokens += int(batch.numel())
        self.counts.encodes += len(rows)
        self.counts.whole += len(rows)
        return out

    # -- after a prefix ----------------------------------------------------------------------------
    def after(self, prefix: Ids, rows: Sequence[Ids]) -> F32:
        by_suffix, whole = split_rows(prefix, rows, self.reuse)
        out = np.empty((len(rows), self.loaded.dim), dtype=np.float32)
        if whole:
            out[whole] = self.texts([rows[i] for i in whole])
        if by_suffix:
            out[by_suffix] = self._suffixes(prefix, [rows[i][len(prefix):] for i in by_suffix])
        return out

    def ends(self, head: Ids, cuts: Sequence[int]) -> F32:
        import torch

        eot = int(self.loaded.tokenizer.eot_token_id)
        if not self.reuse or not cuts:
            return self.texts([[*head[:c], eot] for c in cuts])
        model = self.model
        p, b = len(head), len(cuts)
        with torch.inference_mode():
            cache = self.prefix_cache(head)
            mask = torch.zeros(b, 1, 1, p + 1, dtype=torch.bool, device=self.device)
            for i, c in enumerate(cuts):
                mask[i, 0, 0, :c] = True
            mask[:, 0, 0, p] = True  # each end token sees the head up to its cut, and itself
            cast = model.transformer.get_cast_dtype()
            tokens = torch.full((b, 1), eot, dtype=torch.long, device=self.device)
            at = torch.as_tensor(list(cuts), device=self.device)
            x = model.token_embedding(tokens).to(cast) + model.positional_embedding[at].unsqueeze(1).to(cast)
            for block, past in zip(model.transformer.resblocks, cache):
                x, _, _ = self._block(block, x, past, mask)
            out = self._pool(x[:, 0])
        self.counts.encodes += b
        self.counts.by_suffix += b
        self.counts.tokens += b
        return out

    def _pool(self, x: "torch.Tensor") -> F32:
        import torch

        model = self.model
        pooled = model.ln_final(x)
        if model.text_projection is not None:
            if isinstance(model.text_projection, torch.nn.Linear):
                pooled = model.text_projection(pooled)
            else:
                pooled = pooled @ model.text_projection
        return torch.nn.functional.normalize(pooled.float(), dim=-1).cpu().numpy()  # type: ignore[no-any-return]

    def _block(self, block: Any, x: "torch.Tensor", past: tuple["torch.Tensor", "torch.Tensor"] | None,
               mask: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"]:
        """One ResidualAttentionBlock over x (B, L, D) after `past` keys and values (1, H, P, hd)."""
        import torch
        import torch.nn.functional as F

        mha = block.attn
        b, n, d = x.shape
        heads = mha.num_heads
        q, k, v = F.linear(block.ln_1(x), mha.in_proj_weight, mha.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.view(b, n, heads, d // heads).transpose(1, 2) for t in (q, k, v))
        keys, values = k, v
        if past is not None:
            keys = torch.cat([past[0].expand(b, -1, -1, -1), k], dim=2)
            values = torch.cat([past[1].expand(b, -1, -1, -1), v], dim=2)
        o = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        o = mha.out_proj(o.transpose(1, 2).reshape(b, n, d))
        x = x + block.ls_1(o)
        x = x + block.ls_2(block.mlp(block.ln_2(x)))
        return x, k, v

    def _embed(self, tokens: "torch.Tensor", start: int) -> "torch.Tensor":
        model = self.model
        cast = model.transformer.get_cast_dtype()
        x = model.token_embedding(tokens).to(cast)
        return x + model.positional_embedding[start : start + tokens.shape[1]].to(cast)

    def prefix_cache(self, prefix: Ids) -> list[tuple["torch.Tensor", "torch.Tensor"]]:
        """Each block's keys and values over `prefix`; a prefix that extends the last one runs only its
        new tokens after the last one's cache."""
        import torch

        key = tuple(int(t) for t in prefix)
        known, cache = self._last
        start = len(known) if cache is not None and key[: len(known)] == known and len(key) >= len(known) else 0
        if start == len(key) and cache is not None:
            return cache
        tokens = torch.tensor([list(key[start:])], dtype=torch.long, device=self.device)
        n = tokens.shape[1]
        mask = torch.ones(n, start + n, dtype=torch.bool, device=self.device).tril(diagonal=start)
        x = self._embed(tokens, start)
        out = []
        for i, block in enumerate(self.model.transformer.resblocks):
            past = cache[i] if start and cache is not None else None
            x, k, v = self._block(block, x, past, mask)
            out.append((torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)) if past is not None else (k, v))
        self._last = (key, out)
        self.counts.prefixes += 1
        self.counts.tokens += n
        return out

    def _suffixes(self, prefix: Ids, suffixes: Sequence[Ids]) -> F32:
        import torch

        model = self.model
        p = len(prefix)
        out = np.empty((len(suffixes), self.loaded.dim), dtype=np.float32)
        lengths = np.array([len(s) for s in suffixes])
        with torch.inference_mode():
            cache = self.prefix_cache(prefix)
            for idx in length_batches(lengths, self.batch_size, MAX_BATCH_TOKENS):
                rows = [suffixes[i] for i in idx]
                width = max(len(r) for r in rows)
                tokens = np.zeros((len(rows), width), dtype=np.int64)
                for j, r in enumerate(rows):
                    tokens[j, : len(r)] = r
                t = torch.from_numpy(tokens).to(self.device)
                # suffix position i sees the whole prefix and suffix positions ≤ i
                mask = torch.ones(width, p + width, dtype=torch.bool, device=self.device).tril(diagonal=p)
                x = self._embed(t, p)
                for block, past in zip(model.transformer.resblocks, cache):
                    x, _, _ = self._block(block, x, past, mask)
                ends = torch.as_tensor(lengths[idx] - 1, device=self.device)
                out[idx] = self._pool(x[torch.arange(len(rows), device=self.device), ends])
                self.counts.tokens += int(t.numel())
        self.counts.encodes += len(suffixes)
        self.counts.by_suffix += len(suffixes)
        return out


__all__ = ["Counts", "PrefixEncoder", "TorchPrefixEncoder", "normalise", "padded", "split_rows", "torch_splittable"]
