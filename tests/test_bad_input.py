"""The table of bad input: every command answers a mistake with one clear line and a non-zero
exit, never a traceback, and changes nothing in the storage or on disk."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from tests.helpers import make_demo
from tests.pg import Cluster, throwaway_cluster
from tuner.features import ExtractOptions, FeatureStore, extract_features
from tuner.storage import open_storage
from tuner.study import create_study

QUICK = Path(__file__).resolve().parents[1] / "search_spaces" / "quick.yaml"


@dataclass
class World:
    """Everything the cases refer to, in one folder that the test snapshots."""

    root: Path
    store: Path
    other_store: Path
    db: str
    cluster: Cluster
    files: dict[str, Path] = field(default_factory=dict)

    def fill(self, text: str) -> str:
        values = {
            "root": self.root, "store": self.store, "other_store": self.other_store,
            "db": self.db, "patches": self.root / "demo" / "patches",
            "labels": self.root / "demo" / "labels.csv", "pg_port": self.cluster.port,
            **self.files,
        }  # fmt: skip
        return text.format(**values)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, store: FeatureStore) -> Iterator[World]:
    root = tmp_path_factory.mktemp("bad-input")
    make_demo(root / "demo")
    own_store = root / "features"
    shutil.copytree(store.path, own_store)
    other = make_demo(root / "other-demo", seed=7, cases=6)
    other_store = root / "other-features"
    options = ExtractOptions(weights="random", device="cpu", batch_size=16, progress=False)
    extract_features(other.patches, other.labels, other_store, options)
    db = f"sqlite:///{root / 'tuner.db'}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    create_study(open_storage(db), "mil", own_store, space=QUICK, trials=4)
    config = {"data": {"features": str(own_store)}, "train": {"epochs": 2, "device": "cpu"}}
    with throwaway_cluster() as cluster:
        w = World(root, own_store, other_store, db, cluster)
        w.files = {
            "config": write(root / "config.yaml", yaml.safe_dump(config)),
            "malformed": write(root / "malformed.yaml", "data:\n  features: [oops\n"),
            "unknown_key": write(root / "unknown.yaml", yaml.safe_dump({**config, "optim": {}})),
            "wrong_type": write(
                root / "wrong_type.yaml",
                yaml.safe_dump({**config, "train": {"batch_cases": "many"}}),
            ),
            "negative_lr": write(
                root / "negative_lr.yaml", yaml.safe_dump({**config, "train": {"lr": -0.01}})
            ),
            "other_dataset": write(
                root / "other_dataset.yaml",
                yaml.safe_dump(
                    {
                        "data": {
                            "features": str(other_store),
                            "checksum": FeatureStore.open(own_store).checksum,
                        }
                    }
                ),
            ),
            "folds": write(
                root / "folds.yaml",
                yaml.safe_dump({"data": {"features": str(own_store), "split": {"folds": 3}}}),
            ),
            "low_high": write(
                root / "low_high.yaml", "train.lr: {type: float, low: 1, high: 0}\n"
            ),
            "unknown_param": write(
                root / "unknown_param.yaml",
                "train.learning_rate: {type: float, low: 0, high: 1}\n",
            ),
            "bad_pw": write(root / "bad.pw", "not-the-password\n"),
        }
        yield w


@dataclass(frozen=True)
class Case:
    name: str
    args: str
    message: str
    env: dict[str, str] = field(default_factory=dict)


CASES = [
    Case("data: missing folder", "data check {root}/nope --labels {labels}", "does not exist"),
    Case(
        "data: pattern without groups",
        "data check {patches} --labels {labels} --pattern (?P<case>.+)",
        "lacks the named group(s) stain, slice",
    ),
    Case("data: labels missing", "data check {patches} --labels {root}/none.csv", "not found"),
    Case(
        "data: labels columns",
        "data check {patches} --labels {labels} --case-column slide",
        "has no column 'slide'",
    ),
    Case(
        "data: too few cases for folds",
        "data check {patches} --labels {labels} --folds 9",
        "9 folds needs at least 9",
    ),
    Case(
        "data: one fold",
        "data split --features {store} --out {root}/s.json --folds 1",
        "folds must be at least 2",
    ),
    Case("demo: folder not empty", "demo-data {root}", "is not empty"),
    Case(
        "demo: case prefix with a digit",
        "demo-data {root}/new-demo --difficulty hard --case-prefix P1",
        "case_prefix must be letters only",
    ),
    Case(
        "features: missing weights file",
        "features extract {patches} --labels {labels} --out {root}/new --weights {root}/w.pth",
        "neither 'imagenet', 'random' nor an existing file",
    ),
    Case(
        "features: existing store, other settings",
        "features extract {patches} --labels {labels} --out {store} --weights random --views 3",
        "exists with a different manifest",
    ),
    Case("features: not a store", "features info {root}/demo", "is not a feature store"),
    Case("config init: missing store", "config init --features {root}/none", "does not exist"),
    Case("train: config missing", "train --config {root}/none.yaml", "not found"),
    Case("train: malformed YAML", "train --config {malformed}", "is not valid YAML at line"),
    Case("train: unknown key", "train --config {unknown_key}", "unknown key 'optim'"),
    Case(
        "train: wrong type",
        "train --config {wrong_type}",
        "train.batch_cases: Input should be a valid integer",
    ),
    Case(
        "train: negative lr",
        "train --config {negative_lr}",
        "train.lr: Input should be greater than 0",
    ),
    Case(
        "train: store of another dataset",
        "train --config {other_dataset}",
        "but the config expects",
    ),
    Case(
        "study: missing store",
        "study create x --features {root}/none --storage {db}",
        "does not exist",
    ),
    Case(
        "study: low above high",
        "study create x --features {store} --space {low_high} --storage {db}",
        "low must not exceed high",
    ),
    Case(
        "study: unknown parameter",
        "study create x --features {store} --space {unknown_param} --storage {db}",
        "'train.learning_rate' is not a config key",
    ),
    Case(
        "study: created again, other space",
        "study create mil --features {store} --storage {db}",
        "already exists with a different space",
    ),
    Case(
        "study: k folds",
        "study create x --features {store} --config {folds} --storage {db}",
        "a study tunes on one train/validation split",
    ),
    Case(
        "worker: no such study",
        "worker nope --storage {db} --device cpu",
        "study 'nope' does not exist",
    ),
    Case(
        "worker: store checksum differs",
        "worker mil --storage {db} --device cpu --features {other_store}",
        "but study 'mil' was created with",
    ),
    Case(
        "worker: GPU that does not exist",
        "worker mil --storage {db} --device cuda:3",
        "--device 'cuda:3' does not exist",
    ),
    Case(
        "export: no finished trial",
        "export mil --out {root}/best.yaml --storage {db}",
        "has no complete trial yet",
    ),
    Case("export: nothing asked", "export mil --storage {db}", "say what to export"),
    Case(
        "status: unknown scheme",
        "status mil --storage mongodb://u@h/db",
        "unknown storage URL scheme 'mongodb'",
    ),
    Case(
        "status: unreachable database",
        "status mil --storage postgresql://tuner@127.0.0.1:1/tuner",
        "unreachable for 1 s",
        {"TUNER_DB_RETRY_SECONDS": "1"},
    ),
    Case(
        "status: wrong password",
        "status mil --storage postgresql://postgres@127.0.0.1:{pg_port}/postgres",
        "password authentication failed",
        {"PGPASSWORD": "not-the-password"},
    ),
    Case(
        "status: wrong password from a file",
        "status mil --storage postgresql://postgres@127.0.0.1:{pg_port}/postgres",
        "password authentication failed",
        {"TUNER_DB_PASSWORD_FILE": "{bad_pw}"},
    ),
    Case(
        "launch: bad GPU list",
        "launch mil --gpus zero,one --storage {db}",
        "--gpus must list GPU numbers",
    ),
    Case(
        "slurm: embedded storage",
        "slurm mil --workers 4 --storage {db}",
        "needs a shared PostgreSQL",
    ),
    Case(
        "slurm: bad time",
        "slurm mil --workers 4 --time 3h --storage postgresql://u@h/db",
        "--time must look like HH:MM:SS",
    ),
    Case("cli: unknown option", "status mil --storag {db}", "No such option '--storag'"),
]


def snapshot(world: World) -> dict[str, Any]:
    files = {
        str(p.relative_to(world.root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(world.root.rglob("*"))
        if p.is_file() and not p.name.startswith("tuner.db")
    }
    storage = open_storage(world.db)
    studies = {
        s.study_name: (s.n_trials, s.user_attrs)
        for s in optuna.get_all_study_summaries(storage, include_best_trial=False)
    }
    return {"files": files, "studies": studies}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gets_one_clear_line_and_changes_nothing(
    case: Case, world: World, run_cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in case.env.items():
        monkeypatch.setenv(key, world.fill(value))
    if "PGPASSWORD" not in case.env:
        monkeypatch.delenv("PGPASSWORD", raising=False)
    before = snapshot(world)
    result = run_cli(*world.fill(case.args).split())
    assert result.code != 0
    lines = result.err.strip().splitlines()
    assert lines, "no error message"
    assert lines[-1].startswith("tuner: error: "), result.err
    assert case.message in lines[-1], lines[-1]
    errors = [line for line in lines if line.startswith("tuner: error")]
    assert len(errors) == 1
    assert all("retrying" in line for line in lines[:-1]), result.err  # retries may be logged
    assert "Traceback" not in result.err + result.out
    assert snapshot(world) == before


def test_the_table_is_large_enough() -> None:
    assert len(CASES) >= 25
    commands = {c.args.split()[0] for c in CASES}
    assert {"data", "features", "train", "study", "worker", "export", "status"} <= commands
