"""What decoding a large picture costs in memory (issue #27, finding 4): the rise of a fresh process's
peak resident memory while it decodes 60 MP pictures (7,745 × 7,745, just under CLIP_GAZE_MAX_PIXELS)
of each format and mode, one at a time, and four at once (four threads, the default settings:
CLIP_GAZE_MAX_DECODES=2, and CLIP_GAZE_DECODE_MEMORY=1024 where the checkout has it).

Each case runs in a process of its own: the checkout's `PictureReader` (the settings' limits, the
input size of ViT-B-32, 224) is made, the file's bytes are read, the peak is reset (Linux clear_refs;
else the process's peak so far is the baseline's), the bytes are decoded as `collection add` decodes
them, and the rise of VmHWM over the resident memory before is printed, with its ratio to the
picture's RGB size (width × height × 3 bytes, 171 MiB). The pictures are drawn shapes (a 60 MP
lossless WebP of them is 12 KB) made once under bench/out/decode-memory/.

    python bench/decode_memory.py                           # this checkout
    python bench/decode_memory.py --checkout /tmp/before-27 # and another one, side by side, with the ratios
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import OUT, ROOT, header

SIDE = 7745
RGB_MIB = SIDE * SIDE * 3 / 2**20
CASES: list[tuple[str, str, str, dict[str, Any]]] = [  # file name, mode drawn, Pillow format, save options
    ("lossless.webp", "RGB", "WEBP", {"lossless": True, "method": 0}),
    ("lossless-rgba.webp", "RGBA", "WEBP", {"lossless": True, "method": 0}),
    ("lossless-gradient.webp", "gradient", "WEBP", {"lossless": True, "method": 0}),
    ("lossy.webp", "RGB", "WEBP", {"quality": 80, "method": 0}),
    ("rgb.png", "RGB", "PNG", {"compress_level": 1}),
    ("rgba.png", "RGBA", "PNG", {"compress_level": 1}),
    ("l.png", "L", "PNG", {"compress_level": 1}),
    ("p-transparent.png", "P", "PNG", {"compress_level": 1, "transparency": 0}),
    ("i16.png", "I;16", "PNG", {"compress_level": 1}),
    ("rgb.jpg", "RGB", "JPEG", {"quality": 85}),
    ("cmyk.jpg", "CMYK", "JPEG", {"quality": 85}),
    ("rgb-deflate.tif", "RGB", "TIFF", {"compression": "tiff_deflate"}),
    ("rgba-lzw.tif", "RGBA", "TIFF", {"compression": "tiff_lzw"}),
    ("rgb-jpeg.tif", "RGB", "TIFF", {"compression": "jpeg"}),
    ("rgb-raw.tif", "RGB", "TIFF", {}),
    ("rgb-one-strip.tif", "RGB", "TIFF", {"compression": "tiff_deflate", "strip_size": 2**31}),
    ("rgba-one-strip.tif", "RGBA", "TIFF", {"compression": "tiff_deflate", "strip_size": 2**31}),
    ("f.tif", "F", "TIFF", {"compression": "tiff_deflate"}),
    ("rgb.jp2", "RGB", "JPEG2000", {"irreversible": True}),
    ("rgb.avif", "RGB", "AVIF", {"speed": 10, "quality": 50}),
    ("rgba.avif", "RGBA", "AVIF", {"speed": 10, "quality": 50}),
    ("rgb.tga", "RGB", "TGA", {"compression": "tga_rle"}),
    ("p.gif", "P", "GIF", {}),
    ("rgb.bmp", "RGB", "BMP", {}),
]
TOGETHER = {  # four decoded at once, each in a thread
    "4 lossless WebP at once": ["lossless.webp"] * 4,
    "4 heavy ones at once": ["rgba-one-strip.tif", "rgb.jp2", "rgba.png", "rgb.avif"],
}

CHILD = r"""
import json, os, resource, sys, threading
from pathlib import Path
from indexer.pictures.reader import ImageLimits, PictureReader
from indexer.settings import Settings

def status(field):
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith(field + ":"))

reader = PictureReader(ImageLimits.from_settings(Settings.from_env()), target=224)
files = [Path(p) for p in sys.argv[1:]]
blobs = [p.read_bytes() for p in files]
import io
from PIL import Image
for fmt in ("PNG", "WEBP", "TIFF", "JPEG"):  # a worker that has decoded before: its modules loaded, its pools made
    buf = io.BytesIO()
    Image.new("RGB", (1200, 1000), "red").save(buf, fmt)
    reader.read(buf.getvalue(), "warm-up")
try:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    reset = True
except OSError:
    reset = False
before = status("VmRSS")
errors = []
def one(blob, name):
    try:
        reader.read(blob, name)
    except Exception as exc:
        errors.append(f"{name}: {type(exc).__name__}: {exc}")
threads = [threading.Thread(target=one, args=(b, str(p))) for b, p in zip(blobs, files)]
for t in threads:
    t.start()
for t in threads:
    t.join()
peak = status("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
memory = getattr(reader.decoder, "memory", None)
print(json.dumps({"rise": max(0, peak - before), "reset": reset, "errors": errors,
                  "high_water": getattr(memory, "high_water", None), "budget": getattr(memory, "limit", None)}))
"""


def draw(mode: str) -> Any:
    """A picture of flat shapes in `mode`, SIDE × SIDE."""
    import numpy as np
    from PIL import Image, ImageDraw

    rgb = Image.new("RGB", (SIDE, SIDE), (200, 30, 40))
    d = ImageDraw.Draw(rgb)
    d.ellipse((1000, 1000, 6000, 6000), fill=(20, 200, 30))
    d.rectangle((300, 5000, 7400, 7000), fill=(30, 40, 220))
    if mode == "gradient":  # every pixel its own colour: no palette for a lossless encoder to pack
        y, x = np.mgrid[0:SIDE, 0:SIDE]
        return Image.fromarray(np.stack([x * 255 // SIDE, y * 255 // SIDE, (x + y) % 256], axis=-1).astype(np.uint8))
    if mode == "RGBA":
        out = rgb.convert("RGBA")
        out.putalpha(200)
        return out
    if mode == "P":
        return rgb.quantize(colors=8, method=Image.Quantize.FASTOCTREE)
    if mode == "I;16":
        return rgb.convert("L").convert("I").point(lambda v: v * 200).convert("I;16")
    return rgb.convert(mode)


def pictures() -> Path:
    folder = OUT / "decode-memory"
    folder.mkdir(parents=True, exist_ok=True)
    for name, mode, fmt, options in CASES:
        path = folder / name
        if not path.is_file():
            tmp = path.with_suffix(".tmp" + path.suffix)
            draw(mode).save(tmp, fmt, **options)
            tmp.replace(path)
    return folder


def measure(checkout: Path, files: list[Path]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="clip-gaze-bench-") as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLIP_GAZE_")}
        env.update(PYTHONPATH=str(checkout), CLIP_GAZE_HOME=home, OMP_NUM_THREADS="1")
        done = subprocess.run([sys.executable, "-c", CHILD, *map(str, files)], env=env, cwd=home,
                              capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"{checkout}: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkout", type=Path, help="another checkout to measure beside this one (e.g. /tmp/before-27)")
    ap.add_argument("--only", nargs="*", help="file names of CASES to measure (default: all)")
    args = ap.parse_args()
    checkouts = [ROOT] + ([args.checkout.resolve()] if args.checkout else [])
    header(f"decoding 60 MP pictures ({SIDE} × {SIDE}, RGB size {RGB_MIB:.0f} MiB): peak RSS rise, MiB")
    folder = pictures()
    names = args.only or [c[0] for c in CASES]
    cols = "".join(f"{c.name if c != ROOT else 'this checkout':>22}" for c in checkouts)
    print(f"  {'picture':<26}{'KB':>9}{cols}" + ("   this / other" if len(checkouts) > 1 else "")
          + "   estimated (this checkout's budget)")
    rows: list[tuple[str, list[Path]]] = [(n, [folder / n]) for n in names]
    rows += [(label, [folder / n for n in together]) for label, together in TOGETHER.items()]
    for label, files in rows:
        got = [measure(c, files) for c in checkouts]
        kb = sum(f.stat().st_size for f in files) / 1000
        cells = "".join(f"{g['rise'] / 2**20:>11.0f} ({g['rise'] / 2**20 / RGB_MIB:4.2f} × RGB)" for g in got)
        ratio = f"{got[0]['rise'] / max(1, got[1]['rise']):>15.2f}" if len(got) > 1 else ""
        held = got[0]["high_water"]
        estimated = f"   {held / 2**20:>6.0f}" + (f" (high-water mark, of {got[0]['budget'] / 2**20:.0f})"
                                                   if len(files) > 1 else "") if held is not None else ""
        print(f"  {label:<26}{kb:>9.0f}{cells}{ratio}{estimated}")
        for g, c in zip(got, checkouts):
            for e in g["errors"]:
                print(f"      {c.name if c != ROOT else 'this checkout'}: {e}")
        if not got[0]["reset"]:
            print("      (peak not reset: the baseline is the process's resident memory before decoding)")
    for label, together in TOGETHER.items():
        print(f"  {label}: {', '.join(together)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
