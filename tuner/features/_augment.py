"""Augmented views of a patch, each fixed by (seed, row, view) so that stores are reproducible."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["AUGMENTATION", "augment"]

AUGMENTATION = {
    "flips": "horizontal and vertical, p=0.5 each",
    "rotation": "multiples of 90 degrees",
    "brightness": 0.1,
    "contrast": 0.1,
    "saturation": 0.1,
    "hue": 0.02,
}
"""What the augmented views (1..K-1) vary; view 0 is always the patch itself."""


def augment(image: torch.Tensor, seed: int, row: int, view: int) -> torch.Tensor:
    """One augmented copy of a ``(3, H, W)`` uint8 image, the same for the same seed/row/view."""
    from torchvision.transforms.v2 import functional as F  # imported here: torchvision is slow

    rng = np.random.default_rng([seed, row, view])
    flip_h, flip_v = rng.random(2) < 0.5
    turns = int(rng.integers(0, 4))
    brightness, contrast, saturation = 1 + rng.uniform(-0.1, 0.1, 3)
    hue = float(rng.uniform(-0.02, 0.02))
    if flip_h:
        image = image.flip(-1)
    if flip_v:
        image = image.flip(-2)
    image = torch.rot90(image, turns, dims=(-2, -1))
    image = F.adjust_brightness(image, float(brightness))
    image = F.adjust_contrast(image, float(contrast))
    image = F.adjust_saturation(image, float(saturation))
    result: torch.Tensor = F.adjust_hue(image, hue)
    return result.contiguous()
