"""Search spaces: config keys (dotted paths) mapped to distributions, with conditions.

A space is a YAML mapping, one entry per parameter, sampled in file order::

    train.lr: {type: float, low: 1.0e-4, high: 2.0e-3, log: true}
    model.dropout: {type: float, low: 0.0, high: 0.5, step: 0.05}
    train.batch_cases: {type: int, low: 2, high: 16, log: true}
    regularization.penalty: {type: categorical, choices: [none, entropy, elasticnet]}
    regularization.entropy.slice:
      {type: float, low: 1.0e-4, high: 1.0, log: true, when: {regularization.penalty: entropy}}

``when`` maps earlier parameters to a value (or a list of values); the parameter is sampled
only when all of them hold, so Optuna sees a conditional (define-by-run) space.

Each entry is parsed once into a :data:`Param` (a pydantic model, discriminated on ``type``,
that knows its Optuna distribution and samples itself). :meth:`SearchSpace.validate` then checks
it against the run config once, when the study is created: unknown keys, types that do not fit
the config's fields, choices the config does not allow, and range ends the config would reject.
The package ships one copy of each built-in space (``tuner/resources``); ``search_spaces/`` at
the repository's top holds the same files for people to read and copy (a test keeps them equal).
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from optuna.distributions import (
    BaseDistribution,
    CategoricalChoiceType,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import BaseTrial
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from tuner.config import RunConfig, allowed_values, config_fields, set_path
from tuner.errors import ConfigError

__all__ = [
    "DEFAULT_SPACE",
    "QUICK_SPACE",
    "CategoricalParam",
    "FloatParam",
    "IntParam",
    "Param",
    "SearchSpace",
    "load_space",
]

_RESOURCES = Path(__file__).resolve().parent / "resources"
DEFAULT_SPACE = _RESOURCES / "default_space.yaml"
QUICK_SPACE = _RESOURCES / "quick_space.yaml"


def _number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"must be a number, but got {value!r}")
    return value


def _positive_step(value: Any) -> Any:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int | float) or value <= 0
    ):
        raise ValueError(f"must be a positive number, but got {value!r}")
    return value


Number = Annotated[float, BeforeValidator(_number)]
Step = Annotated[float | None, BeforeValidator(_positive_step)]


def _show(value: float) -> str:
    """A bound as the user wrote it: ``1``, not ``1.0``."""
    return str(int(value)) if float(value).is_integer() else repr(value)


class _Param(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str
    when: dict[str, tuple[Any, ...]] = Field(default_factory=dict, exclude_if=lambda w: not w)

    @field_validator("when", mode="before")
    @classmethod
    def _values_as_tuples(cls, when: Any) -> Any:
        if when is None:
            return {}
        if not isinstance(when, dict) or not when:
            raise ValueError("'when' must map earlier parameters to their value(s)")
        return {k: tuple(v) if isinstance(v, list | tuple) else (v,) for k, v in when.items()}

    def active(self, sampled: dict[str, Any]) -> bool:
        return all(key in sampled and sampled[key] in values for key, values in self.when.items())

    def spec(self) -> dict[str, Any]:
        """The entry as written in a space file (without its key)."""
        entry = self.model_dump(mode="json", exclude={"key", "when"}, exclude_defaults=True)
        entry = {"type": entry.pop("type"), **entry}  # first, as in a space file
        if self.when:
            entry["when"] = {k: list(v) for k, v in self.when.items()}
        return entry


class _RangeParam(_Param):
    low: Number
    high: Number
    log: bool = False

    @model_validator(mode="after")
    def _range(self) -> _RangeParam:
        if self.low > self.high:
            low, high = _show(self.low), _show(self.high)
            raise ValueError(f"low must not exceed high, but got low={low} > high={high}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, but got low={_show(self.low)}")
        return self


class FloatParam(_RangeParam):
    type: Literal["float"]
    step: Step = None

    @model_validator(mode="after")
    def _step_or_log(self) -> FloatParam:
        if self.step is not None and self.log:
            raise ValueError("step and log cannot be combined")
        return self

    def to_distribution(self) -> FloatDistribution:
        return FloatDistribution(self.low, self.high, log=self.log, step=self.step)

    def suggest(self, trial: BaseTrial) -> float:
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def extremes(self) -> list[Any]:
        return [self.low, self.high]


class IntParam(_RangeParam):
    type: Literal["int"]
    step: Step = None

    @model_validator(mode="after")
    def _whole(self) -> IntParam:
        if not (self.low.is_integer() and self.high.is_integer()):
            raise ValueError(
                f"an int range needs whole bounds, but got {_show(self.low)}..{_show(self.high)}"
            )
        if self.step is not None and self.log:
            raise ValueError("step and log cannot be combined")
        return self

    def to_distribution(self) -> IntDistribution:
        step = int(self.step) if self.step is not None else 1
        return IntDistribution(int(self.low), int(self.high), log=self.log, step=step)

    def suggest(self, trial: BaseTrial) -> int:
        d = self.to_distribution()
        return trial.suggest_int(self.key, d.low, d.high, step=d.step, log=d.log)

    def extremes(self) -> list[Any]:
        return [int(self.low), int(self.high)]


class CategoricalParam(_Param):
    type: Literal["categorical"]
    choices: tuple[Any, ...]

    @field_validator("choices", mode="before")
    @classmethod
    def _non_empty_list(cls, choices: Any) -> Any:
        if not isinstance(choices, list | tuple) or not choices:
            raise ValueError("a categorical needs a non-empty list of 'choices'")
        if len(set(map(repr, choices))) != len(choices):
            raise ValueError(f"choices {list(choices)} repeat a value")
        return choices

    def to_distribution(self) -> CategoricalDistribution:
        choices: tuple[CategoricalChoiceType, ...] = self.choices
        return CategoricalDistribution(choices)

    def suggest(self, trial: BaseTrial) -> Any:
        return trial.suggest_categorical(self.key, list(self.to_distribution().choices))

    def extremes(self) -> list[Any]:
        return list(self.choices)


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]
"""One parameter of a space; ``param.to_distribution()`` is its Optuna distribution."""

_PARAM: TypeAdapter[FloatParam | IntParam | CategoricalParam] = TypeAdapter(Param)


class SearchSpace(BaseModel):
    """The parameters of a space, in sampling order; ``when`` refers only to earlier ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    params: tuple[Param, ...] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _from_a_space_files_mapping(cls, data: Any) -> Any:
        """Also read a space file's mapping (key -> entry), the form studies created before
        the parameters were models stored: their settings still load."""
        if isinstance(data, dict) and "params" not in data:
            return {
                "params": [{"key": k, **v} if isinstance(v, dict) else v for k, v in data.items()]
            }
        return data

    @model_validator(mode="after")
    def _conditions_refer_to_earlier_params(self) -> SearchSpace:
        earlier: set[str] = set()
        for p in self.params:
            if p.key in earlier:
                raise ValueError(f"{p.key} appears twice")
            for key in p.when:
                if key not in earlier:
                    raise ValueError(
                        f"{p.key}: 'when' refers to {key!r}, which is not a parameter defined "
                        "above it"
                    )
            earlier.add(p.key)
        return self

    def keys(self) -> list[str]:
        return [p.key for p in self.params]

    def to_dict(self) -> dict[str, Any]:
        """The space as a plain mapping, as in its YAML file."""
        return {p.key: p.spec() for p in self.params}

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "search space") -> SearchSpace:
        """Parse a space file's mapping; a mistake is one :class:`ConfigError` line."""
        if not isinstance(data, dict) or not data:
            raise ConfigError(f"{source} must be a non-empty mapping of config keys to ranges")
        params: list[FloatParam | IntParam | CategoricalParam] = []
        for key, spec in data.items():
            where = f"{source}: {key}"
            if not isinstance(spec, dict):
                raise ConfigError(
                    f"{where} must be a mapping with 'type' and its range or choices"
                )
            try:
                params.append(_PARAM.validate_python({**spec, "key": str(key)}))
            except ValidationError as exc:
                raise ConfigError(_describe_param(exc, where)) from None
        try:
            return cls(params=tuple(params))
        except ValidationError as exc:
            message = exc.errors()[0]["msg"].removeprefix("Value error, ")
            raise ConfigError(f"{source}: {message}") from None

    def validate(self, base: RunConfig, *, source: str = "search space") -> None:  # type: ignore[override]
        """Check every key against the config, and every value the space can produce."""
        fields = config_fields()
        for p in self.params:
            if p.key not in fields:
                tail = p.key.rsplit(".", 1)[-1]
                close = [k for k in fields if k.rsplit(".", 1)[-1] == tail]
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(f"{source}: {p.key!r} is not a config key{hint}")
            _check_type(p, fields[p.key], source)
            allowed = allowed_values(p.key)
            if isinstance(p, CategoricalParam) and allowed is not None:
                outside = [c for c in p.choices if c not in allowed]
                if outside:
                    raise ConfigError(
                        f"{source}: {p.key} choices {outside} are not allowed by the config "
                        f"(allowed: {list(allowed)})"
                    )
            probe = base.model_copy(deep=True)
            for value in p.extremes():
                set_path(probe, p.key, value, source=f"{source}: {p.key}={value!r} gives")

    def distributions(self) -> dict[str, BaseDistribution]:
        """Every parameter's Optuna distribution (conditional ones included)."""
        return {p.key: p.to_distribution() for p in self.params}

    def sample(self, trial: BaseTrial) -> dict[str, Any]:
        """Suggest every active parameter on an Optuna trial; return config overrides."""
        sampled: dict[str, Any] = {}
        for p in self.params:
            if p.active(sampled):
                sampled[p.key] = p.suggest(trial)
        return sampled

    def overrides_of(self, params: dict[str, Any]) -> dict[str, Any]:
        """Config overrides from a finished trial's params (the keys that were active)."""
        return {p.key: params[p.key] for p in self.params if p.key in params}


def load_space(path: Path | str | None = None) -> SearchSpace:
    """Read a search space YAML file (the default space when ``path`` is None)."""
    path = Path(path) if path is not None else DEFAULT_SPACE
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"search space {str(path)!r} not found; see search_spaces/ for examples"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"search space {str(path)!r} is not valid YAML{where}") from None
    return SearchSpace.from_dict(data, source=f"search space {str(path)!r}")


def _describe_param(exc: ValidationError, where: str) -> str:
    errors = exc.errors()
    extra = sorted(str(e["loc"][-1]) for e in errors if e["type"] == "extra_forbidden")
    if extra:
        return f"{where} has unknown field(s) {extra}"
    first = errors[0]
    if first["type"] in ("union_tag_invalid", "union_tag_not_found"):
        kind = first["input"].get("type") if isinstance(first["input"], dict) else None
        return f"{where}: type must be float, int or categorical, but got {kind!r}"
    field = ".".join(str(p) for p in first["loc"][1:])
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "missing":
        return f"{where}: {field} is missing"
    if first["type"] != "value_error":
        message = f"{message}, but got {first.get('input')!r}"
    if field in ("", "choices", "when"):
        return f"{where}: {message}"
    return f"{where}: {field} {message}"


def _check_type(p: _Param, field: FieldInfo, source: str) -> None:
    """A float or int parameter needs a numeric field; a float one a field that takes floats."""
    if isinstance(p, CategoricalParam):
        return
    kinds = _value_types(field.annotation)
    if not kinds or not kinds <= {int, float}:
        raise ConfigError(f"{source}: {p.key} is not numeric in the config; use type categorical")
    if isinstance(p, FloatParam) and kinds == {int}:
        raise ConfigError(f"{source}: {p.key} is an integer in the config; use type int")


def _value_types(annotation: Any) -> set[Any]:
    """The types a field holds, ``None`` left out: ``int | None`` -> ``{int}``."""
    if get_origin(annotation) in (Union, types.UnionType):
        return {a for a in get_args(annotation) if a is not type(None)}
    if get_origin(annotation) is Annotated:
        return _value_types(get_args(annotation)[0])
    return {annotation}
