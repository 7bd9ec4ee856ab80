from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from clip_gaze.cli import cli
from conftest import draw_shape


def _commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, cmd in group.commands.items():
        yield (*prefix, name), cmd
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, (*prefix, name))


def test_every_command_has_help_with_an_example():
    runner = CliRunner()
    names = []
    for path, _cmd in _commands(cli):
        result = runner.invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, path
        assert "Example" in result.stdout and "clip-gaze " in result.stdout, f"{' '.join(path)} --help has no example"
        names.append(" ".join(path))
    assert {"index", "analyze", "compare", "serve", "models", "vocab list", "vocab show", "vocab create",
            "vocab add", "vocab remove", "vocab delete"} <= set(names)


def test_analyze_prints_a_table_relative_to_each_list(run, picture: Path):
    result = run("analyze", str(picture), "--vocab", "qualities,surfaces", "-k", "2")
    assert result.exit_code == 0, result.output
    assert "qualities: relative to 7 phrases" in result.stdout
    assert "surfaces: relative to 19 phrases" in result.stdout
    assert result.stdout.count("%") == 4


def test_analyze_json_lines_one_object_per_image(run, picture: Path, tmp_path: Path):
    second = tmp_path / "second.jpg"
    draw_shape("yellow", "triangle").save(second)
    result = run("analyze", str(picture), str(second), "--vocab", "qualities", "--vocab", "sites", "--top-k", "3", "--json")
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["ok"] is True and first["file"] == str(picture)
    assert set(first) >= {"model", "image", "results", "timing_ms"}
    assert first["model"]["preset"] == "toy" and first["image"]["width"] == 128
    assert list(first["results"]) == ["qualities", "sites"]
    assert first["results"]["qualities"]["softmax_over"] == 7 and len(first["results"]["qualities"]["matches"]) == 3
    assert json.loads(lines[1])["image"]["format"] == "JPEG"


def test_one_bad_image_among_several_is_reported_and_the_rest_analysed(run, picture: Path, tmp_path: Path):
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    result = run("analyze", str(bad), str(picture), "--vocab", "qualities", "--json")
    assert result.exit_code == 1
    rows = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [r["ok"] for r in rows] == [False, True]
    assert rows[0]["code"] == "unsupported_image"
    assert "1 of 2 images could not be analysed" in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["analyze", "missing.png"], "no such file: missing.png"),
        (["analyze", "{picture}", "--vocab", "nope"], "unknown vocabulary: nope"),
        (["analyze", "{picture}", "--model", "nope"], "unknown model 'nope'"),
        (["compare", "{picture}", ""], "phrases[0]: empty phrase"),
        (["compare", "{picture}", "a red \ud800 circle", "a square"], "phrases[0]: phrase is not valid Unicode"),
        (["vocab", "create", "mine", "saint \u202ejerome"], "U+202E"),
        (["vocab", "create", "mine", "saint\u200bjerome"], "U+200B"),
        (["vocab", "create", "mine", "x", "-t", "a {}", "-d", "\udcff"], "description is not valid Unicode"),
        (["vocab", "show", "nope"], "unknown vocabulary: nope"),
        (["vocab", "add", "movements", "x"], "built-in vocabulary"),
        (["vocab", "create", "Bad Name", "x"], "invalid vocabulary name"),
    ],
)
def test_bad_input_is_one_readable_line_and_a_nonzero_exit(run, picture: Path, args, message):
    result = run(*[a.replace("{picture}", str(picture)) for a in args])
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.stderr


def test_compare_ranks_the_right_phrase_first(run, picture: Path):
    result = run("compare", str(picture), "a red circle", "a blue square", "a yellow star", "--json")
    res = json.loads(result.stdout)["results"]["compare"]
    assert res["softmax_over"] == 3 and res["matches"][0]["phrase"] == "a blue square"


def test_vocab_lifecycle_from_a_csv_file(run, picture: Path, tmp_path: Path):
    csv = tmp_path / "saints.csv"
    csv.write_text("term,external_id\nsaint jerome,ICON-1\n\"saint agnes, martyr\",ICON-2\n", encoding="utf-8")
    assert "created saints: 2 phrases" in run("vocab", "create", "saints", "--file", str(csv), "-t", "depicting {}").stdout
    assert "1 added, 0 already there" in run("vocab", "add", "saints", "saint paul").stdout
    assert "0 added, 1 already there" in run("vocab", "add", "saints", "saint paul").stdout
    shown = json.loads(run("vocab", "show", "saints", "--json").stdout)
    assert [p["phrase"] for p in shown["phrases"]] == ["depicting saint jerome", "depicting saint agnes, martyr", "depicting saint paul"]
    assert shown["phrases"][1]["external_id"] == "ICON-2" and shown["vocabulary"]["version"] == 2  # created (1), then one add
    out = json.loads(run("analyze", str(picture), "--vocab", "saints", "--json").stdout)
    assert out["results"]["saints"]["softmax_over"] == 3
    assert "2 phrases removed" in run("vocab", "remove", "saints", "saint paul", "-e", "ICON-1").stdout
    listed = json.loads(run("vocab", "list", "--json").stdout)
    assert {"saints", "movements", "ci-flavors"} <= {v["name"] for v in listed}
    assert run("vocab", "delete", "saints").exit_code == 1  # not interactive: needs --yes
    assert "deleted saints" in run("vocab", "delete", "saints", "--yes").stdout


def test_index_embeds_only_what_is_missing(run):
    first = json.loads(run("index", "--vocab", "qualities,surfaces", "--json").stdout)
    assert first["embedded"] == 26 and sorted(first["indexes_written"]) == ["qualities", "surfaces"]
    second = json.loads(run("index", "--vocab", "qualities,surfaces", "--json").stdout)
    assert second["embedded"] == 0 and second["indexes_written"] == []


def test_models_json_gives_preset_arch_pretrained_and_config():
    result = CliRunner().invoke(cli, ["models", "--json"])
    models = {m["preset"]: m for m in json.loads(result.stdout)}
    assert set(models) == {"vit-b-32", "sd15", "sd2", "sdxl", "toy", "toy-sigmoid", "toy-multilingual", "siglip-b16",
                           "siglip-so400m", "siglip2-b16", "xlm-b32", "xlm-h14", "nllb-clip-base", "nllb-clip-large"}
    assert models["vit-b-32"]["arch"] == "ViT-B-32" and models["vit-b-32"]["pretrained"] == "openai"
    assert "config" not in models["sd15"]
    assert Path(models["toy"]["config"]).is_file() and Path(models["toy"]["pretrained"]).is_file()


def test_serve_refuses_to_bind_beyond_loopback_without_a_token():
    result = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0", "--no-index"])
    assert result.exit_code == 1 and "refusing to listen on 0.0.0.0" in result.stderr


def test_collection_commands_from_create_to_delete(run, tmp_path: Path):
    folder = tmp_path / "scans"
    folder.mkdir()
    for colour, shape in (("red", "circle"), ("blue", "square"), ("green", "triangle")):
        draw_shape(colour, shape).save(folder / f"{colour}-{shape}.png")
    (folder / "broken.png").write_text("not a picture")
    assert run("collection", "create", "museum", "-d", "three shapes").exit_code == 0
    added = run("collection", "add", "museum", str(folder), "--json")
    report = json.loads(added.stdout)
    assert (report["added"], report["failed"], report["errors"][0]["error_code"]) == (3, 1, "unsupported_image")
    assert "3 pictures" in run("collection", "show").stdout
    assert "unsupported_image" in run("collection", "show", "museum", "--errors").stdout
    out = tmp_path / "scores.jsonl"
    result = run("collection", "analyze", "museum", "--vocab", "qualities", "-k", "2", "--out", str(out))
    assert result.exit_code == 0 and len(out.read_text().splitlines()) == 6
    hits = json.loads(run("collection", "search", "museum", "a blue square", "-k", "1", "--json").stdout)["hits"]
    assert hits[0]["external_id"] == "blue-square.png"
    by_picture = run("collection", "search", "museum", "--image", str(folder / "green-triangle.png"), "-k", "1")
    assert "green-triangle.png" in by_picture.stdout.splitlines()[1]
    bad = run("collection", "analyze", "museum", "--out", str(tmp_path / "scores.xlsx"))
    assert bad.exit_code == 1 and bad.stderr.strip().startswith("Error:") and ".parquet, .csv or .jsonl" in bad.stderr
    assert run("collection", "delete", "museum").exit_code == 1  # not interactive: needs --yes
    assert "deleted collection museum" in run("collection", "delete", "museum", "--yes").stdout
    missing = run("collection", "show", "museum")
    assert missing.exit_code == 1 and "no collection named 'museum'" in missing.stderr


def test_a_missing_local_source_is_one_error_line_before_anything_is_added(run, tmp_path: Path):
    assert run("collection", "create", "scans").exit_code == 0
    folder = tmp_path / "scans"
    folder.mkdir()
    draw_shape().save(folder / "a.png")
    result = run("collection", "add", "scans", str(folder), str(tmp_path / "scnas"))
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [f"Error: no such file or folder: {tmp_path / 'scnas'} (a source is a folder, "
                                                  "a file, or an http(s) URL)"]
    shown = json.loads(run("collection", "show", "scans", "--json").stdout)
    assert shown["collection"]["size"] == 0 and shown["collection"]["failed"] == 0  # nothing started



def test_a_source_under_the_home_folder_may_be_named_with_a_tilde(run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "photos").mkdir()
    draw_shape().save(tmp_path / "photos" / "a.png")
    assert run("collection", "create", "home").exit_code == 0
    result = run("collection", "add", "home", "~/photos", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["added"] == 1


def test_progress_off_a_terminal_is_a_plain_line_every_few_seconds():
    from clip_gaze.cli_common import ProgressLines

    now, lines = [0.0], []
    with ProgressLines(3, "quick", every=5, clock=lambda: now[0], write=lines.append) as bar:
        bar.update(3)
    assert lines == []  # a run shorter than a line's interval says nothing
    with ProgressLines(300, "adding pictures", every=5, clock=lambda: now[0], write=lines.append) as bar:
        for _ in range(30):
            now[0] += 1
            bar.update(10)
    assert lines == ["adding pictures: 50 of 300 (17%), 10.0 a second, about 25 s left",
                     "adding pictures: 100 of 300 (33%), 10.0 a second, about 20 s left",
                     "adding pictures: 150 of 300 (50%), 10.0 a second, about 15 s left",
                     "adding pictures: 200 of 300 (67%), 10.0 a second, about 10 s left",
                     "adding pictures: 250 of 300 (83%), 10.0 a second, about 5 s left",
                     "adding pictures: 300 of 300 (100%), 10.0 a second",
                     "adding pictures: 300 of 300 (100%), 10.0 a second"]


def test_collection_add_reports_progress_lines_on_stderr_when_it_is_not_a_terminal(run, tmp_path: Path,
                                                                                   monkeypatch: pytest.MonkeyPatch):
    import clip_gaze.cli_common

    monkeypatch.setattr(clip_gaze.cli_common, "PROGRESS_EVERY", 0.0)  # a line at every batch
    (tmp_path / "few").mkdir()
    for i, colour in enumerate(("red", "blue", "green")):
        draw_shape(colour).save(tmp_path / "few" / f"{i}.png")
    assert run("collection", "create", "few").exit_code == 0
    result = run("collection", "add", "few", str(tmp_path / "few"))
    assert result.exit_code == 0, result.output
    assert "adding pictures: 3 of 3 (100%)" in result.stderr and "\r" not in result.stderr


def test_collection_add_counts_decoder_warnings_in_its_report_and_prints_none_of_them(run, tmp_path: Path, capfd):
    from test_decode_memory import _odd_exif_jpeg

    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "odd-exif.jpg").write_bytes(_odd_exif_jpeg())
    draw_shape().save(tmp_path / "odd" / "plain.png")
    assert run("collection", "create", "odd").exit_code == 0
    result = run("collection", "add", "odd", str(tmp_path / "odd"), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["added"], report["failed"], report["warnings"]) == (2, 0, 1)
    assert "Skipping tag" not in capfd.readouterr().err and "Skipping tag" not in result.stderr
    text = run("collection", "add", "odd", str(tmp_path / "odd" / "odd-exif.jpg"))
    assert "decoder warnings" not in text.stdout  # already stored: nothing decoded, nothing to warn of
