"""A fault run: real workers on a real Postgres study, killed at random, the database restarted
and stopped, until the budget is met. Then every slot must have ended for a reason.

Too long for the test suite (10-20 minutes on 2 shared cores). It starts a throwaway
PostgreSQL cluster (``tests.pg.throwaway_cluster``), creates a study of ``--trials`` trials of
``--epochs`` epochs on a tiny synthetic store (tiny model: each epoch is fast; the faults are
what the run is about), and keeps ``--workers`` ``tuner worker`` processes running (heartbeat
2 s, grace 20 s, shared checkpoints). Meanwhile:

- every 5-15 s (uniform, seeded) a worker is killed with SIGKILL, ``--kills`` times at most:
  with probability 3/4 one that is running a trial (at whatever point it is: an epoch, a
  checkpoint write, a database call), else any live one (starting up, asking, idle). A killed
  worker is replaced by a new one, as a cluster scheduler would;
- after ``--restart-at`` kills the database is restarted (``pg_ctl stop -m fast``, start), and
  after ``--stop-at`` kills it is stopped for ``--stop-seconds`` and started again.

The run ends when the study's budget is met and the workers have exited. It then checks, and
exits 1 if any check fails: every slot is COMPLETE or PRUNED, or FAIL for a training error
that it names, or listed by ``tuner status`` as given up after the study's ``max_retries``
with its reason; no slot is left owed a retry; nothing is RUNNING or WAITING; trial numbers
are unique and contiguous. It prints a Markdown table of what happened, then the status.

    PYTHONPATH=. .venv/bin/python benchmarks/fault_run.py [--workers 3] [--trials 20]
        [--epochs 80] [--kills 25] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.pg
from benchmarks._study_common import print_table, tiny_store
from tests.pg import Cluster, throwaway_cluster
from tuner.storage import RetryingRDBStorage, open_storage
from tuner.study import Budget, group_slots, load_settings

HEARTBEAT = {"TUNER_HEARTBEAT_INTERVAL": "2", "TUNER_HEARTBEAT_GRACE": "20"}


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    log: IO[bytes]
    started: float = field(default_factory=time.monotonic)


@dataclass
class Faults:
    kills: int = 0
    kills_mid_trial: int = 0
    restarts_of_workers: int = 0
    database_events: list[str] = field(default_factory=list)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=80)
    parser.add_argument("--kills", type=int, default=25)
    parser.add_argument("--restart-at", type=int, default=8, help="restart the db after N kills")
    parser.add_argument("--stop-at", type=int, default=16, help="stop the db after N kills")
    parser.add_argument("--stop-seconds", type=float, default=8.0)
    parser.add_argument("--cases", type=int, default=200, help="cases of the synthetic store")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=3600, help="give up after N s")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    scratch = Path(tempfile.mkdtemp(prefix="tuner-fault-run-"))
    with throwaway_cluster() as cluster:
        cluster.sql("CREATE DATABASE tuner")
        env = {
            **os.environ,
            **HEARTBEAT,
            "TUNER_STORAGE": cluster.url(database="tuner"),
            "PGPASSWORD": cluster.password,
            "PYTHONUNBUFFERED": "1",
        }
        create(scratch, env, args)
        started = time.monotonic()
        faults = run(cluster, scratch, env, args)
        wall = time.monotonic() - started
        status = subprocess.run(
            [sys.executable, "-m", "tuner", "status", "s"],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        admin = open_storage(cluster.admin_url("tuner"), retry_seconds=60)
        trials = optuna.load_study(study_name="s", storage=admin).get_trials()
        max_retries = load_settings(admin, "s").max_retries
        logs = "".join(p.read_text(errors="replace") for p in scratch.glob("worker-*.log"))
        problems = check(trials, args.trials, max_retries, status.stdout)
        report(trials, problems, faults, wall, max_retries, logs, args)
        print("\n`tuner status s` at the end:\n\n```\n" + status.stdout.rstrip() + "\n```")
    if problems:
        print("\nFAILED:\n" + "\n".join(f"- {p}" for p in problems))
        print(f"(worker logs kept in {scratch})")
        sys.exit(1)
    print("\nall checks passed")


def create(scratch: Path, env: dict[str, str], args: argparse.Namespace) -> None:
    store = tiny_store(scratch / "features", cases=args.cases)
    config = scratch / "base.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": {"features": str(store)},
                "model": {"embed_dim": 8, "attn_dim": 4},
                "train": {
                    "epochs": args.epochs,
                    "batch_cases": 8,
                    "early_stopping": None,
                    "device": "cpu",
                },
            }
        )
    )
    space = scratch / "space.yaml"
    space.write_text(
        yaml.safe_dump(
            {
                "train.lr": {"type": "float", "low": 1.0e-4, "high": 1.0e-2, "log": True},
                "model.dropout": {"type": "float", "low": 0.0, "high": 0.5},
            }
        )
    )
    subprocess.run(
        [sys.executable, "-m", "tuner", "study", "create", "s", "--features", str(store),
         "--config", str(config), "--space", str(space), "--trials", str(args.trials),
         "--pruner", "none", "--checkpoints", str(scratch / "checkpoints")],
        env=env, check=True, capture_output=True,
    )  # fmt: skip


def run(cluster: Cluster, scratch: Path, env: dict[str, str], args: argparse.Namespace) -> Faults:
    rng = random.Random(args.seed)
    faults = Faults()
    spawned = 0
    admin = open_storage(cluster.admin_url("tuner"), retry_seconds=120)

    def spawn() -> Worker:
        nonlocal spawned
        log = (scratch / f"worker-{spawned:03d}.log").open("wb")
        spawned += 1
        command = [sys.executable, "-m", "tuner", "worker", "s", "--device", "cpu",
                   "--threads", "1", "--poll", "1"]  # fmt: skip
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        return Worker(process, log)

    workers = [spawn() for _ in range(args.workers)]
    deadline = time.monotonic() + args.timeout
    next_kill = time.monotonic() + rng.uniform(5, 15)
    while any(w.process.poll() is None for w in workers):
        if time.monotonic() > deadline:
            for w in workers:
                w.process.kill()
            raise SystemExit(f"the run did not finish in {args.timeout:.0f} s")
        time.sleep(0.2)
        for i, w in enumerate(workers):
            code = w.process.poll()
            if code is not None and code != 0:  # crashed or killed: a scheduler starts another
                w.log.close()
                workers[i] = spawn()
                faults.restarts_of_workers += 1
        if faults.kills < args.kills and time.monotonic() >= next_kill:
            alive = [w for w in workers if w.process.poll() is None]
            training = [w for w in alive if owns_a_running_trial(admin, w.process.pid)]
            if alive:
                # mostly a worker in the middle of a trial (starting up takes a while here)
                victim = rng.choice(training if training and rng.random() < 0.75 else alive)
                faults.kills_mid_trial += victim in training
                victim.process.send_signal(signal.SIGKILL)
                victim.process.wait()
                faults.kills += 1
                print(f"kill {faults.kills}: worker {victim.process.pid}", flush=True)
            next_kill = time.monotonic() + rng.uniform(5, 15)
            if faults.kills == args.restart_at:
                cluster.stop("fast")
                cluster.start()
                faults.database_events.append(f"restart after kill {faults.kills}")
                print("database restarted", flush=True)
                admin = open_storage(cluster.admin_url("tuner"), retry_seconds=120)
            if faults.kills == args.stop_at:
                cluster.stop("fast")
                time.sleep(args.stop_seconds)
                cluster.start()
                faults.database_events.append(
                    f"stopped {args.stop_seconds:.0f} s after kill {faults.kills}"
                )
                print(f"database stopped for {args.stop_seconds:.0f} s", flush=True)
                admin = open_storage(cluster.admin_url("tuner"), retry_seconds=120)
    for w in workers:
        w.log.close()
    return faults


def owns_a_running_trial(storage: RetryingRDBStorage, pid: int) -> bool:
    study = optuna.load_study(study_name="s", storage=storage)
    return any(
        t.state == TrialState.RUNNING and str(t.user_attrs.get("worker", "")).endswith(f":{pid}")
        for t in study.get_trials(deepcopy=False)
    )


def check(trials: list[FrozenTrial], budget: int, max_retries: int, status: str) -> list[str]:
    problems = []
    numbers = sorted(t.number for t in trials)
    if numbers != list(range(len(trials))):
        problems.append(f"trial numbers are not unique and contiguous: {numbers}")
    left = [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    if left:
        problems.append(f"trials left running or waiting: {left}")
    slots = group_slots(trials)
    if len(slots) != budget:
        problems.append(f"{len(slots)} slots, not the budget of {budget}")
    for slot in slots:
        state = slot.state(max_retries)
        latest = slot.latest
        if state in ("running", "waiting", "retry due"):
            problems.append(f"slot {slot.number} ended {state}")
        elif state == "gave up" or latest.state == TrialState.FAIL:
            line = slot.describe(max_retries)
            if line is None or line not in status:
                problems.append(f"slot {slot.number} failed but tuner status does not say why")
    counted = Budget.count(trials, budget, max_retries=max_retries)
    if counted.done != budget or counted.active:
        problems.append(f"budget: {counted}")
    return problems


def report(
    trials: list[FrozenTrial],
    problems: list[str],
    faults: Faults,
    wall: float,
    max_retries: int,
    logs: str,
    args: argparse.Namespace,
) -> None:
    slots = group_slots(trials)
    outcomes = Counter(
        "gave up" if s.state(max_retries) == "gave up" else s.latest.state.name.lower()
        for s in slots
    )
    failures = Counter(
        str(t.system_attrs.get("tuner:failure", "?")) for t in trials if t.state == TrialState.FAIL
    )
    resumed = [t for t in trials if "resumed_from_epoch" in t.user_attrs]
    rows = [
        ("workers, trials x epochs", f"{args.workers}, {args.trials} x {args.epochs}"),
        ("wall time", f"{wall / 60:.1f} min"),
        ("SIGKILLs (of a worker with a running trial)",
         f"{faults.kills} ({faults.kills_mid_trial})"),
        ("database", "; ".join(faults.database_events) or "none"),
        ("worker processes started", str(args.workers + faults.restarts_of_workers)),
        ("trials (attempts)", str(len(trials))),
        ("failed attempts by cause", ", ".join(f"{k} {v}" for k, v in sorted(failures.items()))),
        ("retries resumed from a checkpoint", str(len(resumed))),
        ("slots by outcome", ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()))),
        ("most attempts of a slot", str(max(len(s.attempts) for s in slots))),
        ("'gave up' log lines (slots that gave up)",
         f"{logs.count(' gave up after ')} ({outcomes.get('gave up', 0)})"),
        ("left RUNNING or WAITING",
         str(sum(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials))),
        ("checks failed", str(len(problems))),
    ]  # fmt: skip
    print()
    print_table(["", "fault run"], rows)
    print("\n" + json.dumps(dict(rows)))


if __name__ == "__main__":
    main()
