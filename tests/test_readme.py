"""The README's promises: its test command is what CI runs, and its commands exist."""

from __future__ import annotations

import re
from pathlib import Path

from tuner.cli import cli

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    quick_start = readme.split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [line for line in quick_start.splitlines() if not line.startswith("#")]
    assert len(commands) == 2, "the README has exactly two set-up commands"
    quickstart, tests = commands
    assert quickstart.endswith("tuner quickstart")
    assert tests in ci.splitlines()


def test_readme_commands_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    used = set(re.findall(r"^tuner ([a-z][a-z0-9-]*)", readme, flags=re.M))
    used |= set(re.findall(r"`tuner ([a-z][a-z0-9-]*)", readme))
    assert used
    assert used <= set(cli.commands), used - set(cli.commands)
