"""Optuna's internals that tuner relies on (all in ``tuner/storage/_rdb.py``) are still there.

When Optuna changes one of them, these tests fail and name it: read its new code, adapt
``tuner/storage/_rdb.py``, then record the new signature here and the tested version in
``pyproject.toml``.
"""

from __future__ import annotations

import inspect

import optuna
import pytest
from optuna.storages import RDBStorage
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session

from tuner.storage import open_storage, storage_of, study_id_of, trial_id_of
from tuner.storage._rdb import RETRIED, RetryingRDBStorage

# The signatures of the RDBStorage methods RetryingRDBStorage wraps, as of Optuna 5.0.
EXPECTED = {
    "create_new_study": "(self, directions: 'Sequence[StudyDirection]', study_name: 'str | None' = None) -> 'int'",
    "delete_study": "(self, study_id: 'int') -> 'None'",
    "set_study_user_attr": "(self, study_id: 'int', key: 'str', value: 'Any') -> 'None'",
    "set_study_system_attr": "(self, study_id: 'int', key: 'str', value: 'JSONSerializable') -> 'None'",
    "get_study_id_from_name": "(self, study_name: 'str') -> 'int'",
    "get_study_name_from_id": "(self, study_id: 'int') -> 'str'",
    "get_study_directions": "(self, study_id: 'int') -> 'list[StudyDirection]'",
    "get_study_user_attrs": "(self, study_id: 'int') -> 'dict[str, Any]'",
    "get_study_system_attrs": "(self, study_id: 'int') -> 'dict[str, Any]'",
    "get_trial_user_attrs": "(self, trial_id: 'int') -> 'dict[str, Any]'",
    "get_trial_system_attrs": "(self, trial_id: 'int') -> 'dict[str, Any]'",
    "get_all_studies": "(self) -> 'list[FrozenStudy]'",
    "create_new_trial": "(self, study_id: 'int', template_trial: 'FrozenTrial | None' = None) -> 'int'",
    "set_trial_param": "(self, trial_id: 'int', param_name: 'str', param_value_internal: 'float', distribution: 'distributions.BaseDistribution') -> 'None'",
    "get_trial_param": "(self, trial_id: 'int', param_name: 'str') -> 'float'",
    "set_trial_state_values": "(self, trial_id: 'int', state: 'TrialState', values: 'Sequence[float] | None' = None) -> 'bool'",
    "set_trial_intermediate_value": "(self, trial_id: 'int', step: 'int', intermediate_value: 'float') -> 'None'",
    "set_trial_user_attr": "(self, trial_id: 'int', key: 'str', value: 'Any') -> 'None'",
    "set_trial_system_attr": "(self, trial_id: 'int', key: 'str', value: 'JSONSerializable') -> 'None'",
    "get_trial_id_from_study_id_trial_number": "(self, study_id: 'int', trial_number: 'int') -> 'int'",
    "get_trial": "(self, trial_id: 'int') -> 'FrozenTrial'",
    "get_all_trials": "(self, study_id: 'int', deepcopy: 'bool' = True, states: 'Container[TrialState] | None' = None) -> 'list[FrozenTrial]'",
    "get_best_trial": "(self, study_id: 'int') -> 'FrozenTrial'",
    "record_heartbeat": "(self, trial_id: 'int') -> 'None'",
    "_get_stale_trial_ids": "(self, study_id: 'int') -> 'list[int]'",
    "_get_trials": "(self, study_id: 'int', states: 'Container[TrialState] | None', included_trial_ids: 'set[int]', trial_id_greater_than: 'int') -> 'list[FrozenTrial]'",
    "_create_new_trial": "(self, study_id: 'int', template_trial: 'FrozenTrial | None' = None) -> 'FrozenTrial'",
    "_set_trial_param": "(self, trial_id: 'int', param_name: 'str', param_value_internal: 'float', distribution: 'distributions.BaseDistribution', previous_distribution: 'distributions.BaseDistribution | None') -> 'None'",
    "_get_best_trial_id": "(self, study_id: 'int', direction: 'StudyDirection') -> 'int'",
}


def test_every_retried_method_has_a_recorded_signature() -> None:
    assert sorted(EXPECTED) == sorted(RETRIED)


@pytest.mark.parametrize("name", RETRIED)
def test_retried_method_keeps_its_signature(name: str) -> None:
    method = getattr(RDBStorage, name, None)
    if method is None:
        pytest.fail(f"optuna {optuna.__version__}: RDBStorage.{name} is gone; tuner retries it")
    found = str(inspect.signature(method))
    assert found == EXPECTED[name], (
        f"optuna {optuna.__version__}: RDBStorage.{name} changed its signature from "
        f"{EXPECTED[name]} to {found}"
    )


@pytest.mark.parametrize("name", RETRIED)
def test_retried_method_is_wrapped(name: str) -> None:
    wrapped = getattr(RetryingRDBStorage, name)
    assert wrapped is not getattr(RDBStorage, name)
    assert wrapped.__wrapped__ is not None, f"RetryingRDBStorage.{name} does not retry"


def test_the_cache_calls_the_private_methods_tuner_retries() -> None:
    source = inspect.getsource(optuna.storages._cached_storage)
    for name in ("_get_trials", "_create_new_trial", "_set_trial_param", "_get_best_trial_id"):
        assert f"self._backend.{name}(" in source, (
            f"optuna {optuna.__version__}: its trial cache no longer calls RDBStorage.{name}; "
            "check which storage methods it calls now and retry those"
        )


def test_the_session_helper_and_models_keep_their_shape() -> None:
    assert str(inspect.signature(_create_scoped_session)) == (
        "(scoped_session: \"'sqlalchemy_orm.scoped_session'\", ignore_integrity_error: 'bool' "
        "= False) -> \"Generator['sqlalchemy_orm.Session', None, None]\""
    ), "optuna.storages._rdb.storage._create_scoped_session changed its signature"
    for model, columns in (
        (models.TrialModel, ("trial_id", "study_id", "state", "datetime_start")),
        (models.TrialHeartbeatModel, ("trial_heartbeat_id", "trial_id")),
    ):
        for column in columns:
            assert hasattr(model, column), f"optuna's {model.__name__}.{column} is gone"


def test_private_ids_and_storage_of_a_study_and_trial(tmp_path: object) -> None:
    storage = open_storage(f"sqlite:///{tmp_path}/internals.db")
    study = optuna.create_study(study_name="internals", storage=storage)
    trial = study.ask()
    study_id = storage.get_study_id_from_name("internals")
    assert study_id_of(study) == study_id
    assert trial_id_of(trial) == storage.get_trial_id_from_study_id_trial_number(study_id, 0)
    assert trial_id_of(study.trials[0]) == trial_id_of(trial)
    assert storage_of(study).get_study_id_from_name("internals") == study_id
