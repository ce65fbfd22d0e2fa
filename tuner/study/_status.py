"""``tuner status``: trials by state, the best so far, who runs what, how fast, and every slot
that ended without a result (gave up after its retries, or failed for a reason it names)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from tuner.study._budget import Budget
from tuner.study._settings import StudySettings, load_settings
from tuner.study._slots import best_trial, group_slots

__all__ = ["MIN_RATE_SPAN", "StudyStatus", "describe_best", "study_status"]

MIN_RATE_SPAN = timedelta(minutes=10)
"""The shortest span over which ``tuner status`` quotes trials per hour (shorter: the count)."""


@dataclass
class StudyStatus:
    name: str
    settings: StudySettings
    budget: Budget
    states: dict[str, int]
    best: FrozenTrial | None
    running: list[FrozenTrial]
    finished: int  # trials that ended (complete, pruned or failed)
    span: timedelta | None  # from the first start to the last end
    per_hour_recent: int
    now: datetime
    ended: list[str] = field(default_factory=list)  # one line per slot without a result

    def summary(self) -> str:
        """One line: finished trials of the budget, trials by state, the best so far."""
        return f"{self._counts()}; {describe_best(self.best)}"

    def _counts(self) -> str:
        done, budget = self.budget.done, self.budget.budget
        states = ", ".join(f"{k.lower()} {v}" for k, v in sorted(self.states.items())) or "none"
        return f"study {self.name}: {done} of {budget} trials finished; trials by state: {states}"

    def render(self) -> str:
        lines = [
            self._counts(),
            f"sampler {self.settings.sampler}, pruner {self.settings.pruner}, "
            f"{self.settings.epochs} epochs at most, {self.settings.max_retries} retries after a "
            f"worker dies, store {self.settings.features['path']}",
        ]
        if self.best is not None:
            auc = self.best.user_attrs.get("val_auc")
            lines.append(
                f"best: trial {self.best.number}, val loss {self.best.value:.4f}"
                + (f", val auc {auc:.3f}" if isinstance(auc, float) else "")
            )
            lines += [f"  {k}: {_short(v)}" for k, v in self.best.params.items()]
        else:
            lines.append("best: no complete trial yet")
        if self.running:
            lines.append("running:")
            for t in self.running:
                age = self.now - t.datetime_start if t.datetime_start else timedelta(0)
                epoch = max(t.intermediate_values, default=0)
                lines.append(
                    f"  trial {t.number:<5} {t.user_attrs.get('worker', '?'):<24} "
                    f"{t.user_attrs.get('device', '?'):<8} epoch {epoch:<4} for {_age(age)}"
                )
        if self.span is not None:
            lines.append(f"throughput: {self.throughput()}")
        if self.ended:
            lines.append("ended without a result:")
            lines += [f"  {line}" for line in self.ended]
        return "\n".join(lines)

    @property
    def per_hour(self) -> float | None:
        """Finished trials per hour, once they span :data:`MIN_RATE_SPAN` (else None)."""
        if self.span is None or self.span < MIN_RATE_SPAN:
            return None
        return self.finished / (self.span.total_seconds() / 3600)

    def throughput(self) -> str:
        """The rate over a span long enough to mean it, else the count and the span."""
        if self.span is None:
            return "no complete trial yet"
        if self.per_hour is None:
            trials = "trial" if self.finished == 1 else "trials"
            return f"{self.finished} finished {trials} in {_age(self.span)}"
        return (
            f"{self.per_hour:.1f} finished trials per hour over {_age(self.span)} "
            f"({self.per_hour_recent} in the last hour)"
        )


def study_status(storage: BaseStorage, name: str) -> StudyStatus:
    settings = load_settings(storage, name)
    study = optuna.load_study(study_name=name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state.is_finished() and t.datetime_complete]
    now = datetime.now()
    span = None
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in finished if t.datetime_complete]
    if ends and starts:
        span = max(ends) - min(starts)
    recent = sum(
        1
        for t in finished
        if t.datetime_complete and now - t.datetime_complete < timedelta(hours=1)
    )
    slots = group_slots(trials)
    return StudyStatus(
        name=name,
        settings=settings,
        budget=Budget.count(trials, settings.budget, max_retries=settings.max_retries),
        states=dict(Counter(t.state.name for t in trials)),
        best=best_trial(trials),
        running=[t for t in trials if t.state == TrialState.RUNNING],
        finished=len(finished),
        span=span,
        per_hour_recent=recent,
        now=now,
        ended=[
            line for slot in slots if (line := slot.describe(settings.max_retries)) is not None
        ],
    )


def describe_best(trial: FrozenTrial | None) -> str:
    """``best val loss 0.5123 (trial 7)``, or that there is none yet."""
    if trial is None:
        return "no complete trial yet"
    return f"best val loss {trial.value:.4f} (trial {trial.number})"


def _short(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _age(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
