"""``tuner export``: the best trial as a run config that ``tuner train`` takes as is."""

from __future__ import annotations

import csv
import json
import shlex
from datetime import UTC, datetime
from pathlib import Path

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial

import tuner
from tuner.config import RunConfig, apply_overrides, save_config
from tuner.errors import StudyError
from tuner.study._settings import load_settings
from tuner.study._slots import RETRY_KEY, best_trial

__all__ = ["best_config", "export_best", "export_trials"]


def best_config(
    storage: BaseStorage, name: str, *, storage_url: str
) -> tuple[RunConfig, FrozenTrial]:
    """The study's base config with the best trial's parameters, and that trial."""
    settings = load_settings(storage, name)
    study = optuna.load_study(study_name=name, storage=storage)
    best = best_trial(study.get_trials(deepcopy=False))
    if best is None:
        raise StudyError(
            f"study {name!r} has no complete trial yet; run workers first "
            f"({shlex.join(['tuner', 'worker', name])})"
        )
    overrides = settings.search_space().overrides_of(best.params)
    config = apply_overrides(settings.config(), overrides, source=f"trial {best.number}")
    config.provenance = {
        "study": name,
        "trial": best.number,
        "value": best.value,
        "val_auc": best.user_attrs.get("val_auc"),
        "params": dict(best.params),
        "storage": storage_url,
        "exported": datetime.now(UTC).isoformat(timespec="seconds"),
        "tuner_version": tuner.__version__,
    }
    return config, best


def export_best(storage: BaseStorage, name: str, out: Path, *, storage_url: str) -> FrozenTrial:
    config, best = best_config(storage, name, storage_url=storage_url)
    header = (
        f"# Best configuration of study {name!r} (trial {best.number}, val loss "
        f"{best.value:.4f}),\n# exported by tuner {tuner.__version__}. Train the final model "
        f"with\n#   tuner train --config {shlex.quote(out.name)}\n"
    )
    save_config(config, out, header=header)
    return best


def export_trials(storage: BaseStorage, name: str, out: Path) -> int:
    """All trials as CSV: number, state, value, times, parameters and attributes."""
    load_settings(storage, name)
    study = optuna.load_study(study_name=name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    params = list(dict.fromkeys(k for t in trials for k in t.params))
    attrs = list(dict.fromkeys(k for t in trials for k in t.user_attrs))
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["number", "state", "value", "datetime_start", "datetime_complete", "epochs_reported",
             *params, *attrs, "retry_of"]
        )  # fmt: skip
        for t in trials:
            writer.writerow(
                [t.number, t.state.name, "" if t.value is None else t.value,
                 _time(t.datetime_start), _time(t.datetime_complete), len(t.intermediate_values),
                 *(_cell(t.params.get(p)) for p in params),
                 *(_cell(t.user_attrs.get(a)) for a in attrs),
                 t.system_attrs.get(RETRY_KEY, "")]
            )  # fmt: skip
    return len(trials)


def _time(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else ""


def _cell(value: object) -> str:
    if value is None:
        return ""
    return json.dumps(value) if isinstance(value, dict | list) else str(value)
