"""Train clip-gaze's `toy` model from scratch on CPU (a few minutes on 2 cores).

The toy model is a test instrument, not an art model: a tiny open_clip CLIP (ViT vision tower,
causal text transformer, learned logit scale) that knows one world only: pictures of one filled
shape, colour in {red, green, blue, yellow, purple, orange, black, white}, shape in
{circle, square, triangle, star}, at varied size and position on a light or dark background.
It exists so that every code path of clip-gaze (open_clip model construction, checkpoint loading,
preprocessing, tokenizer, both encoders, logit scale) runs offline in tests and demos.

    python scripts/train_toy.py            # writes indexer/toy/clip-gaze-toy.safetensors

The pictures here are drawn with PIL. The tests check accuracy on pictures drawn by an independent
numpy rasteriser (tests/shapes.py), never by this code.
"""

from __future__ import annotations

import argparse
import math
import random
import time
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
TOY_DIR = ROOT / "indexer" / "toy"
CONFIG = TOY_DIR / "clip-gaze-toy.json"
CHECKPOINT = TOY_DIR / "clip-gaze-toy.safetensors"
ARCH = "clip-gaze-toy"

COLOURS = {
    "red": (215, 35, 35),
    "green": (35, 165, 50),
    "blue": (35, 65, 215),
    "yellow": (240, 215, 35),
    "purple": (135, 45, 165),
    "orange": (245, 135, 25),
    "black": (20, 20, 20),
    "white": (240, 240, 240),
}
SHAPES = ["circle", "square", "triangle", "star"]
BACKGROUNDS = ["light", "dark"]


def caption_families() -> dict[str, list[str]]:
    colours, shapes = list(COLOURS), SHAPES
    return {
        "colour_shape": [f"a {c} {s}" for c in colours for s in shapes],
        "colour": [f"a {c} shape" for c in colours],
        "shape": [f"a {s}" for s in shapes],
        "colour_shape_bg": [f"a {c} {s} on a {b} background" for c in colours for s in shapes for b in BACKGROUNDS],
        "bg": [f"a shape on a {b} background" for b in BACKGROUNDS],
    }


def family_targets(c: int, s: int, b: int) -> dict[str, int]:
    return {"colour_shape": c * 4 + s, "colour": c, "shape": s, "colour_shape_bg": (c * 4 + s) * 2 + b, "bg": b}


def _jitter(rgb: tuple[int, int, int], rng: random.Random, amount: int) -> tuple[int, int, int]:
    return tuple(max(0, min(255, v + rng.randint(-amount, amount))) for v in rgb)  # type: ignore[return-value]


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float, rng: random.Random) -> list[tuple[float, float]]:
    if shape == "square":
        corners = [math.pi / 4 + k * math.pi / 2 for k in range(4)]
        radius = [r] * 4
    elif shape == "triangle":
        corners = [-math.pi / 2 + k * 2 * math.pi / 3 for k in range(3)]
        radius = [r] * 3
    else:  # star
        inner = r * rng.uniform(0.38, 0.5)
        corners = [-math.pi / 2 + k * math.pi / 5 for k in range(10)]
        radius = [r if k % 2 == 0 else inner for k in range(10)]
    return [(cx + rad * math.cos(a + angle), cy + rad * math.sin(a + angle)) for a, rad in zip(corners, radius)]


def draw(colour: str, shape: str, background: str, size: int, rng: random.Random) -> Image.Image:
    """One picture of the toy world, drawn at 4x and reduced (antialiased)."""
    if background == "light":
        bg = _jitter((225, 225, 225), rng, 30)
    else:
        bg = _jitter((35, 35, 35), rng, 30)
    big = size * 4
    img = Image.new("RGB", (big, big), bg)
    d = ImageDraw.Draw(img)
    r = rng.uniform(0.14, 0.38) * big
    cx = rng.uniform(r, big - r)
    cy = rng.uniform(r, big - r)
    fill = _jitter(COLOURS[colour], rng, 20)
    if shape == "circle":
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        angle = math.radians(rng.uniform(-12, 12))
        d.polygon(_polygon(shape, cx, cy, r, angle, rng), fill=fill)
    return img.resize((size, size), Image.BOX)


def sample_labels(rng: random.Random) -> tuple[int, int, int]:
    c = rng.randrange(len(COLOURS))
    s = rng.randrange(len(SHAPES))
    colour = list(COLOURS)[c]
    # White shapes live on dark backgrounds, black ones on light: the world keeps every shape visible.
    b = 1 if colour == "white" else 0 if colour == "black" else rng.randrange(2)
    return c, s, b


def make_dataset(n: int, size: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    rng = random.Random(seed)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    labels = np.empty((n, 3), dtype=np.int64)
    for i in range(n):
        c, s, b = sample_labels(rng)
        images[i] = np.asarray(draw(list(COLOURS)[c], SHAPES[s], BACKGROUNDS[b], size, rng))
        labels[i] = (c, s, b)
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--images", type=int, default=60000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=CHECKPOINT)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    open_clip.add_model_config(CONFIG)
    model, _, preprocess = open_clip.create_model_and_transforms(ARCH)
    tokenizer = open_clip.get_tokenizer(ARCH)
    image_size = model.visual.image_size[0]
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)

    t0 = time.time()
    images, labels = make_dataset(args.images, image_size, args.seed)
    print(f"drew {len(images)} training pictures in {time.time() - t0:.0f}s", flush=True)

    families = caption_families()
    names = list(families)
    captions = [c for n in names for c in families[n]]
    offsets = np.cumsum([0] + [len(families[n]) for n in names])
    tokens = tokenizer(captions)
    tokens = tokens[:, : int((tokens != 0).sum(1).max())]  # causal mask + end-token pooling: trimming is exact
    model.positional_embedding.data  # noqa: B018  (trimmed encode below slices it)
    targets = {n: torch.tensor([family_targets(*lab)[n] for lab in labels]) for n in names}

    def encode_captions() -> torch.Tensor:
        L = tokens.shape[1]
        x = model.token_embedding(tokens) + model.positional_embedding[:L]
        x = model.transformer(x, attn_mask=model.attn_mask[:L, :L])
        x = model.ln_final(x)
        x = x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)] @ model.text_projection
        return F.normalize(x, dim=-1)

    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    warmup = 150
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / args.steps)))
    )
    model.train()
    t0 = time.time()
    for step in range(args.steps):
        idx = torch.randint(0, len(images), (args.batch,))
        x = (images[idx].float() / 255.0 - mean) / std
        img = F.normalize(model.encode_image(x), dim=-1)
        txt = encode_captions()
        scale = model.logit_scale.exp().clamp(max=100)
        logits = scale * img @ txt.T
        loss = sum(
            F.cross_entropy(logits[:, offsets[k] : offsets[k + 1]], targets[n][idx]) for k, n in enumerate(names)
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step:5d}  loss {loss.item():.4f}  scale {scale.item():.1f}  {time.time() - t0:.0f}s", flush=True)

    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    state["logit_scale"] = model.logit_scale.detach().float().reshape(model.logit_scale.shape).contiguous()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(args.out))
    print(f"saved {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")

    # Reload through open_clip's checkpoint path and check on freshly drawn, larger pictures.
    model, _, preprocess = open_clip.create_model_and_transforms(ARCH, pretrained=str(args.out))
    model.eval()
    rng = random.Random(12345)
    with torch.inference_mode():
        txt = F.normalize(model.encode_text(tokenizer(captions)), dim=-1)
        hits = {n: 0 for n in names}
        n_eval = 600
        for _ in range(n_eval):
            c, s, b = sample_labels(rng)
            pic = draw(list(COLOURS)[c], SHAPES[s], BACKGROUNDS[b], rng.choice([96, 160, 224]), rng)
            emb = F.normalize(model.encode_image(preprocess(pic).unsqueeze(0)), dim=-1)[0]
            sims = txt @ emb
            want = family_targets(c, s, b)
            for k, n in enumerate(names):
                hits[n] += int(sims[offsets[k] : offsets[k + 1]].argmax().item() == want[n])
    for n in names:
        print(f"top-1 {n:16s} {hits[n] / n_eval:.3f}")
    print(f"logit_scale.exp() = {model.logit_scale.exp().item():.2f}")


if __name__ == "__main__":
    main()
