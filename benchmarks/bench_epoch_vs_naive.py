"""One training epoch: the users' current pipeline against tuner's epoch on cached features.

The users' pipeline (naive) runs the frozen DenseNet121 on every patch of every case every
epoch and trains the MIL model one case per step through nested Python loops over stains and
slices. Here: ``tuner.features.build_backbone`` (random weights) on ``--image-size`` px images,
one forward per slice (``--sample-patches`` patches), then ``tuner.model.loop_forward``,
cross-entropy, backward and an AdamW step per case. The images are random tensors already in
memory: reading and decoding files, which the users' pipeline also does every epoch, is left
out, in the naive pipeline's favour. It is slow, so each round runs it on ``--sample-cases``
cases and the table extrapolates its time per patch to the epoch's patches.

tuner's epoch is measured for real: ``Trainer.fit(cases, None, epochs=...)`` on a synthetic
feature store of ``--cases`` cases (random float16 features in the real format), default run
config, with every patch every epoch (``per_slice_cap`` off: the like-for-like comparison, per
patch) and with the default ``per_slice_cap`` of 64 patches drawn per slice (what a trial
runs). Each fit's first epoch is not timed. ``per patch x`` is the median over rounds of
naive time per patch / tuner time per patch in the same round; ``per epoch x`` compares whole
epochs. The one-time cost tuner pays instead, extracting the features once, is one pass of the
backbone over the patches (printed last).

Run from the repository root::

    .venv/bin/python benchmarks/bench_epoch_vs_naive.py
    .venv/bin/python benchmarks/bench_epoch_vs_naive.py --threads 1 --clock cpu
    .venv/bin/python benchmarks/bench_epoch_vs_naive.py --device cuda --image-size 224
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from _mil_common import (
    STAINS,
    add_device_argument,
    add_store_arguments,
    autocast_dtype,
    epoch_patches,
    machine_note,
    median,
    median_ratio,
    model_for,
    now,
    print_table,
    run_config,
    setup_device,
    synchronize,
    synthetic_store,
)

from tuner.features import WeightsSpec, build_backbone
from tuner.model import loop_forward
from tuner.training import StoreTensors, Trainer


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_store_arguments(parser, cases=60)
    parser.add_argument("--image-size", type=int, default=64, help="patch side in pixels")
    parser.add_argument(
        "--sample-cases", type=int, default=1, help="cases the naive pipeline trains per round"
    )
    parser.add_argument(
        "--sample-patches", type=int, default=64, help="patches per slice of the naive sample"
    )
    parser.add_argument("--epochs", type=int, default=3, help="epochs per fit (first not timed)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds (median reported)")
    parser.add_argument("--data", type=Path, default=None, help="scratch folder (default: temp)")
    add_device_argument(parser)
    return parser.parse_args()


class NaivePipeline:
    """The users' epoch on a few cases: backbone on every patch, one case per step."""

    def __init__(self, args: argparse.Namespace, device: torch.device) -> None:
        self.device = device
        self.backbone = build_backbone(WeightsSpec("random", seed=0)).to(device)
        self.model = model_for(1024, device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        generator = torch.Generator().manual_seed(0)
        shape = (args.sample_patches, 3, args.image_size, args.image_size)
        self.cases = [
            {
                stain: [torch.randn(shape, generator=generator) for _ in range(args.slices)]
                for stain in STAINS[: args.stains]
            }
            for _ in range(args.sample_cases)
        ]
        self.patches = args.sample_cases * args.stains * args.slices * args.sample_patches
        self.dtype = autocast_dtype(device)

    def epoch(self) -> tuple[float, float]:
        """Seconds per patch of the backbone and of the whole sample epoch."""
        backbone = 0.0
        synchronize(self.device)
        started = now()
        for number, case in enumerate(self.cases):
            tick = now()
            with torch.no_grad(), self._autocast():
                features = {
                    stain: [self.backbone(x.to(self.device)).float() for x in slices]
                    for stain, slices in case.items()
                }
            synchronize(self.device)
            backbone += now() - tick
            with self._autocast():
                logits = loop_forward(self.model, features)
            label = torch.tensor([number % 2], device=self.device)
            loss = F.cross_entropy(logits.float()[None], label)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            self.optimizer.step()
        synchronize(self.device)
        return backbone / self.patches, (now() - started) / self.patches

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None)


def tuner_epochs(trainer: Trainer, cases: list[str], epochs: int) -> list[float]:
    """Seconds of epochs 2.. of one fit (the first epoch's start is not observable)."""
    ends: list[float] = []

    def on_epoch(_: object) -> None:
        synchronize(trainer.device)
        ends.append(now())

    trainer.fit(cases, None, epochs=epochs, on_epoch=on_epoch)
    return [b - a for a, b in itertools.pairwise(ends)]


def main() -> None:
    args = parse_args()
    device = setup_device(args)
    naive = NaivePipeline(args, device)
    caps = {"tuner, every patch": None, "tuner, cap 64 (default)": 64}
    backbone: list[float] = []
    per_patch: dict[str, list[float]] = {"naive": [], **{name: [] for name in caps}}
    with tempfile.TemporaryDirectory(dir=args.data) as scratch:
        store = synthetic_store(
            Path(scratch) / "store", args.cases, args.stains, args.slices, args.patches
        )
        data = StoreTensors.load(store, device)
        cases = [c.case for c in store.cases]
        patches = {name: epoch_patches(store, cap) for name, cap in caps.items()}
        trainers = {
            name: Trainer(
                run_config(store, device, **{"data.per_slice_cap": cap, "train.scheduler": "none",
                           "train.early_stopping": None}),
                data, device,
            )
            for name, cap in caps.items()
        }  # fmt: skip
        naive.epoch()  # warm-up
        for round_ in range(args.repeats):
            seconds_backbone, seconds = naive.epoch()
            backbone.append(seconds_backbone)
            per_patch["naive"].append(seconds)
            for name, trainer in trainers.items():
                per_patch[name].append(
                    median(tuner_epochs(trainer, cases, args.epochs)) / patches[name]
                )
            print(
                f"  round {round_ + 1}, us/patch: "
                + ", ".join(f"{k} {v[-1] * 1e6:,.1f}" for k, v in per_patch.items()),
                flush=True,
            )
    n = len(store.rows)
    print(
        f"\n{args.cases} cases x {args.stains} stains x {args.slices} slices x ~{args.patches} "
        f"patches = {n:,} patches, {args.image_size} px; naive measured on "
        f"{args.sample_cases} case(s) x {args.sample_patches} patches per slice, extrapolated "
        f"per patch; medians of {args.repeats} rounds; {machine_note(device)}"
    )
    rows: list[list[object]] = [
        ["naive (backbone + loop)", n, median(per_patch["naive"]) * 1e6,
         median(per_patch["naive"]) * n, 1.0, 1.0],
    ]  # fmt: skip
    for name in caps:
        us = median(per_patch[name])
        speedup = median_ratio(per_patch["naive"], per_patch[name])
        epoch = us * patches[name]
        rows.append([name, patches[name], us * 1e6, epoch, speedup, float(rows[0][3]) / epoch])
    print_table(
        ["pipeline", "patches/epoch", "us/patch", "epoch s", "per patch x", "per epoch x"], rows
    )
    print(
        f"naive: the backbone is {median(backbone) / median(per_patch['naive']):.0%} of its "
        f"time, {median(backbone) * 1e3:.2f} ms per patch; one pass over the {n:,} patches "
        f"(extracting the features once) costs {median(backbone) * n:,.0f} s"
    )


if __name__ == "__main__":
    main()
