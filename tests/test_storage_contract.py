"""Optuna's own storage contract suite, run against ``tuner.open_storage``: the embedded store
and PostgreSQL pass the same tests as Optuna's built-in storages do.

Each test gets a storage of its own, opened with ``tuner.open_storage`` on a copy of an empty
one whose tables Optuna has already created (creating them takes most of a second per test).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from optuna.storages import BaseStorage
from optuna.testing.pytest_storages import StorageTestCase
from sqlalchemy.engine import make_url

import tuner
from tests.pg import fresh_database


@pytest.fixture(scope="module")
def empty_embedded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("contract") / "empty.db"
    tuner.open_storage(f"sqlite:///{path}").engine.dispose()
    return path


@pytest.fixture(scope="module")
def empty_postgres() -> Iterator[str]:
    with fresh_database("tuner_contract") as url:
        tuner.open_storage(url).engine.dispose()
        yield str(make_url(url).database)


@pytest.fixture(params=["embedded", pytest.param("postgres", marks=pytest.mark.slow)])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BaseStorage]:
    """A new, empty storage for each test: an embedded file, or a fresh Postgres database."""
    if request.param == "embedded":
        path = tmp_path / "tuner.db"
        shutil.copy(request.getfixturevalue("empty_embedded"), path)
        opened = tuner.open_storage(f"sqlite:///{path}")
        yield opened
        opened.engine.dispose()
    else:
        with fresh_database(template=request.getfixturevalue("empty_postgres")) as url:
            opened = tuner.open_storage(url)
            yield opened
            opened.engine.dispose()


class TestTunerStorage(StorageTestCase):
    """Every test of :class:`optuna.testing.pytest_storages.StorageTestCase`, unchanged."""
