"""Which learning rates learn? A 5-fold trial per lr on the calibration seed's hard cohort.

For each ``--lrs`` (the rest the default config: ``tuner config init``), trains a
cross-validated trial as a study's worker does (``data.split.cv_folds: 5``, the members in
lockstep, early stopping on the mean curve) on the development cohort of data seed 100 (the
seed the hard demo was calibrated on; ``tuning_pays.py`` refuses it), under the default chance
rule of a 40-epoch trial (``tuner.study.chance_rule``): a trial whose mean validation loss has
not gone 5 % below its chance loss after the warm-up is stopped there, as the pruner would.

Per lr: the chance loss, the first epoch the mean curve went 5 % below chance, whether the
rule stops it (and at which epoch), the best mean loss and its epoch, the epochs trained,
and wall seconds. This is the evidence for the default lr and the default search space's lr
range (docs/results.md, "The default learning rate and the search space's range").

    .venv/bin/python benchmarks/lr_range.py
    .venv/bin/python benchmarks/lr_range.py --lrs 1e-4 1e-3 --no-rule    # when would they learn?
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from _mil_common import print_table, run_config
from hard_cohort import DEFAULT_CACHE, cohort

from tuner.study._pruners import chance_rule
from tuner.training import EpochReport, Lockstep, StoreTensors, Trainer, members_of, resolve_splits

CV_FOLDS = 5
LRS = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2)


class _Stopped(Exception):
    """The chance rule stopped the trial."""


def one_lr(data: StoreTensors, lr: float, epochs: int, prune: bool) -> list[object]:
    """One cross-validated trial at ``lr`` (``prune``: stopped by the chance rule): its row."""
    started = time.perf_counter()
    device = torch.device("cpu")
    config = run_config(
        data.store, device, **{"train.lr": lr, "train.epochs": epochs,
                               "data.split.cv_folds": CV_FOLDS}
    )  # fmt: skip
    splits = resolve_splits(config, data.store)
    lockstep = Lockstep(Trainer(config, data, device), members_of(splits, seed=config.train.seed))
    chance = lockstep.chance_loss()
    rule = chance_rule(epochs)
    learned_at: list[int] = []

    def on_epoch(report: EpochReport) -> None:
        if not learned_at and report.val.loss < (1 - rule.margin) * chance:
            learned_at.append(report.epoch)
        if prune and rule.flat(chance, report.epoch, (e.val.loss for e in lockstep.history)):
            raise _Stopped

    stopped = ""
    try:
        result = lockstep.fit(on_epoch=on_epoch)
        best = min(result.history, key=lambda e: e.val.loss)
        stopped = result.stopped_by
    except _Stopped:
        best = min(lockstep.history, key=lambda e: e.val.loss)
        stopped = f"chance rule at {len(lockstep.history)}"
    return [
        f"{lr:.0e}", f"{chance:.3f}", learned_at[0] if learned_at else "never", stopped,
        f"{best.val.loss:.3f}", best.epoch, f"{best.val.auc or 0:.3f}", len(lockstep.history),
        f"{time.perf_counter() - started:.0f}",
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=100, help="data seed (the calibration seed)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--lrs", type=float, nargs="+", default=list(LRS))
    parser.add_argument("--epochs", type=int, default=40, help="train.epochs of each trial")
    parser.add_argument(
        "--no-rule", action="store_true", help="train to the end: when would each lr learn?"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    store = cohort(args.seed, "dev", args.cache)
    data = StoreTensors.load(store, torch.device("cpu"))
    rows = []
    for lr in args.lrs:
        rows.append(one_lr(data, lr, args.epochs, not args.no_rule))
        print(" | ".join(str(c) for c in rows[-1]), flush=True)
    print()
    print_table(
        ["lr", "chance loss", "mean 5 % below chance at epoch", "stopped by", "best mean loss",
         "best epoch", "mean val AUC there", "epochs", "wall s"],
        rows,
    )  # fmt: skip


if __name__ == "__main__":
    main()
