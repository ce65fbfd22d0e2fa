"""``tuner study list`` and ``tuner study delete``: the studies of a storage, and removing one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import optuna
from optuna.storages import BaseStorage

from tuner.study._settings import load_settings

__all__ = ["StudySummary", "delete_study", "list_studies"]


@dataclass(frozen=True)
class StudySummary:
    """A study of the storage: its name, its number of trials and its best value so far."""

    name: str
    trials: int
    best_value: float | None

    def describe(self) -> str:
        """``mil: 12 trials, best 0.5123``."""
        best = f", best {self.best_value:.4f}" if self.best_value is not None else ""
        return f"{self.name}: {self.trials} trials{best}"


def list_studies(storage: BaseStorage) -> list[StudySummary]:
    """Every study in ``storage`` (tuner's or not), in the order Optuna lists them."""
    return [
        StudySummary(
            name=s.study_name,
            trials=s.n_trials,
            best_value=s.best_trial.value if s.best_trial is not None else None,
        )
        for s in optuna.get_all_study_summaries(storage)
    ]


def delete_study(
    storage: BaseStorage, name: str, *, confirm: Callable[[], object] | None = None
) -> None:
    """Delete study ``name`` and all its trials.

    A study that does not exist, or that tuner did not create, is a
    :class:`~tuner.errors.StudyError` before ``confirm`` is called; ``confirm`` (asking a person,
    say) may raise to keep the study.
    """
    load_settings(storage, name)
    if confirm is not None:
        confirm()
    optuna.delete_study(study_name=name, storage=storage)
