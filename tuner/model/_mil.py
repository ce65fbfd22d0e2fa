"""The hierarchical attention MIL model: patches -> slices -> stains -> case -> classes.

A batch of ragged cases is given as flat tensors with group indices (:class:`Bags`); each level
is one attention module, a softmax within groups and a sum within groups, for all cases at
once. There is no Python loop over cases, stains, slices or patches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from tuner.model._segment import segment_softmax, segment_sum

__all__ = [
    "LEVELS",
    "Attention",
    "Bags",
    "HierarchicalMIL",
    "LevelAttention",
    "MILOutput",
    "StandardizedLinear",
]

LEVELS = ("patch", "slice", "stain")
"""The attention levels, named for what is weighted: patches in a slice, slices in a stain,
stains in a case."""

Pooling = Literal["attention", "mean"]


@dataclass
class Bags:
    """A batch of ragged cases as flat tensors.

    - ``features: (n_patches, in_dim)``
    - ``slice_of_patch: (n_patches,)``, values in ``[0, n_slices)``
    - ``stain_of_slice: (n_slices,)``, values in ``[0, n_stains)``; a "stain" here is one stain
      of one case
    - ``case_of_stain: (n_stains,)``, values in ``[0, n_cases)``

    Every slice, stain and case has at least one member.
    """

    features: torch.Tensor
    slice_of_patch: torch.Tensor
    stain_of_slice: torch.Tensor
    case_of_stain: torch.Tensor
    n_cases: int

    @classmethod
    def from_cases(cls, cases: list[dict[str, list[torch.Tensor]]]) -> Bags:
        """Flatten cases given as stain name -> list of slices ``(n_patches, in_dim)``."""
        features: list[torch.Tensor] = []
        slice_of_patch: list[torch.Tensor] = []
        stain_of_slice: list[int] = []
        case_of_stain: list[int] = []
        for case_number, case in enumerate(cases):
            for slices in case.values():
                for patches in slices:
                    slice_of_patch.append(torch.full((len(patches),), len(stain_of_slice)))
                    stain_of_slice.append(len(case_of_stain))
                    features.append(patches)
                case_of_stain.append(case_number)
        return cls(
            torch.cat(features),
            torch.cat(slice_of_patch),
            torch.tensor(stain_of_slice),
            torch.tensor(case_of_stain),
            len(cases),
        )

    def groups(self) -> dict[str, tuple[torch.Tensor, int]]:
        """Per level: the group of each item and the number of groups."""
        return {
            "patch": (self.slice_of_patch, len(self.stain_of_slice)),
            "slice": (self.stain_of_slice, len(self.case_of_stain)),
            "stain": (self.case_of_stain, self.n_cases),
        }

    def to(self, device: torch.device | str) -> Bags:
        return Bags(
            self.features.to(device, non_blocking=True),
            self.slice_of_patch.to(device, non_blocking=True),
            self.stain_of_slice.to(device, non_blocking=True),
            self.case_of_stain.to(device, non_blocking=True),
            self.n_cases,
        )


@dataclass
class LevelAttention:
    """One level's attention: ``logits`` and ``weights`` of each item, and its ``group``."""

    logits: torch.Tensor
    weights: torch.Tensor
    group: torch.Tensor
    n_groups: int


@dataclass
class MILOutput:
    """``logits: (n_cases, n_classes)`` and the attention of each level (see :data:`LEVELS`)."""

    logits: torch.Tensor
    attention: dict[str, LevelAttention]


class Attention(nn.Module):
    """Attention logits of items: ``(n, embed_dim) -> (n,)``.

    ``Linear(embed -> attn) -> tanh -> dropout -> Linear(attn -> 1, no bias)``; gated (Ilse et
    al., 2018) multiplies the tanh branch by ``sigmoid(Linear(embed -> attn))``. The last layer
    has no bias: softmax ignores a constant shift, so a bias would only make an L1/L2 penalty on
    the logits meaningless.
    """

    def __init__(self, embed_dim: int, attn_dim: int, dropout: float, gated: bool) -> None:
        super().__init__()
        self.hidden = nn.Linear(embed_dim, attn_dim)
        self.gate = nn.Linear(embed_dim, attn_dim) if gated else None
        self.dropout = nn.Dropout(dropout)
        self.score = nn.Linear(attn_dim, 1, bias=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        a = torch.tanh(self.hidden(h))
        if self.gate is not None:
            a = a * torch.sigmoid(self.gate(h))
        logits: torch.Tensor = self.score(self.dropout(a)).squeeze(-1)
        return logits


class StandardizedLinear(nn.Linear):
    """``Linear`` applied to standardised inputs ``(x - mean) * scale``, folded into the weights.

    ``mean`` and ``scale`` are buffers (saved with the model), set from the training data with
    :meth:`set_input_statistics`; until then they are the identity. Folding costs
    ``O(out * in)`` per call instead of an extra pass over the ``(n, in)`` input.
    """

    mean: torch.Tensor
    scale: torch.Tensor

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(in_features, out_features)
        self.register_buffer("mean", torch.zeros(in_features))
        self.register_buffer("scale", torch.ones(in_features))

    def set_input_statistics(
        self, mean: torch.Tensor, std: torch.Tensor, eps: float = 1e-2
    ) -> None:
        """Standardise with these per-feature statistics; ``eps`` floors tiny deviations."""
        self.mean.copy_(mean)
        self.scale.copy_(1.0 / torch.sqrt(std.square() + eps**2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight * self.scale
        bias = self.bias - weight @ self.mean
        return nn.functional.linear(x, weight.to(x.dtype), bias.to(x.dtype))


class HierarchicalMIL(nn.Module):
    """Patch projector -> attention pooling at three levels -> classifier.

    ``pooling="mean"`` replaces every attention module by uniform weights (the baseline that
    averages patches, slices and stains).
    """

    def __init__(
        self,
        in_dim: int,
        n_classes: int = 2,
        *,
        embed_dim: int = 512,
        attn_dim: int = 128,
        dropout: float = 0.25,
        gated: bool = False,
        pooling: Pooling = "attention",
    ) -> None:
        super().__init__()
        self.pooling = pooling
        self.projector = nn.Sequential(
            StandardizedLinear(in_dim, embed_dim), nn.ReLU(), nn.Dropout(dropout)
        )
        self.attention = nn.ModuleDict(
            {level: Attention(embed_dim, attn_dim, dropout, gated) for level in LEVELS}
            if pooling == "attention"
            else {}
        )
        self.classifier = nn.Linear(embed_dim, n_classes)

    def set_input_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Standardise input features with these per-feature statistics (see
        :class:`StandardizedLinear`)."""
        first = self.projector[0]
        assert isinstance(first, StandardizedLinear)
        first.set_input_statistics(mean, std)

    def forward(self, bags: Bags) -> MILOutput:
        h = self.projector(bags.features)
        attention: dict[str, LevelAttention] = {}
        for level, (group, n_groups) in bags.groups().items():
            h, attention[level] = self._pool(level, h, group, n_groups)
        return MILOutput(self.classifier(h), attention)

    def _pool(
        self, level: str, h: torch.Tensor, group: torch.Tensor, n_groups: int
    ) -> tuple[torch.Tensor, LevelAttention]:
        if self.pooling == "attention":
            logits = self.attention[level](h)
            weights = segment_softmax(logits, group, n_groups)
        else:
            logits = h.new_zeros(len(h))
            counts = torch.bincount(group, minlength=n_groups).to(h.dtype)
            weights = 1.0 / counts[group]
        pooled = segment_sum(weights.unsqueeze(-1) * h, group, n_groups)
        return pooled, LevelAttention(logits, weights, group, n_groups)
