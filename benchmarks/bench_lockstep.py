"""A K-fold trial in lockstep against its K folds trained one after another.

Both train the same members (each fold's cases, the same seed, the same epochs, no early
stopping, so both do the same work): ``lockstep`` steps the K runs epoch by epoch in one
process (:class:`tuner.training.Lockstep`), ``sequential`` trains fold after fold
(``Trainer.fit``). Rounds are interleaved; the figures are medians of seconds per trial and of
the ratio in each round, and member-epochs per second.

    .venv/bin/python benchmarks/bench_lockstep.py                  # CPU
    .venv/bin/python benchmarks/bench_lockstep.py --device cuda    # a GPU
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _mil_common import (
    add_device_argument,
    add_store_arguments,
    interleaved,
    machine_note,
    median,
    median_ratio,
    print_table,
    run_config,
    setup_device,
    synthetic_store,
)

from tuner.data import make_splits
from tuner.training import Lockstep, StoreTensors, Trainer, members_of


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_device_argument(parser)
    add_store_arguments(parser, cases=60)
    parser.add_argument("--folds", type=int, default=5, help="K")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per member")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds")
    args = parser.parse_args()
    device = setup_device(args)
    with tempfile.TemporaryDirectory() as folder:
        store = synthetic_store(
            Path(folder) / "store", args.cases, args.stains, args.slices, args.patches
        )
        data = StoreTensors.load(store, device)
        config = run_config(
            store, device, **{"train.epochs": args.epochs, "train.early_stopping": None}
        )
        trainer = Trainer(config, data, device)
        splits = make_splits(store.labels(), seed=0, cv_folds=args.folds)
        members = members_of(splits)

        def lockstep() -> None:
            Lockstep(trainer, members).fit()

        def sequential() -> None:
            for member in members:
                trainer.fit(member.train, member.val, seed=member.seed)

        times = interleaved({"lockstep": lockstep, "sequential": sequential}, args.repeats, device)
    member_epochs = len(members) * args.epochs
    print(machine_note(device))
    print(
        f"{args.cases} cases ({args.stains} stains x {args.slices} slices x ~{args.patches} "
        f"patches), K={args.folds}, {args.epochs} epochs, {args.repeats} rounds"
    )
    print_table(
        ["", "s per trial (median)", "member-epochs / s"],
        [[name, median(values), member_epochs / median(values)] for name, values in times.items()],
    )
    ratio = median_ratio(times["lockstep"], times["sequential"])
    print(f"lockstep / sequential wall time: {ratio:.3f} (median of per-round ratios)")


if __name__ == "__main__":
    main()
