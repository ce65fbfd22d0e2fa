"""Many processes at once on one Postgres study: one study, exact budgets, no errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tuner.features import FeatureStore
from tuner.storage import open_storage
from tuner.study import load_settings

TRIVIAL_WORKER = Path(__file__).resolve().parent / "trivial_worker.py"


def start_all(commands: list[list[str]], env: dict[str, str]) -> list[subprocess.Popen[str]]:
    return [
        subprocess.Popen(c, env={**os.environ, **env}, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for c in commands
    ]  # fmt: skip


def finish_all(
    processes: list[subprocess.Popen[str]], timeout: float
) -> list[tuple[int, str, str]]:
    results = []
    for process in processes:
        out, err = process.communicate(timeout=timeout)
        results.append((process.returncode, out, err))
    return results


@pytest.mark.slow
def test_sixteen_creates_at_once_make_one_study(pg_url: str, store: FeatureStore) -> None:
    command = [sys.executable, "-m", "tuner", "study", "create", "crowd", "--features",
               str(store.path), "--trials", "20"]  # fmt: skip
    results = finish_all(start_all([command] * 16, {"TUNER_STORAGE": pg_url}), timeout=600)
    for code, _, err in results:
        assert code == 0, err
        assert "Traceback" not in err
    verbs = Counter("created:" in out for _, out, _ in results)
    assert verbs[True] >= 1
    storage = open_storage(pg_url)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    assert names.count("crowd") == 1
    assert load_settings(storage, "crowd").budget == 20


@pytest.mark.slow
def test_sixteen_workers_run_a_thousand_trials_exactly(pg_url: str, store: FeatureStore) -> None:
    env = {"TUNER_STORAGE": pg_url}
    created = subprocess.run(
        [sys.executable, "-m", "tuner", "study", "create", "thousand", "--features",
         str(store.path), "--trials", "1000", "--sampler", "random"],
        env={**os.environ, **env}, capture_output=True, text=True,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    worker = [sys.executable, str(TRIVIAL_WORKER), "thousand", "--poll", "0.05"]
    results = finish_all(start_all([worker] * 16, env), timeout=1200)
    reports = []
    for code, out, err in results:
        assert code == 0, err[-2000:]
        assert "Traceback" not in err
        assert "deadlock" not in err.lower()
        assert "could not serialize" not in err.lower()
        reports.append(json.loads(out.strip().splitlines()[-1]))
    assert sum(sum(r["trials"].values()) for r in reports) == 1000
    assert sum(1 for r in reports if r["trials"]) >= 8, "most workers got trials"

    trials = optuna.load_study(study_name="thousand", storage=open_storage(pg_url)).get_trials()
    assert sorted(t.number for t in trials) == list(range(1000))
    assert Counter(t.state for t in trials) == {TrialState.COMPLETE: 1000}
