"""The feature store: patch features computed once, read by every trial.

A store is a folder::

    manifest.json   what the features are (backbone, weights, sizes, classes, checksum, ...)
    features.npy    float16 array (n_patches, n_views, dim), rows contiguous per case
    patches.csv     one line per row (a :class:`~tuner.data.Patch`): case, stain, slice, patch,
                    path
    cases.csv       one line per case: case, label, class_index, start, stop (its row range)

Rows follow the dataset index's canonical order (case, stain, slice, patch), so every case,
every stain of a case and every slice of a stain is a contiguous range of rows. View 0 is the
patch as it is; views 1.. are augmented copies.

A store is written into ``NAME.partial`` beside its final place and renamed when complete, so
a folder named like the store is always a whole store. The manifest's checksum covers the
three data files and is verified when the store is opened.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tuner._files import write_atomic
from tuner.data import Patch, group_ids
from tuner.errors import StoreError

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "FeatureStore",
    "StoreCase",
    "StoreWriter",
    "case_ranges",
    "dataset_fingerprint",
    "store_is_complete",
]

FORMAT = "tuner-feature-store"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
FEATURES = "features.npy"
PATCHES = "patches.csv"
CASES = "cases.csv"


@dataclass(frozen=True)
class StoreCase:
    """One case of the store: its label and its range of rows."""

    case: str
    label: str
    class_index: int
    start: int
    stop: int

    @property
    def rows(self) -> slice:
        return slice(self.start, self.stop)


def case_ranges(
    rows: Sequence[Patch], class_of_case: dict[str, int], classes: Sequence[str]
) -> list[StoreCase]:
    """The row range of each case, for rows already grouped by case."""
    cases: list[StoreCase] = []
    start = 0
    for stop in range(1, len(rows) + 1):
        if stop == len(rows) or rows[stop].case != rows[start].case:
            case = rows[start].case
            index = class_of_case[case]
            cases.append(StoreCase(case, classes[index], index, start, stop))
            start = stop
    return cases


def dataset_fingerprint(rows: Sequence[Patch], cases: Sequence[StoreCase]) -> str:
    """A hash of which patches and labels a store holds, independent of the features."""
    digest = hashlib.sha256()
    for r in rows:
        digest.update(f"{r.case}\t{r.stain}\t{r.slice}\t{r.patch}\t{r.path}\n".encode())
    for c in cases:
        digest.update(f"{c.case}\t{c.label}\t{c.class_index}\n".encode())
    return digest.hexdigest()


def store_is_complete(path: Path) -> bool:
    return (path / MANIFEST).is_file()


def _checksum(folder: Path) -> str:
    digest = hashlib.sha256()
    for name in (FEATURES, PATCHES, CASES):
        with (folder / name).open("rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    return "sha256:" + digest.hexdigest()


class StoreWriter:
    """Builds a store in ``OUT.partial`` and moves it into place when it is complete.

    The features array is allocated up front and filled in row order, so an interrupted
    writer can be reopened with :meth:`resume` and continue where it stopped.
    """

    def __init__(self, out: Path, partial: Path, features: np.ndarray) -> None:
        self.out = out
        self.partial = partial
        self.features = features

    @staticmethod
    def partial_path(out: Path) -> Path:
        return out.with_name(out.name + ".partial")

    @classmethod
    def create(
        cls,
        out: Path,
        rows: Sequence[Patch],
        cases: Sequence[StoreCase],
        *,
        views: int,
        dim: int,
        state: dict[str, Any],
    ) -> StoreWriter:
        """Start a new partial store. ``state`` is saved for :meth:`resume` to compare."""
        partial = cls.partial_path(out)
        if partial.exists():
            shutil.rmtree(partial)
        partial.mkdir(parents=True)
        _write_table(partial / PATCHES, ["case", "stain", "slice", "patch", "path"], rows)
        _write_table(partial / CASES, ["case", "label", "class_index", "start", "stop"], cases)
        features = np.lib.format.open_memmap(
            partial / FEATURES, mode="w+", dtype=np.float16, shape=(len(rows), views, dim)
        )
        write_atomic(partial / "state.json", json.dumps({**state, "done_rows": 0}))
        return cls(out, partial, features)

    @classmethod
    def resume(cls, out: Path, state: dict[str, Any]) -> tuple[StoreWriter, int] | None:
        """Reopen the partial store of ``out`` if it was started with the same ``state``.

        Returns the writer and the number of rows already written, or None when there is
        nothing to resume.
        """
        partial = cls.partial_path(out)
        try:
            saved = json.loads((partial / "state.json").read_text())
            features = np.load(partial / FEATURES, mmap_mode="r+")
        except (OSError, ValueError):
            return None
        done = int(saved.pop("done_rows", 0))
        if saved != json.loads(json.dumps(state)):
            return None
        return cls(out, partial, features), done

    def write_rows(self, start: int, values: np.ndarray, *, done_rows: int) -> None:
        """Write rows ``start:start+len(values)`` and record that ``done_rows`` are complete."""
        self.features[start : start + len(values)] = values
        self.features.flush()  # type: ignore[attr-defined]
        state = json.loads((self.partial / "state.json").read_text())
        state["done_rows"] = done_rows
        write_atomic(self.partial / "state.json", json.dumps(state))

    def finish(self, manifest: dict[str, Any], *, overwrite: bool = False) -> FeatureStore:
        """Write the manifest with the checksum and move the store to its final place."""
        self.features.flush()  # type: ignore[attr-defined]
        del self.features
        _, views, dim = np.load(self.partial / FEATURES, mmap_mode="r").shape
        rows = _read_rows(self.partial / PATCHES)
        cases = _read_cases(self.partial / CASES)
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            **manifest,
            "dim": int(dim),
            "views": int(views),
            "dtype": "float16",
            "counts": _counts(rows, cases),
            "dataset_fingerprint": dataset_fingerprint(rows, cases),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "checksum": _checksum(self.partial),
        }
        (self.partial / "state.json").unlink(missing_ok=True)
        write_atomic(self.partial / MANIFEST, json.dumps(manifest, indent=2) + "\n")
        if self.out.exists():
            if not overwrite and any(self.out.iterdir()):
                raise StoreError(f"feature store {str(self.out)!r} appeared while writing")
            old = self.out.with_name(f"{self.out.name}.old-{int(time.time())}")
            self.out.rename(old)
            self.partial.rename(self.out)
            shutil.rmtree(old)
        else:
            self.partial.rename(self.out)
        return FeatureStore.open(self.out, verify=False)


def _write_table(path: Path, columns: list[str], items: Iterable[Any]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for item in items:
            writer.writerow([getattr(item, c) for c in columns])


def _read_rows(path: Path) -> list[Patch]:
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        next(reader)
        return [Patch(*line) for line in reader]


def _read_cases(path: Path) -> list[StoreCase]:
    with path.open(newline="") as handle:
        return [
            StoreCase(
                r["case"], r["label"], int(r["class_index"]), int(r["start"]), int(r["stop"])
            )
            for r in csv.DictReader(handle)
        ]


def _counts(rows: Sequence[Patch], cases: Sequence[StoreCase]) -> dict[str, int]:
    return {
        "cases": len(cases),
        "stains": len({r.stain for r in rows}),
        "stain_groups": len({(r.case, r.stain) for r in rows}),
        "slices": len({(r.case, r.stain, r.slice) for r in rows}),
        "patches": len(rows),
    }


_ENCODER_KEYS = ("backbone", "encoder", "image_size", "normalisation", "dim")


class FeatureStore:
    """A complete feature store, opened read-only.

    ``features`` is the memory-mapped float16 array ``(n_patches, n_views, dim)``. Per row,
    ``case_of_row``, ``stain_of_row`` (index into ``stains``), ``stain_group_of_row`` (one id per
    case and stain) and ``slice_of_row`` (one id per case, stain and slice) are int64 arrays;
    each group id is non-decreasing along the rows.
    """

    def __init__(self, path: Path, manifest: dict[str, Any], features: np.ndarray) -> None:
        self.path = path
        self.manifest = manifest
        self.features = features
        self.rows = _read_rows(path / PATCHES)
        self.cases = _read_cases(path / CASES)
        self.classes: tuple[str, ...] = tuple(manifest["classes"])
        self.stains: tuple[str, ...] = tuple(sorted({r.stain for r in self.rows}))
        self._case_position = {c.case: i for i, c in enumerate(self.cases)}
        self._check_shape()
        stain_code = {s: i for i, s in enumerate(self.stains)}
        self.case_of_row = np.repeat(
            np.arange(len(self.cases)), [c.stop - c.start for c in self.cases]
        )
        self.stain_of_row = np.array([stain_code[r.stain] for r in self.rows], dtype=np.int64)
        slices = [r.slice for r in self.rows]
        self.stain_group_of_row = group_ids(self.case_of_row, self.stain_of_row)
        self.slice_of_row = group_ids(self.case_of_row, self.stain_of_row, slices)

    @classmethod
    def open(
        cls,
        path: Path | str,
        *,
        checksum: str | None = None,
        expected_by: str = "the caller expects",
        verify: bool = True,
    ) -> FeatureStore:
        """Open a store; with ``verify`` recompute its checksum and compare with the manifest.

        ``checksum``: the checksum the store must have (None: any), expected by whoever made
        the reference to it; ``expected_by`` names them in the error, as subject and verb
        (``"study 'mil' was created with"``). Every mismatch raises :class:`StoreError`.
        """
        path = Path(path)
        if not path.is_dir():
            partial = StoreWriter.partial_path(path)
            hint = (
                "; an extraction into it was interrupted: run 'tuner features extract' again to "
                "finish it"
                if partial.is_dir()
                else "; build it with 'tuner features extract'"
            )
            raise StoreError(f"feature store {str(path)!r} does not exist{hint}")
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except FileNotFoundError:
            raise StoreError(
                f"{str(path)!r} is not a feature store (no {MANIFEST}); build one with "
                "'tuner features extract'"
            ) from None
        except ValueError as exc:
            raise StoreError(
                f"feature store {str(path)!r} has a corrupt {MANIFEST}: {exc}"
            ) from None
        if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
            raise StoreError(
                f"{str(path)!r} is not a tuner feature store of format version {FORMAT_VERSION}; "
                "extract it again with this version of tuner"
            )
        for name in (FEATURES, PATCHES, CASES):
            if not (path / name).is_file():
                raise StoreError(f"feature store {str(path)!r} lacks {name}; extract it again")
        if verify:
            actual = _checksum(path)
            if actual != manifest.get("checksum"):
                raise StoreError(
                    f"feature store {str(path)!r} does not match its checksum (files changed or "
                    "damaged after extraction); extract it again with --overwrite"
                )
        if checksum is not None and checksum != manifest.get("checksum"):
            actual = str(manifest.get("checksum"))
            raise StoreError(
                f"feature store {str(path)!r} has checksum {actual[:19]}... but {expected_by} "
                f"{checksum[:19]}... (the store was rebuilt or belongs to another dataset); use "
                "the store it was made with"
            )
        try:
            features = np.load(path / FEATURES, mmap_mode="r")
        except ValueError as exc:
            raise StoreError(
                f"feature store {str(path)!r} has a corrupt {FEATURES}: {exc}"
            ) from None
        return cls(path, manifest, features)

    def _check_shape(self) -> None:
        expected = (len(self.rows), self.manifest.get("views"), self.manifest.get("dim"))
        ranges_ok = (
            self.cases and self.cases[0].start == 0 and self.cases[-1].stop == len(self.rows)
        )
        contiguous = all(
            a.stop == b.start for a, b in zip(self.cases, self.cases[1:], strict=False)
        )
        if self.features.shape != expected or not ranges_ok or not contiguous:
            raise StoreError(
                f"feature store {str(self.path)!r} is inconsistent (features "
                f"{self.features.shape}, "
                f"expected {expected}); extract it again with overwrite",
                params=("overwrite",),
            )

    @property
    def checksum(self) -> str:
        return str(self.manifest["checksum"])

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def n_views(self) -> int:
        return int(self.manifest["views"])

    def encoder_identity(self) -> dict[str, Any]:
        """What made the features: two stores compare equal here when the same encoder, with
        the same weights and input handling, computed them (a model trained on one can score
        the other). A weights file counts by its digest, not where it lies."""
        weights = dict(self.manifest.get("weights") or {})
        if "sha256" in weights:
            weights.pop("path", None)
        identity = {key: self.manifest.get(key) for key in _ENCODER_KEYS}
        identity["weights"] = weights
        return identity

    def case(self, case: str) -> StoreCase:
        try:
            return self.cases[self._case_position[case]]
        except KeyError:
            raise StoreError(f"case {case!r} is not in feature store {str(self.path)!r}") from None

    def labels(self) -> dict[str, int]:
        """Class index of every case."""
        return {c.case: c.class_index for c in self.cases}

    def patch_counts(self) -> dict[str, int]:
        return {c.case: c.stop - c.start for c in self.cases}

    def case_features(self, case: str, view: int | None = 0) -> torch.Tensor:
        """Features of one case: ``(n_patches, dim)`` for one view, or all views when None."""
        rows = self.case(case).rows
        block = self.features[rows] if view is None else self.features[rows, view]
        return torch.from_numpy(np.array(block, copy=True))

    def case_rows(self, case: str) -> list[Patch]:
        return self.rows[self.case(case).rows]

    def load(self, device: torch.device | str = "cpu", view: int | None = None) -> torch.Tensor:
        """The whole feature array (or one view of it) as a float16 tensor on ``device``."""
        block = self.features if view is None else self.features[:, view]
        return torch.from_numpy(np.array(block, copy=True)).to(device)
