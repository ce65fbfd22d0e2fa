"""Counting a study's budget in slots, so that retries do not count twice.

A slot (see :mod:`._slots`) is *done* when it finished or gave up, and *active* while its
latest attempt is running or waiting, or failed in a way that is owed a retry. A worker starts
a new slot only while ``done + active < budget``, under the study lock, so the budget is met
exactly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from optuna.trial import FrozenTrial

from tuner.study._settings import DEFAULT_MAX_RETRIES
from tuner.study._slots import group_slots

__all__ = ["Budget", "next_action"]


@dataclass(frozen=True)
class Budget:
    budget: int
    done: int
    active: int
    waiting: int
    gave_up: int = 0

    @classmethod
    def count(
        cls,
        trials: Iterable[FrozenTrial],
        budget: int,
        *,
        max_retries: int = DEFAULT_MAX_RETRIES,
    ) -> Budget:
        slots = group_slots(trials)
        states = [slot.state(max_retries) for slot in slots]
        return cls(
            budget=budget,
            done=sum(slot.done(max_retries) for slot in slots),
            active=sum(slot.active(max_retries) for slot in slots),
            waiting=states.count("waiting"),
            gave_up=states.count("gave up"),
        )

    @property
    def finished(self) -> bool:
        return self.done >= self.budget


def next_action(budget: Budget) -> Literal["run", "wait", "done"]:
    """Run a waiting retry or a new slot, wait for others' running trials, or stop."""
    if budget.waiting or budget.done + budget.active < budget.budget:
        return "run"
    return "done" if budget.finished else "wait"
