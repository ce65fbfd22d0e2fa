"""Helpers shared by the tests: tiny datasets built in code and running tuner as a process."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
