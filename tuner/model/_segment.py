"""Softmax and sums within groups of a flat tensor (the ragged levels of a batch of cases).

``group: (n,)`` maps each of ``n`` items to one of ``n_groups`` groups. Items of a group need
not be adjacent, but every group must have at least one item.
"""

from __future__ import annotations

import torch

__all__ = ["segment_mean", "segment_softmax", "segment_sum"]


def segment_sum(values: torch.Tensor, group: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Sum of ``values: (n, ...)`` per group: ``(n_groups, ...)``."""
    out = values.new_zeros((n_groups, *values.shape[1:]))
    return out.index_add_(0, group, values)


def segment_mean(values: torch.Tensor, group: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Mean of ``values: (n, ...)`` per group: ``(n_groups, ...)``."""
    sums = segment_sum(values, group, n_groups)
    counts = torch.bincount(group, minlength=n_groups).clamp_min(1).to(values.dtype)
    return sums / counts.view(-1, *([1] * (values.dim() - 1)))


def segment_softmax(logits: torch.Tensor, group: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Softmax of ``logits: (n,)`` within each group: ``(n,)``, summing to one per group.

    The per-group maximum is subtracted first (it does not change the result), so large
    logits do not overflow; a group of one item gets weight 1.
    """
    top = logits.new_full((n_groups,), float("-inf"))
    top = top.scatter_reduce(0, group, logits.detach(), reduce="amax", include_self=True)
    exp = torch.exp(logits - top[group])
    return exp / segment_sum(exp, group, n_groups)[group]
