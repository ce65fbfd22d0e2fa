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
import torch
import yaml

from tests.helpers import make_demo
from tests.pg import Cluster, throwaway_cluster
from tuner.errors import PERMANENT_EXIT_CODE
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
            "default_space": QUICK.with_name("default.yaml"), **self.files,
        }  # fmt: skip
        return text.format(**values)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def save_state(path: Path, shapes: dict[str, tuple[int, ...]]) -> Path:
    torch.save({k: torch.zeros(shape) for k, shape in shapes.items()}, path)
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
    shutil.copytree(own_store, root / "moved-features")
    create_study(open_storage(db), "moved", root / "moved-features", space=QUICK, trials=4)
    shutil.rmtree(root / "moved-features")
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
            "resnet_weights": save_state(root / "resnet.pth", {"conv1.weight": (64, 3, 7, 7)}),
            "not_a_db": write(root / "notes.txt", ""),
        }
        yield w


@dataclass(frozen=True)
class Case:
    name: str
    args: str | tuple[str, ...]  # split at spaces, or the arguments one by one
    message: str
    env: dict[str, str] = field(default_factory=dict)
    code: int | None = None  # the exit status, where it matters (to launchers, Kubernetes)

    def argv(self, world: World) -> list[str]:
        if isinstance(self.args, str):
            return world.fill(self.args).split()
        return [world.fill(a) for a in self.args]

    @property
    def command(self) -> str:
        return self.args.split()[0] if isinstance(self.args, str) else self.args[0]


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
        "neither 'pretrained', 'imagenet', 'random' nor an existing file",
    ),
    Case(
        "features: existing store, other settings",
        "features extract {patches} --labels {labels} --out {store} --weights random --views 3",
        "exists with a different manifest",
    ),
    Case(
        "features: unknown backbone",
        "features extract {patches} --labels {labels} --out {root}/new --backbone resnet181",
        "unknown backbone 'resnet181': not a preset",
    ),
    Case(
        "features: unknown timm model",
        "features extract {patches} --labels {labels} --out {root}/new --backbone timm:resnet181",
        "unknown timm model 'resnet181'",
    ),
    Case(
        "features: weights of another model for a preset",
        "features extract {patches} --labels {labels} --out {root}/new --backbone uni "
        "--weights {resnet_weights}",
        "does not fit uni (vit_large_patch16_224)",
    ),
    Case(
        "features: ImageNet weights for a timm model",
        "features extract {patches} --labels {labels} --out {root}/new --backbone timm:resnet18 "
        "--weights imagenet",
        "pass weights 'pretrained'",
    ),
    Case(
        "features: image size the model cannot take",
        "features extract {patches} --labels {labels} --out {root}/new --backbone vit_b_16 "
        "--weights random",
        "cannot encode 32x32 px images",
    ),
    Case("features: not a store", "features info {root}/demo", "is not a feature store"),
    Case(
        "features: labels missing, output in new folders",
        "features extract {patches} --labels {root}/none.csv --out {root}/new/sub/features",
        "not found",
    ),
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
        "study create mil --features {store} --space {default_space} --storage {db}",
        "already exists with a different space",
    ),
    Case(
        "study: created again, smaller budget",
        "study create mil --features {store} --trials 2 --storage {db}",
        "has a budget of 4 trials; a budget can be raised but not lowered",
    ),
    Case(
        "study: negative retry cap",
        "study create x --features {store} --max-retries -1 --storage {db}",
        "max_retries must be 0 or more",
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
        code=PERMANENT_EXIT_CODE,
    ),
    Case(
        "worker: store checksum differs",
        "worker mil --storage {db} --device cpu --features {other_store}",
        "but study 'mil' was created with",
        code=PERMANENT_EXIT_CODE,
    ),
    Case(
        "worker: GPU that does not exist",
        "worker mil --storage {db} --device cuda:99",
        "--device 'cuda:99' does not exist",
        code=PERMANENT_EXIT_CODE,
    ),
    Case(
        "worker: unreachable database (restart it)",
        "worker mil --storage postgresql://tuner@127.0.0.1:1/tuner --device cpu",
        "unreachable for 1 s",
        {"TUNER_DB_RETRY_SECONDS": "1"},
        code=1,
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
        "launch: no such study",
        "launch nope --workers 2 --storage {db}",
        "study 'nope' does not exist",
        code=PERMANENT_EXIT_CODE,
    ),
    Case(
        "launch: GPU that does not exist",
        "launch mil --gpus 0,99 --storage {db}",
        "99 does not exist (this machine has",
        code=PERMANENT_EXIT_CODE,
    ),
    Case(
        "launch: device that does not exist",
        "launch mil --workers 2 --device cuda:99 --storage {db}",
        "--device 'cuda:99' does not exist",
        code=PERMANENT_EXIT_CODE,
    ),
    Case(
        "launch: store checksum differs",
        "launch mil --workers 2 --features {other_store} --storage {db}",
        "but study 'mil' was created with",
        code=PERMANENT_EXIT_CODE,
    ),
    Case(
        "launch: unreachable database (restart it)",
        "launch mil --workers 2 --storage postgresql://tuner@127.0.0.1:1/tuner",
        "unreachable for 1 s",
        {"TUNER_DB_RETRY_SECONDS": "1"},
        code=1,
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
    Case(
        "k8s: embedded storage",
        "k8s mil --workers 4 --storage {db} --out {root}/k8s.yaml",
        "needs a shared PostgreSQL",
    ),
    Case(
        "k8s: claim that is no Kubernetes name",
        "k8s mil --workers 4 --features-claim Features_PVC --storage postgresql://u@h/db "
        "--out {root}/k8s.yaml",
        "features_claim 'Features_PVC' is not a Kubernetes object name",
    ),
    Case(
        "k8s: space that is not YAML",
        "k8s mil --workers 4 --space {malformed} --storage postgresql://u@h/db "
        "--out {root}/k8s.yaml",
        "is not valid YAML",
    ),
    Case(
        "dashboard: writable on every address",
        "dashboard --host 0.0.0.0 --storage {db}",
        "would let anyone who reaches it delete and change studies",
    ),
    Case("cli: unknown option", "status mil --storag {db}", "No such option '--storag'"),
    Case(
        "status: storage file missing", "status mil --storage {root}/foo", "no study database at"
    ),
    Case("status: no storage here", "status mil", "no study database at {root}/storage/tuner.db"),
    Case(
        "status: a file that is not a study database",
        "status mil --storage {not_a_db}",
        "no study database at",
    ),
    Case(
        "export: storage missing",
        "export mil --out {root}/best.yaml --storage {root}/nope/tuner.db",
        "no study database at",
    ),
    Case(
        "report: storage missing",
        "report mil --out {root}/r.html --storage sqlite:///{root}/nope.db",
        "no study database at",
    ),
    Case("dashboard: storage missing", "dashboard --storage {root}/nope.db", "no study database"),
    Case("study list: no storage here", "study list", "no study database at"),
    Case(
        "study delete: storage missing",
        "study delete mil --yes --storage {root}/nope.db",
        "no study database at",
    ),
    Case("worker: no storage here", "worker mil --device cpu", "no study database at"),
    Case("slurm: no storage here", "slurm mil --workers 2", "needs a shared PostgreSQL"),
    Case(
        "study: empty name",
        ("study", "create", "", "--features", "{store}", "--storage", "{db}"),
        "study name '' is empty",
    ),
    Case(
        "study: name with a newline",
        ("study", "create", "x\ntouch {root}/pwned", "--features", "{store}", "--storage", "{db}"),
        "is not printable",
    ),
    Case(
        "study: name that climbs out of the checkpoint folder",
        "study create ../x --features {store} --storage {db}",
        "holds a path separator",
    ),
    Case(
        "study: empty name, no storage yet",
        ("study", "create", "", "--features", "{store}"),
        "study name '' is empty",
    ),
    Case(
        "study: checkpoints under a file",
        "study create x --features {store} --storage {db} --checkpoints {config}/ckpt",
        "cannot be a folder: '{config}' is a file",
    ),
    Case(
        "worker: checkpoints under a file",
        "worker mil --storage {db} --device cpu --checkpoints {config}/ckpt",
        "cannot be a folder: '{config}' is a file",
    ),
    Case(
        "worker: the study's store moved",
        "worker moved --storage {db} --device cpu",
        "is not on this machine; if it moved or is mounted elsewhere, give its path here as "
        "features (--features NEWPATH)",
    ),
]


def snapshot(world: World) -> dict[str, Any]:
    """Every file and folder under the world's root (the study database's own files aside,
    whose pages SQLite may touch on reading) and every study in it."""
    paths = {p.relative_to(world.root).as_posix(): p for p in sorted(world.root.rglob("*"))}
    files = {
        rel: (p.stat().st_size, p.stat().st_mtime_ns)
        for rel, p in paths.items()
        if p.is_file() and not rel.startswith("tuner.db")
    }
    folders = sorted(rel for rel, p in paths.items() if p.is_dir())
    storage = open_storage(world.db)
    studies = {
        s.study_name: (s.n_trials, s.user_attrs)
        for s in optuna.get_all_study_summaries(storage, include_best_trial=False)
    }
    return {"files": files, "folders": folders, "studies": studies}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gets_one_clear_line_and_changes_nothing(
    case: Case, world: World, run_cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(world.root)  # where a command given no storage would put one
    monkeypatch.delenv("TUNER_STORAGE", raising=False)
    for key, value in case.env.items():
        monkeypatch.setenv(key, world.fill(value))
    if "PGPASSWORD" not in case.env:
        monkeypatch.delenv("PGPASSWORD", raising=False)
    before = snapshot(world)
    result = run_cli(*case.argv(world))
    assert result.code != 0
    if case.code is not None:
        assert result.code == case.code, result.err
    lines = result.err.strip().splitlines()
    assert lines, "no error message"
    assert lines[-1].startswith("tuner: error: "), result.err
    assert world.fill(case.message) in lines[-1], lines[-1]
    errors = [line for line in lines if line.startswith("tuner: error")]
    assert len(errors) == 1
    assert all("retrying" in line for line in lines[:-1]), result.err  # retries may be logged
    assert "Traceback" not in result.err + result.out
    assert snapshot(world) == before


def test_the_table_is_large_enough() -> None:
    assert len(CASES) >= 25
    commands = {c.command for c in CASES}
    assert {"data", "features", "train", "study", "worker", "export", "status"} <= commands
