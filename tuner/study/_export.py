"""``tuner export``: the best trial as a run config that ``tuner train`` takes as is."""

from __future__ import annotations

import csv
import json
import shlex
from datetime import UTC, datetime
from pathlib import Path

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

import tuner
from tuner.config import RunConfig, apply_overrides, save_config
from tuner.data import Splits
from tuner.errors import StudyError
from tuner.study._settings import load_settings
from tuner.study._slots import RETRY_KEY, best_trial

__all__ = ["best_config", "export_best", "export_trials"]


def best_config(
    storage: BaseStorage, name: str, *, storage_url: str
) -> tuple[RunConfig, FrozenTrial, Splits | None]:
    """The study's base config with the best trial's parameters, that trial, and for a
    cross-validated study the split its refit trains and tests on (see :func:`_as_refit`)."""
    settings = load_settings(storage, name)
    study = optuna.load_study(study_name=name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    best = best_trial(trials)
    if best is None:
        ended = [t for t in trials if t.state in (TrialState.PRUNED, TrialState.FAIL)]
        if ended and all(t.state.is_finished() for t in trials):
            nothing = sum(
                t.user_attrs.get("pruned_because") == "it learned nothing" for t in ended
            )
            raise StudyError(
                f"study {name!r} has no complete trial: its {len(ended)} trials were pruned or "
                f"failed ({nothing} learned nothing); see 'tuner status', then create a study "
                f"{_what_may_learn(settings.splits)}"
            )
        raise StudyError(
            f"study {name!r} has no complete trial yet; run workers first "
            f"({shlex.join(['tuner', 'worker', name])})"
        )
    overrides = settings.search.overrides_of(best.params)
    config = apply_overrides(settings.base, overrides, source=f"trial {best.number}")
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
    if settings.splits.scheme != "cv":
        return config, best, None
    return config, best, _as_refit(config, best, settings.splits)


def _what_may_learn(splits: Splits) -> str:
    """Advice for a study where nothing learned. One validation split of a small cohort can
    show no learning where folds over all its cases do (benchmarks/tuning_pays.py, seed 1:
    every trial of the one-split study was pruned, the 5-fold study's best scored AUC 0.87)."""
    if splits.scheme == "cv":
        return "with a wider search space or more epochs"
    cases = len(splits.splits[0].val)
    return (
        f"that cross-validates (data.split.cv_folds: 5 in its config: one validation split of "
        f"{cases} cases can hide what folds over every case show), or with more epochs"
    )


def _as_refit(config: RunConfig, best: FrozenTrial, splits: Splits) -> Splits:
    """Turn the config of a cross-validated trial into its refit: all non-test cases for the
    common best epoch, replaying the common learning-rate schedule, tested on the held-out
    cases the study never saw. Returns that split (train and val: every non-test case)."""
    attrs = best.user_attrs
    assert config.provenance is not None
    config.provenance["cv"] = {
        "mean": best.value,
        "spread": attrs.get("cv_spread"),
        "folds": attrs.get("cv_losses"),
        "cv_epoch": attrs["cv_epoch"],
        "repeats": config.train.repeats,
    }
    config.data.split.cv_folds = None
    config.train.refit_epochs = int(attrs["cv_epoch"])
    config.train.lr_schedule = [float(lr) for lr in attrs["lrs"]]
    config.train.repeats = 1
    return Splits(
        "holdout", splits.seed, splits.fractions, None, splits.balance_patches, splits.splits[:1]
    )


def export_best(storage: BaseStorage, name: str, out: Path, *, storage_url: str) -> FrozenTrial:
    config, best, held_out = best_config(storage, name, storage_url=storage_url)
    header = (
        f"# Best configuration of study {name!r} (trial {best.number}, val loss "
        f"{best.value:.4f}),\n# exported by tuner {tuner.__version__}. Train the final model "
        f"with\n#   tuner train --config {shlex.quote(out.name)}\n"
    )
    if held_out is not None:  # a cross-validated study: its test cases travel with the config
        splits_file = out.with_name(out.stem + ".splits.json")
        held_out.save(splits_file)
        config.data.split.file = Path(splits_file.name)
        header += (
            f"# A refit: {config.train.refit_epochs} epochs on every case but the held-out test "
            f"cases of {splits_file.name}.\n"
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
