"""The retry queuer and the slots it keeps: dead and interrupted trials are retried exactly
once per failure, deaths are capped by the study's max_retries, a slot that gives up says why.

The kills between failing a trial and queueing its retry are in tests/test_faults.py."""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState, create_trial

from tuner.features import FeatureStore
from tuner.storage import RetryingRDBStorage, open_storage
from tuner.study import Budget, create_study, load_settings, study_status
from tuner.study._checkpoints import Checkpoints
from tuner.study._retry import queue_retries
from tuner.study._slots import FAILURE_KEY, group_slots

F, R, W, C = TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING, TrialState.COMPLETE


def attempt(
    number: int,
    state: TrialState,
    *,
    slot: int | None = None,
    kind: str | None = None,
    reason: str | None = None,
) -> FrozenTrial:
    system_attrs: dict[str, object] = {} if slot is None else {"failed_trial": slot}
    if kind is not None:
        system_attrs[FAILURE_KEY] = kind
    trial = create_trial(
        state=state,
        value=1.0 if state == C else None,
        system_attrs=system_attrs,
        user_attrs={} if reason is None else {"fail_reason": reason},
    )
    trial.number = number
    return trial


def test_deaths_use_up_the_retries_and_interrupts_do_not() -> None:
    died = {"kind": "died", "reason": "its worker died (no heartbeat for 60 s)"}
    stopped = {"kind": "interrupted", "reason": "interrupted"}
    slot = [attempt(0, F, **died), attempt(1, F, slot=0, **stopped)]
    assert group_slots(slot)[0].state(max_retries=1) == "retry due"
    slot += [attempt(2, F, slot=0, **stopped), attempt(3, F, slot=0, **died)]
    (gave_up,) = group_slots(slot)
    assert gave_up.deaths == 2
    assert gave_up.state(max_retries=1) == "gave up"
    assert gave_up.state(max_retries=2) == "retry due"
    assert gave_up.describe(max_retries=1) == (
        "slot 0 gave up after 4 attempts: its worker died (no heartbeat for 60 s)"
    )
    assert group_slots(slot[:1])[0].state(max_retries=0) == "gave up"


def test_a_failed_trial_owed_a_retry_keeps_the_budget_open() -> None:
    trials = [
        attempt(0, C),
        attempt(1, F, kind="died", reason="its worker died (no heartbeat for 60 s)"),
        attempt(2, F, kind="error", reason="training diverged at epoch 3"),
    ]
    budget = Budget.count(trials, 3, max_retries=3)
    assert (budget.done, budget.active, budget.waiting) == (2, 1, 0)
    assert not budget.finished
    capped = Budget.count(trials, 3, max_retries=0)
    assert (capped.done, capped.active, capped.gave_up) == (3, 0, 1)
    assert capped.finished


def test_trials_failed_before_tuner_recorded_why_are_classified_by_their_reason() -> None:
    by_optuna = attempt(0, F)  # Optuna's stale-trial check: no reason at all
    interrupted = attempt(1, F, reason="interrupted")
    diverged = attempt(2, F, reason="training diverged at epoch 3")
    retried = [attempt(3, F), attempt(4, W, slot=3)]  # Optuna's callback already retried it
    states = [s.state(3) for s in group_slots([by_optuna, interrupted, diverged, *retried])]
    assert states == ["retry due", "retry due", "finished", "waiting"]


def stale_running_trial(study: optuna.Study, storage: RetryingRDBStorage) -> optuna.Trial:
    """Start a trial (or the waiting retry), beat once, and let it go stale."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trial = study.ask()
        trial.suggest_float("train.lr", 1.0e-4, 1.0e-2, log=True)
        trial.report(0.5, 1)
        storage.record_heartbeat(trial._trial_id)
    deadline = time.monotonic() + 60
    while not storage._get_stale_trial_ids(study._study_id):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    return trial


@pytest.fixture
def tuner_study(storage_url: str, store: FeatureStore) -> tuple[optuna.Study, RetryingRDBStorage]:
    storage = open_storage(storage_url, heartbeat_interval=1, grace_period=2)
    create_study(storage, "s", store.path, trials=1, max_retries=1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name="s", storage=storage), storage


def test_a_dead_trial_is_failed_and_retried_once_with_its_values(
    tuner_study: tuple[optuna.Study, RetryingRDBStorage],
) -> None:
    study, storage = tuner_study
    dead = stale_running_trial(study, storage)
    after = queue_retries(study, storage, max_retries=1)
    assert [t.state for t in after] == [F, W]
    assert len(queue_retries(study, storage, max_retries=1)) == 2, "safe to run twice"
    first, retry = study.get_trials()
    assert (first.state, retry.state) == (F, W)
    assert first.system_attrs[FAILURE_KEY] == "died"
    assert first.user_attrs["fail_reason"] == "its worker died (no heartbeat for 2 s)"
    assert retry.params == dead.params
    assert retry.intermediate_values == {1: 0.5}
    assert retry.system_attrs["failed_trial"] == 0
    assert retry.system_attrs["retry_history"] == [0]
    assert FAILURE_KEY not in retry.system_attrs


def test_a_trial_optuna_failed_as_stale_is_retried_too(
    tuner_study: tuple[optuna.Study, RetryingRDBStorage],
) -> None:
    """What an older tuner, or any Optuna tool on this storage, leaves: a FAIL, no reason."""
    study, storage = tuner_study
    stale_running_trial(study, storage)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optuna.storages.fail_stale_trials(study)
    assert [t.state for t in study.get_trials()] == [F]
    queue_retries(study, storage, max_retries=1)
    assert [t.state for t in study.get_trials()] == [F, W]


def test_a_slot_past_its_retries_gives_up_once_with_its_reason(
    tuner_study: tuple[optuna.Study, RetryingRDBStorage],
    storage_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    study, storage = tuner_study
    stale_running_trial(study, storage)
    queue_retries(study, storage, max_retries=1)  # the first death: retried
    retry = stale_running_trial(study, storage)  # the retry dies too
    assert retry.number == 1
    with caplog.at_level(logging.WARNING, logger="tuner"):
        assert len(queue_retries(study, storage, max_retries=1)) == 2, "no third attempt"
        assert len(queue_retries(study, storage, max_retries=1)) == 2
    gave_up = [r.message for r in caplog.records if "gave up" in r.message]
    assert gave_up == [
        "slot 0 gave up after 2 attempts: its worker died (no heartbeat for 2 s); it counts "
        "as finished (max_retries is 1)"
    ]
    trials = study.get_trials()
    assert [t.state for t in trials] == [F, F]
    budget = Budget.count(trials, 1, max_retries=1)
    assert (budget.done, budget.active, budget.gave_up) == (1, 0, 1)
    status = study_status(open_storage(storage_url), "s")
    assert load_settings(storage, "s").max_retries == 1
    assert status.budget.finished
    assert "  slot 0 gave up after 2 attempts: its worker died (no heartbeat for 2 s)" in (
        status.render().splitlines()
    )


def test_the_checkpoint_of_a_slot_owed_a_retry_survives_the_sweep(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'tuner.db'}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="s", storage=storage)
    died = {"fail_reason": "its worker died (no heartbeat for 60 s)"}
    for state, attrs, kind in [(C, {}, None), (F, died, "died"), (F, died, "died")]:
        study.add_trial(
            create_trial(
                state=state,
                value=0.5 if state == C else None,
                user_attrs=attrs,
                system_attrs={} if kind is None else {FAILURE_KEY: kind},
            )
        )
    checkpoints = Checkpoints(tmp_path / "checkpoints", "s")
    for slot in (0, 1, 2):
        checkpoints.path(slot).parent.mkdir(parents=True, exist_ok=True)
        checkpoints.path(slot).write_bytes(b"state")
    # writers killed mid-write left temporary files: the best slot's and a retried slot's
    torn = [checkpoints.folder / f".slot-{slot}.pt.4242.tmp" for slot in (0, 1)]
    for path in torn:
        path.write_bytes(b"half a sta")
    assert checkpoints.sweep(study, max_retries=3) == []  # 0 is the best; 1 and 2 are retried
    assert sorted(p.name for p in checkpoints.folder.iterdir()) == [
        ".slot-1.pt.4242.tmp",  # slot 1 is owed a retry, which may still be writing it
        "slot-0.pt",
        "slot-1.pt",
        "slot-2.pt",
    ]
    assert checkpoints.sweep(study, max_retries=0) == [1, 2]  # they gave up
    assert [p.name for p in checkpoints.folder.iterdir()] == ["slot-0.pt"]


def test_status_names_the_reason_of_a_slot_that_failed(
    tuner_study: tuple[optuna.Study, RetryingRDBStorage], storage_url: str
) -> None:
    study, _ = tuner_study
    study.add_trial(
        create_trial(
            state=F,
            user_attrs={"fail_reason": "training diverged at epoch 3"},
            system_attrs={FAILURE_KEY: "error"},
        )
    )
    status = study_status(open_storage(storage_url), "s")
    assert status.budget.finished
    assert status.render().splitlines()[-2:] == [
        "ended without a result:",
        "  slot 0 failed: training diverged at epoch 3",
    ]
