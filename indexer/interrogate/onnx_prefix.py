"""The chain's text tower on ONNX Runtime: one graph that runs single tokens after cached keys and
values, so ONNX Runtime, like torch (`prefix`), runs only each candidate's own tokens, as a token
tree (`tree`), after the prefix all of a step's rows share.

The graph (`text_prefix.onnx`, exported from open_clip's own modules by `export_prefix`) takes

- `tokens` int64 (n,) and `positions` int64 (n,): the tokens of one level of a tree, and where they sit;
- `past_keys`, `past_values` float32 (layers, heads, P, head width) and `past_bias` (P,): the prefix's
  keys and values (0 to attend, -inf to ignore: a prefix cannot be empty in ONNX, so the first token
  runs after one ignored slot);
- `path_keys`, `path_values` float32 (n, A, layers, heads, head width) and `path_bias` (n, A): each
  token's own path after the prefix (nearest last);

and gives each token's `keys`, `values` (n, layers, heads, head width) and `features` (n, D): the
text features had the token been a row's end. Exported only for towers `prefix.torch_splittable`
accepts (open_clip's causal CLIP tower of plain blocks); the export runs the graph in ONNX Runtime
against open_clip's own encode on a few rows before it is kept (a difference over PARITY_LIMIT: refused,
NotExportable), beside the model's export in `<export dir>.prefix/`, with a manifest of its own.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import numpy.typing as npt

from ..errors import NotExportable
from .prefix import F32, Counts, Ids, normalise
from .tree import Tree, chunks, common_start

if TYPE_CHECKING:  # pragma: no cover
    from ..models.torch_model import LoadedModel
    from .prefix import TorchPrefixEncoder

GRAPH_FILE = "text_prefix.onnx"
MANIFEST = "prefix_manifest.json"
FORMAT = 1
OPSET = 18
PARITY_LIMIT = 1e-4
MAX_TREE_TOKENS = 2048
INPUTS = ("tokens", "positions", "past_keys", "past_values", "past_bias", "path_keys", "path_values", "path_bias")
OUTPUTS = ("keys", "values", "features")


def prefix_dir(export_directory: Path) -> Path:
    return Path(export_directory).parent / f"{Path(export_directory).name}.prefix"


def _graph_module(loaded: "LoadedModel") -> Any:
    import torch
    import torch.nn.functional as F

    model = loaded.model

    class Step(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.clip = model

        def forward(self, tokens: torch.Tensor, positions: torch.Tensor, past_keys: torch.Tensor, past_values: torch.Tensor,
                    past_bias: torch.Tensor, path_keys: torch.Tensor, path_values: torch.Tensor,
                    path_bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            m = self.clip
            x = m.token_embedding(tokens) + m.positional_embedding[positions]
            n, d = x.shape
            ks, vs = [], []
            zero = torch.zeros_like(path_bias[:, :1])
            bias = torch.cat([past_bias.unsqueeze(0).expand(n, -1), path_bias, zero], dim=1).unsqueeze(1)  # (n, 1, P+A+1)
            for i, block in enumerate(m.transformer.resblocks):
                mha = block.attn
                heads = mha.num_heads
                q, k, v = F.linear(block.ln_1(x), mha.in_proj_weight, mha.in_proj_bias).view(n, 3, heads, d // heads).unbind(1)
                ks.append(k)
                vs.append(v)
                q = q * (d // heads) ** -0.5
                pk = torch.cat([path_keys[:, :, i], k.unsqueeze(1)], dim=1)  # (n, A+1, H, hd)
                pv = torch.cat([path_values[:, :, i], v.unsqueeze(1)], dim=1)
                s = torch.cat([torch.einsum("nhe,hpe->nhp", q, past_keys[i]), torch.einsum("nhe,nahe->nha", q, pk)], dim=2)
                p = torch.softmax(s + bias, dim=-1)
                past = past_keys.shape[2]
                o = torch.einsum("nhp,hpe->nhe", p[:, :, :past], past_values[i]) + torch.einsum("nha,nahe->nhe", p[:, :, past:], pv)
                x = x + block.ls_1(mha.out_proj(o.reshape(n, d)))
                x = x + block.ls_2(block.mlp(block.ln_2(x)))
            x = m.ln_final(x)
            if m.text_projection is not None:
                x = m.text_projection(x) if isinstance(m.text_projection, torch.nn.Linear) else x @ m.text_projection
            return torch.stack(ks, dim=1), torch.stack(vs, dim=1), x

    return Step().eval()


def _example(loaded: "LoadedModel", n: int = 3, past: int = 4, path: int = 2) -> tuple[Any, ...]:
    import torch

    model = loaded.model
    blocks = len(model.transformer.resblocks)
    heads = model.transformer.resblocks[0].attn.num_heads
    hd = model.positional_embedding.shape[1] // heads
    g = torch.Generator().manual_seed(0)
    return (
        torch.tensor([5, 7, 9][:n] + [11] * max(0, n - 3), dtype=torch.long), torch.arange(past, past + n, dtype=torch.long),
        torch.randn(blocks, heads, past, hd, generator=g), torch.randn(blocks, heads, past, hd, generator=g), torch.zeros(past),
        torch.randn(n, path, blocks, heads, hd, generator=g), torch.randn(n, path, blocks, heads, hd, generator=g),
        torch.zeros(n, path),
    )


def export_prefix(loaded: "LoadedModel", export_directory: Path) -> Path:
    """The prefix graph of `loaded` beside its export (see the module's docstring); kept if there."""
    from .prefix import torch_splittable

    target = prefix_dir(export_directory)
    key = loaded.spec.key()
    if _manifest(target, key) is not None:
        return target
    if not torch_splittable(loaded.model):
        raise NotExportable(f"{loaded.spec.name}: its text tower cannot run after cached keys and values")
    import torch

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        n, past, path = torch.export.Dim("n", min=1), torch.export.Dim("past", min=1), torch.export.Dim("path", min=1)
        shapes = {"tokens": {0: n}, "positions": {0: n}, "past_keys": {2: past}, "past_values": {2: past},
                  "past_bias": {0: past}, "path_keys": {0: n, 1: path}, "path_values": {0: n, 1: path},
                  "path_bias": {0: n, 1: path}}
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(_graph_module(loaded), _example(loaded), None, input_names=list(INPUTS),
                                        output_names=list(OUTPUTS), opset_version=OPSET, dynamo=True,
                                        dynamic_shapes=shapes, external_data=True, verbose=False)
            if program is None:  # pragma: no cover
                raise RuntimeError("torch.onnx.export returned no program")
            program.save(str(tmp / GRAPH_FILE), external_data=True)
        worst = _parity(loaded, tmp)
        if not worst <= PARITY_LIMIT:
            raise NotExportable(f"{loaded.spec.name}: the prefix graph differs from open_clip's encode by {worst:.2g}")
        (tmp / MANIFEST).write_text(json.dumps({"format": FORMAT, "model_key": key, "file": GRAPH_FILE,
                                                "parity": worst}, indent=2) + "\n", encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    except NotExportable:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise NotExportable(f"{loaded.spec.name}: the prefix graph could not be exported: {type(exc).__name__}: {exc}") from exc
    return target


def _manifest(directory: Path, key: str) -> dict[str, Any] | None:
    try:
        data = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("model_key") != key:
        return None
    return data if (directory / str(data.get("file"))).is_file() else None


def _parity(loaded: "LoadedModel", directory: Path) -> float:
    from .prefix import TorchPrefixEncoder

    tok = loaded.tokenizer
    texts = ["a photo", "a photo of a cat", "a photo of a dog, by an artist", "an oil painting (1650), dark"]
    rows = [[int(tok.sot_token_id), *tok.encode(t), int(tok.eot_token_id)] for t in texts]
    enc = OnnxPrefixEncoder(directory, eot=int(tok.eot_token_id))
    got = np.concatenate([enc.texts(rows), enc.after(rows[1][:-1], rows[1:])])
    want = TorchPrefixEncoder(loaded, reuse=False).texts(rows + rows[1:])
    return float(np.abs(got - want).max())


class OnnxPrefixEncoder:
    """`prefix.PrefixEncoder` on ONNX Runtime over the prefix graph in `directory` (`export_prefix`);
    needs neither torch nor open_clip.

    The graph runs a level of a tree as one call, but a row's own tokens only one call a token (each
    needs the keys of the one before it in every block). With `whole` (open_clip's tower on torch, as
    `prefix.TorchPrefixEncoder`), what is one row runs there in one causal pass: the prefix's keys and
    values, whole rows (`texts`) and the end tokens of one row's cuts (`ends`); ONNX Runtime runs the
    trees of candidates. Without it, a 76-token prompt is 76 calls (about 1.5 s for ViT-B-32)."""

    def __init__(self, directory: Path, eot: int, threads: int = 0, whole: "TorchPrefixEncoder | None" = None):
        graph = Path(directory) / GRAPH_FILE
        stat = graph.stat()  # a graph exported anew at the same path is a new session
        self.session = _session(str(graph), stat.st_mtime_ns, stat.st_size, threads)
        self.eot = eot
        self.reuse = True
        self.counts = Counts()
        meta = {i.name: i.shape for i in self.session.get_inputs()}
        self.layers, self.heads, _, self.head_width = (int(s) for s in meta["past_keys"][:2] + [0] + meta["past_keys"][3:])
        self.dim = int(self.session.get_outputs()[2].shape[1])
        self._last: tuple[tuple[int, ...], npt.NDArray[np.float32], npt.NDArray[np.float32]] | None = None
        self.whole = whole if whole is not None and whole.reuse else None
        if self.whole is not None:
            self.whole.counts = self.counts  # one count of what ran, whichever runtime ran it

    def _run(self, tokens: npt.NDArray[np.int64], positions: npt.NDArray[np.int64], past: tuple[Any, Any],
             path_k: npt.NDArray[np.float32], path_v: npt.NDArray[np.float32]) -> list[Any]:
        n = len(tokens)
        past_k, past_v = past
        bias = np.zeros(past_k.shape[2], dtype=np.float32)
        if past_k.shape[2] == 0:  # no prefix: one ignored slot
            past_k = past_v = np.zeros((self.layers, self.heads, 1, self.head_width), dtype=np.float32)
            bias = np.full(1, -np.inf, dtype=np.float32)
        path_bias = np.zeros((n, path_k.shape[1]), dtype=np.float32)
        if path_k.shape[1] == 0:
            path_k = path_v = np.zeros((n, 1, self.layers, self.heads, self.head_width), dtype=np.float32)
            path_bias = np.full((n, 1), -np.inf, dtype=np.float32)
        self.counts.tokens += n
        return self.session.run(list(OUTPUTS), {  # type: ignore[no-any-return]
            "tokens": tokens, "positions": positions, "past_keys": past_k, "past_values": past_v, "past_bias": bias,
            "path_keys": path_k, "path_values": path_v, "path_bias": path_bias})

    def prefix_cache(self, prefix: Ids) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Keys and values (layers, heads, P, head width) over `prefix`, extending the last prefix's."""
        key = tuple(int(t) for t in prefix)
        empty = np.zeros((self.layers, self.heads, 0, self.head_width), dtype=np.float32)
        start, past_k, past_v = 0, empty, empty
        if self._last is not None:
            known, k, v = self._last
            while start < min(len(known), len(key)) and known[start] == key[start]:
                start += 1
            past_k, past_v = k[:, :, :start], v[:, :, :start]
        if start < len(key) and self.whole is not None:  # one causal pass on torch (extending its own last prefix)
            import torch

            with torch.inference_mode():
                cache = self.whole.prefix_cache(key)
            past_k = np.stack([k[0].float().cpu().numpy() for k, _ in cache])
            past_v = np.stack([v[0].float().cpu().numpy() for _, v in cache])
        elif start < len(key):
            new = np.asarray(key[start:], dtype=np.int64)
            ks, vs, _ = self._tree_states(_path_tree(new), start, (past_k, past_v))
            past_k = np.concatenate([past_k, ks.transpose(1, 2, 0, 3)], axis=2)
            past_v = np.concatenate([past_v, vs.transpose(1, 2, 0, 3)], axis=2)
            self.counts.prefixes += 1
        self._last = (key, past_k, past_v)
        return past_k, past_v

    def _tree_states(self, tree: Tree, at: int, past: tuple[Any, Any]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], F32]:
        keys = np.empty((tree.size, self.layers, self.heads, self.head_width), dtype=np.float32)
        values = np.empty_like(keys)
        feats = []
        for depth, level in enumerate(tree.levels):
            n = len(level.tokens)
            k, v, f = self._run(level.tokens, np.full(n, at + depth, dtype=np.int64), past,
                                keys[level.ancestors], values[level.ancestors])
            keys[level.start: level.start + n], values[level.start: level.start + n] = k, v
            if len(level.outputs):
                feats.append(f[level.outputs])
        out = np.concatenate(feats) if feats else np.zeros((0, self.dim), dtype=np.float32)
        return keys, values, out

    def _rows(self, rows: Sequence[Ids], common: int) -> F32:
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        cache = self.prefix_cache(rows[0][:common])
        suffixes = [r[common:] for r in rows]
        for tree in chunks(suffixes, MAX_TREE_TOKENS):
            _, _, feats = self._tree_states(tree, common, cache)
            out[tree.rows] = normalise(feats[[tree.out_index[int(node)] for node in tree.end_node]])
        return out

    def texts(self, rows: Sequence[Ids]) -> F32:
        """Whole rows, after their shared start token(s) only."""
        if not rows:
            return np.empty((0, self.dim), dtype=np.float32)
        if self.whole is not None:
            return self.whole.texts(rows)
        self.counts.encodes += len(rows)
        self.counts.whole += len(rows)
        return self._rows(rows, common_start(rows))

    def after(self, prefix: Ids, rows: Sequence[Ids]) -> F32:
        from .prefix import split_rows

        if not rows:
            return np.empty((0, self.dim), dtype=np.float32)
        self.counts.encodes += len(rows)
        self.counts.by_suffix += len(rows)
        self.counts.diverged += len(split_rows(prefix, rows, True)[1])
        return self._rows(rows, common_start(rows))

    def ends(self, head: Ids, cuts: Sequence[int]) -> F32:
        if self.whole is not None:
            return self.whole.ends(head, cuts)
        return self.after(head[:1], [[*head[:c], self.eot] for c in cuts])


@functools.lru_cache(maxsize=8)
def _session(path: str, mtime_ns: int, size: int, threads: int) -> Any:
    """One ONNX Runtime session of a graph file a process (its `run` may be called from several threads;
    making one costs about 80 ms for ViT-B-32's, more than a `fast` interrogation's text tower)."""
    import onnxruntime as ort

    from ..models.onnx_model import session_options

    return ort.InferenceSession(path, sess_options=session_options(threads), providers=["CPUExecutionProvider"])


def _path_tree(tokens: npt.NDArray[np.int64]) -> Tree:
    """The tree of one row (a prefix's new tokens): a level a token."""
    from .tree import build

    return build([[int(t) for t in tokens]], [0])


__all__ = ["GRAPH_FILE", "OnnxPrefixEncoder", "export_prefix", "prefix_dir"]
