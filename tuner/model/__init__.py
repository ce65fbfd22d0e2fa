"""The hierarchical attention MIL model and its attention penalties."""

from tuner.model._dropout import Dropout, dropout, dropout_mask
from tuner.model._mil import (
    LEVELS,
    Attention,
    Bags,
    HierarchicalMIL,
    LevelAttention,
    MILOutput,
)
from tuner.model._penalties import elasticnet_penalty, entropy_penalty
from tuner.model._reference import Case, loop_forward
from tuner.model._segment import segment_mean, segment_softmax, segment_sum

__all__ = [
    "LEVELS",
    "Attention",
    "Bags",
    "Case",
    "Dropout",
    "HierarchicalMIL",
    "LevelAttention",
    "MILOutput",
    "dropout",
    "dropout_mask",
    "elasticnet_penalty",
    "entropy_penalty",
    "loop_forward",
    "segment_mean",
    "segment_softmax",
    "segment_sum",
]
