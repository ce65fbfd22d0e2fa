"""``tuner launch``: start and supervise local workers, one per GPU (or N on the CPU).

Before any worker starts, :func:`preflight` checks what every worker would check at start-up
(the study, its feature store, the devices), so that a mistake is one line, not a worker
failing the same way on every GPU. Each worker is a ``tuner worker`` process started with
``python -P``, so that a folder named ``tuner`` in the working directory (a clone of the
project, say) cannot shadow the installed package; the storage reaches it through the
environment (``TUNER_STORAGE``), never its argument list. Output lines are prefixed with the
worker's label. A worker that crashes is restarted (at most ``max_restarts`` times), one that
exits with :data:`~tuner.errors.PERMANENT_EXIT_CODE` (its start-up failed for good) is not; one
that exits 0 has seen the budget met. Ctrl-C or SIGTERM stops all workers with SIGTERM (their
trials are queued for retry), then SIGKILL after ``stop_timeout`` seconds.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING

from optuna.storages import BaseStorage

from tuner.errors import PERMANENT_EXIT_CODE, LaunchError, permanent_errors
from tuner.storage import STORAGE_ENV

if TYPE_CHECKING:
    from tuner.study._settings import StudySettings

__all__ = ["WorkerPlan", "launch_workers", "plan_workers", "preflight"]

logger = logging.getLogger(__name__)

WORKER_COMMAND = (sys.executable, "-P", "-m", "tuner", "worker")
"""How a worker starts: ``-P`` keeps the working directory off the import path."""


@dataclass
class WorkerPlan:
    label: str
    device: str
    env: dict[str, str]
    threads: int | None = None
    gpu: int | None = None  # the GPU number, as this process numbers them, of a pinned worker
    restarts: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)


def plan_workers(
    *, gpus: str | None = None, per_gpu: int = 1, workers: int | None = None, device: str = "cpu"
) -> list[WorkerPlan]:
    """One worker per GPU (times ``per_gpu``), pinned with CUDA_VISIBLE_DEVICES, or N workers."""
    if gpus is not None and workers is not None:
        raise LaunchError("give either gpus or workers, not both", params=("gpus", "workers"))
    if gpus is not None:
        ids = [g.strip() for g in gpus.split(",") if g.strip()]
        if not ids or not all(g.isdigit() for g in ids):
            raise LaunchError(
                f"gpus must list GPU numbers like 0,1,2, but got {gpus!r}", params=("gpus",)
            )
        if per_gpu < 1:
            raise LaunchError(
                f"per_gpu must be at least 1, but got {per_gpu}", params=("per_gpu",)
            )
        return [
            WorkerPlan(f"gpu{g}" + (f".{k}" if per_gpu > 1 else ""), "cuda:0",
                       {"CUDA_VISIBLE_DEVICES": _visible_id(int(g))}, gpu=int(g))
            for g in ids
            for k in range(per_gpu)
        ]  # fmt: skip
    count = workers or 1
    if count < 1:
        raise LaunchError(f"workers must be at least 1, but got {count}", params=("workers",))
    threads = max(1, (os.cpu_count() or 1) // count) if device == "cpu" else None
    return [WorkerPlan(f"w{i}", device, {}, threads) for i in range(count)]


def _visible_id(gpu: int) -> str:
    """What pins a worker to GPU number ``gpu`` of this process: inside a job given GPUs 2 and
    3 (``CUDA_VISIBLE_DEVICES=2,3``), GPU 0 is the machine's GPU 2."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [v.strip() for v in visible.split(",")] if visible is not None else []
    return ids[gpu] if gpu < len(ids) else str(gpu)


def preflight(
    storage: BaseStorage, study: str, plans: list[WorkerPlan], *, features: Path | None = None
) -> None:
    """Check once what each worker would check at start-up: the study exists, its feature store
    (at ``features``, else where the study was created) matches it, and the devices exist.

    Its errors are permanent (see :func:`~tuner.errors.permanent_errors`), but for the storage's.
    """
    from tuner.study._settings import load_settings

    with permanent_errors():
        settings = load_settings(storage, study)  # first: a mistyped name needs no torch
        _check_store_and_devices(settings, study, plans, features)


def _check_store_and_devices(
    settings: StudySettings, study: str, plans: list[WorkerPlan], features: Path | None
) -> None:
    from tuner._device import check_gpus, resolve_device
    from tuner.study._worker import open_study_store

    open_study_store(settings, study, features)
    check_gpus(plan.gpu for plan in plans if plan.gpu is not None)
    for device in sorted({plan.device for plan in plans if plan.gpu is None}):
        resolve_device(device)


def launch_workers(
    study: str,
    plans: list[WorkerPlan],
    *,
    storage_url: str | None,
    extra_args: tuple[str, ...] = (),
    max_restarts: int = 3,
    stop_timeout: float = 60.0,
    out: IO[str] | None = None,
) -> int:
    """Run the planned workers until all have stopped; return the launcher's exit status.

    0 when every worker exited 0; 1 when one gave up after its restarts; else
    :data:`~tuner.errors.PERMANENT_EXIT_CODE` when one could not start for good; 130 when
    stopped by a signal.
    """
    out = out or sys.stdout
    lock = threading.Lock()
    stopping = threading.Event()
    readers: list[threading.Thread] = []

    def start(plan: WorkerPlan) -> None:
        env = {**os.environ, **plan.env, "PYTHONUNBUFFERED": "1"}
        if storage_url is not None:
            env[STORAGE_ENV] = storage_url
        command = [*WORKER_COMMAND, study, "--device", plan.device]
        if plan.threads:
            command += ["--threads", str(plan.threads)]
        # its own process group: a Ctrl-C on the terminal reaches the launcher alone, which
        # stops each worker with one SIGTERM (a second signal would stop it at once, unsafely)
        plan.process = subprocess.Popen(
            [*command, *extra_args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            process_group=0,
        )  # fmt: skip
        reader = threading.Thread(target=_forward, args=(plan, out, lock), daemon=True)
        reader.start()
        readers.append(reader)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if not stopping.is_set():
            stopping.set()
            logger.warning("stopping %d worker(s) (%s)", len(plans), signal.Signals(signum).name)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for plan in plans:
            start(plan)
        status = _supervise(plans, start, stopping, max_restarts)
        if stopping.is_set():
            _stop_all(plans, stop_timeout)
            status = 130
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        for reader in readers:
            reader.join(timeout=5)
    return status


def _supervise(
    plans: list[WorkerPlan],
    start: object,
    stopping: threading.Event,
    max_restarts: int,
) -> int:
    failed = permanent = False
    running = list(plans)
    while running and not stopping.is_set():
        time.sleep(0.2)
        for plan in list(running):
            assert plan.process is not None
            code = plan.process.poll()
            if code is None:
                continue
            running.remove(plan)
            if code == 0 or stopping.is_set():
                continue
            if code == PERMANENT_EXIT_CODE:
                logger.error(
                    "worker %s could not start (status %d: a restart would fail the same way, "
                    "see its last line); not restarting it", plan.label, code,
                )  # fmt: skip
                permanent = True
            elif plan.restarts < max_restarts:
                plan.restarts += 1
                logger.warning(
                    "worker %s exited with status %d; restarting it (%d of %d)",
                    plan.label, code, plan.restarts, max_restarts,
                )  # fmt: skip
                start(plan)  # type: ignore[operator]
                running.append(plan)
            else:
                logger.error("worker %s exited with status %d; giving up on it", plan.label, code)
                failed = True
    return 1 if failed else PERMANENT_EXIT_CODE if permanent else 0


def _stop_all(plans: list[WorkerPlan], timeout: float) -> None:
    alive = [p.process for p in plans if p.process is not None and p.process.poll() is None]
    for process in alive:
        process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in alive:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            logger.warning("worker %d did not stop in %.0f s; killing it", process.pid, timeout)
            process.kill()
            process.wait()


def _forward(plan: WorkerPlan, out: IO[str], lock: threading.Lock) -> None:
    process = plan.process
    assert process is not None
    assert process.stdout is not None
    for raw in process.stdout:
        line = raw.decode(errors="replace").rstrip()
        with lock:
            print(f"[{plan.label}] {line}", file=out, flush=True)
