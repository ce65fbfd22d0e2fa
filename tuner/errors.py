"""The exceptions tuner raises for problems a user can fix.

Every message says what is wrong, where, and how to fix it, in one line. The command line is
the one place that catches :class:`TunerError`; it prints the message and exits non-zero:
with :data:`PERMANENT_EXIT_CODE` when the error is marked ``permanent``, else 1.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = [
    "PERMANENT_EXIT_CODE",
    "ConfigError",
    "DashboardError",
    "DataError",
    "DeploymentError",
    "DeviceError",
    "ExplainError",
    "LaunchError",
    "RunError",
    "StorageError",
    "StoreError",
    "StudyError",
    "TrainingError",
    "TunerError",
    "permanent_errors",
]

PERMANENT_EXIT_CODE = 78
"""Exit status of a command that failed for a reason a restart cannot fix (no such study, a bad
feature store, a missing device): launchers and Kubernetes do not restart it (sysexits'
EX_CONFIG)."""


class TunerError(Exception):
    """A problem with the user's input or environment, with a message that says how to fix it."""

    permanent: bool = False
    """Whether running the same command again would fail the same way (see
    :func:`permanent_errors`)."""

    params: tuple[str, ...] = ()
    """The parameters the message names (``device``), each as it is first named there; the
    command line shows them as its flags (``--device``)."""

    def __init__(self, *args: object, params: tuple[str, ...] = ()) -> None:
        super().__init__(*args)
        if params:
            self.params = params


class DataError(TunerError):
    """The patch folder, the labels file, the pattern or the splits are unusable."""


class StoreError(TunerError):
    """A feature store is missing, incomplete, corrupt or does not match what was asked for."""


class ConfigError(TunerError):
    """A run config or a search space is malformed or holds an impossible value."""


class TrainingError(TunerError):
    """Training could not go on (a diverging loss, an exhausted device)."""


class RunError(TunerError):
    """A run folder is missing, incomplete, or cannot be written where asked."""


class StorageError(TunerError):
    """The study storage cannot be reached or refuses the request."""


class StudyError(TunerError):
    """A study does not exist, conflicts with an existing one, or cannot give what was asked."""


# Errors of the commands around a study: devices, launching, deployment, dashboard, explanation.


class DeviceError(TunerError):
    """A device (``cpu``, ``cuda:N``) or GPU number is malformed or absent on this machine."""


class LaunchError(TunerError):
    """Local workers cannot be planned or started, or they ended in failure."""


class ExplainError(TunerError):
    """A run folder cannot be explained (not a run, or its feature store changed)."""


class DashboardError(TunerError):
    """The dashboard would be unsafe as asked (writable beyond loopback, contradicting modes)."""


class DeploymentError(TunerError):
    """Cluster manifests or job scripts (Kubernetes, SLURM) cannot be written as asked."""


@contextmanager
def permanent_errors() -> Iterator[None]:
    """Mark the :class:`TunerError` raised inside as permanent, but for a :class:`StorageError`.

    For the start-up of a long-running command (a worker, a launcher): a missing study, a wrong
    feature store or a missing device stay so until someone changes something, whereas the study
    database may be back in a minute, so a restart is worth it.
    """
    try:
        yield
    except StorageError:
        raise
    except TunerError as error:
        error.permanent = True
        raise
