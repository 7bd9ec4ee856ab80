"""Cosines of queries against an index matrix: the one product on the scoring path.

float32 matrices (the default) go through numpy's BLAS and are exact. float16 matrices (compact
indexes, CLIP_GAZE_COMPACT_INDEXES=1) go through torch's half-precision kernel when torch is loaded
(half the memory traffic, so about twice as fast on a large vocabulary); otherwise (ONNX Runtime
serves, torch is never imported) through float32 BLAS over blocks of rows converted one at a time,
since numpy has no fast float16 product.
"""

from __future__ import annotations

import sys

import numpy as np
import numpy.typing as npt

BLOCK = 16_384  # float16 rows converted to float32 at a time without torch (32 MB at 512 dimensions)


def cosines(matrix: npt.NDArray[np.floating], queries: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
    """(n, d) rows × (b, d) queries → (n, b) float32 cosines (inputs are L2-normalised)."""
    queries = np.atleast_2d(queries)
    if matrix.shape[0] == 0:
        return np.empty((0, queries.shape[0]), dtype=np.float32)
    if matrix.dtype == np.float16 and "torch" not in sys.modules:
        q32 = np.ascontiguousarray(queries, dtype=np.float32).T
        out = np.empty((matrix.shape[0], q32.shape[1]), dtype=np.float32)
        for start in range(0, matrix.shape[0], BLOCK):
            out[start : start + BLOCK] = matrix[start : start + BLOCK].astype(np.float32) @ q32
        return out
    if matrix.dtype == np.float16:
        import torch

        m = torch.from_numpy(matrix)
        q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float16))
        if q.shape[0] == 1:
            return torch.mv(m, q[0]).float().numpy().reshape(-1, 1)
        return torch.stack([torch.mv(m, row) for row in q], dim=1).float().numpy()
    return np.asarray(matrix @ np.ascontiguousarray(queries, dtype=np.float32).T, dtype=np.float32)
