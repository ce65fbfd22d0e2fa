"""Optuna's RDB storage, made patient, and every use of Optuna's internals in tuner.

A worker outlives database restarts: a call that fails because the server is gone (connection
refused, reset, admin shutdown, a serialisation failure) is retried with exponential backoff
until it works or ``retry_seconds`` have passed; then a :class:`~tuner.errors.StorageError`
says so in one line. Errors that waiting cannot fix (wrong password, unknown database or role)
fail at once. A worker's SIGTERM or SIGINT ends the wait (see :mod:`tuner._interrupt`).

Why this module reaches into Optuna, and why nothing else in tuner may:

- Nothing in Optuna retries through an outage, and a loaded study talks to the storage through
  Optuna's trial cache (``_CachedStorage``), which calls private ``RDBStorage`` methods
  (``_get_trials``, ``_create_new_trial``, ``_set_trial_param``, ``_get_best_trial_id``)
  instead of the public ones. So :class:`RetryingRDBStorage` wraps the public storage methods
  and those private ones (:data:`RETRIED`) in a retry loop, set on the class at import.
- Optuna's stale-trial check (``_get_stale_trial_ids``) misses a trial whose worker died before
  its first heartbeat; the override adds those, reading Optuna's tables through its ORM models
  (``optuna.storages._rdb.models``) and its session helper.
- Optuna has no public accessor for a study's id and storage or a trial's id, which storage
  calls need (heartbeats, system attributes a live trial does not expose, the retry queuer):
  :func:`study_id_of`, :func:`storage_of` and :func:`trial_id_of` are the one place that reads
  ``Study._study_id``, ``Study._storage`` and ``Trial._trial_id``.

Tested with the Optuna versions that ``pyproject.toml`` allows (see the comment there);
``tests/test_optuna_internals.py`` fails, naming the method or attribute, when one of these
disappears or changes its signature. Bump the bound only after that test passes.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import random
import sqlite3
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import optuna
import sqlalchemy
from optuna.storages import BaseStorage, RDBStorage
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import FrozenTrial, Trial, TrialState
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.pool import NullPool

from tuner import _interrupt
from tuner.errors import StorageError

__all__ = [
    "RETRIED",
    "RetryingRDBStorage",
    "describe_database_error",
    "is_transient",
    "storage_of",
    "study_id_of",
    "trial_id_of",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_PERMANENT = (
    "password authentication failed",
    "no password supplied",
    "does not exist",
    "permission denied",
    "pg_hba.conf",
    "could not translate host name",
    "authentication failed",
)

_TABLE = "version_info"  # the table Optuna's setup creates first: present in every study database
_SCHEMA_LOCK = 0x74756E6572  # "tuner": the advisory lock held while Optuna sets up its tables

# Public storage methods, plus the heartbeat internals Optuna calls.
RETRIED = (
    "create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr",
    "get_study_id_from_name", "get_study_name_from_id", "get_study_directions",
    "get_study_user_attrs", "get_study_system_attrs", "get_trial_user_attrs",
    "get_trial_system_attrs", "get_all_studies", "create_new_trial", "set_trial_param",
    "get_trial_param", "set_trial_state_values", "set_trial_intermediate_value",
    "set_trial_user_attr", "set_trial_system_attr", "get_trial_id_from_study_id_trial_number",
    "get_trial", "get_all_trials", "get_best_trial", "record_heartbeat", "_get_stale_trial_ids",
    # what Optuna's trial cache (every loaded study) calls instead of the public methods:
    "_get_trials", "_create_new_trial", "_set_trial_param", "_get_best_trial_id",
)  # fmt: skip


def _root_cause(error: BaseException) -> BaseException:
    while error.__cause__ is not None:
        error = error.__cause__
    return error


def _database_error(error: BaseException) -> sa_exc.SQLAlchemyError | None:
    """The SQLAlchemy error behind ``error`` (Optuna wraps some in StorageInternalError)."""
    current: BaseException | None = error
    while current is not None:
        if isinstance(
            current, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError
        ):
            return current
        if isinstance(current, sa_exc.DBAPIError) and current.connection_invalidated:
            return current
        current = current.__cause__ or current.__context__
    return None


def is_transient(error: BaseException) -> bool:
    """Whether waiting and trying again may fix a database error."""
    db = _database_error(error)
    if db is None:
        return False
    text = str(_root_cause(db)).lower()
    return not any(marker in text for marker in _PERMANENT)


def describe_database_error(error: BaseException) -> str:
    """The driver's first line, without SQLAlchemy's boilerplate (it holds no password)."""
    db = _database_error(error) or error
    origin = getattr(db, "orig", None) or _root_cause(db)
    lines = [line.strip() for line in str(origin).strip().splitlines() if line.strip()]
    return "; ".join(lines[:2])[:300] or type(origin).__name__


class RetryingRDBStorage(RDBStorage):
    """:class:`optuna.storages.RDBStorage` whose calls wait out database outages."""

    def __init__(
        self,
        url: str,
        *,
        public_url: str,
        retry_seconds: float = 300.0,
        create: bool = True,
        **kwargs: Any,
    ) -> None:
        """``create=False`` opens an existing study database only: where there is none (no
        file, or no Optuna tables), a :class:`~tuner.errors.StorageError` says so and nothing
        is created."""
        self.public_url = public_url
        self.retry_seconds = retry_seconds
        setup = functools.partial(self._init_serialised, url, kwargs, create)
        self._retry(setup, "connecting")

    def _init_serialised(self, url: str, kwargs: dict[str, Any], create: bool) -> None:
        """Optuna's setup (tables, version row), one process at a time on Postgres.

        Sixteen workers starting at once on an empty database would otherwise race to create
        the same tables and types and fail with a duplicate-key error.
        """
        connect_args = kwargs.get("engine_kwargs", {}).get("connect_args", {})
        if not create:
            self._require_database(url, connect_args)
        if not url.startswith("postgresql"):
            RDBStorage.__init__(self, url, **kwargs)
            return
        engine = sqlalchemy.create_engine(url, poolclass=NullPool, connect_args=connect_args)
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _SCHEMA_LOCK})
                try:
                    RDBStorage.__init__(self, url, **kwargs)
                finally:
                    connection.execute(
                        text("SELECT pg_advisory_unlock(:key)"), {"key": _SCHEMA_LOCK}
                    )
        finally:
            engine.dispose()

    def _require_database(self, url: str, connect_args: dict[str, Any]) -> None:
        """Raise unless ``url`` holds Optuna's tables; create nothing, not even a file."""
        parsed = sqlalchemy.make_url(url)
        if parsed.get_backend_name() == "sqlite":
            path = Path(parsed.database or "")
            where = str(path)
            if path.is_file():
                with contextlib.closing(
                    sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
                ) as db:
                    found = db.execute(
                        "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (_TABLE,)
                    ).fetchone()
            else:
                found = None
        else:
            where = self.public_url
            engine = sqlalchemy.create_engine(url, poolclass=NullPool, connect_args=connect_args)
            try:
                with engine.connect() as connection:
                    found = sqlalchemy.inspect(connection).has_table(_TABLE)
            finally:
                engine.dispose()
        if not found:
            raise StorageError(
                f"no study database at {where}; create a study first with 'tuner study "
                "create', or give the storage of an existing one (url or TUNER_STORAGE)",
                params=("url",),
            )

    def _retry(self, call: Callable[[], T], what: str) -> T:
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.5
        while True:
            try:
                return call()
            except (optuna.exceptions.StorageInternalError, sa_exc.SQLAlchemyError) as error:
                if not is_transient(error):
                    if _database_error(error) is None:
                        raise
                    raise StorageError(
                        f"the study database at {self.public_url} refused the connection: "
                        f"{describe_database_error(error)}; check the user, database and password "
                        "(PGPASSWORD or TUNER_DB_PASSWORD_FILE)"
                    ) from None
                left = deadline - time.monotonic()
                if left <= 0:
                    raise StorageError(
                        f"the study database at {self.public_url} has been unreachable for "
                        f"{self.retry_seconds:.0f} s ({describe_database_error(error)}); start "
                        "it, or raise TUNER_DB_RETRY_SECONDS"
                    ) from None
                wait = min(delay, left) * random.uniform(0.8, 1.2)
                logger.warning(
                    "study database unreachable while %s (%s); retrying in %.1f s",
                    what, describe_database_error(error), wait,
                )  # fmt: skip
                self._reset_connections()
                _interrupt.sleep(wait)  # a stop request ends the wait (main thread)
                delay = min(delay * 2, 10.0)

    def stale_trial_ids(self, study_id: int) -> list[int]:
        """The study's running trials whose worker is gone (see ``_get_stale_trial_ids``)."""
        return self._get_stale_trial_ids(study_id)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        """Optuna's stale trials, plus running trials that never sent a heartbeat.

        A worker killed between starting a trial and its first heartbeat would otherwise leave
        the trial running for ever; such a trial is stale once it is older than the grace
        period.
        """
        stale = set(RDBStorage._get_stale_trial_ids(self, study_id))
        grace = timedelta(seconds=self.grace_period or 2 * (self.heartbeat_interval or 0))
        now = datetime.now()  # trial start times are the workers' local clocks too
        with _create_scoped_session(self.scoped_session, True) as session:
            silent = (
                session.query(models.TrialModel)
                .outerjoin(models.TrialHeartbeatModel)
                .filter(models.TrialModel.study_id == study_id)
                .filter(models.TrialModel.state == TrialState.RUNNING)
                .filter(models.TrialHeartbeatModel.trial_heartbeat_id.is_(None))
                .all()
            )
            for trial in silent:
                started = trial.datetime_start
                if started is not None and now - started.replace(tzinfo=None) > grace:
                    stale.add(int(trial.trial_id))
        return sorted(stale)

    def _reset_connections(self) -> None:
        try:
            self.scoped_session.remove()
            self.engine.dispose()
        except (AttributeError, sa_exc.SQLAlchemyError):
            pass


def study_id_of(study: optuna.Study) -> int:
    """The storage's id of ``study`` (Optuna keeps it private)."""
    return int(study._study_id)


def storage_of(study: optuna.Study) -> BaseStorage:
    """The storage ``study`` talks to: Optuna's trial cache over the storage it was given."""
    return study._storage


def trial_id_of(trial: Trial | FrozenTrial) -> int:
    """The storage's id of ``trial`` (Optuna keeps it private)."""
    return int(trial._trial_id)


def _retrying(name: str) -> Callable[..., Any]:
    try:
        method = getattr(RetryingRDBStorage, name)  # an override of this class, or RDBStorage's
    except AttributeError:
        raise ImportError(
            f"optuna {optuna.__version__} has no RDBStorage.{name}, which tuner's storage "
            "retries; install the Optuna version pyproject.toml allows"
        ) from None

    @functools.wraps(method)
    def call(self: RetryingRDBStorage, *args: Any, **kwargs: Any) -> Any:
        return self._retry(functools.partial(method, self, *args, **kwargs), name)

    return call


for _name in RETRIED:
    setattr(RetryingRDBStorage, _name, _retrying(_name))
