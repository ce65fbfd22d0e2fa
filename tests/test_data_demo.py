"""The demo dataset: real layout, deterministic, lesions only in high-grade cases."""

from __future__ import annotations

import csv
import hashlib
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers import Demo, make_demo
from tuner.data import build_index, write_demo_dataset
from tuner.errors import DataError


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def test_demo_is_deterministic_per_seed(tmp_path: Path) -> None:
    a = make_demo(tmp_path / "a", seed=3)
    b = make_demo(tmp_path / "b", seed=3)
    c = make_demo(tmp_path / "c", seed=4)
    assert tree_digest(a.root) == tree_digest(b.root)
    assert tree_digest(a.root) != tree_digest(c.root)


def test_demo_layout_parses_with_default_pattern(demo: Demo) -> None:
    index = build_index(demo.patches, demo.labels)
    assert index.problems == []
    assert len(index.cases) == 8
    assert Counter(index.case_labels().values()) == {0: 4, 1: 4}
    assert {p.stain for p in index.patches} <= {"HE", "MelanA", "SOX10"}


def test_lesions_are_a_minority_of_high_grade_cases_only(tmp_path: Path) -> None:
    labels = write_demo_dataset(tmp_path / "d", cases=20, seed=1)
    index = build_index(tmp_path / "d" / "patches", labels)
    with (tmp_path / "d" / "lesions.csv").open() as handle:
        lesions = {row["path"] for row in csv.DictReader(handle)}
    by_case = Counter(p.case for p in index.patches)
    lesion_cases = Counter(p.case for p in index.patches if p.path in lesions)
    labels_of = {c: index.labels.classes[i] for c, i in index.case_labels().items()}
    assert set(lesion_cases) == {c for c, lab in labels_of.items() if lab == "high_grade"}
    for case, n in lesion_cases.items():
        assert 0.04 <= n / by_case[case] <= 0.16, (case, n, by_case[case])
        slices = {(p.stain, p.slice) for p in index.patches if p.case == case}
        lesion_slices = {
            (p.stain, p.slice) for p in index.patches if p.path in lesions and p.case == case
        }
        assert len(lesion_slices) < len(slices)


def test_demo_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "file").write_text("")
    with pytest.raises(DataError, match="not empty"):
        write_demo_dataset(tmp_path / "x")
