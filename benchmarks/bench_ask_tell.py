"""Per-trial ask+tell latency of tuner's worker loop as a study grows (issue 4).

The objective is trivial, so what a trial costs is orchestration only: the worker's real loop
(:func:`tuner.study.run_trials`: study lock, stale-trial check, budget count over all trials,
``study.ask`` with the study's sampler, first heartbeat), the suggest calls of the default
search space (the sampler's work and one storage write per parameter) and ``study.tell``.

For each storage (a fresh Postgres database, and the embedded SQLite store) one study is made
with ``tuner study create`` defaults (TPE: multivariate, grouped, constant liar). It is filled
to each size (100, 1,000, 5,000 finished trials, added with ``study.add_trials``; their
parameters come from the random sampler on the same search space and their values from the
trivial objective). Then, in ``--rounds`` rounds in which the storages take turns (so that
noise from other work on the machine hits both alike), a fresh worker (``open_storage``, the
study's sampler and pruner from its settings, ``run_trials``) runs 1 + ``--window`` trials,
each timed in three parts:

- ask: from the previous ``tell`` returning to the objective being entered: what
  ``run_trials`` does between trials under the study lock (stale-trial check, reading new
  trials, budget count, ``study.ask``, first heartbeat) and starting the heartbeat thread;
- suggest: ``SearchSpace.sample(trial)`` inside the objective. Optuna defers the sampler's
  work (TPE over all finished trials) to the first suggest, so it runs outside the lock;
- tell: from the objective returning to ``study.tell`` returning (the ``duration_s``
  attribute, the tell, stopping the heartbeat thread).

Also reported: the worker's CPU milliseconds per trial (what other work on a shared machine
cannot inflate; the database server's CPU is not in it), and the median latency of one durable
write (insert + commit) on the same storage, probed after each window: Optuna's storage
commits once per call (15 write transactions per trial here), so on Postgres a trial costs at
least that many flushes of the write-ahead log to disk.

Each worker's first trial is reported apart ("first (cold)", the median over the rounds): a
worker that joins a study reads every trial once, then only new and unfinished ones (Optuna's
cached storage). The study grows by the timed trials, so "5,000" means 5,000 to 5,055.

Run from the repository root (2 minutes on a quiet 2-core machine, up to 5 under load)::

    .venv/bin/python benchmarks/bench_ask_tell.py
    .venv/bin/python benchmarks/bench_ask_tell.py --sizes 100 1000 5000 --rounds 5 --window 10 \\
        --storages postgres embedded --server postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
import warnings
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from _study_common import (
    POSTGRES_SERVER,
    STORAGES,
    commit_milliseconds,
    median,
    new_study,
    percentile,
    print_table,
    throwaway_storage,
    tiny_store,
)
from optuna.trial import Trial

from tuner.search import SearchSpace
from tuner.storage import open_storage
from tuner.study import load_settings, make_pruner, make_sampler, run_trials

STUDY = "latency"
FILL_BATCH = 500


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--window", type=int, default=10, help="timed trials per round")
    parser.add_argument("--rounds", type=int, default=5, help="fresh workers per size")
    parser.add_argument("--storages", nargs="+", choices=STORAGES, default=list(STORAGES))
    parser.add_argument("--server", default=POSTGRES_SERVER, help="Postgres to make a DB on")
    return parser.parse_args()


def trivial_value(params: dict[str, Any]) -> float:
    return float(sum(math.log(abs(v) + 1e-9) for v in params.values() if isinstance(v, float)))


def fill(url: str, space: SearchSpace, target: int, seed: int) -> float:
    """Add finished trials until the study holds ``target``; return the seconds it took."""
    storage = open_storage(url)
    study = optuna.load_study(study_name=STUDY, storage=storage)
    missing = target - len(study.get_trials(deepcopy=False))
    started = time.perf_counter()
    scratch = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    for _ in range(max(0, missing)):
        trial = scratch.ask()
        scratch.tell(trial, trivial_value(space.sample(trial)))
    made = scratch.get_trials(deepcopy=False)
    for start in range(0, len(made), FILL_BATCH):
        study.add_trials(made[start : start + FILL_BATCH])
    storage.engine.dispose()
    return time.perf_counter() - started


@dataclass(frozen=True)
class Timing:
    ask: float
    suggest: float
    tell: float
    cpu: float  # this process's CPU seconds over the trial (the database server's not included)

    @property
    def total(self) -> float:
        return self.ask + self.suggest + self.tell


def timed_window(url: str, window: int) -> list[Timing]:
    """A fresh worker runs ``window`` trials with the study's own sampler; time each one."""
    storage = open_storage(url)
    settings = load_settings(storage, STUDY)
    space = settings.search_space()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = optuna.load_study(
            study_name=STUDY, storage=storage, sampler=make_sampler(settings),
            pruner=make_pruner(settings),
        )  # fmt: skip
    entered: list[float] = []
    sampled: list[float] = []
    told: list[float] = []
    cpu: list[float] = []
    tell = study.tell

    def timed_tell(*args: Any, **kwargs: Any) -> Any:
        result = tell(*args, **kwargs)
        told.append(time.perf_counter())
        cpu.append(time.process_time())
        return result

    study.tell = timed_tell  # type: ignore[method-assign]

    def objective(trial: Trial) -> float:
        entered.append(time.perf_counter())
        params = space.sample(trial)
        sampled.append(time.perf_counter())
        return trivial_value(params)

    started, cpu_started = time.perf_counter(), time.process_time()
    report = run_trials(
        study, storage, settings.budget, objective, max_retries=settings.max_retries,
        max_trials=window,
    )  # fmt: skip
    storage.engine.dispose()
    if report.trials != {"complete": window}:
        raise RuntimeError(f"the window ended with {report.trials}, not {window} complete")
    previous = [started, *told[:-1]]
    cpu_previous = [cpu_started, *cpu[:-1]]
    return [
        Timing(e - p, s - e, t - s, c - cp)
        for p, e, s, t, cp, c in zip(
            previous, entered, sampled, told, cpu_previous, cpu, strict=True
        )
    ]


def main() -> None:
    args = parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-ask-tell-") as scratch, ExitStack() as stack:
        store = tiny_store(Path(scratch) / "features")
        urls = {
            kind: stack.enter_context(throwaway_storage(kind, Path(scratch), args.server))
            for kind in args.storages
        }
        windows = args.rounds * (args.window + 1)
        for url in urls.values():
            new_study(url, STUDY, store, trials=max(args.sizes) + windows * len(args.sizes) + 10)
        space = load_settings(open_storage(next(iter(urls.values()))), STUDY).search_space()
        for number, size in enumerate(sorted(args.sizes)):
            filled = {kind: fill(url, space, size, seed=number) for kind, url in urls.items()}
            first: dict[str, list[Timing]] = {kind: [] for kind in urls}
            steady: dict[str, list[Timing]] = {kind: [] for kind in urls}
            commit: dict[str, list[float]] = {kind: [] for kind in urls}
            for _ in range(args.rounds):  # storages take turns, so that noise hits both alike
                for kind, url in urls.items():
                    timings = timed_window(url, args.window + 1)
                    first[kind].append(timings[0])
                    steady[kind] += timings[1:]
                    commit[kind].append(commit_milliseconds(url))
            for kind in urls:
                ms = [1000 * t.total for t in steady[kind]]
                rows.append(
                    [
                        kind, size, len(ms), f"{median(ms):.1f}", f"{percentile(ms, 95):.1f}",
                        f"{1000 * median([t.ask for t in steady[kind]]):.1f}",
                        f"{1000 * median([t.suggest for t in steady[kind]]):.1f}",
                        f"{1000 * median([t.tell for t in steady[kind]]):.1f}",
                        f"{1000 * median([t.cpu for t in steady[kind]]):.1f}",
                        f"{median(commit[kind]):.2f}",
                        f"{1000 * median([t.total for t in first[kind]]):.0f}",
                        f"{filled[kind]:.1f}",
                    ]
                )  # fmt: skip
                print(f"{kind} {size}: median {median(ms):.1f} ms", flush=True)
    rows.sort(key=lambda row: (args.storages.index(row[0]), row[1]))
    print()
    print("Per-trial ask+tell latency, TPE sampler (tuner's default), trivial objective (ms)")
    print(
        f"{os.cpu_count()} CPUs; load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after (other work on the machine inflates wall times)"
    )
    print()
    print_table(
        ["storage", "trials in study", "timed", "median", "p95", "ask", "suggest", "tell",
         "worker CPU", "commit", "first (cold)", "fill s"],
        rows,
    )  # fmt: skip


if __name__ == "__main__":
    main()
