"""Pruning that stops what learns nothing, in front of Optuna's own pruners.

A median pruner compares a trial with the others at the same epoch. When most trials sit at
chance (a learning rate too low to learn anything on a hard cohort), the median of flat curves
is flat and a flat trial is never behind it: it runs to the end. :class:`ChancePruner` asks a
question that does not depend on the other trials: after a warm-up, has the trial's best
validation loss gone clearly below the loss of the best constant prediction (``chance_loss``,
which the objective stores on the trial before its first report)? If not, it is pruned;
otherwise the wrapped pruner decides as usual.

The warm-up and the margin are derived from the config's epochs (:func:`chance_rule`):
learning trials on small hard cohorts often spike before their first dip, so the warm-up is a
quarter of the epochs, at least 5.

Optuna's samplers recognise a Hyperband pruner by its class (they sample within its brackets),
so Hyperband gets the rule by subclassing (:class:`ChanceHyperbandPruner`) rather than by
wrapping.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import optuna
from optuna.pruners import BasePruner
from optuna.trial import FrozenTrial

__all__ = [
    "CHANCE_KEY",
    "ChanceHyperbandPruner",
    "ChancePruner",
    "ChanceRule",
    "chance_rule",
]

CHANCE_KEY = "chance_loss"
"""User attribute of a trial: the validation loss of the best constant prediction."""


@dataclass(frozen=True)
class ChanceRule:
    """Prune after ``warmup`` epochs unless the best loss is below ``(1 - margin) * chance``."""

    warmup: int
    margin: float
    epochs: int | None = None  # the trials' epochs: the last one is never pruned

    def learned_nothing(self, trial: FrozenTrial) -> bool:
        """Whether ``trial``, past the warm-up, never went clearly below its chance loss."""
        chance = trial.user_attrs.get(CHANCE_KEY)
        step = trial.last_step
        if chance is None or step is None:
            return False
        return self.flat(float(chance), step, trial.intermediate_values.values())

    def flat(self, chance: float, epoch: int, losses: Iterable[float]) -> bool:
        """Whether a curve at ``epoch`` (``losses`` so far), past the warm-up, never went
        clearly below ``chance``."""
        if epoch < self.warmup or (self.epochs is not None and epoch >= self.epochs):
            return False
        finite = [v for v in losses if math.isfinite(v)]
        return not finite or min(finite) > (1 - self.margin) * chance

    def describe(self) -> str:
        return (
            f"pruned when the best validation loss is not {self.margin:.0%} below chance "
            f"after {self.warmup} epochs"
        )


def chance_rule(epochs: int) -> ChanceRule:
    """The rule for trials of ``epochs`` epochs: a warm-up of a quarter of them (at least 5)
    and a margin of 5 % of the chance loss (0.035 for two classes). Trials too short for a
    warm-up before their last epoch are never pruned by it: pruning at the end saves nothing,
    and a study whose trials are all pruned has nothing to export."""
    return ChanceRule(warmup=max(5, math.ceil(epochs / 4)), margin=0.05, epochs=epochs)


class ChancePruner(BasePruner):
    """Prune a trial that learned nothing (see :class:`ChanceRule`); else ask ``wrapped``."""

    def __init__(self, rule: ChanceRule, wrapped: BasePruner | None = None) -> None:
        self.rule = rule
        self.wrapped = wrapped if wrapped is not None else optuna.pruners.NopPruner()

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        return self.rule.learned_nothing(trial) or self.wrapped.prune(study, trial)


class ChanceHyperbandPruner(optuna.pruners.HyperbandPruner):
    """Optuna's Hyperband with the chance rule in front (a subclass, so samplers see brackets)."""

    def __init__(self, rule: ChanceRule, **hyperband: int | str) -> None:
        super().__init__(**hyperband)  # type: ignore[arg-type]
        self.rule = rule

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        return self.rule.learned_nothing(trial) or super().prune(study, trial)
