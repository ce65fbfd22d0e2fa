"""``tuner explain``: attention pictures whose numbers match the run they explain."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_cli_train import write_config
from tuner.features import FeatureStore


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def run(run_cli: Callable, store: FeatureStore, tmp_path: Path) -> Path:
    folder = tmp_path / "run"
    result = run_cli("train", "--config", write_config(run_cli, store, tmp_path), "--out", folder)
    assert result.code == 0, result.err
    return folder


def test_explain_case_draws_every_slice_and_matches_the_run(
    run_cli: Callable, run: Path, store: FeatureStore
) -> None:
    prediction = read_csv(run / "predictions.csv")[0]
    case = prediction["case"]
    result = run_cli("explain", str(run), "--case", case)
    assert result.code == 0, result.err
    assert f"case {case}: label {prediction['label']}, predicted {prediction['prediction']}" in (
        result.out
    )

    folder = run / "explain" / case
    slices = {(r.stain, r.slice) for r in store.rows if r.case == case}
    expected = {f"{stain}_slice-{slice_}.png" for stain, slice_ in slices}
    assert {p.name for p in folder.glob("*.png")} == expected | {"attention_bars.png"}
    for name in expected:  # each grid says that it is not the tissue's layout
        texts = drawn_texts(folder / name)
        assert any("not where they lie in the tissue" in t for t in texts), texts
    for picture in folder.glob("*.png"):
        with Image.open(picture) as image:
            assert image.width > 200
            assert image.height > 150
            assert len(np.unique(np.asarray(image.convert("L")))) > 20  # something is drawn

    summary = json.loads((folder / "summary.json").read_text())
    assert summary["label"] == prediction["label"]
    assert summary["prediction"] == prediction["prediction"]
    probability = summary["probabilities"][prediction["prediction"]]
    assert probability == pytest.approx(float(prediction["probability"]), abs=1e-4)

    # The top patches and their effective attention are those of the run's attention.csv.
    attention = {r["path"]: float(r["attention"]) for r in read_csv(run / "attention.csv")}
    top = summary["top_patches"]
    assert [t["attention"] for t in top] == sorted((t["attention"] for t in top), reverse=True)
    for patch in top:
        assert patch["attention"] == pytest.approx(attention[patch["path"]], abs=1e-4)
    of_case = sorted((v for p, v in attention.items() if p.startswith(f"{case}/")), reverse=True)
    assert top[0]["attention"] == pytest.approx(of_case[0], abs=1e-4)
    assert sum(of_case) == pytest.approx(1.0, abs=1e-3)


def test_explain_case_without_the_patch_images(
    run_cli: Callable, run: Path, store: FeatureStore, tmp_path: Path
) -> None:
    """Images moved away since extraction: the pictures are still drawn, on grey tiles."""
    case = store.cases[0].case
    moved = Path(store.manifest["source"]["root"])
    moved.rename(moved.with_name("moved"))
    try:
        result = run_cli("explain", str(run), "--case", case, "--out", tmp_path / "pictures")
    finally:
        moved.with_name("moved").rename(moved)
    assert result.code == 0, result.err
    assert (tmp_path / "pictures" / "attention_bars.png").is_file()
    assert (tmp_path / "pictures" / "summary.json").is_file()


def drawn_texts(picture: Path) -> list[str]:
    """The texts drawn on a picture of tuner explain (which records them in the PNG)."""
    with Image.open(picture) as image:
        return str(image.text["Description"]).splitlines()  # type: ignore[attr-defined]


def test_explain_run_names_the_misclassified_cases_on_its_picture(
    run_cli: Callable, run: Path
) -> None:
    """Two test cases made misclassified (their prediction flipped in predictions.csv): the
    picture names them, and only them, beside their points."""
    predictions = read_csv(run / "predictions.csv")
    flipped = sorted(p["case"] for p in predictions)[:2]
    for p in predictions:
        right = p["case"] not in flipped
        labels = sorted({q["label"] for q in predictions} | {"0", "1"})
        p["prediction"] = p["label"] if right else next(x for x in labels if x != p["label"])
    with (run / "predictions.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(predictions[0]))
        writer.writeheader()
        writer.writerows(predictions)
    result = run_cli("explain", str(run))
    assert result.code == 0, result.err
    assert f"2 of {len(predictions)} test cases misclassified" in result.out
    texts = drawn_texts(run / "explain" / "misclassified_slice_attention.png")
    cases = {p["case"] for p in predictions}
    assert sorted(t for t in texts if t in cases) == sorted(flipped * 2)  # in both panels
    assert "misclassified (2)" in texts


def test_explain_run_summarises_misclassified_cases(run_cli: Callable, run: Path) -> None:
    result = run_cli("explain", str(run))
    assert result.code == 0, result.err
    predictions = read_csv(run / "predictions.csv")
    wrong = sorted(p["case"] for p in predictions if p["label"] != p["prediction"])
    summary = json.loads((run / "explain" / "run_summary.json").read_text())
    assert summary["cases"] == len(predictions)
    assert summary["misclassified"] == wrong
    assert f"{len(wrong)} of {len(predictions)} test cases misclassified" in result.out
    assert (run / "explain" / summary["picture"]).is_file()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--case", "NOPE"], "NOPE"),
        (["--case", "C001", "--out", "{run}/model.pt"], "model.pt"),
    ],
)
def test_explain_bad_input(
    run_cli: Callable, run: Path, arguments: list[str], message: str
) -> None:
    result = run_cli("explain", str(run), *(a.format(run=run) for a in arguments))
    assert result.code != 0
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert message in lines[0]
    assert "Traceback" not in result.err


def test_explain_needs_a_run_folder(run_cli: Callable, tmp_path: Path) -> None:
    result = run_cli("explain", str(tmp_path), "--case", "C001")
    assert result.code != 0
    assert "not a run folder" in result.err
