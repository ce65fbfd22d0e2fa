"""One writer per feature store: an exclusive lock on ``OUT.lock`` beside the output.

Two extractions into the same ``--out`` would share ``OUT.partial`` and break each other; the
second one fails at once instead, naming the process (PID and host) that holds the lock. The
lock is a ``flock`` on a small file outside the store folder (a store folder only ever holds a
store), which the kernel releases when its holder exits, however it exits; the file is removed
when the holder finishes, and one left behind by a killed process is harmless (it is unlocked,
and the next writer takes it over).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from tuner.errors import StoreError

__all__ = ["lock_path", "output_lock"]


def lock_path(out: Path) -> Path:
    return out.with_name(out.name + ".lock")


@contextmanager
def output_lock(out: Path) -> Iterator[Path]:
    """Hold the lock of the store ``out`` for the ``with`` block, or raise :class:`StoreError`
    at once when another process holds it."""
    path = lock_path(out)
    made = [p for p in reversed(path.parents) if not p.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        handle = _acquire(path, out)
    except BaseException:
        _remove_empty(made)
        raise
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({
            "pid": os.getpid(), "host": socket.gethostname(),
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
        }))  # fmt: skip
        handle.flush()
        yield path
    finally:
        path.unlink(missing_ok=True)  # before the release: a newcomer then makes a new file
        handle.close()
        _remove_empty(made)


def _acquire(path: Path, out: Path) -> IO[str]:
    while True:
        handle = path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = _describe(handle.read())
            handle.close()
            raise StoreError(
                f"feature store {str(out)!r} is being written by {holder} (lock {str(path)!r}); "
                "wait for it to finish, or stop it and run this again to resume its work"
            ) from None
        if _same_file(handle, path):
            return handle
        handle.close()  # its holder removed the file between our open and our lock: again


def _same_file(handle: IO[str], path: Path) -> bool:
    try:
        return os.fstat(handle.fileno()).st_ino == path.stat().st_ino
    except FileNotFoundError:
        return False


def _describe(text: str) -> str:
    try:
        holder = json.loads(text)
        return f"process {holder['pid']} on {holder['host']} (since {holder['since']})"
    except (ValueError, KeyError, TypeError):
        return "another process"  # it has just taken the lock and not yet written its name


def _remove_empty(folders: list[Path]) -> None:
    """Remove the folders this lock made (deepest first) if nothing else was put there."""
    for folder in reversed(folders):
        with contextlib.suppress(OSError):
            folder.rmdir()
