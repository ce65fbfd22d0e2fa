"""What a study holds so that a worker needs only its name and the storage.

The settings (search space, base config, feature store and checksum, the split, the budget,
pruner, sampler and retry cap) are one JSON value in the study's system attributes, written once by
``tuner study create``. A short summary also goes into the user attributes, where
optuna-dashboard shows it.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import optuna
from optuna.storages import BaseStorage

from tuner.config import RunConfig, parse_config
from tuner.data import Split, Splits
from tuner.errors import StudyError
from tuner.search import SearchSpace

__all__ = [
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_PRUNER",
    "DEFAULT_SAMPLER",
    "DEFAULT_SEED",
    "DEFAULT_TRIALS",
    "OBJECTIVE_NAME",
    "OBJECTIVE_TITLE",
    "PRUNERS",
    "SAMPLERS",
    "SETTINGS_KEY",
    "StudySettings",
    "load_settings",
    "make_pruner",
    "make_sampler",
    "name_objective",
]

SETTINGS_KEY = "tuner:settings"
PRUNERS = ("median", "asha", "hyperband", "none")
SAMPLERS = ("tpe", "random", "cmaes")
DEFAULT_TRIALS = 50
DEFAULT_PRUNER = "median"
DEFAULT_SAMPLER = "tpe"
DEFAULT_SEED = 0
DEFAULT_MAX_RETRIES = 3
"""Retries of a slot after its worker died (studies created before the setting have it too)."""
OBJECTIVE_NAME = "val_loss"
"""The objective's metric name, which optuna-dashboard and Optuna's plots show."""
OBJECTIVE_TITLE = "validation loss"
"""The objective as an axis title reads it."""


@dataclass(frozen=True)
class StudySettings:
    space: dict[str, Any]
    base_config: dict[str, Any]
    features: dict[str, str]  # path, checksum
    splits: dict[str, Any]
    budget: int
    pruner: str
    sampler: str
    seed: int
    tuner_version: str
    created: str
    checkpoints: str | None = None  # folder shared by workers; None: retries start over
    max_retries: int = DEFAULT_MAX_RETRIES  # retries after deaths; interrupts do not count

    def comparable(self) -> dict[str, Any]:
        """What must agree for a second ``study create`` to be the same study (as JSON)."""
        data = asdict(self)
        for key in ("tuner_version", "created", "checkpoints"):  # not the study, where it lives
            data.pop(key)
        data["features"] = {"checksum": self.features["checksum"]}
        data["base_config"] = _without_store_path(self.base_config)
        plain: dict[str, Any] = json.loads(json.dumps(data))
        return plain

    def config(self) -> RunConfig:
        return parse_config(self.base_config, source="the study's base config")

    def search_space(self) -> SearchSpace:
        return SearchSpace.from_dict(self.space, source="the study's search space")

    def split(self) -> Split:
        return Splits.from_dict(self.splits).splits[0]

    @property
    def epochs(self) -> int:
        return int(self.base_config["train"]["epochs"])


def _without_store_path(config: dict[str, Any]) -> dict[str, Any]:
    data = {**config, "data": {**config["data"]}}
    data["data"].pop("features", None)
    return data


def load_settings(storage: BaseStorage, study_name: str) -> StudySettings:
    """The settings of a study made by ``tuner study create``."""
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        raise StudyError(
            f"study {study_name!r} does not exist in this storage; create it with "
            "'tuner study create' (or check --storage / TUNER_STORAGE)"
        ) from None
    raw = storage.get_study_system_attrs(study_id).get(SETTINGS_KEY)
    if raw is None:
        raise StudyError(
            f"study {study_name!r} was not created by 'tuner study create' (it has no tuner "
            "settings); create a new study with tuner"
        )
    return StudySettings(**raw)


def name_objective(study: optuna.Study) -> bool:
    """Name the study's objective :data:`OBJECTIVE_NAME` unless it has names; True if it named it.

    ``tuner study create`` names a new study; it and the workers name one created before
    tuner did (``set_metric_names`` is idempotent, so two workers doing it at once agree).
    """
    if study.metric_names is not None:
        return False
    with warnings.catch_warnings():  # Optuna calls metric names experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([OBJECTIVE_NAME])
    return True


def make_sampler(
    settings: StudySettings, *, worker_seed: bool = True
) -> optuna.samplers.BaseSampler:
    """The study's sampler; each worker gets its own seed so parallel workers differ."""
    seed = settings.seed
    if worker_seed:
        token = f"{socket.gethostname()}:{os.getpid()}:{seed}".encode()
        seed = int.from_bytes(hashlib.sha256(token).digest()[:4], "big")
    startup = max(3, min(10, settings.budget // 5))
    if settings.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    tpe = optuna.samplers.TPESampler(
        seed=seed,
        n_startup_trials=startup,
        constant_liar=True,
        multivariate=True,
        group=True,
    )
    if settings.sampler == "tpe":
        return tpe
    return optuna.samplers.CmaEsSampler(
        seed=seed, n_startup_trials=startup, independent_sampler=tpe
    )


def make_pruner(settings: StudySettings) -> optuna.pruners.BasePruner:
    """The study's pruner, scaled to the base config's number of epochs."""
    epochs = settings.epochs
    if settings.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=4, n_warmup_steps=max(2, epochs // 8), interval_steps=1
        )
    if settings.pruner == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=max(1, epochs // 16), reduction_factor=3
        )
    if settings.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=max(1, epochs // 16), max_resource=epochs, reduction_factor=3
        )
    return optuna.pruners.NopPruner()
