"""Encoders: what a ``backbone`` name stands for and how its images must look.

A name is a preset (``densenet121``, and the pathology foundation models ``uni``, ``uni2-h``,
``virchow2``, ``h-optimus-0``), ``timm:MODEL`` (any timm model, ``timm:hf-hub:ORG/NAME`` too),
or a torchvision classification model. Hub-backed names take an optional ``@REVISION``.
Resolving a name reads no weights: presets carry their architecture's arguments, so that random
weights build the right network offline; only ``timm:hf-hub:`` reads the repository's config.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from tuner.errors import StoreError
from tuner.features._hub import WEIGHT_FILES, hub_download

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PRESET_NAMES",
    "Encoder",
    "presets",
    "resolve_encoder",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Triple = tuple[float, float, float]


@dataclass(frozen=True)
class Encoder:
    """A patch encoder: how to build it, what it eats, how its output becomes one vector.

    ``pooling`` is ``"model"`` (the model's own pooled output, its classifier removed), a
    name for that pooling (``"avg"``, ``"token"``), or ``"cls+mean"`` (the class token
    concatenated with the mean of the patch tokens, register tokens left out).
    ``input_size=None`` keeps the patches' own size. ``hub`` is the Hugging Face repository of
    the pretrained weights; ``revision`` the one asked for (or the config's, for ``hf-hub:``).
    """

    name: str
    library: str  # "torchvision" or "timm"
    model: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    input_size: int | None = None
    fixed_size: bool = False
    mean: Triple = IMAGENET_MEAN
    std: Triple = IMAGENET_STD
    pooling: str = "model"
    hub: str | None = None
    revision: str | None = None
    weight_files: tuple[str, ...] = WEIGHT_FILES
    url: str | None = None
    config: Mapping[str, str] | None = None

    def at_size(self, size: int) -> Encoder:
        """This encoder built for ``size`` px images (timm's fixed-size models need the size)."""
        if self.library != "timm" or not self.fixed_size or size == self.input_size:
            return self
        return replace(self, arguments={**self.arguments, "img_size": size})

    def describe(self) -> dict[str, Any]:
        """The manifest's account of the encoder (the weights' origin is added by the build)."""
        described: dict[str, Any] = {"library": self.library, "model": self.model}
        if self.arguments:
            described["arguments"] = {k: _plain(v) for k, v in self.arguments.items()}
        described["pooling"] = self.pooling
        if self.config:
            described["config"] = dict(self.config)
        return described


def _plain(value: Any) -> Any:
    """A JSON-safe form of a model argument: classes and functions by their dotted name."""
    if isinstance(value, functools.partial):
        bound = ", ".join(f"{k}={_plain(v)}" for k, v in value.keywords.items())
        return f"{_plain(value.func)}({bound})"
    if isinstance(value, type) or callable(value):
        return f"{value.__module__}.{value.__qualname__}"
    return value


PRESET_NAMES = ("densenet121", "uni", "uni2-h", "virchow2", "h-optimus-0")


@functools.cache
def presets() -> Mapping[str, Encoder]:
    """The built-in encoders by name (built on first use: it imports timm)."""
    from timm.layers.mlp import SwiGLUPacked

    swiglu = {"mlp_layer": SwiGLUPacked, "act_layer": torch.nn.SiLU}
    return {
        "densenet121": Encoder("densenet121", "torchvision", "densenet121", pooling="avg"),
        # UNI (Chen et al. 2024), ViT-L/16: the class token, 1024-d.
        "uni": Encoder(
            "uni", "timm", "vit_large_patch16_224",
            {"img_size": 224, "patch_size": 16, "init_values": 1e-5, "num_classes": 0,
             "dynamic_img_size": True},
            input_size=224, pooling="token", hub="MahmoodLab/uni",
        ),
        # UNI2-h, ViT-H/14 with 8 register tokens and SwiGLU: the class token, 1536-d.
        "uni2-h": Encoder(
            "uni2-h", "timm", "vit_giant_patch14_224",
            {"img_size": 224, "patch_size": 14, "depth": 24, "num_heads": 24,
             "init_values": 1e-5, "embed_dim": 1536, "mlp_ratio": 2.66667 * 2, "num_classes": 0,
             "no_embed_class": True, **swiglu, "reg_tokens": 8, "dynamic_img_size": True},
            input_size=224, pooling="token", hub="MahmoodLab/UNI2-h",
        ),
        # Virchow2 (Zimmermann et al. 2024), ViT-H/14 with 4 registers: class token + mean of
        # the patch tokens, 2560-d.
        "virchow2": Encoder(
            "virchow2", "timm", "vit_huge_patch14_224",
            {"img_size": 224, "init_values": 1e-5, "num_classes": 0, "reg_tokens": 4,
             "mlp_ratio": 5.3375, "global_pool": "", "dynamic_img_size": True, **swiglu},
            input_size=224, pooling="cls+mean", hub="paige-ai/Virchow2",
        ),
        # H-optimus-0 (Bioptimus), ViT-g/14 with 4 registers, its own normalisation, 1536-d.
        "h-optimus-0": Encoder(
            "h-optimus-0", "timm", "vit_giant_patch14_reg4_dinov2",
            {"img_size": 224, "init_values": 1e-5, "num_classes": 0, "dynamic_img_size": False},
            input_size=224, fixed_size=True, pooling="token", hub="bioptimus/H-optimus-0",
            mean=(0.707223, 0.578729, 0.703617), std=(0.211883, 0.230117, 0.177517),
        ),
    }  # fmt: skip


def resolve_encoder(backbone: str) -> Encoder:
    """The encoder a ``backbone`` name stands for; an unknown name gets close suggestions."""
    backbone = backbone.strip()
    if backbone.startswith("timm:"):
        return _timm_encoder(backbone)
    base, at, revision = backbone.partition("@")
    if base in PRESET_NAMES:
        preset = presets()[base]
        if at and preset.hub is None:
            raise StoreError(
                f"backbone {backbone!r}: {base} does not come from the hub and takes no "
                f"@REVISION; write {base}"
            )
        if at and not revision:
            raise StoreError(
                f"backbone {backbone!r} has an empty revision; write {base}@REVISION (a branch, "
                f"tag or commit of the hub repository) or {base}"
            )
        return replace(preset, name=backbone, revision=revision or None)
    from torchvision import models

    if backbone in models.list_models(module=models):
        return Encoder(backbone, "torchvision", backbone)
    import timm

    if timm.is_model(backbone):
        fix = f"for the timm model write timm:{backbone}"
    else:
        close = difflib.get_close_matches(
            base, [*PRESET_NAMES, *models.list_models(module=models)]
        )
        guess = f"did you mean {' or '.join(close)}? " if close else ""
        fix = f"{guess}timm models are written timm:NAME"
    raise StoreError(
        f"unknown backbone {backbone!r}: not a preset ({', '.join(PRESET_NAMES)}) nor a "
        f"torchvision classification model; {fix}"
    )


def _suggest(names: list[str]) -> str:
    return f" (close: {', '.join(names)})" if names else ""


def _timm_encoder(backbone: str) -> Encoder:
    import timm

    name = backbone.removeprefix("timm:")
    if name.startswith("hf-hub:"):
        return _hub_config_encoder(backbone, name.removeprefix("hf-hub:"))
    if not name or "@" in name or not timm.is_model(name):
        close = difflib.get_close_matches(name.split(".")[0], timm.list_models(), n=4)
        raise StoreError(
            f"unknown timm model {name!r} in backbone {backbone!r}{_suggest(close)}; "
            "timm.list_models() lists them, or write timm:hf-hub:ORG/NAME for a hub model"
        )
    cfg = timm.models.get_pretrained_cfg(name)
    data = dict(vars(cfg)) if cfg is not None else {}
    return _from_timm_cfg(backbone, name, {"num_classes": 0}, data)


def _hub_config_encoder(backbone: str, repo_id: str) -> Encoder:
    """``timm:hf-hub:ORG/NAME[@REV]``: the architecture and data config from its config.json."""
    import timm

    repo, _, revision = repo_id.partition("@")
    if repo.count("/") != 1:
        raise StoreError(
            f"backbone {backbone!r} does not name a hub repository; write timm:hf-hub:ORG/NAME"
        )
    config = hub_download(
        repo, ("config.json",), revision or None, what=f"the config of {backbone}",
        fallback="use a preset or a timm registry model with a weights file instead",
    )  # fmt: skip
    pinned = f"{repo}@{config.revision}" if config.revision else repo
    try:
        cfg, architecture, model_args = timm.models.load_model_config_from_hf(pinned)
    except (KeyError, ValueError, OSError) as exc:
        raise StoreError(
            f"{repo}/config.json is not a timm model config ({type(exc).__name__}: {exc}); "
            "import embeddings of this model with 'tuner features import' instead"
        ) from None
    if not timm.is_model(architecture):
        raise StoreError(
            f"{repo} names the architecture {architecture!r}, which this timm "
            f"({timm.__version__}) does not know; upgrade timm or use another backbone"
        )
    encoder = _from_timm_cfg(backbone, architecture, {**model_args, "num_classes": 0}, cfg)
    return replace(
        encoder, hub=repo, revision=config.revision, url=None,
        config={"repo": repo, "revision": config.revision or "unknown"},
        weight_files=(cfg["hf_hub_filename"],) if cfg.get("hf_hub_filename") else WEIGHT_FILES,
    )  # fmt: skip


def _from_timm_cfg(
    backbone: str, model: str, arguments: dict[str, Any], cfg: Mapping[str, Any]
) -> Encoder:
    dynamic = bool(arguments.get("dynamic_img_size")) or arguments.get("strict_img_size") is False
    return Encoder(
        backbone, "timm", model, arguments,
        input_size=int((cfg.get("input_size") or (3, 224, 224))[-1]),
        fixed_size=bool(cfg.get("fixed_input_size")) and not dynamic,
        mean=_triple(cfg.get("mean"), IMAGENET_MEAN), std=_triple(cfg.get("std"), IMAGENET_STD),
        hub=cfg.get("hf_hub_id") or None, url=cfg.get("url") or None,
        weight_files=(cfg["hf_hub_filename"],) if cfg.get("hf_hub_filename") else WEIGHT_FILES,
    )  # fmt: skip


def _triple(values: Any, default: Triple) -> Triple:
    if not values or len(values) != 3:
        return default
    return (float(values[0]), float(values[1]), float(values[2]))
