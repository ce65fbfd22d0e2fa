"""The hierarchical attention MIL model: patches -> slices -> stains -> case -> classes.

A batch of ragged cases is given as flat tensors with group indices (:class:`Bags`); each level
is one attention module, a softmax within groups and a sum within groups, for all cases at
once. There is no Python loop over cases, stains, slices or patches.

On CPU the patch level (projector, patch attention, pooling into slices) runs over row chunks
of whole slices, about ``patch_chunk`` patches each (a setting of each model): every chunk's
``(rows, embed_dim)`` intermediates then stay in the CPU caches and in reused memory, instead of
each op of a large batch streaming (and page-faulting in) a fresh tensor of hundreds of MB. The
chunks are few (a step of the default config, 8 cases of 12 slices of 64 patches, has 3; one of
16 cases of 9 slices of 500 patches has 35), so this is not a loop over slices; the result is
the same sums in another order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from tuner.model._dropout import Dropout
from tuner.model._linear import Linear
from tuner.model._projector import Projector, StandardizedLinear
from tuner.model._segment import segment_softmax, segment_sum

__all__ = [
    "LEVELS",
    "Attention",
    "Bags",
    "HierarchicalMIL",
    "LevelAttention",
    "MILOutput",
    "Projector",
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

    Every slice, stain and case has at least one member. ``features`` may be float16 (as
    stored); the model computes in its own dtype (or autocast's). The patches of a slice should
    be adjacent rows, slices numbered in row order (``slice_of_patch`` non-decreasing), as
    :meth:`from_cases` and the trainer's sampler build them: the model then processes the patch
    level in cache-sized chunks on CPU. Bags in any other order give the same result, slower.
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
        self.hidden = Linear(embed_dim, attn_dim)
        self.gate = Linear(embed_dim, attn_dim) if gated else None
        self.dropout = Dropout(dropout)
        self.score = nn.Linear(attn_dim, 1, bias=False)

    def forward(self, h: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``generator``: dropout's (see :func:`~tuner.model.dropout`)."""
        a = torch.tanh(self.hidden(h))
        if self.gate is not None:
            a = a * torch.sigmoid(self.gate(h))
        logits: torch.Tensor = self.score(self.dropout(a, generator)).squeeze(-1)
        return logits


class HierarchicalMIL(nn.Module):
    """Patch projector -> attention pooling at three levels -> classifier.

    ``pooling="mean"`` replaces every attention module by uniform weights (the baseline that
    averages patches, slices and stains). ``patch_chunk`` is the number of patches the patch
    level processes at a time on CPU (see the module docstring; None: all at once); it changes
    speed and memory traffic, not results.

    The initial weights are drawn from ``generator`` (None: torch's default generator of
    ``device``), in the order and with the distributions of ``nn.Linear``: a CPU generator seeded
    with ``s`` gives the weights that ``torch.manual_seed(s)`` and a plain construction give.
    Dropout draws from the generator given to :meth:`forward`.
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
        patch_chunk: int | None = 2048,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.pooling = pooling
        self.patch_chunk = patch_chunk
        with torch.device("meta"):  # no memory and no random draws until reset_parameters
            self.projector = Projector(in_dim, embed_dim, dropout)
            self.attention = nn.ModuleDict(
                {level: Attention(embed_dim, attn_dim, dropout, gated) for level in LEVELS}
                if pooling == "attention"
                else {}
            )
            self.classifier = nn.Linear(embed_dim, n_classes)
        self.to_empty(device=device if device is not None else "cpu")
        self.reset_parameters(generator)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Initialise every weight as ``nn.Linear`` does, drawing from ``generator``; inputs
        not standardised."""
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, StandardizedLinear):
                    module.mean.zero_()
                    module.scale.fill_(1.0)
                if isinstance(module, nn.Linear):
                    _init_linear(module, generator)

    def set_input_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Standardise input features with these per-feature statistics (see
        :class:`StandardizedLinear`)."""
        self.projector.linear.set_input_statistics(mean, std)

    def forward(self, bags: Bags, generator: torch.Generator | None = None) -> MILOutput:
        """``generator``: where dropout draws its masks in training mode (on the model's device;
        None: torch's default generator)."""
        h, patch = self._patch_level(bags, generator)
        attention = {"patch": patch}
        for level in LEVELS[1:]:
            group, n_groups = bags.groups()[level]
            h, attention[level] = self._pool(level, h, group, n_groups, generator)
        return MILOutput(self.classifier(h), attention)

    def _patch_level(
        self, bags: Bags, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, LevelAttention]:
        """Project the patches and pool them into slices, chunk by chunk: ``(n_slices, embed)``
        and the patch level's attention."""
        pooled, logits, weights = [], [], []
        chunks = self._chunks(bags)
        folded = self.projector.linear.folded() if len(chunks) > 1 else None
        for rows, first, n_slices in chunks:
            h = self.projector(bags.features[rows], folded, generator)
            group = bags.slice_of_patch[rows] - first if first else bags.slice_of_patch[rows]
            chunk_pooled, att = self._pool("patch", h, group, n_slices, generator)
            pooled.append(chunk_pooled)
            logits.append(att.logits)
            weights.append(att.weights)
        n_slices = len(bags.stain_of_slice)
        if len(pooled) == 1:
            return pooled[0], LevelAttention(logits[0], weights[0], bags.slice_of_patch, n_slices)
        return torch.cat(pooled), LevelAttention(
            torch.cat(logits), torch.cat(weights), bags.slice_of_patch, n_slices
        )

    def _chunks(self, bags: Bags) -> list[tuple[slice, int, int]]:
        """Row ranges of whole slices, each with its first slice and number of slices.

        Slices are cut where a slice starts in a new window of ``patch_chunk`` rows, so a chunk
        holds at most ``patch_chunk`` rows plus the rest of its last slice.
        """
        n, n_slices = len(bags.features), len(bags.stain_of_slice)
        whole = [(slice(0, n), 0, n_slices)]
        chunk = self.patch_chunk
        if chunk is None or n <= chunk or bags.features.device.type != "cpu":
            return whole
        group = bags.slice_of_patch
        if not bool((group[1:] >= group[:-1]).all()):
            return whole
        sizes = torch.bincount(group, minlength=n_slices)
        starts = sizes.cumsum(0) - sizes
        _, slices_per_chunk = torch.unique_consecutive(starts // chunk, return_counts=True)
        first_slice = [0, *slices_per_chunk.cumsum(0).tolist()]
        row = [*starts[first_slice[:-1]].tolist(), n]
        return [
            (slice(row[i], row[i + 1]), first_slice[i], first_slice[i + 1] - first_slice[i])
            for i in range(len(row) - 1)
        ]

    def _pool(
        self,
        level: str,
        h: torch.Tensor,
        group: torch.Tensor,
        n_groups: int,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, LevelAttention]:
        if self.pooling == "attention":
            logits = self.attention[level](h, generator)
            weights = segment_softmax(logits, group, n_groups)
        else:
            logits = h.new_zeros(len(h))
            counts = torch.bincount(group, minlength=n_groups).to(h.dtype)
            weights = 1.0 / counts[group]
        pooled = segment_sum(weights.unsqueeze(-1) * h, group, n_groups)
        return pooled, LevelAttention(logits, weights, group, n_groups)


def _init_linear(linear: nn.Linear, generator: torch.Generator | None) -> None:
    """``nn.Linear.reset_parameters`` with a generator."""
    nn.init.kaiming_uniform_(linear.weight, a=math.sqrt(5), generator=generator)
    if linear.bias is not None:
        fan_in = linear.weight.shape[1]
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        nn.init.uniform_(linear.bias, -bound, bound, generator=generator)
