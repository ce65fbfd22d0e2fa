"""``tuner config init`` and ``tuner train``: the run folder, k folds, and bad configs."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from tuner.config import load_config
from tuner.features import FeatureStore
from tuner.model import HierarchicalMIL
from tuner.training import CaseSampler, StoreTensors

TINY = {
    "model": {"embed_dim": 16, "attn_dim": 8},
    "train": {"epochs": 4, "batch_cases": 3, "lr": 0.001, "device": "cpu"},
}


def write_config(run_cli, store: FeatureStore, folder: Path, **sections: dict) -> Path:
    path = folder / "config.yaml"
    result = run_cli("config", "init", "--features", store.path, "--out", path)
    assert result.code == 0, result.err
    config = yaml.safe_load(path.read_text())
    for section, values in {**TINY, **sections}.items():
        for key, value in values.items():
            if isinstance(value, dict):
                config[section][key].update(value)
            else:
                config[section][key] = value
    path.write_text(yaml.safe_dump(config))
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_train_writes_the_whole_run_folder(run_cli, store: FeatureStore, tmp_path: Path) -> None:
    config = write_config(run_cli, store, tmp_path)
    run = tmp_path / "run"
    result = run_cli("train", "--config", config, "--out", run)
    assert result.code == 0, result.err
    assert f"run folder: {run}" in result.out
    names = {p.name for p in run.iterdir()}
    assert names == {
        "config.yaml", "metrics.json", "predictions.csv", "confusion_matrix.png", "roc.png",
        "attention.csv", "splits.json", "model.pt",
    }  # fmt: skip
    resolved = load_config(run / "config.yaml")
    assert resolved.data.checksum == store.checksum

    metrics = json.loads((run / "metrics.json").read_text())
    for part in ("val", "test"):
        assert set(metrics[part]) == {
            "loss", "auc", "balanced_accuracy", "accuracy", "n_cases", "auc_ci",
        }  # fmt: skip
    assert metrics["val"]["auc_ci"] is None, "the interval is computed where AUCs are reported"
    assert 1 <= metrics["best_epoch"] <= 4
    assert len(metrics["history"]) == metrics["epochs_run"]

    splits = json.loads((run / "splits.json").read_text())["splits"][0]
    predictions = read_csv(run / "predictions.csv")
    assert sorted(p["case"] for p in predictions) == sorted(splits["test"])
    assert metrics["test"]["n_cases"] == len(splits["test"])
    accuracy = np.mean([p["label"] == p["prediction"] for p in predictions])
    assert accuracy == pytest.approx(metrics["test"]["accuracy"])

    attention = read_csv(run / "attention.csv")
    test_rows = [r for r in store.rows if r.case in splits["test"]]
    assert sorted(a["path"] for a in attention) == sorted(r.path for r in test_rows)
    per_slice: dict[tuple[str, str, str], float] = {}
    for a in attention:
        key = (a["case"], a["stain"], a["slice"])
        per_slice[key] = per_slice.get(key, 0) + float(a["patch_weight"])
        assert float(a["attention"]) == pytest.approx(
            float(a["patch_weight"]) * float(a["slice_weight"]) * float(a["stain_weight"]),
            rel=1e-4,
        )
    assert all(v == pytest.approx(1, abs=1e-4) for v in per_slice.values())
    per_case: dict[str, float] = {}
    for a in attention:
        per_case[a["case"]] = per_case.get(a["case"], 0) + float(a["attention"])
    assert all(v == pytest.approx(1, abs=1e-3) for v in per_case.values())

    for picture in ("confusion_matrix.png", "roc.png"):
        with Image.open(run / picture) as image:
            assert image.size[0] > 300

    saved = torch.load(run / "model.pt", weights_only=False)
    model = HierarchicalMIL(saved["in_dim"], len(saved["classes"]), embed_dim=16, attn_dim=8)
    model.load_state_dict(saved["folds"][0])
    model.eval()
    sampler = CaseSampler(
        StoreTensors.load(store, torch.device("cpu")), splits["test"], batch_cases=8
    )
    (batch,) = list(sampler.batches(None))
    batch.bags.features = batch.bags.features.float()
    with torch.no_grad():
        probs = torch.softmax(model(batch.bags).logits, 1)[:, 1].numpy()
    by_case = {p["case"]: float(p["probability"]) for p in predictions}
    np.testing.assert_allclose(probs, [by_case[c] for c in batch.cases], atol=1e-5)


def test_kfold_with_refit_reports_mean_and_spread(
    run_cli, store: FeatureStore, tmp_path: Path
) -> None:
    config = write_config(
        run_cli, store, tmp_path, data={"split": {"folds": 3}}, train={"refit": True, "epochs": 2}
    )
    run = tmp_path / "run"
    result = run_cli("-q", "train", "--config", config, "--out", run)
    assert result.code == 0, result.err
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics["folds"]) == 3
    assert set(metrics["mean"]) == {"val", "test"}
    assert set(metrics["std"]["test"]) == {"loss", "auc", "balanced_accuracy", "accuracy"}
    assert all(f["refit_epochs"] == round(metrics["mean_best_epoch"]) for f in metrics["folds"])
    predictions = read_csv(run / "predictions.csv")
    assert sorted(p["case"] for p in predictions) == sorted(c.case for c in store.cases)
    assert {p["fold"] for p in predictions} == {"0", "1", "2"}


def copy_of(store: FeatureStore, tmp_path: Path) -> Path:
    target = tmp_path / "store-copy"
    shutil.copytree(store.path, target)
    return target


BAD_CONFIGS = [
    ("unknown key", {"train": {"lrr": 0.1}}, "unknown key 'train.lrr'"),
    ("wrong type", {"train": {"epochs": "ten"}}, "train.epochs: Input should be a valid integer"),
    ("negative lr", {"train": {"lr": -1}}, "train.lr: Input should be greater than 0"),
    ("dropout one", {"model": {"dropout": 1}}, "model.dropout: Input should be less than 1"),
    ("negative penalty", {"regularization": {"entropy": {"patch": -0.1}}},
     "regularization.entropy.patch: Input should be greater than or equal to 0"),
    ("unknown penalty", {"regularization": {"penalty": "group-lasso"}},
     "regularization.penalty: Input should be 'none', 'entropy' or 'elasticnet'"),
    ("missing store", {"data": {"features": "/nonexistent/store"}}, "does not exist"),
    ("other store", {"data": {"checksum": "sha256:0000"}}, "but the config expects sha256:0000"),
    ("empty class", {"data": {"split": {"file": "one-class-test.json"}}},
     "the test split has no case of class 'high_grade'"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "change", "message"), BAD_CONFIGS, ids=[b[0] for b in BAD_CONFIGS]
)
def test_bad_config_is_one_line_and_leaves_no_run(
    name: str, change: dict, message: str, run_cli, store: FeatureStore, tmp_path: Path
) -> None:
    config = write_config(run_cli, store, tmp_path)
    data = yaml.safe_load(config.read_text())
    for section, values in change.items():
        for key, value in values.items():
            if isinstance(value, dict) and isinstance(data[section].get(key), dict):
                data[section][key].update(value)
            else:
                data[section][key] = value
    config.write_text(yaml.safe_dump(data))
    benign = [c.case for c in store.cases if c.label == "benign"]
    high = [c.case for c in store.cases if c.label == "high_grade"]
    one_class_test = {
        "train": benign[:2] + high[:2],
        "val": benign[2:3] + high[2:],
        "test": benign[3:],
    }
    (tmp_path / "one-class-test.json").write_text(
        json.dumps({"scheme": "holdout", "seed": 0, "splits": [one_class_test]})
    )
    result = run_cli("train", "--config", config, "--out", tmp_path / "run")
    assert result.code == 1
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert message in lines[0]
    assert not list(tmp_path.glob("run*"))


def test_existing_run_folder_is_refused(run_cli, store: FeatureStore, tmp_path: Path) -> None:
    config = write_config(run_cli, store, tmp_path)
    (tmp_path / "run").mkdir()
    result = run_cli("train", "--config", config, "--out", tmp_path / "run")
    assert result.code == 1
    assert "already exists" in result.err
