"""The worker's loop: take a trial, run an objective on it, tell the study, until the budget.

Orchestration only; what a trial does is the objective's business (a callable that takes an
Optuna trial and returns the value to minimise, raising ``optuna.TrialPruned`` to prune). The
loop, under the study lock, queues the retries dead and interrupted trials are owed (see
:mod:`._retry`) and decides whether to start a trial (see :mod:`._budget`); it keeps the
trial's heartbeat, and records how each trial ended:

- returned a value: complete; raised ``TrialPruned``: pruned;
- raised :class:`~tuner.errors.TunerError` (a diverging run, say) or ran out of GPU memory:
  failed for good, with the reason in the ``fail_reason`` attribute, and the loop goes on;
- SIGTERM / SIGINT: the loop stops at the next safe point (between batches, between trials, in
  any wait; see :mod:`tuner._interrupt`); the trial is failed as "interrupted" and queued again
  with the same parameters for another worker; a second signal stops at once;
- the database stayed unreachable past its retry limit (:class:`~tuner.errors.StorageError`):
  the loop stops at once and the trial, left running, is retried once it goes stale.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import optuna
import torch
from optuna.trial import Trial, TrialState

from tuner import _interrupt
from tuner._interrupt import Interrupted
from tuner.errors import StorageError, TrainingError, TunerError
from tuner.storage import RetryingRDBStorage, study_lock, trial_id_of
from tuner.study._budget import Budget, next_action
from tuner.study._retry import queue_retries
from tuner.study._settings import DEFAULT_MAX_RETRIES
from tuner.study._slots import ERROR, FAILURE_KEY, INTERRUPTED

__all__ = ["Interrupted", "Objective", "WorkerReport", "run_trials"]

logger = logging.getLogger(__name__)

Objective = Callable[[Trial], float]


@dataclass
class WorkerReport:
    """How this worker's trials ended, and the study's budget when it stopped."""

    trials: dict[str, int] = field(default_factory=dict)
    budget: Budget | None = None
    objective_seconds: float = 0.0
    wall_seconds: float = 0.0

    def count(self, state: str) -> None:
        self.trials[state] = self.trials.get(state, 0) + 1


def run_trials(
    study: optuna.Study,
    storage: RetryingRDBStorage,
    budget: int | Callable[[], int],
    objective: Objective,
    *,
    max_retries: int = DEFAULT_MAX_RETRIES,
    poll_seconds: float = 5.0,
    max_trials: int | None = None,
    on_trial: Callable[[Trial], None] | None = None,
    after_trial: Callable[[], object] | None = None,
    on_told: Callable[[], object] | None = None,
) -> WorkerReport:
    """Run trials of ``study`` until ``budget`` slots are finished (or ``max_trials`` here).

    ``budget`` may be a function that reads it from the study: it is called under the study
    lock whenever the loop decides whether to start a trial, so a budget raised meanwhile
    (``tuner study create --trials``) counts at once.
    ``max_retries`` is the study's cap on retries after deaths (see :mod:`._slots`).
    ``on_trial`` runs when a trial starts; ``after_trial`` when it has been told, under the
    study lock (tidying up after trials, such as deleting checkpoints, happens there);
    ``on_told`` after that, outside the lock (progress reports).
    """
    report = WorkerReport()
    started = time.perf_counter()
    with _interrupt.stop_on_signals():
        while max_trials is None or sum(report.trials.values()) < max_trials:
            _interrupt.check()
            trial, report.budget = _next_trial(study, storage, budget, max_retries)
            if trial is None:
                if report.budget.finished:
                    break
                _interrupt.sleep(poll_seconds)
                continue
            if on_trial is not None:
                on_trial(trial)
            tick = time.perf_counter()
            state = _run_one(study, storage, trial, objective, max_retries)
            report.objective_seconds += time.perf_counter() - tick
            report.count(state)
            if after_trial is not None:
                with study_lock(storage, study.study_name):
                    after_trial()
            if on_told is not None:
                on_told()
    report.wall_seconds = time.perf_counter() - started
    return report


def _next_trial(
    study: optuna.Study,
    storage: RetryingRDBStorage,
    budget: int | Callable[[], int],
    max_retries: int,
) -> tuple[Trial | None, Budget]:
    """Under the study lock: queue owed retries, count the budget, and maybe start a trial."""
    with study_lock(storage, study.study_name), warnings.catch_warnings():
        if callable(budget):
            budget = budget()
        # Optuna calls heartbeats "experimental" and warns that they belong to optimize().
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("ignore", UserWarning)
        trials = queue_retries(study, storage, max_retries)
        counted = Budget.count(trials, budget, max_retries=max_retries)
        if next_action(counted) != "run":
            return None, counted
        trial = study.ask()
        storage.record_heartbeat(trial_id_of(trial))
    return trial, counted


def _run_one(
    study: optuna.Study,
    storage: RetryingRDBStorage,
    trial: Trial,
    objective: Objective,
    max_retries: int,
) -> str:
    """Run the objective on one trial and tell the study; return how it ended."""
    started = time.monotonic()
    try:
        with _heartbeat(storage, trial_id_of(trial)):
            value = objective(trial)
        if not math.isfinite(value):
            raise TrainingError(f"the objective returned {value}")
        trial.set_user_attr("duration_s", round(time.monotonic() - started, 3))
        study.tell(trial, value)
        return "complete"
    except optuna.TrialPruned as pruned:
        trial.set_user_attr("duration_s", round(time.monotonic() - started, 3))
        study.tell(trial, state=TrialState.PRUNED)
        logger.info("trial %d %s", trial.number, pruned or "pruned")
        return "pruned"
    except Interrupted:
        _fail(study, trial, "interrupted", started, kind=INTERRUPTED)
        with study_lock(storage, study.study_name):
            queue_retries(study, storage, max_retries)
        logger.warning("trial %d interrupted; queued to be retried", trial.number)
        raise
    except StorageError:
        # The database is gone for longer than the retry limit: nothing can be told. The trial
        # stays running, goes stale, and another worker retries it once the database is back.
        raise
    except optuna.exceptions.UpdateFinishedTrialError:
        logger.warning(
            "trial %d was failed by another worker (its heartbeat went stale); dropping it",
            trial.number,
        )
        return "taken over"
    except (TunerError, torch.cuda.OutOfMemoryError) as error:
        reason = (
            "out of GPU memory; lower train.batch_cases or data.per_slice_cap"
            if isinstance(error, torch.cuda.OutOfMemoryError)
            else str(error)
        )
        _fail(study, trial, reason, started, kind=ERROR)
        logger.warning("trial %d failed: %s", trial.number, reason)
        return "failed"
    except Exception as error:
        _fail(study, trial, f"{type(error).__name__}: {error}", started, kind=ERROR)
        logger.exception("trial %d failed with an unexpected error", trial.number)
        return "failed"


def _fail(study: optuna.Study, trial: Trial, reason: str, started: float, *, kind: str) -> None:
    """Record why the trial failed (``kind``, see :mod:`._slots`; first, so that it survives a
    kill in between), then fail it."""
    try:
        trial.storage.set_trial_system_attr(trial_id_of(trial), FAILURE_KEY, kind)
        trial.set_user_attr("fail_reason", reason[:500])
        trial.set_user_attr("duration_s", round(time.monotonic() - started, 3))
        study.tell(trial, state=TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        pass


@contextmanager
def _heartbeat(storage: RetryingRDBStorage, trial_id: int) -> Iterator[None]:
    """Record the trial's heartbeat every interval while the block runs."""
    interval = storage.get_heartbeat_interval() or 10
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            try:
                storage.record_heartbeat(trial_id)
            except TunerError as error:  # the database stayed down; the trial may be retried
                logger.warning("heartbeat of trial %d failed: %s", trial_id, error)

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=interval)
