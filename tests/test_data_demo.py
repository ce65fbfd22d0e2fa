"""The demo dataset: real layout, deterministic, lesions only in high-grade cases; the default
preset frozen, the hard preset's properties."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import Demo, make_demo
from tuner.data import DEMO_PRESETS, DatasetIndex, build_index, write_demo_dataset
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


# --- the default demo is frozen; the hard preset -------------------------------------------


def content_digest(root: Path) -> str:
    """Digest of every file's path and content, PNGs by their decoded pixels (so that another
    zlib in Pillow, which may encode the same image to other bytes, does not change it)."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(root).as_posix().encode())
            if path.suffix == ".png":
                digest.update(np.asarray(Image.open(path).convert("RGB")).tobytes())
            else:
                digest.update(path.read_bytes())
    return digest.hexdigest()


def test_default_demo_is_the_same_as_before_the_presets(tmp_path: Path) -> None:
    # digests of the files written by the demo generator before it had presets (commit
    # ba47fc9): the quickstart's and the tests' data must not change
    tiny = make_demo(tmp_path / "tiny")
    write_demo_dataset(tmp_path / "sized", cases=6, seed=5)
    assert content_digest(tiny.root) == (
        "4f14a102b275efe270fdcb869992b5ee163e0cf5379d764a4bc218d5e4d6ba77"
    )
    assert content_digest(tmp_path / "sized") == (
        "94a77d106478c08a880e351fbee3450321944bf4174244d93cbff07a38cc93d4"
    )
    assert sorted(p.name for p in tiny.root.iterdir()) == ["labels.csv", "lesions.csv", "patches"]


@dataclass(frozen=True)
class HardDemo:
    root: Path
    index: DatasetIndex
    truth: dict[str, str]
    flipped: set[str]
    lesions: set[str]
    lookalikes: set[str]


def read_column(path: Path, column: str = "path") -> list[str]:
    with path.open(newline="") as handle:
        return [row[column] for row in csv.DictReader(handle)]


def open_hard_demo(root: Path) -> HardDemo:
    index = build_index(root / "patches", root / "labels.csv")
    with (root / "truth.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return HardDemo(
        root, index, {r["case"]: r["true_label"] for r in rows},
        {r["case"] for r in rows if r["flipped"] == "1"},
        set(read_column(root / "lesions.csv")), set(read_column(root / "lookalikes.csv")),
    )  # fmt: skip


@pytest.fixture(scope="module")
def hard(tmp_path_factory: pytest.TempPathFactory) -> HardDemo:
    """40 cases of the hard preset (32 px, its own layout)."""
    root = tmp_path_factory.mktemp("hard") / "demo"
    write_demo_dataset(root, DEMO_PRESETS["hard"], cases=40, seed=11)
    return open_hard_demo(root)


def test_hard_preset_flips_a_twentieth_of_the_labels_and_keeps_the_truth_apart(
    hard: HardDemo,
) -> None:
    assert DEMO_PRESETS["hard"].label_noise == 0.05
    assert len(hard.flipped) == 2  # 5% of 40
    with (hard.root / "labels.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["case", "label"]  # nothing of the truth in labels.csv
    shown = {r["case"]: r["label"] for r in rows}
    assert shown.keys() == hard.truth.keys()
    assert {c for c in shown if shown[c] != hard.truth[c]} == hard.flipped
    assert Counter(hard.truth.values()) == {"benign": 20, "high_grade": 20}


def test_hard_lesions_are_three_to_eight_percent_of_true_positives_in_one_stain(
    hard: HardDemo,
) -> None:
    by_case = Counter(p.case for p in hard.index.patches)
    lesion_patches = [p for p in hard.index.patches if p.path in hard.lesions]
    lesion_cases = Counter(p.case for p in lesion_patches)
    # lesions follow the true label, also where labels.csv was flipped
    assert set(lesion_cases) == {c for c, label in hard.truth.items() if label == "high_grade"}
    partial = 0
    for case, n in lesion_cases.items():
        total = by_case[case]  # 3-8% of it, to the nearest whole patch, at least one
        assert max(1, round(0.03 * total)) <= n <= max(1, round(0.08 * total)), (case, n, total)
        assert len({p.stain for p in lesion_patches if p.case == case}) == 1
        slices = {(p.stain, p.slice) for p in hard.index.patches if p.case == case}
        partial += len({(p.stain, p.slice) for p in lesion_patches if p.case == case}) < len(
            slices
        )
    assert partial >= 0.8 * len(lesion_cases)  # nearly all have slices without lesions


def test_lesion_stain_weights_choose_the_stain_that_carries_the_lesions(tmp_path: Path) -> None:
    spec = dataclasses.replace(DEMO_PRESETS["hard"], lesion_stains=(0.0, 0.0, 1.0))
    write_demo_dataset(tmp_path / "d", spec, cases=24, seed=2, patches_per_slice=(4, 6))
    demo = open_hard_demo(tmp_path / "d")
    present = {(p.case, p.stain) for p in demo.index.patches}
    carriers = {(p.case, p.stain) for p in demo.index.patches if p.path in demo.lesions}
    positives = {c for c, label in demo.truth.items() if label == "high_grade"}
    assert {c for c, _ in carriers} == positives
    for case in positives:
        # SOX10 when the case has it; otherwise (every present stain weighs 0) another one
        expected = (
            {"SOX10"} if (case, "SOX10") in present else {s for c, s in present if c == case}
        )
        assert {s for c, s in carriers if c == case} <= expected
    assert any((c, "SOX10") not in present for c in positives)  # the fallback was exercised


def test_hard_negatives_hold_lookalikes_and_stains_go_missing(hard: HardDemo) -> None:
    assert hard.lookalikes
    assert not hard.lookalikes & hard.lesions
    negatives = {c for c, label in hard.truth.items() if label == "benign"}
    with_lookalikes = {p.case for p in hard.index.patches if p.path in hard.lookalikes}
    assert len(negatives & with_lookalikes) >= 0.75 * len(negatives)
    stains = {(p.case, p.stain) for p in hard.index.patches}
    presence = len(stains) / (3 * len(hard.truth))
    assert 0.65 <= presence <= 0.85  # hard: 0.75 per stain (the default demo's is 0.85)
    assert {p.stain for p in hard.index.patches} == {"HE", "MelanA", "SOX10"}


def test_hard_demo_is_deterministic_and_a_population_is_disjoint(tmp_path: Path) -> None:
    hard, small = DEMO_PRESETS["hard"], {"cases": 8, "slices": (2, 2), "patches_per_slice": (8, 8)}
    write_demo_dataset(tmp_path / "a", hard, seed=11, **small)
    write_demo_dataset(tmp_path / "b", hard, seed=11, **small)
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")
    write_demo_dataset(tmp_path / "pop", hard, seed=1000, case_prefix="P", **small)
    ids = read_column(tmp_path / "pop" / "labels.csv", "case")
    assert ids == [f"P00{n}" for n in range(1, 9)]
    assert not set(ids) & set(read_column(tmp_path / "a" / "labels.csv", "case"))

    def images(root: Path, case: str) -> list[bytes]:
        return [p.read_bytes() for p in sorted((root / "patches" / case).rglob("*.png"))]

    # another seed: other images, not the same cases renamed; the prefix alone only renames
    assert not set(images(tmp_path / "pop", "P001")) & set(images(tmp_path / "a", "C001"))
    write_demo_dataset(tmp_path / "renamed", hard, seed=11, case_prefix="R", **small)
    assert images(tmp_path / "renamed", "R001") == images(tmp_path / "a", "C001")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"case_prefix": "C1"}, "case_prefix must be letters only"),
        ({"image_size": 24}, "image_size must be at least 32"),
        ({"label_noise": 0.5}, r"label_noise must be in \[0, 0.5\)"),
        ({"lesion_share": (0.1, 0.05)}, "lesion_share must be shares"),
    ],
)
def test_impossible_demo_specs_are_refused_before_writing(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    spec = dataclasses.replace(DEMO_PRESETS["hard"], **change)
    with pytest.raises(DataError, match=message):
        write_demo_dataset(tmp_path / "d", spec)
    assert not (tmp_path / "d").exists()


def test_cli_writes_a_hard_population(tmp_path: Path, run_cli) -> None:
    out = tmp_path / "pop"
    result = run_cli(
        "demo-data", out, "--difficulty", "hard", "--cases", 8, "--seed", 3, "--case-prefix", "P"
    )
    assert result.code == 0, result.err
    assert "truth.csv" in result.out
    demo = open_hard_demo(out)
    assert sorted(demo.truth) == [f"P00{n}" for n in range(1, 9)]
    sizes = {Image.open(out / "patches" / p.path).size for p in demo.index.patches}
    assert sizes == {(32, 32)}
