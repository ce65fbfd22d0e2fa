"""``tuner quickstart``: the whole flow on the embedded store, in minutes on a laptop CPU.

Demo data -> feature store -> study -> two local worker processes -> export of the best
trial -> final training and test. Run again in the same folder, it reuses what is there (the
study is complete, so the workers stop at once) and trains a new final run.
"""

from __future__ import annotations

import csv
import json
import logging
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from tuner._format import fmt
from tuner.config import DataConfig, ModelConfig, RunConfig, TrainConfig, load_config, save_config
from tuner.data import write_demo_dataset
from tuner.errors import LaunchError
from tuner.features import ExtractOptions, extract_features
from tuner.search import DEFAULT_SPACE
from tuner.storage import open_storage
from tuner.study import create_study, export_best, launch_workers, plan_workers
from tuner.training import Metrics, train_run

__all__ = ["QuickstartOptions", "QuickstartResult", "next_steps", "run_quickstart", "typed_path"]

logger = logging.getLogger(__name__)

STUDY = "quickstart"
QUICK_SPACE = DEFAULT_SPACE.with_name("quick_space.yaml")


@dataclass(frozen=True)
class QuickstartOptions:
    folder: Path = Path("tuner-quickstart")
    cases: int = 60
    trials: int = 16
    workers: int = 2
    epochs: int = 20
    seed: int = 0
    progress: bool = True


@dataclass(frozen=True)
class QuickstartResult:
    storage_url: str
    best_config: Path
    run: Path
    test_metrics: dict[str, float | int | None]
    study: str = STUDY
    case: str | None = None  # a test case of the final run, for `tuner explain --case`


def run_quickstart(options: QuickstartOptions, echo: Callable[[str], None]) -> QuickstartResult:
    folder = options.folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    demo = folder / "demo"

    echo(f"[1/6] demo dataset: {options.cases} cases in {demo}")
    if not (demo / "labels.csv").is_file():
        write_demo_dataset(demo, cases=options.cases, seed=options.seed)

    echo("[2/6] feature store (DenseNet121 with random weights: this machine may be offline)")
    store = extract_features(
        demo / "patches", demo / "labels.csv", folder / "features",
        ExtractOptions(weights="random", seed=options.seed, progress=options.progress),
    )  # fmt: skip

    storage_url = f"sqlite:///{folder / 'storage' / 'tuner.db'}"
    (folder / "storage").mkdir(exist_ok=True)
    base = RunConfig(
        data=DataConfig(features=store.path),
        model=ModelConfig(),
        train=TrainConfig(epochs=options.epochs, early_stopping=6, seed=options.seed),
    )
    save_config(base, folder / "base.yaml", header="# base config of the quickstart study\n")
    echo(f"[3/6] study {STUDY!r}: {options.trials} trials, TPE sampler, median pruner")
    storage = open_storage(storage_url)
    create_study(
        storage, STUDY, store.path, space=QUICK_SPACE, config=folder / "base.yaml",
        trials=options.trials, seed=options.seed,
    )  # fmt: skip

    echo(f"[4/6] {options.workers} local workers run the trials (logs prefixed [w0], [w1], ...)")
    status = launch_workers(
        STUDY, plan_workers(workers=options.workers, device="cpu"), storage_url=storage_url
    )
    if status != 0:
        raise LaunchError(f"the quickstart workers stopped with status {status}; see their logs")

    best_path = folder / "best.yaml"
    best = export_best(storage, STUDY, best_path, storage_url=storage_url)
    echo(f"[5/6] best trial {best.number} (val loss {best.value:.4f}) exported to {best_path}")

    stamp = f"{datetime.now():%Y%m%d-%H%M%S}"
    run = folder / "runs" / f"final-{stamp}"
    untuned = folder / "untuned" / f"base-{stamp}"
    echo(f"[6/6] final training with the best config into {run}, and with the base config")
    echo(f"      (what you would train without tuning) into {untuned}, on the same test cases")
    result = train_run(load_config(best_path), run, progress=options.progress)
    test = result.metrics["test"]
    base_test = train_run(
        load_config(folder / "base.yaml"), untuned, progress=options.progress
    ).metrics["test"]

    echo("")
    echo("best configuration:")
    for key, value in best.params.items():
        echo(f"  {key}: {value:.4g}" if isinstance(value, float) else f"  {key}: {value}")
    echo("")
    for line in side_by_side({"base config": base_test, "best config": test}):
        echo(line)
    echo("test metrics of the final model: " + json.dumps(_rounded(test)))
    echo(f"run folder: {run}")
    return QuickstartResult(storage_url, best_path, run, test, STUDY, _a_test_case(run))


def _a_test_case(run: Path) -> str | None:
    with (run / "predictions.csv").open(newline="") as handle:
        return next((row["case"] for row in csv.DictReader(handle)), None)


def typed_path(path: Path, cwd: Path) -> str:
    """``path`` as a person types it in ``cwd``: relative when it lies below, else absolute."""
    path = path.resolve()
    return (
        str(path.relative_to(cwd.resolve())) if path.is_relative_to(cwd.resolve()) else str(path)
    )


def next_steps(result: QuickstartResult, tuner: list[str], cwd: Path) -> list[tuple[str, str]]:
    """What to run next, as (what it does, command line) that run as printed in ``cwd`` with
    the ``tuner`` command given (``["tuner"]``, ``[".venv/bin/tuner"]``, ...)."""
    database = Path(result.storage_url.removeprefix("sqlite:///"))
    storage = ["--storage", f"sqlite:///{typed_path(database, cwd)}"]
    run = typed_path(result.run, cwd)
    report = typed_path(result.best_config.with_name("report.html"), cwd)
    steps = [
        ("watch the study in optuna-dashboard (http://127.0.0.1:8080/dashboard/)",
         [*tuner, "dashboard", *storage]),
        ("write the study's report, one HTML file",
         [*tuner, "report", result.study, *storage, "--out", report]),
        ("compare the slice attention of the misclassified test cases",
         [*tuner, "explain", run]),
    ]  # fmt: skip
    if result.case is not None:
        steps.append(
            (f"see where the model looks in test case {result.case}",
             [*tuner, "explain", run, "--case", result.case])
        )  # fmt: skip
    return [(what, shlex.join(command)) for what, command in steps]


_SHOWN = (
    ("test AUC", "auc"),
    ("test loss", "loss"),
    ("balanced accuracy", "balanced_accuracy"),
    ("test cases", "n_cases"),
)


def side_by_side(columns: dict[str, dict[str, Any]]) -> list[str]:
    """Test metrics of several runs as a small table, the AUC with its bootstrap interval."""
    cells = [["", *columns]]
    for name, key in _SHOWN:
        cells.append([name, *(_metric(m, key) for m in columns.values())])
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]


def _metric(metrics: dict[str, Any], key: str) -> str:
    if key == "auc":
        return Metrics(**metrics).auc_text()
    return fmt(metrics[key], "{:.4f}")


def _rounded(metrics: dict[str, float | int | None]) -> dict[str, float | int | None]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()}
