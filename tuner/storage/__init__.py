"""Study storage: the embedded default or PostgreSQL, patient with outages, heartbeats on.

``open_storage`` returns an :class:`optuna.storages.RDBStorage` (a subclass that retries
transient database errors), so ``optuna.load_study(study_name=..., storage=open_storage(url))``
and every Optuna tool work with it exactly as tuner does.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

from optuna.exceptions import ExperimentalWarning
from sqlalchemy import event

from tuner.storage._lock import study_lock
from tuner.storage._rdb import (
    RetryingRDBStorage,
    is_transient,
    storage_of,
    study_id_of,
    trial_id_of,
)
from tuner.storage._url import (
    EMBEDDED_PATH,
    PASSWORD_FILE_ENV,
    STORAGE_ENV,
    StorageURL,
    public_url,
    resolve_url,
)

__all__ = [
    "EMBEDDED_PATH",
    "INTERACTIVE_RETRY_SECONDS",
    "PASSWORD_FILE_ENV",
    "RETRY_SECONDS",
    "STORAGE_ENV",
    "RetryingRDBStorage",
    "StorageURL",
    "is_transient",
    "open_storage",
    "public_url",
    "resolve_url",
    "storage_of",
    "study_id_of",
    "study_lock",
    "trial_id_of",
]

HEARTBEAT_INTERVAL = 10
"""Seconds between a running trial's heartbeats."""
GRACE_PERIOD = 60
"""Seconds without a heartbeat after which a running trial counts as dead and is retried."""
RETRY_SECONDS = 300.0
"""How long a worker retries an unreachable database (``TUNER_DB_RETRY_SECONDS``)."""
INTERACTIVE_RETRY_SECONDS = 15.0
"""How long a command a person waits on (status, export, ...) retries an unreachable database,
unless ``TUNER_DB_RETRY_SECONDS`` says otherwise."""


def _env_number(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


def open_storage(
    url: str | None = None,
    *,
    create: bool = True,
    retry_seconds: float | None = None,
    interactive: bool = False,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
) -> RetryingRDBStorage:
    """The storage the workers use: embedded SQLite when ``url`` and ``TUNER_STORAGE`` are unset.

    Heartbeats are on: a running trial without one for ``grace_period`` seconds is stale.
    Tuner's workers fail stale trials and queue their retries themselves, under the study lock,
    with the study's own retry cap (``tuner.study``); the storage has no stale-trial callback.
    Database errors are retried for ``retry_seconds``. Defaults come from
    ``TUNER_HEARTBEAT_INTERVAL``, ``TUNER_HEARTBEAT_GRACE`` and ``TUNER_DB_RETRY_SECONDS``,
    else 10 s, 60 s and 300 s, or 15 s (:data:`INTERACTIVE_RETRY_SECONDS`) where
    ``interactive`` (a person waits on the answer).

    With ``create`` (the default) a missing database is set up, as Optuna does; with
    ``create=False`` (what tuner's readers and workers use) only an existing study database is
    opened, and a missing one is a :class:`~tuner.errors.StorageError` that creates nothing.
    """
    resolved = resolve_url(url, create=create)
    interval = heartbeat_interval or int(
        _env_number("TUNER_HEARTBEAT_INTERVAL", HEARTBEAT_INTERVAL)
    )
    grace = grace_period or int(_env_number("TUNER_HEARTBEAT_GRACE", GRACE_PERIOD))
    retry = retry_seconds
    if retry is None:
        fallback = INTERACTIVE_RETRY_SECONDS if interactive else RETRY_SECONDS
        retry = _env_number("TUNER_DB_RETRY_SECONDS", fallback)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)  # heartbeats are "experimental"
        storage = RetryingRDBStorage(
            resolved.url.render_as_string(hide_password=False),
            public_url=resolved.public,
            retry_seconds=retry,
            create=create,
            engine_kwargs=_engine_kwargs(resolved),
            heartbeat_interval=interval,
            grace_period=max(grace, 2 * interval),
        )
    if resolved.kind == "sqlite":
        event.listen(storage.engine, "connect", _sqlite_pragmas)
        storage.engine.dispose()  # Optuna's setup pooled connections before the listener existed
    return storage


def _engine_kwargs(resolved: StorageURL) -> dict[str, Any]:
    if resolved.kind == "sqlite":
        return {"connect_args": {"timeout": 60}}
    connect_args: dict[str, Any] = {
        "connect_timeout": 10,
        "application_name": "tuner",
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
    }
    if resolved.password is not None:
        connect_args["password"] = resolved.password
    return {
        "pool_pre_ping": True,
        "pool_size": 2,
        "max_overflow": 2,
        "pool_timeout": 30,
        "pool_recycle": 1800,
        "connect_args": connect_args,
    }


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
