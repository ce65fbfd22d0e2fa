"""``tuner launch`` with real worker processes: what it checks before starting any, workers that
cannot start, the folder it may be started from, and the line it ends with."""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from tests.test_workers import SPACE, create
from tuner.errors import PERMANENT_EXIT_CODE
from tuner.features import FeatureStore
from tuner.storage import open_storage
from tuner.study import create_study, launch_workers, plan_workers

QUICK = Path(__file__).resolve().parents[1] / "search_spaces" / "quick.yaml"
TUNER = Path(sys.executable).with_name("tuner")
"""The console script, as users start tuner."""


def launch(*args: object, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TUNER, "launch", *map(str, args)], cwd=cwd, env={**os.environ, **env},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip


@pytest.mark.slow
def test_launch_runs_from_a_folder_holding_a_clone_named_tuner(
    store: FeatureStore, tmp_path: Path
) -> None:
    """``python -m tuner`` would import ./tuner (a clone of the project, here a fake one with an
    empty ``tuner.storage``) instead of the installed package: the workers must not."""
    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    create(store, tmp_path, url, space=SPACE, trials=2)
    folder = tmp_path / "projects"
    (folder / "tuner" / "storage").mkdir(parents=True)
    (folder / "tuner" / "__init__.py").write_text("")
    (folder / "tuner" / "storage" / "__init__.py").write_text("")

    result = launch("s", "--workers", 2, cwd=folder, env={"TUNER_STORAGE": url})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[w0] worker done" in result.stdout
    assert "[w1] worker done" in result.stdout
    best = optuna.load_study(study_name="s", storage=open_storage(url)).best_trial
    assert result.stdout.strip().splitlines()[-1] == (
        "launch done: study s: 2 of 2 trials finished; trials by state: complete 2; "
        f"best val loss {best.value:.4f} (trial {best.number})"
    )
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) == [
        "tuner",
        "tuner/__init__.py",
        "tuner/storage",
        "tuner/storage/__init__.py",
    ], "the launcher and its workers wrote nothing into the working folder"


@pytest.fixture(scope="module")
def study_url(store: FeatureStore, tmp_path_factory: pytest.TempPathFactory) -> str:
    """An embedded store holding study ``s`` (do not run it)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('launch') / 'tuner.db'}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    create_study(open_storage(url), "s", store.path, space=QUICK, trials=2)
    return url


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (("ghost", "--workers", 2), {}, "study 'ghost' does not exist in this storage"),
        (
            ("s", "--gpus", 0),
            {"CUDA_VISIBLE_DEVICES": ""},
            "GPU 0 does not exist (this machine has no GPU that CUDA can use)",
        ),
        (("s", "--workers", 2, "--features", "{tmp}/moved"), {}, "moved' does not exist"),
    ],
    ids=["no such study", "GPU without CUDA", "store not there"],
)
def test_launch_checks_before_starting_any_worker(
    args: tuple[object, ...], env: dict[str, str], message: str, study_url: str, tmp_path: Path
) -> None:
    filled = [str(a).format(tmp=tmp_path) for a in args]
    result = launch(*filled, cwd=tmp_path, env={"TUNER_STORAGE": study_url, **env})
    assert result.returncode == PERMANENT_EXIT_CODE, result.stdout + result.stderr
    assert result.stdout == "", "no worker started"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("tuner: error: ")
    assert message in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_a_worker_that_cannot_start_is_not_restarted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Without the launcher's checks, workers of a missing study each fail once and stay down."""
    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    open_storage(url).engine.dispose()
    out = io.StringIO()
    with caplog.at_level(logging.INFO, logger="tuner"):
        status = launch_workers("ghost", plan_workers(workers=2), storage_url=url, out=out)
    assert status == PERMANENT_EXIT_CODE
    errors = [line for line in out.getvalue().splitlines() if "tuner: error: " in line]
    assert sorted(line.split()[0] for line in errors) == ["[w0]", "[w1]"]
    assert all("study 'ghost' does not exist" in line for line in errors)
    assert "restarting it (" not in caplog.text
    assert caplog.text.count("could not start") == 2


def test_gpu_workers_are_pinned_to_the_gpus_this_process_sees(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Inside a job given GPUs 5 and 7, GPU 0 and 1 of ``--gpus 0,1`` are the machine's 5 and 7."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    plans = plan_workers(gpus="0,1")
    assert [(p.label, p.gpu, p.env["CUDA_VISIBLE_DEVICES"]) for p in plans] == [
        ("gpu0", 0, "5"),
        ("gpu1", 1, "7"),
    ]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert [p.env["CUDA_VISIBLE_DEVICES"] for p in plan_workers(gpus="0,2")] == ["0", "2"]
    assert re.fullmatch(r"gpu\d", plan_workers(gpus="3")[0].label)
