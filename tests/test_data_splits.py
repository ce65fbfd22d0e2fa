"""Case-level splits: stratified, seeded, no leakage, folds that cover every case once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tuner.data import load_splits, make_splits
from tuner.errors import DataError


def labels_of(n_neg: int, n_pos: int) -> dict[str, int]:
    labels = {f"n{i:03d}": 0 for i in range(n_neg)}
    labels.update({f"p{i:03d}": 1 for i in range(n_pos)})
    return labels


def test_holdout_is_60_20_20_and_stratified() -> None:
    labels = labels_of(50, 50)
    (split,) = make_splits(labels, seed=1).splits
    assert (len(split.train), len(split.val), len(split.test)) == (60, 20, 20)
    for part in (split.train, split.val, split.test):
        counts = Counter(labels[c] for c in part)
        assert counts[0] == counts[1]


def test_no_case_in_two_splits_and_none_lost() -> None:
    labels = labels_of(23, 11)
    (split,) = make_splits(labels, seed=3).splits
    parts = [set(split.train), set(split.val), set(split.test)]
    assert set.union(*parts) == set(labels)
    assert sum(len(p) for p in parts) == len(labels)


def test_small_minority_class_reaches_every_part() -> None:
    labels = labels_of(27, 3)
    for seed in range(20):
        (split,) = make_splits(labels, seed=seed).splits
        for part in (split.train, split.val, split.test):
            assert {labels[c] for c in part} == {0, 1}


def test_same_seed_same_split_any_order() -> None:
    labels = labels_of(20, 14)
    shuffled = dict(reversed(list(labels.items())))
    assert make_splits(labels, seed=5) == make_splits(shuffled, seed=5)
    assert make_splits(labels, seed=5) != make_splits(labels, seed=6)


def test_kfold_tests_every_case_exactly_once() -> None:
    labels = labels_of(21, 9)
    splits = make_splits(labels, seed=0, folds=5)
    assert splits.scheme == "kfold"
    assert len(splits.splits) == 5
    tested = Counter(c for s in splits.splits for c in s.test)
    assert set(tested) == set(labels)
    assert set(tested.values()) == {1}
    for s in splits.splits:
        assert (
            not set(s.train) & set(s.val) | set(s.train) & set(s.test) | set(s.val) & set(s.test)
        )
        assert len(s.train) + len(s.val) + len(s.test) == len(labels)
        assert {labels[c] for c in s.test} == {0, 1}


def test_balance_by_patch_count_spreads_large_cases() -> None:
    labels = labels_of(40, 40)
    counts = {case: (5000 if i % 4 == 0 else 50) for i, case in enumerate(sorted(labels))}
    (split,) = make_splits(labels, seed=2, patch_counts=counts).splits
    large = {c for c, n in counts.items() if n == 5000}
    share = {name: len(large & set(part)) / len(part) for name, part in split.parts().items()}
    assert all(abs(v - 0.25) <= 0.1 for v in share.values()), share


def test_too_few_cases_per_class_is_refused() -> None:
    with pytest.raises(DataError, match="class '1' has 2 case"):
        make_splits(labels_of(10, 2))
    with pytest.raises(DataError, match="needs at least 5 per class"):
        make_splits(labels_of(10, 4), folds=5)
    with pytest.raises(DataError, match="class 'high_grade'"):
        make_splits(labels_of(10, 2), class_names=("benign", "high_grade"))


def test_saved_and_loaded_splits_are_equal(tmp_path: Path) -> None:
    splits = make_splits(labels_of(12, 12), seed=4, folds=3)
    splits.save(tmp_path / "splits.json")
    assert load_splits(tmp_path / "splits.json") == splits


def test_every_part_keeps_a_case_of_each_class_with_skewed_fractions() -> None:
    labels = labels_of(4, 4)
    (split,) = make_splits(labels, fractions=(0.7, 0.25, 0.05)).splits
    for part in split.parts().values():
        assert {labels[c] for c in part} == {0, 1}
