"""Feature-store read speed: tuner's ``FeatureStore`` against plain numpy on the same bytes.

A synthetic store (random float16 features in the real format, written with ``StoreWriter``)
is read, in interleaved rounds after a warm-up, with its file in the page cache:

- one case: ``FeatureStore.case_features(case)`` for every case in turn, against numpy copying
  the same rows out of ``np.load(features.npy, mmap_mode="r")``; the table gives the time per
  case;
- the whole store: ``FeatureStore.load()`` (what a worker does once before its trials),
  against ``np.load(features.npy)`` (a plain read) and a copy of the numpy memory map;
- opening the store: ``FeatureStore.open`` with its checksum verified (as workers open it) and
  without (index only), for scale.

Each group's reads alternate in rounds of their own; ratios are numpy's time / tuner's time
in the same round, median over rounds (1.0: as fast as numpy).

Run from the repository root::

    .venv/bin/python benchmarks/bench_store_read.py
    .venv/bin/python benchmarks/bench_store_read.py --cases 300 --patches 200
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from _mil_common import interleaved, median, median_ratio, print_table, synthetic_store

from tuner.features import FeatureStore


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=200, help="cases in the store")
    parser.add_argument("--slices", type=int, default=3, help="slices per stain (3 stains)")
    parser.add_argument("--patches", type=int, default=150, help="mean patches per slice")
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds (median reported)")
    parser.add_argument("--data", type=Path, default=None, help="scratch folder (default: temp)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    cpu = torch.device("cpu")
    with tempfile.TemporaryDirectory(dir=args.data) as scratch:
        path = synthetic_store(
            Path(scratch) / "store", args.cases, 3, args.slices, args.patches
        ).path
        store = FeatureStore.open(path, verify=False)
        file = path / "features.npy"
        mapped = np.load(file, mmap_mode="r")
        cases = store.cases
        reads = {  # three groups, each timed in its own interleaved rounds
            "case": {
                "tuner": lambda: [store.case_features(c.case) for c in cases],
                "numpy": lambda: [np.array(mapped[c.start : c.stop, 0]) for c in cases],
            },
            "store": {
                "tuner": store.load,
                "numpy load": lambda: np.load(file),
                "numpy mmap copy": lambda: np.array(mapped),
            },
            "open": {
                "verify": lambda: FeatureStore.open(path),
                "no verify": lambda: FeatureStore.open(path, verify=False),
            },
        }
        repeats = {"case": args.repeats, "store": 3 * args.repeats, "open": 3}
        times = {k: interleaved(v, repeats[k], cpu) for k, v in reads.items()}
    gigabytes = mapped.nbytes / 1e9
    case, whole = times["case"], times["store"]
    print(
        f"store: {len(cases)} cases, {len(store.rows):,} patches x {store.dim} float16 = "
        f"{gigabytes:.2f} GB, page cache warm; medians of {args.repeats} rounds (whole store: "
        f"{3 * args.repeats})"
    )
    rows: list[list[object]] = [
        ["one case (mean)", median(case["tuner"]) / len(cases) * 1e3,
         median(case["numpy"]) / len(cases) * 1e3, "copy of the mmap rows",
         median_ratio(case["numpy"], case["tuner"])],
    ]  # fmt: skip
    for baseline in ("numpy load", "numpy mmap copy"):
        rows.append(
            ["whole store", median(whole["tuner"]) * 1e3, median(whole[baseline]) * 1e3,
             baseline.removeprefix("numpy "), median_ratio(whole[baseline], whole["tuner"])]
        )  # fmt: skip
    print_table(["read", "tuner ms", "numpy ms", "numpy does", "numpy/tuner"], rows)
    print(f"whole store through tuner: {gigabytes / median(whole['tuner']):.2f} GB/s")
    for name, seconds in times["open"].items():
        print(f"FeatureStore.open, {name}: {median(seconds):.3f} s")


if __name__ == "__main__":
    main()
