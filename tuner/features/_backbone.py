"""The frozen patch encoder: torchvision's DenseNet121 trunk, global-average pooled, 1024-d."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tuner.errors import StoreError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Backbone", "WeightsSpec", "build_backbone"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FEATURE_DIM = 1024

# torchvision's own fix for DenseNet checkpoints saved before its module names changed.
_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


@dataclass(frozen=True)
class WeightsSpec:
    """Which weights the backbone has: ``imagenet``, ``random`` (seeded) or a file."""

    kind: str
    path: str | None = None
    sha256: str | None = None
    seed: int | None = None

    @classmethod
    def parse(cls, value: str, *, seed: int = 0) -> WeightsSpec:
        if value in ("imagenet", "random"):
            return cls(kind=value, seed=seed if value == "random" else None)
        path = Path(value)
        if not path.is_file():
            raise StoreError(
                f"--weights {value!r} is neither 'imagenet', 'random' nor an existing file; "
                "pass a DenseNet121 state-dict file (.pth) or one of those names"
            )
        with path.open("rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        return cls(kind="file", path=str(path.resolve()), sha256=digest)

    def describe(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


class Backbone(nn.Module):
    """DenseNet121 features -> ReLU -> global average pool: ``(B, 3, H, W) -> (B, 1024)``."""

    def __init__(self, trunk: nn.Module) -> None:
        super().__init__()
        self.trunk = trunk

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        maps = torch.relu(self.trunk(images))
        return maps.mean(dim=(2, 3))


def build_backbone(weights: WeightsSpec) -> Backbone:
    """Build the frozen backbone in eval mode with the given weights."""
    from torchvision.models import DenseNet121_Weights, densenet121

    if weights.kind == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(weights.seed or 0)
            model = densenet121(weights=None)
    elif weights.kind == "imagenet":
        model = densenet121(weights=None)
        try:
            state = DenseNet121_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
        except OSError as exc:  # URLError is an OSError
            raise StoreError(
                f"could not download the ImageNet weights of DenseNet121 ({exc}); on an offline "
                "machine download densenet121-a639ec97.pth elsewhere and pass --weights FILE"
            ) from None
        model.load_state_dict(_fix_keys(state))
    else:
        model = densenet121(weights=None)
        _load_file(model, Path(weights.path or ""))
    backbone = Backbone(model.features)
    backbone.eval().requires_grad_(False)
    return backbone


def _load_file(model: nn.Module, path: Path) -> None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise StoreError(
            f"--weights file {str(path)!r} is not a PyTorch state dict ({type(exc).__name__}); "
            "save one with torch.save(model.state_dict(), FILE)"
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise StoreError(f"--weights file {str(path)!r} does not hold a state dict")
    state = _fix_keys({k.removeprefix("module."): v for k, v in state.items()})
    if not any(k.startswith("features.") for k in state):
        state = {f"features.{k}": v for k, v in state.items()}
    wanted = {k for k in model.state_dict() if k.startswith("features.")}
    missing = sorted(wanted - state.keys())
    if missing:
        raise StoreError(
            f"--weights file {str(path)!r} does not fit DenseNet121: {len(missing)} weight(s) "
            f"missing, e.g. {missing[0]!r}"
        )
    try:
        model.load_state_dict({k: v for k, v in state.items() if k in wanted}, strict=False)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1].strip()
        raise StoreError(
            f"--weights file {str(path)!r} does not fit DenseNet121: {first}"
        ) from None


def _fix_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    fixed = {}
    for key, value in state.items():
        match = _OLD_KEY.match(key)
        fixed[match.group(1) + match.group(2) if match else key] = value
    return fixed
