"""Choosing the torch device from a user's ``--device`` value."""

from __future__ import annotations

import torch

from tuner.errors import TunerError

__all__ = ["resolve_device"]


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` (the first GPU if there is one, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    spec = spec.strip().lower()
    if spec == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise TunerError(
            f"--device {spec!r} is not a device; use auto, cpu, cuda or cuda:N"
        ) from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise TunerError(f"--device {spec!r} is not supported; use auto, cpu, cuda or cuda:N")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = device.index or 0
    if index >= count:
        have = f"GPUs cuda:0..cuda:{count - 1}" if count else "no GPU"
        raise TunerError(f"--device {spec!r} does not exist (this machine has {have}); use cpu")
    return torch.device("cuda", index)
