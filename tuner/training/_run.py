"""``tuner train``: train on a config, test the best checkpoint, write the run folder.

The run folder (``config.yaml``, ``metrics.json``, ``predictions.csv``, ``attention.csv``,
``confusion_matrix.png``, ``roc.png``, ``splits.json``, ``model.pt``) is written into
``RUN.partial`` and renamed when complete, so a run folder is never half-written.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
import statistics
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

import tuner
from tuner._device import resolve_device
from tuner.config import RunConfig, save_config
from tuner.data import Split, Splits, load_splits, make_splits
from tuner.errors import DataError, TunerError
from tuner.features import FeatureStore
from tuner.training._batches import StoreTensors
from tuner.training._metrics import with_auc_interval
from tuner.training._trainer import EpochCallback, Evaluation, FitResult, Trainer

__all__ = [
    "FoldResult",
    "RunResult",
    "default_run_dir",
    "open_store",
    "resolve_splits",
    "train_run",
    "write_predictions",
]

logger = logging.getLogger(__name__)


@dataclass
class FoldResult:
    fit: FitResult
    val: Evaluation
    test: Evaluation
    state_dict: dict[str, torch.Tensor]
    class_weights: list[float]  # of the loss: from the cases the model was trained on
    refit_epochs: int | None = None


@dataclass
class RunResult:
    out: Path
    metrics: dict[str, Any]
    folds: list[FoldResult]


def default_run_dir(config_path: Path | None) -> Path:
    stem = config_path.stem if config_path else "run"
    return Path("runs") / f"{stem}-{datetime.now():%Y%m%d-%H%M%S}"


def open_store(config: RunConfig) -> FeatureStore:
    """The config's feature store, verified against the config's checksum when it has one."""
    return FeatureStore.open(
        config.data.features, checksum=config.data.checksum, expected_by="the config expects"
    )


def resolve_splits(config: RunConfig, store: FeatureStore) -> Splits:
    """The config's splits (from its file, or made from the store), checked for every class."""
    s = config.data.split
    if s.file is not None:
        splits = load_splits(s.file)
        unknown = sorted({c for p in splits.splits for c in _all_cases(p)} - set(store.labels()))
        if unknown:
            raise DataError(
                f"splits file {str(s.file)!r} names cases that are not in the store: "
                f"{', '.join(unknown[:5])}"
            )
    else:
        splits = make_splits(
            store.labels(), seed=s.seed, fractions=s.fractions, folds=s.folds,
            patch_counts=store.patch_counts() if s.balance_patches else None,
            class_names=store.classes,
        )  # fmt: skip
    labels = store.labels()
    for number, split in enumerate(splits.splits):
        for name, cases in split.parts().items():
            present = {labels[c] for c in cases}
            for index, cls in enumerate(store.classes):
                if index not in present:
                    where = f" of fold {number}" if len(splits.splits) > 1 else ""
                    raise DataError(
                        f"the {name} split{where} has no case of class {cls!r}; use more cases, "
                        "other split fractions or another data.split.seed"
                    )
    _warn_small(splits, labels, store.classes)
    return splits


SMALL_CLASS = 10
"""A split with fewer cases of a class than this gets a warning: its AUC is a coarse guess."""


def _warn_small(splits: Splits, labels: dict[str, int], classes: tuple[str, ...]) -> None:
    """Warn once when a split has fewer than :data:`SMALL_CLASS` cases of a class."""
    fewest: dict[str, tuple[int, str]] = {}
    for split in splits.splits:
        for name, cases in split.parts().items():
            counts = np.bincount([labels[c] for c in cases], minlength=len(classes))
            least = int(counts.argmin())
            if name not in fewest or counts[least] < fewest[name][0]:
                fewest[name] = (int(counts[least]), classes[least])
    small = [f"{name} {n} of {cls!r}" for name, (n, cls) in fewest.items() if n < SMALL_CLASS]
    if small:
        logger.warning(
            "few cases: the splits hold as few as %s (fewer than %d cases of a class); "
            "metrics on so few cases swing widely: read the AUC's interval, and tune with "
            "data.split.cv_folds",
            ", ".join(small), SMALL_CLASS,
        )  # fmt: skip


def train_run(
    config: RunConfig,
    out: Path,
    *,
    on_epoch: EpochCallback | None = None,
    progress: bool = False,
) -> RunResult:
    """Train (every fold), evaluate on test, and write the run folder ``out``."""
    if out.exists():
        raise TunerError(f"run folder {str(out)!r} already exists; choose another --out")
    store = open_store(config)
    splits = resolve_splits(config, store)
    device = resolve_device(config.train.device)
    config = config.model_copy(deep=True)
    config.data.checksum = store.checksum
    data = StoreTensors.load(store, device)
    trainer = Trainer(config, data, device)
    folds = [
        _train_fold(trainer, split, number, len(splits.splits), on_epoch, progress)
        for number, split in enumerate(splits.splits)
    ]
    if config.train.refit:
        mean_best = round(statistics.mean(f.fit.best_epoch for f in folds))
        for fold, split in zip(folds, splits.splits, strict=True):
            _refit(trainer, fold, split, mean_best)
    metrics = _metrics(folds, config)
    partial = out.with_name(out.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    try:
        _write_run(partial, config, store, splits, folds, metrics)
        partial.rename(out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return RunResult(out, metrics, folds)


def _train_fold(
    trainer: Trainer,
    split: Split,
    number: int,
    n_folds: int,
    on_epoch: EpochCallback | None,
    progress: bool,
) -> FoldResult:
    from tqdm import tqdm

    name = f"fold {number + 1}/{n_folds}" if n_folds > 1 else "training"
    bar = tqdm(
        total=trainer.config.train.epochs,
        desc=name,
        unit="epoch",
        disable=None if progress else True,
    )

    def report(epoch: Any) -> None:
        bar.update(1)
        bar.set_postfix(val_loss=f"{epoch.val.loss:.4f}", auc=epoch.val.auc)
        if on_epoch is not None:
            on_epoch(epoch)

    with bar:
        fit = trainer.fit(split.train, split.val, on_epoch=report)
    logger.info(
        "%s: best epoch %d of %d (%s), val loss %.4f, val auc %s",
        name, fit.best_epoch, len(fit.history), fit.stopped_by, fit.best_val.loss,
        _fmt(fit.best_val.auc),
    )  # fmt: skip
    model = trainer.new_model()
    model.load_state_dict(fit.state_dict)
    weights = trainer.class_weights(split.train)
    val = trainer.evaluate(model, trainer.sampler(split.val, train=False), weights)
    test = _test(trainer, model, split.test, weights)
    logger.info(
        "%s: test loss %.4f, test auc %s", name, test.metrics.loss, test.metrics.auc_text()
    )
    return FoldResult(fit, val, test, fit.state_dict, weights.tolist())


def _test(
    trainer: Trainer, model: Any, cases: tuple[str, ...], weights: torch.Tensor
) -> Evaluation:
    """Predictions on the test cases, with attention and the AUC's bootstrap interval."""
    test = trainer.evaluate(model, trainer.sampler(cases, train=False), weights, attention=True)
    test.metrics = with_auc_interval(test.metrics, test.probs, test.labels)
    return test


def _refit(trainer: Trainer, fold: FoldResult, split: Split, epochs: int) -> None:
    """Retrain on train+val for ``epochs`` and replace the fold's test results and weights."""
    cases = split.train + split.val
    fit = trainer.fit(cases, None, epochs=epochs)
    model = trainer.new_model()
    model.load_state_dict(fit.state_dict)
    weights = trainer.class_weights(cases)
    fold.test = _test(trainer, model, split.test, weights)
    fold.state_dict = fit.state_dict
    fold.class_weights = weights.tolist()
    fold.refit_epochs = epochs
    logger.info(
        "refit on train+val for %d epochs: test auc %s", epochs, fold.test.metrics.auc_text()
    )


def _metrics(folds: list[FoldResult], config: RunConfig) -> dict[str, Any]:
    per_fold = [_fold_metrics(f) for f in folds]
    if len(folds) == 1:
        return {"tuner_version": tuner.__version__, **per_fold[0]}
    summary: dict[str, Any] = {"tuner_version": tuner.__version__, "folds": per_fold}
    for part in ("val", "test"):
        for stat, fn in (("mean", statistics.mean), ("std", statistics.stdev)):
            summary.setdefault(stat, {})[part] = {
                key: _agg(fn, [fold[part][key] for fold in per_fold])
                for key in ("loss", "auc", "balanced_accuracy", "accuracy")
            }
    summary["mean_best_epoch"] = statistics.mean(f.fit.best_epoch for f in folds)
    return summary


def _fold_metrics(fold: FoldResult) -> dict[str, Any]:
    history = [
        {"epoch": e.epoch, "train_loss": e.train_loss, "val_loss": e.val.loss,
         "val_auc": e.val.auc, "lr": e.lr}
        for e in fold.fit.history
    ]  # fmt: skip
    return {
        "best_epoch": fold.fit.best_epoch,
        "epochs_run": len(fold.fit.history),
        "stopped_by": fold.fit.stopped_by,
        "seconds": round(fold.fit.seconds, 2),
        "refit_epochs": fold.refit_epochs,
        "val": fold.val.metrics.as_dict(),
        "test": fold.test.metrics.as_dict(),
        "history": history,
    }


def _agg(fn: Any, values: list[Any]) -> float | None:
    present = [v for v in values if v is not None]
    return float(fn(present)) if len(present) >= 2 else (present[0] if present else None)


def _write_run(
    folder: Path,
    config: RunConfig,
    store: FeatureStore,
    splits: Splits,
    folds: list[FoldResult],
    metrics: dict[str, Any],
) -> None:
    from tuner.training._plots import plot_confusion_matrix, plot_roc

    save_config(
        config, folder / "config.yaml", header=f"# resolved by tuner {tuner.__version__}\n"
    )
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    splits.save(folder / "splits.json")
    labels = np.concatenate([f.test.labels for f in folds])
    probs = np.concatenate([f.test.probs for f in folds])
    write_predictions(
        folder / "predictions.csv", [(n, f.test) for n, f in enumerate(folds)], store.classes
    )
    _write_attention(folder / "attention.csv", folds, store)
    plot_confusion_matrix(labels, probs.argmax(1), store.classes, folder / "confusion_matrix.png")
    plot_roc(labels, probs, store.classes, folder / "roc.png")
    torch.save(
        {
            "format": "tuner-model",
            "tuner_version": tuner.__version__,
            "config": config.to_dict(),
            "classes": list(store.classes),
            "in_dim": store.dim,
            "store_checksum": store.checksum,
            "encoder": store.encoder_identity(),
            "folds": [{k: v.cpu() for k, v in f.state_dict.items()} for f in folds],
            "class_weights": [f.class_weights for f in folds],
        },
        folder / "model.pt",
    )


def write_predictions(
    path: Path, parts: list[tuple[int | str, Evaluation]], classes: tuple[str, ...]
) -> None:
    """One row per case: its label, prediction and probabilities; ``parts`` pair the value of
    the ``fold`` column with the evaluation of that fold's model."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        binary = len(classes) == 2
        writer.writerow(
            ["case", "fold", "label", "prediction", "probability", *(f"p_{c}" for c in classes)]
        )
        for fold, ev in parts:
            for case, label, p in zip(ev.cases, ev.labels, ev.probs, strict=True):
                predicted = int(p.argmax())
                shown = p[1] if binary else p[predicted]
                writer.writerow(
                    [case, fold, classes[label], classes[predicted], f"{shown:.6f}",
                     *(f"{x:.6f}" for x in p)]
                )  # fmt: skip


def _write_attention(path: Path, folds: list[FoldResult], store: FeatureStore) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["case", "stain", "slice", "patch", "path", "stain_weight", "slice_weight",
             "patch_weight", "attention"]
        )  # fmt: skip
        for fold in folds:
            ev = fold.test
            assert ev.rows is not None
            assert ev.attention is not None
            for row, (patch_w, slice_w, stain_w) in zip(ev.rows, ev.attention, strict=True):
                r = store.rows[int(row)]
                writer.writerow(
                    [r.case, r.stain, r.slice, r.patch, r.path, f"{stain_w:.6g}", f"{slice_w:.6g}",
                     f"{patch_w:.6g}", f"{stain_w * slice_w * patch_w:.6g}"]
                )  # fmt: skip


def _all_cases(split: Split) -> list[str]:
    return [*split.train, *split.val, *split.test]


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
