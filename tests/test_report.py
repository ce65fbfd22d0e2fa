"""``tuner report``: one self-contained HTML file whose numbers match the study."""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from tuner.features import FeatureStore
from tuner.report import write_report
from tuner.storage import open_storage
from tuner.study import create_study

QUICK = Path(__file__).resolve().parents[1] / "search_spaces" / "quick.yaml"
DISTRIBUTIONS = {
    "train.lr": FloatDistribution(1e-4, 1e-2, log=True),
    "model.dropout": FloatDistribution(0.0, 0.5),
    "regularization.penalty": CategoricalDistribution(["none", "entropy"]),
}


def fill(study: optuna.Study) -> None:
    """Complete, pruned and failed trials, with epochs reported."""
    for i in range(8):
        lr, value = 10 ** (-4 + i / 4), 0.2 + abs(i - 4) / 10
        curve = {e: value + 0.5 / e for e in range(1, 7)}
        params = {"train.lr": lr, "model.dropout": 0.05 * i, "regularization.penalty": "none"}
        state = (
            TrialState.PRUNED
            if i in (1, 7)
            else TrialState.FAIL
            if i == 6
            else TrialState.COMPLETE
        )
        study.add_trial(
            create_trial(
                state=state, params=params, distributions=DISTRIBUTIONS,
                value=value if state == TrialState.COMPLETE else None,
                intermediate_values=curve if state != TrialState.PRUNED else {1: 2.0, 2: 1.9},
                user_attrs={"val_auc": 1 - value / 2, "worker": f"gpu-box-{i % 2}:10{i}",
                            "device": "cuda:0", "best_epoch": 6, "epochs_run": 6,
                            **({"fail_reason": "training diverged at epoch 3"} if i == 6 else {})},
            )
        )  # fmt: skip


@pytest.fixture
def study_db(tmp_path: Path, store: FeatureStore) -> str:
    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    storage = open_storage(url)
    create_study(storage, "mil", store.path, space=QUICK, trials=8, pruner="asha")
    fill(optuna.load_study(study_name="mil", storage=storage))
    return url


def test_report_is_self_contained_and_matches_the_study(study_db: str, tmp_path: Path) -> None:
    storage = open_storage(study_db)
    summary = write_report(
        storage, "mil", tmp_path / "r.html", storage_url=study_db, png=tmp_path / "png"
    )
    text = (tmp_path / "r.html").read_text()
    assert not re.search(r"<script[^>]+src=", text), "no script is fetched from elsewhere"
    assert "Plotly" in text
    titles = ["Optimisation history", "Timeline", "Intermediate values", "Parameter importances",
              "Parallel coordinates", "Slice: train.lr", "Search space", "Best trials",
              "Failed trials"]  # fmt: skip
    for title in titles:
        assert title in text, title
    study = optuna.load_study(study_name="mil", storage=storage)
    assert f"Best: trial {study.best_trial.number}, validation loss {study.best_value:.4f}" in text
    assert "Trials finished</th><td>8 of 8" in text
    assert "training diverged at epoch 3" in text
    assert "8 on 2 host(s): gpu-box-0, gpu-box-1" in text
    assert "asha" in text
    assert len(summary.pngs) == len(summary.plots)
    assert all(p.stat().st_size > 10_000 for p in summary.pngs)
    assert "Slice: regularization.entropy.patch" in summary.skipped


def test_report_of_an_empty_study_says_what_is_missing(
    tmp_path: Path, store: FeatureStore
) -> None:
    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    create_study(open_storage(url), "empty", store.path, space=QUICK, trials=3)
    summary = write_report(open_storage(url), "empty", tmp_path / "r.html", storage_url=url)
    text = (tmp_path / "r.html").read_text()
    assert "No complete trial yet" in text
    assert summary.skipped["Optimisation history"] == "no complete trial yet"
