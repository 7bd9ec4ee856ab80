"""The README stays true: its test command is what CI runs, and it documents every setting, endpoint
and command the code has."""

from __future__ import annotations

import re
from pathlib import Path

from clip_gaze.cli import cli
from indexer.settings import SETTINGS
from service import create_app

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _code_blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", README, flags=re.S)


def test_ci_runs_exactly_the_readme_test_command():
    test_commands = [line for block in _code_blocks() for line in block.splitlines() if "pytest" in line]
    assert len(test_commands) == 1, test_commands
    assert test_commands[0].strip() in (ROOT / ".ci" / "run").read_text().splitlines()


def test_readme_first_commands_set_up_and_run_the_service_then_the_tests():
    first, second = _code_blocks()[:2]
    assert "pip install" in first and "clip-gaze serve" in first
    assert "pip install" in second and "pytest" in second


def test_every_setting_is_in_the_readme_table_with_its_help():
    for s in SETTINGS:
        row = next((line for line in README.splitlines() if line.startswith(f"| `{s.env}`")), None)
        assert row is not None, s.env
        assert s.help in row, s.env


def test_every_endpoint_is_in_the_readme(engine):
    app = create_app(engine=engine)
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith(("page.", "static")):
            path = rule.rule.split("<")[0].rstrip("/")
            assert path in README, rule.rule


def test_every_command_is_in_the_readme():
    for name in cli.commands:
        assert f"clip-gaze {name}" in README, name
