"""Does the model learn? Attention against the mean-pooling baseline on the demo dataset.

Builds the default demo dataset (100 cases) and its feature store (random-weight DenseNet121),
then trains the default config with ``tuner train`` on the seeded 60/20/20 split and with
5-fold cross-validation, once with attention pooling and once with mean pooling (the same
model with uniform attention at every level). Prints the test metrics of each and, from the
run's ``attention.csv`` and the demo's ``lesions.csv`` (its ground truth), where attention
goes in positive test cases: the share of the case's effective attention on its lesion
patches, and the share of its k most attended patches that are lesions (k = its lesion count).

    .venv/bin/python benchmarks/demo_learning.py [--cases 100] [--seeds 0 1] [--folds 5]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

from tuner.cli import main as tuner


def lesion_attention(run: Path, demo: Path) -> str:
    """Median share of attention on lesion patches, and of lesions among the top-k patches."""
    with (demo / "lesions.csv").open(newline="") as handle:
        lesions = {row["path"] for row in csv.DictReader(handle)}
    per_case: dict[str, list[tuple[float, bool]]] = defaultdict(list)
    with (run / "attention.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            per_case[row["case"]].append((float(row["attention"]), row["path"] in lesions))
    mass, precision = [], []
    for rows in per_case.values():
        k = sum(is_lesion for _, is_lesion in rows)
        if k:
            mass.append(sum(a for a, is_lesion in rows if is_lesion) / sum(a for a, _ in rows))
            top = sorted(rows, reverse=True)[:k]
            precision.append(sum(is_lesion for _, is_lesion in top) / k)
    return (
        f"attention on lesions {statistics.median(mass):.2f}, lesions in top-k "
        f"{statistics.median(precision):.2f} (median of {len(mass)} positive cases)"
    )


def build_store(folder: Path, cases: int, seed: int) -> Path:
    demo, store = folder / f"demo-{seed}", folder / f"features-{seed}"
    assert tuner(["-q", "demo-data", str(demo), "--cases", str(cases), "--seed", str(seed)]) == 0
    extract = ["-q", "features", "extract", str(demo / "patches"), "--labels",
               str(demo / "labels.csv"), "--out", str(store), "--weights", "random"]  # fmt: skip
    assert tuner(extract) == 0
    return store


def train(
    store: Path, folder: Path, pooling: str, folds: int | None
) -> tuple[Path, dict[str, Any]]:
    name = f"{store.name}-{pooling}-{folds or 'holdout'}"
    config = folder / f"{name}.yaml"
    assert tuner(["-q", "config", "init", "--features", str(store), "--out", str(config)]) == 0
    data = yaml.safe_load(config.read_text())
    data["model"]["pooling"] = pooling
    data["data"]["split"]["folds"] = folds
    config.write_text(yaml.safe_dump(data))
    run = folder / f"run-{name}"
    assert tuner(["-q", "train", "--config", str(config), "--out", str(run)]) == 0
    metrics: dict[str, Any] = json.loads((run / "metrics.json").read_text())
    return run, metrics


def summarise(metrics: dict[str, Any]) -> str:
    if "folds" not in metrics:
        test = metrics["test"]
        return (
            f"AUC {test['auc']:.3f}  bal.acc {test['balanced_accuracy']:.3f}  "
            f"loss {test['loss']:.4f}  (n={test['n_cases']})"
        )
    aucs = [f["test"]["auc"] for f in metrics["folds"]]
    losses = [f["test"]["loss"] for f in metrics["folds"]]
    return (
        f"AUC {statistics.mean(aucs):.3f} +- {statistics.stdev(aucs):.3f} "
        f"(folds {', '.join(f'{a:.2f}' for a in aucs)})  "
        f"loss {statistics.median(losses):.4f} median"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=100)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--folds", type=int, default=5, help="0: the holdout split only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print(f"{'data seed':<10}{'split':<10}{'pooling':<11}test")
        for seed in args.seeds:
            store = build_store(folder, args.cases, seed)
            for folds in (None, args.folds) if args.folds else (None,):
                for pooling in ("attention", "mean"):
                    started = time.perf_counter()
                    run, metrics = train(store, folder, pooling, folds)
                    split = f"{folds}-fold" if folds else "holdout"
                    print(
                        f"{seed:<10}{split:<10}{pooling:<11}{summarise(metrics)}  "
                        f"[{time.perf_counter() - started:.0f} s]",
                        flush=True,
                    )
                    if pooling == "attention":
                        print(f"{'':<31}{lesion_attention(run, folder / f'demo-{seed}')}")


if __name__ == "__main__":
    main()
