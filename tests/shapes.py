"""Pictures of the toy model's world, drawn independently of its training code.

scripts/train_toy.py draws with PIL's polygon filler; this module rasterises with numpy:
analytic inside-tests on a supersampled grid (a polar-radius star, half-plane triangles), its own
colour values, noise, sizes and placement. The toy model must classify these as GUIDE §3 says.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

COLOURS = {
    "red": (205, 25, 35),
    "green": (45, 155, 65),
    "blue": (45, 75, 205),
    "yellow": (248, 212, 45),
    "purple": (125, 45, 155),
    "orange": (248, 150, 35),
    "black": (12, 12, 12),
    "white": (248, 248, 248),
}
SHAPES = ("circle", "square", "triangle", "star")


def _inside(shape: str, u: np.ndarray, v: np.ndarray, r: float, inner: float) -> np.ndarray:
    """u, v: coordinates relative to the centre (y down), in units of the image side."""
    if shape == "circle":
        return u * u + v * v <= r * r
    if shape == "square":
        half = r / math.sqrt(2)
        return (np.abs(u) <= half) & (np.abs(v) <= half)
    if shape == "triangle":  # equilateral, apex up, circumradius r
        inside = np.ones_like(u, dtype=bool)
        for k in range(3):  # each edge's outward normal points away from the opposite vertex
            a = math.pi / 2 + k * 2 * math.pi / 3
            inside &= (u * math.cos(a) + v * math.sin(a)) <= r / 2  # the inradius is r / 2
        return inside
    # star with straight edges: in each half-sector the edge runs from the tip (radius r, angle 0)
    # to the inner vertex (radius `inner`, angle 36°); its polar equation is d / cos(phi - alpha).
    beta = math.pi / 5
    theta = np.arctan2(v, u) + math.pi / 2  # a tip straight up
    sector = (theta % (2 * beta)) / (2 * beta)
    phi = np.abs(sector - np.round(sector)) * 2 * beta  # 0 at a tip, beta midway between tips
    nx, ny = inner * math.sin(beta), r - inner * math.cos(beta)
    d = r * nx / math.hypot(nx, ny)
    alpha = math.atan2(ny, nx)
    return np.sqrt(u * u + v * v) <= d / np.cos(phi - alpha)


def render(colour: str, shape: str, background: str, size: int, rng: np.random.Generator) -> Image.Image:
    ss = 3
    n = size * ss
    grid = (np.arange(n) + 0.5) / n
    xx, yy = np.meshgrid(grid, grid)
    r = float(rng.uniform(0.17, 0.36))
    cx, cy = (float(rng.uniform(r + 0.02, 1 - r - 0.02)) for _ in range(2))
    angle = math.radians(float(rng.uniform(-10, 10))) if shape != "circle" else 0.0
    u, v = xx - cx, yy - cy
    ru = u * math.cos(angle) + v * math.sin(angle)
    rv = -u * math.sin(angle) + v * math.cos(angle)
    mask = _inside(shape, ru, rv, r, r * float(rng.uniform(0.4, 0.48))).astype(np.float32)
    alpha = mask.reshape(size, ss, size, ss).mean(axis=(1, 3))[..., None]
    base = 228 if background == "light" else 38
    bg = np.clip(base + rng.integers(-22, 23, size=3), 0, 255).astype(np.float32)
    fg = np.clip(np.array(COLOURS[colour]) + rng.integers(-15, 16, size=3), 0, 255).astype(np.float32)
    img = alpha * fg + (1 - alpha) * bg
    img += rng.normal(0, 3.0, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def background_for(colour: str, rng: np.random.Generator) -> str:
    if colour == "white":
        return "dark"
    if colour == "black":
        return "light"
    return "light" if rng.random() < 0.5 else "dark"


def dataset(per_class: int, seed: int = 7) -> list[tuple[Image.Image, str, str, str]]:
    """`per_class` pictures of each of the 32 colour-shape pairs: (image, colour, shape, background)."""
    rng = np.random.default_rng(seed)
    out = []
    for colour in COLOURS:
        for shape in SHAPES:
            for _ in range(per_class):
                bg = background_for(colour, rng)
                out.append((render(colour, shape, bg, int(rng.integers(96, 257)), rng), colour, shape, bg))
    return out
