"""The retry queuer: fail dead workers' trials, and queue every retry a slot is owed.

Every worker runs :func:`queue_retries` under the study lock before it asks for a trial, and
again after one of its trials was interrupted. It is safe to run any number of times, and to be
killed at any point:

1. A running trial whose heartbeat is stale is marked as a death (``tuner:failure``, and its
   ``fail_reason``) while still running, then failed. A worker killed between the two leaves a
   stale running trial, which the next run fails.
2. Every slot whose latest attempt is a retryable failure (see :mod:`._slots`) gets one waiting
   retry, with the same parameters and intermediate values, in one transaction. A worker killed
   before it commits leaves the slot without one, and the next run queues it: the slot counts
   as active meanwhile, so no worker stops early and no checkpoint sweep deletes its state.
3. A slot that gave up (deaths beyond the study's ``max_retries``) is logged once, with its
   reason; a study system attribute remembers that it was.
"""

from __future__ import annotations

import logging

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState, create_trial

from tuner.storage import RetryingRDBStorage, storage_of, study_id_of
from tuner.study._slots import (
    DIED,
    FAILURE_KEY,
    HISTORY_KEY,
    RETRY_KEY,
    Slot,
    fail_reason,
    group_slots,
)

__all__ = ["GAVE_UP_KEY", "queue_retries"]

logger = logging.getLogger(__name__)

GAVE_UP_KEY = "tuner:gave_up:"
"""Prefix of the study system attribute set once a slot's give-up has been logged."""


def queue_retries(
    study: optuna.Study, storage: RetryingRDBStorage, max_retries: int
) -> list[FrozenTrial]:
    """Fail stale trials and queue the retries owed, under the study lock (hold it).

    Returns the study's trials as they stand afterwards (what the budget is counted on).
    """
    _fail_stale(study, storage)
    trials = study.get_trials(deepcopy=False)
    queued = False
    gave_up: list[Slot] = []
    for slot in group_slots(trials):
        state = slot.state(max_retries)
        if state == "retry due":
            _enqueue(study, slot)
            queued = True
        elif state == "gave up":
            gave_up.append(slot)
    if gave_up:
        _log_once(study, gave_up, max_retries)
    return study.get_trials(deepcopy=False) if queued else trials


def _fail_stale(study: optuna.Study, storage: RetryingRDBStorage) -> None:
    reason = f"its worker died (no heartbeat for {storage.grace_period} s)"
    backend = storage_of(study)
    for trial_id in storage.stale_trial_ids(study_id_of(study)):
        try:
            # a trial whose worker was stopping already says why (interrupted, or an error)
            if FAILURE_KEY not in backend.get_trial_system_attrs(trial_id):
                backend.set_trial_user_attr(trial_id, "fail_reason", reason)
                backend.set_trial_system_attr(trial_id, FAILURE_KEY, DIED)
            backend.set_trial_state_values(trial_id, state=TrialState.FAIL)
        except UpdateFinishedTrialError:
            continue  # it finished meanwhile, or another worker failed it
        logger.warning(
            "trial %d failed: %s",
            backend.get_trial(trial_id).number,
            reason,
        )


def _enqueue(study: optuna.Study, slot: Slot) -> None:
    latest = slot.latest
    system_attrs = {k: v for k, v in latest.system_attrs.items() if k != FAILURE_KEY}
    system_attrs[RETRY_KEY] = slot.number
    system_attrs[HISTORY_KEY] = [*latest.system_attrs.get(HISTORY_KEY, []), latest.number]
    retry = create_trial(
        state=TrialState.WAITING,
        params=latest.params,
        distributions=latest.distributions,
        system_attrs=system_attrs,
        intermediate_values=latest.intermediate_values,
    )
    study.add_trial(retry)  # one transaction: the retry exists with its marker, or not at all
    logger.info(
        "slot %d queued again (attempt %d) after trial %d failed: %s",
        slot.number,
        len(slot.attempts) + 1,
        latest.number,
        fail_reason(latest),
    )


def _log_once(study: optuna.Study, slots: list[Slot], max_retries: int) -> None:
    backend = storage_of(study)
    logged = backend.get_study_system_attrs(study_id_of(study))
    for slot in slots:
        key = f"{GAVE_UP_KEY}{slot.number}"
        if key in logged:
            continue
        logger.warning(
            "%s; it counts as finished (max_retries is %d)",
            slot.describe(max_retries),
            max_retries,
        )
        backend.set_study_system_attr(study_id_of(study), key, len(slot.attempts))
