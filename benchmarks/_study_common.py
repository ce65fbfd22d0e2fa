"""What the orchestration benchmarks share: a tiny feature store, throwaway storages, a study.

A study needs a feature store to be created (its checksum and split are part of the study's
settings), but the orchestration benchmarks never read features: a store of 20 cases with a
few 8-wide rows each is enough. Storages are throwaway: a fresh database on the Postgres
server (dropped afterwards) or a fresh SQLite file (the embedded store's engine, with its
WAL pragmas and file lock) in a temporary folder.
"""

from __future__ import annotations

import statistics
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.pg
from tests.pg import fresh_database
from tuner.data import Patch
from tuner.features import StoreCase, StoreWriter
from tuner.storage import open_storage
from tuner.study import create_study

POSTGRES_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
STORAGES = ("postgres", "embedded")


def tiny_store(out: Path, cases: int = 20) -> Path:
    """A complete feature store of ``cases`` cases (two classes), 6 rows of 8 floats each."""
    rows: list[Patch] = []
    table: list[StoreCase] = []
    for number in range(cases):
        case, start = f"C{number:03d}", len(rows)
        for i in range(6):
            stain, slice_ = ("HE", "SOX10")[i % 2], str(i // 2 + 1)
            rows.append(Patch(case, stain, slice_, str(i), f"{case}/{stain}/{slice_}/{i}.png"))
        label = number % 2
        table.append(StoreCase(case, ("benign", "high_grade")[label], label, start, len(rows)))
    writer = StoreWriter.create(out, rows, table, views=1, dim=8, state={"benchmark": True})
    values = np.random.default_rng(0).standard_normal((len(rows), 1, 8)).astype(np.float16)
    writer.write_rows(0, values, done_rows=len(rows))
    return writer.finish({"backbone": "synthetic", "classes": ["benign", "high_grade"]}).path


@contextmanager
def throwaway_storage(kind: str, scratch: Path, server: str = POSTGRES_SERVER) -> Iterator[str]:
    """The URL of a fresh, empty storage of ``kind`` ("postgres" or "embedded")."""
    if kind == "embedded":
        folder = scratch / f"embedded-{uuid.uuid4().hex[:8]}"
        folder.mkdir(parents=True)
        yield f"sqlite:///{folder / 'tuner.db'}"
        return
    with fresh_database("tuner_bench", server) as url:
        yield url


def new_study(url: str, name: str, store: Path, trials: int, sampler: str = "tpe") -> None:
    """``tuner study create NAME --features STORE --trials N --sampler S`` on ``url``."""
    storage = open_storage(url)
    try:
        create_study(storage, name, store, trials=trials, sampler=sampler)
    finally:
        storage.engine.dispose()


def commit_milliseconds(url: str, commits: int = 20) -> float:
    """Median latency of a durable one-row write (insert + commit) on ``url``, in ms.

    Optuna's storage commits once per call (each suggest, attribute, heartbeat, tell), so this
    latency (a flush of the write-ahead log to disk, on Postgres) bounds a trial's cost.
    """
    storage = open_storage(url)
    timings = []
    try:
        with storage.engine.connect() as connection:
            connection.execute(text("CREATE TABLE IF NOT EXISTS bench_probe (x INTEGER)"))
            connection.commit()
            for _ in range(commits):
                tick = time.perf_counter()
                connection.execute(text("INSERT INTO bench_probe VALUES (1)"))
                connection.commit()
                timings.append(time.perf_counter() - tick)
    finally:
        storage.engine.dispose()
    return 1000 * median(timings)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), linear between the closest ranks."""
    return float(np.percentile(np.asarray(values, dtype=float), q))


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A Markdown table, columns padded for reading in a terminal."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(cells[0], widths, strict=True)) + " |"
    print(line)
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells[1:]:
        print("| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |")
