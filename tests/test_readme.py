"""The README's promises: its test command is what CI runs, its commands exist, its Python runs."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from tests.pg import fresh_database
from tuner.cli import cli
from tuner.features import FeatureStore
from tuner.storage import open_storage
from tuner.study import create_study

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "search_spaces" / "quick.yaml"


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


def readme_python() -> str:
    """The README's Python snippet, exactly as a reader copies it."""
    blocks = re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(), re.M | re.S)
    assert len(blocks) == 1, "the README has one Python snippet"
    snippet: str = blocks[0]
    return snippet


@pytest.mark.parametrize("where", ["embedded default", "TUNER_STORAGE"])
def test_readme_python_snippet_runs_on_a_real_study(
    where: str, store: FeatureStore, tmp_path: Path
) -> None:
    snippet = readme_python()
    assert "tuner.open_storage(" in snippet
    assert "optuna.load_study(" in snippet
    env = {k: v for k, v in os.environ.items() if k != "TUNER_STORAGE"}
    with contextlib.ExitStack() as stack:
        if where == "TUNER_STORAGE":
            url = env["TUNER_STORAGE"] = stack.enter_context(fresh_database())
        else:  # what `tuner study create mil` in this folder writes to
            (tmp_path / "storage").mkdir()
            url = f"sqlite:///{tmp_path / 'storage' / 'tuner.db'}"
        storage = open_storage(url)
        create_study(storage, "mil", store.path, space=QUICK, trials=4)
        study = optuna.load_study(study_name="mil", storage=storage)
        lr = optuna.distributions.FloatDistribution(1e-5, 1e-2, log=True)
        for value, loss in ((1e-3, 0.61), (3e-4, 0.52)):
            study.add_trial(
                optuna.trial.create_trial(
                    params={"train.lr": value}, distributions={"train.lr": lr}, value=loss
                )
            )
        storage.engine.dispose()
        ran = subprocess.run(
            [sys.executable, "-c", snippet], cwd=tmp_path, env=env, capture_output=True, text=True
        )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "2 trials, best 0.5200: {'train.lr': 0.0003}"
