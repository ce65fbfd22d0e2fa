"""Training: batches from the feature store, the shared epoch loop, the run folder."""

from tuner.training._batches import Batch, CaseSampler, StoreTensors
from tuner.training._evaluate import ExternalResult, evaluate_run
from tuner.training._lockstep import Lockstep, LockstepResult, Member, members_of
from tuner.training._metrics import (
    Metrics,
    auc_interval,
    chance_loss,
    classification_metrics,
    with_auc_interval,
)
from tuner.training._random import RunGenerators
from tuner.training._run import (
    FoldResult,
    RunResult,
    default_run_dir,
    open_store,
    resolve_splits,
    train_run,
    warn_small_splits,
)
from tuner.training._state import TrainState, load_state, load_states, save_state, save_states
from tuner.training._trainer import (
    EpochCallback,
    EpochReport,
    Evaluation,
    FitResult,
    Trainer,
    TrainingRun,
)

__all__ = [
    "Batch",
    "CaseSampler",
    "EpochCallback",
    "EpochReport",
    "Evaluation",
    "ExternalResult",
    "FitResult",
    "FoldResult",
    "Lockstep",
    "LockstepResult",
    "Member",
    "Metrics",
    "RunGenerators",
    "RunResult",
    "StoreTensors",
    "TrainState",
    "Trainer",
    "TrainingRun",
    "auc_interval",
    "chance_loss",
    "classification_metrics",
    "default_run_dir",
    "evaluate_run",
    "load_state",
    "load_states",
    "members_of",
    "open_store",
    "resolve_splits",
    "save_state",
    "save_states",
    "train_run",
    "warn_small_splits",
    "with_auc_interval",
]
