"""Cross-validation in lockstep: members, the mean curve, the common best epoch, resume, refit."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import torch

from tests.test_cli_train import write_config
from tests.test_training import tiny_config
from tuner.data import make_splits
from tuner.features import FeatureStore
from tuner.training import EpochReport, StoreTensors, Trainer, TrainState
from tuner.training._lockstep import Lockstep, members_of

FIXED = {"train.scheduler": "none", "train.early_stopping": None, "train.epochs": 3}


@pytest.fixture(scope="module")
def data(store: FeatureStore) -> StoreTensors:
    return StoreTensors.load(store, torch.device("cpu"))


def cv_splits(store: FeatureStore, k: int = 3):  # type: ignore[no-untyped-def]
    return make_splits(store.labels(), seed=0, cv_folds=k, class_names=store.classes)


def test_cv_splits_hold_the_test_cases_out_and_validate_on_every_other_case_once(
    store: FeatureStore,
) -> None:
    splits = cv_splits(store)
    holdout = make_splits(store.labels(), seed=0, class_names=store.classes)
    assert splits.scheme == "cv"
    assert {s.test for s in splits.splits} == {tuple(sorted(holdout.splits[0].test))}
    rest = set(store.labels()) - set(holdout.splits[0].test)
    vals = [c for s in splits.splits for c in s.val]
    assert sorted(vals) == sorted(rest), "every non-test case validates exactly once"
    for s in splits.splits:
        assert set(s.train) | set(s.val) == rest
        assert not set(s.train) & set(s.val)


def test_lockstep_members_equal_separate_trainings_with_the_same_seeds(
    store: FeatureStore, data: StoreTensors
) -> None:
    trainer = Trainer(tiny_config(store, **FIXED), data, torch.device("cpu"))
    members = members_of(cv_splits(store), repeats=2, seed=5)
    assert [(m.fold, m.seed) for m in members] == [(0, 5), (0, 6), (1, 5), (1, 6), (2, 5), (2, 6)]
    together = Lockstep(trainer, members).fit()
    for member, run in zip(members, together.runs, strict=True):
        alone = trainer.fit(member.train, member.val, seed=member.seed)
        assert [e.val.loss for e in run.history] == [e.val.loss for e in alone.history]
        assert [e.train_loss for e in run.history] == [e.train_loss for e in alone.history]
        final = run.model.state_dict()
        separate = trainer.start(member.train, member.val, seed=member.seed)
        for _ in range(3):
            separate.train_epoch()
        for key, value in separate.model.state_dict().items():
            torch.testing.assert_close(final[key], value, rtol=0, atol=0)


def test_the_mean_curve_is_reported_and_the_value_is_the_mean_at_the_common_best_epoch(
    store: FeatureStore, data: StoreTensors
) -> None:
    config = tiny_config(store, **{**FIXED, "train.epochs": 5, "train.lr": 3e-3})
    trainer = Trainer(config, data, torch.device("cpu"))
    reported: list[EpochReport] = []
    result = Lockstep(trainer, members_of(cv_splits(store))).fit(on_epoch=reported.append)
    assert len(reported) == 5
    for report in reported:
        losses = [run.history[report.epoch - 1].val.loss for run in result.runs]
        assert report.val.loss == pytest.approx(statistics.fmean(losses))
    mean_curve = [r.val.loss for r in reported]
    assert result.best_epoch == mean_curve.index(min(mean_curve)) + 1
    assert result.value == min(mean_curve)
    assert result.fold_losses() == [
        run.history[result.best_epoch - 1].val.loss for run in result.runs
    ]
    own_bests = [min(e.val.loss for e in run.history) for run in result.runs]
    assert result.value >= statistics.fmean(own_bests), "members' own bests are optimistic"
    assert len(set(result.lrs)) == 1
    chance = Lockstep(trainer, members_of(cv_splits(store))).chance_loss()
    assert chance == pytest.approx(0.6931, abs=1e-3)  # balanced classes: ln 2


def test_the_plateau_scheduler_and_early_stopping_act_on_the_mean_curve(
    store: FeatureStore, data: StoreTensors
) -> None:
    config = tiny_config(
        store, **{"train.epochs": 12, "train.lr": 3e-2, "train.plateau_patience": 0,
                  "train.early_stopping": 3}
    )  # fmt: skip
    trainer = Trainer(config, data, torch.device("cpu"))
    result = Lockstep(trainer, members_of(cv_splits(store))).fit()
    for run in result.runs:
        assert [e.lr for e in run.history] == result.lrs, "one schedule for all members"
        assert run.epoch == len(result.history), "all members train the same epochs"
    if result.stopped_by == "early stopping":
        assert len(result.history) - result.best_epoch == 3


def test_a_lockstep_resumes_every_member_from_its_checkpoint(
    store: FeatureStore, data: StoreTensors
) -> None:
    config = tiny_config(store, **{"train.epochs": 4})
    trainer = Trainer(config, data, torch.device("cpu"))
    members = members_of(cv_splits(store), repeats=2)
    saved: list[list[TrainState]] = []
    unbroken = Lockstep(trainer, members).fit(on_checkpoint=saved.append)
    assert len(saved) == 3
    assert all(len(states) == 6 for states in saved)
    lockstep = Lockstep(trainer, members)
    seen: list[int] = []
    resumed = lockstep.fit(resume=saved[1], on_epoch=lambda e: seen.append(len(lockstep.history)))
    assert seen == [3, 4], "the mean curve so far holds the resumed epochs"
    assert [e.val.loss for e in resumed.history] == [e.val.loss for e in unbroken.history]
    for a, b in zip(resumed.runs, unbroken.runs, strict=True):
        for key, value in a.model.state_dict().items():
            torch.testing.assert_close(value, b.model.state_dict()[key], rtol=0, atol=0)


def test_train_with_cv_folds_refits_on_every_non_test_case_for_the_common_best_epoch(
    run_cli, store: FeatureStore, tmp_path: Path
) -> None:
    config = write_config(
        run_cli, store, tmp_path, data={"split": {"cv_folds": 3}},
        train={"epochs": 4, "lr": 3e-3, "early_stopping": None},
    )  # fmt: skip
    result = run_cli("train", "--config", config, "--out", tmp_path / "run")
    assert result.code == 0, result.err
    assert "few cases" in result.err
    assert "tune with data.split.cv_folds" not in result.err, "it does already"
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    cv = metrics["cv"]
    assert cv["folds"] == 3
    assert len(cv["cv_losses"]) == 3
    assert metrics["refit_epochs"] == cv["cv_epoch"] == len(cv["lrs"])
    assert metrics["epochs_run"] == cv["cv_epoch"]
    assert metrics["val"] is None
    splits = json.loads((tmp_path / "run" / "splits.json").read_text())
    test = splits["splits"][0]["test"]
    assert metrics["test"]["n_cases"] == len(test)
    assert {r["case"] for r in _rows(tmp_path / "run" / "predictions.csv")} == set(test)


def _rows(path: Path) -> list[dict[str, str]]:
    import csv

    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_early_stopping_counts_from_the_warmup(store: FeatureStore, data: StoreTensors) -> None:
    """A run whose loss only rises (lr far too high here) stops at warm-up + patience, not at
    1 + patience: the patience counts from the warm-up at the earliest."""
    config = tiny_config(
        store, **{"train.lr": 0.5, "train.epochs": 30, "train.scheduler": "none",
                  "train.early_stopping": 2, "train.early_stopping_warmup": 6}
    )  # fmt: skip
    result = Trainer(config, data, torch.device("cpu")).fit(*_train_val(store))
    assert result.stopped_by == "early stopping"
    assert result.best_epoch < 6, "the best epoch falls in the warm-up"
    assert len(result.history) == 6 + 2


def _train_val(store: FeatureStore) -> tuple[list[str], list[str]]:
    names = [c.case for c in store.cases]
    return names[:6], names[6:]
