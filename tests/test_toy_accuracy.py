"""GUIDE §3: the toy model classifies pictures drawn independently of its training code."""

from __future__ import annotations

import numpy as np
import pytest

import shapes


@pytest.fixture(scope="module")
def pictures():
    return shapes.dataset(per_class=12, seed=2026)  # 384 pictures, 12 of each colour-shape pair


def _top1(toy, pictures, phrases, label):
    images = toy.encode_images([p[0] for p in pictures])
    text = toy.encode_texts(phrases)
    best = (images @ text.T).argmax(axis=1)
    return float(np.mean([phrases[b] == label(p) for b, p in zip(best, pictures)]))


def test_colour_and_shape_over_32_phrases_at_least_90_percent(toy, pictures):
    phrases = [f"a {c} {s}" for c in shapes.COLOURS for s in shapes.SHAPES]
    acc = _top1(toy, pictures, phrases, lambda p: f"a {p[1]} {p[2]}")
    assert acc >= 0.90, acc


def test_colour_over_8_phrases_at_least_95_percent(toy, pictures):
    phrases = [f"a {c} shape" for c in shapes.COLOURS]
    acc = _top1(toy, pictures, phrases, lambda p: f"a {p[1]} shape")
    assert acc >= 0.95, acc


def test_shape_over_4_phrases_at_least_95_percent(toy, pictures):
    phrases = [f"a {s}" for s in shapes.SHAPES]
    acc = _top1(toy, pictures, phrases, lambda p: f"a {p[2]}")
    assert acc >= 0.95, acc
