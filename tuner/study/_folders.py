"""Folders a study writes to, checked before any trial depends on them.

The checkpoint folder is named once, at ``tuner study create``, and used by every worker,
maybe on other machines. Where the study is created it is checked without creating anything
(a path under a regular file can never be a folder); where a worker starts it is made and
must be writable, so a bad folder stops the worker with one line instead of failing every
trial it runs.
"""

from __future__ import annotations

import os
from pathlib import Path

from tuner.errors import StudyError

__all__ = ["folder_problem", "make_writable_folder"]


def folder_problem(folder: Path) -> tuple[str, bool] | None:
    """Why ``folder`` cannot hold files on this machine, and whether it never can (its path
    runs through something that is not a folder), or None. Creates nothing."""
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        if existing == folder:
            return "cannot be a folder: it is a file", True
        return f"cannot be a folder: {str(existing)!r} is a file", True
    if not os.access(existing, os.W_OK | os.X_OK):
        if existing == folder:
            return "is not writable here", False
        return f"cannot be made here: {str(existing)!r} is not writable", False
    return None


def make_writable_folder(folder: Path, what: str, fix: str) -> Path:
    """Make ``folder`` (and its parents) and check that this process can write in it."""
    problem = folder_problem(folder)
    if problem is None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            problem = (f"cannot be made ({exc.strerror or exc})", False)
    if problem is not None:
        raise StudyError(f"{what} {str(folder)!r} {problem[0]}; {fix}")
    return folder
