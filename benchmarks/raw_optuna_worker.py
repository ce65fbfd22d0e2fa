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
import math
import os
import time
import warnings
from pathlib import Path

import optuna
import torch  # noqa: F401  (imported as tuner's worker imports it: same start-up)
from optuna.study import MaxTrialsCallback
from optuna.trial import Trial, TrialState
from sqlalchemy.engine import make_url

from tuner.study import load_settings, make_sampler


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
    slept, calls = 0.0, 0

    def objective(trial: Trial) -> float:
        nonlocal slept, calls
        calls += 1
        params = space.sample(trial)
        if args.sleep:
            tick = time.perf_counter()
            time.sleep(args.sleep)
            slept += time.perf_counter() - tick
        return float(sum(math.log(abs(v) + 1e-9) for v in params.values() if isinstance(v, float)))

    if args.start_file is not None:
        Path(f"{args.start_file}.ready-{os.getpid()}").touch()
        while not args.start_file.exists():
            time.sleep(0.01)
    tick = time.perf_counter()
    study.optimize(
        objective, callbacks=[MaxTrialsCallback(settings.budget, states=(TrialState.COMPLETE,))]
    )
    wall = time.perf_counter() - tick
    print(
        json.dumps(
            {
                "pid": os.getpid(),
                "trials": {"COMPLETE": calls},
                "sleep_seconds": slept,
                "wall_seconds": wall,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
