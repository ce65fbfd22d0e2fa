"""Fault injection on real processes and a real PostgreSQL server: killed workers, database
restarts, signals. The study always finishes exactly its budget and nothing stays running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import FrozenTrial, TrialState

from tests.pg import Cluster, fresh_database, throwaway_cluster, wait_until
from tuner.features import FeatureStore
from tuner.storage import open_storage
from tuner.study import Budget

SPACE = {
    "train.lr": {"type": "float", "low": 1.0e-4, "high": 1.0e-2, "log": True},
    "model.dropout": {"type": "float", "low": 0.0, "high": 0.5},
}
FAST_HEARTBEAT = {"TUNER_HEARTBEAT_INTERVAL": "1", "TUNER_HEARTBEAT_GRACE": "3"}


def tuner_process(*args: object, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tuner", *map(str, args)],
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def create_study(
    store: FeatureStore,
    folder: Path,
    env: dict[str, str],
    *,
    trials: int,
    epochs: int,
    name: str = "s",
    checkpoints: Path | None = None,
) -> None:
    config = folder / "base.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": {"features": str(store.path)},
                "model": {"embed_dim": 16, "attn_dim": 8},
                "train": {
                    "epochs": epochs,
                    "batch_cases": 3,
                    "early_stopping": None,
                    "device": "cpu",
                },
            }
        )
    )
    (folder / "space.yaml").write_text(yaml.safe_dump(SPACE, sort_keys=False))
    process = tuner_process(
        "study", "create", name, "--features", store.path, "--space", folder / "space.yaml",
        "--config", config, "--trials", trials, "--pruner", "none",
        *(["--checkpoints", checkpoints] if checkpoints else []), env=env,
    )  # fmt: skip
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err


def trials_of(url: str, name: str = "s") -> list[FrozenTrial]:
    storage = open_storage(url, retry_seconds=60)
    return optuna.load_study(study_name=name, storage=storage).get_trials()


def assert_budget_met_exactly(trials: list[FrozenTrial], budget: int) -> None:
    counted = Budget.count(trials, budget)
    assert counted.done == budget
    assert counted.active == 0
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert sorted(t.number for t in trials) == list(range(len(trials)))


@pytest.fixture
def pg_env() -> Iterator[dict[str, str]]:
    """A fresh Postgres database of the test's own, with fast heartbeats."""
    with fresh_database() as url:
        yield {"TUNER_STORAGE": url, **FAST_HEARTBEAT}


@pytest.mark.slow
def test_killed_workers_trial_is_retried_and_the_budget_met(
    pg_env: dict[str, str], store: FeatureStore, tmp_path: Path
) -> None:
    url = pg_env["TUNER_STORAGE"]
    checkpoints = tmp_path / "checkpoints"
    create_study(store, tmp_path, pg_env, trials=6, epochs=40, checkpoints=checkpoints)
    victim = tuner_process("worker", "s", "--device", "cpu", "--poll", "0.5", env=pg_env)

    def victim_mid_trial() -> FrozenTrial | None:
        for t in trials_of(url):
            mine = t.user_attrs.get("worker", "").endswith(f":{victim.pid}")
            if mine and t.state == TrialState.RUNNING and len(t.intermediate_values) >= 3:
                return t
        return None

    assert wait_until(lambda: victim_mid_trial() is not None, timeout=300)
    killed = victim_mid_trial()
    assert killed is not None
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=30)

    survivor = tuner_process("worker", "s", "--device", "cpu", "--poll", "0.5", env=pg_env)
    idle = None

    # a third worker that joins when every trial is handed out, and is killed between trials
    def handed_out() -> bool:
        counted = Budget.count(trials_of(url), 6)
        return counted.done < 6 and counted.done + counted.active == 6

    assert wait_until(handed_out, timeout=300, interval=0.1)
    idle = tuner_process("worker", "s", "--device", "cpu", "--poll", "0.5", env=pg_env)
    time.sleep(8)
    idle.send_signal(signal.SIGKILL)
    idle.communicate(timeout=30)
    assert not [t for t in trials_of(url) if str(idle.pid) in t.user_attrs.get("worker", "")]
    _, err = survivor.communicate(timeout=600)
    assert survivor.returncode == 0, err

    trials = trials_of(url)
    assert_budget_met_exactly(trials, 6)
    first = trials[killed.number]
    assert first.state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retries) == 1
    retry = retries[0]
    assert retry.params == killed.params
    assert retry.state == TrialState.COMPLETE
    assert Counter(t.state for t in trials)[TrialState.FAIL] == 1
    # resumed from its last checkpoint, with its intermediate values carried over
    resumed_from = retry.user_attrs["resumed_from_epoch"]
    assert len(killed.intermediate_values) - 1 <= resumed_from <= 40
    assert sorted(retry.intermediate_values) == list(range(1, 41))
    assert retry.user_attrs["epochs_run"] == 40
    # checkpoints of finished trials are gone, but the best trial's
    best = optuna.load_study(study_name="s", storage=open_storage(url)).best_trial
    best_slot = best.system_attrs.get("failed_trial", best.number)
    assert [p.name for p in (checkpoints / "s").iterdir()] == [f"slot-{best_slot}.pt"]


@pytest.mark.slow
def test_killed_study_creation_is_finished_by_the_next_create(
    pg_env: dict[str, str], store: FeatureStore, tmp_path: Path
) -> None:
    url = pg_env["TUNER_STORAGE"]
    args = ("study", "create", "made", "--features", store.path, "--trials", 3)
    for delay in (0.5, 1.5, 2.5, 3.5):
        process = tuner_process(*args, env=pg_env)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
    again = tuner_process(*args, env=pg_env)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    summaries = optuna.get_all_study_summaries(open_storage(url))
    assert [s.study_name for s in summaries] == ["made"]
    assert "made" in out


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with throwaway_cluster() as running:
        running.sql("CREATE DATABASE tuner")
        yield running


@pytest.mark.slow
def test_workers_survive_database_restarts(
    cluster: Cluster, store: FeatureStore, tmp_path: Path
) -> None:
    url = cluster.url(database="tuner")
    env = {
        "TUNER_STORAGE": url, "PGPASSWORD": cluster.password, "TUNER_HEARTBEAT_INTERVAL": "1",
        "TUNER_HEARTBEAT_GRACE": "30", "TUNER_DB_RETRY_SECONDS": "120",
    }  # fmt: skip
    create_study(store, tmp_path, env, trials=10, epochs=30)
    workers = [tuner_process("worker", "s", "--device", "cpu", "--poll", "0.5", env=env)
               for _ in range(2)]  # fmt: skip
    admin = cluster.admin_url("tuner")
    for done in (2, 5):
        assert wait_until(lambda d=done: Budget.count(trials_of(admin), 10).done >= d, 300)
        cluster.stop("fast")
        time.sleep(4)
        cluster.start()
    results = [w.communicate(timeout=600) for w in workers]
    for worker, (_, err) in zip(workers, results, strict=True):
        assert worker.returncode == 0, err[-3000:]
        assert "Traceback" not in err
    assert any("study database unreachable" in err for _, err in results)
    trials = trials_of(admin)
    assert_budget_met_exactly(trials, 10)
    assert len(trials) == 10, "no trial lost or duplicated"
    assert Counter(t.state for t in trials) == {TrialState.COMPLETE: 10}


@pytest.mark.slow
def test_every_call_of_a_loaded_study_waits_out_an_outage(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loaded studies go through Optuna's trial cache, which calls private storage methods:
    those wait for the database too, not only the public ones."""
    monkeypatch.setenv("PGPASSWORD", cluster.password)
    storage = open_storage(cluster.url(database="tuner"))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="s", storage=storage)
    study.tell(study.ask(), 1.0)
    study = optuna.load_study(study_name="s", storage=storage)

    def during_outage(call):  # type: ignore[no-untyped-def]
        cluster.stop("fast")
        restart = threading.Timer(3.0, cluster.start)
        restart.start()
        started = time.monotonic()
        try:
            result = call()
        finally:
            restart.join()
        assert time.monotonic() - started >= 2.5, "the call ran while the database was down"
        return result

    assert len(during_outage(study.get_trials)) == 1
    trial = during_outage(study.ask)
    assert during_outage(lambda: trial.suggest_float("x", 0.0, 1.0)) is not None
    study.tell(trial, 0.5)
    assert during_outage(lambda: study.best_trial).value == 0.5


@pytest.mark.slow
def test_database_down_too_long_stops_workers_with_one_line_and_loses_nothing(
    cluster: Cluster, store: FeatureStore, tmp_path: Path
) -> None:
    url = cluster.url(database="tuner")
    env = {"TUNER_STORAGE": url, "PGPASSWORD": cluster.password, **FAST_HEARTBEAT}
    create_study(store, tmp_path, env, trials=3, epochs=400)
    worker = tuner_process(
        "worker", "s", "--device", "cpu", env={**env, "TUNER_DB_RETRY_SECONDS": "3"}
    )
    admin = cluster.admin_url("tuner")
    assert wait_until(lambda: any(t.intermediate_values for t in trials_of(admin)), timeout=300)
    cluster.stop("fast")
    _, err = worker.communicate(timeout=120)
    assert worker.returncode == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("tuner: error: the study database at postgresql+psycopg2://")
    assert "unreachable for 3 s" in last
    assert "Traceback" not in err
    cluster.start()
    assert [t.state for t in trials_of(admin)] == [TrialState.RUNNING]

    # once the database is back, the next worker fails the abandoned trial and retries it
    survivor = tuner_process(
        "worker", "s", "--device", "cpu", "--poll", "0.5", "--max-trials", 1, env=env
    )
    try:
        assert wait_until(lambda: len(trials_of(admin)) >= 2, timeout=120)
        trials = trials_of(admin)
    finally:
        survivor.kill()
        survivor.communicate(timeout=30)
    assert trials[0].state == TrialState.FAIL
    assert trials[1].system_attrs["failed_trial"] == 0
    assert trials[1].params == trials[0].params


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_launch_stops_all_workers_cleanly(
    stop: signal.Signals, store: FeatureStore, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    env = {"TUNER_STORAGE": url}
    create_study(store, tmp_path, env, trials=4, epochs=100000)
    launcher = tuner_process("launch", "s", "--workers", 2, env=env)
    assert wait_until(
        lambda: sum(bool(t.intermediate_values) for t in trials_of(url)) >= 2, timeout=300
    )
    launcher.send_signal(stop)
    out, err = launcher.communicate(timeout=120)
    assert launcher.returncode == 130, err
    assert out.count("queued to be retried") + err.count("queued to be retried") == 2
    trials = trials_of(url)
    states = Counter(t.state for t in trials)
    assert states == {TrialState.FAIL: 2, TrialState.WAITING: 2}
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert all(t.user_attrs["fail_reason"] == "interrupted" for t in failed)
    children = subprocess.run(["pgrep", "-f", "tuner worker s"], capture_output=True, text=True)
    assert children.stdout.strip() == "", "no worker outlives its launcher"
