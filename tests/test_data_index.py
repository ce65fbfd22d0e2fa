"""The dataset index: path patterns, labels, and the problems it reports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tuner.data import (
    DEFAULT_PATTERN,
    build_index,
    group_ids,
    natural_key,
    read_labels,
    scan_patches,
)
from tuner.errors import DataError


def touch_image(path: Path, size: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), (200, 100, 150)).save(path)


def write_labels(path: Path, rows: list[tuple[str, str]], header: str = "case,label") -> Path:
    path.write_text(header + "\n" + "".join(f"{c},{lab}\n" for c, lab in rows))
    return path


def test_default_pattern_reads_nested_folders(tmp_path: Path) -> None:
    for rel in ["42/melan/3/17.png", "42/melan/3/2.png", "42/HE/1/1.png", "7/HE/10/5.jpg"]:
        touch_image(tmp_path / rel)
    patches, unmatched = scan_patches(tmp_path)
    assert unmatched == []
    assert [(p.case, p.stain, p.slice, p.patch) for p in patches] == [
        ("7", "HE", "10", "5"),
        ("42", "HE", "1", "1"),
        ("42", "melan", "3", "2"),
        ("42", "melan", "3", "17"),
    ]


def test_default_pattern_reads_flat_names(tmp_path: Path) -> None:
    for name in ["42_melan_3_patch17.png", "42_melan_3_patch2.png", "5_sox10_1_patch_9.tif"]:
        touch_image(tmp_path / name)
    patches, unmatched = scan_patches(tmp_path)
    assert unmatched == []
    assert [(p.case, p.stain, p.slice, p.patch) for p in patches] == [
        ("5", "sox10", "1", "9"),
        ("42", "melan", "3", "2"),
        ("42", "melan", "3", "17"),
    ]


def test_custom_pattern_and_unmatched_files(tmp_path: Path) -> None:
    touch_image(tmp_path / "slide-A1-he-s2" / "x0_y0.png")
    touch_image(tmp_path / "stray.png")
    (tmp_path / "notes.txt").write_text("not an image")
    pattern = r"slide-(?P<case>\w+)-(?P<stain>\w+)-s(?P<slice>\d+)/(?P<patch>[^/]+)\.png"
    patches, unmatched = scan_patches(tmp_path, pattern)
    assert [(p.case, p.stain, p.slice, p.patch) for p in patches] == [("A1", "he", "2", "x0_y0")]
    assert unmatched == ["stray.png"]


def test_patch_group_is_optional(tmp_path: Path) -> None:
    touch_image(tmp_path / "c1" / "he" / "s1" / "tile.png")
    patches, _ = scan_patches(tmp_path, r"(?P<case>\w+)/(?P<stain>\w+)/(?P<slice>\w+)/[^/]+")
    assert patches[0].patch == "tile"


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        (r"(?P<case>\w+)/(?P<stain>\w+)/.*", r"lacks the named group\(s\) slice"),
        (r"(?P<case>[", "not a valid regular expression"),
    ],
)
def test_bad_pattern_is_refused(tmp_path: Path, pattern: str, message: str) -> None:
    touch_image(tmp_path / "1/he/1/1.png")
    with pytest.raises(DataError, match=message):
        scan_patches(tmp_path, pattern)


def test_missing_and_empty_root_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        scan_patches(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no image files"):
        scan_patches(tmp_path / "empty")


def test_natural_order() -> None:
    assert sorted(["s10", "s2", "s1", "a"], key=natural_key) == ["a", "s1", "s2", "s10"]


def test_labels_integer_and_string_classes(tmp_path: Path) -> None:
    ints = read_labels(write_labels(tmp_path / "a.csv", [("a", "10"), ("b", "2"), ("c", "02")]))
    assert ints.classes == ("2", "10")
    assert ints.of_case == {"a": 1, "b": 0, "c": 0}
    names = read_labels(write_labels(tmp_path / "b.csv", [("a", "high_grade"), ("b", "benign")]))
    assert names.classes == ("benign", "high_grade")
    assert names.of_case == {"a": 1, "b": 0}
    explicit = read_labels(tmp_path / "b.csv", classes=["high_grade", "benign"])
    assert explicit.of_case == {"a": 0, "b": 1}


def test_labels_custom_columns(tmp_path: Path) -> None:
    path = write_labels(tmp_path / "l.csv", [("x", "1"), ("y", "0")], header="slide_id,grade")
    labels = read_labels(path, case_column="slide_id", label_column="grade")
    assert labels.of_case == {"x": 1, "y": 0}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("case,label\na,1\na,0\nb,0\n", "more than once"),
        ("case,label\na,1\nb,1\n", "only one class"),
        ("id,label\na,1\nb,0\n", "no column 'case'"),
        ("case,label\n", "has no rows"),
        ("case,label\na,\nb,0\n", "empty"),
    ],
)
def test_bad_labels_are_refused(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        read_labels(path)


def test_labels_file_missing(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        read_labels(tmp_path / "missing.csv")


def test_index_lists_every_problem(tmp_path: Path) -> None:
    root = tmp_path / "patches"
    for case in ["a", "b", "c", "d"]:
        touch_image(root / case / "he" / "1" / "1.png")
    touch_image(root / "unlabelled" / "he" / "1" / "1.png")
    touch_image(root / "README.png")
    labels = write_labels(
        tmp_path / "labels.csv", [("a", "0"), ("b", "1"), ("c", "0"), ("d", "1"), ("gone", "0")]
    )
    index = build_index(root, labels)
    kinds = {p.kind: p for p in index.problems}
    assert set(kinds) == {"unmatched", "unlabelled", "no-patches"}
    assert kinds["unmatched"].examples == ("README.png",)
    assert kinds["unlabelled"].examples == ("unlabelled",)
    assert kinds["no-patches"].examples == ("gone",)
    assert not index.fatal_problems
    assert index.cases == ["a", "b", "c", "d"]


def test_index_with_no_overlap_is_fatal(tmp_path: Path) -> None:
    touch_image(tmp_path / "p" / "a" / "he" / "1" / "1.png")
    labels = write_labels(tmp_path / "labels.csv", [("x", "0"), ("y", "1")])
    index = build_index(tmp_path / "p", labels)
    assert [p.kind for p in index.fatal_problems] == ["no-usable-cases"]
    with pytest.raises(DataError, match="no case of"):
        index.raise_for_fatal()


def test_duplicate_patch_keys_are_fatal(tmp_path: Path) -> None:
    touch_image(tmp_path / "p" / "a" / "he" / "1" / "1.png")
    touch_image(tmp_path / "p" / "a_he_1_patch1.png")
    touch_image(tmp_path / "p" / "b" / "he" / "1" / "1.png")
    labels = write_labels(tmp_path / "labels.csv", [("a", "0"), ("b", "1")])
    index = build_index(tmp_path / "p", labels, pattern=DEFAULT_PATTERN)
    assert [p.kind for p in index.fatal_problems] == ["duplicate-patch"]


def test_symbolic_links_are_followed_and_what_happened_is_said(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    root, outside = tmp_path / "patches", tmp_path / "archive"
    for rel in ("a/he/1/1.png", "a/he/1/2.png", "c/he/1/1.png", "e/he/1/1.png"):
        touch_image(root / rel)
    (root / "a/he/1/3.png").symlink_to("1.png")  # a duplicate of a patch of its slice
    touch_image(outside / "slice2" / "1.png")
    touch_image(outside / "slice2" / "2.png")
    (root / "b/he").mkdir(parents=True)
    (root / "b/he/2").symlink_to(outside / "slice2")  # a slice folder that is a link
    (root / "b/he/9").symlink_to(root / "b")  # a loop
    (root / "d/he/1").mkdir(parents=True)
    (root / "d/he/1/1.png").symlink_to(root / "c/he/1/1.png")  # one file in two cases
    labels = write_labels(
        tmp_path / "labels.csv", [("a", "0"), ("b", "1"), ("c", "0"), ("d", "1"), ("e", "1")]
    )

    index = build_index(root, labels)
    assert [p.path for p in index.patches] == [
        "a/he/1/1.png", "a/he/1/2.png", "b/he/2/1.png", "b/he/2/2.png", "c/he/1/1.png",
        "e/he/1/1.png",
    ]  # fmt: skip
    kinds = {p.kind: p for p in index.problems}
    assert kinds["linked-duplicate"].examples == ("a/he/1/3.png ~ a/he/1/1.png",)
    assert kinds["linked-folder"].examples == (f"b/he/2 -> {outside / 'slice2'}",)
    assert kinds["link-skipped"].examples == ("b/he/9",)
    assert kinds["linked-across-cases"].examples == ("d/he/1/1.png ~ c/he/1/1.png",)
    assert [p.kind for p in index.fatal_problems] == ["linked-across-cases"]

    result = run_cli("data", "check", root, "--labels", labels)
    assert result.code == 1
    for line in (
        "warning: 1 image file(s) are the same file as another patch (a symbolic or hard link) "
        "and are counted once: a/he/1/3.png ~ a/he/1/1.png",
        "warning: 1 folder(s) are symbolic links to folders outside the patch folder and were "
        f"followed: b/he/2 -> {outside / 'slice2'}",
        "warning: 1 symbolic link(s) lead to a folder scanned anyway",
        "error: 1 image file(s) are the same file as a patch of another case",
    ):
        assert line in result.out, result.out


def test_group_ids_number_runs_of_equal_keys_over_all_columns() -> None:
    cases = ["a", "a", "a", "b", "b", "c"]
    stains = ["HE", "HE", "SOX10", "HE", "HE", "HE"]
    slices = np.array([1, 2, 2, 1, 1, 1])
    assert group_ids(cases).tolist() == [0, 0, 0, 1, 1, 2]
    assert group_ids(cases, stains).tolist() == [0, 0, 1, 2, 2, 3]
    assert group_ids(cases, stains, slices).tolist() == [0, 1, 2, 3, 3, 4]
    assert group_ids(np.array([7, 7, 3, 3, 7])).tolist() == [0, 0, 1, 1, 2]  # runs, not values
    assert group_ids(np.array([5])).tolist() == [0]
    empty = group_ids(np.array([], dtype=np.int64))
    assert empty.dtype == np.int64
    assert len(empty) == 0
