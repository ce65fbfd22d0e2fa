"""Attention penalties, each with its own weight per level, normalised per group.

For a level with groups ``g`` (the slices of a batch for the ``patch`` level, and so on), items
``i`` in ``g``, ``n_g`` items per group, softmax weights ``w_i`` and pre-softmax logits ``a_i``:

Entropy (pushes attention away from collapsing onto one item)::

    penalty = -lambda * mean over groups with n_g >= 2 of  H_g / log(n_g),
    H_g = -sum_i w_i log w_i

``H_g / log(n_g)`` is 1 for uniform attention and 0 for attention on one item, whatever the size
of the group; groups of one item have no choice and are left out.

ElasticNet (keeps logits small and sparse)::

    penalty = lambda1 * mean_g mean_{i in g} |a_i|  +  lambda2 * mean_g mean_{i in g} a_i^2

Averaging within each group first means a weight has the same effect on a slice of 10 patches
as on one of 5,000, and on a batch of one case as on one of sixteen.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from tuner.model._mil import LevelAttention
from tuner.model._segment import segment_mean, segment_sum

__all__ = ["elasticnet_penalty", "entropy_penalty"]


def entropy_penalty(
    attention: Mapping[str, LevelAttention], weights: Mapping[str, float]
) -> torch.Tensor:
    """``-sum_level lambda_level * mean normalised entropy`` (see the module docstring)."""
    total = _zero(attention)
    for level, lam in weights.items():
        if lam == 0 or level not in attention:
            continue
        att = attention[level]
        entropy = -segment_sum(
            torch.special.xlogy(att.weights, att.weights), att.group, att.n_groups
        )
        sizes = torch.bincount(att.group, minlength=att.n_groups)
        choice = sizes >= 2
        if bool(choice.any()):
            normalised = entropy[choice] / torch.log(sizes[choice].to(entropy.dtype))
            total = total - lam * normalised.mean()
    return total


def elasticnet_penalty(
    attention: Mapping[str, LevelAttention],
    l1: Mapping[str, float],
    l2: Mapping[str, float],
) -> torch.Tensor:
    """``sum_level l1 * mean|logits| + l2 * mean logits^2``, averaged per group first."""
    total = _zero(attention)
    for level, att in attention.items():
        lam1, lam2 = l1.get(level, 0.0), l2.get(level, 0.0)
        if lam1:
            total = total + lam1 * segment_mean(att.logits.abs(), att.group, att.n_groups).mean()
        if lam2:
            total = (
                total + lam2 * segment_mean(att.logits.square(), att.group, att.n_groups).mean()
            )
    return total


def _zero(attention: Mapping[str, LevelAttention]) -> torch.Tensor:
    some = next(iter(attention.values()), None)
    return torch.zeros(()) if some is None else some.logits.new_zeros(())
