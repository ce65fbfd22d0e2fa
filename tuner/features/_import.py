"""Importing embeddings computed elsewhere (any encoder) into the store format.

Input: a table (CSV) with columns ``case``, ``stain``, ``slice`` and ``path``, one row per
slide, where ``path`` (relative to the table's folder, or absolute) names an array of shape
``(n_patches, dim)``: ``.npy``, ``.npz`` (key ``features`` or its only array), ``.pt`` / ``.pth``
(a tensor or a dict with ``features``), or ``.h5`` (CLAM / TRIDENT: dataset ``features`` and
optionally ``coords``; needs h5py). The result is a store like an extracted one, one view.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

import tuner
from tuner.data import Patch, natural_key, read_labels
from tuner.errors import DataError, StoreError
from tuner.features._lock import output_lock
from tuner.features._store import FeatureStore, StoreWriter, case_ranges

__all__ = ["import_embeddings"]

logger = logging.getLogger(__name__)

TABLE_COLUMNS = ("case", "stain", "slice", "path")


def import_embeddings(
    table: Path | str,
    labels: Path | str,
    out: Path | str,
    *,
    encoder: str = "external",
    case_column: str = "case",
    label_column: str = "label",
    classes: list[str] | None = None,
    overwrite: bool = False,
) -> FeatureStore:
    """Build a feature store at ``out`` from per-slide embedding arrays listed in ``table``
    (one writer at a time, as for an extraction)."""
    with output_lock(Path(out)):
        return _import(
            Path(table), labels, Path(out), encoder=encoder, case_column=case_column,
            label_column=label_column, classes=classes, overwrite=overwrite,
        )  # fmt: skip


def _import(
    table: Path,
    labels: Path | str,
    out: Path,
    *,
    encoder: str,
    case_column: str,
    label_column: str,
    classes: list[str] | None,
    overwrite: bool,
) -> FeatureStore:
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise StoreError(
            f"output folder {str(out)!r} already exists; pass overwrite to replace it or choose "
            "another",
            params=("overwrite",),
        )
    case_labels = read_labels(
        labels, case_column=case_column, label_column=label_column, classes=classes
    )
    slides = _read_table(table)
    unlabelled = sorted({s["case"] for s in slides} - case_labels.of_case.keys())
    if unlabelled:
        logger.warning("%d case(s) have no label and are left out: %s", len(unlabelled),
                       ", ".join(unlabelled[:5]))  # fmt: skip
    slides = [s for s in slides if s["case"] in case_labels.of_case]
    if not slides:
        raise DataError(f"no slide of {str(table)!r} belongs to a case with a label in {labels}")
    shapes = [_load(s["file"]).shape for s in slides]
    dims = {shape[1] for shape in shapes}
    if len(dims) > 1:
        raise DataError(f"embedding arrays of {str(table)!r} differ in width ({sorted(dims)})")
    rows: list[Patch] = []
    for slide, shape in zip(slides, shapes, strict=True):
        rows += [
            Patch(slide["case"], slide["stain"], slide["slice"], str(i), f"{slide['path']}#{i}")
            for i in range(shape[0])
        ]
    cases = case_ranges(rows, case_labels.of_case, case_labels.classes)
    present = {c.class_index for c in cases}
    if len(present) < 2:
        raise DataError("the imported cases all have the same label; tuning needs two classes")
    writer = StoreWriter.create(
        out, rows, cases, views=1, dim=dims.pop(), state={"import": str(table)}
    )
    done = 0
    for slide in slides:
        values = _load(slide["file"]).astype(np.float16)[:, None, :]
        writer.write_rows(done, values, done_rows=done + len(values))
        done += len(values)
    manifest = {
        "tool_version": tuner.__version__,
        "backbone": encoder,
        "weights": {"kind": "external"},
        "image_size": None,
        "normalisation": None,
        "augmentation": None,
        "classes": list(case_labels.classes),
        "source": {"kind": "imported", "table": str(table.resolve()),
                   "labels": str(Path(labels).resolve())},
    }  # fmt: skip
    store = writer.finish(manifest, overwrite=overwrite)
    logger.info("imported %d patches of %d cases into %s", len(rows), len(cases), out)
    return store


def _read_table(table: Path) -> list[dict[str, Any]]:
    if not table.is_file():
        raise DataError(
            f"embedding table {str(table)!r} not found; pass a CSV with columns "
            f"{', '.join(TABLE_COLUMNS)}"
        )
    with table.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in TABLE_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(
                f"embedding table {str(table)!r} lacks column(s) {', '.join(missing)}; it needs "
                f"{', '.join(TABLE_COLUMNS)}"
            )
        slides = [{k: (row[k] or "").strip() for k in TABLE_COLUMNS} for row in reader]
    seen: set[tuple[str, str, str]] = set()
    for line, slide in enumerate(slides, start=2):
        key = (slide["case"], slide["stain"], slide["slice"])
        if not all(key) or not slide["path"]:
            raise DataError(f"embedding table {str(table)!r} line {line} has an empty cell")
        if key in seen:
            raise DataError(
                f"embedding table {str(table)!r} lists case {key[0]} stain {key[1]} slice "
                f"{key[2]} twice (line {line}); keep one row per slide"
            )
        seen.add(key)
        path = Path(slide["path"])
        slide["file"] = path if path.is_absolute() else table.parent / path
    slides.sort(key=lambda s: (natural_key(s["case"]), natural_key(s["stain"]),
                               natural_key(s["slice"])))  # fmt: skip
    return slides


def _load(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"embedding file {str(path)!r} not found; fix its path in the table")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            array = np.load(path, mmap_mode="r")
        elif suffix == ".npz":
            with np.load(path) as archive:
                key = "features" if "features" in archive else next(iter(archive.files))
                array = archive[key]
        elif suffix in (".pt", ".pth"):
            array = _from_torch(torch.load(path, map_location="cpu", weights_only=True))
        elif suffix in (".h5", ".hdf5"):
            array = _from_h5(path)
        else:
            raise DataError(
                f"embedding file {str(path)!r} has an unknown type; use .npy, .npz, .pt or .h5"
            )
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise DataError(f"embedding file {str(path)!r} cannot be read ({exc})") from None
    if array.ndim != 2 or array.shape[0] == 0:
        raise DataError(
            f"embedding file {str(path)!r} holds an array of shape {array.shape}; "
            "expected (n_patches, dim) with at least one patch"
        )
    return np.asarray(array)


def _from_torch(obj: object) -> np.ndarray:
    if isinstance(obj, dict):
        obj = obj.get("features")
    if not isinstance(obj, torch.Tensor):
        raise ValueError("expected a tensor or a dict with a 'features' tensor")
    return obj.detach().float().numpy()


def _from_h5(path: Path) -> np.ndarray:
    try:
        import h5py
    except ImportError:
        raise DataError(
            f"reading {str(path)!r} needs h5py; install it with 'pip install h5py'"
        ) from None
    with h5py.File(path, "r") as handle:
        return np.asarray(handle["features"]).reshape(-1, handle["features"].shape[-1])
