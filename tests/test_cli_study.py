"""The study commands from the command line, and their one-line answers to bad input."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import run_tuner
from tests.pg import free_port
from tuner.features import FeatureStore

QUICK = Path(__file__).resolve().parents[1] / "search_spaces" / "quick.yaml"


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    monkeypatch.setenv("TUNER_STORAGE", url)
    return url


def test_list_and_delete_studies_as_functions(db: str, store: FeatureStore) -> None:
    from tuner.errors import StudyError
    from tuner.storage import open_storage
    from tuner.study import create_study, delete_study, list_studies

    storage = open_storage(db)
    create_study(storage, "mil", store.path, space=QUICK, trials=4)
    assert [(s.name, s.trials, s.best_value) for s in list_studies(storage)] == [("mil", 0, None)]
    assert list_studies(storage)[0].describe() == "mil: 0 trials"

    def refuse() -> None:
        raise RuntimeError("kept")

    with pytest.raises(RuntimeError, match="kept"):
        delete_study(storage, "mil", confirm=refuse)
    assert [s.name for s in list_studies(storage)] == ["mil"]
    with pytest.raises(StudyError, match="does not exist"):
        delete_study(storage, "nope", confirm=refuse)
    delete_study(storage, "mil")
    assert list_studies(storage) == []


def test_create_list_status_delete(run_cli, db: str, store: FeatureStore) -> None:
    result = run_cli("study", "create", "mil", "--features", store.path, "--space", QUICK)
    assert result.code == 0, result.err
    assert f"study mil created: 50 trials, tpe sampler, median pruner, storage {db}" in result.out
    # the result is said once, on stdout; the tiny store's splits get the few-cases warning
    assert [line.split(":")[1].strip() for line in result.err.splitlines()] == ["few cases"]
    again = run_cli("study", "create", "mil", "--features", store.path, "--space", QUICK)
    assert "already exists (same settings): 50 trials" in again.out
    assert again.err == ""
    raised = run_cli("study", "create", "mil", "--features", store.path, "--trials", 80)
    assert raised.code == 0, raised.err
    assert "study mil budget raised from 50 to 80 trials; tpe sampler" in raised.out
    listed = run_cli("study", "list")
    assert "mil: 0 trials" in listed.out
    status = run_cli("status", "mil")
    assert "study mil: 0 of 80 trials finished" in status.out
    assert "best: no complete trial yet" in status.out
    deleted = run_cli("study", "delete", "mil", "--yes")
    assert deleted.code == 0
    assert "no studies" in run_cli("study", "list").out


def test_create_prints_a_worker_command_that_runs_as_printed(
    run_cli, db: str, store: FeatureStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def hint(result) -> list[str]:  # type: ignore[no-untyped-def]
        assert result.code == 0, result.err
        line = result.out.strip().splitlines()[-1]
        return shlex.split(line.removeprefix("start workers with: "))

    created = run_cli("study", "create", "my study", "--features", store.path, "--space", QUICK)
    # in this process tuner is not the `tuner` on PATH: the hint runs this interpreter's tuner
    assert hint(created) == [sys.executable, "-m", "tuner", "worker", "my study", "--storage", db]
    monkeypatch.delenv("TUNER_STORAGE")
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    default = run_cli("study", "create", "mil", "--features", store.path, "--space", QUICK)
    # the embedded default needs no --storage
    assert hint(default) == [sys.executable, "-m", "tuner", "worker", "mil"]


CREATE = ["study", "create"]
BAD = [
    ("missing study", ["status", "nope"], "study 'nope' does not exist in this storage"),
    ("worker of missing study", ["worker", "nope", "--device", "cpu"],
     "study 'nope' does not exist"),
    ("export without target", ["export", "mil"], "say what to export"),
    ("unknown scheme", ["status", "mil", "--storage", "mysql://u@h/db"],
     "unknown storage URL scheme 'mysql'"),
    ("missing space", [*CREATE, "x", "--features", "{store}", "--space", "/none.yaml"],
     "search space '/none.yaml' not found"),
    ("missing store", [*CREATE, "x", "--features", "/none"],
     "feature store '/none' does not exist"),
    ("different space", [*CREATE, "mil", "--features", "{store}", "--space", "{default}"],
     "already exists with a different space"),
    ("smaller budget", [*CREATE, "mil", "--features", "{store}", "--trials", "10"],
     "has a budget of 50 trials; a budget can be raised but not lowered"),
    ("export without trials", ["export", "mil", "--out", "{tmp}/best.yaml"],
     "has no complete trial yet"),
    ("bad gpu list", ["launch", "mil", "--gpus", "a,b"], "--gpus must list GPU numbers"),
    ("gpus and workers", ["launch", "mil", "--gpus", "0", "--workers", "2"],
     "give either --gpus or --workers, not both"),
    ("bad slurm time", ["slurm", "mil", "--workers", "2", "--time", "4h", "--storage",
                        "postgresql://u@db/t"], "--time must look like HH:MM:SS"),
    ("slurm on embedded", ["slurm", "mil", "--workers", "2"], "needs a shared PostgreSQL"),
    ("gpu that does not exist", ["worker", "mil", "--device", "cuda:9"],
     "--device 'cuda:9' does not exist"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "args", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_one_line(
    name: str, args: list[str], message: str, run_cli, db: str, store: FeatureStore, tmp_path: Path
) -> None:
    assert run_cli("study", "create", "mil", "--features", store.path, "--space", QUICK).code == 0
    argv = [a.format(store=store.path, tmp=tmp_path, default=QUICK.with_name("default.yaml"))
            for a in args]  # fmt: skip
    result = run_cli(*argv)
    assert result.code != 0
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert message in lines[0]
    assert not (tmp_path / "best.yaml").exists()
    assert "study mil: 0 of 50 trials finished" in run_cli("status", "mil").out  # unchanged


def test_unreachable_database_is_one_line_in_a_real_process(tmp_path: Path) -> None:
    result = run_tuner(
        "status", "mil", "--storage", "postgresql://tuner@127.0.0.1:1/tuner",
        env={"TUNER_DB_RETRY_SECONDS": "1"},
    )  # fmt: skip
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("tuner: error: the study database at ")
    assert "unreachable for 1 s" in lines[-1]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("flags", [[], ["--read-only", "--allow-writes"]], ids=["writes", "both"])
def test_dashboard_beyond_loopback_needs_read_only_or_allow_writes(
    flags: list[str], tmp_path: Path
) -> None:
    """Refused before anything starts: no server (the old code served, and never returned),
    no storage opened."""
    result = run_tuner(
        "dashboard", "--host", "0.0.0.0", "--port", free_port(), *flags, cwd=tmp_path, timeout=60
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    message = "would let anyone who reaches it delete" if not flags else "contradict each other"
    assert lines[0].startswith("tuner: error: ")
    assert message in lines[0]
    assert list(tmp_path.iterdir()) == []  # not even the embedded store's folder


@pytest.mark.slow
def test_quickstart_runs_the_whole_flow_and_its_next_steps_run_as_printed(tmp_path: Path) -> None:
    """As a new user runs it: the console script of a virtual environment that is not on PATH,
    in a folder of their own; every command it prints then runs as printed, there."""
    venv_bin = Path(sys.executable).parent
    path = os.pathsep.join(
        p for p in os.environ.get("PATH", "").split(os.pathsep) if Path(p) != venv_bin
    )
    env = {**os.environ, "PATH": path}
    env.pop("TUNER_STORAGE", None)
    quickstart = [str(venv_bin / "tuner"), "quickstart", "qs", "--cases", "12", "--trials", "4",
                  "--epochs", "3"]  # fmt: skip
    result = subprocess.run(
        quickstart, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    for step in range(1, 7):
        assert f"[{step}/6]" in out
    assert "test metrics of the final model:" in out
    table = out.split("balanced accuracy", 1)[0].splitlines()[-3:]
    assert table[0].split() == ["base", "config", "best", "config"], out
    assert table[1].startswith("test AUC")
    assert table[2].startswith("test loss")
    assert len(list((tmp_path / "qs" / "untuned").iterdir())) == 1
    folder = tmp_path / "qs"
    assert (folder / "best.yaml").is_file()
    runs = list((folder / "runs").iterdir())
    assert len(runs) == 1
    assert (runs[0] / "metrics.json").is_file()

    printed = out.split("next steps:\n", 1)[1].splitlines()
    commands = [shlex.split(line) for line in printed if not line.strip().startswith("#")]
    by_name = {c[1]: c for c in commands if c[1] != "explain"}
    explains = [c for c in commands if c[1] == "explain"]
    assert [c[0] for c in commands] == [str(venv_bin / "tuner")] * 4
    assert by_name["dashboard"][2:] == ["--storage", "sqlite:///qs/storage/tuner.db"]
    assert by_name["report"][2:] == ["quickstart", "--storage", "sqlite:///qs/storage/tuner.db",
                                     "--out", "qs/report.html"]  # fmt: skip
    run = f"qs/runs/{runs[0].name}"
    assert explains[0][2:] == [run]
    assert explains[1][2:4] == [run, "--case"]

    def run_as_printed(command: list[str]) -> subprocess.CompletedProcess[str]:
        ran = subprocess.run(
            command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert ran.returncode == 0, (command, ran.stderr[-2000:])
        return ran

    assert "wrote qs/report.html" in run_as_printed(by_name["report"]).stdout
    assert (folder / "report.html").stat().st_size > 100_000
    assert "test cases misclassified" in run_as_printed(explains[0]).stdout
    assert f"case {explains[1][4]}: label" in run_as_printed(explains[1]).stdout
    port = free_port()
    dashboard = subprocess.Popen(
        [*by_name["dashboard"], "--port", str(port)], cwd=tmp_path, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            assert dashboard.poll() is None, dashboard.communicate()[1]
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/api/studies", timeout=2
                ) as answer:
                    studies = json.loads(answer.read())["study_summaries"]
                break
            except OSError:
                assert time.monotonic() < deadline, "the dashboard did not answer within 60 s"
                time.sleep(0.3)
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=30)
    assert [s["study_name"] for s in studies] == ["quickstart"]

    again = subprocess.run(
        quickstart, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(list((folder / "runs").iterdir())) == 2


def test_pruner_and_sampler_names_have_one_home() -> None:
    from tuner.cli._study import PRUNER, SAMPLER
    from tuner.study._choices import PRUNERS, SAMPLERS

    assert tuple(PRUNER.choices) == PRUNERS == ("median", "asha", "hyperband", "chance", "none")
    assert tuple(SAMPLER.choices) == SAMPLERS == ("tpe", "random", "cmaes")


def test_quiet_works_before_and_after_the_subcommand(
    run_cli, db: str, store: FeatureStore, tmp_path: Path
) -> None:
    assert run_cli("study", "create", "mil", "--features", store.path, "--space", QUICK).code == 0
    report = ["report", "mil", "--out", tmp_path / "r.html"]
    loud = run_cli(*report)
    assert loud.code == 0, loud.err
    assert "tuner: left out Optimisation history: no complete trial yet" in loud.err
    for argv in (["-q", *report], [*report, "-q"], ["report", "--quiet", *report[1:]]):
        quiet = run_cli(*argv)
        assert (quiet.code, quiet.err) == (0, ""), argv
        assert "wrote" in quiet.out
    assert "left out" in run_cli(*report).err, "the next command is loud again"


def test_every_command_takes_quiet_and_verbose() -> None:
    import click

    from tuner.cli import cli

    def commands(group: click.Group, path: str) -> list[tuple[str, click.Command]]:
        found = []
        for name, command in group.commands.items():
            found.append((f"{path} {name}", command))
            if isinstance(command, click.Group):
                found += commands(command, f"{path} {name}")
        return found

    every = commands(cli, "tuner")
    assert len(every) > 20
    for path, command in every:
        flags = {opt for param in command.params for opt in param.opts}
        assert {"-q", "--quiet", "-v", "--verbose"} <= flags, path


def test_create_help_shows_the_library_defaults() -> None:
    """The CLI passes an option left out as None (so a re-open keeps the study's); the defaults
    its --help shows are the ones a new study gets."""
    from tuner.cli import cli
    from tuner.study import _settings

    create = cli.commands["study"].commands["create"]  # type: ignore[attr-defined]
    defaults = {p.name: p.default for p in create.params}
    assert defaults["trials"] == _settings.DEFAULT_TRIALS
    assert defaults["pruner"] == _settings.DEFAULT_PRUNER
    assert defaults["sampler"] == _settings.DEFAULT_SAMPLER
    assert defaults["seed"] == _settings.DEFAULT_SEED
    assert defaults["max_retries"] == _settings.DEFAULT_MAX_RETRIES


def test_printed_commands_name_the_tuner_that_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tuner.cli._options import tuner_command

    script = tmp_path / "project" / ".venv" / "bin" / "tuner"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.chdir(tmp_path / "project")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setattr(sys, "argv", [".venv/bin/tuner", "quickstart"])
    assert tuner_command() == [".venv/bin/tuner"]  # as typed in the project, not on PATH
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(script), "quickstart"])
    assert tuner_command() == ["project/.venv/bin/tuner"]
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert tuner_command() == [str(script)]
    monkeypatch.setenv("PATH", f"{script.parent}:/usr/bin")
    assert tuner_command() == ["tuner"]  # the tuner on PATH is this one
    monkeypatch.setattr(sys, "argv", ["/somewhere/tuner/__main__.py"])
    assert tuner_command() == [sys.executable, "-m", "tuner"]
