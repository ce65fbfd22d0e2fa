"""Dropout that draws its masks from a given generator, with cheap masks on CPU.

``nn.Dropout`` cannot take a generator: it draws from the global one, which several models
trained in one process would share. :func:`dropout` takes the ``generator`` of the training run
(None: torch's default generator of the tensor's device, as ``nn.Dropout``), so a run's masks
depend on its seed alone.

On CPU, ``nn.Dropout``'s one Bernoulli variable per element costs 8-10 ns (on the 2-core
machine we measured: a fifth of a training step of the MIL model). :func:`dropout_mask` takes
16 random bits per element from numpy's PCG64 generator instead (about 0.7 ns per element),
seeded with one draw from the given torch generator. An element is kept when its 16 bits, read
as a signed integer, are at least ``round(p * 65536) - 32768``, and kept elements are scaled by
``1 / keep``, ``keep`` being the exact keep probability: the drop rate is ``p`` rounded to a
multiple of 1/65536 (``0.25`` exactly, ``0.05`` as ``0.050003``) and the output's expectation is
the input. On other devices, for tensors of fewer than 8192 elements (where a mask's fixed cost of
about 40 us outweighs the saving) and for ``p`` within 1/131072 of 0 or 1, the mask is
``bernoulli_`` on the tensor's device, from the same generator.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["Dropout", "dropout", "dropout_mask"]

_LEVELS = 1 << 16
_MIN_ELEMENTS = 8192


def dropout_mask(
    shape: tuple[int, ...], p: float, dtype: torch.dtype, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, float] | None:
    """A CPU mask of ``0`` (dropped) and ``1 / keep`` (kept) of ``shape``, and ``1 / keep``;
    None when this module's CPU masks do not apply (see the module docstring).

    ``generator``: a CPU generator (None: torch's default one); one number is drawn from it.
    """
    threshold = round(p * _LEVELS)
    numel = 1
    for size in shape:
        numel *= size
    if threshold <= 0 or threshold >= _LEVELS or numel < _MIN_ELEMENTS:
        return None
    seed = int(torch.randint(0, 1 << 62, (), dtype=torch.int64, generator=generator))
    bits = torch.from_numpy(np.random.PCG64(seed).random_raw((numel + 3) // 4).view(np.int16))
    mask = torch.empty(shape, dtype=dtype)
    # ``ge`` straight into a float tensor: five times faster than a bool mask and a cast
    torch.ge(bits[:numel].view(shape), threshold - _LEVELS // 2, out=mask)
    scale = _LEVELS / (_LEVELS - threshold)
    return mask.mul_(scale), scale


def dropout(
    x: torch.Tensor, p: float, training: bool = True, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``x`` with elements zeroed at rate ``p`` and the rest scaled, when ``training``; the
    mask drawn from ``generator`` (on ``x``'s device; None: torch's default one)."""
    if not training or p == 0:
        return x
    if p >= 1:
        return x * 0.0
    made = dropout_mask(x.shape, p, x.dtype, generator) if x.device.type == "cpu" else None
    if made is None:
        keep = 1.0 - p
        mask = torch.empty_like(x).bernoulli_(keep, generator=generator).div_(keep)
        return x * mask
    return x * made[0]


class Dropout(nn.Module):
    """:func:`dropout` as a module; ``p`` as in ``nn.Dropout``, the generator given per call."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"dropout probability must be in [0, 1], but got {p=}")
        self.p = p

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return dropout(x, self.p, self.training, generator)

    def extra_repr(self) -> str:
        return f"p={self.p}"
