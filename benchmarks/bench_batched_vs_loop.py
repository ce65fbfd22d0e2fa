"""Training steps of the MIL model: tuner's batched forward against the users' nested loops.

Both sides train the same :class:`tuner.model.HierarchicalMIL` (same weights, dropout on, the
default widths) with the same optimizer (AdamW, fused, as the trainer builds it) on the same
cached features (float32 tensors already in memory; no backbone):

- loop: ``tuner.model.loop_forward`` on one case, cross-entropy, backward, AdamW step; one
  step per case, as the users' script does;
- batched: one forward of ``HierarchicalMIL`` over the flat :class:`tuner.model.Bags` of all
  ``cases`` cases, cross-entropy, backward, AdamW step.

For every bag size (patches per slice) and number of cases per step, both sides process the
same cases; loop and batched runs alternate, in a rotating order, ``--repeats`` times, and the
table shows median milliseconds per case and the median of the per-round ratios loop /
batched (> 1: batched is faster). Cases have ``--stains`` stains of ``--slices`` slices each.
On CUDA both sides run under the trainer's autocast (bfloat16 where supported).

Run from the repository root::

    .venv/bin/python benchmarks/bench_batched_vs_loop.py
    .venv/bin/python benchmarks/bench_batched_vs_loop.py --threads 1 --clock cpu
    .venv/bin/python benchmarks/bench_batched_vs_loop.py --device cuda
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
import torch.nn.functional as F
from _mil_common import (
    add_device_argument,
    autocast_dtype,
    interleaved,
    machine_note,
    median,
    median_ratio,
    model_for,
    print_table,
    random_cases,
    setup_device,
)

from tuner.model import Bags, Case, HierarchicalMIL, loop_forward


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--patches", type=int, nargs="+", default=[10, 50, 500], help="patches per slice"
    )
    parser.add_argument(
        "--cases", type=int, nargs="+", default=[1, 8, 16], help="cases per batched step"
    )
    parser.add_argument("--stains", type=int, default=3, help="stains per case")
    parser.add_argument("--slices", type=int, default=3, help="slices per stain")
    parser.add_argument("--dim", type=int, default=1024, help="feature width")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (median reported)")
    add_device_argument(parser)
    return parser.parse_args()


def step_functions(
    model: HierarchicalMIL, cases: list[Case], device: torch.device
) -> dict[str, Callable[[], object]]:
    """The loop's steps over all ``cases`` and the batched path's one step, as callables."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    dtype = autocast_dtype(device)
    amp = dtype is not None
    bags = Bags.from_cases(cases).to(device)
    device_cases = [{k: [s.to(device) for s in v] for k, v in c.items()} for c in cases]
    labels = torch.arange(len(cases), device=device) % 2

    def update(loss: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()

    def loop() -> None:
        for number, case in enumerate(device_cases):
            with torch.autocast(device.type, dtype=dtype, enabled=amp):
                logits = loop_forward(model, case)
            update(F.cross_entropy(logits.float()[None], labels[number : number + 1]))

    def batched() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=amp):
            logits = model(bags).logits
        update(F.cross_entropy(logits.float(), labels))

    return {"loop": loop, "batched": batched}


def measure(args: argparse.Namespace, device: torch.device) -> list[list[object]]:
    rows: list[list[object]] = []
    for patches in args.patches:
        for n_cases in args.cases:
            cases = random_cases(n_cases, args.stains, args.slices, patches, args.dim)
            model = model_for(args.dim, device)
            times = interleaved(step_functions(model, cases, device), args.repeats, device)
            loop, batched = median(times["loop"]), median(times["batched"])
            ratio = median_ratio(times["loop"], times["batched"])
            n_patches = n_cases * args.stains * args.slices * patches
            rows.append(
                [
                    patches, n_cases, n_patches,
                    loop / n_cases * 1e3, batched / n_cases * 1e3,
                    batched / n_patches * 1e6, ratio,
                ]
            )  # fmt: skip
            print_progress(rows[-1])
    return rows


def print_progress(row: list[object]) -> None:
    print(f"  patches/slice {row[0]}, cases/step {row[1]}: loop/batched {row[-1]:.2f}", flush=True)


def main() -> None:
    args = parse_args()
    device = setup_device(args)
    rows = measure(args, device)
    print(
        f"\n{args.stains} stains x {args.slices} slices per case, {args.dim}-d features; "
        f"medians of {args.repeats} rounds; {machine_note(device)}"
    )
    print_table(
        [
            "patches/slice", "cases/step", "patches/step", "loop ms/case", "batched ms/case",
            "batched us/patch", "loop/batched",
        ],
        rows,
    )  # fmt: skip


if __name__ == "__main__":
    main()
