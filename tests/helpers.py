"""Helpers shared by the tests: tiny datasets built in code and running tuner as a process."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tuner.data import write_demo_dataset

TINY_IMAGE = 32


def run_tuner(
    *args: object, env: dict[str, str] | None = None, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Run ``tuner`` as a real process."""
    return subprocess.run(
        [sys.executable, "-m", "tuner", *map(str, args)],
        capture_output=True, text=True, env={**os.environ, **(env or {})}, **kwargs,
    )  # fmt: skip


@dataclass(frozen=True)
class Demo:
    root: Path
    patches: Path
    labels: Path


def make_demo(folder: Path, *, cases: int = 8, seed: int = 0) -> Demo:
    labels = write_demo_dataset(
        folder, cases=cases, seed=seed, image_size=TINY_IMAGE, slices=(1, 2),
        patches_per_slice=(2, 4),
    )  # fmt: skip
    return Demo(folder, folder / "patches", labels)


def write_png16(path: Path, values: np.ndarray) -> Path:
    """A 16-bit PNG, written byte by byte (Pillow writes 16 bits for grey only): ``values``
    of shape (h, w) grey, (h, w, 2) grey and alpha, (h, w, 3) RGB or (h, w, 4) RGBA."""
    array = np.asarray(values).astype(">u2")
    height, width = array.shape[:2]
    colour = {2: 0, 3: {2: 4, 3: 2, 4: 6}.get(array.shape[-1], -1)}[array.ndim]
    raw = b"".join(b"\0" + array[y].tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 16, colour, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )  # fmt: skip
    return path


def make_signal_store(folder: Path, *, cases: int = 24, dim: int = 32, seed: int = 0) -> Path:
    """A store a model can learn in a few epochs: imported embeddings, two slices per case,
    where a few patches of each positive case stand out in some features (a MIL signal)."""
    from tuner.features import import_embeddings

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows, labels = ["case,stain,slice,path"], ["case,label"]
    for number in range(cases):
        case, positive = f"S{number:03d}", number % 2 == 1
        labels.append(f"{case},{'high_grade' if positive else 'benign'}")
        for slice_ in (1, 2):
            values = rng.normal(size=(16, dim)).astype(np.float32)
            if positive and slice_ == 1:
                values[:3, :8] += 2.5
            np.save(folder / f"{case}-{slice_}.npy", values)
            rows.append(f"{case},HE,{slice_},{case}-{slice_}.npy")
    (folder / "slides.csv").write_text("\n".join(rows) + "\n")
    (folder / "labels.csv").write_text("\n".join(labels) + "\n")
    import_embeddings(folder / "slides.csv", folder / "labels.csv", folder / "features")
    return folder / "features"
