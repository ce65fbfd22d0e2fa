"""Study names: what ``tuner study create`` accepts, and their forms in generated files.

A name becomes a folder (``CHECKPOINTS/NAME``), an argument of printed commands and job
scripts, and a SLURM job name, so it must be one printable line that names no other folder.
"""

from __future__ import annotations

import re

from tuner.errors import StudyError

__all__ = ["MAX_NAME_LENGTH", "check_study_name", "job_label"]

MAX_NAME_LENGTH = 100
"""The longest study name, in characters (a folder name must stay within 255 bytes)."""

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def check_study_name(name: str) -> str:
    """Return ``name`` if it can name a study; raise :class:`StudyError` naming the rule broken.

    A name is 1 to 100 printable characters (spaces and non-ASCII letters are fine), without
    ``/`` or ``\\``, not ``.`` or ``..``, without spaces around it and not starting with ``-``.
    """
    if not name:
        problem = "is empty"
    elif len(name) > MAX_NAME_LENGTH:
        problem = f"has {len(name)} characters, more than {MAX_NAME_LENGTH}"
    elif not name.isprintable():
        problem = "holds a character that is not printable (a newline, a tab, ...)"
    elif "/" in name or "\\" in name:
        problem = "holds a path separator (/ or \\)"
    elif name in (".", ".."):
        problem = "names a folder reference"
    elif name != name.strip():
        problem = "begins or ends with a space"
    elif name.startswith("-"):
        problem = "begins with '-' (it would read as an option)"
    else:
        return name
    shown = name if len(name) <= 40 else name[:40] + "..."
    raise StudyError(
        f"study name {shown!r} {problem}; choose 1 to {MAX_NAME_LENGTH} printable characters "
        "without / or \\, e.g. mil-2024"
    )


def job_label(name: str) -> str:
    """``name`` as letters, digits and ``._-`` only: for SLURM ``#SBATCH`` lines and log files,
    which no shell quoting reaches."""
    return _UNSAFE.sub("_", name).strip("_")[:64] or "study"
