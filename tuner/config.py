"""The run config: one YAML file describes a training run (data, model, train, regularization).

``tuner train --config`` takes it, a study's base config is one, ``tuner export`` writes one.
Every section is a pydantic model that forbids unknown keys, so a typo is an error that names
the key, not a silently ignored setting. Relative paths are read relative to the config file.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo

from tuner._files import write_atomic
from tuner.errors import ConfigError

__all__ = [
    "DataConfig",
    "ElasticNetConfig",
    "LevelWeights",
    "ModelConfig",
    "RegularizationConfig",
    "RunConfig",
    "SplitConfig",
    "TrainConfig",
    "apply_overrides",
    "config_fields",
    "config_keys",
    "default_config_yaml",
    "load_config",
    "parse_config",
    "save_config",
    "set_path",
]

NonNegative = Annotated[float, Field(ge=0)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SplitConfig(_Section):
    fractions: tuple[float, float, float] = Field(
        (0.6, 0.2, 0.2), description="train, validation and test share of the cases"
    )
    folds: int | None = Field(
        None, ge=2, description="outer k folds for 'tuner train', each tested (null: one split)"
    )
    cv_folds: int | None = Field(
        None,
        ge=2,
        description="cross-validate on K folds of the non-test cases: a study's objective is "
        "their mean validation loss (null: one validation split)",
    )
    seed: int = Field(0, description="seed of the split; the same for every trial of a study")
    balance_patches: bool = Field(False, description="also balance the splits by patches per case")
    file: Path | None = Field(
        None, description="a splits JSON from 'tuner data split' to use as is"
    )

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> SplitConfig:
        if min(self.fractions) <= 0 or abs(sum(self.fractions) - 1) > 1e-6:
            raise ValueError(f"fractions must be positive and sum to 1, but got {self.fractions}")
        if self.folds is not None and self.cv_folds is not None:
            raise ValueError(
                f"folds ({self.folds}, outer folds that each test) and cv_folds "
                f"({self.cv_folds}, cross-validation of a study) cannot be combined; set one "
                "of them to null"
            )
        return self


class DataConfig(_Section):
    features: Path = Field(description="feature store folder (from 'tuner features extract')")
    checksum: str | None = Field(
        None, description="expected store checksum; checked when set (null: any)"
    )
    split: SplitConfig = Field(default_factory=SplitConfig)
    per_slice_cap: int | None = Field(
        64, ge=1, description="patches drawn at random per slice each training epoch (null: all)"
    )
    max_slices_per_stain: int | None = Field(
        None, ge=1, description="slices drawn at random per stain each training epoch (null: all)"
    )
    augmented_views: bool = Field(
        True, description="train on a random stored view of each patch when the store has several"
    )


class ModelConfig(_Section):
    embed_dim: int = Field(512, ge=1, description="width of the patch projector")
    attn_dim: int = Field(128, ge=1, description="hidden width of each attention module")
    dropout: float = Field(0.5, ge=0, lt=1, description="dropout in projector and attention")
    gated: bool = Field(False, description="gated attention (Ilse et al., 2018)")
    standardize: bool = Field(
        True, description="standardise each input feature with its mean and std over train"
    )
    pooling: Literal["attention", "mean"] = Field(
        "attention", description="attention, or mean: the uniform-attention baseline"
    )


class TrainConfig(_Section):
    optimizer: Literal["adamw", "adam"] = Field("adamw", description="adamw or adam")
    lr: float = Field(2e-4, gt=0, description="learning rate")
    weight_decay: float = Field(1e-4, ge=0, description="weight decay")
    epochs: int = Field(40, ge=1, description="most epochs to train")
    batch_cases: int = Field(8, ge=1, description="cases per optimiser step")
    loss: Literal["ce", "focal"] = Field("ce", description="ce (cross-entropy) or focal")
    focal_gamma: float = Field(2.0, ge=0, description="focusing parameter of the focal loss")
    class_weights: bool = Field(True, description="weight classes by 1/frequency in train")
    scheduler: Literal["plateau", "cosine", "none"] = Field(
        "plateau", description="plateau (ReduceLROnPlateau on val loss), cosine or none"
    )
    plateau_factor: float = Field(
        0.5, gt=0, lt=1, description="lr factor of the plateau scheduler"
    )
    plateau_patience: int = Field(4, ge=0, description="epochs without progress before lr drops")
    early_stopping: int | None = Field(
        10, ge=1, description="stop after this many epochs without a better val loss (null: never)"
    )
    early_stopping_warmup: int = Field(
        10,
        ge=0,
        description="early stopping counts epochs without progress from this epoch at the "
        "earliest (a run that spikes before it learns is not stopped in the spike)",
    )
    grad_clip: float | None = Field(None, gt=0, description="clip the gradient norm (null: no)")
    refit: bool = Field(
        False,
        description="outer folds: retrain each on its train+val for the mean best epoch count",
    )
    refit_epochs: int | None = Field(
        None,
        ge=1,
        description="train on train+val for this many epochs without validation, then test "
        "(tuner export of a cross-validated study sets it; null: validate and stop early)",
    )
    lr_schedule: list[Annotated[float, Field(gt=0)]] | None = Field(
        None,
        description="the learning rate of each epoch, replayed instead of the scheduler (tuner "
        "export of a cross-validated study sets it; null: the scheduler decides)",
    )
    repeats: int = Field(
        1, ge=1, description="seeds per fold of a cross-validation (cv_folds): seed, seed+1, ..."
    )
    seed: int = Field(0, description="seed of weights, sampling and dropout")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    amp: bool = Field(True, description="mixed precision on GPU (ignored on CPU)")


class LevelWeights(_Section):
    patch: NonNegative = Field(0.0, description="patches within a slice")
    slice: NonNegative = Field(0.0, description="slices within a stain")
    stain: NonNegative = Field(0.0, description="stains within a case")

    def as_dict(self) -> dict[str, float]:
        return {"patch": self.patch, "slice": self.slice, "stain": self.stain}


class ElasticNetConfig(_Section):
    l1: LevelWeights = Field(default_factory=LevelWeights)
    l2: LevelWeights = Field(default_factory=LevelWeights)


def _default_entropy() -> LevelWeights:
    return LevelWeights(patch=0.3, slice=0.01, stain=0.1)


class RegularizationConfig(_Section):
    # The defaults (with model.dropout 0.5) are what learned best on the hard demo's
    # calibration cohorts: benchmarks/calibrate_defaults.py, docs/results.md.
    penalty: Literal["none", "entropy", "elasticnet"] = Field(
        "entropy", description="attention penalty: none, entropy or elasticnet"
    )
    entropy: LevelWeights = Field(default_factory=_default_entropy)
    elasticnet: ElasticNetConfig = Field(default_factory=ElasticNetConfig)


class RunConfig(_Section):
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    regularization: RegularizationConfig = Field(default_factory=RegularizationConfig)
    provenance: dict[str, Any] | None = Field(
        None, description="where the config came from (written by tuner export; not used)"
    )

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML-able values (paths as strings, tuples as lists)."""
        plain: dict[str, Any] = _plain(self.model_dump(mode="json"))
        return plain


def parse_config(data: Any, *, source: str = "config", base: Path | None = None) -> RunConfig:
    """Validate a config mapping; raise :class:`ConfigError` naming the first bad key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must be a mapping of sections (data, model, train, ...)")
    try:
        config = RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None
    if base is not None:
        config = _resolve_paths(config, base)
    return config


def load_config(path: Path | str) -> RunConfig:
    """Read and validate a YAML run config."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(
            f"config file {str(path)!r} not found; write one with 'tuner config init'"
        ) from None
    except (IsADirectoryError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {str(path)!r} cannot be read ({exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(
            f"config file {str(path)!r} is not valid YAML{where}: {getattr(exc, 'problem', exc)}"
        ) from None
    return parse_config(data, source=f"config file {str(path)!r}", base=path.parent)


def save_config(config: RunConfig, path: Path | str, *, header: str = "") -> None:
    path = Path(path)
    write_atomic(path, header + yaml.safe_dump(config.to_dict(), sort_keys=False))


def config_fields(model: type[BaseModel] = RunConfig, prefix: str = "") -> dict[str, FieldInfo]:
    """Every leaf key of the config as a dotted path, with its pydantic field."""
    fields: dict[str, FieldInfo] = {}
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            fields.update(config_fields(annotation, f"{prefix}{name}."))
        else:
            fields[f"{prefix}{name}"] = field
    return fields


def config_keys() -> dict[str, Any]:
    """Every leaf key of the config as a dotted path, with its annotation."""
    return {key: field.annotation for key, field in config_fields().items()}


def allowed_values(key: str) -> tuple[Any, ...] | None:
    """The choices of a ``Literal`` key (``train.optimizer``), or None for an open key."""
    field = config_fields().get(key)
    annotation = field.annotation if field is not None else None
    if annotation is bool:
        return (False, True)
    args = get_args(annotation)
    return args if args and all(isinstance(a, str) for a in args) else None


def set_path(config: RunConfig, key: str, value: Any, *, source: str) -> None:
    """Set the dotted ``key`` (``train.lr``) of ``config`` in place, validated by its section.

    The one way a value gets into a config after parsing: the section's validated assignment
    checks the value (and the section's own rules); an unknown key is refused.
    """
    *parents, leaf = key.split(".")
    node: BaseModel = config
    for part in parents:
        child = getattr(node, part, None) if part in type(node).model_fields else None
        if not isinstance(child, BaseModel):
            raise ConfigError(f"{source}: {key!r} is not a config key")
        node = child
    if leaf not in type(node).model_fields:
        raise ConfigError(f"{source}: {key!r} is not a config key")
    before = getattr(node, leaf)
    try:
        setattr(node, leaf, value)
    except ValidationError as exc:
        # pydantic keeps the value when a section's model validator refuses it: put back the old
        node.__dict__[leaf] = before
        raise ConfigError(_describe(exc, source, prefix=parents)) from None


def apply_overrides(config: RunConfig, overrides: dict[str, Any], *, source: str) -> RunConfig:
    """A copy of ``config`` with dotted keys (``train.lr``) set by :func:`set_path`."""
    changed = config.model_copy(deep=True)
    for key, value in overrides.items():
        set_path(changed, key, value, source=source)
    return changed


def default_config_yaml(features: Path, *, checksum: str | None = None) -> str:
    """A complete config with every key at its default and a comment on each line."""
    config = RunConfig(data=DataConfig(features=features, checksum=checksum))
    lines = [
        "# tuner run config: every key with its default. Edit what you need, then run",
        "#   tuner train --config THIS_FILE",
    ]
    lines += _commented(RunConfig, config.to_dict(), 0)
    return "\n".join(lines) + "\n"


def _commented(model: type[BaseModel], values: dict[str, Any], depth: int) -> list[str]:
    lines = []
    indent = "  " * depth
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            lines.append(f"{indent}{name}:")
            lines += _commented(annotation, values[name], depth + 1)
            continue
        value = yaml.safe_dump(values[name], default_flow_style=True).strip()
        value = value.removesuffix("\n...").removesuffix("...").strip()
        comment = f"  # {field.description}" if field.description else ""
        lines.append(f"{indent}{name}: {value}{comment}")
    return lines


def _describe(exc: ValidationError, source: str, *, prefix: Sequence[str] = ()) -> str:
    errors = exc.errors()
    first = errors[0]
    loc = (*prefix, *first["loc"])
    key = ".".join(str(p) for p in loc)
    kind = first["type"]
    if kind == "extra_forbidden":
        parent = ".".join(str(p) for p in loc[:-1])
        known = _known_keys(parent)
        text = f"unknown key {key!r}" + (f" (known: {', '.join(known)})" if known else "")
    elif kind == "missing":
        text = f"missing key {key!r}"
    else:
        message = first["msg"].removeprefix("Value error, ")
        got = "" if "but got" in message else f", but got {first.get('input')!r}"
        text = f"{key}: {message}{got}"
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return f"{source}: {text}{more}"


def _known_keys(parent: str) -> list[str]:
    model: type[BaseModel] = RunConfig
    for part in filter(None, parent.split(".")):
        annotation = model.model_fields[part].annotation if part in model.model_fields else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def _resolve_paths(config: RunConfig, base: Path) -> RunConfig:
    config = config.model_copy(deep=True)
    if not config.data.features.is_absolute():
        config.data.features = base / config.data.features
    split_file = config.data.split.file
    if split_file is not None and not split_file.is_absolute():
        config.data.split.file = base / split_file
    return config


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return copy.copy(value)
