"""Orchestration overhead and scaling efficiency of parallel tuner workers (issue 4).

Every worker is ``benchmarks/trivial_worker.py``: tuner's real worker loop
(:func:`tuner.study.run_trials`) on a study made with ``tuner study create`` defaults (TPE
sampler, the default search space), whose objective samples the space and sleeps ``--sleep``
seconds, standing in for training. Each worker is its own process, as ``tuner launch`` and
``tuner slurm`` start them. The workers start their loops together, once every one of them is
ready (Python started, tuner and torch imported, connected, study loaded: the "start-up").

overhead
    N workers (1, 4, 16) each run exactly ``--per-worker`` trials of a study whose budget is
    N times that, so that nobody waits at the end for another's last trial. Per worker, the
    fraction of its loop's wall time spent outside the objective's sleep is
    ``1 - sleep_seconds / wall_seconds``: the study lock, stale-trial check, budget count, ask,
    suggest (sampling plus one storage write per parameter), heartbeats and tell. The median
    (and the worst) over the workers is reported, with the same fraction as ``run_trials``
    itself counts it (``1 - objective_seconds / wall_seconds``, where the objective's time
    includes suggest and tell) and the orchestration milliseconds per trial.

scaling
    The shape of Ray Tune's published benchmark (10,000 one-second trials over 16 CPUs:
    715 s against an ideal 625 s, 87 %): ``TRIALS`` trials of ``SECONDS`` seconds shared by
    ``WORKERS`` workers (one budget, as a real study). Efficiency is
    ``trials x seconds / (workers x wall)``, with the wall taken two ways: steady, from the
    workers starting their loops together to the last trial's end; and all in, from launching
    the processes to the last one exiting (start-up and exit included, as Ray's figure
    includes everything).
    16 x 1 s is Ray's shape; on a machine with fewer than 16 cores, 16 x 8 s asks of each
    core what Ray's asks of each of its 16 (one trial start per core every second, on 2).

versus
    tuner against raw Optuna on the same Postgres server, side by side: for each of
    ``--versus-workers``, a budget of ``--versus-trials`` trials of ``--versus-sleep`` seconds
    run once by tuner's trivial workers and once by ``benchmarks/raw_optuna_worker.py``
    (``study.optimize`` with ``MaxTrialsCallback(budget, states=(COMPLETE,))``, the same
    sampler, objective and start-up), each on a fresh database; the two alternate, repeated
    ``--repeats`` times, so that noise from other work hits both. Efficiency counts the budget's
    trials (what was asked for), steady and all in as above; the trials each run actually
    finished are reported too (raw Optuna's workers finish the trials they started after the
    budget was reached).

Run from the repository root (about 9 minutes on a shared 2-core machine)::

    .venv/bin/python benchmarks/bench_scaling.py
    .venv/bin/python benchmarks/bench_scaling.py --part overhead --workers 1 4 16 \\
        --per-worker 15 --sleep 1.0 --storages postgres embedded
    .venv/bin/python benchmarks/bench_scaling.py --part scaling --shapes 16x1x480 16x8x96
    .venv/bin/python benchmarks/bench_scaling.py --part versus --versus-workers 4 8 \\
        --versus-trials 64 --versus-sleep 1.0 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from _study_common import (
    POSTGRES_SERVER,
    STORAGES,
    median,
    new_study,
    print_table,
    throwaway_storage,
    tiny_store,
)

from tuner.storage import open_storage

TRIVIAL_WORKER = Path(__file__).resolve().parent / "trivial_worker.py"
RAW_OPTUNA_WORKER = Path(__file__).resolve().parent / "raw_optuna_worker.py"
LOOPS = {"tuner": TRIVIAL_WORKER, "optuna": RAW_OPTUNA_WORKER}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--part", choices=["overhead", "scaling", "both", "versus"], default="both"
    )
    parser.add_argument("--storages", nargs="+", choices=STORAGES, default=list(STORAGES))
    parser.add_argument(
        "--sleep", type=float, default=1.0, help="seconds per objective (overhead)"
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--per-worker", type=int, default=15, help="trials per worker (overhead)")
    parser.add_argument(
        "--shapes", type=Shape.parse, nargs="+", default=[Shape(16, 1.0, 480), Shape(16, 8.0, 96)],
        help="scaling runs as WORKERSxSECONDSxTRIALS (default: 16x1x480 16x8x96)",
    )  # fmt: skip
    parser.add_argument("--versus-workers", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--versus-trials", type=int, default=64, help="budget (versus)")
    parser.add_argument("--versus-sleep", type=float, default=1.0, help="seconds (versus)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each (versus)")
    parser.add_argument("--server", default=POSTGRES_SERVER, help="Postgres to make DBs on")
    return parser.parse_args()


@dataclass(frozen=True)
class Shape:
    """A scaling run: ``trials`` trials of ``sleep`` seconds over ``workers`` workers."""

    workers: int
    sleep: float
    trials: int

    @classmethod
    def parse(cls, text: str) -> Shape:
        try:
            workers, sleep, trials = text.lower().split("x")
            return cls(int(workers), float(sleep), int(trials))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not WORKERSxSECONDSxTRIALS") from None

    @property
    def ideal(self) -> float:
        return self.trials * self.sleep / self.workers


@dataclass(frozen=True)
class Run:
    reports: list[dict[str, Any]]  # each worker's JSON line
    startup: float  # launch until every worker was ready (imports, connection, study loaded)
    steady: float  # all workers started together until the last trial ended
    exited: float  # all workers started together until the last one exited
    complete: int  # trials the study holds as COMPLETE afterwards

    @property
    def trials(self) -> int:
        return sum(sum(r["trials"].values()) for r in self.reports)

    @property
    def wall(self) -> float:
        return self.startup + self.exited


def run_workers(
    url: str,
    study: str,
    workers: int,
    sleep: float,
    scratch: Path,
    max_trials: int | None,
    worker: Path = TRIVIAL_WORKER,
) -> Run:
    """Start ``workers`` trivial workers, let them loop at once when all are ready, wait."""
    folder = Path(tempfile.mkdtemp(prefix=f"{study}-", dir=scratch))  # this run's own files
    go = folder / "go"
    command = [sys.executable, str(worker), study, "--storage", url, "--sleep", str(sleep),
               "--start-file", str(go)]  # fmt: skip
    if max_trials is not None:
        command += ["--max-trials", str(max_trials)]
    logs = [(folder / f"{i}.out", folder / f"{i}.err") for i in range(workers)]
    launched = time.perf_counter()
    processes = []
    for out, err in logs:
        with out.open("w") as stdout, err.open("w") as stderr:
            processes.append(subprocess.Popen(command, stdout=stdout, stderr=stderr))
    while len(list(folder.glob("go.ready-*"))) < workers:
        if any(process.poll() is not None for process in processes):
            break  # a worker died getting ready: reported below
        time.sleep(0.05)
    go.touch()
    started, clock = time.perf_counter(), datetime.now()  # Optuna stamps trials with this clock
    for process in processes:
        process.wait()
    ended = time.perf_counter()
    reports = []
    for process, (out, err) in zip(processes, logs, strict=True):
        if process.returncode != 0:
            tail = err.read_text()[-3000:]
            raise RuntimeError(f"a worker failed ({process.returncode}):\n{tail}")
        reports.append(json.loads(out.read_text().strip().splitlines()[-1]))
    storage = open_storage(url)
    trials = optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
    storage.engine.dispose()
    last = max(t.datetime_complete for t in trials if t.datetime_complete is not None)
    complete = sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    return Run(
        reports, started - launched, (last - clock).total_seconds(), ended - started, complete
    )


def overhead_row(url: str, kind: str, workers: int, args: argparse.Namespace, store: Path,
                 scratch: Path) -> list[Any]:  # fmt: skip
    """N workers run exactly ``--per-worker`` trials each; their loops' time outside the sleep."""
    study = f"overhead-{workers}"
    new_study(url, study, store, trials=workers * args.per_worker)
    run = run_workers(url, study, workers, args.sleep, scratch, args.per_worker)
    outside = [1 - r["sleep_seconds"] / r["wall_seconds"] for r in run.reports]
    in_loop = [1 - r["objective_seconds"] / r["wall_seconds"] for r in run.reports]
    per_trial = [
        1000 * (r["wall_seconds"] - r["sleep_seconds"]) / sum(r["trials"].values())
        for r in run.reports
    ]
    print(f"overhead {kind} {workers} workers: {100 * median(outside):.1f} %", flush=True)
    return [
        kind, workers, args.per_worker, f"{args.sleep:g}", f"{100 * median(outside):.1f}",
        f"{100 * max(outside):.1f}", f"{100 * median(in_loop):.1f}", f"{median(per_trial):.0f}",
    ]  # fmt: skip


def scaling_row(url: str, kind: str, shape: Shape, store: Path, scratch: Path) -> list[Any]:
    """``shape.trials`` trials shared by ``shape.workers`` workers; efficiency two ways."""
    study = f"scaling-{shape.workers}x{shape.sleep:g}"
    new_study(url, study, store, trials=shape.trials)
    run = run_workers(url, study, shape.workers, shape.sleep, scratch, max_trials=None)
    if run.trials != shape.trials:
        raise RuntimeError(f"the workers ran {run.trials} trials, not {shape.trials}")
    counts = [sum(r["trials"].values()) for r in run.reports]
    print(f"scaling {kind} {study}: {100 * shape.ideal / run.steady:.1f} % steady", flush=True)
    return [
        kind, shape.workers, f"{shape.sleep:g}", shape.trials, f"{shape.ideal:.0f}",
        f"{run.steady:.1f}", f"{100 * shape.ideal / run.steady:.1f}", f"{run.startup:.1f}",
        f"{run.wall:.1f}", f"{100 * shape.ideal / run.wall:.1f}", f"{min(counts)}-{max(counts)}",
    ]  # fmt: skip


def versus_runs(
    args: argparse.Namespace, store: Path, scratch: Path
) -> dict[tuple[int, str], list[Run]]:
    """Each worker count run by tuner's loop and raw Optuna's in turn, ``--repeats`` times."""
    runs: dict[tuple[int, str], list[Run]] = {}
    for repeat in range(args.repeats):
        for workers in args.versus_workers:
            loops = list(LOOPS.items())
            if repeat % 2:
                loops.reverse()  # who goes first alternates too
            for loop, worker in loops:
                with throwaway_storage("postgres", scratch, args.server) as url:
                    study = f"versus-{loop}-{workers}"
                    new_study(url, study, store, trials=args.versus_trials)
                    run = run_workers(
                        url, study, workers, args.versus_sleep, scratch, None, worker
                    )
                runs.setdefault((workers, loop), []).append(run)
                ideal = args.versus_trials * args.versus_sleep / workers
                print(
                    f"versus {loop} {workers} workers, run {repeat + 1}: "
                    f"{100 * ideal / run.steady:.1f} % steady, {100 * ideal / run.wall:.1f} % "
                    f"all in, {run.complete} trials finished",
                    flush=True,
                )
    return runs


def versus_rows(args: argparse.Namespace, runs: dict[tuple[int, str], list[Run]]) -> list[Any]:
    rows: list[Any] = []
    for (workers, loop), repeated in runs.items():
        ideal = args.versus_trials * args.versus_sleep / workers
        steady = [100 * ideal / run.steady for run in repeated]
        all_in = [100 * ideal / run.wall for run in repeated]
        finished = sorted(run.complete for run in repeated)
        rows.append([
            loop, workers, f"{args.versus_sleep:g}", args.versus_trials, f"{ideal:.0f}",
            f"{median([r.steady for r in repeated]):.1f}", f"{median(steady):.1f}",
            f"{min(steady):.1f}-{max(steady):.1f}",
            f"{median([r.startup for r in repeated]):.1f}",
            f"{median([r.wall for r in repeated]):.1f}", f"{median(all_in):.1f}",
            f"{min(all_in):.1f}-{max(all_in):.1f}", ", ".join(map(str, finished)),
        ])  # fmt: skip
    return sorted(rows, key=lambda row: (row[1], row[0] != "tuner"))


def main() -> None:
    args = parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    overhead: list[Any] = []
    scaling: list[Any] = []
    versus: list[Any] = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as folder, ExitStack() as stack:
        scratch = Path(folder)
        store = tiny_store(scratch / "features")
        urls = {
            kind: stack.enter_context(throwaway_storage(kind, scratch, args.server))
            for kind in (args.storages if args.part != "versus" else [])
        }
        # The storages take turns at each step, so that noise from other work hits both alike.
        if args.part in ("overhead", "both"):
            for workers in args.workers:
                for kind, url in urls.items():
                    overhead.append(overhead_row(url, kind, workers, args, store, scratch))
        if args.part in ("scaling", "both"):
            for shape in args.shapes:
                for kind, url in urls.items():
                    scaling.append(scaling_row(url, kind, shape, store, scratch))
        if args.part == "versus":
            versus = versus_rows(args, versus_runs(args, store, scratch))
    print(
        f"\n{os.cpu_count()} CPUs; load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after; TPE sampler (tuner's default); trivial objective\n"
    )
    if overhead:
        print("Orchestration overhead: share of each worker's loop wall time outside the sleep")
        print()
        print_table(
            ["storage", "workers", "trials each", "sleep s", "overhead % (median)", "worst %",
             "outside run_trials' objective %", "ms/trial"],
            overhead,
        )  # fmt: skip
        print()
    if scaling:
        print("Scaling efficiency: trials x seconds / (workers x wall)")
        print()
        print_table(
            ["storage", "workers", "trial s", "trials", "ideal s", "steady s", "efficiency %",
             "start-up s", "all in s", "efficiency all in %", "trials/worker"],
            scaling,
        )  # fmt: skip
    if versus:
        print(f"tuner against raw Optuna on Postgres, median of {args.repeats} runs each")
        print("(efficiency: budget x seconds / (workers x wall); finished: COMPLETE trials)")
        print()
        print_table(
            ["loop", "workers", "trial s", "budget", "ideal s", "steady s", "efficiency %",
             "range", "start-up s", "all in s", "efficiency all in %", "range", "finished"],
            versus,
        )  # fmt: skip


if __name__ == "__main__":
    main()
