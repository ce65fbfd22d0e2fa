"""The trainer: sampling, determinism, callbacks, early stopping, divergence, losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tuner.config import RunConfig, apply_overrides, parse_config
from tuner.errors import TrainingError
from tuner.features import FeatureStore
from tuner.training import CaseSampler, EpochReport, StoreTensors, Trainer

TINY = {
    "model.embed_dim": 16,
    "model.attn_dim": 8,
    "train.epochs": 3,
    "train.batch_cases": 3,
    "train.lr": 1e-3,
    "train.device": "cpu",
}


def tiny_config(store: FeatureStore, **overrides: object) -> RunConfig:
    base = parse_config({"data": {"features": str(store.path)}})
    return apply_overrides(base, {**TINY, **overrides}, source="test")


@pytest.fixture(scope="module")
def data(store: FeatureStore) -> StoreTensors:
    return StoreTensors.load(store, torch.device("cpu"))


def cases_of(store: FeatureStore) -> tuple[list[str], list[str]]:
    names = [c.case for c in store.cases]
    return names[:6], names[6:]


def test_eval_batches_hold_every_patch_once_in_order(
    data: StoreTensors, store: FeatureStore
) -> None:
    cases = [c.case for c in store.cases]
    sampler = CaseSampler(data, cases, batch_cases=3)
    batches = list(sampler.batches(None))
    assert [len(b.cases) for b in batches] == [3, 3, 2]
    rows = np.concatenate([b.rows for b in batches])
    np.testing.assert_array_equal(rows, np.arange(len(store.rows)))
    first = batches[0]
    expected = torch.from_numpy(store.features[first.rows, 0].astype(np.float32))
    torch.testing.assert_close(first.bags.features.float(), expected)
    # group ids are dense and consistent with the store's slices and stains
    for batch in batches:
        slices = {
            (store.rows[r].case, store.rows[r].stain, store.rows[r].slice) for r in batch.rows
        }
        assert len(batch.bags.stain_of_slice) == len(slices)
        assert int(batch.bags.case_of_stain.max()) + 1 == len(batch.cases)


def test_training_batches_cap_slices_and_patches(data: StoreTensors, store: FeatureStore) -> None:
    cases = [c.case for c in store.cases]
    sampler = CaseSampler(
        data, cases, batch_cases=8, per_slice_cap=1, max_slices_per_stain=1, random_views=True
    )
    seen_views = set()
    rng = np.random.default_rng(0)
    for _ in range(5):
        (batch,) = list(sampler.batches(rng))
        keys = [(store.rows[r].case, store.rows[r].stain) for r in batch.rows]
        assert len(keys) == len(set(keys)), "one patch of one slice per stain"
        assert sorted(batch.cases) == sorted(cases)
        index = {(r.case, r.stain) for r in store.rows}
        assert set(keys) == index
        for i, row in enumerate(batch.rows):
            feature = batch.bags.features[i].numpy()
            views = [v for v in range(2) if np.array_equal(store.features[row, v], feature)]
            seen_views.update(views)
    assert seen_views == {0, 1}


def test_feature_statistics_in_chunks_equal_one_pass(
    data: StoreTensors, store: FeatureStore
) -> None:
    cases = [c.case for c in store.cases][:5]
    mean, std = data.feature_statistics(cases, chunk=7)
    rows = np.concatenate([np.arange(store.case(c).start, store.case(c).stop) for c in cases])
    x = torch.from_numpy(store.features[rows, 0].astype(np.float64))
    expected_std, expected_mean = torch.std_mean(x, dim=0)
    torch.testing.assert_close(mean, expected_mean.float())
    torch.testing.assert_close(std, expected_std.float())


def test_same_seed_same_losses(store: FeatureStore, data: StoreTensors) -> None:
    train, val = cases_of(store)
    config = tiny_config(store)
    first = Trainer(config, data, torch.device("cpu")).fit(train, val)
    second = Trainer(config, data, torch.device("cpu")).fit(train, val)
    assert [e.train_loss for e in first.history] == [e.train_loss for e in second.history]
    assert [e.val.loss for e in first.history] == [e.val.loss for e in second.history]
    other = Trainer(tiny_config(store, **{"train.seed": 1}), data, torch.device("cpu")).fit(
        train, val
    )
    assert [e.train_loss for e in other.history] != [e.train_loss for e in first.history]


def test_callback_sees_every_epoch_and_can_stop_training(
    store: FeatureStore, data: StoreTensors
) -> None:
    train, val = cases_of(store)
    trainer = Trainer(tiny_config(store), data, torch.device("cpu"))
    reports: list[EpochReport] = []
    trainer.fit(train, val, on_epoch=reports.append)
    assert [r.epoch for r in reports] == [1, 2, 3]
    assert all(r.val.n_cases == len(val) and np.isfinite(r.val.loss) for r in reports)

    class Pruned(Exception):
        pass

    def prune_at_two(report: EpochReport) -> None:
        if report.epoch == 2:
            raise Pruned

    with pytest.raises(Pruned):
        trainer.fit(train, val, on_epoch=prune_at_two)


def test_early_stopping_and_best_epoch(store: FeatureStore, data: StoreTensors) -> None:
    train, val = cases_of(store)
    config = tiny_config(
        store, **{"train.lr": 1e-12, "train.epochs": 20, "train.early_stopping": 2}
    )
    result = Trainer(config, data, torch.device("cpu")).fit(train, val)
    assert result.stopped_by == "early stopping"
    assert len(result.history) < 20
    assert result.best_val.loss == min(e.val.loss for e in result.history)
    assert result.history[result.best_epoch - 1].val.loss == result.best_val.loss


def test_diverging_run_stops_with_a_reason(store: FeatureStore, data: StoreTensors) -> None:
    train, val = cases_of(store)
    config = tiny_config(store, **{"train.lr": 1e30, "train.scheduler": "none"})
    with pytest.raises(TrainingError, match=r"training diverged at epoch \d+: .* lower train.lr"):
        Trainer(config, data, torch.device("cpu")).fit(train, val)


def test_focal_loss_with_gamma_zero_is_cross_entropy(
    store: FeatureStore, data: StoreTensors
) -> None:
    ce = Trainer(tiny_config(store), data, torch.device("cpu"))
    focal = Trainer(
        tiny_config(store, **{"train.loss": "focal", "train.focal_gamma": 0.0}),
        data,
        torch.device("cpu"),
    )
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.3], [-1.0, 1.0]])
    labels = torch.tensor([0, 1, 1])
    weights = torch.tensor([0.5, 1.5])
    torch.testing.assert_close(
        ce._loss(logits, labels, weights), focal._loss(logits, labels, weights)
    )
    sharper = Trainer(tiny_config(store, **{"train.loss": "focal"}), data, torch.device("cpu"))
    assert sharper._loss(logits, labels, weights) < ce._loss(logits, labels, weights)


def test_class_weights_from_training_split(store: FeatureStore, data: StoreTensors) -> None:
    trainer = Trainer(tiny_config(store), data, torch.device("cpu"))
    names = [c.case for c in store.cases]
    three_to_one = [n for n in names if store.case(n).class_index == 0][:3] + [
        n for n in names if store.case(n).class_index == 1
    ][:1]
    torch.testing.assert_close(trainer.class_weights(three_to_one), torch.tensor([0.5, 1.5]))


@pytest.mark.parametrize("penalty", ["entropy", "elasticnet"])
def test_penalties_enter_the_training_loss(
    store: FeatureStore, data: StoreTensors, penalty: str
) -> None:
    train, val = cases_of(store)
    overrides = {
        "regularization.penalty": penalty,
        "regularization.entropy.patch": 0.5,
        "regularization.elasticnet.l1.slice": 0.5,
        "regularization.elasticnet.l2.stain": 0.5,
    }
    result = Trainer(tiny_config(store, **overrides), data, torch.device("cpu")).fit(train, val)
    penalties = [e.train_penalty for e in result.history]
    assert all(p < 0 for p in penalties) if penalty == "entropy" else all(p > 0 for p in penalties)


def test_runs_stepped_in_turn_equal_runs_alone(store: FeatureStore, data: StoreTensors) -> None:
    """Each run draws from its own generators only: runs of the same seed (and one of another)
    trained in turn, epoch by epoch, with global draws in between, give what each gives alone."""
    train, val = cases_of(store)
    config = tiny_config(
        store, **{"train.epochs": 4, "train.early_stopping": None, "model.dropout": 0.25,
                  "data.per_slice_cap": 2, "data.augmented_views": True}
    )  # fmt: skip
    trainer = Trainer(config, data, torch.device("cpu"))
    alone = {seed: trainer.fit(train, val, seed=seed) for seed in (0, 1)}
    runs = [(0, trainer.start(train, val)), (0, trainer.start(train, val)),
            (1, trainer.start(train, val, seed=1))]  # fmt: skip
    torch.manual_seed(123)
    for _ in range(4):
        for _, run in runs:
            torch.rand(1000)
            np.random.rand(1000)
            report = run.train_epoch()
            run.step_scheduler(report.val.loss)
    for seed, run in runs:
        got, expected = run.result("epochs", 0.0), alone[seed]
        assert [e.train_loss for e in got.history] == [e.train_loss for e in expected.history]
        assert [e.val.loss for e in got.history] == [e.val.loss for e in expected.history]
        assert got.best_epoch == expected.best_epoch
        for key, value in expected.state_dict.items():
            assert torch.equal(got.state_dict[key], value), key
    assert alone[0].history[-1].train_loss != alone[1].history[-1].train_loss


def test_training_leaves_the_global_generators_alone(
    store: FeatureStore, data: StoreTensors
) -> None:
    train, val = cases_of(store)
    config = tiny_config(store, **{"model.dropout": 0.25, "data.per_slice_cap": 2})
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()
    Trainer(config, data, torch.device("cpu")).fit(train, val)
    assert torch.equal(torch.get_rng_state(), torch_state)
    after = np.random.get_state()
    assert after[0] == numpy_state[0]
    assert np.array_equal(after[1], numpy_state[1])
    assert after[2:] == numpy_state[2:]
