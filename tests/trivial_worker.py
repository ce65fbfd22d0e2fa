"""A tuner worker whose objective is trivial, so that storage, locking and sampling are all
that cost. Used by the concurrency tests and the orchestration benchmarks
(``benchmarks/trivial_worker.py`` runs this file).

It joins a study made by ``tuner study create`` and runs tuner's real worker loop
(:func:`tuner.study.run_trials`: study lock, stale-trial retry, budget count, ask, heartbeat,
tell). The objective samples the study's search space, sleeps ``--sleep`` seconds and returns a
number. At the end it prints one JSON line: trials by state, the seconds spent inside the
objective (sampling included) and asleep, and the wall seconds of the loop.

    python tests/trivial_worker.py STUDY --storage URL [--sleep 0.0] [--max-trials N]
        [--start-file PATH]

With ``--start-file``, the worker gets ready (imports, connection, study loaded), creates
``PATH.ready-PID`` and waits for ``PATH`` to exist before its loop starts, so that a benchmark
can start many workers at one moment.
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
from optuna.trial import Trial

from tuner.storage import open_storage
from tuner.study import load_settings, make_pruner, make_sampler, run_trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study")
    parser.add_argument("--storage", default=os.environ.get("TUNER_STORAGE"))
    parser.add_argument("--sleep", type=float, default=0.0, help="seconds per objective call")
    parser.add_argument("--poll", type=float, default=0.05, help="seconds between budget checks")
    parser.add_argument("--max-trials", type=int, default=None, help="stop after N trials here")
    parser.add_argument("--start-file", type=Path, default=None, help="wait for this file first")
    args = parser.parse_args()

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(args.storage)
    settings = load_settings(storage, args.study)
    space = settings.search_space()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = optuna.load_study(
            study_name=args.study, storage=storage, sampler=make_sampler(settings),
            pruner=make_pruner(settings),
        )  # fmt: skip
    slept = 0.0

    def objective(trial: Trial) -> float:
        nonlocal slept
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
    report = run_trials(
        study, storage, settings.budget, objective, max_retries=settings.max_retries,
        poll_seconds=args.poll, max_trials=args.max_trials,
    )  # fmt: skip
    print(
        json.dumps(
            {
                "pid": os.getpid(),
                "trials": report.trials,
                "objective_seconds": report.objective_seconds,
                "sleep_seconds": slept,
                "wall_seconds": report.wall_seconds,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
