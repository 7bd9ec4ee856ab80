from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from conftest import draw_shape, encode
from indexer.errors import ImageTooLarge, InvalidImage
from indexer.pictures.decode import Decoder

LIMIT = 10_000_000


def decode_image(data: bytes, max_pixels: int = LIMIT, target: int | None = None, name: str = "image"):
    return Decoder(max_pixels, 10**12, target=target).decode(data, name)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP"])
def test_supported_formats_decode_to_rgb(fmt):
    decoded = decode_image(encode(draw_shape("red"), fmt), LIMIT)
    assert decoded.image.mode == "RGB" and (decoded.width, decoded.height) == (128, 128)
    assert decoded.image.getpixel((64, 64))[0] > 150  # red centre
    assert len(decoded.sha256) == 64


def test_gif_first_frame_is_used():
    frames = [Image.new("RGB", (32, 32), c) for c in ("red", "blue")]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    assert decode_image(buf.getvalue(), LIMIT).image.getpixel((5, 5))[0] > 200


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (40, 20), "white")
    img.paste((255, 0, 0), (0, 0, 20, 20))  # red on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90° clockwise
    decoded = decode_image(encode(img, "JPEG", exif=exif), LIMIT)
    assert (decoded.width, decoded.height) == (20, 40) == decoded.image.size
    assert decoded.image.getpixel((10, 5))[0] > 200 and decoded.image.getpixel((10, 35))[1] > 200  # red on top


def test_cmyk_palette_alpha_and_16_bit_become_rgb():
    cmyk = decode_image(encode(draw_shape("blue").convert("CMYK"), "JPEG"), LIMIT).image
    assert cmyk.mode == "RGB" and cmyk.getpixel((64, 64))[2] > 150
    pal = decode_image(encode(draw_shape("green").convert("P"), "PNG"), LIMIT).image
    assert pal.mode == "RGB" and pal.getpixel((64, 64))[1] > 100
    rgba = Image.new("RGBA", (10, 10), (0, 0, 0, 0))  # fully transparent → white
    assert decode_image(encode(rgba, "PNG"), LIMIT).image.getpixel((5, 5)) == (255, 255, 255)
    deep = Image.fromarray(np.arange(100, dtype=np.uint16).reshape(10, 10) * 600)
    assert deep.mode == "I;16"
    out = decode_image(encode(deep, "PNG"), LIMIT).image
    assert out.mode == "RGB" and out.getpixel((9, 9))[0] == 255


def test_pixel_limit_guards_against_decompression_bombs():
    bomb = encode(Image.new("L", (5000, 5000)), "PNG")  # 25 MP in a few KB
    assert len(bomb) < 100_000
    with pytest.raises(ImageTooLarge) as exc:
        decode_image(bomb, max_pixels=1_000_000)
    assert exc.value.status == 413 and "25,000,000" in exc.value.message


@pytest.mark.parametrize(
    "data, code",
    [
        (b"", "invalid_image"),
        (b"hello, this is text", "unsupported_image"),
        (encode(draw_shape(), "PNG")[:200], "damaged_image"),
        (encode(draw_shape(), "JPEG")[:300], "damaged_image"),
    ],
)
def test_bad_images_are_clear_errors(data, code):
    with pytest.raises(InvalidImage) as exc:
        decode_image(data, LIMIT, name="upload.png")
    assert exc.value.code == code and "upload.png" in exc.value.message


def test_unsupported_formats_are_named():
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n"
    with pytest.raises(InvalidImage, match="EPS files are not decoded here") as exc:
        decode_image(eps, LIMIT)
    assert exc.value.code == "unsupported_image"


def test_jpeg_draft_decodes_big_photos_smaller_but_reports_true_size():
    big = encode(Image.new("RGB", (2000, 1600), "orange"), "JPEG")
    decoded = decode_image(big, LIMIT, target=224)
    assert (decoded.width, decoded.height) == (2000, 1600)
    assert min(decoded.image.size) >= 448 and decoded.image.size[0] < 2000
