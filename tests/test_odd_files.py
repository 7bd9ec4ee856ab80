"""Files no one here made: every mode and format Pillow gives, a corpus of odd and broken pictures
generated here (each format Pillow writes, truncated and with corrupt headers), folders holding more
than pictures, and table sources with bad or enormous lines. Nothing answers 5xx or prints a
traceback, and every file's fate is told."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from conftest import draw_shape, encode, service_engine
from indexer.collections.local import Collections
from indexer.engine import Engine
from indexer.errors import ClipGazeError, InvalidImage
from indexer.pictures.decode import Decoder
from indexer.pictures.iiif_image import MAX_INFO_BYTES
from indexer.pictures.rows import MAX_FIELD_CHARS, MAX_LINE_BYTES
from indexer.pictures.sources import MAX_MANIFEST_BYTES
from indexer.schema import parse
from indexer.schema.collections import AddSources, CreateCollection
from indexer.settings import Settings
from service import create_app

DECODER = Decoder(10_000_000, 10**12, target=224)
# Pillow warns of what it meets in odd files (deprecated formats, corrupt EXIF, truncated reads); the
# tests' warnings-as-errors would turn those warnings into failures that a server never sees.
PILLOW_WARNS = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning:PIL.*")


def decode(data: bytes, name: str = "image") -> Image.Image:
    return DECODER.decode(data, name).image


def unimplemented_dds() -> bytes:
    """A DDS file whose pixel-format flags (8) Pillow's decoder does not implement: it raised
    NotImplementedError, which answered 500."""
    data = bytearray(encode(Image.new("RGB", (16, 16), "red"), "DDS"))
    struct.pack_into("<I", data, 80, 8)  # DDS_PIXELFORMAT.dwFlags, after "DDS " and 76 bytes of header
    return bytes(data)


# -- modes ---------------------------------------------------------------------------------------------


def _sixteen_bit_ramp(mode: str) -> Image.Image:
    values = np.linspace(0, 65535, 64).astype(np.uint16)
    ramp = np.tile(values, (8, 1))
    dtype = ">u2" if mode == "I;16B" else "<u2"
    return Image.frombytes(mode, (64, 8), ramp.astype(dtype).tobytes())


@pytest.mark.parametrize("mode", ["I;16", "I;16L", "I;16B"])
def test_sixteen_bit_pictures_are_scaled_to_eight_bits_not_refused(mode):
    """16-bit TIFFs (I;16B from a big-endian file) answered `damaged_image … (image has wrong mode)`."""
    data = encode(_sixteen_bit_ramp(mode), "TIFF")
    assert Image.open(io.BytesIO(data)).mode.startswith("I;16")
    row = np.asarray(decode(data))[4, :, 0]
    assert row[0] == 0 and row[-1] == 255 and np.all(np.diff(row.astype(int)) >= 0)


@pytest.mark.parametrize(
    ("mode", "colour", "expected"),
    [
        ("1", 1, (255, 255, 255)),
        ("L", 128, (128, 128, 128)),
        ("LA", (0, 0), (255, 255, 255)),  # transparent: on white
        ("La", (0, 0), (255, 255, 255)),
        ("PA", (0, 0), (255, 255, 255)),
        ("RGBA", (255, 0, 0, 255), (255, 0, 0)),
        ("RGBA", (255, 0, 0, 0), (255, 255, 255)),
        ("CMYK", (255, 0, 0, 0), (0, 255, 255)),  # cyan
        ("YCbCr", (76, 85, 255), (254, 0, 0)),  # red, within rounding
        ("LAB", (255, 128, 128), (255, 255, 255)),  # L* 100: white
        ("HSV", (0, 255, 255), (255, 0, 0)),
        ("I", 1000, (0, 0, 0)),  # one value: the range is empty, so black
        ("F", 0.5, (0, 0, 0)),
    ],
)
def test_every_mode_becomes_the_models_rgb(mode, colour, expected):
    got = DECODER.from_pil(Image.new(mode, (20, 10), colour)).image
    assert got.mode == "RGB"
    assert all(abs(a - b) <= 2 for a, b in zip(got.getpixel((5, 5)), expected)), (mode, got.getpixel((5, 5)))


def test_high_depth_values_are_scaled_from_their_own_range():
    arr = np.zeros((10, 20), dtype=np.int32)
    arr[:, 10:] = 4000
    got = DECODER.from_pil(Image.fromarray(arr, "I")).image
    assert got.getpixel((2, 2)) == (0, 0, 0) and got.getpixel((15, 2)) == (255, 255, 255)


def test_a_palette_picture_with_a_transparent_colour_is_on_white():
    img = Image.new("P", (10, 10), 1)
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    img.info["transparency"] = 1
    assert DECODER.from_pil(img).image.getpixel((3, 3)) == (255, 255, 255)


def test_a_picture_of_extreme_shape_is_cut_to_its_centre_before_the_model_sees_it(client):
    """A 1 × 83,886,338 BLP of Pillow's tests drove `collection add` past 23 GB: the model's 'shortest'
    resize makes its shorter side 224 pixels before cutting the central square."""
    strip = Image.new("L", (3, 150_000), 255)
    strip.paste(0, (0, 75_000 - 96, 3, 75_000 + 96))  # black in the middle, white elsewhere
    decoded = DECODER.decode(encode(strip, "PNG"), "strip.png")
    assert (decoded.width, decoded.height) == (3, 150_000) and decoded.image.size == (3, 192)
    assert decoded.image.getpixel((1, 96)) == (0, 0, 0)
    resp = client.post("/v1/analyze", data={"image": (io.BytesIO(encode(strip, "PNG")), "strip.png"), "vocabularies": "qualities"})
    assert resp.status_code == 200 and resp.get_json()["image"]["height"] == 150_000


# -- formats -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PPM", "TGA", "ICO", "PCX", "SGI", "DDS", "QOI", "JPEG2000", "IM", "MPO"])
@PILLOW_WARNS
def test_raster_formats_pillow_decodes_are_read(fmt):
    decoded = DECODER.decode(encode(draw_shape("red").convert("RGB"), fmt), "x")
    assert decoded.image.getpixel((64, 64))[0] > 150 and decoded.width == 128


def test_an_animated_png_is_read_by_its_first_frame():
    frames = [Image.new("RGB", (16, 16), c) for c in ("blue", "red")]
    data = encode(frames[0], "PNG", save_all=True, append_images=frames[1:])
    assert decode(data).getpixel((3, 3)) == (0, 0, 255)


def test_a_postscript_file_is_refused_by_name_not_run():
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n0 0 moveto showpage\n"
    with pytest.raises(InvalidImage) as exc:
        DECODER.decode(eps, "drawing.eps")
    assert exc.value.code == "unsupported_image" and "EPS" in exc.value.message and "Ghostscript" in exc.value.message


def test_a_variant_the_decoder_does_not_implement_is_unsupported_not_a_crash():
    with pytest.raises(InvalidImage) as exc:
        DECODER.decode(unimplemented_dds(), "texture.dds")
    assert exc.value.code == "unsupported_image" and "texture.dds (DDS)" in exc.value.message


# -- a corpus of odd pictures, generated here ----------------------------------------------------------

WRITERS = ["BMP", "DDS", "GIF", "ICO", "IM", "JPEG", "JPEG2000", "MPO", "MSP", "PCX", "PNG", "PPM", "QOI", "SGI",
           "SPIDER", "TGA", "TIFF", "WEBP", "XBM", "EPS", "PDF", "AVIF", "BLP", "BUFR", "DIB", "PALM", "ICNS"]


def odd_corpus() -> list[tuple[str, bytes]]:
    """Each format Pillow writes (in the modes it takes), whole, truncated at several points and with
    corrupt headers, plus a few hand-made oddities."""
    picture = draw_shape("blue", "square", size=48)
    out: list[tuple[str, bytes]] = []
    for fmt in WRITERS:
        for mode in ("RGB", "L", "1", "RGBA", "P", "I;16", "F", "CMYK"):
            try:
                data = encode(picture.convert(mode) if mode != "I;16" else picture.convert("I").convert("I;16"), fmt)
            except Exception:  # this format does not take this mode, or needs a library not here
                continue
            name = f"{fmt}-{mode}"
            out.append((name, data))
            for cut in (8, len(data) // 4, len(data) // 2, len(data) - 1):
                out.append((f"{name}-cut{cut}", data[:cut]))
            for start in (4, 12, 30):
                broken = bytearray(data)
                for i in range(start, min(len(broken), start + 12)):
                    broken[i] ^= 0xA5
                out.append((f"{name}-corrupt{start}", bytes(broken)))
    out += [("dds-unimplemented", unimplemented_dds()), ("empty", b""), ("text", b"just text\n"),
            ("png-signature-only", b"\x89PNG\r\n\x1a\n"), ("zeros", bytes(4096))]
    return out


CORPUS = odd_corpus()


@PILLOW_WARNS
def test_the_corpus_holds_many_formats_and_broken_files():
    formats = {name.split("-")[0] for name, _ in CORPUS}
    assert len(CORPUS) > 600 and len(formats) >= 18


@PILLOW_WARNS
def test_no_odd_picture_raises_anything_but_a_clear_error():
    outcomes: dict[str, int] = {}
    for name, data in CORPUS:
        try:
            DECODER.decode(data, name)
            outcomes["ok"] = outcomes.get("ok", 0) + 1
        except ClipGazeError as exc:  # anything else fails the test with its traceback
            assert exc.status < 500 and name in exc.message, (name, exc.message)
            outcomes[exc.code] = outcomes.get(exc.code, 0) + 1
    assert outcomes["ok"] > 60 and outcomes["damaged_image"] > 100 and outcomes["unsupported_image"] > 50


@pytest.fixture
def client(clean_environ, toy_loader, monkeypatch):
    engine = service_engine(toy_loader, monkeypatch, "t0ken")
    app = create_app(Settings.from_env(), engine=engine)
    return app.test_client()


@PILLOW_WARNS
def test_the_api_answers_every_odd_picture_in_json_without_a_5xx(client):
    statuses: dict[int, int] = {}
    for name, data in CORPUS:
        resp = client.post("/v1/analyze", data={"image": (io.BytesIO(data), name), "vocabularies": "qualities"})
        body = resp.get_json()
        assert resp.status_code < 500, (name, body)
        assert body["ok"] is (resp.status_code == 200), (name, body)
        statuses[resp.status_code] = statuses.get(resp.status_code, 0) + 1
    assert statuses[200] > 60 and statuses[400] > 150


def test_one_bad_picture_in_a_batch_is_its_own_entry(client):
    good = encode(draw_shape("red", "circle"))
    files = [(io.BytesIO(good), "good.png"), (io.BytesIO(unimplemented_dds()), "texture.dds"),
             (io.BytesIO(good[:100]), "cut.png"), (io.BytesIO(good), "again.png")]
    resp = client.post("/v1/analyze/batch", data={"image": files, "vocabularies": "qualities"})
    body = resp.get_json()
    assert resp.status_code == 200, body
    assert [r["ok"] for r in body["results"]] == [True, False, False, True]
    assert [r.get("code") for r in body["results"][1:3]] == ["unsupported_image", "damaged_image"]


def test_the_cli_says_one_error_line_for_an_undecodable_file(run, tmp_path: Path):
    bad = tmp_path / "texture.dds"
    bad.write_bytes(unimplemented_dds())
    result = run("analyze", str(bad), "--vocab", "qualities")
    lines = result.stderr.strip().splitlines()
    assert result.exit_code != 0 and len(lines) == 1 and lines[0].startswith("Error:") and "texture.dds" in lines[0]
    assert "Traceback" not in result.output + result.stderr


# -- a folder's every file accounted for ---------------------------------------------------------------


def _new(engine: Engine, name: str = "odd") -> Collections:
    collections = Collections(engine)
    collections.create(parse(CreateCollection, {"name": name}))
    return collections


def test_a_folder_add_tells_every_files_fate(engine: Engine, tmp_path: Path):
    root = tmp_path / "scans"
    (root / "sub").mkdir(parents=True)
    (root / ".git").mkdir()
    draw_shape("red", "circle").save(root / "a.png")
    draw_shape("blue", "square").convert("RGB").save(root / "b.ppm")  # a format the old walk skipped
    (root / "sub" / "no-extension").write_bytes(encode(draw_shape("green", "triangle")))
    _sixteen_bit_ramp("I;16B").save(root / "sub" / "scan16.tif")
    (root / "texture.dds").write_bytes(unimplemented_dds())
    (root / "cut.jpg").write_bytes(encode(draw_shape(), "JPEG")[:300])
    (root / "readme").write_text("about these scans")
    (root / "notes.txt").write_text("ignored: text beside pictures")
    (root / "a.xmp").write_text("<x:xmpmeta/>")
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / ".git" / "config").write_text("[core]")
    collections = _new(engine)
    report = collections.add("odd", parse(AddSources, {"sources": [str(root)]}))
    assert (report.total, report.added, report.failed, report.ignored) == (7, 4, 3, 4)
    failed = {Path(p.source).name: p.error_code for p in collections.view("odd", errors=True, limit=50).pictures}
    assert failed == {"texture.dds": "unsupported_image", "cut.jpg": "damaged_image", "readme": "unsupported_image"}
    added = {p.external_id for p in collections.view("odd", limit=50).pictures}
    assert added == {"a.png", "b.ppm", "sub/no-extension", "sub/scan16.tif"}


def test_the_cli_report_counts_the_files_passed_over(run, tmp_path: Path):
    root = tmp_path / "scans"
    root.mkdir()
    draw_shape().save(root / "a.png")
    (root / "notes.txt").write_text("text")
    (root / ".hidden.png").write_bytes(encode(draw_shape()))
    assert run("collection", "create", "odd").exit_code == 0
    out = run("collection", "add", "odd", str(root)).stdout
    assert "1 pictures added" in out and "2 hidden or text/metadata files passed over" in out
    report = json.loads(run("collection", "add", "odd", str(root), "--json").stdout)
    assert (report["skipped"], report["ignored"]) == (1, 2)


def test_a_file_that_is_not_a_picture_is_refused_from_its_header_before_it_is_read(engine: Engine, tmp_path: Path,
                                                                                     monkeypatch):
    big = tmp_path / "video.mov"
    big.write_bytes(b"\0\0\0\x14ftypqt  " + bytes(2_000_000))
    read: list[Path] = []
    original = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: read.append(self) or original(self))
    collections = _new(engine)
    report = collections.add("odd", parse(AddSources, {"sources": [str(big)]}))
    assert report.failed == 1 and big not in read
    assert collections.view("odd", errors=True).pictures[0].error_code == "unsupported_image"


# -- table sources: each bad line its own failure, memory bounded --------------------------------------


def _table_add(engine: Engine, path: Path) -> tuple[Any, dict[str, tuple[str | None, str | None]]]:
    collections = _new(engine)
    report = collections.add("odd", parse(AddSources, {"sources": [str(path)]}))
    pictures = collections.view("odd", errors=True, limit=50).pictures
    return report, {p.source.rsplit("/", 1)[-1]: (p.error_code, p.error) for p in pictures}


def test_a_line_that_is_not_json_fails_alone(engine: Engine, tmp_path: Path):
    draw_shape("red").save(tmp_path / "r.png")
    draw_shape("blue").save(tmp_path / "b.png")
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"image": "r.png", "external_id": "R"}) + "\n{not json\n[1, 2]\n"
                    + json.dumps({"image": "b.png", "external_id": "B"}) + "\n")
    report, failures = _table_add(engine, rows)
    assert (report.added, report.failed) == (2, 2)
    assert failures["rows.jsonl:2"][0] == "invalid_source" and "line 2: not JSON" in failures["rows.jsonl:2"][1]
    assert "line 3: not a JSON object" in failures["rows.jsonl:3"][1]


def test_a_line_over_the_cap_is_a_failure_and_is_never_held_whole(engine: Engine, tmp_path: Path, monkeypatch):
    import indexer.pictures.rows as rows_module

    draw_shape("red").save(tmp_path / "r.png")
    monkeypatch.setattr(rows_module, "MAX_LINE_BYTES", 4096)
    seen: list[int] = []
    real = rows_module._Lines.__next__

    def watched(self):  # the longest piece a read hands over
        line = real(self)
        seen.append(len(line))
        return line

    monkeypatch.setattr(rows_module._Lines, "__next__", watched)
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"image": "r.png", "external_id": "before"}) + "\n"
                    + json.dumps({"image": "r.png", "note": "x" * 200_000}) + "\n"
                    + json.dumps({"image": "r.png", "external_id": "after"}) + "\n")
    report, failures = _table_add(engine, rows)
    assert (report.added, report.failed) == (2, 1)  # the same picture named twice: read once, counted twice
    assert "line 2: longer than 4 KiB" in failures["rows.jsonl:2"][1]
    assert max(seen) < 4096


def test_csv_rows_that_break_fail_alone_and_quoted_lines_are_counted(engine: Engine, tmp_path: Path):
    draw_shape("red").save(tmp_path / "r.png")
    table = tmp_path / "objects.csv"
    table.write_text('image,external_id,description\n'
                     'r.png,A,"two\nlines"\n'
                     f'r.png,B,{"y" * (MAX_FIELD_CHARS + 10)}\n'
                     ',C,no picture\n'
                     'r.png,D,fine\n')
    report, failures = _table_add(engine, table)
    assert report.failed == 2 and report.added == 2
    assert "line 4" in failures["objects.csv:4"][1] and "the limit for a field" in failures["objects.csv:4"][1]
    assert "empty `image`" in failures["objects.csv:5"][1]


def test_the_stated_caps_are_what_the_readme_says():
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert f"{MAX_LINE_BYTES // 2**20} MiB a line" in readme and f"{MAX_FIELD_CHARS // 1024} KiB a field" in readme
    assert f"{MAX_MANIFEST_BYTES // 2**20} MiB a manifest" in readme and f"{MAX_INFO_BYTES // 2**20} MiB the `info.json`" in readme


# -- terminal escapes from files and sources are shown, not acted on -----------------------------------

UNSHOWN = ("\x1b", "\x07", "\x9b", "\r", "\u202e", "\u200b", "\u2066")


def test_escapes_in_ids_metadata_and_file_names_are_printed_escaped(run, tmp_path: Path):
    evil_file = tmp_path / "scan\x1b[2J\u202e.png"
    draw_shape("red").save(evil_file)
    table = tmp_path / "objects.csv"
    table.write_text("image,external_id,title\n"
                     f"{evil_file.name},\"OBJ\x1b]0;owned\x07-1\",\"clear\x1b[2J\"\n"
                     "missing\x9b.png,\"bad\u200bid\r\",x\n", encoding="utf-8")
    assert run("collection", "create", "odd").exit_code == 0
    outputs = [run("collection", "add", "odd", str(table)), run("collection", "show", "odd"),
               run("collection", "show", "odd", "--errors"), run("collection", "search", "odd", "a red circle"),
               run("analyze", str(evil_file), "--vocab", "qualities"), run("analyze", str(tmp_path / "nope\x1b[2J.png"))]
    for result in outputs:  # (stderr's progress bars move with a carriage return of their own)
        assert not any(c in result.stdout for c in UNSHOWN), repr(result.stdout)
        assert not any(c in result.stderr for c in UNSHOWN if c != "\r"), repr(result.stderr)
    assert "OBJ\\u001b]0;owned\\u0007-1" in outputs[1].stdout and "\\u202e.png" in outputs[1].stdout
    assert "bad\\u200bid" in outputs[2].stdout and outputs[5].stderr.startswith("Error: ")
    shown = json.loads(run("collection", "show", "odd", "--json").stdout)  # JSON output stays JSON, same values
    assert shown["pictures"][0]["external_id"] == "OBJ\x1b]0;owned\x07-1"


def test_a_picture_inside_a_picture_is_held_to_the_pixel_limit_too():
    """An ICNS declares 256×256; the PNG inside it claims 100,000 × 100,000 (Pillow's oom-….icns took
    16 GB before Pillow's own guard was left on for what the header check cannot see)."""
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 6, 0, 0, 0)) + chunk(b"IEND", b"")
    entry = b"ic08" + struct.pack(">I", 8 + len(png)) + png
    icns = b"icns" + struct.pack(">I", 8 + len(entry)) + entry
    with pytest.raises(ClipGazeError) as caught:
        DECODER.decode(icns, "bomb.icns")
    assert caught.value.code == "image_too_large" and caught.value.status == 413, caught.value.message
