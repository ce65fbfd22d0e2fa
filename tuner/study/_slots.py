"""Slots: a study's trials grouped by the configuration they try, and how each slot stands.

Every trial belongs to a slot: its own number, or, for a retry, the number of the trial it
retries (the ``failed_trial`` system attribute; ``retry_history`` lists every attempt before
it). The slot's latest attempt says where it stands:

- running or waiting: the slot is active;
- complete or pruned: finished;
- failed because training failed (a diverging run, out of memory, ...): finished, for the
  reason in its ``fail_reason``;
- failed because its worker died (its heartbeat went stale) or it was interrupted (SIGTERM,
  SIGINT, a SLURM preemption): *retryable*. The slot is owed a retry, and stays active until it
  runs, unless deaths used up the study's ``max_retries``: then the slot *gave up*, and counts
  as finished. Interrupts do not count toward the cap; a slot is retried after every one.

How a trial failed is the ``tuner:failure`` system attribute, written before the trial is
failed, so that a worker killed in between never loses it. Trials failed before tuner recorded
it count by their ``fail_reason``: none (Optuna's stale-trial check failed it) is a death,
``interrupted`` an interrupt, anything else a training failure.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from optuna.trial import FrozenTrial, Trial, TrialState

from tuner.storage import storage_of, trial_id_of

__all__ = [
    "DIED",
    "ERROR",
    "FAILURE_KEY",
    "HISTORY_KEY",
    "INTERRUPTED",
    "RETRY_KEY",
    "Slot",
    "best_trial",
    "failure_of",
    "group_slots",
    "slot_of",
]

RETRY_KEY = "failed_trial"
"""System attribute naming the original trial of a retry (the key Optuna's retries use too)."""
HISTORY_KEY = "retry_history"
"""System attribute listing the numbers of a retry's earlier attempts, oldest first."""
FAILURE_KEY = "tuner:failure"
"""System attribute saying how a failed trial ended: one of the three kinds below."""
DIED, INTERRUPTED, ERROR = "died", "interrupted", "error"
DIED_REASON = "its worker died (no heartbeat)"
"""The reason of a death that recorded none (a trial failed by Optuna's stale-trial check)."""

SlotState = Literal["running", "waiting", "retry due", "finished", "gave up"]


def slot_of(trial: FrozenTrial | Trial) -> int:
    """The slot of a trial: its own number, or the number of the trial it retries."""
    if isinstance(trial, Trial):
        attrs = storage_of(trial.study).get_trial_system_attrs(trial_id_of(trial))
    else:
        attrs = trial.system_attrs
    return int(attrs.get(RETRY_KEY, trial.number))


def failure_of(trial: FrozenTrial) -> str | None:
    """How a failed trial ended (``died``, ``interrupted`` or ``error``); None unless FAIL."""
    if trial.state != TrialState.FAIL:
        return None
    kind = trial.system_attrs.get(FAILURE_KEY)
    if kind in (DIED, INTERRUPTED, ERROR):
        return str(kind)
    reason = trial.user_attrs.get("fail_reason")
    if reason is None:
        return DIED
    return INTERRUPTED if reason == "interrupted" else ERROR


def fail_reason(trial: FrozenTrial) -> str:
    """Why a failed trial failed, in words."""
    return str(trial.user_attrs.get("fail_reason", DIED_REASON))


@dataclass(frozen=True)
class Slot:
    """One slot's attempts, in the order they were made."""

    number: int
    attempts: tuple[FrozenTrial, ...]

    @property
    def latest(self) -> FrozenTrial:
        return self.attempts[-1]

    @property
    def deaths(self) -> int:
        """Attempts whose worker died: what the retry cap counts."""
        return sum(failure_of(t) == DIED for t in self.attempts)

    def state(self, max_retries: int) -> SlotState:
        latest = self.latest
        if latest.state == TrialState.RUNNING:
            return "running"
        if latest.state == TrialState.WAITING:
            return "waiting"
        kind = failure_of(latest)
        if kind is None or kind == ERROR:
            return "finished"
        if kind == DIED and self.deaths > max_retries:
            return "gave up"
        return "retry due"

    def done(self, max_retries: int) -> bool:
        """Finished, or gave up: the slot counts toward the budget and needs no checkpoint."""
        return self.state(max_retries) in ("finished", "gave up")

    def active(self, max_retries: int) -> bool:
        """Running, waiting, or owed a retry: the slot will use the budget and its checkpoint."""
        return not self.done(max_retries)

    def describe(self, max_retries: int) -> str | None:
        """One line for a slot that ended without a result ("slot 2 gave up after ...")."""
        state = self.state(max_retries)
        if state == "gave up":
            return (
                f"slot {self.number} gave up after {len(self.attempts)} attempts: "
                f"{fail_reason(self.latest)}"
            )
        if state == "finished" and self.latest.state == TrialState.FAIL:
            return f"slot {self.number} failed: {fail_reason(self.latest)}"
        return None


def group_slots(trials: Iterable[FrozenTrial]) -> list[Slot]:
    """The slots of ``trials``, by slot number."""
    attempts: dict[int, list[FrozenTrial]] = {}
    for trial in trials:
        attempts.setdefault(slot_of(trial), []).append(trial)
    return [
        Slot(number, tuple(sorted(group, key=lambda t: t.number)))
        for number, group in sorted(attempts.items())
    ]


def best_trial(trials: Iterable[FrozenTrial]) -> FrozenTrial | None:
    """The complete trial with the lowest value (the earliest of equals); None before any.

    The one definition of "the best trial" (export, status, the worker's progress, the
    checkpoint kept): ``study.best_trial`` asks the database again, and among equal values
    its SQL order picks any one.
    """
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    return min(complete, key=lambda t: (t.value, t.number), default=None)
