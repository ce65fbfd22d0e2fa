"""Choosing the torch device from a user's ``device`` value, and checking GPU numbers."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from tuner.errors import DeviceError

__all__ = ["check_gpus", "gpu_count", "resolve_device"]


def gpu_count() -> int:
    """The GPUs CUDA can use in this process (those ``CUDA_VISIBLE_DEVICES`` leaves visible)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` (the first GPU if there is one, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    spec = spec.strip().lower()
    if spec == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise DeviceError(
            f"device {spec!r} is not a device; use auto, cpu, cuda or cuda:N", params=("device",)
        ) from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise DeviceError(
            f"device {spec!r} is not supported; use auto, cpu, cuda or cuda:N", params=("device",)
        )
    count = gpu_count()
    index = device.index or 0
    if index >= count:
        have = f"GPUs cuda:0..cuda:{count - 1}" if count else "no GPU"
        raise DeviceError(
            f"device {spec!r} does not exist (this machine has {have}); use cpu",
            params=("device",),
        )
    return torch.device("cuda", index)


def check_gpus(numbers: Iterable[int]) -> None:
    """Raise unless every GPU number exists here, counted as ``nvidia-smi`` (or the job's
    ``CUDA_VISIBLE_DEVICES``) numbers them: 0, 1, ..."""
    count = gpu_count()
    missing = sorted({n for n in numbers if n >= count})
    if missing:
        listed = ", ".join(map(str, missing))
        fix = f"give GPU numbers from 0 to {count - 1}" if count else "run workers on the CPU"
        have = f"{count} GPU{'s' if count > 1 else ''}" if count else "no GPU that CUDA can use"
        raise DeviceError(f"GPU {listed} does not exist (this machine has {have}); {fix}")
