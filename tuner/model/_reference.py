"""The model as our users wrote it: one case at a time, nested loops over stains and slices.

Kept as the reference that the batched :class:`~tuner.model.HierarchicalMIL` must agree with
(same weights, same outputs and gradients) and as the baseline of the speed benchmarks.
"""

from __future__ import annotations

import torch

from tuner.model._mil import HierarchicalMIL

__all__ = ["Case", "loop_forward"]

Case = dict[str, list[torch.Tensor]]
"""One case: stain name -> list of slices, each ``(n_patches, in_dim)``."""


def loop_forward(model: HierarchicalMIL, case: Case) -> torch.Tensor:
    """Logits ``(n_classes,)`` of one case, pooling with plain softmaxes in nested loops."""
    stain_embeddings = []
    for slices in case.values():
        slice_embeddings = []
        for patches in slices:
            h = model.projector(patches)
            slice_embeddings.append(_pool(model, "patch", h))
        stain_embeddings.append(_pool(model, "slice", torch.stack(slice_embeddings)))
    case_embedding = _pool(model, "stain", torch.stack(stain_embeddings))
    logits: torch.Tensor = model.classifier(case_embedding)
    return logits


def _pool(model: HierarchicalMIL, level: str, h: torch.Tensor) -> torch.Tensor:
    if model.pooling == "mean":
        return h.mean(dim=0)
    weights = torch.softmax(model.attention[level](h), dim=0)
    return (weights.unsqueeze(-1) * h).sum(dim=0)
