"""The dataset and feature commands end to end, and their one-line answers to bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import Demo, make_demo, run_tuner
from tuner.features import FeatureStore


def test_demo_check_extract_info_split(tmp_path: Path, run_cli) -> None:
    result = run_cli("demo-data", tmp_path / "demo", "--cases", 6, "--image-size", 32)
    assert result.code == 0, result.err
    patches, labels = tmp_path / "demo" / "patches", tmp_path / "demo" / "labels.csv"

    result = run_cli("data", "check", patches, "--labels", labels)
    assert result.code == 0, result.err
    assert "6 cases" in result.out
    assert "ok: the dataset can be used for training" in result.out
    assert "C001" in result.out

    out = tmp_path / "store"
    result = run_cli(
        "-q", "features", "extract", patches, "--labels", labels, "--out", out,
        "--weights", "random", "--device", "cpu",
    )  # fmt: skip
    assert result.code == 0, result.err
    assert "feature store" in result.out
    store = FeatureStore.open(out)
    assert store.manifest["counts"]["cases"] == 6

    result = run_cli("features", "info", out)
    assert result.code == 0
    assert "checksum: ok" in result.out

    result = run_cli("data", "split", "--features", out, "--out", tmp_path / "splits.json")
    assert result.code == 0, result.err
    splits = json.loads((tmp_path / "splits.json").read_text())
    parts = splits["splits"][0]
    assert sorted(parts["train"] + parts["val"] + parts["test"]) == sorted(store.labels())


def test_data_check_lists_unreadable_images_and_fails(fresh_demo: Demo, run_cli) -> None:
    victims = sorted(fresh_demo.patches.rglob("*.png"))[:2]
    victims[0].write_bytes(b"")
    victims[1].write_bytes(victims[1].read_bytes()[:70])
    result = run_cli("data", "check", fresh_demo.patches, "--labels", fresh_demo.labels)
    assert result.code == 1
    assert "error: 2 image(s) are unreadable or truncated" in result.out
    for victim in victims:
        assert victim.relative_to(fresh_demo.patches).as_posix() in result.out


def test_data_check_lists_images_it_cannot_read_faithfully(fresh_demo: Demo, run_cli) -> None:
    first, second = sorted(fresh_demo.patches.rglob("*.png"))[:2]
    with Image.open(first) as image:
        grey = np.asarray(image.convert("L"))
    first.unlink()
    floats = first.with_suffix(".tif")  # a float image with values beyond 0..1
    Image.fromarray(grey.astype(np.float32) / 64).save(floats)
    with Image.open(second) as image:  # a 16-bit copy reads faithfully
        Image.fromarray(np.asarray(image.convert("L")).astype(np.uint16) * 257).save(second)
    result = run_cli("data", "check", fresh_demo.patches, "--labels", fresh_demo.labels)
    assert result.code == 1
    assert "error: 1 image(s) cannot be read faithfully as 8-bit RGB" in result.out
    assert f"{floats.relative_to(fresh_demo.patches).as_posix()} (floating-point values" in (
        result.out
    )
    assert second.name not in result.out
    assert "tuner: error: the dataset cannot be used for training" in result.err


def test_data_check_refuses_a_class_too_small_for_the_split(tmp_path: Path, run_cli) -> None:
    demo = make_demo(tmp_path / "d", cases=6)
    result = run_cli("data", "check", demo.patches, "--labels", demo.labels, "--folds", 5)
    assert result.code == 1
    assert "class 'benign' has 3 usable case(s) but 5 folds needs at least 5" in result.out


def break_labels(demo: Demo, tmp: Path, content: str) -> Path:
    path = tmp / "labels.csv"
    path.write_text(content)
    return path


BAD_INPUT = [
    ("missing root", lambda d, t: ["data", "check", t / "nope", "--labels", d.labels],
     "does not exist"),
    ("empty root", lambda d, t: ["data", "check", (t / "empty").mkdir() or t / "empty",
                                 "--labels", d.labels], "holds no image files"),
    ("pattern without groups", lambda d, t: ["data", "check", d.patches, "--labels", d.labels,
                                             "--pattern", r"(?P<case>\w+)/.*"],
     "lacks the named group(s) stain, slice"),
    ("labels missing", lambda d, t: ["data", "check", d.patches, "--labels", t / "x.csv"],
     "labels file"),
    ("labels without the column", lambda d, t: ["data", "check", d.patches, "--labels",
                                                break_labels(d, t, "id,label\nC001,benign\n")],
     "has no column 'case'"),
    ("labels with duplicates", lambda d, t: ["data", "check", d.patches, "--labels",
                                             break_labels(d, t, "case,label\nC001,a\nC001,b\n")],
     "more than once"),
    ("labels with one class", lambda d, t: ["data", "check", d.patches, "--labels",
                                            break_labels(d, t, "case,label\nC001,a\nC002,a\n")],
     "only one class"),
    ("missing weights file", lambda d, t: ["features", "extract", d.patches, "--labels", d.labels,
                                           "--out", t / "s", "--weights", t / "w.pth"],
     "'imagenet', 'random' nor an existing file"),
    ("store that is not one", lambda d, t: ["features", "info", d.patches],
     "is not a feature store"),
    ("bad device", lambda d, t: ["features", "extract", d.patches, "--labels", d.labels,
                                 "--out", t / "s", "--weights", "random", "--device", "cuda:7"],
     "does not exist"),
    ("unknown option", lambda d, t: ["data", "check", d.patches, "--labels", d.labels, "--nope"],
     "No such option"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "args", "message"), BAD_INPUT, ids=[b[0] for b in BAD_INPUT])
def test_bad_input_gets_one_clear_line(
    name: str, args, message: str, demo: Demo, tmp_path: Path, run_cli
) -> None:
    argv = args(demo, tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = run_cli(*argv)
    assert result.code != 0
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("tuner: error: ")
    assert message in lines[0]
    assert "Traceback" not in result.err
    after = sorted(p.name for p in tmp_path.iterdir())
    assert after == before


def test_corrupt_store_is_one_line_in_a_real_process(store: FeatureStore, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(store.path, copy)
    features = np.load(copy / "features.npy", mmap_mode="r+")
    features[0, 0, 0] += 1
    features.flush()
    del features
    result = run_tuner("features", "info", copy)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"tuner: error: feature store '{copy}' does not match its checksum (files changed or "
        "damaged after extraction); extract it again with --overwrite"
    ]
