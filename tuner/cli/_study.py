"""``tuner study create|delete|list``, ``worker``, ``launch``, ``slurm``, ``k8s``, ``status``,
``export`` and ``dashboard``."""

from __future__ import annotations

import contextlib
import logging
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from tuner.cli._options import PATH, explicit, tuner_command
from tuner.study._choices import PRUNERS, SAMPLERS

F = TypeVar("F", bound=Callable[..., Any])
logger = logging.getLogger("tuner.cli")

PRUNER = click.Choice(PRUNERS)
SAMPLER = click.Choice(SAMPLERS)


def storage_option(f: F) -> F:
    option = click.option(
        "--storage", default=None, metavar="URL",
        help="Study storage: postgresql://USER@HOST:PORT/DB or a SQLite file (default: "
        "$TUNER_STORAGE, else the embedded store storage/tuner.db). Give the password with "
        "PGPASSWORD or a file named by TUNER_DB_PASSWORD_FILE, not in the URL.",
    )  # fmt: skip
    return option(f)


def _quiet_optuna() -> None:
    """Optuna logs every study and trial at INFO; tuner says what matters itself."""
    import optuna

    if not logging.getLogger("tuner").isEnabledFor(logging.DEBUG):
        optuna.logging.set_verbosity(optuna.logging.WARNING)


def _open(url: str | None, *, interactive: bool = True, create: bool = False) -> Any:
    """The study storage; only a command that writes a study (``create``) may set one up."""
    from tuner.storage import open_storage

    _quiet_optuna()
    return open_storage(url, create=create, interactive=interactive)


@click.group()
def study() -> None:
    """Create, list and delete studies."""


@study.command()
@click.argument("name")
@click.option("--features", type=PATH, required=True, help="Feature store the trials train on.")
@click.option("--space", type=PATH, default=None, help="Search space YAML (default: built in).")
@click.option("--config", type=PATH, default=None, help="Base run config (default: defaults).")
@click.option(
    "--trials", default=50, show_default=True,
    help="Budget of finished trials; given again, larger, it raises an existing study's.",
)  # fmt: skip
@click.option("--pruner", type=PRUNER, default="median", show_default=True)
@click.option("--sampler", type=SAMPLER, default="tpe", show_default=True)
@click.option("--seed", default=0, show_default=True, help="Seed of the sampler.")
@click.option(
    "--max-retries", type=int, default=3, show_default=True,
    help="Retries of a trial whose worker died (a stale heartbeat); after that its slot gives "
    "up. Interrupted trials (SIGTERM, Ctrl-C, preemption) are retried without counting.",
)  # fmt: skip
@click.option(
    "--checkpoints", type=PATH, default=None,
    help="Folder shared by all workers where trials save their state after each epoch, so a "
    "retried trial continues where it stopped (default on the embedded store: "
    "storage/checkpoints; on Postgres: none).",
)  # fmt: skip
@storage_option
def create(
    name: str,
    features: Path,
    space: Path | None,
    config: Path | None,
    trials: int,
    pruner: str,
    sampler: str,
    seed: int,
    max_retries: int,
    checkpoints: Path | None,
    storage: str | None,
) -> None:
    """Create study NAME, or re-open it: minimise the validation loss (val_loss).

    Re-opening checks the options you give against the study's (those left out keep the
    study's) and raises its budget to a larger --trials; running workers pick it up.
    """
    from tuner.study import check_study_name, create_study

    check_study_name(name)  # before the storage is opened, which may create it
    opened = _open(storage, create=True)
    given = explicit(
        click.get_current_context(), trials=trials, pruner=pruner, sampler=sampler, seed=seed,
        max_retries=max_retries,
    )  # fmt: skip
    result = create_study(
        opened, name, features, space=space, config=config, checkpoints=checkpoints, **given
    )
    settings = result.settings
    what = f"{settings.sampler} sampler, {settings.pruner} pruner, storage {opened.public_url}"
    if result.raised_from is not None:
        said = f"budget raised from {result.raised_from} to {settings.budget} trials; {what}"
    else:
        verb = "created" if result.created else "already exists (same settings)"
        said = f"{verb}: {settings.budget} trials, {what}"
    worker = shlex.join([*tuner_command(), "worker", name, *_storage_args(opened)])
    click.echo(f"study {name} {said}\nstart workers with: {worker}")


def _storage_args(opened: Any) -> list[str]:
    """``--storage URL`` (without a password) for a printed command, unless the storage is the
    embedded default, which the command finds by itself."""
    from tuner.storage import EMBEDDED_PATH

    url = opened.engine.url
    if url.get_backend_name() == "sqlite" and url.database == str(EMBEDDED_PATH.resolve()):
        return []
    return ["--storage", opened.public_url]


@study.command("list")
@storage_option
def list_(storage: str | None) -> None:
    """List the studies in the storage with their trial counts."""
    from tuner.study import list_studies

    opened = _open(storage)
    summaries = list_studies(opened)
    if not summaries:
        click.echo(f"no studies in {opened.public_url}")
    for summary in summaries:
        click.echo(summary.describe())


@study.command()
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@storage_option
def delete(name: str, yes: bool, storage: str | None) -> None:
    """Delete study NAME and all its trials."""
    from tuner.study import delete_study

    def confirm() -> None:
        if not yes:
            click.confirm(f"delete study {name} and all its trials?", abort=True)

    delete_study(_open(storage), name, confirm=confirm)
    click.echo(f"deleted study {name}")


@click.command()
@click.argument("name")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--features", type=PATH, default=None, help="The study's store at another path.")
@click.option("--threads", type=int, default=None, help="CPU threads for torch.")
@click.option("--max-trials", type=int, default=None, help="Stop after this many trials.")
@click.option("--poll", default=5.0, show_default=True, help="Seconds between budget checks.")
@click.option("--checkpoints", type=PATH, default=None, help="The study's checkpoint folder here.")
@storage_option
def worker(
    name: str,
    device: str,
    features: Path | None,
    threads: int | None,
    max_trials: int | None,
    poll: float,
    checkpoints: Path | None,
    storage: str | None,
) -> None:
    """Run trials of study NAME until its budget of finished trials is reached."""
    from tuner.cli._options import progress_enabled
    from tuner.study import Interrupted, WorkerOptions, run_worker

    options = WorkerOptions(
        device=device, features=features, poll_seconds=poll, max_trials=max_trials,
        threads=threads, checkpoints=checkpoints, progress=progress_enabled(),
    )  # fmt: skip
    try:
        report = run_worker(_open(storage, interactive=False), name, options)
    except Interrupted as stop:
        logger.warning("worker stopped by %s", stop)
        raise click.exceptions.Exit(128 + stop.signum) from None
    done = ", ".join(f"{v} {k}" for k, v in report.trials.items()) or "no trials"
    click.echo(f"worker done: {done}")


@click.command()
@click.argument("name")
@click.option("--gpus", default=None, help="GPU numbers, one worker each: 0,1,2,3.")
@click.option("--per-gpu", default=1, show_default=True, help="Workers per GPU.")
@click.option("--workers", type=int, default=None, help="Number of workers (with --device).")
@click.option("--device", default="cpu", show_default=True, help="Device of --workers.")
@click.option("--features", type=PATH, default=None, help="The study's store at another path.")
@click.option("--max-restarts", default=3, show_default=True, help="Restarts per crashed worker.")
@storage_option
def launch(
    name: str,
    gpus: str | None,
    per_gpu: int,
    workers: int | None,
    device: str,
    features: Path | None,
    max_restarts: int,
    storage: str | None,
) -> None:
    """Start and supervise local workers of study NAME; Ctrl-C stops them all."""
    from tuner.errors import StorageError
    from tuner.storage import resolve_url
    from tuner.study import launch_workers, plan_workers, preflight, study_status

    plans = plan_workers(gpus=gpus, per_gpu=per_gpu, workers=workers, device=device)
    opened = _open(storage, interactive=False)
    url = resolve_url(storage, create=False)
    preflight(opened, name, plans, features=features)
    target = url.url.render_as_string(hide_password=False) if storage else None
    logger.info("launching %d worker(s) of study %s on %s", len(plans), name, url.public)
    extra = ("--features", str(features)) if features is not None else ()
    status = launch_workers(
        name, plans, storage_url=target, extra_args=extra, max_restarts=max_restarts
    )
    try:
        click.echo(f"launch done: {study_status(opened, name).summary()}")
    except StorageError as error:  # the workers' status says more than an outage at the end
        logger.warning("no summary of study %s: %s", name, error)
    if status:
        raise click.exceptions.Exit(status)


@click.command()
@click.argument("name")
@click.option("--workers", type=int, required=True, help="Array tasks (one worker each).")
@click.option("--gpus-per-worker", default=1, show_default=True, help="GPUs per task.")
@click.option("--time", "time_limit", default="12:00:00", show_default=True, help="HH:MM:SS.")
@click.option("--cpus-per-task", default=8, show_default=True)
@click.option("--partition", default=None, help="SLURM partition.")
@storage_option
def slurm(
    name: str,
    workers: int,
    gpus_per_worker: int,
    time_limit: str,
    cpus_per_task: int,
    partition: str | None,
    storage: str | None,
) -> None:
    """Print an sbatch array script that runs workers of study NAME on a cluster."""
    from tuner.study import slurm_script

    script = slurm_script(
        name, workers=workers, storage=storage, gpus_per_worker=gpus_per_worker,
        time_limit=time_limit, cpus_per_task=cpus_per_task, partition=partition,
    )  # fmt: skip
    click.echo(script, nl=False)


@click.command()
@click.argument("name")
@click.option("--workers", type=int, required=True, help="Worker pods.")
@click.option("--gpus-per-worker", default=1, show_default=True, help="GPUs per pod.")
@click.option("--cpus-per-worker", default=8, show_default=True, help="CPUs requested per pod.")
@click.option(
    "--image", default="tuner:latest", show_default=True,
    help="Image built from the Dockerfile, pushed where the cluster pulls from.",
)  # fmt: skip
@click.option(
    "--features-claim", default="tuner-features", show_default=True, metavar="PVC",
    help="PersistentVolumeClaim holding the feature store (mounted read-only).",
)  # fmt: skip
@click.option(
    "--checkpoints-claim", default=None, metavar="PVC",
    help="ReadWriteMany claim for the trials' checkpoints (default: none).",
)  # fmt: skip
@click.option(
    "--secret", default="tuner-db", show_default=True,
    help="Secret whose key 'password' holds the database password.",
)  # fmt: skip
@click.option(
    "--max-restarts", default=3, show_default=True,
    help="Failed pods replaced per worker (the Job's backoffLimit is this times --workers).",
)  # fmt: skip
@click.option("--trials", default=50, show_default=True, help="Budget of the study.")
@click.option("--pruner", type=PRUNER, default="median", show_default=True)
@click.option("--sampler", type=SAMPLER, default="tpe", show_default=True)
@click.option("--space", type=PATH, default=None, help="Search space YAML (default: built in).")
@click.option("--config", type=PATH, default=None, help="Base run config (default: defaults).")
@click.option("--out", type=PATH, default=None, help="Write the manifests here (default: print).")
@storage_option
def k8s(
    name: str,
    workers: int,
    gpus_per_worker: int,
    cpus_per_worker: int,
    image: str,
    features_claim: str,
    checkpoints_claim: str | None,
    secret: str,
    max_restarts: int,
    trials: int,
    pruner: str,
    sampler: str,
    space: Path | None,
    config: Path | None,
    out: Path | None,
    storage: str | None,
) -> None:
    """Write Kubernetes manifests for study NAME: create Job, worker Job, read-only dashboard."""
    from tuner.study import K8sOptions, k8s_manifests

    options = K8sOptions(
        workers=workers, gpus_per_worker=gpus_per_worker, cpus_per_worker=cpus_per_worker,
        image=image, features_claim=features_claim, checkpoints_claim=checkpoints_claim,
        secret=secret, max_restarts=max_restarts, trials=trials, pruner=pruner,
        sampler=sampler, space=space, config=config,
    )  # fmt: skip
    manifests = k8s_manifests(name, options, storage=storage)
    if out is None:
        click.echo(manifests, nl=False)
        return
    out.write_text(manifests)
    click.echo(f"wrote {out}: kubectl apply -f {out}", err=True)


@click.command()
@click.argument("name")
@storage_option
def status(name: str, storage: str | None) -> None:
    """Trials by state, the best so far, running trials, throughput."""
    from tuner.study import study_status

    click.echo(study_status(_open(storage), name).render())


@click.command()
@click.argument("name")
@click.option("--out", type=PATH, default=None, help="Write the best trial's config here.")
@click.option("--trials", "trials_csv", type=PATH, default=None, help="Write all trials as CSV.")
@storage_option
def export(name: str, out: Path | None, trials_csv: Path | None, storage: str | None) -> None:
    """Export the best trial of study NAME as a config for 'tuner train' (and all trials)."""
    from tuner.errors import TunerError
    from tuner.study import export_best, export_trials

    if out is None and trials_csv is None:
        raise TunerError("say what to export: --out best.yaml and/or --trials trials.csv")
    opened = _open(storage)
    if out is not None:
        best = export_best(opened, name, out, storage_url=opened.public_url)
        click.echo(f"wrote {out}: trial {best.number}, val loss {best.value:.4f}")
    if trials_csv is not None:
        n = export_trials(opened, name, trials_csv)
        click.echo(f"wrote {trials_csv}: {n} trials")


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8080, show_default=True, help="Port to listen on.")
@click.option(
    "--read-only", is_flag=True,
    help="Refuse every request but GET and HEAD (405): nobody can delete or change a study.",
)  # fmt: skip
@click.option(
    "--allow-writes", is_flag=True,
    help="Serve the write endpoints on an address other than loopback (behind a proxy with "
    "authentication).",
)  # fmt: skip
@storage_option
def dashboard(
    host: str, port: int, read_only: bool, allow_writes: bool, storage: str | None
) -> None:
    """Serve optuna-dashboard on the study storage (localhost only unless told otherwise)."""
    from tuner.dashboard import check_exposure, is_loopback, serve_dashboard

    check_exposure(host, read_only=read_only, allow_writes=allow_writes)
    opened = _open(storage)
    if not is_loopback(host):
        logger.warning(
            "the dashboard has no authentication and is bound to %s: anyone who reaches this "
            "port sees the studies%s",
            host,
            " (read-only)"
            if read_only
            else " and can edit them; prefer an SSH tunnel or a reverse proxy with authentication",
        )
    mode = " (read-only)" if read_only else ""
    click.echo(
        f"dashboard of {opened.public_url}{mode}: http://{host}:{port}/dashboard/", err=True
    )
    with contextlib.suppress(KeyboardInterrupt):
        serve_dashboard(opened, host=host, port=port, read_only=read_only)


@click.command()
@click.argument("folder", type=PATH, default=Path("tuner-quickstart"))
@click.option("--cases", default=60, show_default=True, help="Cases of the demo dataset.")
@click.option("--trials", default=16, show_default=True, help="Budget of the study.")
@click.option("--workers", default=2, show_default=True, help="Local worker processes.")
@click.option("--epochs", default=20, show_default=True, help="Most epochs per trial.")
def quickstart(folder: Path, cases: int, trials: int, workers: int, epochs: int) -> None:
    """The whole flow on the embedded store with a demo dataset, in a few minutes on a CPU.

    Demo data, features, a study, local workers, export of the best trial, final training.
    """
    from tuner.cli._options import progress_enabled
    from tuner.quickstart import QuickstartOptions, next_steps, run_quickstart

    _quiet_optuna()
    options = QuickstartOptions(
        folder=folder, cases=cases, trials=trials, workers=workers, epochs=epochs,
        progress=progress_enabled(),
    )  # fmt: skip
    result = run_quickstart(options, click.echo)
    click.echo("next steps:")
    for what, command in next_steps(result, tuner_command(), Path.cwd()):
        click.echo(f"  # {what}\n  {command}")


@click.command()
@click.argument("name")
@click.option("--out", type=PATH, default=Path("report.html"), show_default=True)
@click.option("--png", type=PATH, default=None, help="Also write each plot as a PNG here.")
@storage_option
def report(name: str, out: Path, png: Path | None, storage: str | None) -> None:
    """Write a self-contained HTML report of study NAME (opens offline)."""
    from tuner.report import write_report

    opened = _open(storage)
    summary = write_report(opened, name, out, storage_url=opened.public_url, png=png)
    click.echo(f"wrote {out}: {len(summary.plots)} plots")
    if summary.pngs:
        click.echo(f"wrote {len(summary.pngs)} PNG files to {png}")
    for title, reason in summary.skipped.items():
        logger.info("left out %s: %s", title, reason)
