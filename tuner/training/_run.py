"""``tuner train``: train on a config, test the best checkpoint, write the run folder.

The run folder (``config.yaml``, ``metrics.json``, ``predictions.csv``, ``attention.csv``,
``confusion_matrix.png``, ``roc.png``, ``splits.json``, ``model.pt``) is written into
``RUN.partial`` and renamed when complete, so a run folder is never half-written.
"""

from __future__ import annotations

import csv
import json
import logging
import statistics
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

import tuner
from tuner._device import resolve_device
from tuner._files import write_folder
from tuner._format import fmt
from tuner.config import RunConfig, save_config
from tuner.data import Split, Splits, load_splits, make_splits
from tuner.errors import DataError, RunError
from tuner.features import FeatureStore
from tuner.training._batches import StoreTensors
from tuner.training._lockstep import Lockstep, LockstepResult, members_of
from tuner.training._metrics import with_auc_interval
from tuner.training._trainer import EpochCallback, EpochReport, Evaluation, FitResult, Trainer

__all__ = [
    "FoldResult",
    "RunResult",
    "cv_summary",
    "default_run_dir",
    "open_store",
    "resolve_splits",
    "train_run",
    "warn_small_splits",
    "write_predictions",
]

logger = logging.getLogger(__name__)


@dataclass
class FoldResult:
    fit: FitResult
    val: Evaluation | None  # None for a refit, which trains on the validation cases too
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
    labels = store.labels()
    counts = store.patch_counts() if s.balance_patches else None
    if s.file is not None:
        splits = _splits_of_file(s.file, labels)
        if s.cv_folds is not None:  # the file's test cases held out, the rest cut into folds
            if len({frozenset(p.test) for p in splits.splits}) > 1:
                raise DataError(
                    f"splits file {str(s.file)!r} tests on other cases in each split, but "
                    "data.split.cv_folds holds one test list out; give a file whose splits "
                    "share their test cases"
                )
            kept = {c: labels[c] for p in splits.splits for c in _all_cases(p)}
            splits = make_splits(
                kept, seed=s.seed, cv_folds=s.cv_folds, test=splits.splits[0].test,
                patch_counts=counts, class_names=store.classes,
            )  # fmt: skip
    else:
        splits = make_splits(
            labels, seed=s.seed, fractions=s.fractions, folds=s.folds, cv_folds=s.cv_folds,
            patch_counts=counts, class_names=store.classes,
        )  # fmt: skip
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
    return splits


def _splits_of_file(path: Path, labels: dict[str, int]) -> Splits:
    """The splits of a file, checked: known cases, and no test case among the others."""
    where = f"splits file {str(path)!r}"
    splits = load_splits(path)
    unknown = sorted({c for p in splits.splits for c in _all_cases(p)} - set(labels))
    if unknown:
        raise DataError(f"{where} names cases that are not in the store: {', '.join(unknown[:5])}")
    for number, split in enumerate(splits.splits):
        both = sorted(set(split.test) & (set(split.train) | set(split.val)))
        if both:
            raise DataError(
                f"{where}: split {number} tests on cases it also trains or validates on "
                f"({', '.join(both[:5])}); a case belongs to one part"
            )
    return splits


SMALL_CLASS = 10
"""A split with fewer cases of a class than this gets a warning: its AUC is a coarse guess."""


def warn_small_splits(splits: Splits, store: FeatureStore, *, validates: bool = True) -> None:
    """Warn once when a split has fewer than :data:`SMALL_CLASS` cases of a class (``tuner
    train`` before it trains, ``tuner study create`` once the study is made). Without
    validation (a refit trains on the validation cases too) train and val count as one part."""
    labels, classes = store.labels(), store.classes
    fewest: dict[str, tuple[int, str]] = {}
    for split in splits.splits:
        parts = (
            split.parts() if validates else {"train": split.train + split.val, "test": split.test}
        )
        for name, cases in parts.items():
            counts = np.bincount([labels[c] for c in cases], minlength=len(classes))
            least = int(counts.argmin())
            if name not in fewest or counts[least] < fewest[name][0]:
                fewest[name] = (int(counts[least]), classes[least])
    small = [f"{name} {n} of {cls!r}" for name, (n, cls) in fewest.items() if n < SMALL_CLASS]
    if small:
        advice = (
            "" if splits.scheme == "cv" or not validates else ", and tune with data.split.cv_folds"
        )
        logger.warning(
            "few cases: the splits hold as few as %s (fewer than %d cases of a class); "
            "metrics on so few cases swing widely: read the AUC's interval%s",
            ", ".join(small), SMALL_CLASS, advice,
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
        raise RunError(f"run folder {str(out)!r} already exists; choose another run folder")
    store = open_store(config)
    splits = resolve_splits(config, store)
    warn_small_splits(splits, store, validates=config.train.refit_epochs is None)
    device = resolve_device(config.train.device)
    config = config.model_copy(deep=True)
    config.data.checksum = store.checksum
    data = StoreTensors.load(store, device)
    trainer = Trainer(config, data, device)
    t = config.train
    cv: LockstepResult | None = None
    if config.data.split.cv_folds is not None:
        cv = _cross_validate(trainer, splits, on_epoch, progress)
        replay = config.model_copy(deep=True)
        replay.train.lr_schedule = cv.lrs[: cv.best_epoch]
        refit = Trainer(replay, data, device)
        folds = [_refit_fold(refit, splits.splits[0], cv.best_epoch)]
    elif t.refit_epochs is not None:
        folds = [_refit_fold(trainer, split, t.refit_epochs) for split in splits.splits]
    else:
        folds = [
            _train_fold(trainer, split, number, len(splits.splits), on_epoch, progress)
            for number, split in enumerate(splits.splits)
        ]
        if t.refit:
            mean_best = round(statistics.mean(f.fit.best_epoch for f in folds))
            for number, split in enumerate(splits.splits):  # the fold's val stays its own
                again = _refit_fold(trainer, split, mean_best)
                folds[number] = replace(
                    folds[number], test=again.test, state_dict=again.state_dict,
                    class_weights=again.class_weights, refit_epochs=mean_best,
                )  # fmt: skip
    metrics = _metrics(folds, config)
    if cv is not None:
        metrics["cv"] = cv_summary(cv)
    write_folder(out, lambda folder: _write_run(folder, config, store, splits, folds, metrics))
    return RunResult(out, metrics, folds)


def _train_fold(
    trainer: Trainer,
    split: Split,
    number: int,
    n_folds: int,
    on_epoch: EpochCallback | None,
    progress: bool,
) -> FoldResult:
    name = f"fold {number + 1}/{n_folds}" if n_folds > 1 else "training"
    with _EpochBar(name, trainer.config.train.epochs, on_epoch, progress) as bar:
        fit = trainer.fit(split.train, split.val, on_epoch=bar.report)
    logger.info(
        "%s: best epoch %d of %d (%s), val loss %.4f, val auc %s",
        name, fit.best_epoch, len(fit.history), fit.stopped_by, fit.best_val.loss,
        fmt(fit.best_val.auc),
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


class _EpochBar:
    """A progress bar of epochs that passes each epoch on to ``on_epoch``."""

    def __init__(
        self, name: str, epochs: int, on_epoch: EpochCallback | None, progress: bool
    ) -> None:
        from tqdm import tqdm

        self.on_epoch = on_epoch
        self.bar = tqdm(total=epochs, desc=name, unit="epoch", disable=None if progress else True)

    def __enter__(self) -> _EpochBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()

    def report(self, epoch: EpochReport) -> None:
        self.bar.update(1)
        self.bar.set_postfix(val_loss=f"{epoch.val.loss:.4f}", auc=epoch.val.auc)
        if self.on_epoch is not None:
            self.on_epoch(epoch)


def _cross_validate(
    trainer: Trainer, splits: Splits, on_epoch: EpochCallback | None, progress: bool
) -> LockstepResult:
    """Train every fold (and repeat) in lockstep; log the cross-validated estimate."""
    t = trainer.config.train
    lockstep = Lockstep(trainer, members_of(splits, repeats=t.repeats, seed=t.seed))
    name = f"{len(splits.splits)}-fold cv" + (f" x {t.repeats} seeds" if t.repeats > 1 else "")
    with _EpochBar(name, t.epochs, on_epoch, progress) as bar:
        cv = lockstep.fit(on_epoch=bar.report)
    logger.info(
        "%s: mean val loss %.4f (fold spread %.4f) at the common best epoch %d of %d (%s)",
        name, cv.value, cv.spread(), cv.best_epoch, len(cv.history), cv.stopped_by,
    )  # fmt: skip
    return cv


def cv_summary(cv: LockstepResult) -> dict[str, Any]:
    """The cross-validated estimate of a lockstep: what a study records and export carries."""
    return {
        "value": cv.value,
        "cv_epoch": cv.best_epoch,
        "cv_losses": cv.fold_losses(),
        "cv_spread": cv.spread(),
        "folds": len(cv.fold_losses()),
        "repeats": len(cv.members) // len(cv.fold_losses()),
        "lrs": cv.lrs[: cv.best_epoch],
    }


def _refit_fold(trainer: Trainer, split: Split, epochs: int) -> FoldResult:
    """Train on train+val for ``epochs`` without validation, then test."""
    cases = split.train + split.val
    fit = trainer.fit(cases, None, epochs=epochs)
    model = trainer.new_model()
    model.load_state_dict(fit.state_dict)
    weights = trainer.class_weights(cases)
    test = _test(trainer, model, split.test, weights)
    logger.info(
        "refit on train+val for %d epochs: test loss %.4f, test auc %s",
        epochs, test.metrics.loss, test.metrics.auc_text(),
    )  # fmt: skip
    return FoldResult(fit, None, test, fit.state_dict, weights.tolist(), refit_epochs=epochs)


def _test(
    trainer: Trainer, model: Any, cases: tuple[str, ...], weights: torch.Tensor
) -> Evaluation:
    """Predictions on the test cases, with attention and the AUC's bootstrap interval."""
    test = trainer.evaluate(model, trainer.sampler(cases, train=False), weights, attention=True)
    test.metrics = with_auc_interval(test.metrics, test.probs, test.labels)
    return test


def _metrics(folds: list[FoldResult], config: RunConfig) -> dict[str, Any]:
    per_fold = [_fold_metrics(f) for f in folds]
    if len(folds) == 1:
        return {"tuner_version": tuner.__version__, **per_fold[0]}
    summary: dict[str, Any] = {"tuner_version": tuner.__version__, "folds": per_fold}
    for part in ("val", "test") if all(f.val is not None for f in folds) else ("test",):
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
        "val": None if fold.val is None else fold.val.metrics.as_dict(),
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
