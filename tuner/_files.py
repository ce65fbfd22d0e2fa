"""Atomic file writes: a reader sees the old file or the new one, never half of one.

:func:`write_atomic` writes the data into a temporary file beside the target, named
``.NAME.PID.tmp`` (hidden, and naming both the target and the writing process), and renames it
over the target (``os.replace``, atomic on POSIX). On an error or an interrupt the temporary
file is removed; a process killed outright leaves it behind, and whoever cleans up the folder
recognises it by :data:`TEMPORARY` (the study's checkpoint sweep does).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

__all__ = ["TEMPORARY", "temporary_path", "write_atomic", "write_folder"]

TEMPORARY = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)\.tmp")
"""Matches the name of a temporary file of :func:`write_atomic`; ``name`` is the target's."""


def temporary_path(path: Path) -> Path:
    """Where :func:`write_atomic` of this process puts the data for ``path`` first."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_atomic(path: Path | str, data: str | bytes) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` atomically, creating its folder if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)
        tmp.replace(path)
    except BaseException:  # a full disk, or a process stopped at once by a second signal
        tmp.unlink(missing_ok=True)
        raise


def write_folder(out: Path, fill: Callable[[Path], None]) -> None:
    """Make the folder ``out`` whole or not at all: ``fill`` writes into ``OUT.partial``, which
    is renamed to ``out`` once it returns and removed if it raises (a run folder, an
    evaluation)."""
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        fill(partial)
        partial.rename(out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
