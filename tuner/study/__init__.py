"""Studies: creation, workers, launching (local, SLURM, Kubernetes), status and export.

Names are imported on first use, so that commands that only read a study (status, export) do
not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tuner.study._budget import Budget, next_action
    from tuner.study._catalog import StudySummary, delete_study, list_studies
    from tuner.study._create import CreateResult, create_study
    from tuner.study._export import best_config, export_best, export_trials
    from tuner.study._k8s import K8sOptions, k8s_manifests
    from tuner.study._launch import WorkerPlan, launch_workers, plan_workers, preflight
    from tuner.study._loop import Interrupted, Objective, WorkerReport, run_trials
    from tuner.study._names import MAX_NAME_LENGTH, check_study_name, job_label
    from tuner.study._settings import (
        DEFAULT_MAX_RETRIES,
        OBJECTIVE_NAME,
        OBJECTIVE_TITLE,
        PRUNERS,
        SAMPLERS,
        SETTINGS_KEY,
        StudySettings,
        load_settings,
        make_pruner,
        make_sampler,
        name_objective,
    )
    from tuner.study._slots import (
        HISTORY_KEY,
        RETRY_KEY,
        Slot,
        best_trial,
        group_slots,
        slot_of,
    )
    from tuner.study._slurm import slurm_script
    from tuner.study._status import StudyStatus, study_status
    from tuner.study._worker import TrainingObjective, WorkerOptions, run_worker

_WHERE = {
    "_budget": ("Budget", "next_action"),
    "_catalog": ("StudySummary", "delete_study", "list_studies"),
    "_create": ("CreateResult", "create_study"),
    "_export": ("best_config", "export_best", "export_trials"),
    "_k8s": ("K8sOptions", "k8s_manifests"),
    "_launch": ("WorkerPlan", "launch_workers", "plan_workers", "preflight"),
    "_loop": ("Interrupted", "Objective", "WorkerReport", "run_trials"),
    "_names": ("MAX_NAME_LENGTH", "check_study_name", "job_label"),
    "_settings": (
        "PRUNERS",
        "SAMPLERS",
        "DEFAULT_MAX_RETRIES",
        "OBJECTIVE_NAME",
        "OBJECTIVE_TITLE",
        "SETTINGS_KEY",
        "StudySettings",
        "load_settings",
        "make_pruner",
        "make_sampler",
        "name_objective",
    ),
    "_slots": ("HISTORY_KEY", "RETRY_KEY", "Slot", "best_trial", "group_slots", "slot_of"),
    "_slurm": ("slurm_script",),
    "_status": ("StudyStatus", "study_status"),
    "_worker": ("TrainingObjective", "WorkerOptions", "run_worker"),
}
_MODULE_OF = {name: module for module, names in _WHERE.items() for name in names}

__all__ = [
    "DEFAULT_MAX_RETRIES",
    "HISTORY_KEY",
    "MAX_NAME_LENGTH",
    "OBJECTIVE_NAME",
    "OBJECTIVE_TITLE",
    "PRUNERS",
    "RETRY_KEY",
    "SAMPLERS",
    "SETTINGS_KEY",
    "Budget",
    "CreateResult",
    "Interrupted",
    "K8sOptions",
    "Objective",
    "Slot",
    "StudySettings",
    "StudyStatus",
    "StudySummary",
    "TrainingObjective",
    "WorkerOptions",
    "WorkerPlan",
    "WorkerReport",
    "best_config",
    "best_trial",
    "check_study_name",
    "create_study",
    "delete_study",
    "export_best",
    "export_trials",
    "group_slots",
    "job_label",
    "k8s_manifests",
    "launch_workers",
    "list_studies",
    "load_settings",
    "make_pruner",
    "make_sampler",
    "name_objective",
    "next_action",
    "plan_workers",
    "preflight",
    "run_trials",
    "run_worker",
    "slot_of",
    "slurm_script",
    "study_status",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'tuner.study' has no attribute {name!r}")
    return getattr(importlib.import_module(f"tuner.study.{module}"), name)
