"""Does the model learn? Attention against the mean-pooling baseline on the demo dataset.

Builds the default demo dataset (100 cases) and its feature store (random-weight DenseNet121),
then trains the default config with ``tuner train`` on the seeded 60/20/20 split and with
5-fold cross-validation, once with attention pooling and once with mean pooling (the same
model with uniform attention at every level). Prints the test metrics of each.

    .venv/bin/python benchmarks/demo_learning.py [--cases 100] [--seeds 0 1] [--folds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from tuner.cli import main as tuner


def build_store(folder: Path, cases: int, seed: int) -> Path:
    demo, store = folder / f"demo-{seed}", folder / f"features-{seed}"
    assert tuner(["-q", "demo-data", str(demo), "--cases", str(cases), "--seed", str(seed)]) == 0
    extract = ["-q", "features", "extract", str(demo / "patches"), "--labels",
               str(demo / "labels.csv"), "--out", str(store), "--weights", "random"]  # fmt: skip
    assert tuner(extract) == 0
    return store


def train(store: Path, folder: Path, pooling: str, folds: int | None) -> dict[str, Any]:
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
    return metrics


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
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print(f"{'data seed':<10}{'split':<10}{'pooling':<11}test")
        for seed in args.seeds:
            store = build_store(folder, args.cases, seed)
            for folds in (None, args.folds):
                for pooling in ("attention", "mean"):
                    started = time.perf_counter()
                    metrics = train(store, folder, pooling, folds)
                    split = f"{folds}-fold" if folds else "holdout"
                    print(
                        f"{seed:<10}{split:<10}{pooling:<11}{summarise(metrics)}  "
                        f"[{time.perf_counter() - started:.0f} s]",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
