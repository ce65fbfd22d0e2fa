"""Shared fixtures: tiny synthetic datasets and stores built in code, and a CLI runner."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import Demo, make_demo
from tests.pg import fresh_database
from tuner.cli import main
from tuner.features import ExtractOptions, FeatureStore, extract_features


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """Run ``tuner ARGS...`` in this process; return its exit code, stdout and stderr."""

    def run(*args: object) -> Result:
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    """A tiny demo dataset (8 cases, a few patches per slice, 32 px). Do not modify."""
    return make_demo(tmp_path_factory.mktemp("demo") / "data")


@pytest.fixture(scope="session")
def store(demo: Demo, tmp_path_factory: pytest.TempPathFactory) -> FeatureStore:
    """The feature store of ``demo`` (random weights, two views). Do not modify."""
    out = tmp_path_factory.mktemp("store") / "features"
    options = ExtractOptions(
        weights="random", device="cpu", batch_size=16, views=2, progress=False
    )
    return extract_features(demo.patches, demo.labels, out, options)


@pytest.fixture
def fresh_demo(tmp_path: Path) -> Demo:
    """A tiny demo dataset of this test's own, free to modify."""
    return make_demo(tmp_path / "data")


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh database on the local PostgreSQL server for this test run."""
    with fresh_database() as url:
        yield url


@pytest.fixture(params=["embedded", "postgres"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each storage backend in turn: an embedded SQLite file, then a fresh Postgres database."""
    if request.param == "embedded":
        yield f"sqlite:///{tmp_path / 'tuner.db'}"
    else:
        with fresh_database() as url:
            yield url
