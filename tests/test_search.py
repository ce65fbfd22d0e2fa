"""Search spaces: parsing, validation against the config, conditional sampling."""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pytest
import yaml

from tuner.config import parse_config
from tuner.errors import ConfigError
from tuner.search import (
    DEFAULT_SPACE,
    QUICK_SPACE,
    CategoricalParam,
    FloatParam,
    IntParam,
    SearchSpace,
    load_space,
)

BASE = parse_config({"data": {"features": "store"}})
SPACES = Path(__file__).resolve().parents[1] / "search_spaces"


@pytest.mark.parametrize("path", sorted(SPACES.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_spaces_are_valid(path: Path) -> None:
    space = load_space(path)
    space.validate(BASE)
    assert space.params


def test_default_space_covers_optimiser_dropout_and_penalties() -> None:
    space = load_space()
    keys = [p.key for p in space.params]
    assert keys[:4] == [
        "train.lr",
        "train.weight_decay",
        "model.dropout",
        "regularization.penalty",
    ]
    lr = space.params[0]
    assert lr.log
    assert {p.key for p in space.params if p.when} == {
        k for k in keys if k.startswith("regularization.") and k != "regularization.penalty"
    }


def test_search_spaces_folder_holds_the_packaged_spaces() -> None:
    """search_spaces/ is what users read and copy; the package ships tuner/resources."""
    assert (SPACES / "default.yaml").read_text() == DEFAULT_SPACE.read_text()
    assert (SPACES / "quick.yaml").read_text() == QUICK_SPACE.read_text()


def test_conditional_parameters_follow_their_penalty() -> None:
    space = load_space()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(40):
        trial = study.ask()
        sampled = space.sample(trial)
        penalty = sampled["regularization.penalty"]
        seen.add(penalty)
        conditional = {
            k for k in sampled if k.startswith("regularization.") and k != "regularization.penalty"
        }
        if penalty == "none":
            assert conditional == set()
        elif penalty == "entropy":
            assert conditional == {
                f"regularization.entropy.{lvl}" for lvl in ("patch", "slice", "stain")
            }
        else:
            assert len(conditional) == 6
            assert all(k.startswith("regularization.elasticnet.") for k in conditional)
        config = BASE
        from tuner.config import apply_overrides

        config = apply_overrides(config, sampled, source="test")
        assert config.regularization.penalty == penalty
        assert 1e-4 <= config.train.lr <= 2e-3
        study.tell(trial, 0.0)
    assert seen == {"none", "entropy", "elasticnet"}


def test_int_step_and_categorical_sampling() -> None:
    space = SearchSpace.from_dict(
        {
            "train.batch_cases": {"type": "int", "low": 2, "high": 16, "log": True},
            "model.dropout": {"type": "float", "low": 0.0, "high": 0.5, "step": 0.1},
            "model.gated": {"type": "categorical", "choices": [False, True]},
        }
    )
    space.validate(BASE)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(10):
        trial = study.ask()
        sampled = space.sample(trial)
        assert isinstance(sampled["train.batch_cases"], int)
        assert round(sampled["model.dropout"] * 10, 6) == round(sampled["model.dropout"] * 10)
        study.tell(trial, 0.0)


def lr(**fields: object) -> dict[str, object]:
    return {"train.lr": {"type": "float", **fields}}


ENTROPY = {"regularization.penalty": "entropy"}
BAD_SPACES = [
    ({"train.lrr": {"type": "float", "low": 0.1, "high": 1}}, "'train.lrr' is not a config key"),
    ({"lr": {"type": "float", "low": 0.1, "high": 1}},
     "'lr' is not a config key (did you mean 'train.lr'?)"),
    (lr(low=1, high=0.1), "low must not exceed high, but got low=1 > high=0.1"),
    (lr(low=0, high=0.1, log=True), "a log range needs low > 0, but got low=0"),
    (lr(low=1e-4, high=0.1, when=ENTROPY),
     "'when' refers to 'regularization.penalty', which is not a parameter defined above it"),
    ({"regularization.penalty": {"type": "categorical", "choices": ["none", "lasso"]}},
     "regularization.penalty choices ['lasso'] are not allowed by the config"),
    ({"train.epochs": {"type": "float", "low": 1, "high": 10}},
     "train.epochs is an integer in the config; use type int"),
    ({"train.optimizer": {"type": "float", "low": 1, "high": 10}},
     "train.optimizer is not numeric in the config"),
    ({"model.dropout": {"type": "float", "low": 0.0, "high": 1.0}},
     "model.dropout=1.0 gives: model.dropout: Input should be less than 1"),
    (lr(type="normal", low=0, high=1), "type must be float, int or categorical"),
    (lr(low="small", high=1), "low must be a number"),
    (lr(low=0.1, high=1, scale=2), "unknown field(s) ['scale']"),
    ({}, "must be a non-empty mapping"),
]  # fmt: skip


@pytest.mark.parametrize(("data", "message"), BAD_SPACES, ids=[m for _, m in BAD_SPACES])
def test_bad_spaces_are_refused_before_any_trial(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        SearchSpace.from_dict(data, source="space").validate(BASE, source="space")


def test_space_round_trips_through_a_study(tmp_path: Path) -> None:
    space = load_space()
    again = SearchSpace.from_dict(yaml.safe_load(yaml.safe_dump(space.to_dict(), sort_keys=False)))
    assert again == space
    (tmp_path / "bad.yaml").write_text("train.lr: {type: float, low: [\n")
    with pytest.raises(ConfigError, match="is not valid YAML at line"):
        load_space(tmp_path / "bad.yaml")


def test_each_param_knows_its_optuna_distribution() -> None:
    space = SearchSpace.from_dict(
        {
            "train.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
            "model.dropout": {"type": "float", "low": 0.0, "high": 0.5, "step": 0.1},
            "train.batch_cases": {"type": "int", "low": 2, "high": 16, "step": 2},
            "regularization.penalty": {"type": "categorical", "choices": ["none", "entropy"]},
        }
    )
    lr, dropout, batch, penalty = space.params
    assert isinstance(lr, FloatParam)
    assert isinstance(dropout, FloatParam)
    assert isinstance(batch, IntParam)
    assert isinstance(penalty, CategoricalParam)
    assert lr.to_distribution() == optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)
    assert dropout.to_distribution() == optuna.distributions.FloatDistribution(0, 0.5, step=0.1)
    assert batch.to_distribution() == optuna.distributions.IntDistribution(2, 16, step=2)
    assert penalty.to_distribution() == optuna.distributions.CategoricalDistribution(
        ("none", "entropy")
    )
    study = optuna.create_study()
    trial = study.ask()
    space.sample(trial)
    frozen = study.trials[0]
    assert frozen.distributions == space.distributions()


def test_param_types_are_read_from_the_config_fields() -> None:
    """Optional numbers count as numbers: int | None wants int, float | None takes float."""
    ok = {
        "train.grad_clip": {"type": "float", "low": 0.5, "high": 5.0},
        "data.per_slice_cap": {"type": "int", "low": 8, "high": 64},
        "train.early_stopping": {"type": "int", "low": 3, "high": 10},
    }
    SearchSpace.from_dict(ok).validate(BASE)
    with pytest.raises(ConfigError, match=r"data\.per_slice_cap is an integer in the config"):
        SearchSpace.from_dict(
            {"data.per_slice_cap": {"type": "float", "low": 8, "high": 64}}
        ).validate(BASE)
    with pytest.raises(ConfigError, match=r"data\.features is not numeric in the config"):
        SearchSpace.from_dict({"data.features": {"type": "int", "low": 1, "high": 2}}).validate(
            BASE
        )


MORE_BAD_SPACES = [
    ({"train.epochs": {"type": "int", "low": 1.5, "high": 4}},
     "an int range needs whole bounds, but got 1.5..4"),
    (lr(low=0.1, high=1, step=-1), "step must be a positive number, but got -1"),
    (lr(low=0.1, high=1, step=0.1, log=True), "step and log cannot be combined"),
    ({"regularization.penalty": {"type": "categorical", "choices": []}},
     "a categorical needs a non-empty list of 'choices'"),
    ({"regularization.penalty": {"type": "categorical", "choices": ["none", "none"]}},
     "choices ['none', 'none'] repeat a value"),
    ({"train.lr": 0.1}, "train.lr must be a mapping with 'type' and its range or choices"),
    (lr(low=True, high=1), "low must be a number, but got True"),
]  # fmt: skip


@pytest.mark.parametrize(("data", "message"), MORE_BAD_SPACES, ids=[m for _, m in MORE_BAD_SPACES])
def test_bad_params_are_one_line_naming_the_key(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        SearchSpace.from_dict(data, source="space").validate(BASE, source="space")
    assert str(info.value).startswith(f"space: {next(iter(data))}")
    assert "\n" not in str(info.value)
