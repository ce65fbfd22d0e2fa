"""``tuner config init`` and ``tuner train``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from tuner.cli._options import PATH, progress_enabled


@click.group()
def config() -> None:
    """Write and check run configs."""


@config.command()
@click.option("--features", type=PATH, required=True, help="Feature store the config trains on.")
@click.option("--out", type=PATH, default=None, help="File to write (default: print it).")
@click.option("--force", is_flag=True, help="Replace an existing file.")
def init(features: Path, out: Path | None, force: bool) -> None:
    """Write a complete default config for a feature store, every key commented."""
    from tuner.config import default_config_yaml
    from tuner.errors import ConfigError
    from tuner.features import FeatureStore

    store = FeatureStore.open(features)
    text = default_config_yaml(store.path.resolve(), checksum=store.checksum)
    if out is None:
        click.echo(text, nl=False)
        return
    if out.exists() and not force:
        raise ConfigError(f"{str(out)!r} already exists; pass --force to replace it")
    out.write_text(text)
    click.echo(f"wrote {out}")


@config.command()
@click.argument("file", type=PATH)
def check(file: Path) -> None:
    """Validate a config file (and that its feature store opens)."""
    from tuner.config import load_config
    from tuner.training import open_store, resolve_splits

    run_config = load_config(file)
    store = open_store(run_config)
    splits = resolve_splits(run_config, store)
    click.echo(f"ok: {file} ({len(splits.splits)} split(s) of {len(store.cases)} cases)")


@click.command()
@click.option("--config", "config_file", type=PATH, required=True, help="Run config (YAML).")
@click.option("--out", type=PATH, default=None, help="Run folder (default: runs/NAME-TIME).")
def train(config_file: Path, out: Path | None) -> None:
    """Train on the train split, stop early on val, test the best model, write the run folder."""
    from tuner.config import load_config
    from tuner.training import default_run_dir, train_run

    run_config = load_config(config_file)
    result = train_run(
        run_config, out or default_run_dir(config_file), progress=progress_enabled()
    )
    metrics = result.metrics
    summary = metrics.get("test") or metrics["mean"]["test"]
    click.echo(f"run folder: {result.out}")
    click.echo("test: " + json.dumps({k: v for k, v in summary.items() if k != "n_cases"}))


@click.command()
@click.argument("run", type=PATH)
@click.option("--features", type=PATH, required=True, help="Feature store of the cohort to score.")
@click.option(
    "--out", type=PATH, default=None, help="Output folder (default: RUN/evaluation-STORE)."
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
def evaluate(run: Path, features: Path, out: Path | None, device: str) -> None:
    """Score the model of run folder RUN on every case of another feature store (an external
    cohort): metrics with the AUC's bootstrap interval, predictions, ROC and confusion matrix."""
    from tuner.training import evaluate_run

    result = evaluate_run(run, features, out, device=device)
    test = result.metrics["test"]
    click.echo(
        f"{test['n_cases']} cases scored by {result.metrics['scored_by']}: auc "
        f"{_auc_text(test)}, loss {test['loss']:.4f}, balanced accuracy "
        f"{test['balanced_accuracy']:.3f}"
    )
    click.echo(f"wrote {result.out}")


def _auc_text(metrics: dict[str, Any]) -> str:
    from tuner.training import Metrics

    return Metrics(**metrics).auc_text()


@click.command()
@click.argument("run", type=PATH)
@click.option("--case", default=None, help="Explain this case (default: the whole run).")
@click.option(
    "--out", type=PATH, default=None, help="Folder for the pictures (default: RUN/explain)."
)
def explain(run: Path, case: str | None, out: Path | None) -> None:
    """Attention maps of a case of run folder RUN, or the attention of its misclassified cases."""
    from tuner.explain import explain_case, explain_run

    if case is None:
        summary = explain_run(run, out)
        folder = out or run / "explain"
        click.echo(
            f"{len(summary['misclassified'])} of {summary['cases']} test cases misclassified; "
            f"wrote {folder / summary['picture']}"
        )
        return
    explanation = explain_case(run, case, out)
    probability = explanation.probabilities[explanation.prediction]
    click.echo(
        f"case {case}: label {explanation.label}, predicted {explanation.prediction} "
        f"(probability {probability:.3f}), model of fold {explanation.fold}"
    )
    folder = out or run / "explain" / case
    click.echo(f"wrote {len(explanation.pictures)} pictures and summary.json to {folder}")
