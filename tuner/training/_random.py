"""The random number generators of one training run.

Every random draw of a training run comes from its own generators, seeded from the run's seed:
the initial weights and the dropout masks from a ``torch.Generator`` on the run's device, the
batch order, the patch and slice sub-sampling and the augmented views from a numpy
``Generator``. No global generator is read or reseeded, so several runs can train in one
process, in turn, each giving what it gives alone. Their states travel with the
:class:`~tuner.training.TrainState`, so a resumed run draws what an unbroken one would.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["RunGenerators"]

logger = logging.getLogger(__name__)


@dataclass
class RunGenerators:
    """``torch_rng`` on the run's device (weights, dropout); ``numpy_rng`` (sampling)."""

    torch_rng: torch.Generator
    numpy_rng: np.random.Generator
    seed: int

    @classmethod
    def seeded(cls, seed: int, device: torch.device) -> RunGenerators:
        """Fresh generators: a CPU run draws the weights and the batch order that
        ``torch.manual_seed(seed)`` and ``np.random.default_rng(seed)`` would give."""
        torch_rng = torch.Generator(device=device).manual_seed(seed)
        return cls(torch_rng, np.random.default_rng(seed), seed)

    @property
    def device_type(self) -> str:
        return self.torch_rng.device.type

    def torch_state(self) -> torch.Tensor:
        return self.torch_rng.get_state()

    def numpy_state(self) -> dict[str, Any]:
        return dict(self.numpy_rng.bit_generator.state)

    def restore(
        self, numpy_state: dict[str, Any], torch_state: torch.Tensor, device: str, epoch: int
    ) -> None:
        """Continue after ``epoch`` from saved states; ``device``: the device type the torch
        state came from.

        A torch state of another device type cannot be restored (a CUDA generator's state is
        not a CPU one's): the torch generator then starts afresh from the seed and ``epoch``, so
        the run goes on deterministically, though not as an unbroken run on the first device.
        """
        self.numpy_rng.bit_generator.state = numpy_state
        if device == self.device_type:
            self.torch_rng.set_state(torch_state)
            return
        logger.warning(
            "the training state was saved on %s and resumes on %s: dropout masks differ from an "
            "unbroken run's from here on",
            device, self.device_type,
        )  # fmt: skip
        seed = np.random.SeedSequence([abs(self.seed), epoch]).generate_state(1, np.uint64)[0]
        self.torch_rng.manual_seed(int(seed) >> 1)
