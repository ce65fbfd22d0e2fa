"""Studies: creation, workers, launching, status and export."""

from tuner.study._budget import Budget, next_action, slot_of
from tuner.study._create import CreateResult, create_study
from tuner.study._export import best_config, export_best, export_trials
from tuner.study._launch import WorkerPlan, launch_workers, plan_workers
from tuner.study._loop import Interrupted, Objective, WorkerReport, run_trials
from tuner.study._settings import (
    PRUNERS,
    SAMPLERS,
    SETTINGS_KEY,
    StudySettings,
    load_settings,
    make_pruner,
    make_sampler,
)
from tuner.study._slurm import slurm_script
from tuner.study._status import StudyStatus, study_status
from tuner.study._worker import TrainingObjective, WorkerOptions, run_worker

__all__ = [
    "PRUNERS",
    "SAMPLERS",
    "SETTINGS_KEY",
    "Budget",
    "CreateResult",
    "Interrupted",
    "Objective",
    "StudySettings",
    "StudyStatus",
    "TrainingObjective",
    "WorkerOptions",
    "WorkerPlan",
    "WorkerReport",
    "best_config",
    "create_study",
    "export_best",
    "export_trials",
    "launch_workers",
    "load_settings",
    "make_pruner",
    "make_sampler",
    "next_action",
    "plan_workers",
    "run_trials",
    "run_worker",
    "slot_of",
    "slurm_script",
    "study_status",
]
