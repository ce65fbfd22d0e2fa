"""tuner: hyperparameter optimisation for hierarchical attention MIL in computational pathology.

The command line (``tuner``) is a thin layer over the functions of this package, so notebooks
and scripts can do everything it does. Heavy dependencies (torch, optuna) are imported by the
submodules that need them, not here.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from tuner.errors import TunerError

try:
    __version__ = version("tuner")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = ["TunerError", "__version__"]
