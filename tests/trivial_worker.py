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

from tuner.search import SearchSpace
from tuner.storage import open_storage
from tuner.study import load_settings, make_pruner, make_sampler, run_trials


class SleepingObjective:
    """Sample the space, sleep ``sleep`` seconds, return a number; count calls and sleep."""

    def __init__(self, space: SearchSpace, sleep: float) -> None:
        self.space, self.sleep = space, sleep
        self.calls, self.slept = 0, 0.0

    def __call__(self, trial: Trial) -> float:
        self.calls += 1
        params = self.space.sample(trial)
        if self.sleep:
            tick = time.perf_counter()
            time.sleep(self.sleep)
            self.slept += time.perf_counter() - tick
        return float(sum(math.log(abs(v) + 1e-9) for v in params.values() if isinstance(v, float)))


def wait_for_start(start_file: Path | None) -> None:
    """With a start file: say ready (``PATH.ready-PID``), then wait until ``PATH`` exists."""
    if start_file is None:
        return
    Path(f"{start_file}.ready-{os.getpid()}").touch()
    while not start_file.exists():
        time.sleep(0.01)


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
    objective = SleepingObjective(space, args.sleep)
    wait_for_start(args.start_file)
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
                "sleep_seconds": objective.slept,
                "wall_seconds": report.wall_seconds,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
