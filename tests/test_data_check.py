"""``tuner.data.check_dataset`` and ``split_dataset``: what ``tuner data check|split`` call."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers import Demo
from tuner.data import check_dataset, split_dataset
from tuner.errors import DataError


def test_a_good_dataset_checks_clean_and_renders_its_counts(demo: Demo) -> None:
    result = check_dataset(demo.patches, demo.labels)
    assert result.error is None
    assert result.index.fatal_problems == []
    text = result.render(per_case=True)
    assert f"{len(result.index.cases)} cases" in text


def test_a_class_too_small_for_the_folds_is_the_error(demo: Demo) -> None:
    result = check_dataset(demo.patches, demo.labels, folds=50, images=False)
    assert result.error is not None
    assert str(result.error).startswith("the dataset cannot be used for training: ")
    assert "50 folds" in str(result.error)


def test_split_dataset_keeps_every_case_once(demo: Demo) -> None:
    splits = split_dataset(demo.patches, demo.labels, seed=3)
    (part,) = splits.splits
    cases = [c for group in part.parts().values() for c in group]
    assert sorted(cases) == sorted(check_dataset(demo.patches, demo.labels).index.cases)
    assert len(cases) == len(set(cases))


def test_split_dataset_refuses_an_unusable_dataset(demo: Demo, tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    shutil.copy(demo.labels, labels)
    empty = tmp_path / "patches"
    empty.mkdir()
    with pytest.raises(DataError):
        split_dataset(empty, labels)
