"""``tuner slurm``: an sbatch array script whose tasks run workers against the same Postgres."""

from __future__ import annotations

import re
import shlex

from tuner.errors import DeploymentError
from tuner.storage import resolve_url
from tuner.study._names import job_label

__all__ = ["slurm_script"]


def slurm_script(
    study: str,
    *,
    workers: int,
    storage: str | None,
    gpus_per_worker: int = 1,
    time_limit: str = "12:00:00",
    cpus_per_task: int = 8,
    partition: str | None = None,
) -> str:
    """The script; one array task per worker, each running one worker per GPU it gets."""
    if workers < 1:
        raise DeploymentError(
            f"workers must be at least 1, but got {workers}", params=("workers",)
        )
    if gpus_per_worker < 1:
        raise DeploymentError(
            f"gpus_per_worker must be at least 1, but got {gpus_per_worker}",
            params=("gpus_per_worker",),
        )
    if not re.fullmatch(r"(\d+-)?\d{1,3}:\d\d:\d\d", time_limit):
        raise DeploymentError(
            f"time_limit must look like HH:MM:SS or D-HH:MM:SS, but got {time_limit!r}",
            params=("time_limit",),
        )
    resolved = resolve_url(storage, create=False)
    if resolved.kind != "postgresql":
        raise DeploymentError(
            "a cluster needs a shared PostgreSQL study database; pass storage "
            "postgresql://USER@HOST:5432/DB (or set TUNER_STORAGE)",
            params=("storage",),
        )
    if partition is not None and not re.fullmatch(r"[\w.,-]+", partition, re.ASCII):
        raise DeploymentError(
            f"partition must be a SLURM partition name (letters, digits, . , - _), but got "
            f"{partition!r}",
            params=("partition",),
        )
    name = shlex.quote(study)
    job = f"tuner-{job_label(study)}"  # no shell reads #SBATCH lines: no quoting helps there
    if gpus_per_worker == 1:
        run = f"srun tuner worker {name} --device cuda"
    else:
        gpu_list = ",".join(str(i) for i in range(gpus_per_worker))
        run = f"srun tuner launch {name} --gpus {gpu_list}"
    partition_line = f"#SBATCH --partition={partition}\n" if partition else ""
    return f"""#!/bin/bash
#SBATCH --job-name={job}
#SBATCH --array=0-{workers - 1}
#SBATCH --gres=gpu:{gpus_per_worker}
#SBATCH --cpus-per-task={cpus_per_task}
#SBATCH --time={time_limit}
#SBATCH --signal=TERM@120
#SBATCH --requeue
#SBATCH --output={job}-%A_%a.log
{partition_line}#
# Workers of study {study!r}. Submit with: sbatch THIS_FILE
# SLURM sends SIGTERM two minutes before the time limit: the running trial is then failed as
# "interrupted" and queued for another worker, so a pre-empted task loses no trial.
# The database password is read from PGPASSWORD or from the file named by
# TUNER_DB_PASSWORD_FILE in the job's environment; it is never written here.
set -euo pipefail
export TUNER_STORAGE={shlex.quote(resolved.public)}
{run}
"""
