"""Does tuning pay? The default config, a single-split and a 5-fold study on the hard demo.

Per data seed (``hard_cohort.cohorts``: 90 development cases, 450 more from the same
generator, an independent population), five arms, each trained with ``tuner train``'s
machinery (``train_run``) and scored on every case of the population with ``tuner
evaluate``'s (``evaluate_run``: AUC with a label-stratified bootstrap interval):

- ``default``: the default config (``tuner config init``) on the 90 cases;
- ``single``: a study of ``--trials`` trials on one train/val split (TPE seeded with the data
  seed, the default pruner, the default search space), exported (``export_best``) and trained;
- ``cv``: the same study with ``data.split.cv_folds: 5``; its export is the refit (``cv_epoch``
  epochs on every non-test case, the common lr schedule replayed), trained the same way;
- ``big``: the default config on the 450 cases: what five times the data buys.

Studies live in a fresh SQLite file per study and are run by real worker processes,
``tuner launch``'s machinery (``plan_workers`` + ``launch_workers``: ``--workers`` local CPU
processes, each ``python -m tuner worker``, the CPU's threads shared among them).

Reported per arm: population AUC and its interval against the population's labels (5 %
flipped, as the training labels) and against its true labels, the population loss, the
study's best objective and its optimism (population loss minus best objective), the share of
trial-epochs spent on trials that stayed at chance (pruned because "it learned nothing", or
complete with a value above 0.95 x chance_loss), and the compute (member-epochs and wall
seconds of the study and of the final training). Then the paired differences across seeds
((c)-(b), (c)-(a), (c)-big) and the issue's goals, met or missed.

    .venv/bin/python benchmarks/tuning_pays.py --out tuning_pays.json          # 3 seeds, 16 trials
    .venv/bin/python benchmarks/tuning_pays.py --out tuning_pays.json          # again: goes on
    .venv/bin/python benchmarks/tuning_pays.py --seeds 0 --trials 3 --epochs 6 \\
        --population 300 --out smoke.json                                      # a smoke run

``--population N`` uses a population of N cases (the same generator and seed, fewer cases)
instead of 2,000: the cache keeps one population size per seed, so changing it rebuilds that
cohort. Seed 100 calibrated the demo and is refused. Run again with the same ``--out`` (and
settings), a stopped run goes on: the arms it finished are kept, the others run again.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from _population import rescore
from hard_cohort import DEFAULT_CACHE, POPULATION, cohorts, read_truth

from tuner.config import DataConfig, RunConfig, apply_overrides, load_config, save_config
from tuner.features import FeatureStore
from tuner.storage import open_storage
from tuner.study import best_trial, create_study, export_best, launch_workers, plan_workers
from tuner.study._pruners import CHANCE_KEY
from tuner.training import (
    Evaluation,
    classification_metrics,
    evaluate_run,
    train_run,
    with_auc_interval,
)

CALIBRATION_SEED = 100
CV_FOLDS = 5
CHANCE_SHARE = 0.95  # a complete trial whose best value is above this x chance_loss stayed flat
ARMS = ("default", "single", "cv", "big")


def default_config(store: FeatureStore, epochs: int | None) -> RunConfig:
    """``tuner config init``'s config for ``store`` (with ``epochs``, when given)."""
    config = RunConfig(data=DataConfig(features=store.path.resolve(), checksum=store.checksum))
    overrides = {} if epochs is None else {"train.epochs": epochs}
    return apply_overrides(config, overrides, source="--epochs")


def train_and_score(
    config: RunConfig, folder: Path, population: FeatureStore, truth: dict[str, int]
) -> dict[str, Any]:
    """Train ``config`` (``tuner train``), score the run on the population (``tuner
    evaluate``) and again against the population's true labels."""
    started = time.perf_counter()
    run = train_run(config, folder / "run")
    seconds = time.perf_counter() - started
    external = evaluate_run(run.out, population.path, folder / "population", device="cpu")
    scored = external.metrics["test"]
    evaluation = read_predictions(external.out / "predictions.csv", population.classes)
    true_labels = np.array([truth[c] for c in evaluation.cases])
    true = with_auc_interval(rescore(evaluation, truth), evaluation.probs, true_labels)
    return {
        "pop_auc": scored["auc"],
        "pop_auc_ci": scored["auc_ci"],
        "pop_loss": scored["loss"],
        "truth_auc": true.auc,
        "truth_auc_ci": true.auc_ci,
        "truth_loss": true.loss,
        "dev_test_auc": run.metrics.get("test", {}).get("auc"),
        "train_member_epochs": sum(len(f.fit.history) for f in run.folds),
        "train_seconds": seconds,
        "run": str(run.out),
    }


def read_predictions(path: Path, classes: tuple[str, ...]) -> Evaluation:
    """The population's predictions as ``evaluate_run`` wrote them."""
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    probs = np.array([[float(r[f"p_{c}"]) for c in classes] for r in rows])
    labels = np.array([classes.index(r["label"]) for r in rows])
    metrics = classification_metrics(probs, labels, float("nan"))
    return Evaluation(metrics, [r["case"] for r in rows], labels, probs)


def study_arm(
    kind: str,
    store: FeatureStore,
    base: RunConfig,
    seed: int,
    args: argparse.Namespace,
    folder: Path,
    population: FeatureStore,
    truth: dict[str, int],
) -> dict[str, Any]:
    """Create the study, run it with local workers, export its best trial, train and score."""
    (folder / "storage").mkdir(parents=True)
    save_config(base, folder / "base.yaml")
    url = f"sqlite:///{folder / 'storage' / 'tuner.db'}"
    name = f"pays-{kind}-seed{seed}"
    storage = open_storage(url)
    try:
        create_study(
            storage, name, store.path, config=folder / "base.yaml", trials=args.trials,
            sampler="tpe", seed=seed,
        )  # fmt: skip
        plans = plan_workers(workers=args.workers, device="cpu")
        started = time.perf_counter()
        with (folder / "workers.log").open("w") as log:
            status = launch_workers(name, plans, storage_url=url, out=log)
        study_seconds = time.perf_counter() - started
        if status:
            raise SystemExit(f"{name}: the workers exited with {status}; see {folder}/workers.log")
        trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
        best = best_trial(trials)
        if best is not None:
            export_best(storage, name, folder / "best.yaml", storage_url=url)
    finally:
        storage.engine.dispose()
    members = (base.data.split.cv_folds or 1) * base.train.repeats
    epochs = {t.number: trial_epochs(t) for t in trials}
    flat = [t.number for t in trials if stayed_at_chance(t)]
    total = sum(epochs.values())
    # a study without a complete trial (every one pruned or failed) exports nothing (tuner
    # export says so): its user is left with the base config, and so is this arm
    final = base if best is None else load_config(folder / "best.yaml")
    result = train_and_score(final, folder, population, truth)
    value = None if best is None else best.value
    result.update(
        found_nothing=best is None,
        best_value=value,
        best_trial=None if best is None else best.number,
        best_params={} if best is None else dict(best.params),
        optimism=None if value is None else result["pop_loss"] - value,
        trials={s: sum(t.state.name == s for t in trials) for s in ("COMPLETE", "PRUNED", "FAIL")},
        trial_epochs=total,
        chance_trials=flat,
        chance_epoch_share=sum(epochs[n] for n in flat) / total if total else float("nan"),
        study_member_epochs=total * members,
        study_seconds=study_seconds,
    )
    if kind == "cv" and best is not None:
        result["cv_epoch"] = best.user_attrs.get("cv_epoch")
        result["cv_spread"] = best.user_attrs.get("cv_spread")
    return result


def trial_epochs(trial: optuna.trial.FrozenTrial) -> int:
    """Epochs this trial trained (a resumed trial's earlier ones count for the trial it
    continued)."""
    run = int(trial.user_attrs.get("epochs_run", len(trial.intermediate_values)))
    return run - int(trial.user_attrs.get("resumed_from_epoch", 0))


def stayed_at_chance(trial: optuna.trial.FrozenTrial) -> bool:
    if trial.user_attrs.get("pruned_because") == "it learned nothing":
        return True
    chance = trial.user_attrs.get(CHANCE_KEY)
    return (
        trial.state == optuna.trial.TrialState.COMPLETE
        and chance is not None
        and trial.value is not None
        and trial.value > CHANCE_SHARE * float(chance)
    )


def run_seed(seed: int, args: argparse.Namespace, work: Path, record: dict[str, Any]) -> None:
    c = cohorts(seed, args.cache, population=args.population)
    truth = read_truth(c.population)
    folder = work / f"seed-{seed}"
    figures = record["seeds"].setdefault(str(seed), {})
    base = default_config(c.dev, args.epochs)
    cv_base = apply_overrides(base, {"data.split.cv_folds": CV_FOLDS}, source="the cv arm")
    for arm in ARMS:
        if arm in figures:
            continue
        print(f"seed {seed}: {arm} ...", flush=True)
        shutil.rmtree(folder / arm, ignore_errors=True)  # what a stopped run left
        started = time.perf_counter()
        if arm == "default":
            figures[arm] = train_and_score(base, folder / arm, c.population, truth)
        elif arm == "big":
            big = default_config(c.big, args.epochs)
            figures[arm] = train_and_score(big, folder / arm, c.population, truth)
        else:
            config = base if arm == "single" else cv_base
            figures[arm] = study_arm(
                arm, c.dev, config, seed, args, folder / arm, c.population, truth
            )
        figures[arm].setdefault("study_member_epochs", 0)
        figures[arm].setdefault("study_seconds", 0.0)
        figures[arm]["member_epochs"] = (
            figures[arm]["study_member_epochs"] + figures[arm]["train_member_epochs"]
        )
        figures[arm]["wall_seconds"] = time.perf_counter() - started
        print(f"seed {seed}: {arm}: {brief(figures[arm])}", flush=True)
        save(record, args.out)


def brief(f: dict[str, Any]) -> str:
    text = (
        f"pop AUC {f['pop_auc']:.3f} {interval(f['pop_auc_ci'])}, loss {f['pop_loss']:.3f}, "
        f"truth AUC {f['truth_auc']:.3f}, {f['member_epochs']} member-epochs, "
        f"{f['wall_seconds']:.0f} s"
    )
    if f.get("found_nothing"):
        text += "; no trial completed: the base config trained instead"
    elif "best_value" in f:
        text += f"; best objective {f['best_value']:.3f}, optimism {f['optimism']:.3f}"
    if "chance_epoch_share" in f:
        text += f", chance epochs {f['chance_epoch_share']:.0%}"
    return text


def interval(ci: list[float] | tuple[float, float] | None) -> str:
    return "" if ci is None else f"({ci[0]:.2f}-{ci[1]:.2f})"


PAIRS = (("cv", "single"), ("cv", "default"), ("cv", "big"), ("single", "default"))
PAIRED = ("pop_auc", "pop_loss", "truth_auc")


def paired(record: dict[str, Any]) -> dict[str, Any]:
    """Per pair of arms and figure: the per-seed differences, their mean and sd."""
    done = [s for s, f in record["seeds"].items() if all(a in f for a in ARMS)]
    out: dict[str, Any] = {}
    for a, b in PAIRS:
        for key in PAIRED:
            diffs = [record["seeds"][s][a][key] - record["seeds"][s][b][key] for s in done]
            out[f"{a}-{b} {key}"] = {
                "per_seed": dict(zip(done, diffs, strict=True)),
                "mean": statistics.mean(diffs) if diffs else None,
                "sd": statistics.stdev(diffs) if len(diffs) > 1 else None,
            }
    return out


def goals(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's goals, on the means over the seeds with every arm done."""
    done = [f for f in record["seeds"].values() if all(a in f for a in ARMS)]
    if not done:
        return []

    def mean(arm: str, key: str, *, also: str | None = None) -> float:
        """The mean over the seeds where ``arm`` (and ``also``) has the figure: a study that
        found nothing has no best objective, so no optimism."""
        return statistics.fmean(
            f[arm][key] for f in done
            if f[arm][key] is not None and (also is None or f[also][key] is not None)
        )  # fmt: skip

    def pooled_share(arm: str) -> float:
        flat = sum(f[arm]["chance_epoch_share"] * f[arm]["trial_epochs"] for f in done)
        return flat / max(1, sum(f[arm]["trial_epochs"] for f in done))

    checks = [
        ("(c) population AUC within 0.01 of the 5x-data model",
         mean("big", "pop_auc") - mean("cv", "pop_auc"), "<= 0.01", 0.01),
        ("(c) population loss at most 0.05 above the 5x-data model",
         mean("cv", "pop_loss") - mean("big", "pop_loss"), "<= 0.05", 0.05),
        ("optimism of (c) at most 0.10", mean("cv", "optimism"), "<= 0.10", 0.10),
        ("optimism of (c) at most half of (b)'s",
         mean("cv", "optimism", also="single") - 0.5 * mean("single", "optimism", also="cv"),
         "(c) - (b)/2 <= 0", 0.0),
        ("default config's population AUC at least 0.85",
         0.85 - mean("default", "pop_auc"), "0.85 - AUC <= 0", 0.0),
        ("at most 20 % of trial-epochs on chance-level trials, (b)",
         pooled_share("single"), "<= 0.20", 0.20),
        ("at most 20 % of trial-epochs on chance-level trials, (c)",
         pooled_share("cv"), "<= 0.20", 0.20),
    ]  # fmt: skip
    return [
        {"goal": goal, "figure": value, "needs": needs, "met": bool(value <= bound)}
        for goal, value, needs, bound in checks
    ]


def save(record: dict[str, Any], out: Path | None) -> None:
    record["paired"] = paired(record)
    record["goals"] = goals(record)
    if out is not None:
        partial = out.with_name(out.name + ".partial")
        partial.write_text(json.dumps(record, indent=2, default=_jsonable) + "\n")
        partial.replace(out)


def _jsonable(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def report(record: dict[str, Any]) -> None:
    n = len(record["seeds"])
    print(f"\n{n} data seed(s), {record['args']['trials']} trials per study")
    header = ["seed", "arm", "pop AUC (95 % CI)", "pop loss", "truth AUC (95 % CI)",
              "best objective", "optimism", "chance epochs", "member-epochs",
              "wall s"]  # fmt: skip
    rows = []
    for seed, figures in record["seeds"].items():
        for arm, f in figures.items():
            study = "best_value" in f
            rows.append([
                seed, arm, f"{f['pop_auc']:.3f} {interval(f['pop_auc_ci'])}",
                f"{f['pop_loss']:.3f}", f"{f['truth_auc']:.3f} {interval(f['truth_auc_ci'])}",
                "none found" if f.get("found_nothing") else _num(f.get("best_value"), ""),
                _num(f.get("optimism"), ""),
                f"{f['chance_epoch_share']:.0%}" if study else "", f["member_epochs"],
                f"{f['wall_seconds']:.0f}",
            ])  # fmt: skip
    table(header, rows)
    print()
    table(
        ["difference", "mean", "sd", "per seed"],
        [[k, _num(v["mean"]), _num(v["sd"]),
          " ".join(f"{s}:{d:+.3f}" for s, d in v["per_seed"].items())]
         for k, v in record["paired"].items()],
    )  # fmt: skip
    print()
    table(
        ["goal", "figure", "needs", ""],
        [[g["goal"], f"{g['figure']:.3f}", g["needs"], "met" if g["met"] else "MISSED"]
         for g in record["goals"]],
    )  # fmt: skip


def _num(value: float | None, sign: str = "+") -> str:
    return "" if value is None else f"{value:{sign}.3f}"


def table(headers: list[str], rows: list[list[Any]]) -> None:
    cells = [headers, *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for number, row in enumerate(cells):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if number == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


#: what must agree for a record in ``--out`` to be continued
SAME_RUN = ("trials", "epochs", "workers", "population")


def start_record(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """A new record, or the one in ``--out`` when it was made with the same settings: its
    finished arms are kept, so that a run stopped part way (or one seed added) goes on."""
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    if args.out is None or not args.out.is_file():
        return {"args": settings, "seeds": {}}
    record: dict[str, Any] = json.loads(args.out.read_text())
    differ = [k for k in SAME_RUN if record["args"].get(k) != settings[k]]
    if differ:
        parser.error(
            f"{args.out} holds a run with other {', '.join(differ)}; give another --out "
            "or the same settings to continue it"
        )
    record["args"] = settings
    done = {s: sorted(f) for s, f in record["seeds"].items()}
    print(f"continuing {args.out}: done {done}", flush=True)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=16, help="trials per study")
    parser.add_argument("--epochs", type=int, default=None, help="train.epochs of every arm")
    parser.add_argument("--workers", type=int, default=2, help="local worker processes")
    parser.add_argument("--out", type=Path, default=None, help="a JSON of all figures")
    parser.add_argument(
        "--population", type=int, default=POPULATION,
        help="cases of the population (fewer: a quick run; the cache rebuilds it)",
    )  # fmt: skip
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--work", type=Path, default=None, help="runs and studies (default: temp)")
    args = parser.parse_args()
    if CALIBRATION_SEED in args.seeds:
        parser.error(f"seed {CALIBRATION_SEED} calibrated the hard demo; use others")
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    work = args.work or Path(tempfile.mkdtemp(prefix="tuning-pays-"))
    print(f"runs and studies in {work}", flush=True)
    record = start_record(args, parser)
    started = time.perf_counter()
    for seed in args.seeds:
        run_seed(seed, args, work, record)
    record["wall_seconds"] = time.perf_counter() - started
    save(record, args.out)
    report(record)
    print(f"\nwall time {record['wall_seconds']:.0f} s")


if __name__ == "__main__":
    main()
