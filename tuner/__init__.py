"""tuner: hyperparameter optimisation for hierarchical attention MIL in computational pathology.

The command line (``tuner``) is a thin layer over the functions of this package, so notebooks
and scripts can do everything it does. Heavy dependencies (torch, optuna) are imported by the
submodules that need them, not here: ``tuner.open_storage`` imports the storage (Optuna,
SQLAlchemy) on first use.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from tuner.errors import TunerError

if TYPE_CHECKING:
    from tuner.storage import open_storage

try:
    __version__ = version("tuner")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = ["TunerError", "__version__", "open_storage"]


def __getattr__(name: str) -> Any:
    if name == "open_storage":
        from tuner.storage import open_storage

        return open_storage
    raise AttributeError(f"module 'tuner' has no attribute {name!r}")
