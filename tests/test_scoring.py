from __future__ import annotations

import sys

import numpy as np
import pytest

from indexer.scoring.kernels import cosines
from indexer.scoring.softmax import normalise, scores_from_cosines


def softmax_top_k(matrix, q, scale, top_k=None):
    """The engine's path: the cosine kernel, then the exact softmax."""
    return scores_from_cosines(cosines(matrix, q)[:, 0], scale, top_k)


def _reference(matrix, q, scale):
    logits = scale * (matrix.astype(np.float64) @ q.astype(np.float64))
    e = np.exp(logits - logits.max())
    return e / e.sum(), logits


def test_softmax_over_the_whole_list_matches_a_float64_reference():
    rng = np.random.default_rng(0)
    matrix = normalise(rng.normal(size=(500, 32)))
    q = normalise(rng.normal(size=32))
    s = softmax_top_k(matrix, q, 100.0, top_k=5)
    probs, logits = _reference(matrix, q, 100.0)
    best = np.argsort(-probs)[:5]
    assert list(s.indices) == list(best)
    np.testing.assert_allclose(s.probabilities, probs[best], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(s.logits, logits[best], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(s.cosines * 100.0, s.logits, rtol=1e-6)
    assert s.softmax_over == 500


def test_probabilities_of_all_phrases_sum_to_one_and_are_sorted():
    rng = np.random.default_rng(1)
    matrix = normalise(rng.normal(size=(50, 8)))
    s = softmax_top_k(matrix, normalise(rng.normal(size=8)), 30.0)
    assert len(s.indices) == 50 and sorted(s.indices) == list(range(50))
    assert abs(s.probabilities.sum() - 1) < 1e-9
    assert np.all(np.diff(s.probabilities) <= 0)


def test_top_k_larger_than_the_list_returns_the_list_and_empty_lists_are_empty():
    s = scores_from_cosines(np.array([0.1, 0.3]), 10.0, top_k=10)
    assert list(s.indices) == [1, 0]
    assert scores_from_cosines(np.array([]), 10.0, top_k=3).softmax_over == 0


def test_float16_storage_changes_probabilities_by_less_than_1e_3():
    rng = np.random.default_rng(2)
    matrix = normalise(rng.normal(size=(5000, 512)))
    q = normalise(rng.normal(size=512))
    full = softmax_top_k(matrix, q, 100.0)
    half = softmax_top_k(matrix.astype(np.float16), q, 100.0)
    p_full = np.empty(5000)
    p_full[full.indices] = full.probabilities
    p_half = np.empty(5000)
    p_half[half.indices] = half.probabilities
    assert np.abs(p_full - p_half).max() < 1e-3


def test_batch_scoring_equals_one_by_one():
    rng = np.random.default_rng(3)
    matrix = normalise(rng.normal(size=(300, 16)))
    queries = normalise(rng.normal(size=(4, 16)))
    cos = cosines(matrix, queries)  # one product for all queries, as the engine scores a batch
    batch = [scores_from_cosines(cos[:, j], 50.0, 7) for j in range(len(queries))]
    for q, b in zip(queries, batch):
        single = softmax_top_k(matrix, q, 50.0, top_k=7)
        assert list(single.indices) == list(b.indices)
        np.testing.assert_allclose(single.probabilities, b.probabilities, rtol=1e-5)  # GEMM vs GEMV order


@pytest.mark.parametrize("with_torch", [True, False])
def test_many_pictures_at_once_score_exactly_as_one_by_one(with_torch, monkeypatch):
    from indexer.scoring.softmax import scores_from_cosine_rows

    if with_torch:
        import torch  # noqa: F401  (its top-k is used when loaded)
    else:
        monkeypatch.setitem(sys.modules, "torch", None)

    rng = np.random.default_rng(4)
    matrix = normalise(rng.normal(size=(957, 32)))
    pictures = normalise(rng.normal(size=(50, 32)))
    cos = (pictures @ matrix.T).astype(np.float32)
    rows = scores_from_cosine_rows(cos, 100.0, 7)
    for j in range(len(pictures)):
        one = scores_from_cosines(cos[j], 100.0, 7)
        assert list(rows.indices[j]) == list(one.indices)
        np.testing.assert_allclose(rows.probabilities[j], one.probabilities, rtol=1e-6)  # float32 exp, float64 sum
        np.testing.assert_allclose(rows.logits[j], one.logits, rtol=1e-12)
    assert rows.softmax_over == 957 and rows.indices.shape == (50, 7)


def test_float16_cosines_without_torch_match_the_torch_kernel(monkeypatch: pytest.MonkeyPatch):
    """Where ONNX Runtime serves, torch is never imported: compact indexes then go through float32 BLAS
    over converted blocks (several blocks here), and agree with torch's half kernel and with float32."""
    import torch  # noqa: F401  (loaded, so the first call takes torch's kernel)

    from indexer.scoring import kernels

    rng = np.random.default_rng(3)
    matrix = rng.standard_normal((2500, 32)).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    queries = matrix[[5, 7, 2400]] + 0.1
    half = matrix.astype(np.float16)
    with_torch = kernels.cosines(half, queries)
    monkeypatch.setattr(kernels, "BLOCK", 1000)
    monkeypatch.delitem(sys.modules, "torch")
    without = kernels.cosines(half, queries)
    exact = matrix @ queries.T
    assert without.shape == with_torch.shape == (2500, 3)
    assert np.abs(without - exact).max() < 5e-3
    assert np.abs(without - with_torch).max() < 5e-3
    assert np.allclose(without[1000:2000], half[1000:2000].astype(np.float32) @ queries.T.astype(np.float32), atol=1e-6)


@pytest.mark.parametrize("with_torch", [True, False])
def test_scores_from_the_cosine_kernels_layout_are_those_of_its_transpose_bit_for_bit(with_torch, monkeypatch):
    """`scores_from_cosine_columns` (phrases × pictures, as `cosines` returns) against
    `scores_from_cosine_rows` on the transposed view, as analysis computed them before."""
    from indexer.scoring.softmax import scores_from_cosine_columns, scores_from_cosine_rows

    if not with_torch:
        monkeypatch.setitem(sys.modules, "torch", None)
    rng = np.random.default_rng(5)
    for phrases, pictures, k, scale in ((957, 300, 5, 100.0), (957, 64, 1, 14.3), (2000, 40, 20, 100.0),
                                        (300, 17, 3, 50.0), (40, 9, 5, 100.0), (12, 5, 12, 10.0), (957, 8, 1000, 100.0)):
        cos = cosines(normalise(rng.normal(size=(phrases, 24))), normalise(rng.normal(size=(pictures, 24))))
        want = scores_from_cosine_rows(cos.T, scale, k)
        got = scores_from_cosine_columns(cos.copy(), scale, k)
        for field in ("indices", "probabilities", "cosines", "logits"):
            assert np.array_equal(getattr(got, field), getattr(want, field)), (phrases, k, field)
        assert got.softmax_over == phrases and got.indices.shape == (pictures, min(k, phrases))


def test_scores_from_cosine_columns_put_tied_phrases_in_their_order_and_survive_nan():
    from indexer.scoring.softmax import scores_from_cosine_columns, scores_from_cosine_rows

    rng = np.random.default_rng(6)
    cos = rng.uniform(-0.2, 0.2, size=(500, 30)).astype(np.float32)
    cos[[7, 300, 450]] = 0.5  # three phrases with the same embedding: tied for first everywhere
    got = scores_from_cosine_columns(cos.copy(), 100.0, 2)
    assert (got.indices == [7, 300]).all() and (got.probabilities[:, 0] == got.probabilities[:, 1]).all()
    cos[3, 4] = np.nan  # a NaN in one picture's column: the general path, which numpy and torch agree on
    want = scores_from_cosine_rows(cos.T, 100.0, 2)
    got = scores_from_cosine_columns(cos.copy(), 100.0, 2)
    assert np.array_equal(got.probabilities, want.probabilities, equal_nan=True) and got.indices.shape == (30, 2)
