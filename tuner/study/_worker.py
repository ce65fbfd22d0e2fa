"""``tuner worker``: run a study's trials until its budget of finished trials is reached.

The objective is the only code that knows about trials: it samples the search space, builds the
config, trains with the shared trainer and, after each epoch, reports the validation loss and
prunes when the pruner says so (``trial.report`` then ``trial.should_prune``). A trial whose
training diverges or runs out of memory fails with its reason and the worker goes on. SIGTERM
or Ctrl-C fails the current trial as "interrupted", queues it to be retried with the same
parameters, and stops the worker.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, Trial, TrialState

from tuner._device import resolve_device
from tuner.config import apply_overrides
from tuner.errors import StudyError, TrainingError, TunerError
from tuner.features import FeatureStore
from tuner.storage import RetryingRDBStorage, study_lock
from tuner.study._budget import RETRY_KEY, Budget, next_action
from tuner.study._settings import StudySettings, load_settings, make_pruner, make_sampler
from tuner.training import EpochReport, StoreTensors, Trainer

__all__ = ["Interrupted", "WorkerOptions", "WorkerReport", "run_worker"]

logger = logging.getLogger(__name__)


class Interrupted(BaseException):
    """SIGTERM or SIGINT arrived: stop the current trial and the worker."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass(frozen=True)
class WorkerOptions:
    device: str = "auto"
    features: Path | None = None
    poll_seconds: float = 5.0
    max_trials: int | None = None
    threads: int | None = None


@dataclass
class WorkerReport:
    trials: dict[str, int] = field(default_factory=dict)
    budget: Budget | None = None

    def count(self, state: str) -> None:
        self.trials[state] = self.trials.get(state, 0) + 1


@dataclass
class _Context:
    study: optuna.Study
    storage: RetryingRDBStorage
    settings: StudySettings
    data: StoreTensors
    device: torch.device
    worker: str


def run_worker(storage: RetryingRDBStorage, name: str, options: WorkerOptions) -> WorkerReport:
    """Run trials of study ``name`` until its budget is met (or ``options.max_trials``)."""
    if options.threads:
        torch.set_num_threads(options.threads)
    settings = load_settings(storage, name)
    device = resolve_device(options.device)
    store = _open_store(settings, options.features, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.load_study(
            study_name=name, storage=storage, sampler=make_sampler(settings),
            pruner=make_pruner(settings),
        )  # fmt: skip
    worker = f"{socket.gethostname()}:{os.getpid()}"
    context = _Context(study, storage, settings, StoreTensors.load(store, device), device, worker)
    logger.info(
        "worker %s on %s joined study %s (budget %d)", worker, device, name, settings.budget
    )
    report = WorkerReport()
    with _signals_raise_interrupted():
        while options.max_trials is None or sum(report.trials.values()) < options.max_trials:
            trial, budget = _next_trial(context)
            report.budget = budget
            if trial is None:
                if budget.finished:
                    break
                time.sleep(options.poll_seconds)
                continue
            state = _run_trial(context, trial)
            report.count(state)
    final = report.budget
    if final is not None:
        logger.info("worker %s stops: %d of %d trials finished", worker, final.done, final.budget)
    return report


def _open_store(settings: StudySettings, override: Path | None, name: str) -> FeatureStore:
    path = override or Path(settings.features["path"])
    store = FeatureStore.open(path)
    if store.checksum != settings.features["checksum"]:
        raise StudyError(
            f"feature store {str(path)!r} has checksum {store.checksum[:19]}... but study "
            f"{name!r} was created with {settings.features['checksum'][:19]}...; pass --features "
            "with the study's store"
        )
    return store


def _next_trial(context: _Context) -> tuple[Trial | None, Budget]:
    """Under the study lock: retry dead trials, count the budget, and maybe start a trial."""
    study, storage = context.study, context.storage
    with study_lock(storage, study.study_name), warnings.catch_warnings():
        # Optuna calls heartbeats "experimental" and warns that they belong to optimize().
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("ignore", UserWarning)
        optuna.storages.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        budget = Budget.count(trials, context.settings.budget)
        if next_action(budget) != "run":
            return None, budget
        trial = study.ask()
        storage.record_heartbeat(trial._trial_id)
    return trial, budget


def _run_trial(context: _Context, trial: Trial) -> str:
    """Train one trial and tell the study how it ended; return the final state's name."""
    study = context.study
    started = time.monotonic()
    trial.set_user_attr("worker", context.worker)
    trial.set_user_attr("device", str(context.device))
    best: dict[str, Any] = {}
    try:
        with _heartbeat(context.storage, trial._trial_id):
            overrides = context.settings.search_space().sample(trial)
            config = apply_overrides(
                context.settings.config(), overrides, source=f"trial {trial.number}"
            )
            trainer = Trainer(config, context.data, context.device)
            split = context.settings.split()

            def on_epoch(epoch: EpochReport) -> None:
                if math.isfinite(epoch.val.loss):
                    trial.report(epoch.val.loss, epoch.epoch)
                if not best or epoch.val.loss < best["loss"]:
                    best.update(loss=epoch.val.loss, auc=epoch.val.auc, epoch=epoch.epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at epoch {epoch.epoch}")

            fit = trainer.fit(split.train, split.val, on_epoch=on_epoch)
            _record(trial, best, started, epochs_run=len(fit.history))
            study.tell(trial, fit.best_val.loss)
            logger.info(
                "trial %d complete: val loss %.4f, val auc %s (%.0f s)", trial.number,
                fit.best_val.loss, _fmt(fit.best_val.auc), time.monotonic() - started,
            )  # fmt: skip
            return "complete"
    except optuna.TrialPruned as pruned:
        _record(trial, best, started, epochs_run=best.get("epoch"))
        study.tell(trial, state=TrialState.PRUNED)
        logger.info("trial %d %s", trial.number, pruned)
        return "pruned"
    except Interrupted:
        _fail(trial, study, "interrupted", started)
        _queue_retry(context, trial.number)
        logger.warning("trial %d interrupted; queued to be retried", trial.number)
        raise
    except optuna.exceptions.UpdateFinishedTrialError:
        logger.warning(
            "trial %d was failed by another worker (stale heartbeat); dropping it", trial.number
        )
        return "taken over"
    except (TrainingError, torch.cuda.OutOfMemoryError, TunerError) as error:
        reason = (
            str(error)
            if not isinstance(error, torch.cuda.OutOfMemoryError)
            else ("out of GPU memory; lower train.batch_cases or data.per_slice_cap")
        )
        _fail(trial, study, reason, started)
        logger.warning("trial %d failed: %s", trial.number, reason)
        return "failed"
    except Exception as error:
        _fail(trial, study, f"{type(error).__name__}: {error}", started)
        logger.exception("trial %d failed with an unexpected error", trial.number)
        return "failed"


def _record(trial: Trial, best: dict[str, Any], started: float, *, epochs_run: int | None) -> None:
    if best:
        trial.set_user_attr("val_auc", best["auc"])
        trial.set_user_attr("best_epoch", best["epoch"])
    trial.set_user_attr("epochs_run", epochs_run)
    trial.set_user_attr("duration_s", round(time.monotonic() - started, 2))


def _fail(trial: Trial, study: optuna.Study, reason: str, started: float) -> None:
    try:
        trial.set_user_attr("fail_reason", reason[:500])
        trial.set_user_attr("duration_s", round(time.monotonic() - started, 2))
        study.tell(trial, state=TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        pass


def _queue_retry(context: _Context, number: int) -> None:
    """Queue an interrupted trial again with the same parameters (as Optuna does for dead ones)."""
    study = context.study
    with study_lock(context.storage, study.study_name):
        frozen: FrozenTrial = next(
            t for t in study.get_trials(deepcopy=False) if t.number == number
        )
        system_attrs = {RETRY_KEY: frozen.number, "retry_history": [], **frozen.system_attrs}
        system_attrs["retry_history"] = [*system_attrs["retry_history"], frozen.number]
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.WAITING, params=frozen.params,
                distributions=frozen.distributions, user_attrs={}, system_attrs=system_attrs,
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


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
