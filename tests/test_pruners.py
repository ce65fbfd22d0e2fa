"""The chance rule: a trial that never goes clearly below chance is pruned after its warm-up."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from tuner.study._pruners import (
    CHANCE_KEY,
    ChanceHyperbandPruner,
    ChancePruner,
    ChanceRule,
    chance_rule,
)


def running(values: list[float], chance: float | None = 0.6931) -> optuna.trial.FrozenTrial:
    return create_trial(
        state=TrialState.RUNNING,
        intermediate_values=dict(enumerate(values, start=1)),
        user_attrs={} if chance is None else {CHANCE_KEY: chance},
    )


FLAT = [0.70, 0.69, 0.695, 0.693, 0.69, 0.692, 0.694, 0.691, 0.69, 0.693, 0.69, 0.69]
LEARNING = [0.72, 0.80, 0.75, 0.70, 0.69, 0.66, 0.60, 0.55, 0.52, 0.50, 0.49, 0.48]


def test_the_rule_scales_with_the_epochs_and_spares_the_last_one() -> None:
    assert chance_rule(40) == ChanceRule(warmup=10, margin=0.05, epochs=40)
    assert chance_rule(8).warmup == 5
    assert not chance_rule(3).flat(0.69, 3, [0.7, 0.7, 0.7]), "the last epoch is never pruned"
    assert not chance_rule(12).flat(0.69, 12, FLAT)
    assert chance_rule(12).flat(0.69, 11, FLAT[:11])


def test_a_flat_trial_is_pruned_after_the_warmup_and_a_learning_one_kept() -> None:
    rule = ChanceRule(warmup=10, margin=0.05)
    assert not rule.learned_nothing(running(FLAT[:9])), "still warming up"
    assert rule.learned_nothing(running(FLAT[:10]))
    # a spike before the first dip does not count against it, nor does a dip after warm-up
    assert not rule.learned_nothing(running(LEARNING[:10]))
    assert not rule.learned_nothing(running(FLAT[:10], chance=None)), "no chance loss: no rule"


def test_the_pruner_asks_the_wrapped_one_only_for_trials_that_learn() -> None:
    study = optuna.create_study()

    class Always(optuna.pruners.BasePruner):
        calls = 0

        def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
            Always.calls += 1
            return False

    pruner = ChancePruner(ChanceRule(warmup=10, margin=0.05), Always())
    assert pruner.prune(study, running(FLAT[:11]))
    assert Always.calls == 0
    assert not pruner.prune(study, running(LEARNING))
    assert Always.calls == 1


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_hyperband_keeps_its_class_so_samplers_see_its_brackets() -> None:
    pruner = ChanceHyperbandPruner(chance_rule(12), min_resource=1, max_resource=12)
    assert isinstance(pruner, optuna.pruners.HyperbandPruner)
    study = optuna.create_study(pruner=pruner)
    study.add_trial(
        create_trial(state=TrialState.COMPLETE, value=0.3, intermediate_values={1: 0.5})
    )
    assert pruner.prune(study, running(FLAT[:11]))
