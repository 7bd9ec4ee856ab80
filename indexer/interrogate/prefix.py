"""The text tower over one prefix and many suffixes: every candidate "prompt so far, phrase" of a chain
step shares the prefix's keys and values (CLIP's text tower is causal), so they are computed once per
step (extending the last step's: only the chosen phrase's tokens run) and only each candidate's own
tokens run through the blocks, as a token tree (`tree`): the start all of a step's rows share (the
prompt so far and the separator's ",") is the cached prefix, and a token shared by several
candidates' starts ("by" of "by …", "oil" of "oil painting") runs once; no padding. In the last block
only the tokens that end a row run past their keys and values.

Exact by construction (the same sums, in another order: within 1e-6 of open_clip's own encode). A
candidate whose tokens do not begin with the prefix's tokens (BPE joins a prefix ending in
punctuation with the separator: "(1650)" then "," gives ")," as one token) runs after the start it
does share (`counts.diverged`); a tower this module cannot split (non-causal, custom blocks), and
every candidate when `reuse` is off (the plain chain the tests compare with), is encoded whole, as
`torch_model.encode_text_trimmed` (open_clip's own `encode_text` over the trimmed context) does.

No candidate is skipped: no sound bound on a candidate's cosine short of running its tokens was found
(README "The prompt a generator would answer to", "What is exact"). Counts say what ran.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, Sequence

import numpy as np
import numpy.typing as npt

from ..models.batching import length_batches
from .tree import Tree, chunks, common_start

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..models.torch_model import LoadedModel

F32 = npt.NDArray[np.float32]
Ids = Sequence[int]
MAX_BATCH_TOKENS = 8192  # tokens per forward pass of whole rows (rows × the batch's longest)
MAX_TREE_TOKENS = 3072  # token positions per tree of suffixes (bounds the memory of their keys and values)


@dataclass
class Counts:
    encodes: int = 0  # candidate prompts encoded (each one text encode, whichever way)
    by_suffix: int = 0  # of those, run as their own tokens after a cached prefix
    whole: int = 0  # of those, run whole (the prefix's tokens changed, or no reuse)
    prefixes: int = 0  # prefixes run to fill the cache
    tokens: int = 0  # token positions run through the blocks
    diverged: int = 0  # of those after a cached prefix, rows whose tokens changed the step's prompt so far


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
        """Every row after the longest start all of them share (at least `prefix` when every row begins
        with it; shorter when a row's tokens change the prefix's, e.g. ")" then "," as "),"), the rest
        of the rows as a token tree (`tree`): each distinct start of a suffix runs once."""
        if not self.reuse or not rows:
            return self.texts(rows)
        import torch

        common = common_start(rows)
        out = np.empty((len(rows), self.loaded.dim), dtype=np.float32)
        suffixes = [r[common:] for r in rows]
        with torch.inference_mode():
            cache = self.prefix_cache(rows[0][:common])
            for tree in chunks(suffixes, MAX_TREE_TOKENS):
                out[tree.rows] = self._run_tree(tree, common, cache)
        self.counts.encodes += len(rows)
        self.counts.by_suffix += len(rows)
        self.counts.diverged += len(split_rows(prefix, rows, True)[1])
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
        start = 0
        if cache is not None:  # the longest start shared with the last prefix: its keys and values hold
            while start < min(len(known), len(key)) and known[start] == key[start]:
                start += 1
            if start < len(known):
                cache = [(k[:, :, :start], v[:, :, :start]) for k, v in cache]
        if start == len(key) and cache is not None:
            self._last = (key, cache)
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

    def _run_tree(self, tree: Tree, at: int, cache: list[tuple["torch.Tensor", "torch.Tensor"]]) -> F32:
        """The normalised embeddings of a tree's rows, level by level after the cached prefix (`at`
        tokens): each level one batch of single tokens, attending to the prefix and to its path."""
        import torch

        model = self.model
        blocks = list(model.transformer.resblocks)
        last = len(blocks) - 1
        cast = model.transformer.get_cast_dtype()
        width = model.positional_embedding.shape[1]
        heads = blocks[0].attn.num_heads
        hd = width // heads
        keys = [torch.empty((tree.size, heads, hd), dtype=cast, device=self.device) for _ in blocks]
        values = [torch.empty((tree.size, heads, hd), dtype=cast, device=self.device) for _ in blocks]
        prefix = [(k[0], v[0]) for k, v in cache]  # (H, P, hd) each
        pooled = []
        for depth, level in enumerate(tree.levels):
            n = len(level.tokens)
            nodes = slice(level.start, level.start + n)
            tokens = torch.from_numpy(level.tokens).to(self.device)
            anc = torch.from_numpy(level.ancestors).to(self.device)
            x = model.token_embedding(tokens).to(cast) + model.positional_embedding[at + depth].to(cast)
            for i, block in enumerate(blocks):
                mha = block.attn
                h = block.ln_1(x)
                if i == last:  # only the keys and values of nodes no row ends at are needed
                    kv = torch.nn.functional.linear(h, mha.in_proj_weight[width:], mha.in_proj_bias[width:])
                    k, v = kv.view(n, 2, heads, hd).unbind(1)
                    keys[i][nodes], values[i][nodes] = k, v
                    if level.parents_only:
                        break
                    sel = torch.from_numpy(level.outputs).to(self.device)
                    x, h, k, v, anc = x[sel], h[sel], k[sel], v[sel], anc[sel]
                    q = torch.nn.functional.linear(h, mha.in_proj_weight[:width], mha.in_proj_bias[:width]).view(-1, heads, hd)
                else:
                    q, k, v = torch.nn.functional.linear(h, mha.in_proj_weight, mha.in_proj_bias).view(n, 3, heads, hd).unbind(1)
                    keys[i][nodes], values[i][nodes] = k, v
                o = self._attend(q, k, v, prefix[i], keys[i][anc], values[i][anc])
                x = x + block.ls_1(mha.out_proj(o))
                x = x + block.ls_2(block.mlp(block.ln_2(x)))
            if not level.parents_only:
                pooled.append(x)
            self.counts.tokens += n
        feats = self._pool(torch.cat(pooled))
        return feats[[tree.out_index[int(node)] for node in tree.end_node]]

    @staticmethod
    def _attend(q: "torch.Tensor", k: "torch.Tensor", v: "torch.Tensor", prefix: tuple["torch.Tensor", "torch.Tensor"],
                anc_k: "torch.Tensor", anc_v: "torch.Tensor") -> "torch.Tensor":
        """Attention of single tokens q, k, v (n, H, hd) over the shared prefix (H, P, hd) and each
        token's own path (n, d, H, hd), then itself; (n, H × hd)."""
        import torch

        n, heads, hd = q.shape
        scale = hd ** -0.5
        qh = q.transpose(0, 1) * scale  # (H, n, hd)
        s_pre = torch.bmm(qh, prefix[0].transpose(1, 2))  # (H, n, P)
        path_k = torch.cat([anc_k, k.unsqueeze(1)], dim=1)  # (n, d + 1, H, hd)
        path_v = torch.cat([anc_v, v.unsqueeze(1)], dim=1)
        s_path = torch.einsum("hne,nkhe->hnk", qh, path_k)
        p = torch.softmax(torch.cat([s_pre, s_path], dim=-1), dim=-1)
        pre = prefix[0].shape[1]
        o = torch.bmm(p[..., :pre], prefix[1]) + torch.einsum("hnk,nkhe->hne", p[..., pre:], path_v)
        return o.transpose(0, 1).reshape(n, heads * hd)


__all__ = ["Counts", "PrefixEncoder", "TorchPrefixEncoder", "normalise", "padded", "split_rows", "torch_splittable"]
