"""Train clip-gaze's `toy-multilingual` model on CPU (about a minute on 2 cores): a test instrument.

The toy-multilingual model is a test instrument, not an art model. It sees the `toy` model's world
(one filled shape of eight colours and four kinds on a light or dark background) through the toy's
own vision tower, frozen, and reads captions in English, Dutch, German and French through a tiny
XLM-R-style text tower built by open_clip's real Hugging Face path (`hf_model_name` naming the local
folder `hf/`, whose `config.json` is an `XLMRobertaConfig`; no download), with a SentencePiece-style
(Metaspace) byte-pair tokenizer trained here by the `tokenizers` library on those captions. It exists so that
every multilingual path of clip-gaze (open_clip's CustomTextCLIP and HFTextEncoder, HFTokenizer,
masked towers trimmed to a batch's longest phrase, `language` on phrases) runs offline in tests.

    python scripts/train_toy_multilingual.py     # writes indexer/toy_multilingual/

The tests check accuracy on pictures drawn by an independent numpy rasteriser (tests/shapes.py).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_toy  # noqa: E402  (the toy's world: colours, shapes, the PIL drawing)

OUT = ROOT / "indexer" / "toy_multilingual"
ARCH = "clip-gaze-toy-multilingual"
CONTEXT = 32

# Every caption family of the toy, in four languages. Dutch, German and French inflect the colour
# by the shape's gender (de cirkel / het vierkant; der Kreis / das Quadrat; le cercle / l'étoile).
SHAPE_WORDS = {
    "en": {"circle": "circle", "square": "square", "triangle": "triangle", "star": "star"},
    "nl": {"circle": "cirkel", "square": "vierkant", "triangle": "driehoek", "star": "ster"},
    "de": {"circle": "Kreis", "square": "Quadrat", "triangle": "Dreieck", "star": "Stern"},
    "fr": {"circle": "cercle", "square": "carré", "triangle": "triangle", "star": "étoile"},
}
NL_NEUTER = {"square"}
DE_GENDER = {"circle": "m", "square": "n", "triangle": "n", "star": "m"}
FR_FEMININE = {"star"}
NL_COLOUR = {  # (de-word form, het-word form after "een")
    "red": ("rode", "rood"), "green": ("groene", "groen"), "blue": ("blauwe", "blauw"), "yellow": ("gele", "geel"),
    "purple": ("paarse", "paars"), "orange": ("oranje", "oranje"), "black": ("zwarte", "zwart"), "white": ("witte", "wit"),
}
DE_COLOUR = {"red": "rot", "green": "grün", "blue": "blau", "yellow": "gelb", "purple": "lila", "orange": "orange",
             "black": "schwarz", "white": "weiß"}
FR_COLOUR = {  # (masculine, feminine)
    "red": ("rouge", "rouge"), "green": ("vert", "verte"), "blue": ("bleu", "bleue"), "yellow": ("jaune", "jaune"),
    "purple": ("violet", "violette"), "orange": ("orange", "orange"), "black": ("noir", "noire"), "white": ("blanc", "blanche"),
}
LANGUAGES = ("en", "nl", "de", "fr")


def _de_adj(colour: str, gender: str) -> str:
    stem = DE_COLOUR[colour]
    if colour == "purple":  # "lila" is not declined
        return stem
    return stem + {"m": "er", "n": "es", "f": "e"}[gender]


def colour_shape(lang: str, colour: str, shape: str) -> str:
    """"a {colour} {shape}" in `lang`."""
    word = SHAPE_WORDS[lang][shape]
    if lang == "en":
        return f"a {colour} {word}"
    if lang == "nl":
        return f"een {NL_COLOUR[colour][1 if shape in NL_NEUTER else 0]} {word}"
    if lang == "de":
        g = DE_GENDER[shape]
        return f"{'ein' if g in 'mn' else 'eine'} {_de_adj(colour, g)} {word}"
    fem = shape in FR_FEMININE
    return f"{'une' if fem else 'un'} {word} {FR_COLOUR[colour][1 if fem else 0]}"


def colour_only(lang: str, colour: str) -> str:
    return {"en": f"a {colour} shape", "nl": f"een {NL_COLOUR[colour][0]} vorm",
            "de": f"eine {_de_adj(colour, 'f')} Form", "fr": f"une forme {FR_COLOUR[colour][1]}"}[lang]


def shape_only(lang: str, shape: str) -> str:
    word = SHAPE_WORDS[lang][shape]
    if lang == "en":
        return f"a {word}"
    if lang == "nl":
        return f"een {word}"
    if lang == "de":
        return f"{'ein' if DE_GENDER[shape] in 'mn' else 'eine'} {word}"
    return f"{'une' if shape in FR_FEMININE else 'un'} {word}"


def on_background(lang: str, background: str) -> str:
    return {
        "en": f"on a {background} background",
        "nl": f"op een {'lichte' if background == 'light' else 'donkere'} achtergrond",
        "de": f"auf einem {'hellen' if background == 'light' else 'dunklen'} Hintergrund",
        "fr": f"sur un fond {'clair' if background == 'light' else 'sombre'}",
    }[lang]


def caption_families(lang: str) -> dict[str, list[str]]:
    colours, shapes, bgs = list(train_toy.COLOURS), train_toy.SHAPES, train_toy.BACKGROUNDS
    return {
        "colour_shape": [colour_shape(lang, c, s) for c in colours for s in shapes],
        "colour": [colour_only(lang, c) for c in colours],
        "shape": [shape_only(lang, s) for s in shapes],
        "colour_shape_bg": [f"{colour_shape(lang, c, s)} {on_background(lang, b)}" for c in colours for s in shapes for b in bgs],
        "bg": [f"{ {'en': 'a shape', 'nl': 'een vorm', 'de': 'eine Form', 'fr': 'une forme'}[lang]} {on_background(lang, b)}"
               for b in bgs],
    }


def train_tokenizer(texts: list[str], out: Path) -> None:
    """A byte-pair tokenizer shaped like XLM-R's (Metaspace, `<s> … </s>`, pad id 1), saved with its
    tokenizer_config.json beside it, loadable by transformers' AutoTokenizer and by `tokenizers`."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace("  ", " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=specials, min_frequency=1)
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))],
    )
    assert [tok.token_to_id(t) for t in specials] == [0, 1, 2, 3, 4]
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>",
        unk_token="<unk>", pad_token="<pad>", mask_token="<mask>", model_max_length=CONTEXT,
    )
    fast.save_pretrained(str(out))
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_configs(out: Path, vocab_size: int) -> None:
    from transformers import XLMRobertaConfig

    hf = XLMRobertaConfig(
        vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=CONTEXT + 2, type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    hf.save_pretrained(str(out / "hf"))
    toy = json.loads(train_toy.CONFIG.read_text(encoding="utf-8"))
    cfg = {
        "embed_dim": toy["embed_dim"],
        "vision_cfg": toy["vision_cfg"],
        "text_cfg": {"hf_model_name": "hf", "hf_tokenizer_name": "hf", "hf_pooler_type": "mean_pooler",
                     "hf_proj_type": "linear", "context_length": CONTEXT},
    }
    (out / f"{ARCH}.json").write_text(json.dumps(cfg, indent=4) + "\n", encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--images", type=int, default=12000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    out: Path = args.out
    (out / "hf").mkdir(parents=True, exist_ok=True)

    import open_clip
    from safetensors.torch import save_file

    families = {lang: caption_families(lang) for lang in LANGUAGES}
    names = list(families["en"])
    train_tokenizer([c for lang in LANGUAGES for n in names for c in families[lang][n]] * 4, out / "hf")
    from tokenizers import Tokenizer

    write_configs(out, Tokenizer.from_file(str(out / "hf" / "tokenizer.json")).get_vocab_size())

    # the toy's vision tower, frozen: its image embeddings are computed once
    open_clip.add_model_config(train_toy.CONFIG)
    toy, _, _ = open_clip.create_model_and_transforms(train_toy.ARCH, pretrained=str(train_toy.CHECKPOINT))
    toy.eval()
    t0 = time.time()
    images, labels = train_toy.make_dataset(args.images, toy.visual.image_size[0], args.seed)
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        img_emb = torch.cat([F.normalize(toy.encode_image((images[i:i + 512].float() / 255 - mean) / std), dim=-1)
                             for i in range(0, len(images), 512)])
    print(f"drew and embedded {len(images)} pictures in {time.time() - t0:.0f}s", flush=True)

    text_cfg = json.loads((out / f"{ARCH}.json").read_text(encoding="utf-8"))["text_cfg"]
    text_cfg.update(hf_model_name=str(out / "hf"), hf_tokenizer_name=str(out / "hf"), hf_model_pretrained=False)
    open_clip.add_model_config(out / f"{ARCH}.json")
    model = open_clip.create_model(ARCH, text_cfg=text_cfg)
    model.visual.load_state_dict(toy.visual.state_dict())
    for p in model.visual.parameters():
        p.requires_grad = False
    tokenizer = open_clip.tokenizer.HFTokenizer(str(out / "hf"), context_length=CONTEXT)

    captions = [c for lang in LANGUAGES for n in names for c in families[lang][n]]
    per_lang = len(captions) // len(LANGUAGES)
    offsets = np.cumsum([0] + [len(families["en"][n]) for n in names])
    tokens = tokenizer(captions)
    tokens = tokens[:, : int((tokens != 1).sum(1).max())]
    targets = {n: torch.tensor([train_toy.family_targets(*lab)[n] for lab in labels]) for n in names}
    with torch.no_grad():  # the toy's own English caption embeddings: a target for every language
        toy_txt = F.normalize(toy.encode_text(open_clip.get_tokenizer(train_toy.ARCH)(
            [c for n in names for c in families["en"][n]])), dim=-1).repeat(len(LANGUAGES), 1)

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-3, weight_decay=0.0)
    with torch.no_grad():
        model.logit_scale.copy_(toy.logit_scale)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 100) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / args.steps))))
    model.train()
    t0 = time.time()
    for step in range(args.steps):
        idx = torch.randint(0, len(images), (args.batch,))
        txt = F.normalize(model.encode_text(tokens), dim=-1)
        scale = model.logit_scale.exp().clamp(max=100)
        logits = scale * img_emb[idx] @ txt.T
        loss = 4 * (1 - (txt * toy_txt).sum(-1)).mean()
        for li in range(len(LANGUAGES)):
            base = li * per_lang
            loss = loss + sum(F.cross_entropy(logits[:, base + offsets[k]: base + offsets[k + 1]], targets[n][idx])
                              for k, n in enumerate(names)) / len(LANGUAGES)
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
    ckpt = out / f"{ARCH}.safetensors"
    save_file(state, str(ckpt))
    print(f"saved {ckpt} ({ckpt.stat().st_size / 1e6:.1f} MB)")

    # reload through open_clip's checkpoint path and check on freshly drawn pictures, per language
    model, _, preprocess = open_clip.create_model_and_transforms(ARCH, pretrained=str(ckpt), text_cfg=text_cfg)
    model.eval()
    rng = random.Random(12345)
    pics = []
    for _ in range(400):
        c, s, b = train_toy.sample_labels(rng)
        pics.append((train_toy.draw(list(train_toy.COLOURS)[c], train_toy.SHAPES[s], train_toy.BACKGROUNDS[b],
                                    rng.choice([96, 160, 224]), rng), c * 4 + s))
    with torch.inference_mode():
        emb = F.normalize(model.encode_image(torch.stack([preprocess(p) for p, _ in pics])), dim=-1)
        for lang in LANGUAGES:
            txt = F.normalize(model.encode_text(tokenizer(families[lang]["colour_shape"])), dim=-1)
            hits = (emb @ txt.T).argmax(-1).numpy() == np.array([t for _, t in pics])
            print(f"top-1 colour_shape {lang}: {hits.mean():.3f}")
    print(f"logit_scale.exp() = {model.logit_scale.exp().item():.2f}")


if __name__ == "__main__":
    main()
