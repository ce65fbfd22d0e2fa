"""The AUC's bootstrap interval and the chance loss (what a model that learned nothing scores)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from tuner.training import Metrics, auc_interval, chance_loss, classification_metrics


def scores(n_neg: int, n_pos: int, gap: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.array([0] * n_neg + [1] * n_pos)
    p1 = 1 / (1 + np.exp(-(rng.normal(size=len(labels)) + gap * labels)))
    return np.stack([1 - p1, p1], axis=1), labels


def test_the_interval_holds_the_auc_and_narrows_with_more_cases() -> None:
    widths = []
    for n in (10, 40, 400):
        probs, labels = scores(n, n, gap=1.0)
        interval = auc_interval(probs, labels)
        assert interval is not None
        low, high = interval
        assert low < roc_auc_score(labels, probs[:, 1]) < high
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2]
    assert 0.2 < widths[0] < 0.6, "20 cases: an AUC known to within a few tenths"


def test_the_rank_auc_of_a_resample_is_sklearns_with_ties() -> None:
    probs = np.array([[0.5, 0.5], [0.2, 0.8], [0.5, 0.5], [0.8, 0.2], [0.2, 0.8], [0.9, 0.1]])
    labels = np.array([0, 1, 1, 0, 0, 1])
    from tuner.training._metrics import _rank_auc

    ours = _rank_auc(probs[None, :, 1], (labels == 1)[None, :])
    assert ours[0] == pytest.approx(roc_auc_score(labels, probs[:, 1]))


def test_the_interval_of_three_classes_is_around_the_macro_auc() -> None:
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1, 2], 30)
    logits = rng.normal(size=(90, 3)) + 1.5 * np.eye(3)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    interval = auc_interval(probs, labels)
    assert interval is not None
    auc = classification_metrics(probs, labels, 0.5).auc
    assert auc is not None
    assert interval[0] < auc < interval[1]


def test_no_interval_with_a_class_of_one_case() -> None:
    probs, labels = scores(5, 1, gap=1.0)
    assert auc_interval(probs, labels) is None
    metrics = Metrics(0.5, 1.0, 1.0, 1.0, 6)
    assert metrics.auc_text() == "1.000"
    assert Metrics(0.5, 0.8, 1.0, 1.0, 6, (0.61, 0.93)).auc_text() == "0.800 (95 % CI 0.61-0.93)"


@pytest.mark.parametrize(
    ("counts", "weights"),
    [((10, 10), (1.0, 1.0)), ((30, 6), (0.33, 1.67)), ((5, 9, 2), (1, 2, 3))],
)
def test_chance_loss_is_the_least_loss_of_a_constant_prediction(
    counts: tuple[int, ...], weights: tuple[float, ...]
) -> None:
    labels = np.repeat(np.arange(len(counts)), counts)
    chance = chance_loss(labels, np.array(weights))
    # the least validation loss (the trainer's weighted cross-entropy) over constant logits
    logits = torch.zeros(len(counts), dtype=torch.float64, requires_grad=True)
    target = torch.from_numpy(labels)
    w = torch.tensor(weights, dtype=torch.float64)
    optimizer = torch.optim.LBFGS([logits], max_iter=200, tolerance_grad=1e-12)

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        value = F.cross_entropy(logits.expand(len(labels), -1), target, weight=w)
        value.backward()
        return value

    optimizer.step(loss)
    assert chance == pytest.approx(float(loss().detach()), abs=1e-9)
    if counts == (10, 10):
        assert chance == pytest.approx(math.log(2))
