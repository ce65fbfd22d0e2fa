"""Cross-validation in lockstep: the K folds (times R seeds) of a trial train epoch by epoch.

A trial of a cross-validated study trains one model per member (a fold's cases and a seed),
each a :class:`~tuner.training.TrainingRun` with its own generators, optimiser and data
order, stepped in turn in one process. Everything that decides on validation acts on the
**mean curve**, the members' mean validation loss after each epoch: the value handed to
``on_epoch`` (so a tuning objective reports it and every Optuna pruner works unchanged), the
plateau scheduler (every member steps on the mean, so all share one learning-rate schedule)
and early stopping (all members train the same epochs). The result's value is the mean at the
**common best epoch**, the minimum of the mean curve; each member's own best would be
optimistic.

The members differ only in weights and training cases and share the batching code, so they can
later be fused into one batched model on a GPU (stacked weights), without changing this API.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tuner.data import Splits
from tuner.training._metrics import EpochCallback, EpochReport, Metrics, chance_loss
from tuner.training._state import TrainState

if TYPE_CHECKING:  # the trainer drives one run through a lockstep of one member
    from tuner.training._trainer import Trainer, TrainingRun

__all__ = ["Lockstep", "LockstepResult", "Member", "members_of"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Member:
    """One model of a cross-validated trial: fold ``fold``'s cases, trained with ``seed``."""

    fold: int
    repeat: int
    train: tuple[str, ...]
    val: tuple[str, ...]
    seed: int


def members_of(splits: Splits, *, repeats: int = 1, seed: int = 0) -> list[Member]:
    """Every fold of ``splits`` with the seeds ``seed``, ``seed + 1``, ... (``repeats``)."""
    return [
        Member(fold, repeat, split.train, split.val, seed + repeat)
        for fold, split in enumerate(splits.splits)
        for repeat in range(repeats)
    ]


@dataclass
class LockstepResult:
    """The mean curve (``history``: each epoch's mean report) and every member's run."""

    members: list[Member]
    runs: list[TrainingRun]
    history: list[EpochReport]
    best_epoch: int
    stopped_by: str
    seconds: float

    @property
    def value(self) -> float:
        """The mean validation loss at the common best epoch."""
        return self.history[self.best_epoch - 1].val.loss

    def fold_losses(self, epoch: int | None = None) -> list[float]:
        """Each fold's validation loss at ``epoch`` (default: the best), mean over repeats."""
        epoch = epoch or self.best_epoch
        by_fold: dict[int, list[float]] = {}
        for member, run in zip(self.members, self.runs, strict=True):
            by_fold.setdefault(member.fold, []).append(run.history[epoch - 1].val.loss)
        return [statistics.fmean(by_fold[fold]) for fold in sorted(by_fold)]

    def spread(self) -> float:
        """The standard deviation of :meth:`fold_losses` (0 for one fold)."""
        losses = self.fold_losses()
        return statistics.stdev(losses) if len(losses) > 1 else 0.0

    @property
    def lrs(self) -> list[float]:
        """The common learning rate of each epoch (every member has the same)."""
        return [e.lr for e in self.history]

    @property
    def member_epochs(self) -> int:
        return sum(run.epoch for run in self.runs)


class Lockstep:
    """Train ``members`` of ``trainer``'s config in lockstep; decide on their mean curve."""

    def __init__(
        self, trainer: Trainer, members: Sequence[Member], *, epochs: int | None = None
    ) -> None:
        if not members:
            raise ValueError("a lockstep needs at least one member")
        self.trainer = trainer
        self.members = list(members)
        self.runs = [
            trainer.start(m.train, m.val, epochs=epochs, seed=m.seed) for m in self.members
        ]
        self.history: list[EpochReport] = []
        """The mean curve so far, resumed epochs included (read it from ``on_epoch``)."""

    def chance_loss(self) -> float:
        """The members' mean validation loss of the best constant prediction (what a model
        that learned nothing scores; see :func:`~tuner.training.chance_loss`)."""
        store = self.trainer.data.store
        return statistics.fmean(
            chance_loss(
                np.array([store.case(c).class_index for c in member.val]),
                run.weights.cpu().numpy(),
            )
            for member, run in zip(self.members, self.runs, strict=True)
        )

    def fit(
        self,
        *,
        on_epoch: EpochCallback | None = None,
        resume: Sequence[TrainState] | None = None,
        on_checkpoint: Callable[[list[TrainState]], None] | None = None,
    ) -> LockstepResult:
        """Train every member to the end (or early stopping on the mean curve).

        ``resume``: the members' states after an epoch (from ``on_checkpoint``, which receives
        them after every epoch that training goes on from).
        """
        started = time.perf_counter()
        runs, t = self.runs, self.trainer.config.train
        history = self.history
        if resume is not None:
            if len(resume) != len(runs):
                raise ValueError(f"{len(resume)} saved states for {len(runs)} members")
            for run, state in zip(runs, resume, strict=True):
                run.restore(state)
            history[:] = [
                _mean_report([run.history[e] for run in runs]) for e in range(runs[0].epoch)
            ]
            logger.info("resuming %d member(s) after epoch %d", len(runs), len(history))
        validates = runs[0].validates
        stopped_by = "epochs"
        while len(history) < runs[0].epochs:
            mean = _mean_report([run.train_epoch() for run in runs])
            history.append(mean)
            if on_epoch is not None:
                on_epoch(mean)
            for run in runs:
                run.step_scheduler(mean.val.loss)
            if validates and t.early_stopping is not None:
                stale = len(history) - max(_best_epoch(history, True), t.early_stopping_warmup)
                if stale >= t.early_stopping:  # counted from the warm-up at the earliest
                    stopped_by = "early stopping"
                    break
            if on_checkpoint is not None and len(history) < runs[0].epochs:
                on_checkpoint([run.state() for run in runs])
        return LockstepResult(
            self.members, runs, history, _best_epoch(history, validates), stopped_by,
            time.perf_counter() - started,
        )  # fmt: skip


def _best_epoch(history: list[EpochReport], validates: bool) -> int:
    """The epoch (from 1) of the lowest mean validation loss; the last without validation."""
    if not validates:
        return len(history)
    return min(history, key=lambda e: e.val.loss).epoch


def _mean_report(reports: list[EpochReport]) -> EpochReport:
    """One epoch of every member as one report: means of the losses and metrics."""
    if len(reports) == 1:
        return reports[0]
    vals = [r.val for r in reports]
    aucs = [v.auc for v in vals]
    val = Metrics(
        loss=statistics.fmean(v.loss for v in vals),
        auc=None if None in aucs else statistics.fmean(a for a in aucs if a is not None),
        balanced_accuracy=statistics.fmean(v.balanced_accuracy for v in vals),
        accuracy=statistics.fmean(v.accuracy for v in vals),
        n_cases=sum(v.n_cases for v in vals),
    )
    return EpochReport(
        epoch=reports[0].epoch,
        train_loss=statistics.fmean(r.train_loss for r in reports),
        train_penalty=statistics.fmean(r.train_penalty for r in reports),
        val=val,
        lr=reports[0].lr,
        seconds=sum(r.seconds for r in reports),
    )
