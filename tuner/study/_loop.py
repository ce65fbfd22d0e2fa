"""The worker's loop: take a trial, run an objective on it, tell the study, until the budget.

Orchestration only; what a trial does is the objective's business (a callable that takes an
Optuna trial and returns the value to minimise, raising ``optuna.TrialPruned`` to prune). The
loop decides under the study lock whether to start a trial (see :mod:`._budget`), keeps the
trial's heartbeat, and records how each trial ended:

- returned a value: complete; raised ``TrialPruned``: pruned;
- raised :class:`~tuner.errors.TunerError` (a diverging run, say) or ran out of GPU memory:
  failed, with the reason in the ``fail_reason`` attribute, and the loop goes on;
- SIGTERM / SIGINT (:class:`Interrupted`): failed as "interrupted", queued again with the same
  parameters for another worker, and the loop stops;
- the database stayed unreachable past its retry limit (:class:`~tuner.errors.StorageError`):
  the loop stops at once and the trial, left running, is retried once it goes stale.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType

import optuna
import torch
from optuna.trial import FrozenTrial, Trial, TrialState

from tuner.errors import StorageError, TunerError
from tuner.storage import RetryingRDBStorage, study_lock
from tuner.study._budget import RETRY_KEY, Budget, next_action

__all__ = ["Interrupted", "Objective", "WorkerReport", "run_trials"]

logger = logging.getLogger(__name__)

Objective = Callable[[Trial], float]


class Interrupted(BaseException):
    """SIGTERM or SIGINT arrived: stop the current trial and the worker."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


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
    budget: int,
    objective: Objective,
    *,
    poll_seconds: float = 5.0,
    max_trials: int | None = None,
    on_trial: Callable[[Trial], None] | None = None,
    after_trial: Callable[[], object] | None = None,
    on_told: Callable[[], object] | None = None,
) -> WorkerReport:
    """Run trials of ``study`` until ``budget`` slots are finished (or ``max_trials`` here).

    ``on_trial`` runs when a trial starts; ``after_trial`` when it has been told, under the
    study lock (tidying up after trials, such as deleting checkpoints, happens there);
    ``on_told`` after that, outside the lock (progress reports).
    """
    report = WorkerReport()
    started = time.perf_counter()
    with _signals_raise_interrupted():
        while max_trials is None or sum(report.trials.values()) < max_trials:
            trial, report.budget = _next_trial(study, storage, budget)
            if trial is None:
                if report.budget.finished:
                    break
                time.sleep(poll_seconds)
                continue
            if on_trial is not None:
                on_trial(trial)
            tick = time.perf_counter()
            state = _run_one(study, storage, trial, objective)
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
    study: optuna.Study, storage: RetryingRDBStorage, budget: int
) -> tuple[Trial | None, Budget]:
    """Under the study lock: retry dead trials, count the budget, and maybe start a trial."""
    with study_lock(storage, study.study_name), warnings.catch_warnings():
        # Optuna calls heartbeats "experimental" and warns that they belong to optimize().
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("ignore", UserWarning)
        optuna.storages.fail_stale_trials(study)
        counted = Budget.count(study.get_trials(deepcopy=False), budget)
        if next_action(counted) != "run":
            return None, counted
        trial = study.ask()
        storage.record_heartbeat(trial._trial_id)
    return trial, counted


def _run_one(
    study: optuna.Study, storage: RetryingRDBStorage, trial: Trial, objective: Objective
) -> str:
    """Run the objective on one trial and tell the study; return how it ended."""
    started = time.monotonic()
    try:
        with _heartbeat(storage, trial._trial_id):
            value = objective(trial)
        if not math.isfinite(value):
            raise TunerError(f"the objective returned {value}")
        trial.set_user_attr("duration_s", round(time.monotonic() - started, 3))
        study.tell(trial, value)
        return "complete"
    except optuna.TrialPruned as pruned:
        trial.set_user_attr("duration_s", round(time.monotonic() - started, 3))
        study.tell(trial, state=TrialState.PRUNED)
        logger.info("trial %d %s", trial.number, pruned or "pruned")
        return "pruned"
    except Interrupted:
        _fail(study, trial, "interrupted", started)
        _queue_retry(study, storage, trial.number)
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
        _fail(study, trial, reason, started)
        logger.warning("trial %d failed: %s", trial.number, reason)
        return "failed"
    except Exception as error:
        _fail(study, trial, f"{type(error).__name__}: {error}", started)
        logger.exception("trial %d failed with an unexpected error", trial.number)
        return "failed"


def _fail(study: optuna.Study, trial: Trial, reason: str, started: float) -> None:
    try:
        trial.set_user_attr("fail_reason", reason[:500])
        trial.set_user_attr("duration_s", round(time.monotonic() - started, 3))
        study.tell(trial, state=TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        pass


def _queue_retry(study: optuna.Study, storage: RetryingRDBStorage, number: int) -> None:
    """Queue an interrupted trial again with the same parameters, as Optuna does for dead ones."""
    with study_lock(storage, study.study_name):
        frozen: FrozenTrial = next(
            t for t in study.get_trials(deepcopy=False) if t.number == number
        )
        system_attrs = {RETRY_KEY: frozen.number, "retry_history": [], **frozen.system_attrs}
        system_attrs["retry_history"] = [*system_attrs["retry_history"], frozen.number]
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.WAITING, params=frozen.params,
                distributions=frozen.distributions, system_attrs=system_attrs,
                intermediate_values=frozen.intermediate_values,
            )
        )  # fmt: skip


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


@contextmanager
def _signals_raise_interrupted() -> Iterator[None]:
    """Turn the first SIGTERM/SIGINT into :class:`Interrupted`; ignore repeats (cleaning up)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    raised = False

    def handler(signum: int, _frame: FrameType | None) -> None:
        nonlocal raised
        if not raised:
            raised = True
            raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
