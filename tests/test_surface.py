"""The surface that users and checks outside this suite rely on, pinned before `indexer/` was laid out in
rooms (and kept so for every change after): the served OpenAPI document, the command tree with every
option, the settings `clip-gaze --help` prints, the public names and signatures of `clip_gaze`, the toy
model's answers for the pictures in examples/, and a data directory written by the code of that time
(tests/surface/home/, made by tests/surface/make_home.py) opening and reading the same.

This file imports only what a user reaches (`clip_gaze`, `service`, `indexer.engine.Engine`,
`indexer.schema`, `indexer.settings`) and drives the rest through the CLI and the REST API, so a
reorganised core cannot change what it checks. The golden answers are in tests/surface/*.json;
`CLIP_GAZE_SURFACE_UPDATE=1 python -m pytest tests/test_surface.py` rewrites them (on purpose only).
Numbers are compared within 1e-4 (ONNX Runtime and torch agree within 1e-5); timings are left out.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import sqlite3
from pathlib import Path
from typing import Any, Callable

import click
import pytest

import clip_gaze
from clip_gaze.cli import cli
from indexer.engine import Engine
from service import create_app

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "surface"
UPDATE = os.environ.get("CLIP_GAZE_SURFACE_UPDATE") == "1"
TOLERANCE = 1e-4
VOLATILE = {"timing_ms", "timing_breakdown_ms", "seconds"}  # differ from run to run
EXAMPLES = ROOT / "examples"
SHAPES = ["a red circle", "a blue square", "a green triangle", "a yellow star", "a red shape", "a blue shape"]


# -- comparing with the golden files ------------------------------------------------------------------
def differences(got: Any, want: Any, where: str = "$") -> list[str]:
    if isinstance(want, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
        return [] if abs(got - want) <= TOLERANCE else [f"{where}: {got!r} != {want!r}"]
    if type(got) is not type(want) and not (isinstance(got, int) and isinstance(want, int)):
        return [f"{where}: {type(got).__name__} {got!r} != {type(want).__name__} {want!r}"]
    if isinstance(want, dict):
        if got.keys() != want.keys():
            return [f"{where}: keys {sorted(got)} != {sorted(want)}"]
        return [d for k in want for d in differences(got[k], want[k], f"{where}.{k}")]
    if isinstance(want, list):
        if len(got) != len(want):
            return [f"{where}: {len(got)} items != {len(want)}"]
        return [d for i, (g, w) in enumerate(zip(got, want)) for d in differences(g, w, f"{where}[{i}]")]
    return [] if got == want else [f"{where}: {got!r} != {want!r}"]


def stable(value: Any, drop: set[str] = VOLATILE, paths: dict[str, str] | None = None) -> Any:
    """`value` without the keys that vary between runs, and with run-dependent paths named."""
    if isinstance(value, dict):
        return {k: stable(v, drop, paths) for k, v in value.items() if k not in drop}
    if isinstance(value, list):
        return [stable(v, drop, paths) for v in value]
    if isinstance(value, str):
        for path, name in (paths or {}).items():
            value = value.replace(path, name)
    return value


def check(name: str, got: Any) -> None:
    path = GOLDEN / f"{name}.json"
    got = json.loads(json.dumps(got))  # tuples as lists, as a file holds them
    if UPDATE:
        path.write_text(json.dumps(got, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        return
    want = json.loads(path.read_text(encoding="utf-8"))
    problems = differences(got, want)
    assert not problems, f"{path.name} differs:\n" + "\n".join(problems[:20])


def test_the_comparison_sees_a_changed_value_a_missing_key_and_a_reordered_list():
    want = {"matches": [{"phrase": "a", "probability": 0.5}, {"phrase": "b", "probability": 0.25}]}
    assert differences(json.loads(json.dumps(want)), want) == []
    assert differences({"matches": [{"phrase": "a", "probability": 0.50009}, want["matches"][1]]}, want) == []
    assert differences({"matches": [{"phrase": "a", "probability": 0.51}, want["matches"][1]]}, want)
    assert differences({"matches": [{"phrase": "a"}, want["matches"][1]]}, want)
    assert differences({"matches": want["matches"][::-1]}, want)


# -- what the service and the CLI declare ---------------------------------------------------------------
def test_the_served_openapi_document_is_unchanged(engine: Engine):
    answer = create_app(engine=engine).test_client().get("/openapi.json")
    assert answer.status_code == 200
    check("openapi", answer.get_json())


def _home_default(text: str) -> str:
    return re.sub(r"(CLIP_GAZE_HOME\s.*?\(default: )[^)\n]*\)", r"\1<home>)", text)


def _info(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _info(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_info(v) for v in value]
    if isinstance(value, str):
        return _home_default(value)
    if callable(value):  # a default computed when asked
        return "<computed>"
    return value


def test_the_command_tree_and_every_option_are_unchanged():
    tree = _info(cli.to_info_dict(click.Context(cli, info_name="clip-gaze", **cli.context_settings)))
    check("cli", tree)


def test_clip_gaze_help_lists_the_same_settings(run: Callable[..., Any]):
    result = run("--help")
    assert result.exit_code == 0
    settings = result.output[result.output.index("Settings (environment variables):"):]
    check("help-settings", _home_default(settings).splitlines())


def _signature(obj: Any) -> str | None:
    try:
        return str(inspect.signature(obj))
    except (TypeError, ValueError):
        return None


def test_the_public_names_and_signatures_of_clip_gaze_are_unchanged():
    names: dict[str, Any] = {}
    for name in sorted(clip_gaze.__all__):
        obj = getattr(clip_gaze, name)
        kind = "class" if inspect.isclass(obj) else "function" if callable(obj) else type(obj).__name__
        entry: dict[str, Any] = {"kind": kind, "signature": _signature(obj)}
        if isinstance(obj, list):
            entry.update(length=len(obj), first=obj[:3])
        if inspect.isclass(obj):
            entry["members"] = {m: _signature(getattr(obj, m)) for m in sorted(vars(obj))
                                if not m.startswith("_") and callable(getattr(obj, m))}
        names[name] = entry
    names["ApiError"]["attributes"] = sorted(k for k in vars(clip_gaze.ApiError(500, "code", "message")) if not k.startswith("_"))
    check("clip-gaze-names", {"version": clip_gaze.__version__, "all": list(clip_gaze.__all__), "names": names,
                              "SCULTPURE_MATERIALS": clip_gaze.SCULTPURE_MATERIALS == clip_gaze.SCULPTURE_MATERIALS})


# -- the toy model's answers ------------------------------------------------------------------------------
def _json(result: Any) -> Any:
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_the_toy_models_answers_for_the_examples_are_unchanged(run: Callable[..., Any], tmp_path: Path):
    paths = {str(tmp_path): "<tmp>", str(ROOT): "<root>"}
    out: dict[str, Any] = {}
    assert run("vocab", "create", "shapes", *SHAPES, "-d", "toy shapes").exit_code == 0
    pictures = [str(EXAMPLES / "red-circle.png"), str(EXAMPLES / "blue-square.png")]
    out["analyze"] = _json(run("analyze", *pictures, "--vocab", "movements,surfaces", "--vocab", "shapes", "-k", "3", "--json"))
    out["compare"] = _json(run("compare", pictures[0], *SHAPES[:4], "--json"))
    out["explain"] = _json(run("explain", pictures[1], "--phrase", "a blue square", "--phrase", "a red circle",
                               "--vocab", "shapes", "--versus", "a green triangle", "-k", "2",
                               "--out", str(tmp_path / "maps"), "--json"))
    out["maps"] = sorted(p.name for p in (tmp_path / "maps").iterdir())
    assert run("collection", "create", "examples", "-d", "the two examples").exit_code == 0
    out["collection_add"] = _json(run("collection", "add", "examples", str(EXAMPLES), "--json"))
    out["collection_show"] = _json(run("collection", "show", "examples", "--json"))
    out["collection_search"] = _json(run("collection", "search", "examples", "a red circle", "-k", "2", "--json"))
    table = tmp_path / "scores.jsonl"
    assert run("collection", "analyze", "examples", "--vocab", "shapes", "-k", "2", "--out", str(table)).exit_code == 0
    out["collection_analyze"] = [json.loads(line) for line in table.read_text(encoding="utf-8").splitlines()]
    check("toy-answers", stable(out, VOLATILE | {"created_at", "updated_at"}, paths))


# -- a data directory of the code before -------------------------------------------------------------------
@pytest.fixture
def old_home(clean_environ: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of tests/surface/home/ as the data directory (the session's ONNX export linked in, as in
    every test's home); the committed one is never written."""
    home = tmp_path / "old-home"
    shutil.copytree(GOLDEN / "home", home)
    for link in clean_environ.rglob("*"):
        if link.is_symlink():
            target = home / link.relative_to(clean_environ)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(link.resolve(), target_is_directory=True)
    monkeypatch.setenv("CLIP_GAZE_HOME", str(home))
    return home


def _schema(db: Path) -> dict[str, Any]:
    with sqlite3.connect(db) as conn:
        return {"tables": conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name").fetchall(),
                "migrations": conn.execute("SELECT migration_set, name FROM _sqlite_migrations ORDER BY name").fetchall()}


def test_a_data_directory_written_before_opens_and_reads_the_same(old_home: Path, run: Callable[..., Any],
                                                                  toy_loader: Callable[..., Any]):
    before = _schema(old_home / "clip-gaze.db")
    job = (old_home / "JOB").read_text(encoding="utf-8").strip()
    out: dict[str, Any] = {}
    client = create_app(engine=Engine(old_home, "toy", loader=toy_loader)).test_client()
    for name in ("shapes", "toy-world", "surfaces", "qualities"):
        answer = client.get(f"/v1/vocabularies/{name}?limit=50")
        assert answer.status_code == 200, answer.get_json()
        out[f"vocabulary {name}"] = answer.get_json()
    for name in ("museum", "served"):
        out[f"collection {name}"] = client.get(f"/v1/collections/{name}").get_json()
        out[f"collection {name} errors"] = client.get(f"/v1/collections/{name}?errors=true").get_json()
    out["collections"] = client.get("/v1/collections").get_json()
    out["job"] = client.get(f"/v1/jobs/{job}").get_json()
    out["search"] = client.get("/v1/collections/museum/search?q=a+red+circle&top_k=3").get_json()
    out["analyze"] = _json(run("analyze", str(EXAMPLES / "red-circle.png"), "--vocab", "shapes,toy-world,surfaces",
                               "-k", "3", "--json"))
    table = old_home / "scores.jsonl"
    assert run("collection", "analyze", "museum", "--vocab", "shapes", "-k", "2", "--out", str(table)).exit_code == 0
    out["collection_analyze"] = [json.loads(line) for line in table.read_text(encoding="utf-8").splitlines()]
    check("old-home", stable(out, paths={str(ROOT): "<root>"}))
    after = _schema(old_home / "clip-gaze.db")
    # opened as it was: no migration ran again, only those written since (004, 005, 008, …) ran, nothing was dropped
    since = after["migrations"][len(before["migrations"]):]
    assert after["migrations"][:len(before["migrations"])] == before["migrations"]
    assert {"004_jobs_resume", "005_thumbnails_maps", "008_keys_audit"} <= {name for _, name in since} and not set(since) & set(before["migrations"])
    assert {r[1] for r in before["tables"]} <= {r[1] for r in after["tables"]}
    with sqlite3.connect(old_home / "clip-gaze.db") as conn:  # the picture embeddings were read, not made again
        assert conn.execute("SELECT count(*) FROM image_embeddings").fetchone()[0] == 2
