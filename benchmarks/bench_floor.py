"""A training epoch against its floor: the patch projector's matmuls at the measured rate.

The projector (``in_dim -> embed_dim``) is the model's one large matmul. For an epoch that
draws ``n`` patches, its forward and weight gradient (the input features need no gradient) are
``4 * n * in_dim * embed_dim`` FLOPs. The floor is the time of exactly those matmuls in this
process and in the dtype the model computes in (float32 on CPU; on a GPU the dtype autocast
picks): per training step, a forward ``(rows, in) @ (in, embed)`` and a weight gradient
``(embed, rows) @ (rows, in)``, ``rows`` being the patches of a mean step. They go through the
model's own matmul, :func:`tuner.model._linear.matmul` (oneDNN's on CPU where torch has it,
about twice ``torch.mm``'s rate on the AMD CPU we measured); the table also gives the floor
through ``torch.mm``. An epoch cannot beat the floor; everything above it is overhead
(attention, dropout, pooling, casts, sampling, the optimizer, Python).

The epochs are ``Trainer.fit(cases, None, epochs=...)`` on a synthetic store (random float16
features in the real format) with the default run config (``per_slice_cap`` 64, 8 cases per
step, dropout 0.25, AdamW, attention pooling). Epoch and floor are paired: after every epoch
the trainer's ``on_epoch`` callback runs the floor's matmuls for that epoch, and the next epoch
is timed from the callback's end. The table gives the medians and the median of the per-epoch
ratios (each fit's first epoch is left out). ``--profile`` then prints the top ops of one more
epoch under ``torch.profiler``.

Run from the repository root::

    .venv/bin/python benchmarks/bench_floor.py
    .venv/bin/python benchmarks/bench_floor.py --cases 60 --patches 300 --profile
    .venv/bin/python benchmarks/bench_floor.py --device cuda
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from _mil_common import (
    add_device_argument,
    add_store_arguments,
    autocast_dtype,
    epoch_patches,
    machine_note,
    median,
    median_ratio,
    now,
    print_table,
    run_config,
    setup_device,
    synchronize,
    synthetic_store,
)
from torch.profiler import ProfilerActivity, profile

from tuner.model._linear import matmul
from tuner.training import StoreTensors, Trainer


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_store_arguments(parser, cases=120)
    parser.add_argument("--per-slice-cap", type=int, default=64, help="0: all patches")
    parser.add_argument("--batch-cases", type=int, default=8, help="cases per step")
    parser.add_argument("--epochs", type=int, default=8, help="epochs per fit (first not timed)")
    parser.add_argument("--fits", type=int, default=2, help="fits (median over all epochs)")
    parser.add_argument("--profile", action="store_true", help="profile one more epoch")
    parser.add_argument("--data", type=Path, default=None, help="scratch folder (default: temp)")
    add_device_argument(parser)
    return parser.parse_args()


class Floor:
    """The projector's forward and weight-gradient matmuls of one epoch, ``rows`` per step,
    through the model's own matmul (:func:`tuner.model._linear.matmul`: oneDNN's for float32
    on CPU where torch has it) or, with ``torch_mm``, through ``torch.mm``."""

    def __init__(
        self, n: int, rows: int, in_dim: int, embed_dim: int, device: torch.device
    ) -> None:
        dtype = autocast_dtype(device) or torch.float32
        self.steps = [rows] * (n // rows) + ([n % rows] if n % rows else [])
        self.device = device
        self.x = torch.randn(rows, in_dim, device=device, dtype=dtype)
        self.w = torch.randn(embed_dim, in_dim, device=device, dtype=dtype)
        self.grad = torch.randn(rows, embed_dim, device=device, dtype=dtype)
        self.flops = 4 * n * in_dim * embed_dim

    def seconds(self, torch_mm: bool = False) -> float:
        synchronize(self.device)
        started = now()
        for r in self.steps:
            x, grad = self.x[:r], self.grad[:r]
            if torch_mm:
                torch.mm(x, self.w.t())
                torch.mm(grad.t(), x)
            else:
                matmul(x, self.w)
                matmul(grad.t(), x.t())
        synchronize(self.device)
        return now() - started


def paired_fit(
    trainer: Trainer, cases: list[str], epochs: int, floor: Floor
) -> list[tuple[float, float, float]]:
    """Seconds of epochs 2.. of one fit, each with the floor (and the floor through
    ``torch.mm``) timed right after it, outside the next epoch's time."""
    times: list[tuple[float, float, float]] = []
    last = [0.0]

    def on_epoch(_: object) -> None:
        synchronize(trainer.device)
        ended = now()
        floors = floor.seconds(), floor.seconds(torch_mm=True)
        if last[0]:
            times.append((ended - last[0], *floors))
        last[0] = now()

    trainer.fit(cases, None, epochs=epochs, on_epoch=on_epoch)
    return times


def profile_epoch(trainer: Trainer, cases: list[str]) -> None:
    """The top ops of one training epoch (after a warm-up epoch) under ``torch.profiler``."""
    run = trainer.start(cases, None)
    run.train_epoch()
    activities = [ProfilerActivity.CPU]
    if trainer.device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        run.train_epoch()
    sort = "self_cuda_time_total" if trainer.device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=15))


def main() -> None:
    args = parse_args()
    device = setup_device(args)
    cap = args.per_slice_cap or None
    with tempfile.TemporaryDirectory(dir=args.data) as scratch:
        store = synthetic_store(
            Path(scratch) / "store", args.cases, args.stains, args.slices, args.patches
        )
        config = run_config(
            store, device,
            **{"data.per_slice_cap": cap, "train.batch_cases": args.batch_cases,
               "train.scheduler": "none", "train.early_stopping": None},
        )  # fmt: skip
        trainer = Trainer(config, StoreTensors.load(store, device), device)
        cases = [c.case for c in store.cases]
        n = epoch_patches(store, cap)
        rows = round(n * args.batch_cases / len(cases))
        floor = Floor(n, rows, store.dim, config.model.embed_dim, device)
        times: list[tuple[float, float, float]] = []
        for fit in range(args.fits):
            new = paired_fit(trainer, cases, args.epochs, floor)
            print(
                f"  fit {fit + 1}, epoch/floor s: "
                + ", ".join(f"{e:.2f}/{f:.2f}" for e, f, _ in new)
            )
            times += new
        if args.profile:
            profile_epoch(trainer, cases)
    epochs, floors, mm = ([t[i] for t in times] for i in range(3))
    print(
        f"\n{args.cases} cases x {args.stains} stains x {args.slices} slices x ~{args.patches} "
        f"patches, cap {cap or 'none'}: {n:,} patches per epoch in steps of {args.batch_cases} "
        f"cases (~{rows:,} patches); {len(times)} epochs; {machine_note(device)}"
    )
    print_table(
        ["floor through", "epoch s", "floor s", "epoch/floor", "floor GFLOP/s", "epoch us/patch"],
        [[name, median(epochs), median(f), median_ratio(epochs, f),
          floor.flops / median(f) / 1e9, median(epochs) / n * 1e6]
         for name, f in (("the model's matmul", floors), ("torch.mm", mm))],
    )  # fmt: skip


if __name__ == "__main__":
    main()
