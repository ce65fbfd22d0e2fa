"""The trivial worker of ``tests/trivial_worker.py`` with raw Optuna's loop instead of tuner's.

It joins a study made by ``tuner study create`` (for its sampler settings and search space
only) through a plain ``optuna.storages.RDBStorage`` (Postgres through psycopg2) and runs
``study.optimize`` with ``MaxTrialsCallback(budget, states=(TrialState.COMPLETE,))``, the way
Optuna's documentation shares a budget between processes. The sampler is tuner's
(:func:`tuner.study.make_sampler`, seeded per process as tuner's workers are) and the objective
is the trivial worker's: sample the space, sleep ``--sleep`` seconds, return a number. torch is
imported as in tuner's worker, so that the start-up costs the same (a real objective trains
with it). It prints one JSON line in the trivial worker's shape.

    python benchmarks/raw_optuna_worker.py STUDY --storage URL [--sleep 0.0] [--start-file PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import optuna
import torch  # noqa: F401  (imported as tuner's worker imports it: same start-up)
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from tuner.study import load_settings, make_sampler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.trivial_worker
from tests.trivial_worker import SleepingObjective, wait_for_start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study")
    parser.add_argument("--storage", required=True)
    parser.add_argument("--sleep", type=float, default=0.0, help="seconds per objective call")
    parser.add_argument("--start-file", type=Path, default=None, help="wait for this file first")
    args = parser.parse_args()

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = make_url(args.storage).set(drivername="postgresql+psycopg2")  # the driver installed
    storage = optuna.storages.RDBStorage(url.render_as_string(hide_password=False))
    settings = load_settings(storage, args.study)
    space = settings.search_space()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = optuna.load_study(
            study_name=args.study, storage=storage, sampler=make_sampler(settings)
        )
    objective = SleepingObjective(space, args.sleep)
    wait_for_start(args.start_file)
    tick = time.perf_counter()
    study.optimize(
        objective, callbacks=[MaxTrialsCallback(settings.budget, states=(TrialState.COMPLETE,))]
    )
    wall = time.perf_counter() - tick
    print(
        json.dumps(
            {
                "pid": os.getpid(),
                "trials": {"COMPLETE": objective.calls},
                "sleep_seconds": objective.slept,
                "wall_seconds": wall,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
