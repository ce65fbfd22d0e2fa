"""Feature-extraction throughput: tuner's pipeline against the bare backbone forward.

Both sides run the same DenseNet121 ``Backbone`` (random weights) on the same patches, with the
same batch size, memory format (channels_last) and precision (float16 autocast on CUDA, float32
on the CPU), in patches per second:

- ``pipeline``: the loop of ``tuner.features.extract_features`` (``tuner.features._extract._run``,
  without the one-off index, backbone build and checksum): PNG files read and decoded by the
  ``PatchImages`` dataset through its DataLoader (the default loader processes: none on the CPU,
  ``min(8, cores)`` on CUDA, started afresh each run), pinned memory on CUDA, normalisation on
  the device, the backbone, and every batch written and flushed into a fresh ``StoreWriter``
  with its resume state;
- ``bare``: the backbone alone on the same batches, decoded and normalised beforehand and
  already on the device.

The patches are those of a demo dataset (``tuner.data.write_demo_dataset``), cycled to reach
``--patches`` (so a short dataset serves a long run; repeated files are decoded again, but
their bytes come from the page cache). After one warm-up round the two run in ``--repeats``
interleaved rounds; the ratio is the median over rounds of pipeline throughput / bare
throughput in the same round (goal: at least 0.9).

Run from the repository root::

    .venv/bin/python benchmarks/bench_extract.py                      # 64 px patches
    .venv/bin/python benchmarks/bench_extract.py --image-size 224 --patches 256
    .venv/bin/python benchmarks/bench_extract.py --device cuda --patches 32768 --batch-size 256
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from pathlib import Path

import torch
from _mil_common import (
    add_device_argument,
    interleaved,
    machine_note,
    median,
    median_ratio,
    print_table,
    setup_device,
)

from tuner.data import Patch, build_index, write_demo_dataset
from tuner.features import (
    FEATURE_DIM,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ExtractOptions,
    PatchImages,
    StoreCase,
    StoreWriter,
    WeightsSpec,
    build_backbone,
    store_rows,
)
from tuner.features._extract import _default_workers, _run


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=int, default=64, help="patch side in pixels")
    parser.add_argument("--patches", type=int, default=1024, help="patches per run")
    parser.add_argument("--batch-size", type=int, default=64, help="as `--batch-size` of extract")
    parser.add_argument("--workers", type=int, default=None, help="loader processes")
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds (median reported)")
    parser.add_argument("--data", type=Path, default=None, help="scratch folder (default: temp)")
    add_device_argument(parser)
    return parser.parse_args()


def demo_patches(folder: Path, patches: int, size: int) -> tuple[PatchImages, list[Patch]]:
    """``patches`` patches of a demo dataset of at most about 2,000 files, cycled."""
    cases = max(6, min(24, patches // 80 + 1))  # about 90 patches per case
    labels = write_demo_dataset(folder, cases=cases, image_size=size)
    rows, _ = store_rows(build_index(folder / "patches", labels))
    cycled = [r for r, _ in zip(itertools.cycle(rows), range(patches), strict=False)]
    images = PatchImages(folder / "patches", [r.path for r in cycled], size, views=1, seed=0)
    return images, cycled


def preload(images: PatchImages, batch_size: int, device: torch.device) -> list[torch.Tensor]:
    """The pipeline's batches, decoded, normalised and on the device beforehand."""
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    batches = []
    for start in range(0, len(images), batch_size):
        rows = range(start, min(start + batch_size, len(images)))
        raw = torch.stack([images[i][0] for i in rows]).to(device)
        x = (raw.float() / 255 - mean) / std
        batches.append(x.contiguous(memory_format=torch.channels_last))
    return batches


def main() -> None:
    args = parse_args()
    device = setup_device(args)
    options = ExtractOptions(
        device=str(device), batch_size=args.batch_size, workers=args.workers, progress=False
    )
    backbone = build_backbone(WeightsSpec.parse("random")).to(device)
    with tempfile.TemporaryDirectory(dir=args.data) as scratch_name:
        scratch = Path(scratch_name)
        images, rows = demo_patches(scratch / "demo", args.patches, args.image_size)
        # one "case" holding every row: the writer needs a case table, _run does not read it
        cases = [StoreCase(rows[0].case, "benign", 0, 0, len(rows))]
        batches = preload(images, args.batch_size, device)
        runs = itertools.count()

        def pipeline() -> None:
            out = scratch / f"store-{next(runs)}"
            writer = StoreWriter.create(
                out, rows, cases, views=1, dim=FEATURE_DIM, state={"benchmark": True}
            )
            _run(backbone, images, writer, 0, device, options)

        on_gpu = device.type == "cuda"

        def bare() -> None:  # in the pipeline's inference mode and autocast
            with (
                torch.inference_mode(),
                torch.autocast(device.type, dtype=torch.float16, enabled=on_gpu),
            ):
                for x in batches:
                    backbone(x)

        times = interleaved({"pipeline": pipeline, "bare": bare}, args.repeats, device)
    workers = args.workers if args.workers is not None else _default_workers(device)
    print(
        f"{len(rows):,} patches of {args.image_size} px, batch {args.batch_size}, "
        f"{workers} loader processes, {'float16 autocast' if on_gpu else 'float32'}, "
        f"medians of {args.repeats} rounds; {machine_note(device)}"
    )
    print_table(
        ["measure", "median s", "patches/s"],
        [[name, median(t), len(rows) / median(t)] for name, t in times.items()],
    )
    ratio = median_ratio(times["bare"], times["pipeline"])
    print(f"pipeline/bare throughput, median of per-round ratios: {ratio:.3f} (goal >= 0.9)")


if __name__ == "__main__":
    main()
