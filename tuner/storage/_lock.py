"""A lock per study across all workers, held while a worker decides whether to start a trial.

Postgres: a session-level advisory lock (released by the server if the worker dies). Embedded
(SQLite): an exclusive ``flock`` on a file beside the database (released by the kernel).
"""

from __future__ import annotations

import fcntl
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, text
from sqlalchemy.exc import SQLAlchemyError

from tuner.storage._rdb import RetryingRDBStorage

__all__ = ["study_lock"]


def _lock_key(study_name: str) -> int:
    """A signed 64-bit advisory-lock key for a study."""
    digest = hashlib.sha256(f"tuner:{study_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextmanager
def study_lock(storage: RetryingRDBStorage, study_name: str) -> Iterator[None]:
    """Hold the study's lock for the duration of the ``with`` block."""
    if storage.engine.dialect.name == "sqlite":
        database = storage.engine.url.database or ""
        with Path(database + ".lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return
    key = _lock_key(study_name)

    def acquire() -> Connection:
        connection = storage.engine.connect()
        try:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
        except BaseException:
            connection.invalidate()
            raise
        return connection

    connection = storage._retry(acquire, "locking the study")
    try:
        yield
    finally:
        try:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            connection.close()
        except SQLAlchemyError:
            connection.invalidate()  # the server drops the lock with the connection
