"""``tuner evaluate``: a trained run scored on another feature store (an external cohort)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import Result
from tests.helpers import Demo
from tests.test_cli_train import read_csv, write_config
from tuner.cli import main
from tuner.features import ExtractOptions, FeatureStore, extract_features

OPTIONS = {"weights": "random", "device": "cpu", "batch_size": 16, "progress": False}


def cohort_of(demo: Demo, cases: list[str], folder: Path, **options: object) -> FeatureStore:
    """A store of ``cases`` of the demo only, extracted anew (as an external cohort would be)."""
    patches = folder / "patches"
    for case in cases:
        shutil.copytree(demo.patches / case, patches / case)
    with demo.labels.open() as handle:
        rows = [r for r in csv.DictReader(handle) if r["case"] in cases]
    labels = folder / "labels.csv"
    with labels.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["case", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return extract_features(
        patches, labels, folder / "features", ExtractOptions(**{**OPTIONS, **options})
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, store: FeatureStore) -> Path:
    """A run folder of one model trained on the demo store (shared by the tests here)."""
    folder = tmp_path_factory.mktemp("evaluate")

    def run_cli(*args: object) -> Result:
        return Result(main([str(a) for a in args]), "", "")

    config = write_config(run_cli, store, folder)
    assert main(["train", "--config", str(config), "--out", str(folder / "run")]) == 0
    return folder / "run"


def test_evaluate_on_the_test_cases_matches_the_runs_test_metrics(
    run_cli, run: Path, demo: Demo, tmp_path: Path
) -> None:
    test_cases = json.loads((run / "splits.json").read_text())["splits"][0]["test"]
    cohort = cohort_of(demo, test_cases, tmp_path / "cohort")
    result = run_cli("evaluate", run, "--features", cohort.path, "--out", tmp_path / "ext")
    assert result.code == 0, result.err
    assert f"{len(test_cases)} cases scored by the model" in result.out
    ours = json.loads((tmp_path / "ext" / "metrics.json").read_text())
    trained = json.loads((run / "metrics.json").read_text())
    assert ours["scored_by"] == "the model"
    assert ours["test"]["n_cases"] == trained["test"]["n_cases"]
    assert ours["test"]["auc"] == trained["test"]["auc"]
    assert ours["test"]["loss"] == pytest.approx(trained["test"]["loss"], abs=1e-5)
    mine = {r["case"]: r for r in read_csv(tmp_path / "ext" / "predictions.csv")}
    theirs = {r["case"]: r for r in read_csv(run / "predictions.csv")}
    assert mine.keys() == theirs.keys()
    for case, row in mine.items():
        assert float(row["probability"]) == pytest.approx(
            float(theirs[case]["probability"]), abs=1e-5
        )
    names = {p.name for p in (tmp_path / "ext").iterdir()}
    assert names == {"metrics.json", "predictions.csv", "roc.png", "confusion_matrix.png"}


def test_a_run_of_folds_is_scored_by_the_mean_of_its_fold_models(
    run_cli, store: FeatureStore, tmp_path: Path
) -> None:
    config = write_config(run_cli, store, tmp_path, data={"split": {"folds": 3}})
    assert run_cli("train", "--config", config, "--out", tmp_path / "run").code == 0
    result = run_cli("evaluate", tmp_path / "run", "--features", store.path)
    assert result.code == 0, result.err
    assert "is the store the run was trained on" in result.err
    metrics = json.loads(
        (tmp_path / "run" / f"evaluation-{store.path.name}" / "metrics.json").read_text()
    )
    assert metrics["scored_by"] == "the mean of 3 fold models"
    assert metrics["test"]["n_cases"] == len(store.cases)
    rows = read_csv(tmp_path / "run" / f"evaluation-{store.path.name}" / "predictions.csv")
    assert {r["fold"] for r in rows} == {"mean"}


def test_bad_input_is_one_line_and_writes_nothing(
    run_cli, run: Path, demo: Demo, store: FeatureStore, tmp_path: Path
) -> None:
    other_encoder = cohort_of(demo, ["C001", "C002"], tmp_path / "seed1", seed=1)
    other_dim = cohort_of(demo, ["C001", "C002"], tmp_path / "resnet", backbone="resnet18")
    cases = [
        ((tmp_path, "--features", store.path), "has no model.pt"),
        ((run, "--features", other_dim.path), "has 512-d features but the model"),
        ((run, "--features", other_encoder.path), "was made by another encoder than the run's"),
        ((run, "--features", tmp_path / "nowhere"), "nowhere"),
    ]
    before = sorted(p.name for p in run.iterdir())
    for args, message in cases:
        result = run_cli("evaluate", *args)
        assert result.code == 1, result.out
        assert message in result.err
        assert len(result.err.strip().splitlines()) == 1, result.err
        assert "Traceback" not in result.err
    assert sorted(p.name for p in run.iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["resnet", "seed1"]


def test_train_warns_of_small_splits_and_gives_the_aucs_interval(
    run_cli, store: FeatureStore, tmp_path: Path
) -> None:
    config = write_config(run_cli, store, tmp_path)
    result = run_cli("train", "--config", config, "--out", tmp_path / "run")
    assert result.code == 0, result.err
    warning = [line for line in result.err.splitlines() if "few cases" in line]
    assert len(warning) == 1, result.err
    assert "as few as train 2 of 'benign', val 1 of 'benign', test 1 of 'benign'" in warning[0]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "auc_ci" in metrics["test"]  # None here: one case of a class
