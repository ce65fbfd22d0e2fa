"""Counting a study's budget in slots, so that retries do not count twice.

Every trial belongs to a slot: its own number, or, for a retry of a dead or interrupted trial,
the number of the trial it retries (Optuna's ``failed_trial`` system attribute). A slot is
*done* when its latest attempt finished (complete, pruned or failed for good) and *active*
while its latest attempt is running or waiting. A worker starts a new slot only while
``done + active < budget``, under the study lock, so the budget is met exactly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from optuna.trial import FrozenTrial, Trial, TrialState

__all__ = ["Budget", "next_action", "slot_of"]

RETRY_KEY = "failed_trial"
"""System attribute naming the original trial of a retry (Optuna's own key)."""


def slot_of(trial: FrozenTrial | Trial) -> int:
    """The slot of a trial: its own number, or the number of the trial it retries."""
    if isinstance(trial, Trial):
        attrs = trial.study._storage.get_trial_system_attrs(trial._trial_id)
    else:
        attrs = trial.system_attrs
    return int(attrs.get(RETRY_KEY, trial.number))


@dataclass(frozen=True)
class Budget:
    budget: int
    done: int
    active: int
    waiting: int

    @classmethod
    def count(cls, trials: Iterable[FrozenTrial], budget: int) -> Budget:
        latest: dict[int, FrozenTrial] = {}
        for trial in trials:
            slot = slot_of(trial)
            if slot not in latest or trial.number > latest[slot].number:
                latest[slot] = trial
        states = [t.state for t in latest.values()]
        return cls(
            budget=budget,
            done=sum(s.is_finished() for s in states),
            active=sum(s in (TrialState.RUNNING, TrialState.WAITING) for s in states),
            waiting=sum(s == TrialState.WAITING for s in states),
        )

    @property
    def finished(self) -> bool:
        return self.done >= self.budget


def next_action(budget: Budget) -> Literal["run", "wait", "done"]:
    """Run a waiting retry or a new slot, wait for others' running trials, or stop."""
    if budget.waiting or budget.done + budget.active < budget.budget:
        return "run"
    return "done" if budget.finished else "wait"
