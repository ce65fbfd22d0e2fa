"""``tuner evaluate``: score a trained run on another feature store, an external cohort.

Papers report a model on a cohort it never saw (another hospital, scanner or year). The run's
``model.pt`` records the encoder of the store it was trained on (backbone, weights, input size,
normalisation, dimension: :meth:`~tuner.features.FeatureStore.encoder_identity`), so features
of another encoder are refused even when their dimension agrees: their numbers mean something
else. Every case of the store is scored.

A run of outer folds (``data.split.folds``) holds one model per fold; each scores every case
and the prediction is their mean probability (an ensemble of the fold models). A refit run's
models are its refits. The output folder (``metrics.json``, ``predictions.csv``, ``roc.png``,
``confusion_matrix.png``) is written whole or not at all.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import tuner
from tuner._device import resolve_device
from tuner._files import write_folder
from tuner.config import parse_config
from tuner.errors import RunError, StoreError
from tuner.features import FeatureStore
from tuner.training._batches import StoreTensors
from tuner.training._metrics import classification_metrics, with_auc_interval
from tuner.training._run import write_predictions
from tuner.training._trainer import Evaluation, Trainer

__all__ = ["ExternalResult", "evaluate_run"]

logger = logging.getLogger(__name__)


@dataclass
class ExternalResult:
    out: Path
    metrics: dict[str, Any]


def evaluate_run(
    run: Path, features: Path, out: Path | None = None, *, device: str = "auto"
) -> ExternalResult:
    """Score the model(s) of run folder ``run`` on every case of the store ``features``."""
    saved = _load_model(run)
    store = FeatureStore.open(features)
    _check_store(saved, store, run)
    if store.checksum == saved["store_checksum"]:
        logger.warning(
            "%s is the store the run was trained on: its scores include the training and "
            "validation cases, so they are no external validation",
            store.path,
        )
    out = out if out is not None else run / f"evaluation-{store.path.name}"
    if out.exists():
        raise RunError(f"output folder {str(out)!r} already exists; choose another out")
    config = parse_config(saved["config"], source=f"the config in {str(run / 'model.pt')!r}")
    config.data.features = store.path
    config.data.checksum = store.checksum
    torch_device = resolve_device(device)
    trainer = Trainer(config, StoreTensors.load(store, torch_device), torch_device)
    cases = [c.case for c in store.cases]
    weights = torch.tensor(
        np.mean(saved["class_weights"], axis=0), dtype=torch.float32, device=torch_device
    )
    evaluations = []
    for state in saved["folds"]:
        model = trainer.new_model()
        model.load_state_dict(state)
        evaluations.append(trainer.evaluate(model, trainer.sampler(cases, train=False), weights))
    ensemble = _mean_of(evaluations, weights.cpu())
    n_models = len(evaluations)
    metrics = {
        "tuner_version": tuner.__version__,
        "run": str(run.resolve()),
        "features": str(store.path.resolve()),
        "store_checksum": store.checksum,
        "scored_by": "the model" if n_models == 1 else f"the mean of {n_models} fold models",
        "test": ensemble.metrics.as_dict(),
    }
    _write(out, metrics, ensemble, store.classes, "mean" if n_models > 1 else 0)
    return ExternalResult(out, metrics)


def _load_model(run: Path) -> dict[str, Any]:
    path = run / "model.pt"
    if not path.is_file():
        raise RunError(f"{str(run)!r} has no model.pt; give the folder of a run of 'tuner train'")
    try:
        saved: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a torn or foreign file: unpickling raises many kinds
        raise RunError(
            f"{str(path)!r} cannot be read ({type(error).__name__}); train the run again"
        ) from None
    if saved.get("format") != "tuner-model" or "class_weights" not in saved:
        raise RunError(
            f"{str(path)!r} is not a model of this version of tuner; train the run again"
        )
    return saved


def _check_store(saved: dict[str, Any], store: FeatureStore, run: Path) -> None:
    where = f"feature store {str(store.path)!r}"
    if store.dim != saved["in_dim"]:
        raise StoreError(
            f"{where} has {store.dim}-d features but the model of {str(run)!r} takes "
            f"{saved['in_dim']}-d ones; extract the cohort with the run's encoder "
            f"({saved['encoder'].get('backbone')})"
        )
    mine, theirs = store.encoder_identity(), saved["encoder"]
    differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
    if differ:
        raise StoreError(
            f"{where} was made by another encoder than the run's ({', '.join(differ)} differ: "
            f"{json.dumps({k: mine.get(k) for k in differ})} against "
            f"{json.dumps({k: theirs.get(k) for k in differ})}); extract the cohort with the "
            "run's encoder and weights"
        )
    if list(store.classes) != list(saved["classes"]):
        raise StoreError(
            f"{where} has the classes {list(store.classes)} but the model predicts "
            f"{list(saved['classes'])}; label the cohort with the same class names"
        )


def _mean_of(evaluations: list[Evaluation], weights: torch.Tensor) -> Evaluation:
    """The evaluation of the models' mean probability (the one model's, for one)."""
    first = evaluations[0]
    if len(evaluations) == 1:
        metrics = first.metrics
        probs = first.probs
    else:
        probs = np.mean([e.probs for e in evaluations], axis=0)
        log_p = torch.log(torch.from_numpy(probs.astype(np.float64)).clamp_min(1e-12))
        loss = float(F.nll_loss(log_p, torch.from_numpy(first.labels), weight=weights.double()))
        metrics = classification_metrics(probs, first.labels, loss)
    metrics = with_auc_interval(metrics, probs, first.labels)
    return Evaluation(metrics, first.cases, first.labels, probs)


def _write(
    out: Path,
    metrics: dict[str, Any],
    evaluation: Evaluation,
    classes: tuple[str, ...],
    fold: int | str,
) -> None:
    from tuner.training._plots import plot_confusion_matrix, plot_roc

    def fill(folder: Path) -> None:
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        write_predictions(folder / "predictions.csv", [(fold, evaluation)], classes)
        labels, probs = evaluation.labels, evaluation.probs
        plot_confusion_matrix(labels, probs.argmax(1), classes, folder / "confusion_matrix.png")
        plot_roc(labels, probs, classes, folder / "roc.png")

    write_folder(out, fill)
