"""The hard demo's cohorts for a data seed, with their feature stores, built once and cached.

For data seed ``s`` and a generator spec (the ``hard`` preset unless told otherwise):

- ``dev``: the development cohort, ``spec.cases`` cases (90), seed ``s``, ids ``C001``...;
- ``big``: five times as many cases (450) from the same generator, seed ``s + 10000``, ids
  ``B001``...: what more data would buy;
- ``population``: the independent population (2,000 cases), seed ``s + 20000``, ids
  ``P001``...: where every model is scored.

Each is a demo folder (``tuner demo-data --difficulty hard``) and a feature store
(``tuner features extract --weights random``: this machine is offline) under
``CACHE/hard-<spec digest>/seed-<s>/<name>/``. A finished cohort is reused; an unfinished one
is built again (the demo) or resumed (the extraction). The spec digest keys the folder, so a
change of the generator's knobs or code never reads stale data. The same commands, by hand::

    tuner demo-data DEV --difficulty hard --seed S
    tuner demo-data BIG --difficulty hard --seed S+10000 --cases 450 --case-prefix B
    tuner demo-data POP --difficulty hard --seed S+20000 --cases 2000 --case-prefix P
    tuner features extract DEV/patches --labels DEV/labels.csv --out DEV-features --weights random

From a script (``benchmarks/`` on ``sys.path``)::

    from hard_cohort import cohorts
    c = cohorts(0)              # c.dev, c.big, c.population: FeatureStore
    c.truth(c.population)       # true labels (labels.csv has 5% flipped)

Run as a script it builds the cohorts of the given seeds and prints their sizes and costs::

    .venv/bin/python benchmarks/hard_cohort.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import tuner.data._demo
import tuner.data._demo_render
from tuner.data import DEMO_PRESETS, DemoSpec, write_demo_dataset
from tuner.features import ExtractOptions, FeatureStore, extract_features

DEFAULT_CACHE = Path(__file__).resolve().parent / ".cache"
BIG_FACTOR = 5
POPULATION = 2000
BIG_SEED_OFFSET = 10_000
POPULATION_SEED_OFFSET = 20_000
#: 32 px patches: a larger batch is a quarter faster on the CPU than the CLI's default 64
EXTRACT = ExtractOptions(weights="random", seed=0, device="cpu", batch_size=256, progress=False)


@dataclass(frozen=True)
class Cohorts:
    dev: FeatureStore
    big: FeatureStore
    population: FeatureStore

    @staticmethod
    def truth(store: FeatureStore) -> dict[str, int]:
        """The true class index of every case of a cohort's store (from its ``truth.csv``)."""
        return read_truth(store)


def cohort_specs(
    seed: int, spec: DemoSpec | None = None, population: int = POPULATION
) -> dict[str, DemoSpec]:
    """The specs of the three cohorts of data seed ``seed``."""
    spec = dataclasses.replace(spec or DEMO_PRESETS["hard"], seed=seed, case_prefix="C")
    return {
        "dev": spec,
        "big": dataclasses.replace(
            spec, cases=spec.cases * BIG_FACTOR, seed=seed + BIG_SEED_OFFSET, case_prefix="B"
        ),
        "population": dataclasses.replace(
            spec, cases=population, seed=seed + POPULATION_SEED_OFFSET, case_prefix="P"
        ),
    }


def cohorts(
    seed: int,
    cache: Path | str = DEFAULT_CACHE,
    *,
    spec: DemoSpec | None = None,
    population: int = POPULATION,
    log: bool = True,
) -> Cohorts:
    """Build (or reuse) the dev, 5x and population cohorts of ``seed`` and their stores."""
    return Cohorts(*(cohort(seed, name, cache, spec=spec, population=population, log=log)
                     for name in ("dev", "big", "population")))  # fmt: skip


def cohort(
    seed: int,
    name: str,
    cache: Path | str = DEFAULT_CACHE,
    *,
    spec: DemoSpec | None = None,
    population: int = POPULATION,
    log: bool = True,
) -> FeatureStore:
    """Build (or reuse) one cohort of ``seed`` (``dev``, ``big`` or ``population``)."""
    specs = cohort_specs(seed, spec, population)
    folder = Path(cache) / f"hard-{spec_digest(specs['dev'])}" / f"seed-{seed}"
    return build_cohort(folder / name, specs[name], log=log)


def spec_digest(spec: DemoSpec) -> str:
    """A short digest of the generator: its knobs (not size, seed or case prefix) and code."""
    knobs = dataclasses.asdict(spec)
    for key in ("cases", "seed", "case_prefix"):
        knobs.pop(key)
    digest = hashlib.sha256(json.dumps(knobs, sort_keys=True).encode())
    for module in (tuner.data._demo, tuner.data._demo_render):
        digest.update(Path(module.__file__ or "").read_bytes())
    return digest.hexdigest()[:10]


def build_cohort(folder: Path, spec: DemoSpec, *, log: bool = True) -> FeatureStore:
    """The demo of ``spec`` in ``folder/demo`` and its store in ``folder/features``."""
    demo, marker = folder / "demo", folder / "demo" / "spec.json"
    wanted = json.dumps(dataclasses.asdict(spec), sort_keys=True)
    if not (marker.is_file() and marker.read_text() == wanted):
        shutil.rmtree(folder, ignore_errors=True)
        partial = folder / "demo.partial"
        started = time.perf_counter()
        write_demo_dataset(partial, spec)
        (partial / "spec.json").write_text(wanted)
        partial.rename(demo)
        _log(
            log, f"{folder}: {spec.cases} cases generated in {time.perf_counter() - started:.0f} s"
        )
    started = time.perf_counter()
    done = (folder / "features" / "manifest.json").is_file()
    store = extract_features(demo / "patches", demo / "labels.csv", folder / "features", EXTRACT)
    if not done:
        seconds = time.perf_counter() - started
        _log(
            log,
            f"{folder}: {len(store.rows)} patches extracted in {seconds:.0f} s "
            f"({seconds / len(store.rows) * 1e3:.2f} ms per patch)",
        )
    return store


def read_truth(store: FeatureStore) -> dict[str, int]:
    """True class index per case of a cohort's store, from its demo's ``truth.csv``."""
    classes = list(store.classes)
    with (store.path.parent / "demo" / "truth.csv").open(newline="") as handle:
        return {row["case"]: classes.index(row["true_label"]) for row in csv.DictReader(handle)}


def _log(enabled: bool, line: str) -> None:
    if enabled:
        print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--population", type=int, default=POPULATION)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for seed in args.seeds:
        c = cohorts(seed, args.cache, population=args.population)
        for name in ("dev", "big", "population"):
            store = getattr(c, name)
            print(f"seed {seed} {name}: {len(store.labels())} cases, {len(store.rows)} patches")


if __name__ == "__main__":
    main()
