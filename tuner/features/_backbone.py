"""The frozen patch encoder: the model an :class:`Encoder` describes, with its weights, pooled.

The architecture is first built on the meta device (no memory, no initialisation): it checks a
weights file or checkpoint against the architecture, and one blank image through it gives the
feature width and proves the image size works, before anything is computed or written. Loaded
weights then take the meta tensors' place, so a billion-parameter model is not randomly
initialised only to be overwritten.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tuner.errors import StoreError
from tuner.features._encoders import IMAGENET_MEAN, IMAGENET_STD, Encoder, resolve_encoder
from tuner.features._hub import hub_download

__all__ = [
    "FEATURE_DIM",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Backbone",
    "WeightsSpec",
    "build_backbone",
]

FEATURE_DIM = 1024  # of the default backbone, DenseNet121

# torchvision's own fix for DenseNet checkpoints saved before its module names changed.
_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)

State = dict[str, torch.Tensor]


@dataclass(frozen=True)
class WeightsSpec:
    """Which weights the backbone has: ``pretrained`` (the model's own; ``imagenet`` for a
    torchvision model), ``random`` (seeded) or a state-dict file."""

    kind: str
    path: str | None = None
    sha256: str | None = None
    seed: int | None = None

    @classmethod
    def parse(cls, value: str, *, seed: int = 0, encoder: Encoder | None = None) -> WeightsSpec:
        library = encoder.library if encoder is not None else "torchvision"
        if value == "random":
            return cls(kind="random", seed=seed)
        if value in ("pretrained", "imagenet"):
            if library == "torchvision":
                return cls(kind="imagenet")  # torchvision's pretrained weights are ImageNet's
            if value == "imagenet":
                name = encoder.name if encoder is not None else "the backbone"
                raise StoreError(
                    f"weights 'imagenet' name torchvision's ImageNet weights, but {name!r} is a "
                    "timm model; pass weights 'pretrained' for its own pretrained weights"
                )
            return cls(kind="pretrained")
        path = Path(value)
        if not path.is_file():
            raise StoreError(
                f"weights {value!r} is neither 'pretrained', 'imagenet', 'random' nor an "
                "existing file; pass a state-dict file (.pth, .bin, .safetensors) or one of "
                "those names",
                params=("weights",),
            )
        with path.open("rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        return cls(kind="file", path=str(path.resolve()), sha256=digest)

    def describe(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


class Backbone(nn.Module):
    """The frozen encoder: normalised images ``(B, 3, H, W)`` -> features ``(B, dim)``."""

    def __init__(self, model: nn.Module, encoder: Encoder, origin: dict[str, Any]) -> None:
        super().__init__()
        self.model = model
        self.encoder = encoder
        self.origin = origin  # where the weights came from: hub file and revision, or URL
        self.dim = 0

    @property
    def mean(self) -> tuple[float, float, float]:
        return self.encoder.mean

    @property
    def std(self) -> tuple[float, float, float]:
        return self.encoder.std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.encoder.pooling == "cls+mean":  # class token, then the mean of patch tokens
            tokens: torch.Tensor = getattr(self.model, "forward_features")(images)  # noqa: B009
            first_patch = int(getattr(self.model, "num_prefix_tokens"))  # noqa: B009
            return torch.cat([tokens[:, 0], tokens[:, first_patch:].mean(dim=1)], dim=1)
        return self.model(images)  # type: ignore[no-any-return]

    def describe(self) -> dict[str, Any]:
        """The manifest's ``encoder``: library, model, arguments, pooling, weights' origin."""
        described = self.encoder.describe()
        if self.encoder.pooling == "model":
            described["pooling"] = _pool_name(self.model)
        return {**described, **self.origin}


def build_backbone(
    weights: WeightsSpec, encoder: Encoder | None = None, *, image_size: int | None = None
) -> Backbone:
    """The frozen backbone (eval mode, on the CPU) for ``image_size`` px images.

    ``encoder`` defaults to DenseNet121; ``image_size`` to the encoder's input size (224 where
    it takes any size). Raises :class:`StoreError` for weights that cannot be had or do not
    fit, and for an image size the model cannot take.
    """
    encoder = encoder or resolve_encoder("densenet121")
    size = image_size or encoder.input_size or 224
    encoder = encoder.at_size(size)
    state, origin = _weights_state(encoder, weights)
    skeleton = _skeleton(encoder)
    model = None if skeleton is not None else _seeded(encoder, weights.seed)
    reference = skeleton if skeleton is not None else model
    assert reference is not None
    dim = _probe(Backbone(reference, encoder, origin), size)
    if state is not None:
        label = (
            f"weights file {weights.path!r}"
            if weights.kind == "file"
            else f"the pretrained checkpoint of {encoder.name}"
        )
        state = _fit(encoder, reference, state, label)
        model = _loaded(encoder, skeleton, model, state)
    elif model is None:
        model = _seeded(encoder, weights.seed)
    backbone = Backbone(model, encoder, origin)
    backbone.eval().requires_grad_(False)
    backbone.dim = dim or _probe(backbone, size) or 0
    return backbone


def _create(encoder: Encoder) -> nn.Module:
    if encoder.library == "timm":
        import timm

        try:
            model: nn.Module = timm.create_model(
                encoder.model, pretrained=False, **encoder.arguments
            )
            return model
        except (TypeError, ValueError, KeyError, AssertionError) as exc:
            raise StoreError(
                f"timm cannot build backbone {encoder.name!r} ({encoder.model}) from its "
                f"arguments ({type(exc).__name__}: {exc}); use a preset or import its embeddings"
            ) from None
    from torchvision.models import get_model

    model = get_model(encoder.model, weights=None)
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise StoreError(
            f"torchvision model {encoder.model!r} has no linear classifier to take features "
            "before; choose another backbone"
        )
    parent, _, child = linears[-1].rpartition(".")  # the classifier: keep what it reads
    setattr(model.get_submodule(parent) if parent else model, child, nn.Identity())
    return model


def _skeleton(encoder: Encoder) -> nn.Module | None:
    """The architecture on the meta device, or None where the model cannot be built there."""
    try:
        with torch.device("meta"):
            return _create(encoder).eval()
    except (NotImplementedError, RuntimeError):  # e.g. an initialisation that reads values
        return None


def _seeded(encoder: Encoder, seed: int | None) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed or 0)
        return _create(encoder)


def _probe(backbone: Backbone, size: int) -> int | None:
    """The feature width for one blank image (None where the meta device cannot run it)."""
    device = next(itertools.chain(backbone.parameters(), backbone.buffers())).device
    try:
        with torch.inference_mode():
            out = backbone(torch.zeros(1, 3, size, size, device=device))
    except NotImplementedError:
        if device.type == "meta":
            return None
        raise
    except Exception as exc:  # models reject sizes with many types of error
        why = (str(exc).strip().splitlines() or [""])[-1]
        native = backbone.encoder.input_size
        raise StoreError(
            f"backbone {backbone.encoder.name!r} cannot encode {size}x{size} px images "
            f"({type(exc).__name__}: {why}); pass another image size"
            f"{f' (it was trained at {native})' if native else ''}"
        ) from None
    if out.ndim != 2:
        raise StoreError(
            f"backbone {backbone.encoder.name!r} gives features of shape {tuple(out.shape[1:])} "
            "per image, not a vector; choose a model with a pooled output"
        )
    return int(out.shape[1])


def _weights_state(encoder: Encoder, weights: WeightsSpec) -> tuple[State | None, dict[str, Any]]:
    """The state dict the weights name (None for random ones) and where it came from."""
    if weights.kind == "random":
        return None, {}
    if weights.kind == "file":
        return read_state_dict(Path(weights.path or "")), {}
    if encoder.library == "torchvision":
        from torchvision.models import get_model_weights

        imagenet = get_model_weights(encoder.model).DEFAULT
        try:
            state = imagenet.get_state_dict(progress=False)
        except OSError as exc:  # URLError is an OSError
            raise StoreError(
                f"could not download the ImageNet weights of {encoder.model} ({exc}); on an "
                f"offline machine download {imagenet.url.rsplit('/', 1)[-1]} elsewhere and pass "
                "its path as the weights"
            ) from None
        return state, {"checkpoint": str(imagenet), "url": imagenet.url}
    if encoder.hub:
        file = hub_download(
            encoder.hub, encoder.weight_files, encoder.revision,
            what=f"the weights of {encoder.name}",
            fallback=f"download {' or '.join(encoder.weight_files)} of "
            f"https://huggingface.co/{encoder.hub} elsewhere and pass its path as the weights",
        )  # fmt: skip
        return read_state_dict(file.path), {"hub": file.describe()}
    if encoder.url:
        try:
            state = torch.hub.load_state_dict_from_url(
                encoder.url, map_location="cpu", progress=False, weights_only=True
            )
        except OSError as exc:
            raise StoreError(
                f"could not download the weights of {encoder.name} ({exc}); on an offline "
                f"machine download {encoder.url} elsewhere and pass its path as the weights"
            ) from None
        return _unwrap(state, encoder.url), {"url": encoder.url}
    raise StoreError(
        f"timm model {encoder.model!r} has no pretrained weights; pass weights 'random' or a "
        "state-dict file"
    )


def read_state_dict(path: Path) -> State:
    """A state dict from a ``.safetensors`` file or a PyTorch checkpoint (``.pth``, ``.bin``)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: object = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch and safetensors raise many types for a bad file
        raise StoreError(
            f"weights file {str(path)!r} is not a PyTorch state dict ({type(exc).__name__}); "
            "save one with torch.save(model.state_dict(), FILE) or safetensors",
            params=("weights",),
        ) from None
    return _unwrap(state, str(path))


def _unwrap(state: object, where: str) -> State:
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise StoreError(
            f"weights file {where!r} does not hold a state dict of tensors", params=("weights",)
        )
    return {str(k).removeprefix("module."): v for k, v in state.items()}


def _fit(encoder: Encoder, reference: nn.Module, state: State, label: str) -> State:
    """The weights of ``reference`` taken from ``state``; refuse a state of another model."""
    wanted = reference.state_dict()
    if encoder.library == "torchvision":
        state = _fix_keys(state)
        if not any(k.startswith("features.") for k in state) and any(
            k.startswith("features.") for k in wanted
        ):
            state = {f"features.{k}": v for k, v in state.items()}  # a trunk-only file
    else:
        state = _timm_filter(reference, state)
    missing = sorted(wanted.keys() - state.keys())
    if missing:
        raise StoreError(
            f"{label} does not fit {encoder.name} ({encoder.model}): {len(missing)} of "
            f"{len(wanted)} weight(s) missing, e.g. {missing[0]!r}; pass weights of this model"
        )
    for key, target in wanted.items():
        if state[key].shape != target.shape:
            raise StoreError(
                f"{label} does not fit {encoder.name} ({encoder.model}): weight {key!r} has "
                f"shape {tuple(state[key].shape)}, the model's {tuple(target.shape)}"
            )
    return {k: state[k].to(dtype=target.dtype) for k, target in wanted.items()}


def _timm_filter(reference: nn.Module, state: State) -> State:
    """timm's own conversion for ViT checkpoints (other layouts, position-embedding size)."""
    from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

    if not isinstance(reference, VisionTransformer):
        return state
    try:
        return checkpoint_filter_fn(state, reference)
    except Exception:  # a state of another model: the key check that follows says so
        return state


def _loaded(
    encoder: Encoder, skeleton: nn.Module | None, model: nn.Module | None, state: State
) -> nn.Module:
    """A model holding ``state``: the skeleton's meta tensors replaced where that covers all."""
    if skeleton is not None:
        skeleton.load_state_dict(state, assign=True)
        if not any(t.is_meta for t in itertools.chain(skeleton.parameters(), skeleton.buffers())):
            return skeleton
    model = model if model is not None else _create(encoder)
    model.load_state_dict(state)
    return model


def _pool_name(model: nn.Module) -> str:
    """The name of a timm model's global pooling ("avg", "token", ...); "model" if unnamed."""
    pool = getattr(model, "global_pool", None)
    if pool is None:
        pool = getattr(getattr(model, "head", None), "global_pool", None)
    if isinstance(pool, str):
        return pool or "none"
    kind = getattr(pool, "pool_type", None)
    return str(kind) if kind else "model"


def _fix_keys(state: State) -> State:
    fixed = {}
    for key, value in state.items():
        match = _OLD_KEY.match(key)
        fixed[match.group(1) + match.group(2) if match else key] = value
    return fixed
