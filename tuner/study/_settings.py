"""What a study holds so that a worker needs only its name and the storage.

The settings (search space, base config, feature store and checksum, the split, the budget,
pruner, sampler and retry cap) are one JSON value in the study's system attributes, written once by
``tuner study create``. A short summary also goes into the user attributes, where
optuna-dashboard shows it.
"""

from __future__ import annotations

import hashlib
import os
import socket
import warnings
from typing import Any

import optuna
from optuna.storages import BaseStorage
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from typing_extensions import TypedDict

from tuner.config import RunConfig
from tuner.data import Split, Splits
from tuner.errors import StudyError
from tuner.search import SearchSpace
from tuner.study._choices import PRUNERS, SAMPLERS, PrunerName, SamplerName
from tuner.study._pruners import ChanceHyperbandPruner, ChancePruner, chance_rule

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
    "PrunerName",
    "SamplerName",
    "StoreRef",
    "StudySettings",
    "load_settings",
    "make_pruner",
    "make_sampler",
    "name_objective",
]

SETTINGS_KEY = "tuner:settings"
DEFAULT_TRIALS = 50
DEFAULT_PRUNER: PrunerName = "median"
DEFAULT_SAMPLER: SamplerName = "tpe"
DEFAULT_SEED = 0
DEFAULT_MAX_RETRIES = 3
"""Retries of a slot after its worker died (studies created before the setting have it too)."""
OBJECTIVE_NAME = "val_loss"
"""The objective's metric name, which optuna-dashboard and Optuna's plots show."""
OBJECTIVE_TITLE = "validation loss"
"""The objective as an axis title reads it."""

_NOT_THE_STUDY = {"tuner_version", "created", "checkpoints"}  # where it lives, not what it is


class StoreRef(TypedDict):
    """The feature store a study was created with: where it was, and its checksum."""

    path: str
    checksum: str


class StudySettings(BaseModel):
    """Everything a worker needs, validated when the study is created and when it is loaded.

    Stored as JSON (``model_dump(mode="json", by_alias=True)``) under :data:`SETTINGS_KEY`;
    the base config and the space keep their names there (``base_config``, ``space``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    search: SearchSpace = Field(alias="space")
    base: RunConfig = Field(alias="base_config")
    features: StoreRef
    splits: Splits
    budget: int = Field(ge=1)
    pruner: PrunerName
    sampler: SamplerName
    seed: int
    tuner_version: str
    created: str
    checkpoints: str | None = None  # folder shared by workers; None: retries start over
    max_retries: int = Field(DEFAULT_MAX_RETRIES, ge=0)  # after deaths; interrupts do not count

    def to_json(self) -> dict[str, Any]:
        """The value stored in the study's system attributes."""
        data: dict[str, Any] = self.model_dump(mode="json", by_alias=True)
        return data

    def comparable(self) -> dict[str, Any]:
        """What must agree for a second ``study create`` to be the same study (as JSON)."""
        data = {k: v for k, v in self.to_json().items() if k not in _NOT_THE_STUDY}
        data["features"] = {"checksum": self.features["checksum"]}
        data["base_config"]["data"].pop("features", None)  # the store may move; its checksum
        return data

    def config(self) -> RunConfig:
        """The base config (each trial applies its parameters to a copy)."""
        return self.base

    def search_space(self) -> SearchSpace:
        return self.search

    def split(self) -> Split:
        return self.splits.splits[0]

    @property
    def epochs(self) -> int:
        return self.base.train.epochs

    @property
    def space(self) -> dict[str, Any]:
        """The space as in its YAML file (a view for display, e.g. the report)."""
        return self.search.to_dict()

    @property
    def base_config(self) -> dict[str, Any]:
        """The base config as plain YAML values (a view for display, e.g. the report)."""
        return self.base.to_dict()


def load_settings(storage: BaseStorage, study_name: str) -> StudySettings:
    """The settings of a study made by ``tuner study create``, validated."""
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
    try:
        return StudySettings.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        raise StudyError(
            f"study {study_name!r} has damaged or foreign tuner settings ({where}: "
            f"{first['msg']}); recreate it with this version of 'tuner study create'"
        ) from None


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
    """The study's pruner, scaled to the base config's number of epochs.

    Every choice but ``none`` has the chance rule in front (:mod:`._pruners`): a trial whose
    best validation loss is not clearly below chance after a quarter of the epochs is pruned,
    whatever the others do; ``chance`` is the rule alone. The median pruner waits as long
    before it compares (an eighth, as before, pruned learning trials in their early spikes).
    """
    epochs = settings.epochs
    rule = chance_rule(epochs)
    if settings.pruner == "median":
        median = optuna.pruners.MedianPruner(
            n_startup_trials=4, n_warmup_steps=rule.warmup, interval_steps=1
        )
        return ChancePruner(rule, median)
    if settings.pruner == "asha":
        halving = optuna.pruners.SuccessiveHalvingPruner(
            min_resource=max(1, epochs // 16), reduction_factor=3
        )
        return ChancePruner(rule, halving)
    if settings.pruner == "hyperband":
        return ChanceHyperbandPruner(
            rule, min_resource=max(1, epochs // 16), max_resource=epochs, reduction_factor=3
        )
    if settings.pruner == "chance":
        return ChancePruner(rule)
    return optuna.pruners.NopPruner()
