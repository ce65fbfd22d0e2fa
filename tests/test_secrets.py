"""Database passwords never show: not in logs, errors, exported files, trial attributes, status
output, or the argument lists of worker processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import yaml

from tests.pg import Cluster, throwaway_cluster
from tuner.features import FeatureStore
from tuner.storage import open_storage

SECRET = f"Pw-{uuid.uuid4().hex}"
AT_SECRET = f"Pw{uuid.uuid4().hex[:10]}@{uuid.uuid4().hex[:12]}@{uuid.uuid4().hex[:12]}"
"""A password with unencoded ``@``: each piece between them must stay hidden too."""


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with throwaway_cluster() as running:
        running.sql(f"CREATE ROLE tuner_secret LOGIN PASSWORD '{SECRET}'")
        running.sql("CREATE DATABASE tuner OWNER tuner_secret")
        running.sql(f"CREATE ROLE tuner_at LOGIN PASSWORD '{AT_SECRET}'")
        running.sql("CREATE DATABASE tuner_at OWNER tuner_at")
        yield running


def worker_command_lines() -> list[str]:
    lines = []
    for proc in Path("/proc").iterdir():
        try:
            parts = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        text = " ".join(p.decode(errors="replace") for p in parts)
        if " worker " in f" {text} " and "tuner" in text:
            lines.append(text)
    return lines


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["url", "PGPASSWORD", "password file"])
def test_password_never_shows(
    mode: str, cluster: Cluster, store: FeatureStore, tmp_path: Path
) -> None:
    plain = f"postgresql://tuner_secret@127.0.0.1:{cluster.port}/tuner"
    env = {
        k: v for k, v in os.environ.items() if k not in ("PGPASSWORD", "TUNER_DB_PASSWORD_FILE")
    }
    if mode == "url":
        storage = plain.replace("tuner_secret@", f"tuner_secret:{SECRET}@")
    elif mode == "PGPASSWORD":
        storage, env["PGPASSWORD"] = plain, SECRET
    else:
        (tmp_path / "pw").write_text(SECRET + "\n")
        storage, env["TUNER_DB_PASSWORD_FILE"] = plain, str(tmp_path / "pw")
    study = f"secret-{mode.replace(' ', '-')}"
    config = tmp_path / "base.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"features": str(store.path)}, "model": {"embed_dim": 16, "attn_dim": 8},
        "train": {"epochs": 10, "batch_cases": 3, "device": "cpu"},
    }))  # fmt: skip
    transcript: list[str] = []

    def tuner(*args: object, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "tuner", *map(str, args), "--storage", storage],
            env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        transcript.extend([result.stdout, result.stderr])
        assert (result.returncode == 0) == check, result.stderr
        return result

    tuner(
        "study", "create", study, "--features", store.path, "--config", config, "--trials", 2,
        "--pruner", "none",  # the tiny store beats no chance: complete trials, to export one
    )  # fmt: skip
    launch = ["launch", study, "--workers", "2", "--storage", storage]
    launcher = subprocess.Popen(
        [sys.executable, "-m", "tuner", "-v", *launch],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    seen_workers: list[str] = []
    while launcher.poll() is None:
        seen_workers += [line for line in worker_command_lines() if study in line]
        time.sleep(0.1)
    transcript.append(launcher.stdout.read() if launcher.stdout else "")
    assert launcher.returncode == 0, transcript[-1][-3000:]
    assert seen_workers, "saw the worker processes"
    assert all(SECRET not in line for line in seen_workers)
    assert all("--storage" not in line.split(" worker ", 1)[1] for line in seen_workers)

    tuner("status", study)
    tuner("export", study, "--out", tmp_path / "best.yaml", "--trials", tmp_path / "trials.csv")
    tuner("k8s", study, "--workers", 2, "--out", tmp_path / "k8s.yaml")
    tuner("status", "no-such-study", check=False)
    # refused (a budget is never lowered): the error names the study, not the password
    tuner("study", "create", study, "--features", store.path, "--trials", 1, check=False)
    unreachable = storage.replace(f":{cluster.port}/", ":1/")
    transcript.append(
        subprocess.run(
            [sys.executable, "-m", "tuner", "status", study, "--storage", unreachable],
            env={**env, "TUNER_DB_RETRY_SECONDS": "1"}, capture_output=True, text=True,
        ).stderr
    )  # fmt: skip

    assert all(SECRET not in text for text in transcript)
    for path in (tmp_path / "best.yaml", tmp_path / "trials.csv", tmp_path / "k8s.yaml"):
        assert SECRET not in path.read_text()
    assert "tuner_secret@127.0.0.1" in (tmp_path / "best.yaml").read_text()
    storage_object = open_storage(plain.replace("tuner_secret@", f"tuner_secret:{SECRET}@"))
    loaded = optuna.load_study(study_name=study, storage=storage_object)
    study_id = storage_object.get_study_id_from_name(study)
    attributes = repr(loaded.user_attrs) + repr(storage_object.get_study_system_attrs(study_id))
    for trial in loaded.get_trials():
        attributes += repr(trial.user_attrs) + repr(trial.system_attrs)
    assert SECRET not in attributes
    assert len(loaded.get_trials()) == 2


def test_a_password_with_an_unencoded_at_connects_and_never_shows(
    cluster: Cluster, store: FeatureStore, tmp_path: Path
) -> None:
    url = f"postgresql://tuner_at:{AT_SECRET}@127.0.0.1:{cluster.port}/tuner_at"
    env = {
        k: v for k, v in os.environ.items() if k not in ("PGPASSWORD", "TUNER_DB_PASSWORD_FILE")
    }

    def tuner(*args: object, storage: str = url, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tuner", *map(str, args), "--storage", storage],
            env={**env, **extra}, capture_output=True, text=True, timeout=600,
        )  # fmt: skip

    create = tuner("study", "create", "at", "--features", store.path, "--trials", 2)
    assert create.returncode == 0, create.stderr
    assert "tuner_at@127.0.0.1" in create.stdout
    status = tuner("status", "at")
    assert status.returncode == 0, status.stderr
    export = tuner("export", "at", "--trials", tmp_path / "trials.csv")
    assert export.returncode == 0, export.stderr
    wrong = tuner("status", "at", storage=url.replace(AT_SECRET, AT_SECRET[:-1]))
    assert "password authentication failed" in wrong.stderr
    unreachable = tuner(
        "status", "at", storage=url.replace(f":{cluster.port}/", ":1/"),
        TUNER_DB_RETRY_SECONDS="1",
    )  # fmt: skip
    assert "unreachable" in unreachable.stderr
    shown = [r.stdout + r.stderr for r in (create, status, export, wrong, unreachable)]
    shown.append((tmp_path / "trials.csv").read_text())
    for piece in AT_SECRET[:-1].split("@"):
        assert all(piece not in text for text in shown), piece
