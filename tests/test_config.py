"""The run config: defaults, validation messages, dotted overrides, the commented template."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tuner.config import (
    RunConfig,
    apply_overrides,
    config_keys,
    default_config_yaml,
    load_config,
    parse_config,
    set_path,
)
from tuner.errors import ConfigError


def test_template_lists_every_key_and_loads_back_as_the_defaults(tmp_path: Path) -> None:
    text = default_config_yaml(tmp_path / "store", checksum="sha256:abc")
    (tmp_path / "c.yaml").write_text(text)
    config = load_config(tmp_path / "c.yaml")
    assert config.data.features == tmp_path / "store"
    assert config.data.checksum == "sha256:abc"
    assert (
        config.model_dump()
        == parse_config(
            {"data": {"features": str(tmp_path / "store"), "checksum": "sha256:abc"}}
        ).model_dump()
    )
    for key in config_keys():
        assert f"{key.rsplit('.', 1)[-1]}:" in text, key
    body = [line for line in text.splitlines() if not line.startswith("#")]
    leaves = [line for line in body if not line.rstrip().endswith(":")]
    assert all("  # " in line for line in leaves)


def test_relative_paths_are_read_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.yaml").write_text("data:\n  features: ../store\n")
    assert load_config(tmp_path / "sub" / "c.yaml").data.features == tmp_path / "sub" / "../store"


def with_data(**sections: object) -> dict[str, object]:
    return {"data": {"features": "s"}, **sections}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (with_data(train={"lrr": 1}), "unknown key 'train.lrr' (known: optimizer"),
        (with_data(train={"lr": -0.1}), "train.lr: Input should be greater than 0, but got -0.1"),
        (with_data(train={"epochs": "many"}), "train.epochs: Input should be a valid integer"),
        (with_data(model={"dropout": 1.0}), "model.dropout: Input should be less than 1"),
        (
            with_data(regularization={"entropy": {"slice": -1}}),
            "regularization.entropy.slice: Input should be greater than or equal to 0",
        ),
        (
            with_data(regularization={"penalty": "lasso"}),
            "regularization.penalty: Input should be 'none', 'entropy' or 'elasticnet', "
            "but got 'lasso'",
        ),
        ({"model": {}}, "missing key 'data'"),
        (
            {"data": {"features": "s", "split": {"fractions": [0.5, 0.5, 0.5]}}},
            "fractions must be positive and sum to 1",
        ),
        ([1, 2], "must be a mapping"),
    ],
)
def test_bad_values_name_the_key(data: object, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(data, source="c.yaml")


def test_malformed_yaml_says_where(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("data:\n  features: [unclosed\n")
    with pytest.raises(ConfigError, match=r"is not valid YAML at line \d+"):
        load_config(tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match="not found; write one with 'tuner config init'"):
        load_config(tmp_path / "missing.yaml")


def test_dotted_overrides() -> None:
    base = parse_config({"data": {"features": "s"}})
    changed = apply_overrides(
        base, {"train.lr": 0.01, "regularization.entropy.slice": 0.3}, source="trial"
    )
    assert changed.train.lr == 0.01
    assert changed.regularization.entropy.slice == 0.3
    assert base.train.lr != 0.01
    with pytest.raises(ConfigError, match=r"'train\.nope' is not a config key"):
        apply_overrides(base, {"train.nope": 1}, source="trial")
    with pytest.raises(ConfigError, match=r"model\.dropout"):
        apply_overrides(base, {"model.dropout": 2.0}, source="trial")


def test_set_path_validates_on_the_typed_config() -> None:
    config = parse_config({"data": {"features": "s"}})
    set_path(config, "train.lr", 0.01, source="trial")
    set_path(config, "data.split.fractions", [0.5, 0.25, 0.25], source="trial")
    assert config.train.lr == 0.01
    assert config.data.split.fractions == (0.5, 0.25, 0.25)
    with pytest.raises(ConfigError, match=r"trial: data\.split: fractions must .*0\.5\)$"):
        set_path(config, "data.split.fractions", [0.5, 0.5, 0.5], source="trial")
    assert config.data.split.fractions == (0.5, 0.25, 0.25)
    with pytest.raises(ConfigError, match=r"trial: 'train\.lr\.x' is not a config key"):
        set_path(config, "train.lr.x", 1, source="trial")
    with pytest.raises(ConfigError, match=r"trial: 'nope\.lr' is not a config key"):
        set_path(config, "nope.lr", 1, source="trial")
    with pytest.raises(ConfigError, match=r"trial: train\.lr: Input should be greater than 0"):
        set_path(config, "train.lr", -1.0, source="trial")
    assert config.train.lr == 0.01, "a refused value leaves the config as it was"


def test_to_dict_is_plain_yaml() -> None:
    config = RunConfig.model_validate({"data": {"features": "/x"}})
    assert yaml.safe_load(yaml.safe_dump(config.to_dict())) == config.to_dict()
