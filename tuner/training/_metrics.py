"""Classification metrics of a split, from scikit-learn."""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["Metrics", "classification_metrics"]


@dataclass(frozen=True)
class Metrics:
    """Loss (class-weighted cross-entropy), AUC (None with one class), accuracies."""

    loss: float
    auc: float | None
    balanced_accuracy: float
    accuracy: float
    n_cases: int

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def classification_metrics(probs: np.ndarray, labels: np.ndarray, loss: float) -> Metrics:
    """Metrics of predicted class probabilities ``(n, n_classes)`` against labels ``(n,)``."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score

    predictions = probs.argmax(axis=1)
    auc: float | None = None
    if len(np.unique(labels)) > 1:
        if probs.shape[1] == 2:
            auc = float(roc_auc_score(labels, probs[:, 1]))
        else:
            auc = float(
                roc_auc_score(labels, probs, multi_class="ovr", labels=np.arange(probs.shape[1]))
            )
    with warnings.catch_warnings():  # one case, or one class present: still well defined
        warnings.simplefilter("ignore", UserWarning)
        balanced = float(balanced_accuracy_score(labels, predictions))
    return Metrics(
        loss=float(loss) if math.isfinite(loss) else float("nan"),
        auc=auc,
        balanced_accuracy=balanced,
        accuracy=float(accuracy_score(labels, predictions)),
        n_cases=len(labels),
    )
