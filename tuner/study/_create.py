"""``tuner study create``: a study that holds everything its workers need."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import optuna

import tuner
from tuner.config import DataConfig, RunConfig, load_config
from tuner.errors import StudyError
from tuner.features import FeatureStore
from tuner.search import load_space
from tuner.storage import RetryingRDBStorage, study_lock
from tuner.study._folders import folder_problem
from tuner.study._names import check_study_name
from tuner.study._settings import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_PRUNER,
    DEFAULT_SAMPLER,
    DEFAULT_SEED,
    DEFAULT_TRIALS,
    PRUNERS,
    SAMPLERS,
    SETTINGS_KEY,
    StudySettings,
    load_settings,
    name_objective,
)
from tuner.training import resolve_splits, warn_small_splits

__all__ = ["CreateResult", "create_study"]

logger = logging.getLogger(__name__)


class CreateResult:
    """The study's settings, whether this call created it, and the budget it raised, if any."""

    def __init__(
        self, settings: StudySettings, created: bool, raised_from: int | None = None
    ) -> None:
        self.settings = settings
        self.created = created
        self.raised_from = raised_from


def create_study(
    storage: RetryingRDBStorage,
    name: str,
    features: Path,
    *,
    space: Path | None = None,
    config: Path | None = None,
    trials: int | None = None,
    pruner: str | None = None,
    sampler: str | None = None,
    seed: int | None = None,
    checkpoints: Path | None = None,
    max_retries: int | None = None,
) -> CreateResult:
    """Create the study ``name``, or re-open it: check it agrees, and maybe raise its budget.

    An option left as None was not given: a new study takes its default (the built-in space,
    the default config, :data:`DEFAULT_TRIALS` trials, ...), an existing one keeps what it has.
    Re-opening compares only the options given (and the store's checksum), so a default that
    changed in a later tuner does not refuse an old study. A larger ``trials`` raises the
    budget (running workers see it when they next decide whether to start a trial); a smaller
    one is refused.

    Everything is checked before the study is touched: the name (:func:`check_study_name`),
    the store (and its checksum), the config, the search space against the config, the split
    and the checkpoint folder. ``checkpoints`` is the folder (shared by all workers) where
    trials save their state after each epoch, so that a retried trial continues where it
    stopped; on the embedded store it defaults to ``storage/checkpoints`` beside the database.
    It is checked here without creating anything (a path under a regular file is refused);
    each worker makes it and checks it again where it runs. ``max_retries`` is how many times a
    slot is retried after its worker died (interrupted trials are retried without counting).
    The new study's objective is named :data:`OBJECTIVE_NAME` (and so is an old one's without
    a name).
    """
    check_study_name(name)
    if trials is not None and trials < 1:
        raise StudyError(f"trials must be at least 1, but got {trials}", params=("trials",))
    if pruner is not None and pruner not in PRUNERS:
        raise StudyError(
            f"pruner must be one of {', '.join(PRUNERS)}, but got {pruner!r}", params=("pruner",)
        )
    if sampler is not None and sampler not in SAMPLERS:
        raise StudyError(
            f"sampler must be one of {', '.join(SAMPLERS)}, but got {sampler!r}",
            params=("sampler",),
        )
    if max_retries is not None and max_retries < 0:
        raise StudyError(
            f"max_retries must be 0 or more (retries of a trial whose worker died), but got "
            f"{max_retries}"
        )
    store = FeatureStore.open(features)
    base = _base_config(config, store)
    search = load_space(space)
    search.validate(base, source=f"search space {str(space or 'default')!r}")
    splits = resolve_splits(base, store)
    settings = StudySettings(
        search=search,
        base=base,
        features={"path": str(store.path.resolve()), "checksum": store.checksum},
        splits=splits,
        budget=DEFAULT_TRIALS if trials is None else trials,
        pruner=pruner or DEFAULT_PRUNER,
        sampler=sampler or DEFAULT_SAMPLER,
        seed=DEFAULT_SEED if seed is None else seed,
        tuner_version=tuner.__version__,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        checkpoints=_checkpoint_folder(storage, checkpoints),
        max_retries=DEFAULT_MAX_RETRIES if max_retries is None else max_retries,
    )
    given = {"space": space, "base_config": config, "budget": trials, "pruner": pruner,
             "sampler": sampler, "seed": seed, "max_retries": max_retries}  # fmt: skip
    compared = ["features", *(k for k, v in given.items() if v is not None and k != "budget")]
    with study_lock(storage, name):  # a raised budget and the workers' count never interleave
        study = optuna.create_study(
            study_name=name, storage=storage, direction="minimize", load_if_exists=True
        )
        study_id = storage.get_study_id_from_name(name)
        existing = storage.get_study_system_attrs(study_id).get(SETTINGS_KEY)
        if existing is None:
            if study.trials:
                raise StudyError(
                    f"study {name!r} exists with {len(study.trials)} trials but was not made by "
                    "tuner; choose another name"
                )
            if study.direction != optuna.study.StudyDirection.MINIMIZE:
                raise StudyError(f"study {name!r} exists and maximises; choose another name")
            storage.set_study_system_attr(study_id, SETTINGS_KEY, settings.to_json())
            name_objective(study)
            _describe_for_dashboard(storage, study_id, settings)
            warn_small_splits(splits, store)
            return CreateResult(settings, created=True)
        old = load_settings(storage, name)
        new, before = settings.comparable(), old.comparable()
        differs = [k for k in compared if before[k] != new[k]]
        if differs:
            raise StudyError(
                f"study {name!r} already exists with a different {', '.join(differs)}; leave "
                "that option out to keep the study's, choose another name, or delete the study "
                "first with 'tuner study delete'"
            )
        if trials is not None and trials < old.budget:
            raise StudyError(
                f"study {name!r} has a budget of {old.budget} trials; a budget can be raised but "
                f"not lowered, but got trials={trials}"
            )
        name_objective(study)
        if trials is None or trials == old.budget:
            return CreateResult(old, created=False)
        raised = old.model_copy(update={"budget": trials})
        storage.set_study_system_attr(study_id, SETTINGS_KEY, raised.to_json())
        storage.set_study_user_attr(study_id, "budget", trials)
    logger.debug("study %s: budget raised from %d to %d trials", name, old.budget, trials)
    return CreateResult(raised, created=False, raised_from=old.budget)


def _checkpoint_folder(storage: RetryingRDBStorage, given: Path | None) -> str | None:
    if given is not None:
        folder = given.resolve()
        problem = folder_problem(folder)
        if problem is not None and problem[1]:
            raise StudyError(
                f"checkpoint folder {str(folder)!r} {problem[0]}; choose a folder that every "
                "worker can write"
            )
        if problem is not None:  # it may exist where the workers run
            logger.warning(
                "checkpoint folder %s %s; each worker checks it when it starts", folder,
                problem[0],
            )  # fmt: skip
        return str(folder)
    database = storage.engine.url.database
    if storage.engine.dialect.name == "sqlite" and database:
        return str(Path(database).resolve().parent / "checkpoints")
    logger.info(
        "no --checkpoints folder: a trial retried after its worker died starts from epoch 1"
    )
    return None


def _base_config(path: Path | None, store: FeatureStore) -> RunConfig:
    if path is None:
        base = RunConfig(data=DataConfig(features=store.path.resolve()))
    else:
        base = load_config(path)
        if base.data.features.resolve() != store.path.resolve():
            logger.info("the study uses --features %s instead of the config's store", store.path)
    base = base.model_copy(deep=True)
    base.data.features = store.path.resolve()
    base.data.checksum = store.checksum
    if base.data.split.folds is not None:
        raise StudyError(
            "a study tunes on one train/validation split, or cross-validates with "
            "data.split.cv_folds; set data.split.folds to null in the base config (use outer "
            "folds for the final 'tuner train' instead)"
        )
    if base.train.refit_epochs is not None:
        raise StudyError(
            "train.refit_epochs trains without validation, which a study needs; set it to null "
            "in the base config"
        )
    return base


def _describe_for_dashboard(
    storage: RetryingRDBStorage, study_id: int, settings: StudySettings
) -> None:
    summary = {
        "budget": settings.budget,
        "sampler": settings.sampler,
        "pruner": settings.pruner,
        "features": settings.features["path"],
        "parameters": ", ".join(settings.search.keys()),
        "epochs": settings.epochs,
        "max_retries": settings.max_retries,
        "tuner_version": settings.tuner_version,
    }
    for key, value in summary.items():
        storage.set_study_user_attr(study_id, key, value)
