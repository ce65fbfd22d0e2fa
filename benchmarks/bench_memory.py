"""Peak memory of one trial as the feature store grows.

For each store size (cases x slices per stain x patches per slice, 3 stains), the script
writes a synthetic store (random float16 features in the real format) and trains one trial on
it in a fresh Python process, as a worker does: ``FeatureStore.open``, ``StoreTensors.load``
(the whole store in memory), then ``Trainer.fit`` for ``--epochs`` epochs on 80% of the cases
with the other 20% as validation, default run config (``per_slice_cap`` 64, 8 cases per step).

Memory is the child's peak resident set, ``VmHWM`` of ``/proc/self/status`` (torch keeps no
statistics of CPU memory; ``ru_maxrss`` would also count the parent's memory, inherited across
``fork``), read after the imports, after loading the store and after training. The resident set
counts the page-cache pages of ``features.npy`` that loading mapped (reclaimable, shared with
other workers on the machine) as well as the loaded copy; ``store file pages`` shows how much
of the peak they were (the growth of ``RssFile`` while loading). On a GPU the table also shows
``torch.cuda.max_memory_allocated``.

Run from the repository root::

    .venv/bin/python benchmarks/bench_memory.py
    .venv/bin/python benchmarks/bench_memory.py --sizes 50x3x100 200x4x300 --epochs 3
    .venv/bin/python benchmarks/bench_memory.py --device cuda
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from _mil_common import (
    add_device_argument,
    machine_note,
    print_table,
    run_config,
    setup_device,
    synthetic_store,
)

from tuner.features import FeatureStore
from tuner.training import StoreTensors, Trainer

DEFAULT_SIZES = ["25x3x100", "50x3x200", "100x3x400", "200x3x400"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", nargs="+", default=DEFAULT_SIZES,
        help="store sizes as CASESxSLICESxPATCHES (slices per stain, patches per slice)",
    )  # fmt: skip
    parser.add_argument("--epochs", type=int, default=2, help="epochs per trial")
    parser.add_argument("--data", type=Path, default=None, help="scratch folder (default: temp)")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    add_device_argument(parser)
    return parser.parse_args()


def status_mb(field: str) -> float:
    """A field of ``/proc/self/status`` (in kB there) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"no {field} in /proc/self/status (Linux only)")


def child(args: argparse.Namespace) -> None:
    """Train one trial on the store at ``args.child``; print the peaks as JSON."""
    assert args.child is not None
    device = setup_device(args)
    peaks = {"import": status_mb("VmHWM"), "libraries": status_mb("RssFile")}
    store = FeatureStore.open(args.child)
    data = StoreTensors.load(store, device)
    peaks["load"] = status_mb("VmHWM")
    peaks["file"] = status_mb("RssFile") - peaks.pop("libraries")
    cases = [c.case for c in store.cases]
    cut = len(cases) * 4 // 5
    config = run_config(store, device, **{"train.early_stopping": None})
    Trainer(config, data, device).fit(cases[:cut], cases[cut:], epochs=args.epochs)
    peaks["trial"] = status_mb("VmHWM")
    if device.type == "cuda":
        peaks["cuda"] = torch.cuda.max_memory_allocated(device) / 2**20
    print(json.dumps(peaks))


def trial_peaks(store: Path, args: argparse.Namespace) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", str(store), "--epochs", str(args.epochs)]
    command += ["--device", args.device, "--clock", args.clock]
    if args.threads is not None:
        command += ["--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"trial on {store} failed:\n{done.stderr}")
    peaks: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return peaks


def main() -> None:
    args = parse_args()
    if args.child is not None:
        child(args)
        return
    device = setup_device(args)
    rows: list[list[object]] = []
    with tempfile.TemporaryDirectory(dir=args.data) as scratch:
        for size in args.sizes:
            cases, slices, patches = (int(v) for v in size.split("x"))
            path = Path(scratch) / f"store-{size}"
            store = synthetic_store(path, cases, 3, slices, patches)
            n_rows, store_mb = len(store.rows), store.features.nbytes / 2**20
            del store
            p = trial_peaks(path, args)
            shutil.rmtree(path)
            rows.append(
                [size, n_rows, store_mb, p["import"], p["load"], p["trial"],
                 p["trial"] - p["load"], p["file"], *([p["cuda"]] if "cuda" in p else [])]
            )  # fmt: skip
            print(f"  {size}: trial peak {p['trial']:,.0f} MB", flush=True)
    print(
        f"\none trial of {args.epochs} epochs per fresh process, 3 stains, peak resident set "
        f"(VmHWM) in MB; {machine_note(device)}"
    )
    headers = [
        "cases x slices x patches", "patches", "store MB", "after imports", "after load",
        "trial peak", "training adds", "store file pages",
    ]  # fmt: skip
    print_table(headers + (["cuda peak MB"] if device.type == "cuda" else []), rows)


if __name__ == "__main__":
    main()
