"""No CSV clip-gaze writes holds a cell a spreadsheet would run (issue #27, finding 3); the page's
export is checked in tests/test_page.py."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from conftest import create, draw_shape
from indexer.collections.local import Collections
from indexer.collections.tables import write_blocks
from indexer.engine import Engine
from indexer.evaluate.report import _csv
from indexer.schema import parse
from indexer.schema.collections import AddSources, AnalysisRow, CreateCollection
from indexer.spreadsheet import safe_cell

FORMULAS = ['=HYPERLINK("http://evil.example/","click")', "+1+1", "-2+3", "@SUM(A1:A9)", "\t=1", "\r=1"]


@pytest.mark.parametrize("text", FORMULAS)
def test_text_a_spreadsheet_would_run_gets_a_quote_and_nothing_else_changes(text: str):
    assert safe_cell(text) == "'" + text
    for kept in ("a red circle", "", "1=1", " =1", -0.25, 3, None):
        assert safe_cell(kept) == kept


def test_collection_analyze_csv_neutralises_every_text_column(engine: Engine, tmp_path: Path):
    scans = tmp_path / "scans"
    scans.mkdir()
    draw_shape("red", "circle").save(scans / "=cmd.png")  # a source (file name) that reads as a formula too
    table = tmp_path / "objects.csv"
    table.write_text('image,external_id\nscans/=cmd.png,"=HYPERLINK(""http://evil.example/"",""click"")"\n')
    Collections(engine).create(parse(CreateCollection, {"name": "museum"}))
    Collections(engine).add("museum", parse(AddSources, {"sources": [str(table)]}))
    create(engine, "tricky", ["@SUM(A1)", "+a red circle", "-a blue square"], templates=["{}"])
    out = tmp_path / "scores.csv"
    assert write_blocks(Collections(engine).analyze_blocks("museum", ["tricky"], top_k=3), out, AnalysisRow) == 3
    with out.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    text_columns = [name for name, field in AnalysisRow.model_fields.items()
                    if field.annotation in (str, str | None) and name != "source"]
    assert {"external_id", "phrase", "term", "vocabulary"} <= set(text_columns)
    for row in rows:
        assert row["external_id"] == "'" + '=HYPERLINK("http://evil.example/","click")'
        assert row["phrase"][0] == "'" and row["phrase"][1:] in ("@SUM(A1)", "+a red circle", "-a blue square")
        for name in text_columns:
            assert not row[name] or row[name][0] not in "=+-@\t\r", (name, row[name])
        assert float(row["probability"]) > 0 and float(row["cosine"]) == pytest.approx(float(row["cosine"]))
    assert sum(float(r["probability"]) for r in rows) == pytest.approx(1.0, abs=1e-6)  # numbers stay numbers


def test_the_evaluation_reports_csv_files_neutralise_text_cells(tmp_path: Path):
    out = tmp_path / "predictions.csv"
    _csv(out, ["source", "external_id", "term", "probability", "correct"],
         [["=1+1.png", "@OBJ", "-portrait", 0.5, True], ["ok.png", "", "+x", -0.25, False]])
    with out.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[1] == ["'=1+1.png", "'@OBJ", "'-portrait", "0.5", "True"]
    assert rows[2] == ["ok.png", "", "'+x", "-0.25", "False"]
