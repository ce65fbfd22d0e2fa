"""Search spaces: config keys (dotted paths) mapped to distributions, with conditions.

A space is a YAML mapping, one entry per parameter, sampled in file order::

    train.lr: {type: float, low: 1.0e-5, high: 1.0e-2, log: true}
    model.dropout: {type: float, low: 0.0, high: 0.5, step: 0.05}
    train.batch_cases: {type: int, low: 2, high: 16, log: true}
    regularization.penalty: {type: categorical, choices: [none, entropy, elasticnet]}
    regularization.entropy.slice:
      {type: float, low: 1.0e-4, high: 1.0, log: true, when: {regularization.penalty: entropy}}

``when`` maps earlier parameters to a value (or a list of values); the parameter is sampled
only when all of them hold, so Optuna sees a conditional (define-by-run) space. Everything is
checked before any trial runs: unknown keys, types that do not fit the config, ``low > high``,
``log`` with ``low <= 0``, a ``when`` on a parameter that does not exist (earlier in the file),
choices the config does not allow, and bounds the config would reject.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from tuner.config import RunConfig, allowed_values, apply_overrides, config_keys
from tuner.errors import ConfigError

__all__ = ["DEFAULT_SPACE", "Param", "SearchSpace", "load_space"]

DEFAULT_SPACE = Path(__file__).resolve().parent / "resources" / "default_space.yaml"

Kind = Literal["float", "int", "categorical"]


@dataclass(frozen=True)
class Param:
    """One parameter of the space."""

    key: str
    kind: Kind
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()
    when: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    def active(self, sampled: dict[str, Any]) -> bool:
        return all(key in sampled and sampled[key] in values for key, values in self.when.items())


@dataclass(frozen=True)
class SearchSpace:
    params: tuple[Param, ...]

    def to_dict(self) -> dict[str, Any]:
        """The space as a plain mapping (as in the YAML file), for storing in a study."""
        out: dict[str, Any] = {}
        for p in self.params:
            entry: dict[str, Any] = {"type": p.kind}
            if p.kind == "categorical":
                entry["choices"] = list(p.choices)
            else:
                entry.update(low=p.low, high=p.high)
                if p.log:
                    entry["log"] = True
                if p.step is not None:
                    entry["step"] = p.step
            if p.when:
                entry["when"] = {k: list(v) for k, v in p.when.items()}
            out[p.key] = entry
        return out

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "search space") -> SearchSpace:
        if not isinstance(data, dict) or not data:
            raise ConfigError(f"{source} must be a non-empty mapping of config keys to ranges")
        params: list[Param] = []
        for key, spec in data.items():
            params.append(_parse_param(str(key), spec, source, {p.key for p in params}))
        return cls(tuple(params))

    def validate(self, base: RunConfig, *, source: str = "search space") -> None:
        """Check that every key exists and every value the space can produce is a valid config."""
        keys = config_keys()
        for p in self.params:
            if p.key not in keys:
                close = [k for k in keys if k.rsplit(".", 1)[-1] == p.key.rsplit(".", 1)[-1]]
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(f"{source}: {p.key!r} is not a config key{hint}")
            _check_type(p, keys[p.key], source)
            allowed = allowed_values(p.key)
            if p.kind == "categorical" and allowed is not None:
                outside = [c for c in p.choices if c not in allowed]
                if outside:
                    raise ConfigError(
                        f"{source}: {p.key} choices {outside} are not allowed by the config "
                        f"(allowed: {list(allowed)})"
                    )
            for value in _extremes(p):
                apply_overrides(base, {p.key: value}, source=f"{source}: {p.key}={value!r} gives")

    def sample(self, trial: Any) -> dict[str, Any]:
        """Suggest every active parameter on an Optuna trial; return config overrides."""
        sampled: dict[str, Any] = {}
        for p in self.params:
            if not p.active(sampled):
                continue
            if p.kind == "categorical":
                sampled[p.key] = trial.suggest_categorical(p.key, list(p.choices))
            elif p.kind == "int":
                step = int(p.step) if p.step is not None else 1
                sampled[p.key] = trial.suggest_int(
                    p.key, int(p.low or 0), int(p.high or 0), step=step, log=p.log
                )
            else:
                sampled[p.key] = trial.suggest_float(
                    p.key, float(p.low or 0), float(p.high or 0), step=p.step, log=p.log
                )
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


def _parse_param(key: str, spec: Any, source: str, earlier: set[str]) -> Param:
    where = f"{source}: {key}"
    if not isinstance(spec, dict):
        raise ConfigError(f"{where} must be a mapping with 'type' and its range or choices")
    unknown = set(spec) - {"type", "low", "high", "log", "step", "choices", "when"}
    if unknown:
        raise ConfigError(f"{where} has unknown field(s) {sorted(unknown)}")
    kind = spec.get("type")
    when = _parse_when(spec.get("when"), where, earlier)
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: a categorical needs a non-empty list of 'choices'")
        if len(set(map(repr, choices))) != len(choices):
            raise ConfigError(f"{where}: choices {choices} repeat a value")
        return Param(key, "categorical", choices=tuple(choices), when=when)
    if kind not in ("float", "int"):
        raise ConfigError(f"{where}: type must be float, int or categorical, but got {kind!r}")
    low, high = spec.get("low"), spec.get("high")
    for name, value in (("low", low), ("high", high)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: {name} must be a number, but got {value!r}")
    assert isinstance(low, int | float)
    assert isinstance(high, int | float)
    if kind == "int" and not (float(low).is_integer() and float(high).is_integer()):
        raise ConfigError(f"{where}: an int range needs whole bounds, but got {low}..{high}")
    if low > high:
        raise ConfigError(f"{where}: low must not exceed high, but got low={low} > high={high}")
    log = bool(spec.get("log", False))
    if log and low <= 0:
        raise ConfigError(f"{where}: a log range needs low > 0, but got low={low}")
    step = spec.get("step")
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, int | float) or step <= 0:
            raise ConfigError(f"{where}: step must be a positive number, but got {step!r}")
        if log:
            raise ConfigError(f"{where}: step and log cannot be combined")
    return Param(key, kind, float(low), float(high), log, step, when=when)


def _parse_when(when: Any, where: str, earlier: set[str]) -> dict[str, tuple[Any, ...]]:
    if when is None:
        return {}
    if not isinstance(when, dict) or not when:
        raise ConfigError(f"{where}: 'when' must map earlier parameters to their value(s)")
    parsed: dict[str, tuple[Any, ...]] = {}
    for key, values in when.items():
        if key not in earlier:
            raise ConfigError(
                f"{where}: 'when' refers to {key!r}, which is not a parameter defined above it"
            )
        parsed[str(key)] = tuple(values) if isinstance(values, list) else (values,)
    return parsed


def _check_type(p: Param, annotation: Any, source: str) -> None:
    text = str(annotation)
    numeric = annotation in (float, int) or text in ("float | None", "int | None")
    wants_int = annotation is int or text == "int | None"
    if p.kind in ("float", "int") and not numeric:
        raise ConfigError(f"{source}: {p.key} is not numeric in the config; use type categorical")
    if p.kind == "float" and wants_int:
        raise ConfigError(f"{source}: {p.key} is an integer in the config; use type int")


def _extremes(p: Param) -> list[Any]:
    if p.kind == "categorical":
        return list(p.choices)
    if p.kind == "int":
        return [int(p.low or 0), int(p.high or 0)]
    return [p.low, p.high]
