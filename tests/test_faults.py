"""Fault injection on real processes and a real PostgreSQL server: killed workers, database
restarts, signals. The study always finishes exactly its budget and nothing stays running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import FrozenTrial, TrialState

from tests.pg import Cluster, fresh_database, run_sql, throwaway_cluster, wait_until
from tuner.features import FeatureStore
from tuner.storage import open_storage
from tuner.study import Budget
from tuner.training import load_states

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


SLOW_RETRY_INSERT = """
CREATE FUNCTION slow_retry_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.key = 'failed_trial' THEN
        PERFORM pg_sleep(600);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER slow_retry_insert BEFORE INSERT ON trial_system_attributes
    FOR EACH ROW EXECUTE FUNCTION slow_retry_insert();
"""
"""A slow database: queueing a retry (inserting its ``failed_trial`` marker) takes 10 min."""

SLEEPING_IN_THE_TRIGGER = """
SELECT pid FROM pg_stat_activity
WHERE datname = current_database() AND wait_event = 'PgSleep'
    AND query ILIKE '%trial_system_attributes%'
"""


def kill_while_queueing_a_retry(url: str, worker: subprocess.Popen[str]) -> None:
    """SIGKILL ``worker`` while it inserts a retry (asleep in the trigger); then un-slow the
    database: the killed transaction is rolled back, as when a server notices a dead client."""
    sleeping: list[tuple[object, ...]] = []

    def in_the_window() -> bool:
        sleeping[:] = run_sql(url, SLEEPING_IN_THE_TRIGGER)
        return bool(sleeping) or worker.poll() is not None

    assert wait_until(in_the_window, timeout=300, interval=0.1)
    assert worker.poll() is None, worker.communicate()[1][-3000:]
    worker.send_signal(signal.SIGKILL)
    worker.communicate(timeout=30)
    run_sql(url, f"SELECT pg_terminate_backend({sleeping[0][0]})")
    run_sql(url, "DROP TRIGGER slow_retry_insert ON trial_system_attributes")


def finish_with_one_worker(url: str, env: dict[str, str], budget: int) -> list[FrozenTrial]:
    worker = tuner_process("worker", "s", "--device", "cpu", "--poll", "0.5", env=env)
    _, err = worker.communicate(timeout=600)
    assert worker.returncode == 0, err[-3000:]
    trials = trials_of(url)
    assert_budget_met_exactly(trials, budget)
    return trials


@pytest.mark.slow
def test_a_worker_killed_between_failing_a_dead_trial_and_queueing_its_retry_loses_nothing(
    pg_env: dict[str, str], store: FeatureStore, tmp_path: Path
) -> None:
    url = pg_env["TUNER_STORAGE"]
    create_study(store, tmp_path, pg_env, trials=1, epochs=3)
    run_sql(url, SLOW_RETRY_INSERT)
    # a trial whose worker died: it has a heartbeat, then silence
    storage = open_storage(url)
    study = optuna.load_study(study_name="s", storage=storage)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # heartbeats "belong to optimize()"
        dead = study.ask()
        dead.suggest_float("train.lr", 1.0e-4, 1.0e-2, log=True)
        dead.suggest_float("model.dropout", 0.0, 0.5)
        storage.record_heartbeat(dead._trial_id)
    # the next worker finds it stale, fails it, and dies while queueing its retry
    finder = tuner_process("worker", "s", "--device", "cpu", "--poll", "0.5", env=pg_env)
    kill_while_queueing_a_retry(url, finder)
    assert [t.state for t in trials_of(url)] == [TrialState.FAIL]

    trials = finish_with_one_worker(url, pg_env, budget=1)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[0].user_attrs["fail_reason"] == "its worker died (no heartbeat for 3 s)"
    assert trials[1].system_attrs["failed_trial"] == 0
    assert trials[1].params == trials[0].params


@pytest.mark.slow
def test_a_worker_killed_between_failing_an_interrupted_trial_and_queueing_it_loses_nothing(
    pg_env: dict[str, str], store: FeatureStore, tmp_path: Path
) -> None:
    url = pg_env["TUNER_STORAGE"]
    create_study(store, tmp_path, pg_env, trials=1, epochs=200)
    run_sql(url, SLOW_RETRY_INSERT)
    worker = tuner_process("worker", "s", "--device", "cpu", env=pg_env)
    assert wait_until(lambda: any(t.intermediate_values for t in trials_of(url)), timeout=300)
    # SIGTERM (a SLURM preemption), then SIGKILL while the worker queues the trial again
    worker.send_signal(signal.SIGTERM)
    kill_while_queueing_a_retry(url, worker)
    assert [t.state for t in trials_of(url)] == [TrialState.FAIL]

    trials = finish_with_one_worker(url, pg_env, budget=1)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[0].user_attrs["fail_reason"] == "interrupted"
    assert trials[1].system_attrs["failed_trial"] == 0
    assert trials[1].params == trials[0].params


SLOW_DISK_WORKER = """
import io, os, sys, time
from pathlib import Path

import torch

from tuner.cli import main

marker, pause = Path(os.environ["SLOW_MARKER"]), float(os.environ["SLOW_PAUSE"])
real_write_bytes = Path.write_bytes


def slow_write_bytes(self, data):
    # a slow disk: half the checkpoint is written, then the disk stalls
    if not (self.name.startswith(".slot-") and self.name.endswith(".tmp")):
        return real_write_bytes(self, data)
    epoch = torch.load(io.BytesIO(data), weights_only=True)["members"][0]["epoch"]
    with open(self, "wb") as handle:
        handle.write(data[: len(data) // 2])
        handle.flush()
        if epoch >= int(os.environ["SLOW_FROM_EPOCH"]):
            marker.write_text(str(epoch))
            time.sleep(pause)
        handle.write(data[len(data) // 2 :])
    return len(data)


Path.write_bytes = slow_write_bytes
sys.exit(main(sys.argv[1:]))
"""
"""``tuner ARGS`` whose checkpoint writes stall ``SLOW_PAUSE`` s halfway (from an epoch on),
after writing the epoch being saved to the file ``SLOW_MARKER``."""


def slow_disk_worker(tmp_path: Path, store: FeatureStore, pause: float, from_epoch: int):  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    checkpoints = tmp_path / "checkpoints"
    create_study(store, tmp_path, {"TUNER_STORAGE": url}, trials=2, epochs=100000,
                 checkpoints=checkpoints)  # fmt: skip
    marker = tmp_path / "writing"
    env = {"TUNER_STORAGE": url, "SLOW_MARKER": str(marker), "SLOW_PAUSE": str(pause),
           "SLOW_FROM_EPOCH": str(from_epoch), "PYTHONUNBUFFERED": "1"}  # fmt: skip
    worker = subprocess.Popen(
        [sys.executable, "-c", SLOW_DISK_WORKER, "worker", "s", "--device", "cpu"],
        env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert wait_until(lambda: marker.exists() or worker.poll() is not None, timeout=300)
    assert worker.poll() is None, worker.communicate()[1][-3000:]
    return worker, url, checkpoints / "s", int(marker.read_text())


def assert_interrupted_and_queued_again(url: str) -> None:
    trials = trials_of(url)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert trials[0].user_attrs["fail_reason"] == "interrupted"
    assert trials[1].system_attrs["failed_trial"] == 0


def test_sigterm_during_a_checkpoint_write_stops_after_it(
    store: FeatureStore, tmp_path: Path
) -> None:
    worker, url, folder, epoch = slow_disk_worker(tmp_path, store, pause=3, from_epoch=1)
    worker.send_signal(signal.SIGTERM)  # halfway through writing the checkpoint of `epoch`
    _, err = worker.communicate(timeout=120)
    assert worker.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert [p.name for p in folder.iterdir()] == ["slot-0.pt"], "no torn or temporary file"
    states = load_states(folder / "slot-0.pt")
    assert states is not None
    (state,) = states
    assert state.epoch == epoch, "the write that the signal arrived in was finished"
    assert len(state.history) == epoch
    assert_interrupted_and_queued_again(url)


def test_a_second_sigterm_stops_at_once(store: FeatureStore, tmp_path: Path) -> None:
    worker, url, folder, epoch = slow_disk_worker(tmp_path, store, pause=600, from_epoch=2)
    assert epoch == 2
    worker.send_signal(signal.SIGTERM)
    time.sleep(2)
    assert worker.poll() is None, "the first signal waits for the write to finish"
    stopped = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=120)
    assert worker.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert time.monotonic() - stopped < 60, "the second signal did not wait for the write"
    # the write was abandoned: the checkpoint before it is intact, no temporary file is left
    assert [p.name for p in folder.iterdir()] == ["slot-0.pt"]
    states = load_states(folder / "slot-0.pt")
    assert states is not None
    assert states[0].epoch == 1
    assert_interrupted_and_queued_again(url)
