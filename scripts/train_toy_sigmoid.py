"""Train clip-gaze's `toy-sigmoid` model from scratch on CPU (a few minutes on one or two cores).

A test instrument, not an art model, and not SigLIP: a tiny open_clip `CustomTextCLIP` built the way
open_clip builds SigLIP's towers (a text transformer with no causal mask that pools the last of its
32 positions, a projection with a bias, a learned `logit_scale` and `logit_bias`), trained with a
multi-label sigmoid loss on the toy world of scripts/train_toy.py. Its image trunk is the `toy` model's
(indexer/toy/clip-gaze-toy.safetensors, trained by scripts/train_toy.py), kept frozen: what is trained
here is the image projection, the whole text tower, `logit_scale` and `logit_bias` (so that training takes
a few minutes on one shared core). Every caption true of a picture
is a positive ("a red circle", "a red shape", "a circle", "a red circle on a dark background",
"a shape on a dark background"), every other caption a negative, so σ(logit_scale·cos + logit_bias)
is each caption's own match probability, several captions can be likely at once, and none must be.
Its name has no "siglip" in it: open_clip would then fetch SigLIP's tokenizer from the network; it
uses open_clip's own BPE tokenizer, as the `toy` model does.

    python scripts/train_toy_sigmoid.py    # writes indexer/toy/clip-gaze-toy-sigmoid.safetensors

The tests check it on pictures drawn by tests/shapes.py, never by this code.
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
from safetensors.torch import save_file

from train_toy import BACKGROUNDS, COLOURS, SHAPES, caption_families, draw, family_targets, make_dataset, sample_labels

ROOT = Path(__file__).resolve().parents[1]
TOY_DIR = ROOT / "indexer" / "toy"
CONFIG = TOY_DIR / "clip-gaze-toy-sigmoid.json"
CHECKPOINT = TOY_DIR / "clip-gaze-toy-sigmoid.safetensors"
ARCH = "clip-gaze-toy-sigmoid"
TOY_CONFIG = TOY_DIR / "clip-gaze-toy.json"
TOY_CHECKPOINT = TOY_DIR / "clip-gaze-toy.safetensors"
TOY_ARCH = "clip-gaze-toy"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--images", type=int, default=20000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=CHECKPOINT)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    open_clip.add_model_config(CONFIG)
    open_clip.add_model_config(TOY_CONFIG)
    model, _, preprocess = open_clip.create_model_and_transforms(ARCH)
    toy = open_clip.create_model(TOY_ARCH, pretrained=str(TOY_CHECKPOINT))
    model.visual.load_state_dict(toy.visual.state_dict())  # the same vision config: the toy's trunk
    tokenizer = open_clip.get_tokenizer(ARCH)
    image_size = model.visual.image_size[0]
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)

    t0 = time.time()
    images, labels = make_dataset(args.images, image_size, args.seed)
    # The frozen trunk's pooled features (before the projection), once: each step trains only the
    # projection on top of them.
    proj = model.visual.proj
    model.visual.proj = None
    model.eval()
    with torch.inference_mode():
        pooled = torch.cat([model.visual((images[i:i + 500].float() / 255.0 - mean) / std)
                            for i in range(0, len(images), 500)])
    model.visual.proj = proj
    print(f"drew {len(images)} training pictures and pooled their features in {time.time() - t0:.0f}s", flush=True)

    families = caption_families()
    names = list(families)
    captions = [c for n in names for c in families[n]]
    offsets = np.cumsum([0] + [len(families[n]) for n in names])
    tokens = tokenizer(captions)  # the full context: no causal mask, pooled at the last position
    # truth[i, j] = 1 when caption j is true of picture i (one caption per family is)
    truth = np.zeros((len(labels), len(captions)), dtype=np.float32)
    for i, lab in enumerate(labels):
        for k, n in enumerate(names):
            truth[i, offsets[k] + family_targets(*lab)[n]] = 1.0
    truth_t = torch.from_numpy(truth)

    scalars = [model.logit_scale, model.logit_bias]
    opt = torch.optim.AdamW([{"params": [proj, *model.text.parameters()], "lr": 2e-3},
                             {"params": scalars, "lr": 3e-2}], weight_decay=0.0)
    warmup = 100
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / args.steps)))
    )
    model.text.train()
    t0 = time.time()
    for step in range(args.steps):
        idx = torch.randint(0, len(pooled), (args.batch,))
        img = F.normalize(pooled[idx] @ proj, dim=-1)
        txt = F.normalize(model.encode_text(tokens), dim=-1)
        logits = model.logit_scale.exp() * img @ txt.T + model.logit_bias
        loss = F.binary_cross_entropy_with_logits(logits, truth_t[idx], reduction="sum") / args.batch
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 200 == 0 or step == args.steps - 1:
            print(f"step {step:5d}  loss {loss.item():.4f}  scale {model.logit_scale.exp().item():.1f}  "
                  f"bias {model.logit_bias.item():.2f}  {time.time() - t0:.0f}s", flush=True)

    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    for key in ("logit_scale", "logit_bias"):  # kept in float32: every score depends on them
        state[key] = getattr(model, key).detach().float().contiguous()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(args.out))
    print(f"saved {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")

    # Reload through open_clip's checkpoint path; check on freshly drawn, larger pictures.
    model, _, preprocess = open_clip.create_model_and_transforms(ARCH, pretrained=str(args.out))
    model.eval()
    rng = random.Random(12345)
    n_eval, exact, top1 = 400, 0, 0
    first = offsets[names.index("colour_shape")]
    with torch.inference_mode():
        txt = F.normalize(model.encode_text(tokenizer(captions)), dim=-1)
        for _ in range(n_eval):
            c, s, b = sample_labels(rng)
            pic = draw(list(COLOURS)[c], SHAPES[s], BACKGROUNDS[b], rng.choice([96, 160, 224]), rng)
            emb = F.normalize(model.encode_image(preprocess(pic).unsqueeze(0)), dim=-1)[0]
            sig = torch.sigmoid(model.logit_scale.exp() * (txt @ emb) + model.logit_bias).numpy()
            want = np.zeros(len(captions), dtype=bool)
            for k, n in enumerate(names):
                want[offsets[k] + family_targets(c, s, b)[n]] = True
            three = slice(0, offsets[names.index("shape") + 1])  # "a red circle", "a red shape", "a circle" families
            exact += int(((sig[three] > 0.5) == want[three]).all())
            top1 += int(int(np.argmax(sig[first:first + 32])) == c * 4 + s)
    print(f"every colour-shape, colour and shape caption on the right side of 0.5: {exact / n_eval:.3f}")
    print(f"top-1 over the 32 colour-shape captions: {top1 / n_eval:.3f}")
    print(f"logit_scale.exp() = {model.logit_scale.exp().item():.2f}, logit_bias = {model.logit_bias.item():.2f}")


if __name__ == "__main__":
    main()
