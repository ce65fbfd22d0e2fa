"""``tuner worker``: train a study's trials until its budget of finished trials is reached.

The objective here is the only code that knows about trials: it samples the search space,
builds the config, trains with the shared trainer and, after each epoch, reports the
validation loss and prunes when the pruner says so (``trial.report`` then
``trial.should_prune``). It returns the best validation loss. The loop around it
(:mod:`._loop`) handles budgets, heartbeats, failures and signals.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import Trial

from tuner._device import resolve_device
from tuner._format import fmt
from tuner.config import apply_overrides
from tuner.errors import StudyError, permanent_errors
from tuner.features import FeatureStore
from tuner.storage import RetryingRDBStorage
from tuner.study._budget import Budget
from tuner.study._checkpoints import Checkpoints
from tuner.study._folders import make_writable_folder
from tuner.study._loop import WorkerReport, run_trials
from tuner.study._pruners import CHANCE_KEY, chance_rule
from tuner.study._settings import (
    StudySettings,
    load_settings,
    make_pruner,
    make_sampler,
    name_objective,
)
from tuner.study._slots import best_trial, slot_of
from tuner.study._status import describe_best
from tuner.training import EpochReport, Lockstep, StoreTensors, Trainer, TrainState, members_of

__all__ = ["TrainingObjective", "WorkerOptions", "open_study_store", "run_worker"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerOptions:
    device: str = "auto"
    features: Path | None = None
    poll_seconds: float = 5.0
    max_trials: int | None = None
    threads: int | None = None
    checkpoints: Path | None = None
    progress: bool = False


class TrainingObjective:
    """Train the MIL model with a trial's parameters; return its validation loss.

    A study on one split trains one model; a cross-validated one (``data.split.cv_folds``)
    trains a model per fold and seed in lockstep (:class:`~tuner.training.Lockstep`): the
    value reported after each epoch, the pruning, the scheduler and early stopping act on
    the members' mean curve, and the value is the mean at the common best epoch. Either way
    the trial records ``chance_loss`` (what a model that learned nothing scores, read by the
    chance rule of the pruner) before its first report.
    """

    def __init__(
        self,
        settings: StudySettings,
        data: StoreTensors,
        device: torch.device,
        checkpoints: Checkpoints | None = None,
    ) -> None:
        self.settings = settings
        self.checkpoints = checkpoints
        self.space = settings.search
        self.base = settings.base
        self.data = data
        self.device = device
        self.rule = chance_rule(settings.epochs)

    def __call__(self, trial: Trial) -> float:
        started = time.monotonic()
        overrides = self.space.sample(trial)
        config = apply_overrides(self.base, overrides, source=f"trial {trial.number}")
        trainer = Trainer(config, self.data, self.device)
        t = config.train
        lockstep = Lockstep(
            trainer, members_of(self.settings.splits, repeats=t.repeats, seed=t.seed)
        )
        chance = lockstep.chance_loss()
        trial.set_user_attr(CHANCE_KEY, chance)
        slot = slot_of(trial)
        resume = self.checkpoints.load(slot) if self.checkpoints is not None else None
        if resume is not None:
            trial.set_user_attr("resumed_from_epoch", resume[0].epoch)
            logger.info(
                "trial %d continues trial %d after epoch %d", trial.number, slot, resume[0].epoch
            )
        save = None
        if self.checkpoints is not None:
            checkpoints = self.checkpoints

            def save(states: list[TrainState]) -> None:
                checkpoints.save(slot, states)

        def on_epoch(epoch: EpochReport) -> None:
            if math.isfinite(epoch.val.loss):
                trial.report(epoch.val.loss, epoch.epoch)
            trial.set_user_attr("epochs_run", epoch.epoch)
            if trial.should_prune():
                curve = lockstep.history  # resumed epochs included
                self._record(trial, curve)
                flat = self.rule.flat(chance, epoch.epoch, (e.val.loss for e in curve))
                why = "it learned nothing" if flat else "it fell behind"
                trial.set_user_attr("pruned_because", why)
                raise optuna.TrialPruned(f"pruned at epoch {epoch.epoch}: {why}")

        result = lockstep.fit(on_epoch=on_epoch, resume=resume, on_checkpoint=save)
        self._record(trial, result.history)
        if len(result.members) > 1:
            trial.set_user_attr("cv_epoch", result.best_epoch)
            trial.set_user_attr("cv_losses", result.fold_losses())
            trial.set_user_attr("cv_spread", result.spread())
            trial.set_user_attr("lrs", result.lrs[: result.best_epoch])
        best = result.history[result.best_epoch - 1].val
        logger.info(
            "trial %d complete: val loss %.4f, val auc %s (%.0f s)", trial.number,
            best.loss, fmt(best.auc), time.monotonic() - started,
        )  # fmt: skip
        return result.value

    @staticmethod
    def _record(trial: Trial, curve: list[EpochReport]) -> None:
        if curve:
            best = min(curve, key=lambda e: e.val.loss)
            trial.set_user_attr("val_auc", best.val.auc)
            trial.set_user_attr("best_epoch", best.epoch)


def run_worker(storage: RetryingRDBStorage, name: str, options: WorkerOptions) -> WorkerReport:
    """Run trials of study ``name`` until its budget is met (or ``options.max_trials``).

    An error before the first trial (no such study, a store that does not match it, a device
    that does not exist) is raised marked ``permanent``, but for the storage's.
    """
    if options.threads:
        torch.set_num_threads(options.threads)
    with permanent_errors():  # what fails before the first trial fails again after a restart
        settings = load_settings(storage, name)
        device = resolve_device(options.device)
        store = open_study_store(settings, name, options.features)
        checkpoints = _checkpoints_here(settings, options.checkpoints, name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study = optuna.load_study(
                study_name=name, storage=storage, sampler=make_sampler(settings),
                pruner=make_pruner(settings),
            )  # fmt: skip
        name_objective(study)  # a study created before tuner named its objective
        data = StoreTensors.load(store, device)
    worker = f"{socket.gethostname()}:{os.getpid()}"
    objective = TrainingObjective(settings, data, device, checkpoints)
    logger.info(
        "worker %s on %s joined study %s (budget %d)", worker, device, name, settings.budget
    )

    def label(trial: Trial) -> None:
        trial.set_user_attr("worker", worker)
        trial.set_user_attr("device", str(device))

    retries = settings.max_retries

    latest = [settings.budget]

    def budget() -> int:  # re-read under the study lock: `study create` may have raised it
        latest[0] = load_settings(storage, name).budget
        return latest[0]

    with Progress(study, settings.budget, retries, bar=options.progress) as progress:
        report = run_trials(
            study, storage, budget, objective, max_retries=retries,
            poll_seconds=options.poll_seconds, max_trials=options.max_trials, on_trial=label,
            after_trial=(
                (lambda: checkpoints.sweep(study, retries)) if checkpoints is not None else None
            ),
            on_told=lambda: progress.update(latest[0]),
        )  # fmt: skip
    if report.budget is not None:
        logger.info(
            "worker %s stops: %d of %d trials finished",
            worker,
            report.budget.done,
            report.budget.budget,
        )
    return report


class Progress:
    """The study's trials done of its budget and the best so far, after each trial here.

    A bar on a terminal (log lines are printed above it); on anything else (``tuner launch``,
    SLURM or Compose logs) one log line per trial, which ``--quiet`` silences.
    """

    def __init__(self, study: optuna.Study, budget: int, max_retries: int, *, bar: bool) -> None:
        from tqdm import tqdm

        self.study = study
        self.budget = budget
        self.max_retries = max_retries
        self.bar = tqdm(
            total=budget,
            desc=f"study {study.study_name}",
            unit="trial",
            disable=None if bar else True,
        )
        self._redirect: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        if not self.bar.disable:
            from tqdm.contrib.logging import logging_redirect_tqdm

            self._redirect = logging_redirect_tqdm([logging.getLogger("tuner")])

    def __enter__(self) -> Progress:
        self._redirect.__enter__()
        self.update()
        return self

    def __exit__(self, *exc: object) -> None:
        self._redirect.__exit__(None, None, None)
        self.bar.close()

    def update(self, budget: int | None = None) -> None:
        """Redraw, with the study's ``budget`` as the loop last read it (it may have been
        raised)."""
        if budget is not None and budget != self.budget:
            self.budget = budget
            self.bar.total = budget
        trials = self.study.get_trials(deepcopy=False)
        counted = Budget.count(trials, self.budget, max_retries=self.max_retries)
        best_text = describe_best(best_trial(trials))
        if self.bar.disable:
            logger.info(
                "study %s: %d/%d trials done, %d running; %s", self.study.study_name,
                counted.done, self.budget, counted.active, best_text,
            )  # fmt: skip
        else:
            self.bar.n = counted.done
            self.bar.set_postfix_str(best_text, refresh=True)


def _checkpoints_here(
    settings: StudySettings, override: Path | None, name: str
) -> Checkpoints | None:
    """The study's checkpoint folder, made and writable on this machine, before any trial."""
    folder = override or (Path(settings.checkpoints) if settings.checkpoints else None)
    if folder is None:
        return None
    checkpoints = Checkpoints(folder, name)
    make_writable_folder(
        checkpoints.folder, "the checkpoint folder",
        "give this worker a folder it can write (checkpoints, --checkpoints on the command line)",
    )  # fmt: skip
    return checkpoints


def open_study_store(settings: StudySettings, name: str, override: Path | None) -> FeatureStore:
    """The feature store of study ``name`` (at ``override``, else where it was created),
    checked against the checksum the study was created with."""
    path = override or Path(settings.features["path"])
    if override is None and not path.exists():
        raise StudyError(
            f"the feature store of study {name!r}, {str(path)!r}, is not on this machine; if it "
            "moved or is mounted elsewhere, give its path here as features (--features NEWPATH)"
        )
    return FeatureStore.open(
        path,
        checksum=settings.features["checksum"],
        expected_by=f"study {name!r} was created with",
    )
