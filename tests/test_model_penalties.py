"""Attention penalties: hand-computed values, per-level weights, size normalisation."""

from __future__ import annotations

import math

import pytest
import torch

from tuner.model import LevelAttention, elasticnet_penalty, entropy_penalty


def level(weights: list[float], logits: list[float], group: list[int]) -> LevelAttention:
    return LevelAttention(
        torch.tensor(logits, dtype=torch.float64),
        torch.tensor(weights, dtype=torch.float64),
        torch.tensor(group),
        max(group) + 1,
    )


def test_entropy_by_hand() -> None:
    att = level([0.5, 0.5, 1.0, 0.7, 0.2, 0.1], [0.0] * 6, [0, 0, 1, 2, 2, 2])
    h2 = -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1)) / math.log(3)
    expected = -0.3 * (1.0 + h2) / 2  # the single-item group 1 is left out
    assert entropy_penalty({"patch": att}, {"patch": 0.3}).item() == pytest.approx(expected)
    assert expected == pytest.approx(-0.259477, abs=1e-6)


def test_entropy_weights_are_per_level() -> None:
    uniform = level([0.25] * 4, [0.0] * 4, [0, 0, 0, 0])
    peaked = level([1.0, 0.0], [0.0, 0.0], [0, 0])
    penalty = entropy_penalty({"patch": uniform, "slice": peaked}, {"patch": 0.2, "slice": 5.0})
    assert penalty.item() == pytest.approx(-0.2)


def test_elasticnet_by_hand() -> None:
    att = level([0.5, 0.5, 1.0], [1.0, -3.0, 2.0], [0, 0, 1])
    penalty = elasticnet_penalty({"stain": att}, {"stain": 0.1}, {"stain": 0.01})
    assert penalty.item() == pytest.approx(0.1 * (2 + 2) / 2 + 0.01 * (5 + 4) / 2)


def test_penalties_do_not_depend_on_bag_size() -> None:
    for n in (10, 5000):
        uniform = level([1 / n] * n, [0.5] * n, [0] * n)
        assert entropy_penalty({"patch": uniform}, {"patch": 1.0}).item() == pytest.approx(-1.0)
        assert elasticnet_penalty({"patch": uniform}, {"patch": 1.0}, {"patch": 1.0}).item() == (
            pytest.approx(0.5 + 0.25)
        )


def test_zero_weights_give_zero_and_gradients_flow() -> None:
    logits = torch.tensor([0.3, -0.2, 1.0], requires_grad=True)
    weights = torch.softmax(logits, 0)
    att = LevelAttention(logits, weights, torch.tensor([0, 0, 0]), 1)
    assert entropy_penalty({"patch": att}, {"patch": 0.0}).item() == 0
    (
        entropy_penalty({"patch": att}, {"patch": 1.0})
        + elasticnet_penalty({"patch": att}, {"patch": 1.0}, {"patch": 1.0})
    ).backward()
    assert torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0
