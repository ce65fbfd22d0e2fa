"""Shared pieces of the feature-store, model and trainer benchmarks (issues 2 and 3):
synthetic stores, the device and clock, timing in interleaved rounds and small tables.

Not a benchmark itself; the ``bench_*.py`` scripts beside it import it (they are run as
``.venv/bin/python benchmarks/bench_....py``, so this folder is on ``sys.path``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from tuner.config import RunConfig, apply_overrides, parse_config
from tuner.data import Patch
from tuner.features import FeatureStore, StoreCase, StoreWriter
from tuner.model import Case, HierarchicalMIL

STAINS = ("HE", "MelanA", "SOX10")
CLASSES = ("benign", "high_grade")


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", default="cpu", help="cpu or cuda[:N] (on cuda: mixed precision, as trained)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    parser.add_argument(
        "--clock", choices=("wall", "cpu"), default="wall",
        help="wall: elapsed seconds; cpu: this process's CPU seconds, which time-sharing with "
        "other processes does not inflate (CPU only, with --threads 1)",
    )  # fmt: skip


_clock: Callable[[], float] = time.perf_counter


def add_store_arguments(parser: argparse.ArgumentParser, *, cases: int) -> None:
    """--cases, --stains, --slices, --patches: the shape of a synthetic store."""
    parser.add_argument("--cases", type=int, default=cases, help="training cases")
    parser.add_argument("--stains", type=int, default=3, help="stains per case")
    parser.add_argument("--slices", type=int, default=4, help="slices per stain")
    parser.add_argument("--patches", type=int, default=200, help="mean patches per slice")


def setup_device(args: argparse.Namespace) -> torch.device:
    """The device; also sets the threads and the clock that :func:`now` reads."""
    global _clock
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: no GPU on this machine")
    if args.clock == "cpu":
        if device.type != "cpu" or torch.get_num_threads() != 1:
            raise SystemExit("--clock cpu measures one CPU thread: add --threads 1")
        _clock = time.process_time
    return device


def now() -> float:
    """The benchmark's clock in seconds (chosen by ``--clock`` in :func:`setup_device`)."""
    return _clock()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The mixed-precision dtype the trainer uses on ``device`` (None on the CPU)."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def synthetic_store(
    out: Path,
    cases: int,
    stains: int,
    slices: int,
    patches: int,
    *,
    dim: int = 1024,
    jitter: float = 0.5,
    seed: int = 0,
) -> FeatureStore:
    """A store of random float16 features (no backbone) in the real format: ``cases`` cases of
    ``stains`` stains x ``slices`` slices x ``patches * (1 +- jitter)`` patches."""
    rng = np.random.default_rng(seed)
    rows: list[Patch] = []
    table: list[StoreCase] = []
    low, high = max(1, round(patches * (1 - jitter))), round(patches * (1 + jitter))
    for number in range(cases):
        case, start = f"C{number:05d}", len(rows)
        for stain in STAINS[:stains]:
            for slice_ in range(slices):
                for patch in range(int(rng.integers(low, high + 1))):
                    path = f"{case}/{stain}/{slice_}/{patch}.png"
                    rows.append(Patch(case, stain, str(slice_), str(patch), path))
        table.append(StoreCase(case, CLASSES[number % 2], number % 2, start, len(rows)))
    writer = StoreWriter.create(out, rows, table, views=1, dim=dim, state={"benchmark": True})
    block = 1 << 16
    for start in range(0, len(rows), block):
        stop = min(start + block, len(rows))
        values = rng.standard_normal((stop - start, 1, dim), dtype=np.float32)
        writer.write_rows(start, values.astype(np.float16), done_rows=stop)
    return writer.finish({"backbone": "synthetic", "classes": list(CLASSES)}, overwrite=True)


def run_config(store: FeatureStore, device: torch.device, **overrides: object) -> RunConfig:
    """The default run config on ``store``, with dotted-key ``overrides``."""
    base = parse_config({"data": {"features": str(store.path)}})
    return apply_overrides(base, {"train.device": str(device), **overrides}, source="benchmark")


def epoch_patches(store: FeatureStore, cap: int | None) -> int:
    """Patches one training epoch draws: ``min(size, cap)`` of every slice."""
    sizes = np.bincount(store.slice_of_row)
    return int(np.minimum(sizes, cap).sum()) if cap else int(sizes.sum())


def random_cases(
    n_cases: int, stains: int, slices: int, patches: int, dim: int, seed: int = 0
) -> list[Case]:
    """Cases as the nested-loop model takes them: stain -> slices ``(patches, dim)`` float32."""
    generator = torch.Generator().manual_seed(seed)
    return [
        {
            stain: [torch.randn(patches, dim, generator=generator) for _ in range(slices)]
            for stain in STAINS[:stains]
        }
        for _ in range(n_cases)
    ]


def model_for(in_dim: int, device: torch.device) -> HierarchicalMIL:
    """The default model (seeded), in training mode."""
    torch.manual_seed(0)
    return HierarchicalMIL(in_dim, 2).to(device).train()


def interleaved(
    measures: dict[str, Callable[[], object]],
    repeats: int,
    device: torch.device,
    *,
    warmup: int = 1,
) -> dict[str, list[float]]:
    """Seconds of each measure over ``repeats`` rounds; each round runs every measure once, in
    an order that rotates from round to round, so that a noisy neighbour hits all alike."""
    names = list(measures)
    for _ in range(warmup):
        for name in names:
            measures[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            synchronize(device)
            started = now()
            measures[name]()
            synchronize(device)
            times[name].append(now() - started)
    return times


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def median_ratio(top: Sequence[float], bottom: Sequence[float]) -> float:
    """Median over rounds of ``top / bottom`` measured in the same round."""
    return statistics.median(a / b for a, b in zip(top, bottom, strict=True))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A plain aligned table: numbers right-aligned, text left-aligned."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    numeric = [all(isinstance(row[i], int | float) for row in rows) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    print(line(headers))
    for row in cells:
        print(line(row))


def _cell(value: object) -> str:
    if isinstance(value, float):
        if value == 0 or abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 1:
            return f"{value:.2f}"
        return f"{value:.3g}"
    return str(value)


def machine_note(device: torch.device) -> str:
    if device.type == "cuda":
        return f"device {torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    clock = "CPU seconds" if _clock is time.process_time else "wall seconds"
    return (
        f"device cpu ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads), "
        f"{clock}, torch {torch.__version__}, load average {load}"
    )
