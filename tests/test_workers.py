"""Real worker processes on a real PostgreSQL study: budget, pruning, export, final training."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from tests.helpers import make_signal_store, run_tuner
from tuner.features import FeatureStore
from tuner.storage import open_storage

SPACE = {
    "train.lr": {"type": "float", "low": 1.0e-6, "high": 3.0e-2, "log": True},
    "model.dropout": {"type": "float", "low": 0.0, "high": 0.5},
}
TINY_CONFIG = {
    "model": {"embed_dim": 16, "attn_dim": 8},
    "train": {"epochs": 6, "batch_cases": 3, "early_stopping": None, "device": "cpu"},
}


def write_inputs(folder: Path, store: FeatureStore) -> tuple[Path, Path]:
    config = folder / "base.yaml"
    config.write_text(yaml.safe_dump({"data": {"features": str(store.path)}, **TINY_CONFIG}))
    space = folder / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE, sort_keys=False))
    return config, space


@pytest.fixture(scope="module")
def signal_store(tmp_path_factory: pytest.TempPathFactory) -> FeatureStore:
    """A store that a model learns at lr 1e-2 in a few epochs (the tiny demo's beats no
    chance, so every trial on it is pruned as learning nothing)."""
    return FeatureStore.open(make_signal_store(tmp_path_factory.mktemp("signal")))


@pytest.mark.slow
def test_two_workers_finish_the_budget_on_postgres(
    pg_url: str, signal_store: FeatureStore, tmp_path: Path, run_cli
) -> None:
    store = signal_store
    config, space = write_inputs(tmp_path, store)
    # rates that learn within the chance rule's warm-up: asha prunes some, others complete
    space.write_text(yaml.safe_dump({**SPACE, "train.lr": {**SPACE["train.lr"], "low": 5.0e-3}}))
    env = {"TUNER_STORAGE": pg_url}
    created = run_tuner(
        "study", "create", "two-workers", "--features", store.path, "--space", space,
        "--config", config, "--trials", 10, "--pruner", "asha", "--seed", 1, env=env,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    launched = run_tuner("launch", "two-workers", "--workers", 2, env=env, timeout=600)
    assert launched.returncode == 0, launched.stdout + launched.stderr
    assert "[w0] worker done" in launched.stdout
    assert "[w1] worker done" in launched.stdout
    assert "10/10 trials done" in launched.stdout + launched.stderr
    assert "; best val loss " in launched.stdout + launched.stderr

    study = optuna.load_study(study_name="two-workers", storage=open_storage(pg_url))
    trials = study.get_trials()
    states = Counter(t.state for t in trials)
    assert states[TrialState.COMPLETE] + states[TrialState.PRUNED] == 10
    assert len(trials) == 10, "no trial lost or duplicated"
    assert sorted(t.number for t in trials) == list(range(10))
    assert states[TrialState.PRUNED] >= 1
    for t in trials:
        assert t.intermediate_values, f"trial {t.number} has no intermediate values"
        assert t.user_attrs["device"] == "cpu"
        assert "worker" in t.user_attrs
        if t.state == TrialState.COMPLETE:
            assert sorted(t.intermediate_values) == list(range(1, 7))
            assert t.value == pytest.approx(min(t.intermediate_values.values()))
            assert 0.0 <= t.user_attrs["val_auc"] <= 1.0

    status = run_tuner("status", "two-workers", env=env)
    assert "10 of 10 trials finished" in status.stdout

    best = tmp_path / "best.yaml"
    exported = run_cli("--quiet", "export", "two-workers", "--out", best, "--storage", pg_url)
    assert exported.code == 0, exported.err
    trained = run_cli("--quiet", "train", "--config", best, "--out", tmp_path / "final")
    assert trained.code == 0, trained.err
    assert (tmp_path / "final" / "metrics.json").is_file()


def create(
    store: FeatureStore, folder: Path, url: str, *, space: dict, trials: int, **train
) -> None:  # type: ignore[no-untyped-def]
    config = folder / "base.yaml"
    tiny = {**TINY_CONFIG, "train": {**TINY_CONFIG["train"], **train}}
    config.write_text(yaml.safe_dump({"data": {"features": str(store.path)}, **tiny}))
    (folder / "space.yaml").write_text(yaml.safe_dump(space, sort_keys=False))
    result = run_tuner(
        "study", "create", "s", "--features", store.path, "--space", folder / "space.yaml",
        "--config", config, "--trials", trials, "--pruner", "none", env={"TUNER_STORAGE": url},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_diverging_trials_fail_with_their_reason_and_the_worker_goes_on(
    store: FeatureStore, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    space = {"train.lr": {"type": "float", "low": 1e25, "high": 1e30, "log": True}}
    create(store, tmp_path, url, space=space, trials=2, scheduler="none")
    result = run_tuner("worker", "s", "--device", "cpu", env={"TUNER_STORAGE": url}, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "worker done: 2 failed" in result.stdout
    # Progress, one line per trial when not on a terminal.
    assert "study s: 1/2 trials done, 0 running; no complete trial yet" in result.stderr
    assert "study s: 2/2 trials done, 0 running; no complete trial yet" in result.stderr
    trials = optuna.load_study(study_name="s", storage=open_storage(url)).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL]
    assert all("training diverged at epoch" in t.user_attrs["fail_reason"] for t in trials)


def test_sigterm_fails_the_trial_as_interrupted_and_queues_it_again(
    store: FeatureStore, tmp_path: Path
) -> None:
    import signal
    import subprocess
    import sys
    import time

    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    create(store, tmp_path, url, space=SPACE, trials=3, epochs=100000)
    process = subprocess.Popen(
        [sys.executable, "-m", "tuner", "worker", "s", "--device", "cpu"],
        env={**os.environ, "TUNER_STORAGE": url}, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    storage = open_storage(url)

    def reported() -> bool:
        trials = optuna.load_study(study_name="s", storage=storage).get_trials()
        return bool(trials and trials[0].intermediate_values)

    deadline = time.monotonic() + 120
    while not reported() and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "trial 0 interrupted; queued to be retried" in stderr
    trials = optuna.load_study(study_name="s", storage=storage).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert trials[0].user_attrs["fail_reason"] == "interrupted"
    assert trials[1].params == trials[0].params
    assert trials[1].system_attrs["failed_trial"] == 0
    assert trials[1].intermediate_values == trials[0].intermediate_values


def test_a_running_worker_sees_a_raised_budget(
    store: FeatureStore, tmp_path: Path, run_cli
) -> None:
    """A real worker waits while another's trial runs and the budget is met; raised by
    `tuner study create --trials`, it starts another trial at once, then stops at the new
    budget. The old worker read the budget once and never ran the third slot. It also names
    the objective of a study that has no name for it."""
    import subprocess
    import sys
    import time

    config, space = write_inputs(tmp_path, store)
    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    base = ["study", "create", "grow", "--features", store.path, "--storage", url]
    created = run_cli(
        *base, "--space", space, "--config", config, "--trials", 2, "--pruner", "none"
    )
    assert created.code == 0, created.err
    storage = open_storage(url)
    study = optuna.load_study(study_name="grow", storage=storage)
    elsewhere = study.ask()  # another worker's trial, running all along
    # as a study from before tuner named its objective: the worker names it
    storage.set_study_system_attr(study._study_id, "study:metric_names", None)
    storage.record_heartbeat(elsewhere._trial_id)

    def complete() -> list[optuna.trial.FrozenTrial]:
        return study.get_trials(deepcopy=False, states=[TrialState.COMPLETE, TrialState.PRUNED])

    def wait_for(done: int, worker: subprocess.Popen[str]) -> None:
        deadline = time.monotonic() + 180
        while len(complete()) < done:
            assert worker.poll() is None, worker.communicate()
            assert time.monotonic() < deadline, f"fewer than {done} trials after 180 s"
            storage.record_heartbeat(elsewhere._trial_id)
            time.sleep(0.3)

    worker = subprocess.Popen(
        [sys.executable, "-m", "tuner", "worker", "grow", "--storage", url, "--device", "cpu",
         "--poll", "0.2", "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for(1, worker)
        time.sleep(2)  # budget 2: one done, one running elsewhere: the worker waits
        assert worker.poll() is None
        assert len(study.get_trials(deepcopy=False)) == 2
        raised = run_cli(*base, "--trials", 3)
        assert raised.code == 0, raised.err
        assert "budget raised from 2 to 3 trials" in raised.out
        wait_for(2, worker)
        study.tell(elsewhere, 1.0)
        out, err = worker.communicate(timeout=120)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
    assert worker.returncode == 0, err[-2000:]
    assert "worker done: 2 complete" in out
    assert "stops: 3 of 3 trials finished" in err
    assert len(study.get_trials(deepcopy=False)) == 3
    assert study.metric_names == ["val_loss"]
