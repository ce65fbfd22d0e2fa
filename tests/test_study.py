"""Studies: creation and its refusals, budget accounting, status, export, SLURM, launch plans."""

from __future__ import annotations

import re
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from tuner.config import load_config
from tuner.errors import StudyError, TunerError
from tuner.features import FeatureStore
from tuner.storage import open_storage
from tuner.study import (
    SETTINGS_KEY,
    Budget,
    create_study,
    export_best,
    export_trials,
    load_settings,
    next_action,
    plan_workers,
    slurm_script,
    study_status,
)

QUICK = Path(__file__).resolve().parents[1] / "search_spaces" / "quick.yaml"
DEFAULT_SPACE = QUICK.with_name("default.yaml")


def test_create_stores_everything_a_worker_needs(storage_url: str, store: FeatureStore) -> None:
    storage = open_storage(storage_url)
    result = create_study(storage, "s", store.path, space=QUICK, trials=7, pruner="asha", seed=3)
    assert result.created
    settings = load_settings(open_storage(storage_url), "s")
    assert settings.budget == 7
    assert (settings.pruner, settings.sampler, settings.seed) == ("asha", "tpe", 3)
    assert settings.features == {"path": str(store.path.resolve()), "checksum": store.checksum}
    assert list(settings.space) == ["train.lr", "model.dropout", "regularization.penalty",
                                    "regularization.entropy.patch"]  # fmt: skip
    assert settings.config().data.checksum == store.checksum
    split = settings.split()
    assert sorted(split.train + split.val + split.test) == sorted(store.labels())
    study = optuna.load_study(study_name="s", storage=storage)
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    assert study.user_attrs["budget"] == 7


def test_same_create_is_a_no_op_and_a_different_one_is_refused(
    storage_url: str, store: FeatureStore, tmp_path: Path
) -> None:
    storage = open_storage(storage_url)
    create_study(storage, "s", store.path, space=QUICK, trials=5)
    again = create_study(open_storage(storage_url), "s", store.path, space=QUICK, trials=5)
    assert not again.created
    with pytest.raises(StudyError, match="already exists with a different space"):
        create_study(storage, "s", store.path, space=DEFAULT_SPACE, trials=5)
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump({"data": {"features": str(store.path)}, "train": {"epochs": 3}})
    )
    with pytest.raises(StudyError, match="already exists with a different base_config"):
        create_study(storage, "s", store.path, space=QUICK, config=config, trials=5)
    with pytest.raises(StudyError, match="already exists with a different max_retries"):
        create_study(storage, "s", store.path, space=QUICK, trials=5, max_retries=0)
    assert len(optuna.get_all_study_summaries(storage)) == 1


def test_reopening_compares_only_the_options_given(
    storage_url: str, store: FeatureStore, tmp_path: Path
) -> None:
    """Options left out keep the study's: a later default (here: another space, pruner, seed
    and retry cap) does not refuse an old study; the store is always compared."""
    storage = open_storage(storage_url)
    create_study(storage, "s", store.path, space=QUICK, trials=5, pruner="asha", seed=7,
                 max_retries=1)  # fmt: skip
    again = create_study(open_storage(storage_url), "s", store.path)
    assert not again.created
    assert again.raised_from is None
    kept = again.settings
    assert (kept.budget, kept.pruner, kept.seed, kept.max_retries) == (5, "asha", 7, 1)
    assert list(kept.space) == list(load_settings(storage, "s").space)
    same = create_study(storage, "s", store.path, space=QUICK, pruner="asha", seed=7)
    assert not same.created
    with pytest.raises(StudyError, match="already exists with a different pruner, seed"):
        create_study(storage, "s", store.path, pruner="median", seed=0)


def test_a_larger_budget_raises_it_and_a_smaller_one_is_refused(
    storage_url: str, store: FeatureStore
) -> None:
    storage = open_storage(storage_url)
    create_study(storage, "s", store.path, space=QUICK, trials=5)
    raised = create_study(open_storage(storage_url), "s", store.path, space=QUICK, trials=9)
    assert (raised.created, raised.raised_from, raised.settings.budget) == (False, 5, 9)
    assert load_settings(storage, "s").budget == 9
    study = optuna.load_study(study_name="s", storage=storage)
    assert study.user_attrs["budget"] == 9
    assert "study s: 0 of 9 trials finished" in study_status(storage, "s").render()
    with pytest.raises(StudyError, match="can be raised but not lowered, but got trials=4"):
        create_study(storage, "s", store.path, space=QUICK, trials=4)
    assert load_settings(storage, "s").budget == 9
    assert not create_study(storage, "s", store.path, trials=9).raised_from


def test_the_objective_is_named_val_loss(storage_url: str, store: FeatureStore) -> None:
    """By create, and by a re-open of a study made before tuner named it (as Optuna tools and
    the dashboard show the name); the CSV export keeps its column ``value``."""
    storage = open_storage(storage_url)
    create_study(storage, "s", store.path, space=QUICK, trials=5)
    study = optuna.load_study(study_name="s", storage=storage)
    assert study.metric_names == ["val_loss"]
    study_id = storage.get_study_id_from_name("s")
    storage.set_study_system_attr(study_id, "study:metric_names", None)  # as an old study
    assert optuna.load_study(study_name="s", storage=storage).metric_names is None
    create_study(storage, "s", store.path)
    assert optuna.load_study(study_name="s", storage=storage).metric_names == ["val_loss"]


def test_the_retry_cap_is_a_study_setting(storage_url: str, store: FeatureStore) -> None:
    storage = open_storage(storage_url)
    create_study(storage, "s", store.path, space=QUICK, trials=5, max_retries=5)
    assert load_settings(storage, "s").max_retries == 5
    assert "5 retries after a worker dies" in study_status(storage, "s").render()
    # a study created before the setting existed has the old fixed cap
    study_id = storage.get_study_id_from_name("s")
    raw = storage.get_study_system_attrs(study_id)[SETTINGS_KEY]
    del raw["max_retries"]
    storage.set_study_system_attr(study_id, SETTINGS_KEY, raw)
    assert load_settings(storage, "s").max_retries == 3
    again = create_study(storage, "s", store.path, space=QUICK, trials=5)
    assert not again.created, "the same create with the default cap is the same study"


def test_create_refuses_bad_input_before_touching_the_storage(
    store: FeatureStore, tmp_path: Path
) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 't.db'}")
    bad_space = tmp_path / "space.yaml"
    bad_space.write_text("train.lr: {type: float, low: 1, high: 0.1}\n")
    folds = tmp_path / "folds.yaml"
    folds.write_text(
        yaml.safe_dump({"data": {"features": str(store.path), "split": {"folds": 3}}})
    )
    cases = [
        ({"space": bad_space}, "low must not exceed high"),
        ({"config": folds}, "a study tunes on one train/validation split"),
        ({"trials": 0}, "trials must be at least 1"),
        ({"pruner": "sometimes"}, "pruner must be one of"),
        ({"max_retries": -1}, "max_retries must be 0 or more"),
    ]
    for kwargs, message in cases:
        with pytest.raises(TunerError, match=re.escape(message)):
            create_study(storage, "s", store.path, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(TunerError, match="does not exist"):
        create_study(storage, "s", tmp_path / "no-store")
    assert optuna.get_all_study_summaries(storage) == []


def finished(number: int, state: TrialState, retry_of: int | None = None):  # type: ignore[no-untyped-def]
    attrs = {} if retry_of is None else {"failed_trial": retry_of}
    trial = create_trial(
        state=state, value=1.0 if state == TrialState.COMPLETE else None, system_attrs=attrs
    )
    trial.number = number
    return trial


def test_budget_counts_slots_not_attempts() -> None:
    C, P, F, R, W = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING,
                     TrialState.WAITING)  # fmt: skip
    trials = [finished(0, C), finished(1, F), finished(2, P), finished(3, R, retry_of=1)]
    budget = Budget.count(trials, 4)
    assert (budget.done, budget.active, budget.waiting) == (2, 1, 0)
    assert next_action(budget) == "run"
    assert next_action(Budget.count(trials, 3)) == "wait"
    assert next_action(Budget.count([*trials[:3], finished(3, C, retry_of=1)], 3)) == "done"
    waiting = Budget.count([*trials[:3], finished(3, W, retry_of=1)], 3)
    assert next_action(waiting) == "run"
    twice_dead = [finished(0, F), finished(1, F, retry_of=0)]
    assert not Budget.count(twice_dead, 1, max_retries=2).finished, "owed another retry"
    assert Budget.count(twice_dead, 1, max_retries=1).finished, "gave up"


def add_trials(study: optuna.Study) -> None:
    for value, lr in ((0.5, 1e-3), (0.2, 2e-3), (0.9, 5e-4)):
        study.add_trial(
            create_trial(
                params={"train.lr": lr, "model.dropout": 0.1, "regularization.penalty": "none"},
                distributions={
                    "train.lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True),
                    "model.dropout": optuna.distributions.FloatDistribution(0, 0.5),
                    "regularization.penalty": CategoricalDistribution(["none", "entropy"]),
                },
                value=value, intermediate_values={1: value + 0.1, 2: value},
                user_attrs={"val_auc": 1 - value},
            )
        )  # fmt: skip


@pytest.mark.parametrize(
    ("minutes", "expected"),
    [(0.75, "throughput: 4 finished trials in 45s"),
     (9, "throughput: 4 finished trials in 9m00s"),
     (120, "throughput: 2.0 finished trials per hour over 2h00m (0 in the last hour)")],
)  # fmt: skip
def test_status_quotes_a_rate_only_over_a_long_enough_span(
    minutes: float, expected: str, store: FeatureStore, tmp_path: Path
) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 't.db'}")
    create_study(storage, "s", store.path, space=QUICK, trials=5)
    study = optuna.load_study(study_name="s", storage=storage)
    end = datetime.now() - timedelta(hours=1, seconds=1) if minutes > 60 else datetime.now()
    for i in range(4):
        trial = create_trial(value=1.0)
        trial.datetime_start = end - timedelta(minutes=minutes) * (1 - i / 4)
        trial.datetime_complete = end - timedelta(minutes=minutes) * (1 - (i + 1) / 4)
        study.add_trial(trial)
    assert expected in study_status(storage, "s").render()


def test_export_writes_a_config_train_accepts(
    storage_url: str, store: FeatureStore, tmp_path: Path
) -> None:
    storage = open_storage(storage_url)
    create_study(storage, "s", store.path, space=QUICK, trials=3)
    with pytest.raises(StudyError, match="has no complete trial yet"):
        export_best(storage, "s", tmp_path / "best.yaml", storage_url="x")
    add_trials(optuna.load_study(study_name="s", storage=storage))
    best = export_best(storage, "s", tmp_path / "best.yaml", storage_url="postgresql://u@h/db")
    assert best.number == 1
    config = load_config(tmp_path / "best.yaml")
    assert config.train.lr == 2e-3
    assert config.model.dropout == 0.1
    assert config.data.checksum == store.checksum
    assert config.provenance is not None
    assert config.provenance["study"] == "s"
    assert config.provenance["trial"] == 1
    assert config.provenance["storage"] == "postgresql://u@h/db"
    assert "tuner train --config best.yaml" in (tmp_path / "best.yaml").read_text()
    n = export_trials(storage, "s", tmp_path / "trials.csv")
    rows = (tmp_path / "trials.csv").read_text().splitlines()
    assert n == 3
    assert len(rows) == 4
    assert rows[0].startswith("number,state,value,")  # not val_loss: the columns are stable


def test_status_shows_counts_best_and_running(storage_url: str, store: FeatureStore) -> None:
    storage = open_storage(storage_url)
    create_study(storage, "s", store.path, space=QUICK, trials=5)
    study = optuna.load_study(study_name="s", storage=storage)
    add_trials(study)
    running = study.ask()
    running.set_user_attr("worker", "gpu-box:4242")
    running.set_user_attr("device", "cuda:0")
    running.report(0.4, 3)
    text = study_status(storage, "s").render()
    assert "study s: 3 of 5 trials finished" in text
    assert "complete 3, running 1" in text
    assert "best: trial 1, val loss 0.2000, val auc 0.800" in text
    assert re.search(r"trial 3\s+gpu-box:4242\s+cuda:0\s+epoch 3", text)
    # the trials were added within a second: a rate per hour would mean nothing
    assert re.search(r"throughput: 3 finished trials in \d+s\n", text + "\n"), text
    assert "per hour" not in text
    assert study_status(storage, "s").summary() == (  # the last line of `tuner launch`
        "study s: 3 of 5 trials finished; trials by state: complete 3, running 1; "
        "best val loss 0.2000 (trial 1)"
    )


def test_missing_study_is_named(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 't.db'}")
    with pytest.raises(StudyError, match="study 'nope' does not exist in this storage"):
        load_settings(storage, "nope")


def test_damaged_or_foreign_settings_are_one_study_error(
    tmp_path: Path, store: FeatureStore
) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 't.db'}")
    create_study(storage, "s", store.path, space=QUICK, trials=5)
    good = storage.get_study_system_attrs(storage.get_study_id_from_name("s"))[SETTINGS_KEY]
    assert load_settings(storage, "s").to_json() == good, "stored settings load as they were"
    damaged = [
        "not a mapping",
        {**good, "budget": 0},
        {**good, "pruner": "sometimes"},
        {**good, "space": {"params": []}},
        {**good, "base_config": {"train": {"lr": 1}}},
        {**good, "splits": None},
        {**good, "unknown": 1},
        {k: v for k, v in good.items() if k != "features"},
    ]
    for number, raw in enumerate(damaged):
        optuna.create_study(study_name=f"d{number}", storage=storage)
        study_id = storage.get_study_id_from_name(f"d{number}")
        storage.set_study_system_attr(study_id, SETTINGS_KEY, raw)
        with pytest.raises(StudyError, match="has damaged or foreign tuner settings") as info:
            load_settings(storage, f"d{number}")
        assert "\n" not in str(info.value)


def test_slurm_script(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TUNER_STORAGE", raising=False)
    script = slurm_script(
        "mil",
        workers=8,
        storage="postgresql://tuner_worker:pw@db:5432/tuner",
        time_limit="04:00:00",
    )
    assert "#SBATCH --array=0-7" in script
    assert "#SBATCH --gres=gpu:1" in script
    assert "#SBATCH --time=04:00:00" in script
    assert "#SBATCH --signal=TERM@120" in script
    assert "export TUNER_STORAGE=postgresql+psycopg2://tuner_worker@db:5432/tuner" in script
    assert "srun tuner worker mil --device cuda" in script
    assert "pw" not in script.replace("psycopg2", "")
    multi = slurm_script("mil", workers=2, storage="postgresql://u@db/t", gpus_per_worker=4)
    assert "srun tuner launch mil --gpus 0,1,2,3" in multi
    with pytest.raises(TunerError, match="needs a shared PostgreSQL"):
        slurm_script("mil", workers=2, storage=None)
    with pytest.raises(TunerError, match=r"^time_limit must look like"):
        slurm_script("mil", workers=2, storage="postgresql://u@db/t", time_limit="4h")


def test_launch_plans() -> None:
    plans = plan_workers(gpus="0,2", per_gpu=2)
    assert [p.label for p in plans] == ["gpu0.0", "gpu0.1", "gpu2.0", "gpu2.1"]
    assert [p.env["CUDA_VISIBLE_DEVICES"] for p in plans] == ["0", "0", "2", "2"]
    assert {p.device for p in plans} == {"cuda:0"}
    cpu = plan_workers(workers=2, device="cpu")
    assert [p.label for p in cpu] == ["w0", "w1"]
    assert all(p.threads and p.threads >= 1 for p in cpu)
    with pytest.raises(TunerError, match=r"^gpus must list GPU numbers"):
        plan_workers(gpus="first")
    with pytest.raises(TunerError, match="either gpus or workers"):
        plan_workers(gpus="0", workers=2)


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("", "is empty"),
        ("mil\ntouch pwned", "not printable"),
        ("mil\t2", "not printable"),
        ("../x", "path separator"),
        ("a\\b", "path separator"),
        ("..", "folder reference"),
        (" mil", "begins or ends with a space"),
        ("-mil", "begins with '-'"),
        ("m" * 101, "more than 100"),
    ],
)
def test_bad_study_names_are_refused_before_the_storage_is_touched(
    name: str, rule: str, store: FeatureStore, tmp_path: Path
) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 't.db'}")
    with pytest.raises(StudyError, match=re.escape(rule)) as error:
        create_study(storage, name, store.path, space=QUICK, trials=2)
    assert "\n" not in str(error.value)
    assert optuna.get_all_study_summaries(storage) == []


def test_names_with_spaces_and_letters_of_any_script_are_fine(
    store: FeatureStore, tmp_path: Path
) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 't.db'}")
    for name in ("mil 2024", "études_1.b", "m" * 100):
        create_study(storage, name, store.path, space=QUICK, trials=2)
    assert len(optuna.get_all_study_summaries(storage)) == 3


def test_slurm_script_passes_any_name_as_one_argument(tmp_path: Path) -> None:
    """Run the script with bash, a fake srun recording its arguments: the name stays one
    argument, whatever it holds, and nothing else runs."""
    touch = f"touch {tmp_path}/"
    name = f"x\n{touch}newline; {touch}semicolon $({touch}subshell) `{touch}tick` 'q"
    script = slurm_script(name, workers=2, storage="postgresql://u@db/t", partition="gpu")
    for line in script.splitlines():
        if line.startswith("#SBATCH"):
            assert re.fullmatch(r"#SBATCH --[a-z-]+(=[\w.,:@%-]+)?", line), line
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(f'#!/bin/bash\nprintf "%s\\0" "$@" > {tmp_path}/argv\n')
    (bin_dir / "srun").chmod(0o755)
    (tmp_path / "job.sh").write_text(script)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    subprocess.run(["bash", str(tmp_path / "job.sh")], env=env, check=True, timeout=30)
    argv = (tmp_path / "argv").read_bytes().split(b"\0")[:-1]
    assert [a.decode() for a in argv] == ["tuner", "worker", name, "--device", "cuda"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["argv", "bin", "job.sh"]
    with pytest.raises(TunerError, match=r"^partition must be"):
        slurm_script("mil", workers=2, storage="postgresql://u@db/t", partition="gpu\nrm -rf /")


def test_settings_of_a_study_made_before_typed_parameters_still_load(
    tmp_path: Path, store: FeatureStore
) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 't.db'}")
    create_study(storage, "s", store.path, space=QUICK, trials=5)
    new = load_settings(storage, "s")
    old = {**new.to_json(), "space": new.search.to_dict()}  # a space file's mapping, as stored
    del old["base_config"]["train"]["early_stopping_warmup"]  # a setting it did not have
    optuna.create_study(study_name="old", storage=storage)
    storage.set_study_system_attr(storage.get_study_id_from_name("old"), SETTINGS_KEY, old)
    loaded = load_settings(storage, "old")
    assert loaded.search == new.search
    assert loaded.base.train.early_stopping_warmup == 10


def test_export_of_a_study_whose_trials_all_learned_nothing_says_so(
    tmp_path: Path, store: FeatureStore
) -> None:
    from tuner.study import best_config

    storage = open_storage(f"sqlite:///{tmp_path / 't.db'}")
    create_study(storage, "s", store.path, space=QUICK, trials=2)
    study = optuna.load_study(study_name="s", storage=storage)
    flat = {"pruned_because": "it learned nothing"}
    for _ in range(2):
        study.add_trial(
            create_trial(state=TrialState.PRUNED, intermediate_values={5: 0.7}, user_attrs=flat)
        )
    with pytest.raises(StudyError) as raised:
        best_config(storage, "s", storage_url="sqlite://")
    assert "its 2 trials were pruned or failed (2 learned nothing)" in str(raised.value)
    # one split of a small cohort can hide what folds show: the advice is to cross-validate
    val = len(load_settings(storage, "s").splits.splits[0].val)
    assert f"data.split.cv_folds: 5 in its config: one validation split of {val} cases" in str(
        raised.value
    )
