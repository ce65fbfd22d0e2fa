"""The storage contract: the same behaviour from the embedded store and from PostgreSQL."""

from __future__ import annotations

import multiprocessing
import threading
import time
import warnings
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState
from sqlalchemy.pool import NullPool

from tuner.errors import StorageError
from tuner.storage import (
    INTERACTIVE_RETRY_SECONDS,
    RETRY_SECONDS,
    open_storage,
    public_url,
    resolve_url,
    study_lock,
)


def quiet_study(storage, name: str = "s") -> optuna.Study:  # type: ignore[no-untyped-def]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(study_name=name, storage=storage, load_if_exists=True)


def test_optuna_tools_work_on_the_storage(storage_url: str) -> None:
    storage = open_storage(storage_url)
    assert isinstance(storage, optuna.storages.RDBStorage)
    study = quiet_study(storage)
    for value in (3.0, 1.0, 2.0):
        trial = study.ask()
        trial.report(value + 1, 1)
        study.tell(trial, value)
    again = optuna.load_study(study_name="s", storage=open_storage(storage_url))
    assert again.best_value == 1.0
    assert [t.intermediate_values for t in again.trials] == [{1: 4.0}, {1: 2.0}, {1: 3.0}]
    summaries = optuna.get_all_study_summaries(storage)
    assert [s.study_name for s in summaries] == ["s"]


def test_silent_trials_go_stale_after_the_grace_period(storage_url: str) -> None:
    storage = open_storage(storage_url, heartbeat_interval=1, grace_period=2)
    study = quiet_study(storage)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        beating = study.ask()
        storage.record_heartbeat(beating._trial_id)
        silent = study.ask()  # a worker killed before its first heartbeat
        assert storage._get_stale_trial_ids(study._study_id) == []
        time.sleep(3)
        stale = storage._get_stale_trial_ids(study._study_id)
    assert sorted(stale) == sorted([beating._trial_id, silent._trial_id])
    # the storage only finds them: failing and retrying is the workers' job (tuner.study)
    assert [t.state for t in study.get_trials()] == [TrialState.RUNNING] * 2
    assert storage.get_heartbeat_stale_trial_callback() is None


def _hold_lock(url: str, name: str, started, release) -> None:  # type: ignore[no-untyped-def]
    with study_lock(open_storage(url), name):
        started.set()
        release.wait(30)


def test_study_lock_excludes_other_processes(storage_url: str) -> None:
    storage = open_storage(storage_url)
    context = multiprocessing.get_context("spawn")
    started, release = context.Event(), context.Event()
    holder = context.Process(target=_hold_lock, args=(storage_url, "s", started, release))
    holder.start()
    try:
        assert started.wait(60)
        acquired = threading.Event()

        def take() -> None:
            with study_lock(storage, "s"):
                acquired.set()

        thread = threading.Thread(target=take)
        thread.start()
        assert not acquired.wait(1.0), "the lock was taken while another process held it"
        release.set()
        assert acquired.wait(30)
        thread.join()
        with study_lock(storage, "other"):
            pass
    finally:
        release.set()
        holder.join(30)


def test_plain_postgresql_url_uses_the_installed_driver(pg_url: str) -> None:
    assert pg_url.startswith("postgresql://")
    resolved = resolve_url(pg_url)
    assert resolved.url.drivername == "postgresql+psycopg2"
    for scheme in ("postgres", "postgresql+psycopg"):
        assert resolve_url(pg_url.replace("postgresql", scheme, 1)).url.drivername == (
            "postgresql+psycopg2"
        )
    quiet_study(open_storage(pg_url), "driver-check")


def test_passwords_never_show(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = "postgresql://alice:s3cr3t-pw@db.example:5432/tuner"
    assert public_url(url) == "postgresql://alice@db.example:5432/tuner"
    assert "s3cr3t" not in resolve_url(url).public
    (tmp_path / "pw").write_text("from-file-pw\n")
    monkeypatch.setenv("TUNER_DB_PASSWORD_FILE", str(tmp_path / "pw"))
    resolved = resolve_url("postgresql://alice@db.example/tuner")
    assert resolved.password == "from-file-pw"
    assert "from-file-pw" not in resolved.public


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mongodb://x@y/z", "unknown storage URL scheme 'mongodb'"),
        ("sqlite:///:memory:", "in-memory SQLite storage cannot be shared"),
        ("/nonexistent/folder/tuner.db", "does not exist"),
    ],
)
def test_bad_storage_urls(url: str, message: str) -> None:
    with pytest.raises(StorageError, match=message):
        resolve_url(url)


def test_unreachable_database_gives_up_after_the_limit() -> None:
    started = time.monotonic()
    with pytest.raises(
        StorageError, match=r"unreachable for 2 s .*start it, or raise TUNER_DB_RETRY_SECONDS"
    ):
        open_storage("postgresql://postgres@127.0.0.1:1/none", retry_seconds=2)
    assert 1.5 < time.monotonic() - started < 20


def test_wrong_password_fails_at_once_without_echoing_it(pg_url: str) -> None:
    url = pg_url.replace("postgresql://postgres@", "postgresql://nosuchrole:hunter2@")
    started = time.monotonic()
    with pytest.raises(StorageError) as error:
        open_storage(url, retry_seconds=30)
    assert time.monotonic() - started < 10
    assert "refused the connection" in str(error.value)
    assert "hunter2" not in str(error.value)


def test_embedded_default_lives_under_storage(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TUNER_STORAGE", raising=False)
    storage = open_storage()
    quiet_study(storage)
    assert (tmp_path / "storage" / "tuner.db").is_file()
    monkeypatch.setenv("TUNER_STORAGE", str(tmp_path / "elsewhere.db"))
    quiet_study(open_storage())
    assert (tmp_path / "elsewhere.db").is_file()


@pytest.mark.parametrize(
    ("url", "host", "database"),
    [
        ("postgresql://alice:Pw1x@Yz9q@db.example:5432/tuner", "db.example", "tuner"),
        (
            "postgresql://alice:Ab12@Cd34@Ef/56@db.example/tuner?sslmode=require",
            "db.example",
            "tuner",
        ),
        ("postgresql://alice:Pw1x%40Yz9q@db.example/tuner", "db.example", "tuner"),
        (
            "postgresql://alice:Zq8w7r6t@db.example/tuner?application_name=a@b",
            "db.example",
            "tuner",
        ),
    ],
)
def test_a_password_with_an_unencoded_at_is_parsed_and_never_shown(
    url: str, host: str, database: str
) -> None:
    password = url.split("://alice:", 1)[1].rsplit("@db.example", 1)[0]
    resolved = resolve_url(url)
    assert (resolved.url.username, resolved.url.host, resolved.url.database) == (
        "alice",
        host,
        database,
    )
    assert resolved.url.password == password.replace("%40", "@")
    for shown in (public_url(url), resolved.public, public_url(resolved.url)):
        assert shown.startswith(
            ("postgresql://alice@db.example", "postgresql+psycopg2://alice@db")
        )
        for piece in password.replace("%40", "@").split("@"):
            assert piece not in shown, shown


def test_readers_open_only_an_existing_store(storage_url: str) -> None:
    with pytest.raises(StorageError, match=r"no study database at .*'tuner study create'"):
        open_storage(storage_url, create=False, retry_seconds=2)
    if storage_url.startswith("sqlite"):
        assert not resolve_url(storage_url).path.exists()  # type: ignore[union-attr]
    else:
        engine = sqlalchemy.create_engine(resolve_url(storage_url).url, poolclass=NullPool)
        with engine.connect() as connection:
            assert sqlalchemy.inspect(connection).get_table_names() == []
        engine.dispose()
    quiet_study(open_storage(storage_url))  # a writer sets the database up
    reader = open_storage(storage_url, create=False)
    assert [s.study_name for s in optuna.get_all_study_summaries(reader)] == ["s"]


def test_readers_do_not_make_the_embedded_folder(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TUNER_STORAGE", raising=False)
    (tmp_path / "empty.db").touch()  # a file that is not a study database is not made one
    for url in (None, "foo", str(tmp_path / "empty.db"), f"sqlite:///{tmp_path}/no/tuner.db"):
        with pytest.raises(StorageError, match="no study database at /"):
            open_storage(url, create=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.db"]
    assert (tmp_path / "empty.db").stat().st_size == 0


def test_a_person_waits_less_for_an_outage_than_a_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TUNER_DB_RETRY_SECONDS", raising=False)
    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    assert open_storage(url).retry_seconds == RETRY_SECONDS
    assert open_storage(url, interactive=True).retry_seconds == INTERACTIVE_RETRY_SECONDS
    monkeypatch.setenv("TUNER_DB_RETRY_SECONDS", "7")
    assert open_storage(url, interactive=True).retry_seconds == 7
    assert open_storage(url, interactive=True, retry_seconds=3).retry_seconds == 3
