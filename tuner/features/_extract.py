"""Feature extraction: run the frozen backbone once over every patch and fill a store.

Batches are fixed runs of rows in store order, and every batch is flushed to disk before the
count of finished rows is saved, so an interrupted extraction resumes at the first unfinished
batch and produces the same store as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

import tuner
from tuner._device import resolve_device
from tuner.data import (
    DEFAULT_PATTERN,
    DatasetIndex,
    Patch,
    build_index,
    image_size,
    load_rgb,
)
from tuner.errors import DataError, StoreError
from tuner.features._augment import AUGMENTATION, augment
from tuner.features._backbone import Backbone, WeightsSpec, build_backbone
from tuner.features._encoders import resolve_encoder
from tuner.features._lock import output_lock
from tuner.features._store import (
    MANIFEST,
    FeatureStore,
    StoreCase,
    StoreWriter,
    case_ranges,
    dataset_fingerprint,
)

__all__ = ["ExtractOptions", "PatchImages", "extract_features", "store_rows"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtractOptions:
    """How to extract. ``image_size=None``: the encoder's input size, or for a torchvision
    model (DenseNet121 by default) the size of the first patch."""

    backbone: str = "densenet121"
    weights: str = "random"
    seed: int = 0
    device: str = "auto"
    batch_size: int = 64
    image_size: int | None = None
    views: int = 1
    workers: int | None = None
    overwrite: bool = False
    progress: bool = True

    def check(self) -> None:
        if self.batch_size < 1:
            raise StoreError(
                f"batch_size must be at least 1, but got {self.batch_size}", params=("batch_size",)
            )
        if self.views < 1:
            raise StoreError(f"views must be at least 1, but got {self.views}", params=("views",))
        if self.image_size is not None and not 16 <= self.image_size <= 4096:
            raise StoreError(
                f"image_size must be 16..4096 pixels, but got {self.image_size}",
                params=("image_size",),
            )
        if self.workers is not None and self.workers < 0:
            raise StoreError(
                f"workers must be 0 or more, but got {self.workers}", params=("workers",)
            )


class PatchImages(Dataset[torch.Tensor]):
    """Row ``i`` -> uint8 tensor ``(views, 3, size, size)``: the patch, then augmented copies."""

    def __init__(self, root: Path, paths: list[str], size: int, views: int, seed: int) -> None:
        self.root = root
        self.paths = paths
        self.size = size
        self.views = views
        self.seed = seed

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, row: int) -> torch.Tensor:
        image = load_rgb(self.root / self.paths[row])
        if image.size != (self.size, self.size):
            image = image.resize((self.size, self.size), Image.Resampling.BILINEAR)
        base = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).contiguous()
        copies = [augment(base, self.seed, row, v) for v in range(1, self.views)]
        return torch.stack([base, *copies])


def store_rows(index: DatasetIndex) -> tuple[list[Patch], list[StoreCase]]:
    """The store's rows and per-case row ranges for a dataset index (already in store order)."""
    rows = list(index.patches)
    return rows, case_ranges(rows, index.labels.of_case, index.labels.classes)


def extract_features(
    root: Path | str,
    labels: Path | str,
    out: Path | str,
    options: ExtractOptions | None = None,
    *,
    pattern: str = DEFAULT_PATTERN,
    case_column: str = "case",
    label_column: str = "label",
    classes: list[str] | None = None,
) -> FeatureStore:
    """Build (or finish, or confirm) the feature store ``out`` for a dataset.

    One extraction at a time writes ``out``: another one into it fails at once, naming the
    process that holds its lock (:func:`output_lock`).
    """
    with output_lock(Path(out)):
        return _extract(
            root, labels, out, options, pattern=pattern, case_column=case_column,
            label_column=label_column, classes=classes,
        )  # fmt: skip


def _extract(
    root: Path | str,
    labels: Path | str,
    out: Path | str,
    options: ExtractOptions | None,
    *,
    pattern: str,
    case_column: str,
    label_column: str,
    classes: list[str] | None,
) -> FeatureStore:
    options = options or ExtractOptions()
    options.check()
    root, out = Path(root), Path(out)
    index = build_index(
        root, labels, pattern=pattern, case_column=case_column, label_column=label_column,
        classes=classes,
    )  # fmt: skip
    index.raise_for_fatal()
    rows, cases = store_rows(index)
    encoder = resolve_encoder(options.backbone)
    weights = WeightsSpec.parse(options.weights, seed=options.seed, encoder=encoder)
    size = options.image_size or encoder.input_size or image_size(root / rows[0].path)[0]
    settings = {
        "backbone": encoder.name,
        "weights": weights.describe(),
        "image_size": size,
        "normalisation": {"mean": list(encoder.mean), "std": list(encoder.std)},
        "views": options.views,
        "augmentation": AUGMENTATION if options.views > 1 else None,
        "augmentation_seed": options.seed if options.views > 1 else None,
        "dataset_fingerprint": dataset_fingerprint(rows, cases),
    }
    existing = _existing_store(out, settings, options.overwrite)
    if existing is not None:
        return existing

    device = resolve_device(options.device)
    backbone = build_backbone(weights, encoder, image_size=size)
    # the encoder's account holds the hub revision: a partial store of another one is discarded
    state = {
        "settings": settings,
        "batch_size": options.batch_size,
        "encoder": backbone.describe(),
    }
    resumed = StoreWriter.resume(out, state)
    if resumed is not None:
        writer, done = resumed
        logger.info("resuming extraction into %s at patch %d of %d", out, done, len(rows))
    else:
        if StoreWriter.partial_path(out).exists():
            logger.info("discarding an unfinished extraction made with other settings")
        writer = StoreWriter.create(
            out, rows, cases, views=options.views, dim=backbone.dim, state=state
        )
        done = 0
    backbone.to(device)
    dataset = PatchImages(root, [r.path for r in rows], size, options.views, options.seed)
    started = time.perf_counter()
    _run(backbone, dataset, writer, done, device, options)
    elapsed = time.perf_counter() - started
    manifest = {
        "tool_version": tuner.__version__,
        **settings,
        "encoder": backbone.describe(),
        "classes": list(index.labels.classes),
        "source": {
            "kind": "extracted",
            "root": str(root.resolve()),
            "pattern": pattern,
            "labels": str(Path(labels).resolve()),
            "case_column": case_column,
            "label_column": label_column,
        },
        "extraction": {
            "device": str(device),
            "batch_size": options.batch_size,
            "seconds_last_run": round(elapsed, 2),
        },
    }
    store = writer.finish(manifest, overwrite=options.overwrite)
    logger.info("wrote feature store %s (%d patches, %d cases)", out, len(rows), len(cases))
    return store


def _existing_store(out: Path, settings: dict[str, Any], overwrite: bool) -> FeatureStore | None:
    """The store at ``out`` if it holds exactly these features; refuse a different one."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return None
    if not (out / MANIFEST).is_file():
        if overwrite:
            return None
        raise StoreError(
            f"output folder {str(out)!r} exists and is not a feature store; choose another "
            "folder or pass overwrite to replace it",
            params=("overwrite",),
        )
    manifest = json.loads((out / MANIFEST).read_text())
    differs = [k for k, v in settings.items() if manifest.get(k) != json.loads(json.dumps(v))]
    if not differs:
        logger.info("feature store %s is already complete with these settings", out)
        return FeatureStore.open(out)
    if overwrite:
        return None
    raise StoreError(
        f"feature store {str(out)!r} exists with a different manifest (differs in "
        f"{', '.join(differs)}); pass overwrite to replace it or choose another folder",
        params=("overwrite",),
    )


def _run(
    backbone: Backbone,
    dataset: PatchImages,
    writer: StoreWriter,
    done: int,
    device: torch.device,
    options: ExtractOptions,
) -> None:
    total = len(dataset)
    on_gpu = device.type == "cuda"
    workers = options.workers if options.workers is not None else _default_workers(device)
    remaining = torch.utils.data.Subset(dataset, range(done, total))
    loader = DataLoader(
        remaining,
        batch_size=options.batch_size,
        num_workers=workers,
        pin_memory=on_gpu,
        persistent_workers=False,
        prefetch_factor=4 if workers else None,
    )
    mean = torch.tensor(backbone.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(backbone.std, device=device).view(1, 3, 1, 1)
    bar = tqdm(
        total=total,
        initial=done,
        unit="patch",
        desc="extracting",
        disable=None if options.progress else True,
    )
    with bar, torch.inference_mode():
        for batch in _batches(loader):
            n, views = batch.shape[:2]
            images = batch.to(device, non_blocking=True).flatten(0, 1)
            images = ((images.float() / 255 - mean) / std).contiguous(
                memory_format=torch.channels_last
            )
            with torch.autocast(device.type, dtype=torch.float16, enabled=on_gpu):
                features = backbone(images)
            values = features.float().view(n, views, -1).cpu().numpy().astype(np.float16)
            writer.write_rows(done, values, done_rows=done + n)
            done += n
            bar.update(n)


def _batches(loader: DataLoader[torch.Tensor]) -> Iterator[torch.Tensor]:
    """The loader's batches; an unreadable image found by a loader process stays one line."""
    try:
        yield from loader
    except DataError as exc:
        message = str(exc).strip().splitlines()[-1].split("DataError: ", 1)[-1]
        raise DataError(f"{message}, then run the same command again to resume") from None


def _default_workers(device: torch.device) -> int:
    """Loader processes: none on the CPU (decoding is cheap next to the backbone there)."""
    if device.type != "cuda":
        return 0
    return min(8, os.cpu_count() or 1)
