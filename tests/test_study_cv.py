"""A cross-validated study: members in lockstep, the mean reported, what learns nothing pruned,
and the export of a refit on the cases the study kept out of its test."""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from tests.helpers import make_signal_store
from tuner.config import load_config
from tuner.features import FeatureStore
from tuner.storage import open_storage
from tuner.study import load_settings

BASE = {
    "model": {"embed_dim": 16, "attn_dim": 8},
    "train": {"epochs": 8, "batch_cases": 4, "early_stopping": None, "device": "cpu",
              "scheduler": "none"},
}  # fmt: skip


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> FeatureStore:
    """24 cases with a signal a model learns in a few epochs at lr 1e-2 (not at 1e-7)."""
    return FeatureStore.open(make_signal_store(tmp_path_factory.mktemp("signal")))


def test_a_cross_validated_study_end_to_end(run_cli, store: FeatureStore, tmp_path: Path) -> None:
    base = {"data": {"features": str(store.path), "split": {"cv_folds": 3}}, **BASE}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    space = {"train.lr": {"type": "categorical", "choices": [1.0e-7, 1.0e-2]}}
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    created = run_cli(
        "study", "create", "cv", "--features", store.path, "--config", tmp_path / "base.yaml",
        "--space", tmp_path / "space.yaml", "--trials", 2, "--pruner", "chance",
        "--storage", url,
    )  # fmt: skip
    assert created.code == 0, created.err
    study = optuna.load_study(study_name="cv", storage=open_storage(url))
    study.enqueue_trial({"train.lr": 1.0e-7})
    study.enqueue_trial({"train.lr": 1.0e-2})
    worked = run_cli("worker", "cv", "--storage", url, "--device", "cpu")
    assert worked.code == 0, worked.err

    flat, learning = study.get_trials()
    assert flat.params["train.lr"] == 1.0e-7
    assert flat.state == TrialState.PRUNED
    assert flat.user_attrs["pruned_because"] == "it learned nothing"
    assert max(flat.intermediate_values) == 5, "pruned at the end of the warm-up"
    assert flat.user_attrs["chance_loss"] == pytest.approx(math.log(2), abs=0.02)

    assert learning.state == TrialState.COMPLETE, learning.user_attrs
    assert sorted(learning.intermediate_values) == list(range(1, 9))
    assert learning.value == min(learning.intermediate_values.values())
    attrs = learning.user_attrs
    assert attrs["cv_epoch"] == attrs["best_epoch"]
    assert learning.intermediate_values[attrs["cv_epoch"]] == learning.value
    assert len(attrs["cv_losses"]) == 3
    assert sum(attrs["cv_losses"]) / 3 == pytest.approx(learning.value)
    assert attrs["lrs"] == [1.0e-2] * attrs["cv_epoch"]

    best = tmp_path / "best.yaml"
    exported = run_cli("export", "cv", "--out", best, "--storage", url)
    assert exported.code == 0, exported.err
    config = load_config(best)
    assert config.data.split.cv_folds is None
    assert config.train.refit_epochs == attrs["cv_epoch"]
    assert config.train.lr_schedule == attrs["lrs"]
    assert config.provenance is not None
    assert config.provenance["cv"]["folds"] == attrs["cv_losses"]
    held_out = json.loads((tmp_path / "best.splits.json").read_text())["splits"][0]
    studied = load_settings(open_storage(url), "cv").splits.splits[0]
    assert tuple(held_out["test"]) == studied.test, "the test cases the study never saw"
    assert sorted(held_out["train"] + held_out["val"]) == sorted(studied.train + studied.val)

    trained = run_cli("train", "--config", best, "--out", tmp_path / "final")
    assert trained.code == 0, trained.err
    metrics = json.loads((tmp_path / "final" / "metrics.json").read_text())
    assert metrics["refit_epochs"] == attrs["cv_epoch"]
    assert metrics["epochs_run"] == attrs["cv_epoch"]
    assert metrics["test"]["n_cases"] == len(held_out["test"])
    lrs = [e["lr"] for e in metrics["history"]]
    assert lrs == pytest.approx(attrs["lrs"])
