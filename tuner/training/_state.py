"""Everything a training run needs to continue after the epoch it stopped at.

A :class:`TrainState` holds the model, optimiser, scheduler and loss-scaler states, the states of
the run's own generators (see :class:`~tuner.training.RunGenerators`; the torch one of the
run's device), the history of epochs and the best epoch so far, as plain tensors, numbers and
dicts (loadable with ``torch.load(..., weights_only=True)``). Restoring it and training on gives
the same epochs as a run that was never interrupted, on the same device type.
"""

from __future__ import annotations

import io
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from tuner._files import write_atomic
from tuner.training._metrics import Metrics

__all__ = ["TrainState", "load_state", "load_states", "save_state", "save_states"]

logger = logging.getLogger(__name__)


@dataclass
class TrainState:
    epoch: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any] | None
    scaler: dict[str, Any]
    numpy_rng: dict[str, Any]
    torch_rng: torch.Tensor
    history: list[dict[str, Any]]
    best: dict[str, Any] | None
    torch_rng_device: str = "cpu"
    """The device type of the run's torch generator, whose state ``torch_rng`` is."""

    def best_metrics(self) -> Metrics | None:
        return None if self.best is None else Metrics(**self.best["val"])


def metrics_dict(metrics: Metrics) -> dict[str, Any]:
    return asdict(metrics)


def save_state(state: TrainState, path: Path) -> None:
    """Write atomically (:func:`tuner._files.write_atomic`): a reader never sees half a file."""
    buffer = io.BytesIO()
    torch.save(asdict(state), buffer)
    write_atomic(path, buffer.getvalue())


def load_state(path: Path) -> TrainState | None:
    """The state saved at ``path``, or None when there is none (or it is unreadable)."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        return TrainState(**data)
    except FileNotFoundError:
        return None
    except Exception as error:  # a torn or foreign file: unpickling raises many kinds
        logger.warning("ignoring unreadable training state %s (%s)", path, type(error).__name__)
        return None


def save_states(states: list[TrainState], path: Path) -> None:
    """Write the states of several runs (the members of a lockstep) atomically, as one file."""
    buffer = io.BytesIO()
    torch.save({"members": [asdict(state) for state in states]}, buffer)
    write_atomic(path, buffer.getvalue())


def load_states(path: Path) -> list[TrainState] | None:
    """The states saved at ``path`` by :func:`save_states` (or one by :func:`save_state`), or
    None when there are none (or the file is unreadable)."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        members = data.get("members", [data])
        return [TrainState(**member) for member in members]
    except FileNotFoundError:
        return None
    except Exception as error:  # a torn or foreign file: unpickling raises many kinds
        logger.warning("ignoring unreadable training state %s (%s)", path, type(error).__name__)
        return None
