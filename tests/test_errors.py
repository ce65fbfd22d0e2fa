"""Errors a caller can tell apart, named by parameter in the library and by flag on the CLI."""

from __future__ import annotations

import pytest

from tuner._device import resolve_device
from tuner.cli import flag_message
from tuner.dashboard import check_exposure
from tuner.errors import (
    DashboardError,
    DeploymentError,
    DeviceError,
    LaunchError,
    TunerError,
)
from tuner.study import plan_workers, slurm_script


def test_each_kind_of_failure_has_its_own_error() -> None:
    with pytest.raises(DeviceError, match=r"^device 'cuda:99' does not exist"):
        resolve_device("cuda:99")
    with pytest.raises(LaunchError, match=r"^give either gpus or workers"):
        plan_workers(gpus="0", workers=2)
    with pytest.raises(DeploymentError, match=r"^workers must be at least 1"):
        slurm_script("mil", workers=0, storage="postgresql://u@db/t")
    with pytest.raises(DashboardError, match="contradict each other"):
        check_exposure("127.0.0.1", read_only=True, allow_writes=True)
    for kind in (DeviceError, LaunchError, DeploymentError, DashboardError):
        assert issubclass(kind, TunerError)


@pytest.mark.parametrize(
    ("message", "params", "printed"),
    [
        ("device 'x' is not a device; use cpu", ("device",),
         "--device 'x' is not a device; use cpu"),
        ("give either gpus or workers, not both", ("gpus", "workers"),
         "give either --gpus or --workers, not both"),
        ("per_gpu must be at least 1", ("per_gpu",), "--per-gpu must be at least 1"),
        ("time_limit must look like HH:MM:SS", ("time_limit",), "--time must look like HH:MM:SS"),
        ("no study database at /data/url/x.db; give one (url or TUNER_STORAGE)", ("url",),
         "no study database at /data/url/x.db; give one (--storage or TUNER_STORAGE)"),
        ("workers must be at least 1", (), "workers must be at least 1"),
    ],
)  # fmt: skip
def test_the_cli_names_the_flags_of_the_parameters_a_message_names(
    message: str, params: tuple[str, ...], printed: str
) -> None:
    error = TunerError(message, params=params)
    assert str(error) == message
    assert flag_message(error) == printed
