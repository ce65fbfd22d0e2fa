"""The pruner and sampler names a study accepts: their one home.

Kept free of heavy imports, so that the CLI can offer them as choices without importing Optuna.
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = ["PRUNERS", "SAMPLERS", "PrunerName", "SamplerName"]

PrunerName = Literal["median", "asha", "hyperband", "chance", "none"]
SamplerName = Literal["tpe", "random", "cmaes"]
PRUNERS: tuple[PrunerName, ...] = get_args(PrunerName)
SAMPLERS: tuple[SamplerName, ...] = get_args(SamplerName)
